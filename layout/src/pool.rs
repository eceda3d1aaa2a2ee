//! `config/pools`: pool definitions and the object → PG mapping they imply.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::LayoutError;
use crate::tolerant;

/// Default object size of a pool.
pub const DEFAULT_BLOCK_SIZE: u32 = 128 << 10;
/// Default allocation-bitmap granularity.
pub const DEFAULT_BITMAP_GRANULARITY: u32 = 4 << 10;

/// Redundancy scheme of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `pg_size` full copies.
    Replicated,
    /// `pg_size - 1` data parts and one XOR parity part.
    Xor,
    /// Reed-Solomon: `pg_size - parity_chunks` data parts (`ec`, alias `jerasure`).
    Ec,
}

/// When writes become durable (`immediate_commit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImmediateCommit {
    /// Every write is durable when acknowledged; SYNC is a no-op.
    All,
    /// Small (journaled) writes are durable at once, big ones need SYNC.
    Small,
    /// Writes stay unstable until a SYNC.
    None,
}

impl ImmediateCommit {
    /// Parses the option value (`all` | `small` | `none`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(Self::All),
            "small" => Some(Self::Small),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// The option value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Small => "small",
            Self::None => "none",
        }
    }
}

/// One pool of `config/pools`, validated. Placement-only fields (failure domain, tags…) are
/// the monitor's business and are not kept here.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Pool id (the key in `config/pools`, 1..65535).
    pub id: u32,
    /// Pool name.
    pub name: String,
    /// Redundancy scheme.
    pub scheme: Scheme,
    /// OSDs per PG.
    pub pg_size: u32,
    /// Parity parts (EC/XOR), 0 for replicated pools.
    pub parity_chunks: u32,
    /// Fewest live members with which a PG still serves I/O.
    pub pg_minsize: u32,
    /// Number of PGs (numbered from 1).
    pub pg_count: u32,
    /// Object size in bytes.
    pub block_size: u32,
    /// Bitmap granularity in bytes.
    pub bitmap_granularity: u32,
    /// `immediate_commit` of the pool; `None` means the cluster default applies.
    pub immediate_commit: Option<ImmediateCommit>,
    /// `pg_stripe_size` as configured (0 = minimal).
    pub pg_stripe_size: u64,
}

impl PoolConfig {
    /// Parses and validates one entry of `config/pools`.
    pub fn from_json(id: u32, v: &Value) -> Result<PoolConfig, LayoutError> {
        let context = format!("pool {id}");
        let ctx = context.as_str();
        let obj = v
            .as_object()
            .ok_or_else(|| LayoutError::shape(ctx, format!("expected an object, got {v}")))?;
        let get = |f: &str| obj.get(f).filter(|x| !x.is_null());
        let uint = |f: &str| -> Result<Option<u64>, LayoutError> {
            get(f)
                .map(|x| {
                    tolerant::u64_of(x).ok_or_else(|| {
                        LayoutError::invalid(
                            ctx,
                            f,
                            format!("expected a non-negative integer, got {x}"),
                        )
                    })
                })
                .transpose()
        };
        let u32_field = |f: &str, default: Option<u32>| -> Result<u32, LayoutError> {
            match uint(f)? {
                Some(x) => u32::try_from(x)
                    .map_err(|_| LayoutError::invalid(ctx, f, format!("{x} is too large"))),
                None => default.ok_or_else(|| LayoutError::Missing {
                    context: context.clone(),
                    field: f.into(),
                }),
            }
        };
        let string = |f: &str| -> Result<Option<&str>, LayoutError> {
            get(f)
                .map(|x| {
                    x.as_str().ok_or_else(|| {
                        LayoutError::invalid(ctx, f, format!("expected a string, got {x}"))
                    })
                })
                .transpose()
        };
        if id == 0 || id > 0xFFFF {
            return Err(LayoutError::shape(ctx, "pool ids are 1..65535"));
        }
        let scheme = match string("scheme")? {
            None | Some("replicated") => Scheme::Replicated,
            Some("xor") => Scheme::Xor,
            Some("ec") | Some("jerasure") => Scheme::Ec,
            Some(other) => {
                return Err(LayoutError::invalid(
                    ctx,
                    "scheme",
                    format!("unknown scheme {other:?}"),
                ))
            }
        };
        let immediate_commit = match string("immediate_commit")? {
            None => None,
            Some(s) => Some(ImmediateCommit::parse(s).ok_or_else(|| {
                LayoutError::invalid(
                    ctx,
                    "immediate_commit",
                    format!("{s:?} is not all, small or none"),
                )
            })?),
        };
        let pool = PoolConfig {
            id,
            name: string("name")?.unwrap_or("").to_owned(),
            scheme,
            pg_size: u32_field("pg_size", None)?,
            parity_chunks: u32_field(
                "parity_chunks",
                Some(if scheme == Scheme::Xor { 1 } else { 0 }),
            )?,
            pg_minsize: u32_field("pg_minsize", None)?,
            pg_count: u32_field("pg_count", None)?,
            block_size: u32_field("block_size", Some(DEFAULT_BLOCK_SIZE))?,
            bitmap_granularity: u32_field("bitmap_granularity", Some(DEFAULT_BITMAP_GRANULARITY))?,
            immediate_commit,
            pg_stripe_size: uint("pg_stripe_size")?.unwrap_or(0),
        };
        pool.validate()?;
        Ok(pool)
    }

    fn validate(&self) -> Result<(), LayoutError> {
        let ctx = format!("pool {}", self.id);
        let bad = |f: &str, r: String| Err(LayoutError::invalid(&ctx, f, r));
        if self.name.is_empty() {
            return Err(LayoutError::Missing {
                context: ctx,
                field: "name".into(),
            });
        }
        if self.pg_size == 0 || self.pg_size > 256 {
            return bad("pg_size", format!("{} is not in 1..256", self.pg_size));
        }
        if self.pg_minsize == 0 || self.pg_minsize > self.pg_size {
            return bad(
                "pg_minsize",
                format!(
                    "{} is not in 1..pg_size ({})",
                    self.pg_minsize, self.pg_size
                ),
            );
        }
        if self.pg_count == 0 {
            return bad("pg_count", "must be at least 1".into());
        }
        match self.scheme {
            Scheme::Replicated if self.parity_chunks != 0 => {
                return bad("parity_chunks", "replicated pools have no parity".into())
            }
            Scheme::Xor if self.parity_chunks != 1 || self.pg_size < 3 => {
                return bad(
                    "parity_chunks",
                    "xor pools have exactly 1 parity chunk and pg_size >= 3".into(),
                )
            }
            Scheme::Ec if self.parity_chunks == 0 || self.parity_chunks >= self.pg_size => {
                return bad(
                    "parity_chunks",
                    format!("{} is not in 1..pg_size", self.parity_chunks),
                )
            }
            _ => {}
        }
        if self.scheme != Scheme::Replicated && self.pg_minsize < self.pg_size - self.parity_chunks
        {
            return bad(
                "pg_minsize",
                "an EC/XOR PG needs at least its data chunks".into(),
            );
        }
        if !self.block_size.is_power_of_two() || !(4096..=(128 << 20)).contains(&self.block_size) {
            return bad(
                "block_size",
                format!("{} is not a power of two in 4K..128M", self.block_size),
            );
        }
        if !self.bitmap_granularity.is_power_of_two()
            || self.bitmap_granularity < 512
            || self.bitmap_granularity > self.block_size
        {
            return bad(
                "bitmap_granularity",
                format!(
                    "{} is not a power of two in 512..block_size",
                    self.bitmap_granularity
                ),
            );
        }
        Ok(())
    }

    /// Data chunks per object: 1 for replicated pools.
    pub fn data_chunks(&self) -> u32 {
        match self.scheme {
            Scheme::Replicated => 1,
            _ => self.pg_size - self.parity_chunks,
        }
    }

    /// Bytes of image data one object (stripe) covers.
    pub fn pg_block_size(&self) -> u64 {
        self.block_size as u64 * self.data_chunks() as u64
    }

    /// `max(pg_stripe_size, pg_block_size)`.
    pub fn effective_stripe_size(&self) -> u64 {
        self.pg_stripe_size.max(self.pg_block_size())
    }

    /// Start of the object holding image byte `offset`.
    pub fn object_start(&self, offset: u64) -> u64 {
        offset - offset % self.pg_block_size()
    }

    /// PG (from 1) of the object starting at `stripe`.
    pub fn pg_of(&self, stripe: u64) -> u32 {
        ((stripe / self.effective_stripe_size()) % self.pg_count as u64) as u32 + 1
    }

    /// `immediate_commit` with the cluster default applied.
    pub fn commit_mode(&self, cluster_default: ImmediateCommit) -> ImmediateCommit {
        self.immediate_commit.unwrap_or(cluster_default)
    }
}

/// Parses the whole `config/pools` value: the valid pools, and one error per invalid pool
/// (an invalid pool never hides the others).
pub fn parse_pools(v: &Value) -> (BTreeMap<u32, PoolConfig>, Vec<LayoutError>) {
    let mut pools = BTreeMap::new();
    let mut errors = Vec::new();
    let Some(obj) = v.as_object() else {
        errors.push(LayoutError::shape(
            crate::keys::CONFIG_POOLS,
            format!("expected an object of pools, got {v}"),
        ));
        return (pools, errors);
    };
    for (k, pv) in obj {
        match k.parse::<u32>() {
            Ok(id) => match PoolConfig::from_json(id, pv) {
                Ok(p) => {
                    pools.insert(id, p);
                }
                Err(e) => errors.push(e),
            },
            Err(_) => errors.push(LayoutError::shape(
                crate::keys::CONFIG_POOLS,
                format!("pool id {k:?} is not a number"),
            )),
        }
    }
    (pools, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readme_example_and_mapping() {
        let (pools, errors) = parse_pools(&json!({"1":{"name":"testpool","scheme":"replicated",
            "pg_size":2,"pg_minsize":1,"pg_count":256,"failure_domain":"host"}}));
        assert!(errors.is_empty(), "{errors:?}");
        let p = &pools[&1];
        assert_eq!(p.pg_block_size(), 128 << 10);
        assert_eq!(p.object_start((128 << 10) + 5), 128 << 10);
        assert_eq!(p.pg_of(0), 1);
        assert_eq!(p.pg_of(128 << 10), 2);
        assert_eq!(p.pg_of(256 * (128 << 10)), 1);
    }

    #[test]
    fn ec_stripes_and_stripe_size() {
        let p = PoolConfig::from_json(
            3,
            &json!({"name":"ec","scheme":"ec","pg_size":5,"parity_chunks":2,"pg_minsize":3,
                    "pg_count":4,"pg_stripe_size":1048576}),
        )
        .unwrap();
        assert_eq!(p.pg_block_size(), 3 * (128 << 10));
        assert_eq!(p.effective_stripe_size(), 1 << 20);
        assert_eq!(p.pg_of(0), 1);
        assert_eq!(p.pg_of(1 << 20), 2);
    }

    #[test]
    fn bad_pools_are_named_and_do_not_hide_good_ones() {
        let (pools, errors) = parse_pools(&json!({
            "1":{"name":"a","pg_size":2,"pg_minsize":3,"pg_count":1},
            "2":{"name":"b","scheme":"raid5","pg_size":2,"pg_minsize":1,"pg_count":1},
            "3":{"name":"c","pg_size":2,"pg_minsize":1,"pg_count":8},
            "x":{},
            "4":{"name":"d","pg_size":2,"pg_minsize":1,"pg_count":8,"block_size":1000},
        }));
        assert_eq!(pools.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(errors.len(), 4);
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("pool 1") && t.contains("pg_minsize")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("raid5")), "{text:?}");
    }
}
