//! The cluster state kept in etcd (`shared/spec/etcd-layout.md`): key names, typed views of
//! the JSON values, and the object → PG mapping that clients, OSDs and the monitor must agree
//! on. Every program that reads or writes etcd goes through these types, so a field is parsed
//! (and validated) in exactly one place.
//!
//! Readers accept what the original Vitastor writes: numbers as numbers or numeric strings,
//! unknown fields ignored ([`tolerant`]); writers write plain numbers.
//!
//! # What this crate must never do
//! - Talk to etcd: it only turns keys and values into types and back.
//! - Panic on what it reads: every parser returns an error naming the key and the field, and
//!   a bad entry in a map (one pool, one PG) is reported without losing the good ones.

mod error;
pub mod ids;
mod inode;
pub mod keys;
mod osd;
mod pg;
mod pool;
pub mod size;
pub mod tolerant;

pub use error::LayoutError;
pub use ids::{OsdNum, PgId};
pub use inode::{ImageIndex, InodeConfig};
pub use osd::{OsdConfig, OsdState};
pub use pg::{parse_pg_config, PgConfigItem, PgHistory, PgState, PgStateName};
pub use pool::{parse_pools, ImmediateCommit, PoolConfig, Scheme};
pub use size::{parse_size, SizeError};

/// Bits of an inode number below the pool id.
pub const POOL_ID_BITS: u32 = 48;

/// Pool id carried in the top 16 bits of an inode number.
pub fn pool_of(inode: u64) -> u32 {
    (inode >> POOL_ID_BITS) as u32
}

/// The inode number with its pool bits cleared.
pub fn inode_no_pool(inode: u64) -> u64 {
    inode & ((1u64 << POOL_ID_BITS) - 1)
}

/// The full inode number of inode `inode` in pool `pool`.
pub fn inode_with_pool(pool: u32, inode: u64) -> u64 {
    ((pool as u64) << POOL_ID_BITS) | inode_no_pool(inode)
}
