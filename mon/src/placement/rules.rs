//! Pool placement rules parsed from `config/pools`.

use serde_json::Value;
use vitastor_layout::tolerant;

use super::tree::{parse_tags, HOST_LEVEL};
use super::{PlacementError, PoolId};

/// Default bound on the OSD combinations one pool's LP considers (as in the original).
pub const DEFAULT_MAX_OSD_COMBINATIONS: usize = 10000;
/// Upper bound on `pg_size`: far above any sane EC width, low enough that a
/// typo (e.g. `pg_size: 300`) is reported instead of producing a useless pool.
pub const MAX_PG_SIZE: usize = 64;
/// Upper bound on `pg_count`: PG numbers are u32 and every PG is an etcd entry;
/// a million PGs per pool is already far past what the monitor can publish.
pub const MAX_PG_COUNT: u32 = 1 << 20;

/// Redundancy scheme; decides whether slot positions carry meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolScheme {
    /// Full copies: slots are interchangeable.
    Replicated,
    /// One parity chunk: slot i holds part i.
    Xor,
    /// Erasure code (`ec`, alias `jerasure`): slot i holds part i.
    Ec,
}

/// The placement-relevant fields of one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRules {
    /// Pool id.
    pub id: PoolId,
    /// Redundancy scheme.
    pub scheme: PoolScheme,
    /// OSDs per PG.
    pub pg_size: usize,
    /// Minimum live OSDs for I/O; placement needs at least this many failure domains.
    pub pg_minsize: usize,
    /// Parity chunks (EC/XOR; 0 for replicated).
    pub parity_chunks: usize,
    /// Number of PGs.
    pub pg_count: u32,
    /// Placement level whose nodes may hold at most one OSD of a PG (`host` by default).
    pub failure_domain: String,
    /// Only OSDs under this node are used.
    pub root_node: Option<String>,
    /// Only OSDs with all of these tags are used.
    pub osd_tags: Vec<String>,
    /// Primaries go to OSDs with all of these tags when one of the set is up.
    pub primary_affinity_tags: Vec<String>,
    /// Bound on the OSD combinations the LP considers (the distinct previous
    /// sets are always considered, even if there are more of them).
    pub max_osd_combinations: usize,
}

impl PoolRules {
    /// A replicated pool with the given sizes and default options (for tools and tests).
    pub fn replicated(id: PoolId, pg_size: usize, pg_minsize: usize, pg_count: u32) -> Self {
        Self {
            id,
            scheme: PoolScheme::Replicated,
            pg_size,
            pg_minsize,
            parity_chunks: 0,
            pg_count,
            failure_domain: HOST_LEVEL.to_owned(),
            root_node: None,
            osd_tags: Vec::new(),
            primary_affinity_tags: Vec::new(),
            max_osd_combinations: DEFAULT_MAX_OSD_COMBINATIONS,
        }
    }

    /// Whether a slot's position is its part number (EC/XOR).
    pub fn ordered_slots(&self) -> bool {
        self.scheme != PoolScheme::Replicated
    }

    /// Parses one entry of `config/pools` and validates it.
    pub fn from_json(id: PoolId, v: &Value) -> Result<Self, PlacementError> {
        let context = format!("pool {id}");
        let invalid = |field: &str, reason: String| PlacementError::InvalidField {
            context: context.clone(),
            field: field.into(),
            reason,
        };
        if !v.is_object() {
            return Err(invalid("pool", format!("expected an object, got {v}")));
        }
        let get = |field: &str| v.get(field).filter(|x| !x.is_null());
        let uint = |field: &str| -> Result<Option<u64>, PlacementError> {
            get(field)
                .map(|x| {
                    tolerant::u64_of(x).ok_or_else(|| {
                        invalid(field, format!("expected a non-negative integer, got {x}"))
                    })
                })
                .transpose()
        };
        let required = |field: &str| -> Result<u64, PlacementError> {
            uint(field)?.ok_or_else(|| PlacementError::MissingField {
                context: context.clone(),
                field: field.into(),
            })
        };
        let string = |field: &str| -> Result<Option<String>, PlacementError> {
            get(field)
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| invalid(field, format!("expected a string, got {x}")))
                })
                .transpose()
        };

        let scheme = match string("scheme")?.as_deref() {
            None | Some("replicated") => PoolScheme::Replicated,
            Some("xor") => PoolScheme::Xor,
            Some("ec") | Some("jerasure") => PoolScheme::Ec,
            Some(other) => return Err(invalid("scheme", format!("unknown scheme {other:?}"))),
        };
        let small = |field: &str, x: u64| {
            usize::try_from(x).map_err(|_| invalid(field, format!("{x} is too large")))
        };
        let pg_size = small("pg_size", required("pg_size")?)?;
        let pg_minsize = small("pg_minsize", required("pg_minsize")?)?;
        let pg_count = required("pg_count")?;
        // XOR has one parity chunk whether or not the entry says so (as `PoolConfig` reads it).
        let default_parity = if scheme == PoolScheme::Xor { 1 } else { 0 };
        let parity_chunks = small(
            "parity_chunks",
            uint("parity_chunks")?.unwrap_or(default_parity),
        )?;
        let max_osd_combinations = small(
            "max_osd_combinations",
            uint("max_osd_combinations")?.unwrap_or(DEFAULT_MAX_OSD_COMBINATIONS as u64),
        )?;
        let rules = Self {
            id,
            scheme,
            pg_size,
            pg_minsize,
            parity_chunks,
            pg_count: u32::try_from(pg_count)
                .map_err(|_| invalid("pg_count", format!("{pg_count} is too large")))?,
            failure_domain: string("failure_domain")?.unwrap_or_else(|| HOST_LEVEL.to_owned()),
            root_node: string("root_node")?.filter(|r| !r.is_empty()),
            osd_tags: parse_tags(
                v.get("osd_tags").unwrap_or(&Value::Null),
                &context,
                "osd_tags",
            )?,
            primary_affinity_tags: parse_tags(
                v.get("primary_affinity_tags").unwrap_or(&Value::Null),
                &context,
                "primary_affinity_tags",
            )?,
            max_osd_combinations,
        };
        rules.validate()?;
        Ok(rules)
    }

    /// Checks the numeric constraints between fields.
    pub fn validate(&self) -> Result<(), PlacementError> {
        let invalid = |field: &str, reason: String| {
            Err(PlacementError::InvalidField {
                context: format!("pool {}", self.id),
                field: field.into(),
                reason,
            })
        };
        if self.pg_size == 0 || self.pg_size > MAX_PG_SIZE {
            return invalid(
                "pg_size",
                format!("{} is not in 1..={MAX_PG_SIZE}", self.pg_size),
            );
        }
        if self.pg_minsize == 0 || self.pg_minsize > self.pg_size {
            return invalid(
                "pg_minsize",
                format!(
                    "{} is not in 1..=pg_size ({})",
                    self.pg_minsize, self.pg_size
                ),
            );
        }
        if self.pg_count == 0 || self.pg_count > MAX_PG_COUNT {
            return invalid(
                "pg_count",
                format!("{} is not in 1..={MAX_PG_COUNT}", self.pg_count),
            );
        }
        if self.max_osd_combinations == 0 {
            return invalid("max_osd_combinations", "must be positive".into());
        }
        match self.scheme {
            PoolScheme::Replicated => {}
            PoolScheme::Xor if self.parity_chunks > 1 => {
                return invalid(
                    "parity_chunks",
                    format!("xor has exactly 1 parity chunk, got {}", self.parity_chunks),
                )
            }
            PoolScheme::Xor | PoolScheme::Ec => {
                if self.parity_chunks == 0 || self.parity_chunks >= self.pg_size {
                    return invalid(
                        "parity_chunks",
                        format!("{} is not in 1..pg_size", self.parity_chunks),
                    );
                }
                let data = self.pg_size - self.parity_chunks;
                if self.pg_minsize < data {
                    return invalid(
                        "pg_minsize",
                        format!(
                            "{} is below the {data} data chunks needed to read",
                            self.pg_minsize
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xor_without_parity_chunks_has_one() {
        let r = PoolRules::from_json(
            PoolId(1),
            &json!({"scheme":"xor","pg_size":3,"pg_minsize":2,"pg_count":8}),
        )
        .unwrap();
        assert_eq!(r.parity_chunks, 1);
        r.validate().unwrap();
    }

    #[test]
    fn parses_readme_example() {
        let r = PoolRules::from_json(
            PoolId(1),
            &json!({"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":256,"failure_domain":"host"}),
        )
        .unwrap();
        assert_eq!(r, PoolRules::replicated(PoolId(1), 2, 1, 256));
    }

    #[test]
    fn parses_options() {
        let r = PoolRules::from_json(
            PoolId(2),
            &json!({"scheme":"jerasure","pg_size":5,"parity_chunks":2,"pg_minsize":4,"pg_count":32,
                    "failure_domain":"rack","root_node":"dc1","osd_tags":"nvme",
                    "primary_affinity_tags":["fast","nvme"],"max_osd_combinations":500}),
        )
        .unwrap();
        assert_eq!(r.scheme, PoolScheme::Ec);
        assert!(r.ordered_slots());
        assert_eq!(r.failure_domain, "rack");
        assert_eq!(r.root_node.as_deref(), Some("dc1"));
        assert_eq!(r.osd_tags, vec!["nvme"]);
        assert_eq!(r.primary_affinity_tags, vec!["fast", "nvme"]);
        assert_eq!(r.max_osd_combinations, 500);
    }

    #[test]
    fn rejects_invalid_pools() {
        for bad in [
            json!({"pg_size":2,"pg_minsize":3,"pg_count":1}),
            json!({"pg_size":0,"pg_minsize":0,"pg_count":1}),
            json!({"pg_size":2,"pg_minsize":1,"pg_count":0}),
            json!({"pg_size":2,"pg_minsize":1,"pg_count":8,"scheme":"raid"}),
            json!({"pg_size":3,"pg_minsize":1,"pg_count":8,"scheme":"ec","parity_chunks":1}),
            json!({"pg_size":2,"pg_minsize":1,"pg_count":8,"osd_tags":5}),
            json!({"pg_size":"two","pg_minsize":1,"pg_count":8}),
        ] {
            assert!(
                matches!(
                    PoolRules::from_json(PoolId(1), &bad),
                    Err(PlacementError::InvalidField { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            PoolRules::from_json(PoolId(1), &json!({"pg_size":2,"pg_count":8})),
            Err(PlacementError::MissingField {
                context: "pool 1".into(),
                field: "pg_minsize".into()
            })
        );
        // Numeric strings are numbers (other writers put them so).
        let r = PoolRules::from_json(
            PoolId(1),
            &json!({"pg_size":"2","pg_minsize":"1","pg_count":"8"}),
        )
        .unwrap();
        assert_eq!((r.pg_size, r.pg_minsize, r.pg_count), (2, 1, 8));
    }
}
