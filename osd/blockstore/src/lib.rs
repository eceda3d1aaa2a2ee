//! The blockstore: the crash-safe local storage engine under every OSD.
//!
//! One OSD stores fixed-size objects (`block_size`, 128 KiB by default) identified by
//! `(inode, stripe)`, each version with an allocation bitmap and an external bitmap (see
//! [`bitmap`]). Small writes (and zero-length writes, versions that carry only bitmaps) go
//! through a circular journal; full-object writes and writes to new objects are redirected to
//! a freshly allocated data block; a background flusher moves stable journaled data into
//! place and frees journal space. Unstable versions can be stabilized or rolled back
//! (two-phase writes for erasure-coded pools and lazy fsync).
//!
//! The engine is single-threaded and poll-driven: [`Blockstore::submit`] queues an
//! [`BsOp`], the caller feeds device completions back and calls [`Blockstore::run`]. It never
//! spawns threads and never blocks outside `open` and the explicit `exec`/`wait_idle` helpers.
//!
//! Every device I/O goes through one tracking layer, whatever the engine: a short transfer
//! is resubmitted for the remainder and fails with EIO if it stays short, never counted as
//! done. The same layer injects faults for tests: a [`FaultPlan`] (EIO or ENOSPC on reads,
//! writes or fsyncs, short transfers, failed waits, at chosen points and areas) is set
//! through [`BlockstoreConfig::inject_faults`] (the `inject_faults` option, text grammar in
//! [`fault`]) or [`Blockstore::set_fault_plan`]. It is compiled in always and costs one
//! `Option` check per I/O when unset, so release binaries can be tested with it.
#![deny(missing_docs)]

pub mod allocator;
pub mod bitmap;
mod blockstore;
pub mod config;
pub mod error;
pub mod fault;
mod fsync;
pub mod index;
mod inflight;
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
pub use fault::{FaultPlan, FaultRule};
pub use io::{AlignedBuf, DevId, IoEngine};
pub use ops::{BsOp, BsReply, Completion, ListFilter, OpId, NEWEST};
pub use types::{ObjVerId, ObjectId};
