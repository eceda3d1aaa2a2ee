//! The master's in-memory mirror of the etcd keys it watches.
//!
//! # What this module owns
//! - [`ClusterState`]: the last value (and, where the monitor writes the key guarded by it,
//!   the mod_revision) of every watched key, fed by the initial load and then by the watch.
//! - The decision which keys matter for placement and which only for stats
//!   ([`Relevance`]); `osd/stats` counts for placement only when its `size` or `host` moves.
//! - Feeding counter snapshots into [`crate::stats::Rates`] as they arrive.
//!
//! # What it must never do
//! - Reject or panic on a value: a value that is not JSON is kept as `null` (so the key
//!   still "exists" with its revision, and the monitor may overwrite it) and reported.
//! - Talk to etcd or decide anything: it only remembers.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::Value;
use vitastor_layout::{keys, parse_pg_config, LayoutError, PgConfigItem};

use crate::stats::Rates;

/// Watched keys under the prefix: `(key, is_prefix)`.
pub const WATCHED_KEYS: &[(&str, bool)] = &[
    (keys::CONFIG_GLOBAL, false),
    (keys::CONFIG_POOLS, false),
    (keys::CONFIG_OSD_PREFIX, true),
    (keys::CONFIG_NODE_PLACEMENT, false),
    (keys::CONFIG_INODE_PREFIX, true),
    (keys::OSD_STATE_PREFIX, true),
    (keys::OSD_STATS_PREFIX, true),
    (keys::OSD_INODESTATS_PREFIX, true),
    (keys::OSD_SPACE_PREFIX, true),
    (keys::PG_CONFIG, false),
    (keys::PG_HISTORY_PREFIX, true),
    (keys::PG_STATE_PREFIX, true),
    (keys::LAST_CLEAN_PGS, false),
];

/// Whether `key` (relative to the prefix) is one of [`WATCHED_KEYS`].
pub fn is_watched(key: &str) -> bool {
    WATCHED_KEYS.iter().any(|&(watched, is_prefix)| {
        if is_prefix {
            key.starts_with(watched)
        } else {
            key == watched
        }
    })
}

/// What a key change means for the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relevance {
    /// Placement (or history clean-up, or a pending PG count change) may have to act.
    Placement,
    /// Only the next stats aggregation sees it.
    Stats,
    /// Not a watched key.
    Ignored,
}

/// Last known values of the watched keys.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// `config/global`.
    pub global: Value,
    /// `config/pools`.
    pub pools: Value,
    /// `config/node_placement`.
    pub node_placement: Value,
    /// `config/osd/<n>`.
    pub osd_config: BTreeMap<u64, Value>,
    /// `config/inode/<pool>/<inode>` (image names for metrics).
    pub inode_config: BTreeMap<(u32, u64), Value>,
    /// `osd/state/<n>` (leased by the OSD).
    pub osd_state: BTreeMap<u64, Value>,
    /// `osd/stats/<n>`.
    pub osd_stats: BTreeMap<u64, Value>,
    /// `osd/inodestats/<n>`.
    pub osd_inodestats: BTreeMap<u64, Value>,
    /// `osd/space/<n>`.
    pub osd_space: BTreeMap<u64, Value>,
    /// `pg/config` (`null` when absent).
    pub pg_config: Value,
    /// mod_revision of `pg/config` (0 when absent): the guard of every placement write.
    pub pg_config_rev: i64,
    /// `pg/history/<pool>/<pg>` with its mod_revision.
    pub pg_history: BTreeMap<(u32, u32), (Value, i64)>,
    /// `pg/state/<pool>/<pg>` (leased by the PG's primary).
    pub pg_state: BTreeMap<(u32, u32), Value>,
    /// `history/last_clean_pgs`.
    pub last_clean: Value,
    /// Counter rates derived from successive `osd/stats` and `osd/inodestats` values.
    pub rates: Rates,
}

/// Parses a raw etcd value; not JSON → `null` plus a note naming the key.
pub fn decode(key: &str, raw: &[u8]) -> (Value, Option<String>) {
    match serde_json::from_slice(raw) {
        Ok(v) => (v, None),
        Err(e) => (
            Value::Null,
            Some(format!(
                "{key}: value is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(80)])
            )),
        ),
    }
}

impl ClusterState {
    /// `pg/config` as `(pool, pg) → item`, with one error per malformed part; an absent key
    /// is an empty config, not an error.
    pub fn pg_items(&self) -> (BTreeMap<(u32, u32), PgConfigItem>, Vec<LayoutError>) {
        if self.pg_config.is_null() {
            return (BTreeMap::new(), Vec::new());
        }
        parse_pg_config(&self.pg_config)
    }

    /// Records a put (`Some(value)`) or a delete (`None`) of `key` (relative to the prefix).
    pub fn apply(
        &mut self,
        key: &str,
        value: Option<Value>,
        mod_rev: i64,
        now: Instant,
    ) -> Relevance {
        use keys::*;
        let num = |prefix: &str| parse_num(key, prefix);
        let set = |map: &mut BTreeMap<u64, Value>, n: u64, v: Option<Value>| match v {
            Some(v) => {
                map.insert(n, v);
            }
            None => {
                map.remove(&n);
            }
        };
        if key == CONFIG_GLOBAL {
            self.global = value.unwrap_or(Value::Null);
        } else if key == CONFIG_POOLS {
            self.pools = value.unwrap_or(Value::Null);
        } else if key == CONFIG_NODE_PLACEMENT {
            self.node_placement = value.unwrap_or(Value::Null);
        } else if key == PG_CONFIG {
            self.pg_config_rev = if value.is_some() { mod_rev } else { 0 };
            self.pg_config = value.unwrap_or(Value::Null);
        } else if key == LAST_CLEAN_PGS {
            self.last_clean = value.unwrap_or(Value::Null);
            return Relevance::Stats;
        } else if let Some(n) = num(CONFIG_OSD_PREFIX) {
            set(&mut self.osd_config, n, value);
        } else if let Some(n) = num(OSD_STATE_PREFIX) {
            set(&mut self.osd_state, n, value);
        } else if let Some(n) = num(OSD_STATS_PREFIX) {
            let placement_fields =
                |v: Option<&Value>| v.map(|v| (v.get("size").cloned(), v.get("host").cloned()));
            let before = placement_fields(self.osd_stats.get(&n));
            if let Some(v) = &value {
                self.rates.observe_osd(n, v, now);
            }
            let after = placement_fields(value.as_ref());
            set(&mut self.osd_stats, n, value);
            return if before == after {
                Relevance::Stats
            } else {
                Relevance::Placement
            };
        } else if let Some(n) = num(OSD_INODESTATS_PREFIX) {
            if let Some(v) = &value {
                self.rates.observe_inodes(n, v, now);
            }
            set(&mut self.osd_inodestats, n, value);
            return Relevance::Stats;
        } else if let Some(n) = num(OSD_SPACE_PREFIX) {
            set(&mut self.osd_space, n, value);
            return Relevance::Stats;
        } else if let Some((pool, inode)) = parse_pair(key, CONFIG_INODE_PREFIX) {
            match value {
                Some(v) => self.inode_config.insert((pool, inode), v),
                None => self.inode_config.remove(&(pool, inode)),
            };
            return Relevance::Stats;
        } else if let Some((pool, pg)) = pg_pair(key, PG_HISTORY_PREFIX) {
            match value {
                Some(v) => self.pg_history.insert((pool, pg), (v, mod_rev)),
                None => self.pg_history.remove(&(pool, pg)),
            };
        } else if let Some((pool, pg)) = pg_pair(key, PG_STATE_PREFIX) {
            match value {
                Some(v) => self.pg_state.insert((pool, pg), v),
                None => self.pg_state.remove(&(pool, pg)),
            };
        } else {
            return Relevance::Ignored;
        }
        Relevance::Placement
    }
}

/// `<prefix><pool>/<pg>` with a PG number that fits a u32.
fn pg_pair(key: &str, prefix: &str) -> Option<(u32, u32)> {
    let (pool, pg) = keys::parse_pair(key, prefix)?;
    Some((pool, u32::try_from(pg).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relevance_and_revisions() {
        let mut s = ClusterState::default();
        let now = Instant::now();
        let stats = json!({"size": 100, "host": "a", "op_stats": {}});
        assert_eq!(
            s.apply("osd/stats/1", Some(stats.clone()), 5, now),
            Relevance::Placement
        );
        // Only counters moved: stats, not placement.
        let mut again = stats.clone();
        again["free"] = json!(5);
        assert_eq!(
            s.apply("osd/stats/1", Some(again), 6, now),
            Relevance::Stats
        );
        assert_eq!(
            s.apply("pg/config", Some(json!({"items":{}})), 7, now),
            Relevance::Placement
        );
        assert_eq!(s.pg_config_rev, 7);
        assert_eq!(s.apply("pg/config", None, 8, now), Relevance::Placement);
        assert_eq!(s.pg_config_rev, 0);
        assert_eq!(
            s.apply("pg/history/1/2", Some(json!({})), 9, now),
            Relevance::Placement
        );
        assert_eq!(s.pg_history[&(1, 2)].1, 9);
        assert_eq!(
            s.apply("pg/state/x/2", Some(json!({})), 9, now),
            Relevance::Ignored
        );
        assert_eq!(
            s.apply("inode/stats/1/1", Some(json!({})), 9, now),
            Relevance::Ignored
        );
        assert!(is_watched("pg/state/1/2") && is_watched("config/global"));
        assert!(!is_watched("config/globalx") && !is_watched("inode/stats/1/1"));
        let (v, note) = decode("config/pools", b"{oops");
        assert!(v.is_null() && note.unwrap().contains("config/pools"));
    }
}
