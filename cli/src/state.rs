//! Typed reads of the cluster state the commands share: pools, images, and numeric fields
//! of the monitor's and OSDs' stats.
//!
//! # What this module owns
//! - Looking up pools (by name or id, or the only pool) and images (through
//!   `index/image/<name>`), with the mod_revisions commands need for compare-and-set.
//!
//! # What it must never do
//! - Write to etcd: commands decide what to change.
//! - Parse a layout value itself when `vitastor_layout` has a type for it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use vitastor_layout::{
    inode_with_pool, keys, parse_pools, tolerant, ImageIndex, InodeConfig, PoolConfig,
};

use crate::error::{CliError, Result};
use crate::etcd::Etcd;

/// Most attempts of a compare-and-set loop before giving up: each failure means another
/// writer won a race, so a handful is plenty even with many concurrent CLIs.
pub const MAX_TXN_ATTEMPTS: u32 = 50;

/// `config/pools` as read.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    /// The raw JSON object (keeps fields the layout type does not model).
    pub raw: Map<String, Value>,
    /// `mod_revision` of `config/pools` (0 = absent).
    pub mod_revision: i64,
    /// The valid pools by id.
    pub valid: BTreeMap<u32, PoolConfig>,
}

impl Pools {
    /// Reads `config/pools`; invalid pools are reported on stderr and left out.
    pub fn load(etcd: &mut Etcd) -> Result<Pools> {
        let Some(kv) = etcd.get(keys::CONFIG_POOLS)? else {
            return Ok(Pools::default());
        };
        let raw = match kv.value {
            Value::Object(m) => m,
            other => {
                return Err(CliError::BadValue {
                    key: kv.key,
                    reason: format!("expected an object of pools, got {other}"),
                })
            }
        };
        let (valid, errors) = parse_pools(&Value::Object(raw.clone()));
        for e in errors {
            eprintln!("warning: {e}");
        }
        Ok(Pools {
            raw,
            mod_revision: kv.mod_revision,
            valid,
        })
    }

    /// A pool by id or name.
    pub fn find(&self, spec: &str) -> Result<&PoolConfig> {
        if let Ok(id) = spec.parse::<u32>() {
            if let Some(p) = self.valid.get(&id) {
                return Ok(p);
            }
        }
        self.valid
            .values()
            .find(|p| p.name == spec)
            .ok_or_else(|| CliError::NoSuchPool(spec.to_string()))
    }

    /// `spec`, or the only pool when none is given.
    pub fn find_or_only(&self, spec: Option<&str>) -> Result<&PoolConfig> {
        match spec {
            Some(s) => self.find(s),
            None => {
                let mut all = self.valid.values();
                match (all.next(), all.next()) {
                    (Some(p), None) => Ok(p),
                    (None, _) => Err(CliError::Usage(
                        "the cluster has no pools; create one with create-pool".into(),
                    )),
                    _ => Err(CliError::Usage(
                        "the cluster has several pools; choose one with -p POOL".into(),
                    )),
                }
            }
        }
    }
}

/// One image (`config/inode/<pool>/<id>`).
#[derive(Debug, Clone)]
pub struct Image {
    /// Pool id.
    pub pool: u32,
    /// Inode number without pool bits.
    pub id: u64,
    /// Parsed metadata.
    pub cfg: InodeConfig,
    /// The raw JSON (modifications keep fields the layout type does not model).
    pub raw: Value,
    /// `mod_revision` of the config key.
    pub mod_revision: i64,
}

impl Image {
    /// Inode number with pool bits.
    pub fn inode(&self) -> u64 {
        inode_with_pool(self.pool, self.id)
    }

    /// The image's config key.
    pub fn key(&self) -> String {
        keys::config_inode(self.pool, self.id)
    }

    /// Pool and id of the parent layer, if any.
    pub fn parent(&self) -> Option<(u32, u64)> {
        (self.cfg.parent_id != 0).then(|| {
            let pool = if self.cfg.parent_pool == 0 {
                self.pool
            } else {
                self.cfg.parent_pool as u32
            };
            (pool, self.cfg.parent_id)
        })
    }
}

/// Every image of the cluster (or of one pool), from `config/inode/`.
pub fn load_images(etcd: &mut Etcd, pool: Option<u32>) -> Result<Vec<Image>> {
    let prefix = match pool {
        Some(p) => format!("{}{p}/", keys::CONFIG_INODE_PREFIX),
        None => keys::CONFIG_INODE_PREFIX.to_string(),
    };
    let mut out = Vec::new();
    for kv in etcd.get_prefix(&prefix)? {
        let Some((pool, id)) = keys::parse_pair(&kv.key, keys::CONFIG_INODE_PREFIX) else {
            eprintln!(
                "warning: ignoring key {}: not config/inode/<pool>/<id>",
                kv.key
            );
            continue;
        };
        match InodeConfig::from_json(&kv.key, &kv.value) {
            Ok(cfg) => out.push(Image {
                pool,
                id,
                cfg,
                raw: kv.value,
                mod_revision: kv.mod_revision,
            }),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    Ok(out)
}

/// Reads one image's config key.
pub fn load_image(etcd: &mut Etcd, pool: u32, id: u64) -> Result<Option<Image>> {
    let key = keys::config_inode(pool, id);
    let Some(kv) = etcd.get(&key)? else {
        return Ok(None);
    };
    let cfg = InodeConfig::from_json(&key, &kv.value)?;
    Ok(Some(Image {
        pool,
        id,
        cfg,
        raw: kv.value,
        mod_revision: kv.mod_revision,
    }))
}

/// An image by name, with the `mod_revision` of its `index/image/<name>` key.
pub fn find_image(etcd: &mut Etcd, name: &str) -> Result<(Image, i64)> {
    let key = keys::index_image(name);
    let Some(kv) = etcd.get(&key)? else {
        return Err(CliError::NoSuchImage(name.to_string()));
    };
    let index = ImageIndex::from_json(&key, &kv.value)?;
    let image = load_image(etcd, index.pool_id, index.id)?.ok_or_else(|| CliError::BadValue {
        key: key.clone(),
        reason: format!(
            "points to {}, which does not exist",
            keys::config_inode(index.pool_id, index.id)
        ),
    })?;
    Ok((image, kv.mod_revision))
}

/// A non-negative integer field of a stats object (a number or a numeric string; a
/// fractional rate is truncated), 0 when absent.
pub fn num(v: &Value, field: &str) -> u64 {
    tolerant::u64_field(v, field)
        .or_else(|| tolerant::f64_field(v, field).map(|f| f.max(0.0) as u64))
        .unwrap_or(0)
}

/// Checks an image name: it becomes an etcd key suffix, and `@` separates snapshots in
/// the original's syntax.
pub fn check_image_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('@') || name.chars().any(char::is_control) {
        return Err(CliError::Usage(format!(
            "bad image name {name:?}: it must be non-empty, without '@' or control characters"
        )));
    }
    Ok(())
}
