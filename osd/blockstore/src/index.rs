//! In-memory object index: clean (flushed) objects and dirty (journaled) versions, plus the
//! per-object queries every operation needs. It owns no I/O and never frees data blocks; the
//! blockstore does that once the change is durable.

use std::collections::BTreeMap;
use std::ops::Bound;

use rustc_hash::FxHashMap;

use crate::bitmap::Bits;
use crate::types::{ObjVerId, ObjectId};

/// Where a dirty version's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyKind {
    /// Data in the journal at this offset.
    Small {
        /// Journal offset of the data.
        loc: u64,
    },
    /// Data in a freshly allocated data block (redirect write).
    Big {
        /// Data block.
        block: u64,
    },
    /// The object is deleted at this version.
    Delete,
}

/// Durability of a dirty version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DState {
    /// Its writes are in flight; readers see the previous version.
    InFlight,
    /// Written, not yet known durable.
    Written,
    /// Durable.
    Synced,
}

/// One dirty version.
#[derive(Clone, Debug)]
pub struct Dirty {
    /// Data placement.
    pub kind: DirtyKind,
    /// Written range.
    pub offset: u32,
    /// Written length.
    pub len: u32,
    /// Durability.
    pub state: DState,
    /// Committed (may be flushed; can no longer be rolled back).
    pub stable: bool,
    /// Journal sector holding its entry, once journaled.
    pub sector: Option<u64>,
    /// Journal sector holding the stable record naming this version.
    pub stable_sector: Option<u64>,
    /// Allocation bitmap after this version.
    pub bitmap: Bits,
    /// External bitmap after this version.
    pub attr: Bits,
}

/// A clean object: flushed version and the data block holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clean {
    /// Flushed version.
    pub version: u64,
    /// Data block.
    pub block: u64,
}

/// The index.
#[derive(Default)]
pub struct Index {
    /// Flushed objects.
    pub clean: FxHashMap<ObjectId, Clean>,
    /// Allocation bitmaps of clean objects, `bitmap_bytes` per data block.
    pub clean_bitmaps: Vec<u8>,
    /// External bitmaps of clean objects, `bitmap_bytes` per data block.
    pub clean_attrs: Vec<u8>,
    /// Dirty versions in (object, version) order.
    pub dirty: BTreeMap<ObjVerId, Dirty>,
    /// Bytes of one bitmap.
    pub bitmap_bytes: usize,
}

impl Index {
    /// An empty index for `blocks` data blocks.
    pub fn new(blocks: u64, bitmap_bytes: usize) -> Self {
        Index {
            clean: FxHashMap::default(),
            clean_bitmaps: vec![0; blocks as usize * bitmap_bytes],
            clean_attrs: vec![0; blocks as usize * bitmap_bytes],
            dirty: BTreeMap::new(),
            bitmap_bytes,
        }
    }

    /// Bitmap of clean block `b`.
    pub fn clean_bitmap(&self, b: u64) -> &[u8] {
        let s = b as usize * self.bitmap_bytes;
        &self.clean_bitmaps[s..s + self.bitmap_bytes]
    }

    /// External bitmap of clean block `b`.
    pub fn clean_attr(&self, b: u64) -> &[u8] {
        let s = b as usize * self.bitmap_bytes;
        &self.clean_attrs[s..s + self.bitmap_bytes]
    }

    /// Replace the allocation and external bitmaps of clean block `b`.
    pub fn set_clean_bitmap(&mut self, b: u64, bitmap: &[u8], attr: &[u8]) {
        let s = b as usize * self.bitmap_bytes;
        self.clean_bitmaps[s..s + self.bitmap_bytes].copy_from_slice(bitmap);
        self.clean_attrs[s..s + self.bitmap_bytes].copy_from_slice(attr);
    }

    /// Dirty versions of `oid` up to `max_version`, newest first.
    pub fn dirty_desc(
        &self,
        oid: ObjectId,
        max_version: u64,
    ) -> impl Iterator<Item = (&ObjVerId, &Dirty)> {
        self.dirty
            .range((
                Bound::Included(ObjVerId::new(oid, 0)),
                Bound::Included(ObjVerId::new(oid, max_version)),
            ))
            .rev()
    }

    /// Dirty versions of `oid`, oldest first.
    pub fn dirty_of(&self, oid: ObjectId) -> impl Iterator<Item = (&ObjVerId, &Dirty)> {
        self.dirty
            .range(ObjVerId::new(oid, 0)..=ObjVerId::new(oid, u64::MAX))
    }

    /// Newest version of `oid` in any state (0 if it never existed).
    pub fn latest_version(&self, oid: ObjectId) -> u64 {
        match self.dirty_desc(oid, u64::MAX).next() {
            Some((ov, _)) => ov.version,
            None => self.clean.get(&oid).map(|c| c.version).unwrap_or(0),
        }
    }

    /// The newest state a new write builds on: `None` if the object does not exist (never
    /// written, or deleted), else its allocation and external bitmaps.
    pub fn current_bitmaps(&self, oid: ObjectId) -> Option<(&[u8], &[u8])> {
        match self.dirty_desc(oid, u64::MAX).next() {
            Some((_, d)) if d.kind == DirtyKind::Delete => None,
            Some((_, d)) => Some((&d.bitmap, &d.attr)),
            None => self
                .clean
                .get(&oid)
                .map(|c| (self.clean_bitmap(c.block), self.clean_attr(c.block))),
        }
    }

    /// The version a reader of `max_version` sees: the newest written dirty version, else the
    /// clean one. `None` if the object does not exist at that version.
    pub fn visible_version(
        &self,
        oid: ObjectId,
        max_version: u64,
    ) -> Option<(u64, Option<&Dirty>)> {
        for (ov, d) in self.dirty_desc(oid, max_version) {
            if d.state != DState::InFlight {
                return Some((ov.version, Some(d)));
            }
        }
        match self.clean.get(&oid) {
            Some(c) if c.version <= max_version => Some((c.version, None)),
            _ => None,
        }
    }

    /// Highest version `v` of `oid` such that every dirty version up to `v` is stable and
    /// synced: what the flusher may make clean now.
    pub fn flushable_upto(&self, oid: ObjectId) -> Option<u64> {
        let mut upto = None;
        for (ov, d) in self.dirty_of(oid) {
            if !d.stable || d.state != DState::Synced {
                break;
            }
            upto = Some(ov.version);
        }
        upto
    }
}
