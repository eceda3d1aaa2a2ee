//! The blockstore: the crash-safe local storage engine under every OSD.
//!
//! One OSD stores fixed-size objects (`block_size`, 128 KiB by default) identified by
//! `(inode, stripe)`, each with a version and an allocation bitmap. Small writes go through a
//! circular journal; full-object writes and writes to new objects are redirected to a freshly
//! allocated data block; a background flusher moves stable journaled data into place and
//! frees journal space. Unstable versions can be stabilized or rolled back (two-phase writes
//! for erasure-coded pools and lazy fsync).
//!
//! The engine is single-threaded and poll-driven: [`Blockstore::submit`] queues an
//! [`BsOp`], the caller feeds device completions back and calls [`Blockstore::run`]. It never
//! spawns threads and never blocks outside `open` and the explicit `exec`/`wait_idle` helpers.
#![deny(missing_docs)]

pub mod allocator;
pub mod bitmap;
mod blockstore;
pub mod config;
pub mod error;
pub mod index;
pub mod io;
pub mod journal;
pub mod layout;
pub mod ops;
pub mod prepare;
pub mod simdisk;
pub mod types;
pub mod uring;

pub use blockstore::{device_paths, read_superblock, Blockstore, Devices, Stats};
pub use config::{BlockstoreConfig, ImmediateCommit};
pub use error::{BsError, BsResult};
pub use io::{AlignedBuf, DevId, IoEngine};
pub use ops::{BsOp, BsReply, Completion, ListFilter, OpId, NEWEST};
pub use types::{ObjVerId, ObjectId};
