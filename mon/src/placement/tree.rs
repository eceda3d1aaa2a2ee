//! The placement tree: OSDs, hosts and operator-defined nodes (racks, datacenters…).
//!
//! Built from what OSDs report (`osd/state`, `osd/stats`: host and size), their
//! configuration (`config/osd/N`: reweight, tags, noout), `config/node_placement`
//! and `placement_levels`. Every parent has a strictly lower level rank than its
//! child, which is what makes the tree acyclic; violations are errors, because a
//! silently re-rooted node would place replicas in one failure domain.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use vitastor_layout::tolerant;

use super::{OsdNum, PlacementError};

/// Level name of OSD leaves.
pub const OSD_LEVEL: &str = "osd";
/// Level name of the nodes OSDs report themselves under.
pub const HOST_LEVEL: &str = "host";
/// Built-in rank of `host`; user levels (rack, datacenter…) use lower numbers.
pub const DEFAULT_HOST_RANK: u32 = 100;
/// Built-in rank of `osd`: the deepest level.
pub const DEFAULT_OSD_RANK: u32 = 101;

/// One OSD as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct OsdInfo {
    /// OSD number (never 0).
    pub num: OsdNum,
    /// Host the OSD reports; empty when unknown (the OSD then hangs at the root
    /// unless `node_placement` gives it a parent).
    pub host: String,
    /// Capacity in bytes (`osd/stats` `size`).
    pub size: u64,
    /// `config/osd/N` `reweight`, 0..=1; scales the OSD's share.
    pub reweight: f64,
    /// `config/osd/N` `tags` (device classes and the like).
    pub tags: Vec<String>,
    /// The OSD holds a live `osd/state` lease: only up OSDs become primaries.
    pub up: bool,
    /// The monitor declared the OSD out (down for longer than `osd_out_time`):
    /// it leaves the placement unless `noout`.
    pub out: bool,
    /// `config/osd/N` `noout`: never leaves the placement while down.
    pub noout: bool,
}

impl OsdInfo {
    /// An up, in OSD with reweight 1 and no tags.
    pub fn new(num: OsdNum, host: impl Into<String>, size: u64) -> Self {
        Self {
            num,
            host: host.into(),
            size,
            reweight: 1.0,
            tags: Vec::new(),
            up: true,
            out: false,
            noout: false,
        }
    }

    /// Builds an OSD from its etcd keys: `osd/state/N` (absent or not `"up"` means
    /// down), `osd/stats/N` (size, host) and `config/osd/N` (reweight, tags, noout).
    /// `out` is the monitor's own verdict, which needs clocks and stays outside.
    pub fn from_etcd(
        num: OsdNum,
        state: Option<&Value>,
        stats: Option<&Value>,
        config: Option<&Value>,
        out: bool,
    ) -> Result<Self, PlacementError> {
        let context = format!("osd {num}");
        if num.is_none() {
            return Err(PlacementError::InvalidField {
                context,
                field: "osd_num".into(),
                reason: "OSD numbers start at 1".into(),
            });
        }
        let up = state.and_then(|s| s.get("state")).and_then(Value::as_str) == Some("up");
        let host = [state, stats]
            .into_iter()
            .flatten()
            .find_map(|v| v.get("host").and_then(Value::as_str))
            .unwrap_or_default();
        let size = match stats.and_then(|s| s.get("size")) {
            None | Some(Value::Null) => 0,
            Some(v) => tolerant::u64_of(v).ok_or_else(|| PlacementError::InvalidField {
                context: context.clone(),
                field: "size".into(),
                reason: format!("expected a byte count, got {v}"),
            })?,
        };
        let mut osd = Self::new(num, host, size);
        osd.up = up;
        osd.out = out;
        if let Some(config) = config {
            osd.apply_config(config)?;
        }
        Ok(osd)
    }

    /// Applies `config/osd/N`: `{"reweight":1,"tags":["nvme"],"noout":false}`.
    pub fn apply_config(&mut self, config: &Value) -> Result<(), PlacementError> {
        let context = format!("config/osd/{}", self.num);
        if let Some(r) = config.get("reweight").filter(|v| !v.is_null()) {
            let r = tolerant::f64_of(r)
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| PlacementError::InvalidField {
                    context: context.clone(),
                    field: "reweight".into(),
                    reason: format!("expected a number in 0..=1, got {r}"),
                })?;
            self.reweight = r;
        }
        if let Some(t) = config.get("tags") {
            self.tags = parse_tags(t, &context, "tags")?;
        }
        if let Some(n) = config.get("noout").filter(|v| !v.is_null()) {
            self.noout = tolerant::bool_of(n).ok_or_else(|| PlacementError::InvalidField {
                context: context.clone(),
                field: "noout".into(),
                reason: format!("expected a boolean, got {n}"),
            })?;
        }
        Ok(())
    }

    /// Placement weight: size × reweight (bytes).
    pub fn weight(&self) -> f64 {
        self.size as f64 * self.reweight
    }

    /// Whether the OSD may hold PGs: positive weight and not out (or noout).
    pub fn in_placement(&self) -> bool {
        self.weight() > 0.0 && (!self.out || self.noout)
    }

    /// Whether the OSD has every tag of `tags`.
    pub fn has_tags(&self, tags: &[String]) -> bool {
        tags.iter().all(|t| self.tags.contains(t))
    }
}

/// Parses a tag list given as a string or an array of strings (absent/null = none).
pub(crate) fn parse_tags(
    v: &Value,
    context: &str,
    field: &str,
) -> Result<Vec<String>, PlacementError> {
    let bad = || PlacementError::InvalidField {
        context: context.into(),
        field: field.into(),
        reason: format!("expected a string or an array of strings, got {v}"),
    };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

/// Level name → rank; lower ranks are closer to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementLevels(BTreeMap<String, u32>);

impl Default for PlacementLevels {
    fn default() -> Self {
        Self(BTreeMap::from([
            (HOST_LEVEL.to_owned(), DEFAULT_HOST_RANK),
            (OSD_LEVEL.to_owned(), DEFAULT_OSD_RANK),
        ]))
    }
}

impl PlacementLevels {
    /// Parses `placement_levels` from `config/global`, merged over the defaults
    /// (`host`=100, `osd`=101); `null` gives the defaults.
    pub fn from_json(v: &Value) -> Result<Self, PlacementError> {
        let mut levels = Self::default();
        let context = "placement_levels";
        match v {
            Value::Null => {}
            Value::Object(map) => {
                for (name, rank) in map {
                    let rank = tolerant::u64_of(rank)
                        .and_then(|r| u32::try_from(r).ok())
                        .ok_or_else(|| PlacementError::InvalidField {
                            context: context.into(),
                            field: name.clone(),
                            reason: format!("expected a non-negative integer rank, got {rank}"),
                        })?;
                    levels.0.insert(name.clone(), rank);
                }
            }
            other => {
                return Err(PlacementError::InvalidField {
                    context: context.into(),
                    field: "placement_levels".into(),
                    reason: format!("expected an object, got {other}"),
                })
            }
        }
        if levels.0[HOST_LEVEL] >= levels.0[OSD_LEVEL] {
            return Err(PlacementError::InvalidField {
                context: context.into(),
                field: HOST_LEVEL.into(),
                reason: "the host level must rank below (closer to the root than) the osd level"
                    .into(),
            });
        }
        Ok(levels)
    }

    /// Rank of `level`, if defined.
    pub fn rank(&self, level: &str) -> Option<u32> {
        self.0.get(level).copied()
    }
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    level: String,
    rank: u32,
    parent: Option<usize>,
}

/// The placement tree. Nodes are OSDs (named by their number) and named inner
/// nodes; an OSD's default parent is the host it reports.
#[derive(Debug, Clone)]
pub struct PlacementTree {
    levels: PlacementLevels,
    nodes: Vec<Node>,
    by_name: HashMap<String, usize>,
    osds: Vec<OsdInfo>,
    osd_node: Vec<usize>,
}

impl PlacementTree {
    /// Builds the tree from the OSD list, `config/node_placement` and
    /// `placement_levels` (both may be `null`).
    ///
    /// A `node_placement` entry is `{"level": L, "parent": P}`. Numeric names are
    /// OSDs (level `osd`, only `parent` matters; entries for unknown OSDs are
    /// ignored because OSDs come and go). Other names need a level unless some
    /// OSD reports them as its host, in which case they default to `host`.
    pub fn new(
        osds: Vec<OsdInfo>,
        node_placement: &Value,
        placement_levels: &Value,
    ) -> Result<Self, PlacementError> {
        let levels = PlacementLevels::from_json(placement_levels)?;
        let entries: &serde_json::Map<String, Value> = match node_placement {
            Value::Null => &serde_json::Map::new(),
            Value::Object(m) => m,
            other => {
                return Err(PlacementError::InvalidField {
                    context: "config/node_placement".into(),
                    field: "node_placement".into(),
                    reason: format!("expected an object, got {other}"),
                })
            }
        };
        let field =
            |name: &str, entry: &Value, key: &str| -> Result<Option<String>, PlacementError> {
                match entry.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if s.is_empty() => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(v) => Err(PlacementError::InvalidTree {
                        node: name.into(),
                        reason: format!("{key} must be a string, got {v}"),
                    }),
                }
            };

        let mut seen = std::collections::HashSet::new();
        for o in &osds {
            if o.num.is_none() || !seen.insert(o.num) {
                return Err(PlacementError::InvalidField {
                    context: format!("osd {}", o.num),
                    field: "osd_num".into(),
                    reason: "OSD numbers must be non-zero and unique".into(),
                });
            }
        }

        // Inner nodes: named entries plus every reported host, in a stable order.
        let mut inner: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
        for (name, entry) in entries {
            if name.parse::<u64>().is_ok() {
                continue;
            }
            inner.insert(
                name.clone(),
                (field(name, entry, "level")?, field(name, entry, "parent")?),
            );
        }
        for o in &osds {
            if !o.host.is_empty() {
                let e = inner.entry(o.host.clone()).or_insert((None, None));
                e.0.get_or_insert_with(|| HOST_LEVEL.to_owned());
            }
        }

        let mut nodes = Vec::with_capacity(inner.len() + osds.len());
        let mut by_name = HashMap::new();
        for (name, (level, _)) in &inner {
            let level = level.clone().ok_or_else(|| PlacementError::InvalidTree {
                node: name.clone(),
                reason: "no level (only hosts reported by OSDs default to \"host\")".into(),
            })?;
            let rank = levels
                .rank(&level)
                .ok_or_else(|| PlacementError::UnknownLevel {
                    context: format!("node {name:?}"),
                    level: level.clone(),
                })?;
            if level == OSD_LEVEL {
                return Err(PlacementError::InvalidTree {
                    node: name.clone(),
                    reason: "only OSDs (numeric names) may have level \"osd\"".into(),
                });
            }
            by_name.insert(name.clone(), nodes.len());
            nodes.push(Node {
                name: name.clone(),
                level,
                rank,
                parent: None,
            });
        }
        let osd_rank = levels.rank(OSD_LEVEL).expect("osd level always defined");
        let mut osd_node = Vec::with_capacity(osds.len());
        for o in &osds {
            let name = o.num.to_string();
            by_name.insert(name.clone(), nodes.len());
            osd_node.push(nodes.len());
            nodes.push(Node {
                name,
                level: OSD_LEVEL.into(),
                rank: osd_rank,
                parent: None,
            });
        }

        // Link parents; the strict rank decrease rules out cycles.
        let mut parent_of: Vec<(usize, String)> = Vec::new();
        for (name, (_, parent)) in &inner {
            if let Some(p) = parent {
                parent_of.push((by_name[name], p.clone()));
            }
        }
        for (o, &node) in osds.iter().zip(&osd_node) {
            let entry = entries.get(&o.num.to_string());
            if let Some(entry) = entry {
                if let Some(level) = field(&o.num.to_string(), entry, "level")? {
                    if level != OSD_LEVEL {
                        return Err(PlacementError::InvalidTree {
                            node: o.num.to_string(),
                            reason: format!("an OSD must have level \"osd\", not {level:?}"),
                        });
                    }
                }
            }
            let explicit = match entry {
                Some(e) => field(&o.num.to_string(), e, "parent")?,
                None => None,
            };
            if let Some(p) = explicit.or_else(|| (!o.host.is_empty()).then(|| o.host.clone())) {
                parent_of.push((node, p));
            }
        }
        for (child, parent) in parent_of {
            let &p = by_name
                .get(&parent)
                .filter(|&&p| nodes[p].level != OSD_LEVEL)
                .ok_or_else(|| PlacementError::InvalidTree {
                    node: nodes[child].name.clone(),
                    reason: format!("parent {parent:?} is not a node of the tree"),
                })?;
            if nodes[p].rank >= nodes[child].rank {
                return Err(PlacementError::InvalidTree {
                    node: nodes[child].name.clone(),
                    reason: format!(
                        "parent {parent:?} has level {:?} (rank {}), which is not above {:?} (rank {})",
                        nodes[p].level, nodes[p].rank, nodes[child].level, nodes[child].rank
                    ),
                });
            }
            nodes[child].parent = Some(p);
        }
        Ok(Self {
            levels,
            nodes,
            by_name,
            osds,
            osd_node,
        })
    }

    /// All OSDs, in input order.
    pub fn osds(&self) -> &[OsdInfo] {
        &self.osds
    }

    /// The placement levels in force.
    pub fn levels(&self) -> &PlacementLevels {
        &self.levels
    }

    /// Whether a node (OSD number or inner node name) exists.
    pub fn has_node(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Index of OSD `i`'s tree node.
    pub(crate) fn osd_node(&self, i: usize) -> usize {
        self.osd_node[i]
    }

    /// Ancestors of node `n`, nearest first, excluding `n`.
    fn ancestors(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.nodes[n].parent, move |&p| self.nodes[p].parent)
    }

    /// Whether node `n` is `root` or lies under it.
    pub(crate) fn is_under(&self, n: usize, root: &str) -> bool {
        match self.by_name.get(root) {
            Some(&r) => n == r || self.ancestors(n).any(|a| a == r),
            None => false,
        }
    }

    /// Name of the failure domain of level rank `rank` that contains node `n`:
    /// its nearest ancestor whose level is at least as coarse (rank ≤ `rank`),
    /// or `n` itself when `n` is that coarse or has no such ancestor. An OSD
    /// hanging directly under a rack thus shares the whole rack's domain when
    /// the failure domain is `host`: the conservative reading.
    pub(crate) fn domain_of(&self, n: usize, rank: u32) -> &str {
        if self.nodes[n].rank <= rank {
            return &self.nodes[n].name;
        }
        match self.ancestors(n).find(|&a| self.nodes[a].rank <= rank) {
            Some(a) => &self.nodes[a].name,
            None => &self.nodes[n].name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn osd(n: u64, host: &str) -> OsdInfo {
        OsdInfo::new(OsdNum(n), host, 1 << 40)
    }

    #[test]
    fn domains_follow_node_placement() {
        let tree = PlacementTree::new(
            vec![osd(1, "h1"), osd(2, "h1"), osd(3, "h2"), osd(4, "")],
            &json!({"h1":{"parent":"r1"},"h2":{"level":"host","parent":"r1"},"r1":{"level":"rack"},"4":{"parent":"r1"}}),
            &json!({"rack":10}),
        )
        .unwrap();
        let rack = tree.levels().rank("rack").unwrap();
        let host = tree.levels().rank("host").unwrap();
        assert_eq!(tree.domain_of(tree.osd_node(0), host), "h1");
        assert_eq!(tree.domain_of(tree.osd_node(2), host), "h2");
        // OSD 4 hangs directly under the rack: the rack is its host-level domain.
        assert_eq!(tree.domain_of(tree.osd_node(3), host), "r1");
        assert_eq!(tree.domain_of(tree.osd_node(0), rack), "r1");
        assert!(tree.is_under(tree.osd_node(1), "r1"));
        assert!(!tree.is_under(tree.osd_node(1), "h2"));
    }

    #[test]
    fn invalid_trees_are_errors() {
        let unknown = PlacementTree::new(
            vec![osd(1, "h1")],
            &json!({"h1":{"parent":"dc"}}),
            &Value::Null,
        );
        assert!(
            matches!(unknown, Err(PlacementError::InvalidTree { .. })),
            "{unknown:?}"
        );
        let upside_down = PlacementTree::new(
            vec![osd(1, "h1")],
            &json!({"r1":{"level":"rack","parent":"h1"}}),
            &json!({"rack":10}),
        );
        assert!(
            matches!(upside_down, Err(PlacementError::InvalidTree { .. })),
            "{upside_down:?}"
        );
        let level = PlacementTree::new(
            vec![osd(1, "h1")],
            &json!({"r1":{"level":"row"}}),
            &Value::Null,
        );
        assert!(
            matches!(level, Err(PlacementError::UnknownLevel { .. })),
            "{level:?}"
        );
        let no_level = PlacementTree::new(vec![osd(1, "h1")], &json!({"r1":{}}), &Value::Null);
        assert!(
            matches!(no_level, Err(PlacementError::InvalidTree { .. })),
            "{no_level:?}"
        );
        let dup = PlacementTree::new(vec![osd(1, "h1"), osd(1, "h2")], &Value::Null, &Value::Null);
        assert!(
            matches!(dup, Err(PlacementError::InvalidField { .. })),
            "{dup:?}"
        );
    }

    #[test]
    fn osd_from_etcd() {
        let o = OsdInfo::from_etcd(
            OsdNum(7),
            Some(&json!({"state":"up","host":"n1","port":1})),
            Some(&json!({"size":1000,"free":10})),
            Some(&json!({"reweight":0.5,"tags":"nvme","noout":true})),
            true,
        )
        .unwrap();
        assert!(o.up && o.out && o.noout && o.in_placement());
        assert_eq!(
            (o.host.as_str(), o.weight(), o.tags.clone()),
            ("n1", 500.0, vec!["nvme".to_owned()])
        );
        let down = OsdInfo::from_etcd(
            OsdNum(8),
            None,
            Some(&json!({"size":1,"host":"n2"})),
            None,
            true,
        )
        .unwrap();
        assert!(!down.up && !down.in_placement());
        assert_eq!(down.host, "n2");
        let bad = OsdInfo::from_etcd(OsdNum(9), None, None, Some(&json!({"reweight":2})), false);
        assert!(matches!(bad, Err(PlacementError::InvalidField { .. })));
    }
}
