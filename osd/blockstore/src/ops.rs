//! The public operation set of the blockstore and its replies. These back the SEC_* ops of the
//! OSD; the semantics follow the wire protocol (versions, stability, rollback, bitmaps).

use crate::error::BsResult;
use crate::io::AlignedBuf;
use crate::types::{ObjVerId, ObjectId};

/// Identifies a submitted operation in its completion.
pub type OpId = u64;

/// Version meaning "the newest one" in reads.
pub const NEWEST: u64 = u64::MAX;

/// Which objects `List` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Number of PGs of the pool (0 = no PG filter).
    pub pg_count: u32,
    /// PG number to list, 1-based like `pg/config`.
    pub pg_num: u32,
    /// Stripe size used for the object → PG mapping.
    pub pg_stripe_size: u64,
    /// Inode range, inclusive (`max_inode == 0` means no upper bound).
    pub min_inode: u64,
    /// See `min_inode`.
    pub max_inode: u64,
    /// Stripe range, inclusive (`max_stripe == 0` means no upper bound).
    pub min_stripe: u64,
    /// See `min_stripe`.
    pub max_stripe: u64,
}

impl ListFilter {
    /// Whether `oid` passes the filter.
    pub fn matches(&self, oid: &crate::types::ObjectId) -> bool {
        if oid.inode < self.min_inode || (self.max_inode != 0 && oid.inode > self.max_inode) {
            return false;
        }
        if oid.stripe < self.min_stripe || (self.max_stripe != 0 && oid.stripe > self.max_stripe) {
            return false;
        }
        if self.pg_count != 0 {
            let stripe_size = self.pg_stripe_size.max(1);
            let pg = (oid.stripe / stripe_size) % self.pg_count as u64 + 1;
            if pg != self.pg_num as u64 {
                return false;
            }
        }
        true
    }
}

/// An operation.
#[derive(Debug)]
pub enum BsOp {
    /// Read `len` bytes at `offset` of the newest written version not above `version`.
    Read {
        /// Object.
        oid: ObjectId,
        /// Highest version to see ([`NEWEST`] for the latest).
        version: u64,
        /// Byte offset inside the object (aligned to `disk_alignment`).
        offset: u32,
        /// Length (aligned to `disk_alignment`; 0 reads only version and bitmap).
        len: u32,
    },
    /// Write a new version (unstable unless `stable`). Empty `data` creates a version that
    /// carries only its bitmaps (no data block, no data write).
    Write {
        /// Object.
        oid: ObjectId,
        /// Version to create; 0 = the next one. Must be newer than every existing version.
        version: u64,
        /// Byte offset inside the object (aligned to `bitmap_granularity`).
        offset: u32,
        /// Data (length aligned to `bitmap_granularity`, possibly 0).
        data: AlignedBuf,
        /// External bitmap of the new version (SEC_WRITE's `attr`); default: the previous
        /// one plus this range. The allocation bitmap is the store's own: the previous one
        /// plus this range, minus the granules whose external bit this write clears.
        bitmap: Option<Vec<u8>>,
        /// Create the version already stable (no separate stabilize needed).
        stable: bool,
    },
    /// Delete the object as a new version.
    Delete {
        /// Object.
        oid: ObjectId,
        /// Version of the deletion; 0 = the next one.
        version: u64,
        /// Create the deletion already stable.
        stable: bool,
    },
    /// Make every write completed before it durable.
    Sync,
    /// Mark versions (and all older ones of the same object) stable.
    Stabilize(Vec<ObjVerId>),
    /// Discard unstable versions newer than the given ones.
    Rollback(Vec<ObjVerId>),
    /// List objects.
    List(ListFilter),
    /// External bitmap of the newest written version not above `version`.
    ReadBitmap {
        /// Object.
        oid: ObjectId,
        /// Highest version to see.
        version: u64,
    },
}

/// Successful results.
#[derive(Debug)]
pub enum BsReply {
    /// Read data and the version it belongs to (0 and zeroes if the object does not exist).
    Read {
        /// Version read.
        version: u64,
        /// External bitmap of that version.
        bitmap: Vec<u8>,
        /// The requested bytes (zeroes where the allocation bitmap has no bytes).
        data: AlignedBuf,
    },
    /// A write or delete: the version created.
    Written {
        /// New version.
        version: u64,
        /// The write's data buffer, handed back for reuse (`None` for deletes), so that a
        /// caller can keep a pool of aligned buffers and the hot path allocates nothing.
        data: Option<AlignedBuf>,
    },
    /// Sync, stabilize, rollback.
    Done,
    /// Listing: newest stable version of each live object, then the newest unstable versions.
    List {
        /// Stable versions.
        stable: Vec<ObjVerId>,
        /// Unstable versions.
        unstable: Vec<ObjVerId>,
    },
    /// External bitmap and version.
    Bitmap {
        /// Version.
        version: u64,
        /// External bitmap.
        bitmap: Vec<u8>,
    },
}

/// A finished operation.
#[derive(Debug)]
pub struct Completion {
    /// The id `submit` returned.
    pub id: OpId,
    /// Its result.
    pub result: BsResult<BsReply>,
}
