//! `pg/config`, `pg/history/<pool>/<pg>` and `pg/state/<pool>/<pg>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{from_serde, LayoutError};
use crate::tolerant;

/// One PG of `pg/config`: `{"osd_set":[1,2,3],"primary":1,"pause":false}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgConfigItem {
    /// OSD per slot; 0 marks a missing slot. For EC/XOR the position is the part number.
    #[serde(deserialize_with = "tolerant::nums")]
    pub osd_set: Vec<u64>,
    /// The OSD that must serve the PG; 0 when none is chosen.
    #[serde(default, deserialize_with = "tolerant::num")]
    pub primary: u64,
    /// The monitor pauses PGs while it changes their count.
    #[serde(default, deserialize_with = "tolerant::flag")]
    pub pause: bool,
}

/// Parses `pg/config` into `(pool, pg) → item`; malformed PGs are reported one by one.
pub fn parse_pg_config(v: &Value) -> (BTreeMap<(u32, u32), PgConfigItem>, Vec<LayoutError>) {
    let ctx = crate::keys::PG_CONFIG;
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    let Some(items) = v.get("items").and_then(Value::as_object) else {
        if !v.as_object().is_some_and(|o| o.is_empty()) {
            errors.push(LayoutError::shape(ctx, "expected {\"items\":{...}}"));
        }
        return (out, errors);
    };
    for (pool_key, pgs) in items {
        let Ok(pool) = pool_key.parse::<u32>() else {
            errors.push(LayoutError::shape(
                ctx,
                format!("pool id {pool_key:?} is not a number"),
            ));
            continue;
        };
        let Some(pgs) = pgs.as_object() else {
            errors.push(LayoutError::shape(
                ctx,
                format!("pool {pool}: expected an object of PGs"),
            ));
            continue;
        };
        for (pg_key, item) in pgs {
            let pg = match pg_key.parse::<u32>() {
                Ok(pg) if pg > 0 => pg,
                _ => {
                    errors.push(LayoutError::shape(
                        ctx,
                        format!("pool {pool}: PG number {pg_key:?} is not a positive number"),
                    ));
                    continue;
                }
            };
            match serde_json::from_value::<PgConfigItem>(item.clone()) {
                Ok(item) => {
                    out.insert((pool, pg), item);
                }
                Err(e) => errors.push(from_serde(&format!("{ctx} pool {pool} PG {pg}"), e)),
            }
        }
    }
    (out, errors)
}

/// `pg/history/<pool>/<pg>`: OSD sets that may still hold data of the PG.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgHistory {
    /// Earlier OSD sets (0 = missing slot).
    #[serde(default, deserialize_with = "tolerant::num_sets")]
    pub osd_sets: Vec<Vec<u64>>,
    /// Every OSD that may hold data of the PG.
    #[serde(default, deserialize_with = "tolerant::nums")]
    pub all_peers: Vec<u64>,
    /// Highest PG epoch used so far (versions written by a primary are above it).
    #[serde(default, deserialize_with = "tolerant::num")]
    pub epoch: u64,
}

impl PgHistory {
    /// Parses the value of a `pg/history` key.
    pub fn from_json(key: &str, v: &Value) -> Result<PgHistory, LayoutError> {
        serde_json::from_value(v.clone()).map_err(|e| from_serde(key, e))
    }
}

/// One PG state name of `pg/state` (`active`, `degraded`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PgStateName {
    /// The primary is starting the PG.
    Starting,
    /// Listing objects on the peers.
    Peering,
    /// Too few OSDs of the current or history sets are up to serve the PG.
    Incomplete,
    /// Serving I/O.
    Active,
    /// Re-listing after a peer change while still active.
    Repeering,
    /// Finishing operations before going offline.
    Stopping,
    /// Nobody serves the PG.
    Offline,
    /// Fewer than `pg_size` members are up.
    Degraded,
    /// Some objects have no readable current copy.
    HasIncomplete,
    /// Some objects have fewer copies than `pg_size`.
    HasDegraded,
    /// Some objects live (also) outside the current OSD set.
    HasMisplaced,
    /// Some objects have unstable versions.
    HasUnclean,
    /// Objects that do not belong to the PG.
    HasInvalid,
    /// Replicas disagree.
    HasInconsistent,
    /// Checksums failed.
    HasCorrupted,
    /// Data remains on OSDs that are down and out.
    LeftOnDead,
    /// Being scrubbed.
    Scrubbing,
}

impl PgStateName {
    const ALL: [(PgStateName, &'static str); 17] = [
        (Self::Starting, "starting"),
        (Self::Peering, "peering"),
        (Self::Incomplete, "incomplete"),
        (Self::Active, "active"),
        (Self::Repeering, "repeering"),
        (Self::Stopping, "stopping"),
        (Self::Offline, "offline"),
        (Self::Degraded, "degraded"),
        (Self::HasIncomplete, "has_incomplete"),
        (Self::HasDegraded, "has_degraded"),
        (Self::HasMisplaced, "has_misplaced"),
        (Self::HasUnclean, "has_unclean"),
        (Self::HasInvalid, "has_invalid"),
        (Self::HasInconsistent, "has_inconsistent"),
        (Self::HasCorrupted, "has_corrupted"),
        (Self::LeftOnDead, "left_on_dead"),
        (Self::Scrubbing, "scrubbing"),
    ];

    /// The name as written in etcd.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// Parses a name written in etcd.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(s, _)| *s)
    }
}

/// `pg/state/<pool>/<pg>`: `{"primary":1,"state":["active"],"peers":[1,2,3]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgState {
    /// The OSD serving the PG.
    #[serde(deserialize_with = "tolerant::num")]
    pub primary: u64,
    /// State names.
    pub state: Vec<String>,
    /// OSDs the primary peered with.
    #[serde(default, deserialize_with = "tolerant::nums")]
    pub peers: Vec<u64>,
}

impl PgState {
    /// Parses the value of a `pg/state` key.
    pub fn from_json(key: &str, v: &Value) -> Result<PgState, LayoutError> {
        serde_json::from_value(v.clone()).map_err(|e| from_serde(key, e))
    }

    /// Builds a state from typed names.
    pub fn new(primary: u64, names: &[PgStateName], peers: Vec<u64>) -> PgState {
        PgState {
            primary,
            state: names.iter().map(|n| n.as_str().to_owned()).collect(),
            peers,
        }
    }

    /// True when the state lists `name`.
    pub fn has(&self, name: PgStateName) -> bool {
        self.state.iter().any(|s| s == name.as_str())
    }

    /// True when clients may send I/O to the primary.
    pub fn is_active(&self) -> bool {
        self.has(PgStateName::Active)
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pg_config_keeps_good_items() {
        let (items, errors) = parse_pg_config(&json!({"items":{"1":{
            "1":{"osd_set":[1,2],"primary":1},
            "2":{"osd_set":"nope"},
            "0":{"osd_set":[1,2],"primary":1}}}}));
        assert_eq!(items.len(), 1);
        assert_eq!(items[&(1, 1)].osd_set, vec![1, 2]);
        assert_eq!(errors.len(), 2);
        assert!(parse_pg_config(&json!({})).1.is_empty());
    }

    #[test]
    fn pg_state_names() {
        let s = PgState::new(
            3,
            &[PgStateName::Active, PgStateName::HasDegraded],
            vec![3, 4],
        );
        let v = s.to_json();
        assert_eq!(
            v,
            json!({"primary":3,"state":["active","has_degraded"],"peers":[3,4]})
        );
        let back = PgState::from_json("pg/state/1/1", &v).unwrap();
        assert!(back.is_active() && back.has(PgStateName::HasDegraded));
        for (n, s) in PgStateName::ALL {
            assert_eq!(PgStateName::parse(s), Some(n));
        }
    }
}
