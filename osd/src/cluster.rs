//! The OSD's view of the cluster state in etcd, rebuilt from the side thread's events: pools,
//! `pg/config`, `pg/history`, `pg/state` and which OSDs are up.
//!
//! It owns parsing and nothing else: it never talks to etcd and never decides about PGs. Each
//! event says what changed ([`Changes`]) so the PG logic re-examines only what it must. Bad
//! values are logged and leave the previous view in place.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use vitastor_layout::{
    keys, parse_pg_config, parse_pools, ImmediateCommit, OsdNum, OsdState, PgConfigItem, PgHistory,
    PgId, PgState, PoolConfig,
};

use crate::etcd::EtcdEvent;

/// What one batch of events changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Pools or global options changed: every PG is re-examined.
    pub all: bool,
    /// OSDs that went up or down (or changed address).
    pub osds: BTreeSet<OsdNum>,
    /// PGs whose config or history changed.
    pub pgs: BTreeSet<PgId>,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all && self.osds.is_empty() && self.pgs.is_empty()
    }
}

/// Parsed cluster state. See the module docs.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// `config/global`.
    pub global: serde_json::Map<String, Value>,
    /// Valid pools.
    pub pools: BTreeMap<u32, PoolConfig>,
    /// `pg/config` items.
    pub pg_config: BTreeMap<PgId, PgConfigItem>,
    /// `pg/history` per PG, with the raw value (deleting it must compare against it).
    pub pg_history: BTreeMap<PgId, (PgHistory, Value)>,
    /// `pg/state` per PG.
    pub pg_state: BTreeMap<PgId, PgState>,
    /// Up OSDs.
    pub osds: BTreeMap<OsdNum, OsdState>,
    /// Pools (or PGs) this OSD refuses to serve and why, as last logged: a reason is
    /// logged once, not at every change. Kept across etcd sessions.
    pub refused: BTreeMap<PgId, String>,
}

impl ClusterView {
    /// Applies one event; returns what changed.
    pub fn apply(&mut self, event: &EtcdEvent, changes: &mut Changes) {
        match event {
            EtcdEvent::InitialLoad { kvs } => {
                let old_osds: BTreeSet<OsdNum> = self.osds.keys().copied().collect();
                let refused = std::mem::take(&mut self.refused);
                *self = ClusterView::default();
                self.refused = refused;
                for (k, v) in kvs {
                    self.set(k, Some(v), &mut Changes::default());
                }
                changes.all = true;
                changes.osds.extend(old_osds);
                changes.osds.extend(self.osds.keys().copied());
            }
            EtcdEvent::KeyChanged { key, value } => self.set(key, value.as_ref(), changes),
            EtcdEvent::BadValue { key, error } => {
                tracing::warn!("etcd key {key} is not JSON, keeping the previous value: {error}")
            }
            _ => {}
        }
    }

    fn set(&mut self, key: &str, value: Option<&Value>, changes: &mut Changes) {
        let null = Value::Null;
        let v = value.unwrap_or(&null);
        if key == keys::CONFIG_GLOBAL {
            self.global = v.as_object().cloned().unwrap_or_default();
            changes.all = true;
        } else if key == keys::CONFIG_POOLS {
            let (pools, errors) = if value.is_some() {
                parse_pools(v)
            } else {
                Default::default()
            };
            for e in errors {
                tracing::error!("config/pools: skipping an invalid pool: {e}");
            }
            self.pools = pools;
            changes.all = true;
        } else if key == keys::PG_CONFIG {
            let (items, errors) = if value.is_some() {
                parse_pg_config(v)
            } else {
                Default::default()
            };
            for e in errors {
                tracing::error!("{e}");
            }
            let items = items.into_iter().map(|(k, v)| (PgId::from(k), v)).collect();
            let old = std::mem::replace(&mut self.pg_config, items);
            for (k, item) in &self.pg_config {
                if old.get(k) != Some(item) {
                    changes.pgs.insert(*k);
                }
            }
            changes
                .pgs
                .extend(old.keys().filter(|k| !self.pg_config.contains_key(k)));
        } else if let Some((pool, pg)) = keys::parse_pair(key, keys::PG_HISTORY_PREFIX) {
            let k = PgId::new(pool, pg as u32);
            match value.map(|v| PgHistory::from_json(key, v)) {
                Some(Ok(h)) => {
                    self.pg_history.insert(k, (h, v.clone()));
                }
                Some(Err(e)) => tracing::error!("{e}"),
                None => {
                    self.pg_history.remove(&k);
                }
            }
            changes.pgs.insert(k);
        } else if let Some((pool, pg)) = keys::parse_pair(key, keys::PG_STATE_PREFIX) {
            let k = PgId::new(pool, pg as u32);
            match value.map(|v| PgState::from_json(key, v)) {
                Some(Ok(s)) => {
                    self.pg_state.insert(k, s);
                }
                Some(Err(e)) => tracing::error!("{e}"),
                None => {
                    self.pg_state.remove(&k);
                }
            }
        } else if let Some(osd) = keys::parse_num(key, keys::OSD_STATE_PREFIX) {
            // The key's bare number becomes an `OsdNum` here, where it leaves etcd.
            let osd = OsdNum(osd);
            let parsed = value.map(|v| OsdState::from_json(key, v));
            let new = match parsed {
                Some(Ok(s)) if s.is_up() => Some(s),
                Some(Err(e)) => {
                    tracing::error!("{e}");
                    None
                }
                _ => None,
            };
            let old = match new {
                Some(s) => self.osds.insert(osd, s),
                None => self.osds.remove(&osd),
            };
            if old.as_ref() != self.osds.get(&osd) {
                changes.osds.insert(osd);
            }
        }
    }

    /// The cluster-wide `immediate_commit` (default `all`, as the seed's recommended setup).
    pub fn default_commit(&self) -> ImmediateCommit {
        self.global
            .get("immediate_commit")
            .and_then(Value::as_str)
            .and_then(ImmediateCommit::parse)
            .unwrap_or(ImmediateCommit::All)
    }

    /// A boolean option of `config/global` (`no_recovery`, `no_rebalance`).
    pub fn global_flag(&self, name: &str) -> bool {
        match self.global.get(name) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_u64().is_some_and(|n| n != 0),
            Some(Value::String(s)) => s == "true" || s == "1",
            _ => false,
        }
    }

    /// A numeric option of `config/global`.
    pub fn global_u64(&self, name: &str) -> Option<u64> {
        match self.global.get(name)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Every OSD that may hold data of a PG: its set, its history sets and `all_peers`.
    pub fn pg_peers(&self, key: PgId) -> BTreeSet<OsdNum> {
        let mut peers = BTreeSet::new();
        if let Some(cfg) = self.pg_config.get(&key) {
            peers.extend(cfg.osd_set.iter().copied());
        }
        if let Some((h, _)) = self.pg_history.get(&key) {
            peers.extend(h.osd_sets.iter().flatten().copied());
            peers.extend(h.all_peers.iter().copied());
        }
        peers.remove(&0);
        peers.into_iter().map(OsdNum).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(k: &str, v: Value) -> (String, Value) {
        (k.to_string(), v)
    }

    #[test]
    fn load_and_changes() {
        let mut view = ClusterView::default();
        let mut ch = Changes::default();
        view.apply(
            &EtcdEvent::InitialLoad {
                kvs: vec![
                    kv("config/pools", json!({"1":{"name":"p","pg_size":2,"pg_minsize":1,"pg_count":2}})),
                    kv("pg/config", json!({"items":{"1":{"1":{"osd_set":[1,2],"primary":1},"2":{"osd_set":[2,1],"primary":2}}}})),
                    kv("osd/state/1", json!({"state":"up","addresses":["127.0.0.1"],"port":1000})),
                    kv("pg/history/1/1", json!({"osd_sets":[[3,4]],"all_peers":[5]})),
                ],
            },
            &mut ch,
        );
        assert!(ch.all);
        assert_eq!(view.pools.len(), 1);
        assert_eq!(
            view.pg_peers(PgId::new(1, 1)),
            BTreeSet::from([1, 2, 3, 4, 5].map(OsdNum))
        );
        let mut ch = Changes::default();
        view.apply(
            &EtcdEvent::KeyChanged {
                key: "pg/config".into(),
                value: Some(json!({"items":{"1":{"1":{"osd_set":[1,2],"primary":1},"2":{"osd_set":[2,3],"primary":2}}}})),
            },
            &mut ch,
        );
        assert_eq!(ch.pgs, BTreeSet::from([PgId::new(1, 2)]));
        let mut ch = Changes::default();
        view.apply(
            &EtcdEvent::KeyChanged {
                key: "osd/state/1".into(),
                value: None,
            },
            &mut ch,
        );
        assert_eq!(ch.osds, BTreeSet::from([OsdNum(1)]));
        assert!(view.osds.is_empty());
        assert_eq!(view.default_commit(), ImmediateCommit::All);
    }
}
