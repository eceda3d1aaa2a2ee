//! Erasure-coded (`ec`/`jerasure`) and XOR pools: the pure core — the parity code
//! ([`codec`]), where an object's bytes and bitmap bits live ([`geometry`]), which parts a
//! read needs and how a degraded read is rebuilt ([`read`]), a client write as a
//! read-modify-write state machine ([`write`]), and peering's decision for versions torn by
//! a crash ([`torn`]). None of it does I/O; the primary drives it.
//!
//! # How the primary drives it (`primary_ec.rs`, peering in `peer.rs`, recovery in `recover.rs`)
//!
//! Naming follows the spec: a logical object covers `block_size × k` image bytes and part
//! `i` is the object `{inode, stripe: object start + i}` on `osd_set[i]` (a PG's set is
//! positional for EC). The client-facing object is the logical one; every SEC_* op and
//! every listing entry names a part ([`geometry::Geometry::split_stripe`]).
//!
//! - **READ**: `read::plan_range(geo, offset, len, reachable, local)` with `reachable[i]` =
//!   `osd_set[i]` is up and holds the object's current version. For each `PartRead` send a
//!   SEC_READ of that part at the current version (the local store for `local`), bitmap
//!   included; `len = 0` reads only the bitmap. Feed the replies, in plan order, to
//!   `ReadPlan::assemble`, which returns the client's bitmap (`object_bitmap_bytes`) and
//!   data. An error there (a part answered a wrong shape) is EIO.
//! - **WRITE**: `write::EcWriteOp::new(geo, cas, offset, data)`, then the same lock cycle as
//!   `op_write`: `Event::Locked(Facts)` when the object lock is granted, `Event::Read` per
//!   sub-read, `Event::Sub { part, .. }` per write / stabilize / rollback. Actions map to
//!   sub-ops: `Read` → SEC_READ (part, version, range); `Write` → SEC_WRITE (never
//!   SEC_WRITE_STABLE), the store's allocation bitmap growing by the written range as for
//!   any write, plus, for a parity part, its `attr`; `Stabilize` → an entry of the turn's
//!   SEC_STABILIZE list to that OSD ([`stabilize`]), sent at the end of the loop turn;
//!   `Rollback` → SEC_ROLLBACK; `Written` → the object is at the version on those parts
//!   (unstable ones join the PG's unsynced list so the client's SYNC syncs and stabilizes
//!   them, as for replicated lazy writes); `Repeer`, `Reply`, `Unlock` as in `op_write`
//!   (with `immediate_commit: all` and every position written, `Reply` comes before the
//!   stabilize and `Unlock` after it: see [`write`]).
//! - **The blockstore side** (format 2): a zero-length write creates a version with no data
//!   (the data parts a write does not touch), and every version keeps the external bitmap
//!   it was written with apart from the allocation bitmap: SEC_WRITE's attr is stored as
//!   the version's external bitmap and SEC_READ returns it, while reads zero-fill by the
//!   allocation bitmap. A parity part's code bits therefore never hide its bytes, as long
//!   as each parity write covers every granule whose code bit it clears (the allocation
//!   drops only granules whose external bit a write clears outside its written range):
//!   the touched columns for XOR, which codes bit by bit, and for Reed-Solomon, whose code
//!   mixes a byte's 8 granules, those columns widened to every granule whose code bit the
//!   write clears (none for an overwrite of written granules). A granule whose code bit a
//!   write sets outside its range may stay unallocated: no data part ever wrote it (each
//!   parity write covers its data columns), so its parity is zeroes, as it reads.
//! - **Peering**: group SEC_LIST entries by logical object (`split_stripe`), build one
//!   `torn::PartListing` per (part, OSD), call `torn::settle(k, ..)`; send its
//!   `stabilize` and `rollback` lists, put `stale` parts in the degraded set and report
//!   `Lost` objects as incomplete (the PG does not go active on them).
//! - **Recovery** of part `p`: `read::plan_recovery(geo, p, reachable, local)` reads the
//!   whole of `k` other parts; `ReadPlan::recover(codec, replies, p)` gives the part's
//!   bytes and bitmap (a data part rebuilt, a parity part re-encoded), written to the new
//!   holder as a stable version (SEC_WRITE_STABLE, or the local store; a data part with its
//!   bitmap as the explicit allocation bitmap, a parity part with the bitmap as its `attr`).
//! - **PG activity**: a PG serves I/O with at least `pg_minsize` (≥ k) live parts; a write
//!   refuses with EPIPE below `k` live parts.
//!
//! # Compatibility of the stored parts
//!
//! The spec fixes the wire and etcd formats and the part naming, not the parity matrix or
//! what a parity part's attribute holds. Reed-Solomon here is the `reed-solomon-erasure`
//! crate's systematic matrix (a Vandermonde matrix times the inverse of its top square),
//! which is not jerasure's; a parity part's attribute is the code of the data parts' bitmaps.
//! So an EC pool's OSDs must all be ours: the parity written by the original's OSDs is not
//! read back here and vice versa. Clients are unaffected (they only see logical objects).
//!
//! What this module must never do: return data it neither read nor rebuilt, or let a
//! torn version be read as if it were whole.

use thiserror::Error;

pub mod codec;
pub mod geometry;
pub mod peer;
pub mod read;
pub mod recover;
pub mod stabilize;
#[cfg(test)]
mod tests;
pub mod torn;
pub mod write;

/// An EC/XOR pool's stripe shape and parity code, built once per PG from its pool.
#[derive(Debug)]
pub struct EcPool {
    /// Where bytes and bitmap bits live.
    pub geo: geometry::Geometry,
    /// The parity code.
    pub codec: codec::Codec,
}

impl EcPool {
    /// The shape of an `ec`/`xor` pool (`None` for a replicated one; an error for a shape
    /// no code can serve).
    pub fn of_pool(pool: &vitastor_layout::PoolConfig) -> Option<Result<EcPool, EcError>> {
        let geo = geometry::Geometry::of_pool(pool)?;
        let codec = codec::Codec::for_pool(pool)?;
        Some(geo.and_then(|geo| Ok(EcPool { geo, codec: codec? })))
    }
}

/// Why an EC computation could not be done.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EcError {
    /// Fewer parts than data parts are available: nothing can be rebuilt.
    #[error("{have} parts available, {need} needed to rebuild the stripe")]
    TooFewParts {
        /// Parts available.
        have: usize,
        /// Data parts.
        need: usize,
    },
    /// Shard counts, lengths or the stripe shape do not fit the code.
    #[error("bad stripe shape: {0}")]
    Shape(String),
}
