//! OSD commands: `osd-tree`, `ls-osd`, `modify-osd`, `rm-osd`.
//!
//! # What this module owns
//! - The merged view of one OSD: its leased `osd/state` (up or not, host), its `osd/stats`
//!   (size, free, host of a down OSD) and its operator settings `config/osd/<n>`.
//! - The placement tree as `config/node_placement` plus each OSD's reported host.
//! - Edits of `config/osd/<n>` (validated with `OsdConfig::from_json`) and the removal of an
//!   OSD's keys, both as compare-and-set transactions.
//!
//! # What it must never do
//! - Write `osd/state` (the OSD's own leased key) or `pg/config` (the monitor's).
//! - Remove an OSD that is up or still in a PG's OSD set without `--force`.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use serde_json::{json, Map, Value};
use vitastor_layout::{keys, parse_pg_config, OsdConfig, OsdState};

use crate::error::{CliError, Result};
use crate::etcd::{Check, Etcd, Write};
use crate::format;
use crate::state::{num, MAX_TXN_ATTEMPTS};

/// `modify-osd [--tags T,T] [--reweight W] [--noout true|false] OSD`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct ModifyOsdArgs {
    /// OSD number.
    pub osd: u64,
    /// Tags, comma-separated (empty string clears them).
    #[arg(long)]
    pub tags: Option<String>,
    /// Placement weight multiplier (0 takes the OSD out).
    #[arg(long)]
    pub reweight: Option<f64>,
    /// Never take the OSD out while it is down.
    #[arg(long, value_name = "true|false")]
    pub noout: Option<bool>,
}

/// `rm-osd OSD... [--force]`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct RmOsdArgs {
    /// OSD numbers.
    #[arg(required = true)]
    pub osds: Vec<u64>,
    /// Remove even if the OSD is up or still holds PGs.
    #[arg(long)]
    pub force: bool,
}

/// What etcd knows about one OSD.
#[derive(Debug, Clone, Default)]
struct Osd {
    state: Option<OsdState>,
    stats: Option<Value>,
    config: OsdConfig,
}

impl Osd {
    fn up(&self) -> bool {
        self.state.as_ref().is_some_and(OsdState::is_up)
    }

    fn host(&self) -> String {
        self.state
            .as_ref()
            .map(|s| s.host.clone())
            .filter(|h| !h.is_empty())
            .or_else(|| {
                self.stats
                    .as_ref()
                    .and_then(|s| s.get("host"))
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .unwrap_or_else(|| "?".into())
    }

    fn size_free(&self) -> (u64, u64) {
        self.stats
            .as_ref()
            .map_or((0, 0), |s| (num(s, "size"), num(s, "free")))
    }

    fn json(&self, num: u64) -> Value {
        let (size, free) = self.size_free();
        json!({"osd": num, "host": self.host(), "up": self.up(), "size": size, "free": free,
               "reweight": self.config.reweight, "tags": self.config.tags,
               "noout": self.config.noout})
    }
}

/// Every OSD that has a state, stats or config key.
fn load_osds(etcd: &mut Etcd) -> Result<BTreeMap<u64, Osd>> {
    let mut osds: BTreeMap<u64, Osd> = BTreeMap::new();
    for kv in etcd.get_prefix(keys::OSD_STATE_PREFIX)? {
        let Some(n) = keys::parse_num(&kv.key, keys::OSD_STATE_PREFIX) else {
            continue;
        };
        match OsdState::from_json(&kv.key, &kv.value) {
            Ok(s) => osds.entry(n).or_default().state = Some(s),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    for kv in etcd.get_prefix(keys::OSD_STATS_PREFIX)? {
        if let Some(n) = keys::parse_num(&kv.key, keys::OSD_STATS_PREFIX) {
            osds.entry(n).or_default().stats = Some(kv.value);
        }
    }
    for kv in etcd.get_prefix(keys::CONFIG_OSD_PREFIX)? {
        let Some(n) = keys::parse_num(&kv.key, keys::CONFIG_OSD_PREFIX) else {
            continue;
        };
        match OsdConfig::from_json(&kv.key, &kv.value) {
            Ok(c) => osds.entry(n).or_default().config = c,
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    Ok(osds)
}

/// `[name, up, size, free, used%, reweight, tags, noout]`.
fn osd_row(o: &Osd, name: String) -> Vec<String> {
    let (size, free) = o.size_free();
    vec![
        name,
        if o.up() { "up" } else { "down" }.into(),
        format::size(size),
        format::size(free),
        format::percent(size.saturating_sub(free), size),
        format!("{}", o.config.reweight),
        if o.config.tags.is_empty() {
            "-".into()
        } else {
            o.config.tags.join(",")
        },
        if o.config.noout { "noout" } else { "-" }.into(),
    ]
}

/// `ls-osd`.
pub fn ls_osd(etcd: &mut Etcd, json_out: bool) -> Result<()> {
    let osds = load_osds(etcd)?;
    if json_out {
        let out: Vec<Value> = osds.iter().map(|(n, o)| o.json(*n)).collect();
        println!("{}", Value::Array(out));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = osds
        .iter()
        .map(|(n, o)| {
            let mut row = vec![n.to_string(), o.host()];
            row.extend(osd_row(o, String::new()).into_iter().skip(1));
            row
        })
        .collect();
    format::table(
        &[
            "OSD", "HOST", "UP", "SIZE", "FREE", "USED%", "REWEIGHT", "TAGS", "NOOUT",
        ],
        &rows,
    );
    Ok(())
}

/// One node of the placement tree.
#[derive(Debug, Clone)]
struct Node {
    level: String,
    parent: Option<String>,
}

/// `osd-tree`.
pub fn osd_tree(etcd: &mut Etcd, json_out: bool) -> Result<()> {
    let osds = load_osds(etcd)?;
    let placement = etcd
        .get(keys::CONFIG_NODE_PLACEMENT)?
        .and_then(|kv| kv.value.as_object().cloned())
        .unwrap_or_default();
    let parent_of = |v: &Value| v.get("parent").and_then(Value::as_str).map(String::from);
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (name, v) in &placement {
        if name.parse::<u64>().is_err() {
            let level = v.get("level").and_then(Value::as_str).unwrap_or("host");
            nodes.insert(
                name.clone(),
                Node {
                    level: level.to_string(),
                    parent: parent_of(v),
                },
            );
        }
    }
    // By default an OSD sits under the host it reports.
    let osd_parent: BTreeMap<u64, String> = osds
        .iter()
        .map(|(n, o)| {
            let parent = placement
                .get(&n.to_string())
                .and_then(parent_of)
                .unwrap_or_else(|| o.host());
            (*n, parent)
        })
        .collect();
    for parent in osd_parent.values() {
        nodes.entry(parent.clone()).or_insert(Node {
            level: "host".into(),
            parent: None,
        });
    }
    if json_out {
        let mut out: Vec<Value> = nodes
            .iter()
            .map(|(name, n)| json!({"name": name, "level": n.level, "parent": n.parent}))
            .collect();
        for (n, o) in &osds {
            let mut v = o.json(*n);
            v["name"] = json!(n.to_string());
            v["level"] = json!("osd");
            v["parent"] = json!(osd_parent[n]);
            out.push(v);
        }
        println!("{}", Value::Array(out));
        return Ok(());
    }
    let mut rows = Vec::new();
    // Roots: nodes whose parent is absent or names no known node.
    let roots: Vec<String> = nodes
        .iter()
        .filter(|(_, n)| n.parent.as_ref().map_or(true, |p| !nodes.contains_key(p)))
        .map(|(name, _)| name.clone())
        .collect();
    let mut seen = BTreeSet::new();
    for root in roots {
        tree_rows(&root, 0, &nodes, &osds, &osd_parent, &mut seen, &mut rows);
    }
    format::table(
        &[
            "TYPE", "NAME", "UP", "SIZE", "FREE", "USED%", "REWEIGHT", "TAGS", "NOOUT",
        ],
        &rows,
    );
    Ok(())
}

fn tree_rows(
    name: &str,
    depth: usize,
    nodes: &BTreeMap<String, Node>,
    osds: &BTreeMap<u64, Osd>,
    osd_parent: &BTreeMap<u64, String>,
    seen: &mut BTreeSet<String>,
    rows: &mut Vec<Vec<String>>,
) {
    // A placement loop (a node that is its own ancestor) must not recurse forever.
    if !seen.insert(name.to_string()) {
        return;
    }
    let indent = "  ".repeat(depth);
    let mut row = vec![format!("{indent}{}", nodes[name].level), name.to_string()];
    row.resize(9, String::new());
    rows.push(row);
    for (child, node) in nodes {
        if node.parent.as_deref() == Some(name) {
            tree_rows(child, depth + 1, nodes, osds, osd_parent, seen, rows);
        }
    }
    for (n, o) in osds {
        if osd_parent[n] == name {
            let mut row = vec![format!("{indent}  osd")];
            row.extend(osd_row(o, n.to_string()));
            rows.push(row);
        }
    }
}

/// `modify-osd`.
pub fn modify_osd(etcd: &mut Etcd, args: &ModifyOsdArgs, json_out: bool) -> Result<()> {
    if args.tags.is_none() && args.reweight.is_none() && args.noout.is_none() {
        return Err(CliError::Usage(
            "nothing to change: give --tags, --reweight or --noout".into(),
        ));
    }
    if !load_osds(etcd)?.contains_key(&args.osd) {
        return Err(CliError::NoSuchOsd(args.osd));
    }
    let key = keys::config_osd(args.osd);
    for _ in 0..MAX_TXN_ATTEMPTS {
        let (mut cfg, rev) = match etcd.get(&key)? {
            Some(kv) => (
                kv.value.as_object().cloned().unwrap_or_default(),
                kv.mod_revision,
            ),
            None => (Map::new(), 0),
        };
        if let Some(tags) = &args.tags {
            let list: Vec<&str> = tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            cfg.insert("tags".into(), json!(list));
        }
        if let Some(w) = args.reweight {
            cfg.insert("reweight".into(), json!(w));
        }
        if let Some(noout) = args.noout {
            cfg.insert("noout".into(), json!(noout));
        }
        let value = Value::Object(cfg);
        OsdConfig::from_json(&key, &value).map_err(|e| CliError::Usage(e.to_string()))?;
        if etcd.txn(
            "modifying the OSD",
            &[Check::ModRevision(key.clone(), rev)],
            &[Write::Put(key.clone(), value.clone())],
        )? {
            if json_out {
                println!("{value}");
            } else {
                println!("OSD {} modified", args.osd);
            }
            return Ok(());
        }
    }
    Err(CliError::Conflict("modify-osd", MAX_TXN_ATTEMPTS))
}

/// `rm-osd`.
pub fn rm_osd(etcd: &mut Etcd, args: &RmOsdArgs, json_out: bool) -> Result<()> {
    let osds = load_osds(etcd)?;
    let pg_sets = etcd
        .get(keys::PG_CONFIG)?
        .map(|kv| parse_pg_config(&kv.value).0)
        .unwrap_or_default();
    for &n in &args.osds {
        let osd = osds.get(&n).ok_or(CliError::NoSuchOsd(n))?;
        if args.force {
            continue;
        }
        if osd.up() {
            return Err(CliError::Refused(format!(
                "OSD {n} is up; stop it first or add --force"
            )));
        }
        let pgs = pg_sets
            .values()
            .filter(|item| item.osd_set.contains(&n))
            .count();
        if pgs > 0 {
            return Err(CliError::Refused(format!(
                "OSD {n} is in the OSD set of {pgs} PG(s); wait for the monitor to move them \
                 or add --force"
            )));
        }
    }
    for _ in 0..MAX_TXN_ATTEMPTS {
        let placement = etcd.get(keys::CONFIG_NODE_PLACEMENT)?;
        let mut checks = Vec::new();
        let mut writes = Vec::new();
        if let Some(kv) = &placement {
            let mut tree = kv.value.as_object().cloned().unwrap_or_default();
            let before = tree.len();
            for n in &args.osds {
                tree.remove(&n.to_string());
            }
            if tree.len() != before {
                checks.push(Check::ModRevision(kv.key.clone(), kv.mod_revision));
                writes.push(Write::Put(kv.key.clone(), Value::Object(tree)));
            }
        }
        for &n in &args.osds {
            writes.push(Write::Delete(keys::config_osd(n)));
            writes.push(Write::Delete(keys::osd_stats(n)));
            writes.push(Write::Delete(format!("{}{n}", keys::OSD_INODESTATS_PREFIX)));
            writes.push(Write::Delete(format!("{}{n}", keys::OSD_SPACE_PREFIX)));
        }
        if etcd.txn("removing the OSDs", &checks, &writes)? {
            if json_out {
                println!("{}", json!({"removed": args.osds}));
            } else {
                for n in &args.osds {
                    println!("OSD {n} removed");
                }
            }
            return Ok(());
        }
    }
    Err(CliError::Conflict("rm-osd", MAX_TXN_ATTEMPTS))
}
