//! The client's view of the cluster, built from etcd events.
//!
//! # What this module owns
//! - Typed copies of the keys the client watches: `config/global`, pools, PG pause flags,
//!   PG states, OSD states, image metadata and the image name index.
//! - The answer to "where does this object go now" ([`ClusterView::primary`]).
//!
//! # What it must never do
//! - Talk to etcd or to OSDs: it is a pure state machine fed with [`EtcdEvent`]s, so it is
//!   tested without sockets.
//! - Fail on a bad value: a key that does not parse is logged and treated as absent, and the
//!   rest of the view keeps working.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use serde_json::Value;
use vitastor_layout::{
    inode_with_pool, keys, parse_pg_config, parse_pools, ImageIndex, InodeConfig, OsdState,
    PgState, PoolConfig,
};

use crate::etcd::{EtcdEvent, EtcdKv};

/// Image metadata as the view keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct InodeEntry {
    /// Parsed `config/inode/<pool>/<inode>`.
    pub config: InodeConfig,
    /// The raw JSON, for the `meta` getter.
    pub raw: Value,
    /// etcd `mod_revision` of the key.
    pub mod_revision: u64,
}

/// Everything the client knows about the cluster.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// True once the first full load arrived.
    pub loaded: bool,
    /// `config/global` (Null when absent).
    pub global: Value,
    /// Valid pools.
    pub pools: BTreeMap<u32, PoolConfig>,
    /// PGs the monitor paused (`pg/config` `pause`).
    paused: FxHashMap<(u32, u32), bool>,
    /// `pg/state/<pool>/<pg>`.
    pg_states: FxHashMap<(u32, u32), PgState>,
    /// `osd/state/<osd>` of OSDs that are up.
    osd_states: FxHashMap<u64, OsdState>,
    /// `config/inode/…`, by inode number with pool bits.
    inodes: FxHashMap<u64, InodeEntry>,
    /// `index/image/<name>`.
    images: HashMap<String, ImageIndex>,
}

/// What an event changed, so the client knows what to re-evaluate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    /// `config/global` changed.
    pub global: bool,
    /// Anything at all changed.
    pub any: bool,
}

impl ClusterView {
    /// Applies one etcd event; bad values are logged and dropped from the view.
    pub fn apply(&mut self, event: EtcdEvent) -> Changed {
        match event {
            EtcdEvent::Loaded { kvs } => {
                *self = ClusterView::default();
                for kv in kvs {
                    self.set(kv.key, Some(kv.value), kv.mod_revision);
                }
                self.loaded = true;
                // A reload may have dropped config/global, so settings are always recomputed.
                Changed {
                    global: true,
                    any: true,
                }
            }
            EtcdEvent::Changed(EtcdKv {
                key,
                value,
                mod_revision,
            }) => {
                let global = key == keys::CONFIG_GLOBAL;
                self.set(key, value, mod_revision);
                Changed { global, any: true }
            }
            EtcdEvent::BadValue { key, error } => {
                crate::log(format_args!("etcd key {key} ignored: {error}"));
                let global = key == keys::CONFIG_GLOBAL;
                self.set(key, None, 0);
                Changed { global, any: true }
            }
            EtcdEvent::Disconnected { error } => {
                crate::log(format_args!("{error}; reconnecting"));
                Changed::default()
            }
        }
    }

    fn set(&mut self, key: String, value: Option<Value>, mod_revision: i64) {
        let log_bad = |what: &dyn std::fmt::Display| {
            crate::log(format_args!("etcd key {key}: {what}"));
        };
        if key == keys::CONFIG_GLOBAL {
            self.global = value.unwrap_or(Value::Null);
        } else if key == keys::CONFIG_POOLS {
            let (pools, errors) = parse_pools(value.as_ref().unwrap_or(&Value::Null));
            if value.is_some() {
                errors.iter().for_each(|e| log_bad(e));
            }
            self.pools = pools;
        } else if key == keys::PG_CONFIG {
            self.paused.clear();
            if let Some(v) = &value {
                let (items, errors) = parse_pg_config(v);
                errors.iter().for_each(|e| log_bad(e));
                self.paused = items
                    .into_iter()
                    .filter(|(_, item)| item.pause)
                    .map(|(pg, _)| (pg, true))
                    .collect();
            }
        } else if let Some((pool, pg)) = keys::parse_pair(&key, keys::PG_STATE_PREFIX) {
            let Ok(pg) = u32::try_from(pg) else {
                return log_bad(&"PG number out of range");
            };
            self.pg_states.remove(&(pool, pg));
            if let Some(v) = value {
                match PgState::from_json(&key, &v) {
                    Ok(s) => {
                        self.pg_states.insert((pool, pg), s);
                    }
                    Err(e) => log_bad(&e),
                }
            }
        } else if let Some(osd) = keys::parse_num(&key, keys::OSD_STATE_PREFIX) {
            self.osd_states.remove(&osd);
            if let Some(v) = value {
                match OsdState::from_json(&key, &v) {
                    Ok(s) => {
                        self.osd_states.insert(osd, s);
                    }
                    Err(e) => log_bad(&e),
                }
            }
        } else if let Some((pool, inode)) = keys::parse_pair(&key, keys::CONFIG_INODE_PREFIX) {
            let num = inode_with_pool(pool, inode);
            self.inodes.remove(&num);
            if let Some(raw) = value {
                match InodeConfig::from_json(&key, &raw) {
                    Ok(config) => {
                        self.inodes.insert(
                            num,
                            InodeEntry {
                                config,
                                raw,
                                mod_revision: u64::try_from(mod_revision).unwrap_or(0),
                            },
                        );
                    }
                    Err(e) => log_bad(&e),
                }
            }
        } else if let Some(name) = key.strip_prefix(keys::INDEX_IMAGE_PREFIX) {
            self.images.remove(name);
            if let Some(v) = value {
                match ImageIndex::from_json(&key, &v) {
                    Ok(idx) => {
                        self.images.insert(name.to_string(), idx);
                    }
                    Err(e) => log_bad(&e),
                }
            }
        }
    }

    /// The OSD to send I/O of `(pool, pg)` to, with its address, when the PG is active, not
    /// paused and its primary is up.
    pub fn primary(&self, pool: u32, pg: u32) -> Option<(u64, &OsdState)> {
        if self.paused.contains_key(&(pool, pg)) {
            return None;
        }
        let state = self.pg_states.get(&(pool, pg))?;
        if !state.is_active() || state.primary == 0 {
            return None;
        }
        let osd = self.osd_states.get(&state.primary)?;
        osd.is_up().then_some((state.primary, osd))
    }

    /// `pg/state/<pool>/<pg>` as last reported by the PG's primary.
    pub fn pg_state(&self, pool: u32, pg: u32) -> Option<&PgState> {
        self.pg_states.get(&(pool, pg))
    }

    /// Where an OSD listens, if it is up.
    pub fn osd(&self, osd: u64) -> Option<&OsdState> {
        self.osd_states.get(&osd).filter(|s| s.is_up())
    }

    /// Image metadata by inode number (with pool bits).
    pub fn inode(&self, inode: u64) -> Option<&InodeEntry> {
        self.inodes.get(&inode)
    }

    /// Looks an image up by name: its inode number with pool bits.
    pub fn image(&self, name: &str) -> Option<u64> {
        let idx = self.images.get(name)?;
        Some(inode_with_pool(idx.pool_id, idx.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(key: &str, value: Value) -> EtcdKv {
        EtcdKv {
            key: key.into(),
            value,
            mod_revision: 7,
        }
    }

    fn changed(key: &str, value: Option<Value>) -> EtcdEvent {
        EtcdEvent::Changed(EtcdKv {
            key: key.into(),
            value,
            mod_revision: 9,
        })
    }

    fn loaded_view() -> ClusterView {
        let mut v = ClusterView::default();
        v.apply(EtcdEvent::Loaded {
            kvs: vec![
                kv(
                    "config/pools",
                    json!({"1":{"name":"p","pg_size":2,"pg_minsize":1,"pg_count":4},
                           "2":{"name":"bad"}}),
                ),
                kv(
                    "pg/state/1/1",
                    json!({"primary":3,"state":["active"],"peers":[3]}),
                ),
                kv("pg/state/1/2", json!({"primary":3,"state":["peering"]})),
                kv("pg/state/1/3", json!({"primary":4,"state":["active"]})),
                kv("pg/state/1/4", json!("garbage")),
                kv(
                    "osd/state/3",
                    json!({"state":"up","addresses":["127.0.0.1"],"port":5}),
                ),
                kv("config/inode/1/5", json!({"name":"img","size":1048576})),
                kv("index/image/img", json!({"id":5,"pool_id":1})),
            ],
        });
        v
    }

    #[test]
    fn primaries_follow_state() {
        let mut v = loaded_view();
        assert!(v.loaded);
        assert_eq!(v.pools.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(v.primary(1, 1).map(|(o, _)| o), Some(3));
        assert_eq!(v.primary(1, 2), None, "not active");
        assert_eq!(v.primary(1, 3), None, "primary not up");
        assert_eq!(v.primary(1, 4), None, "bad value");
        v.apply(changed(
            "osd/state/4",
            Some(json!({"state":"up","addresses":["127.0.0.1"],"port":6})),
        ));
        assert_eq!(v.primary(1, 3).map(|(o, s)| (o, s.port)), Some((4, 6)));
        v.apply(changed(
            "pg/config",
            Some(json!({"items":{"1":{"3":{"osd_set":[4],"primary":4,"pause":true}}}})),
        ));
        assert_eq!(v.primary(1, 3), None, "paused");
        v.apply(changed("pg/config", None));
        assert!(v.primary(1, 3).is_some());
        v.apply(changed("osd/state/4", None));
        assert_eq!(v.primary(1, 3), None);
        v.apply(EtcdEvent::BadValue {
            key: "pg/state/1/1".into(),
            error: "x".into(),
        });
        assert_eq!(v.primary(1, 1), None, "bad value drops the key");
    }

    #[test]
    fn images_and_inodes() {
        let mut v = loaded_view();
        let inode = v.image("img").unwrap();
        assert_eq!(inode, (1 << 48) | 5);
        let e = v.inode(inode).unwrap();
        assert_eq!((e.config.size, e.mod_revision), (1048576, 7));
        v.apply(changed(
            "config/inode/1/5",
            Some(json!({"name":"img","size":2097152,"readonly":true})),
        ));
        let e = v.inode(inode).unwrap();
        assert_eq!(
            (e.config.size, e.config.readonly, e.mod_revision),
            (2097152, true, 9)
        );
        v.apply(changed("config/inode/1/5", Some(json!({"size":"x"}))));
        assert!(v.inode(inode).is_none());
        v.apply(changed("index/image/img", None));
        assert_eq!(v.image("img"), None);
        // A reload replaces everything.
        v.apply(EtcdEvent::Loaded { kvs: vec![] });
        assert!(v.pools.is_empty() && v.loaded);
        assert_eq!(
            v.apply(EtcdEvent::Disconnected { error: "x".into() }),
            Changed::default()
        );
    }
}
