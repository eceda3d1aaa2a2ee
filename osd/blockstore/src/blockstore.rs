//! The blockstore engine: a single-threaded, poll-driven state machine over an [`IoEngine`].
//! `submit` queues an operation, `poll` feeds device results back, `run` advances
//! every operation, the flusher and journal trimming, then submits the I/O they produced.
//! Nothing here blocks except `open` (which loads metadata and replays the journal) and the
//! `exec`/`wait_idle` helpers meant for tools and tests.
//!
//! This file holds the store's state, the public operations, device completions and the
//! loop. Each part of the path lives in a module of its own: opening and journal replay in
//! [`open`], writes and deletions in [`write`], SYNC/stabilize/rollback in [`sync`], reads in
//! [`read`], the flusher and journal trimming in [`flusher`], and who waits for which fsync
//! in [`crate::fsync`].
//!
//! Ordering rules that make acknowledged writes survive crashes:
//! - an operation is acknowledged only when every journal entry up to its own (and their data)
//!   has completed (the journal watermark), and, when it must be durable, an fsync submitted
//!   after that has completed;
//! - a redirect write counts only once its data is durable: its journal entry is pending
//!   until a commit record follows the durable data, or, when data needs no fsync, the entry
//!   itself is journaled only after the data write completed (one record per write; later
//!   writes of the object wait for it so that each object's records stay in version order);
//! - a flush writes data, fsyncs, writes metadata, fsyncs, and only then frees blocks and lets
//!   the journal start move past the flushed entries; the new start is durable before its
//!   space is reused;
//! - a freed data block is reused only after every read that could still target it is done.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;

use rustc_hash::FxHashSet;

use crate::allocator::Allocator;
use crate::bitmap::{is_set, next_allocation, set_range, Bits};
use crate::config::{BlockstoreConfig, ImmediateCommit};
use crate::error::{BsError, BsResult};
use crate::fault::FaultPlan;
use crate::fsync::{Area, Fsyncs};
use crate::index::{Clean, DState, Dirty, DirtyKind, Index};
use crate::inflight::Tracked;
use crate::io::{AlignedBuf, DevId, IoEngine, IoKind, IoReq};
use crate::journal::{self, Appended, Entry, Journal, Kind, SectorWrite};
use crate::layout::{
    decode_meta_entry, encode_meta_entry, JournalHeader, Layout, MetaEntry, HEADER_BYTES,
};
use crate::ops::*;
use crate::types::{ObjVerId, ObjectId};
use crate::uring::{OpenFlags, UringEngine};

mod flusher;
mod open;
mod read;
mod sync;
mod write;

pub use open::read_superblock;

const T_SHIFT: u32 = 56;
const T_OP: u64 = 1;
const T_SECTOR: u64 = 2;
const T_JDATA: u64 = 3;
const T_FSYNC: u64 = 4;
const T_FLUSH: u64 = 5;
const T_META: u64 = 6;
const T_HEADER: u64 = 7;
const LOW40: u64 = (1 << 40) - 1;
/// Largest device write that journal data of several small writes is joined into.
const MAX_JDATA_RUN: u64 = 128 << 10;
/// A joined journal data write names its entries by first seq (40 bits) and span (16 bits).
const MAX_JDATA_SPAN: u64 = (1 << 16) - 1;

/// Journal bytes kept free for stabilize/rollback records, so that committing what is already
/// written never fails for lack of room (and the flusher can then free space). This fixed part
/// also absorbs what the per-version part of `write_reserve` does not count: the end of the
/// area skipped when a journaled write's data wraps, and a restart that turns on
/// `journal_no_same_sector_overwrites` (records then take a sector each, where the previous
/// run reserved them packed). A reserve computed exactly from the records owed, without this
/// slack, wedged a randomized workload that switches that option between restarts.
const JOURNAL_RESERVE_SECTORS: u64 = 8;
/// Data blocks that writes may not take (none are needed by the flusher today; one keeps a
/// full store deletable and rewritable object by object).
const DATA_RESERVE_BLOCKS: u64 = 1;
/// Journal bytes of one stabilize/rollback/commit record.
const RECORD_BYTES: u64 = 56;
/// Marks a stabilize that needed no journal record.
const NO_RECORD: u64 = u64::MAX;
/// Rounds of `exec`/`wait_idle` with work pending but no I/O in flight before they give up:
/// a round with nothing in flight changes nothing after the first few, so this only leaves
/// room for operations that are started a few rounds later (queued behind others).
const STUCK_ROUNDS: u32 = 1000;
/// Consecutive interrupted or refused waits after which `Drop` stops waiting for in-flight
/// I/O and leaks its buffers (a kernel returns EINTR/EBUSY now and then, never forever).
const DROP_TRANSIENT_WAITS: u32 = 1000;
/// Chunk size for reading the metadata area and journal at open.
const LOAD_CHUNK: usize = 16 << 20;

/// Which device each area is on.
#[derive(Clone, Copy, Debug)]
pub struct Devices {
    /// Data area device.
    pub data: DevId,
    /// Metadata area device.
    pub meta: DevId,
    /// Journal area device.
    pub journal: DevId,
}

/// Resolve area paths to a de-duplicated device list.
pub fn device_paths(cfg: &BlockstoreConfig) -> (Vec<PathBuf>, Devices) {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut id = |p: PathBuf| -> DevId {
        if let Some(i) = paths.iter().position(|x| *x == p) {
            DevId(i as u8)
        } else {
            paths.push(p);
            DevId(paths.len() as u8 - 1)
        }
    };
    let data = id(cfg.data_device.clone());
    let meta = id(cfg.meta_path());
    let journal = id(cfg.journal_path());
    (
        paths,
        Devices {
            data,
            meta,
            journal,
        },
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JWait {
    /// Waiting for the journal watermark to reach this seq.
    Watermark(u64),
    /// Waiting for a journal fsync ticket.
    Fsync(u64),
}

#[derive(Debug)]
enum WriteSt {
    Queued,
    BigData,
    BigDataFsync(u64),
    BigAppend,
    /// Data written and durable without an fsync: journal the write's one entry.
    BigEntry,
    Journal(JWait),
}

#[derive(Debug)]
enum SyncSt {
    Start,
    /// The journal has no room for the commit records yet: make the journaled writes durable
    /// first, so that they can be flushed and free the room.
    EarlySmall(JWait),
    /// Own work done; waiting for earlier syncs.
    Wait,
    DataFsync(u64),
    Append,
    Journal(JWait),
}

enum Body {
    Read {
        pending: u32,
        version: u64,
        bitmap: Vec<u8>,
        data: AlignedBuf,
        epoch: u64,
        err: i32,
    },
    Write {
        ov: ObjVerId,
        offset: u32,
        data: AlignedBuf,
        bitmap: Option<Vec<u8>>,
        stable: bool,
        delete: bool,
        big: Option<u64>,
        st: WriteSt,
        err: i32,
        commit_sector: Option<u64>,
    },
    Sync {
        st: SyncSt,
        small: Vec<ObjVerId>,
        big: Vec<ObjVerId>,
        commits: Vec<u64>,
        /// Order among syncs: one completes only after every earlier one, since an earlier
        /// one may hold writes that this one found nothing left to do for.
        seq: u64,
    },
    Commit {
        list: Vec<ObjVerId>,
        rollback: bool,
        started: bool,
        sectors: Vec<u64>,
        wait: JWait,
    },
}

struct Op {
    id: OpId,
    body: Body,
}

/// Adjacent journal data of consecutive small writes, written with one device write.
#[derive(Clone, Copy, Debug)]
struct JdataRun {
    /// Journal offset of the first byte.
    loc: u64,
    len: u64,
    first_seq: u64,
    last_seq: u64,
}

#[derive(Debug)]
enum FlushSt {
    Data,
    DataFsync(u64),
    /// Metadata writes of one phase: 0 sets the new entry, 1 clears the old one. The new entry
    /// is durable before the old one goes, so the object never loses its clean entry (which
    /// would make long-flushed journal entries replayable again).
    Meta(u8),
    MetaFsync(u8, u64),
}

struct MetaUpdate {
    block: u64,
    entry: Option<MetaEntry>,
    /// Index of the metadata block (0 = superblock).
    mblock: u64,
    buf: Option<AlignedBuf>,
    /// 0 = to do, 1 = reading, 2 = writing, 3 = done, 4 = read, to patch and write,
    /// 5 = riding on another job's write of the block.
    state: u8,
}

struct FlushJob {
    oid: ObjectId,
    upto: u64,
    target: Option<u64>,
    old: Option<u64>,
    superseded: Vec<u64>,
    bitmap: Bits,
    attr: Bits,
    st: FlushSt,
    pending: u32,
    meta: Vec<MetaUpdate>,
    err: i32,
}

#[derive(Debug, Clone, Copy)]
enum TrimSt {
    Idle,
    Writing { n: usize },
    Fsync { n: usize, ticket: u64 },
}

/// Counters for operators and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Objects flushed from the journal to their data blocks.
    pub flushed: u64,
    /// Journal header rewrites (trims).
    pub trims: u64,
    /// Operations completed.
    pub ops: u64,
    /// Writes that waited at the FIFO head for an earlier redirect write of the same object
    /// to journal its entry (see `WriteSt::BigEntry`).
    pub big_entry_waits: u64,
}

/// The blockstore.
pub struct Blockstore<E: IoEngine> {
    engine: Tracked<E>,
    layout: Layout,
    cfg: BlockstoreConfig,
    devs: Devices,
    index: Index,
    alloc: Allocator,
    journal: Journal,
    meta_image: Option<AlignedBuf>,
    meta_busy: FxHashSet<u64>,
    /// Flush jobs whose metadata updates ride on another job's write of a block:
    /// `(metadata block, job slot)`.
    meta_riders: Vec<(u64, usize)>,
    /// Metadata block buffers of finished flush jobs, for the next ones.
    meta_bufs: Vec<AlignedBuf>,
    /// Per granule of a block being flushed: where its newest journaled bytes are.
    flush_src: Vec<Option<u64>>,
    ops: Vec<Option<Op>>,
    free_slots: Vec<usize>,
    next_id: OpId,
    fifo: VecDeque<usize>,
    active: Vec<usize>,
    done: Vec<Completion>,
    unsynced: Vec<ObjVerId>,
    unsynced_big: Vec<ObjVerId>,
    /// Data needs no fsync (`disable_data_fsync`): a redirect write journals one entry after
    /// its data instead of a pending entry before it and a commit record after it.
    big_entry_after_data: bool,
    /// Objects with a redirect write whose entry is not journaled yet: later writes of them
    /// wait, so that the object's records stay in version order.
    big_unjournaled: FxHashSet<ObjectId>,
    /// The FIFO slot last counted in `Stats::big_entry_waits`.
    big_wait_slot: Option<usize>,
    fsyncs: Fsyncs,
    fsync_out: Vec<(DevId, u64)>,
    flush_queue: VecDeque<ObjectId>,
    flush_queued: FxHashSet<ObjectId>,
    flushing: FxHashSet<ObjectId>,
    jobs: Vec<Option<FlushJob>>,
    trim: TrimSt,
    header_buf: AlignedBuf,
    read_epoch: u64,
    reads_inflight: VecDeque<(u64, u32)>,
    pending_free: VecDeque<(u64, u64)>,
    /// Blocks freed by flushing a deletion, released only once the journal start has moved
    /// past the deletion's sector (else replay could resurrect the deleted versions onto a
    /// reused block): `(sector, block)`.
    free_after_trim: VecDeque<(u64, u64)>,
    /// Flushed deletions whose journal records are still replayable: new versions of these
    /// objects must stay above the deletion (else replay would confuse them with the old
    /// ones). `(version, sector)`.
    tombstones: rustc_hash::FxHashMap<ObjectId, (u64, u64)>,
    failed: Option<i32>,
    sync_seq: u64,
    round_left: usize,
    force_flush: bool,
    active_syncs: std::collections::BTreeSet<u64>,
    sector_writes: Vec<SectorWrite>,
    /// Journal data appended this turn and not yet handed to the engine: adjacent data of
    /// several small writes goes out as one device write.
    jdata_run: Option<JdataRun>,
    reaped: Vec<(u64, i32)>,
    waiting_space: bool,
    stats: Stats,
    /// Flusher data and metadata I/O in flight; its fsyncs start once this is 0.
    flush_io: u32,
    flush_requeue: Vec<ObjectId>,
    read_scratch: read::Scratch,
}

/// Wait errors after which waiting again is right: a signal, or a completion queue that must
/// be reaped before the kernel takes more.
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
    )
}

fn tok(kind: u64, low: u64) -> u64 {
    kind << T_SHIFT | low
}

impl<E: IoEngine> Blockstore<E> {
    /// The on-disk geometry.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The options this store runs with.
    pub fn config(&self) -> &BlockstoreConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Free data blocks.
    pub fn free_blocks(&self) -> u64 {
        self.alloc.free_count()
    }

    /// Data blocks in use (clean objects and redirect writes).
    pub fn used_blocks(&self) -> u64 {
        self.alloc.total() - self.alloc.free_count() - 1
    }

    /// Free journal bytes.
    pub fn journal_free(&self) -> u64 {
        self.journal.free_bytes()
    }

    /// Number of dirty (journaled, not yet flushed) versions.
    pub fn dirty_count(&self) -> usize {
        self.index.dirty.len()
    }

    /// Number of clean objects.
    pub fn clean_count(&self) -> usize {
        self.index.clean.len()
    }

    /// The I/O engine (the OSD shares its ring with sockets).
    pub fn engine_mut(&mut self) -> &mut E {
        self.engine.inner_mut()
    }

    /// Replaces the device faults to inject (`None`: none); counting starts afresh.
    pub fn set_fault_plan(&mut self, plan: Option<FaultPlan>) {
        self.engine.set_plan(plan);
    }

    /// The fault plan in force, with how often each rule has fired.
    pub fn fault_plan(&self) -> Option<&FaultPlan> {
        self.engine.plan()
    }

    /// The negative errno of the device write or fsync that made the store read-only, if
    /// one did: from then on nothing can be stored, so its owner should stop serving.
    pub fn device_failure(&self) -> Option<i32> {
        self.failed
    }

    /// Queue an operation; its completion appears after some `run`/`poll` calls.
    pub fn submit(&mut self, op: BsOp) -> OpId {
        let id = self.next_id;
        self.next_id += 1;
        if self.failed.is_some() {
            self.done.push(Completion {
                id,
                result: Err(BsError::ReadOnly),
            });
            return id;
        }
        match op {
            BsOp::Read {
                oid,
                version,
                offset,
                len,
            } => self.start_read(id, oid, version, offset, len),
            BsOp::ReadBitmap { oid, version } => {
                let result = match self.index.visible_version(oid, version) {
                    Some((v, d)) => {
                        let bitmap = match d {
                            Some(d) if d.kind == DirtyKind::Delete => {
                                vec![0; self.index.bitmap_bytes]
                            }
                            Some(d) => d.attr.to_vec(),
                            None => self.index.clean_attr(self.index.clean[&oid].block).to_vec(),
                        };
                        Ok(BsReply::Bitmap { version: v, bitmap })
                    }
                    None => Ok(BsReply::Bitmap {
                        version: 0,
                        bitmap: vec![0; self.index.bitmap_bytes],
                    }),
                };
                self.done.push(Completion { id, result });
            }
            BsOp::List(filter) => {
                let result = Ok(self.list(&filter));
                self.done.push(Completion { id, result });
            }
            BsOp::Write {
                oid,
                version,
                offset,
                data,
                bitmap,
                stable,
            } => {
                if let Err(e) = self.check_write(offset, data.len(), bitmap.as_deref()) {
                    self.done.push(Completion { id, result: Err(e) });
                    return id;
                }
                self.queue_write(
                    id,
                    ObjVerId::new(oid, version),
                    offset,
                    data,
                    bitmap,
                    stable,
                    false,
                );
            }
            BsOp::Delete {
                oid,
                version,
                stable,
            } => {
                self.queue_write(
                    id,
                    ObjVerId::new(oid, version),
                    0,
                    AlignedBuf::new(0),
                    None,
                    stable,
                    true,
                );
            }
            BsOp::Sync => {
                let body = Body::Sync {
                    st: SyncSt::Start,
                    small: Vec::new(),
                    big: Vec::new(),
                    commits: Vec::new(),
                    seq: 0,
                };
                let slot = self.alloc_slot(Op { id, body });
                self.active.push(slot);
            }
            BsOp::Stabilize(list) | BsOp::Rollback(list) if list.is_empty() => {
                self.done.push(Completion {
                    id,
                    result: Ok(BsReply::Done),
                });
            }
            BsOp::Stabilize(list) => {
                let body = Body::Commit {
                    list,
                    rollback: false,
                    started: false,
                    sectors: Vec::new(),
                    wait: JWait::Watermark(0),
                };
                let slot = self.alloc_slot(Op { id, body });
                self.fifo.push_back(slot);
            }
            BsOp::Rollback(list) => {
                let body = Body::Commit {
                    list,
                    rollback: true,
                    started: false,
                    sectors: Vec::new(),
                    wait: JWait::Watermark(0),
                };
                let slot = self.alloc_slot(Op { id, body });
                self.fifo.push_back(slot);
            }
        }
        id
    }

    /// Move finished operations to `out`.
    pub fn take_completions(&mut self, out: &mut Vec<Completion>) {
        self.stats.ops += self.done.len() as u64;
        out.append(&mut self.done);
    }

    /// Nothing queued, running, flushing or in flight.
    pub fn is_idle(&self) -> bool {
        self.fifo.is_empty()
            && self.active.is_empty()
            && self.jobs.iter().all(|j| j.is_none())
            && matches!(self.trim, TrimSt::Idle)
            && self.engine.in_flight() == 0
    }

    /// No client operation pending (the flusher may still be busy).
    pub fn ops_idle(&self) -> bool {
        self.fifo.is_empty() && self.active.is_empty() && self.done.is_empty()
    }

    /// Reap completions from the engine (blocking for one if `block`), handle them and
    /// advance. The I/O this produces stays queued until the caller's next [`Blockstore::run`]
    /// or blocking wait (every engine wait submits what is queued), so that one loop turn
    /// enters the kernel once for all of it rather than once here and once in `run`.
    /// A wait interrupted by a signal, or refused until completions are reaped, returns
    /// early; only another wait error is returned.
    pub fn poll(&mut self, block: bool) -> BsResult<()> {
        if block && self.engine.in_flight() > 0 {
            match self.engine.wait() {
                Ok(()) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(BsError::io("wait for I/O", e)),
            }
        }
        let mut reaped = std::mem::take(&mut self.reaped);
        self.engine.reap(&mut reaped);
        for &(token, res) in &reaped {
            self.handle_completion(token, res);
        }
        reaped.clear();
        self.reaped = reaped;
        self.advance();
        Ok(())
    }

    /// Submit one operation and drive the store until it completes (tools and tests).
    pub fn exec(&mut self, op: BsOp) -> BsResult<BsReply> {
        let id = self.submit(op);
        self.run();
        let mut out = Vec::new();
        let mut idle_rounds = 0;
        loop {
            self.take_completions(&mut out);
            if let Some(i) = out.iter().position(|c| c.id == id) {
                let c = out.swap_remove(i);
                self.done.extend(out);
                return c.result;
            }
            self.check_progress(&mut idle_rounds)?;
            self.poll(true)?;
        }
    }

    /// Everything the index knows about one object, for diagnostics.
    pub fn debug_object(&self, oid: ObjectId) -> String {
        let dirty: Vec<String> = self
            .index
            .dirty_of(oid)
            .map(|(v, d)| {
                format!(
                    "v{} {:?} {:?} stable={} off={} len={}",
                    v.version, d.kind, d.state, d.stable, d.offset, d.len
                )
            })
            .collect();
        format!(
            "clean={:?} tombstone={:?} dirty={dirty:?}",
            self.index.clean.get(&oid),
            self.tombstones.get(&oid)
        )
    }

    /// One-line summary of internal queues, for diagnostics.
    pub fn debug_state(&self) -> String {
        format!(
            "fifo={} active={} jobs={} trim={:?} journal_free={} live_sectors={} dirty={} free_blocks={} pending_free={} free_after_trim={} flush_queue={}",
            self.fifo.len(),
            self.active.len(),
            self.jobs.iter().filter(|j| j.is_some()).count(),
            self.trim,
            self.journal.free_bytes(),
            self.journal.live_sectors(),
            self.index.dirty.len(),
            self.alloc.free_count(),
            self.pending_free.len(),
            self.free_after_trim.len(),
            self.flush_queue.len()
        ) + " " + &self.journal.debug()
            + &format!(" first_dirty={:?}", self.index.dirty.iter().take(8).map(|(k, d)| (k.version, d.kind, d.state, d.stable, d.sector)).collect::<Vec<_>>())
    }

    /// Drive until every operation, flush and trim is finished.
    pub fn wait_idle(&mut self) -> BsResult<()> {
        self.run();
        let mut idle_rounds = 0;
        while !self.is_idle() {
            self.check_progress(&mut idle_rounds)?;
            self.poll(true)?;
        }
        Ok(())
    }

    /// For the blocking helpers: rounds with nothing in flight mean no completion can ever
    /// move the store on (a lost completion, or a bug), so waiting longer is pointless.
    fn check_progress(&self, idle_rounds: &mut u32) -> BsResult<()> {
        *idle_rounds = if self.engine.in_flight() == 0 {
            *idle_rounds + 1
        } else {
            0
        };
        if *idle_rounds >= STUCK_ROUNDS {
            return Err(BsError::Stuck(self.debug_state()));
        }
        Ok(())
    }

    /// Flush everything flushable and trim the journal (tools, tests, clean shutdown).
    pub fn flush_all(&mut self) -> BsResult<()> {
        let oids: Vec<ObjectId> = self.index.dirty.keys().map(|ov| ov.oid).collect();
        for oid in oids {
            self.queue_flush(oid);
        }
        self.force_flush = true;
        let r = self.wait_idle();
        self.force_flush = false;
        r
    }

    fn alloc_slot(&mut self, op: Op) -> usize {
        if let Some(s) = self.free_slots.pop() {
            self.ops[s] = Some(op);
            s
        } else {
            self.ops.push(Some(op));
            self.ops.len() - 1
        }
    }

    fn finish(&mut self, slot: usize, mut result: BsResult<BsReply>) {
        let op = self.ops[slot].take().expect("finishing an empty op slot");
        self.free_slots.push(slot);
        if let (
            Ok(BsReply::Written {
                data: reply_data, ..
            }),
            Body::Write {
                data,
                delete: false,
                ..
            },
        ) = (&mut result, op.body)
        {
            *reply_data = Some(data);
        }
        self.done.push(Completion { id: op.id, result });
    }

    // ---------------------------------------------------------------- listing

    fn list(&self, f: &ListFilter) -> BsReply {
        let mut stable = Vec::new();
        let mut unstable = Vec::new();
        let mut last_oid: Option<ObjectId> = None;
        let mut cur_stable: Option<(u64, bool)> = None;
        let mut cur_unstable: Option<u64> = None;
        let flush = |oid: ObjectId,
                     st: Option<(u64, bool)>,
                     un: Option<u64>,
                     stable: &mut Vec<ObjVerId>,
                     unstable: &mut Vec<ObjVerId>| {
            let st = st.or_else(|| self.index.clean.get(&oid).map(|c| (c.version, false)));
            if let Some((v, deleted)) = st {
                if !deleted {
                    stable.push(ObjVerId::new(oid, v));
                }
            }
            if let Some(v) = un {
                unstable.push(ObjVerId::new(oid, v));
            }
        };
        for (ov, d) in &self.index.dirty {
            if !f.matches(&ov.oid) {
                continue;
            }
            if last_oid != Some(ov.oid) {
                if let Some(o) = last_oid {
                    flush(o, cur_stable, cur_unstable, &mut stable, &mut unstable);
                }
                last_oid = Some(ov.oid);
                cur_stable = None;
                cur_unstable = None;
            }
            if d.state == DState::InFlight {
                continue;
            }
            if d.stable {
                cur_stable = Some((ov.version, d.kind == DirtyKind::Delete));
            } else {
                cur_unstable = Some(ov.version);
            }
        }
        if let Some(o) = last_oid {
            flush(o, cur_stable, cur_unstable, &mut stable, &mut unstable);
        }
        let dirty_oids: FxHashSet<ObjectId> = self.index.dirty.keys().map(|ov| ov.oid).collect();
        for (oid, c) in &self.index.clean {
            if !dirty_oids.contains(oid) && f.matches(oid) {
                stable.push(ObjVerId::new(*oid, c.version));
            }
        }
        stable.sort_unstable();
        unstable.sort_unstable();
        BsReply::List { stable, unstable }
    }

    // ---------------------------------------------------------------- completions

    /// Feed one device completion back (`token` from an [`IoReq`] this store pushed).
    fn handle_completion(&mut self, token: u64, res: i32) {
        let kind = token >> T_SHIFT;
        let low = token & ((1 << T_SHIFT) - 1);
        let ok = res >= 0;
        match kind {
            T_OP => {
                let slot = low as usize;
                let mut read_epoch = None;
                let mut fail_store = false;
                if let Some(op) = self.ops[slot].as_mut() {
                    match &mut op.body {
                        Body::Read {
                            pending,
                            err,
                            epoch,
                            ..
                        } => {
                            *pending -= 1;
                            if !ok {
                                *err = res;
                            }
                            if *pending == 0 {
                                read_epoch = Some(*epoch);
                            }
                        }
                        Body::Write { err, st, .. } => {
                            // The version is in the index already, pointing at a block whose
                            // contents are now unknown: only a reopen sorts that out.
                            if !ok {
                                *err = res;
                                fail_store = true;
                            }
                            if let WriteSt::BigData = st {
                                *st = WriteSt::BigDataFsync(u64::MAX);
                            }
                        }
                        _ => {}
                    }
                }
                if fail_store {
                    self.fail(res);
                }
                if let Some(e) = read_epoch {
                    self.read_done(e);
                    let op = self.ops[slot].take().unwrap();
                    self.free_slots.push(slot);
                    let Body::Read {
                        version,
                        bitmap,
                        data,
                        err,
                        ..
                    } = op.body
                    else {
                        unreachable!()
                    };
                    let result = if err < 0 {
                        Err(BsError::DeviceIo(-err))
                    } else {
                        Ok(BsReply::Read {
                            version,
                            bitmap,
                            data,
                        })
                    };
                    self.done.push(Completion { id: op.id, result });
                }
            }
            T_SECTOR => {
                let w = SectorWrite {
                    abs: low & LOW40,
                    pos: 0,
                    buf: (low >> 40) as usize,
                };
                if ok {
                    self.journal.sector_written(w);
                } else {
                    self.fail(res);
                }
            }
            T_JDATA => {
                if ok {
                    let first = low & LOW40;
                    self.journal.data_written(first, first + (low >> 40));
                } else {
                    self.fail(res);
                }
            }
            T_FSYNC => {
                if !ok {
                    self.fail(res);
                    return;
                }
                self.fsyncs.completed(DevId((low >> 40) as u8), low & LOW40);
            }
            T_FLUSH | T_META => {
                let slot = (low >> 40) as usize;
                let mblock = low & LOW40;
                self.flush_io = self.flush_io.saturating_sub(1);
                if !ok {
                    self.fail(res);
                }
                let mut block_written = false;
                if let Some(job) = self.jobs[slot].as_mut() {
                    if kind == T_FLUSH {
                        job.pending -= 1;
                    } else if let Some(m) = job
                        .meta
                        .iter_mut()
                        .find(|m| m.mblock == mblock && (m.state == 1 || m.state == 2))
                    {
                        if m.state == 1 {
                            m.state = 4; // read done, patch and write next
                        } else {
                            m.state = 3;
                            block_written = true;
                        }
                    }
                    if !ok {
                        job.err = res;
                    }
                }
                if block_written {
                    self.meta_busy.remove(&mblock);
                    self.meta_block_written(mblock, res);
                }
            }
            T_HEADER => {
                if !ok {
                    self.fail(res);
                    return;
                }
                if let TrimSt::Writing { n } = self.trim {
                    let ticket = self.fsyncs.ticket(Area::Journal);
                    self.trim = TrimSt::Fsync { n, ticket };
                }
            }
            _ => {}
        }
    }

    /// A device failed a write or fsync: durability can no longer be promised. Fail everything
    /// pending and refuse new operations until the store is reopened.
    fn fail(&mut self, res: i32) {
        if self.failed.is_some() {
            return;
        }
        tracing::error!(
            "blockstore device error {res}; failing pending operations, store is now read-only"
        );
        self.failed = Some(res);
    }

    // ---------------------------------------------------------------- the loop

    /// Advance everything and submit the I/O produced (with whatever [`Blockstore::poll`]
    /// left queued) in one `io_uring_enter`.
    pub fn run(&mut self) {
        self.advance();
        if let Err(e) = self.engine.submit() {
            tracing::error!("io_uring submit: {e}");
            self.fail(-e.raw_os_error().unwrap_or(libc::EIO));
        }
    }

    /// Advance every operation, the flusher and trimming, and queue the I/O they produce
    /// without submitting it: a caller that waits on the engine next (a blocking
    /// [`Blockstore::poll`], `UringEngine::wait_for`) submits it with that wait, in the same
    /// `io_uring_enter`.
    pub fn advance(&mut self) {
        if self.failed.is_some() {
            self.fail_all();
        } else {
            for _ in 0..4 {
                let mut progress = self.start_queued();
                progress |= self.advance_active();
                progress |= self.run_flusher();
                progress |= self.run_trim();
                self.release_frees();
                if !progress {
                    break;
                }
            }
            self.submit_journal_io();
        }
    }

    fn fail_all(&mut self) {
        let errno = self.failed.unwrap_or(-libc::EIO);
        // Ops with I/O in flight keep their buffers until the engine drains.
        if self.engine.in_flight() > 0 {
            let mut reaped = Vec::new();
            self.engine.reap(&mut reaped);
            if self.engine.in_flight() > 0 {
                return;
            }
        }
        let slots: Vec<usize> = self.fifo.drain(..).chain(self.active.drain(..)).collect();
        for slot in slots {
            self.finish(slot, Err(BsError::DeviceIo(-errno)));
        }
        for j in self.jobs.iter_mut() {
            *j = None;
        }
        self.meta_riders.clear();
        self.trim = TrimSt::Idle;
    }

    fn submit_journal_io(&mut self) {
        self.push_jdata_run();
        let mut writes = std::mem::take(&mut self.sector_writes);
        self.journal.take_sector_writes(&mut writes);
        let jbs = self.journal.block_size() as usize;
        for w in writes.drain(..) {
            let ptr = self.journal.sector_buf_ptr(w.buf);
            // SAFETY: sector buffers belong to the journal and are not reused until
            // `sector_written` returns them.
            unsafe {
                self.engine.push(IoReq {
                    dev: self.devs.journal,
                    kind: IoKind::Write,
                    offset: self.layout.journal.offset + w.pos,
                    ptr,
                    len: jbs,
                    token: tok(T_SECTOR, (w.buf as u64) << 40 | w.abs),
                });
            }
        }
        self.sector_writes = writes;
        let mut fsyncs = std::mem::take(&mut self.fsync_out);
        self.fsyncs.take_due(&mut fsyncs, self.flush_io == 0);
        for (dev, number) in fsyncs.drain(..) {
            // SAFETY: fsync carries no buffer.
            unsafe {
                self.engine.push(IoReq {
                    dev,
                    kind: IoKind::Fsync,
                    offset: 0,
                    ptr: std::ptr::null_mut(),
                    len: 0,
                    token: tok(T_FSYNC, (dev.0 as u64) << 40 | number),
                });
            }
        }
        self.fsync_out = fsyncs;
    }

    fn start_queued(&mut self) -> bool {
        let mut progress = false;
        self.waiting_space = false;
        while let Some(&slot) = self.fifo.front() {
            if let Some(Op {
                body: Body::Write { ov, .. },
                ..
            }) = &self.ops[slot]
            {
                if self.big_unjournaled.contains(&ov.oid) {
                    if self.big_wait_slot != Some(slot) {
                        self.big_wait_slot = Some(slot);
                        self.stats.big_entry_waits += 1;
                    }
                    break;
                }
            }
            match self.try_start(slot) {
                Ok(true) => {
                    self.fifo.pop_front();
                    self.active.push(slot);
                    progress = true;
                }
                Ok(false) => {
                    self.waiting_space = true;
                    break;
                }
                Err(e) => {
                    self.fifo.pop_front();
                    self.finish(slot, Err(e));
                    progress = true;
                }
            }
        }
        progress
    }

    /// Whether waiting can ever free journal space or data blocks: something is running that
    /// will finish, or the journal start can move.
    fn can_make_room(&self) -> bool {
        !self.active.is_empty()
            || self.jobs.iter().any(|j| j.is_some())
            || !self.flush_queue.is_empty()
            || !matches!(self.trim, TrimSt::Idle)
            || !self.pending_free.is_empty()
            || self.journal.can_trim()
    }

    /// Start the FIFO head: assign its version and append its journal records, or allocate its
    /// block. `Ok(false)` = no room yet.
    fn try_start(&mut self, slot: usize) -> BsResult<bool> {
        let mut op = self.ops[slot].take().unwrap();
        let r = match &mut op.body {
            Body::Write { .. } => self.start_write(&mut op.body),
            Body::Commit { .. } => self.start_commit(&mut op.body),
            _ => unreachable!("only writes and commits are queued"),
        };
        self.ops[slot] = Some(op);
        match r {
            Ok(false) if !self.can_make_room() => {
                tracing::debug!("ENOSPC: {}", self.debug_state());
                Err(BsError::NoSpace(
                    "journal or data area full and nothing can be flushed",
                ))
            }
            r => r,
        }
    }

    /// Raw bytes stored per inode, for space reports: one block per object whose newest
    /// stable version holds data. Stable versions still in the journal count (the flusher
    /// waits for a batch, and a freshly written image must not look empty until then);
    /// unstable ones do not, as they may still be rolled back.
    pub fn space_by_inode(&self) -> rustc_hash::FxHashMap<u64, u64> {
        let block = self.layout.block_size as u64;
        // Dirty versions are in (object, version) order: the last stable one of an object
        // says whether it exists.
        let mut newest_stable: rustc_hash::FxHashMap<ObjectId, bool> = Default::default();
        for (ov, d) in self.index.dirty.iter().filter(|(_, d)| d.stable) {
            newest_stable.insert(ov.oid, d.kind != DirtyKind::Delete);
        }
        let clean = self
            .index
            .clean
            .keys()
            .filter(|oid| !newest_stable.contains_key(oid));
        let dirty = newest_stable
            .iter()
            .filter(|(_, &exists)| exists)
            .map(|(oid, _)| oid);
        let mut out: rustc_hash::FxHashMap<u64, u64> = Default::default();
        for oid in clean.chain(dirty) {
            *out.entry(oid.inode).or_default() += block;
        }
        out
    }

    /// Device I/Os submitted and not yet reaped.
    pub fn engine_in_flight(&self) -> usize {
        self.engine.in_flight()
    }

    /// Newest version of `oid` in any state, including a deletion not yet forgotten (0 for an
    /// object this store has never had or has fully forgotten). A write with a version above
    /// it is accepted; the OSD's primary derives the next version of an object from it.
    pub fn object_version(&self, oid: ObjectId) -> u64 {
        self.latest_version(oid)
    }

    fn advance_active(&mut self) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.active.len() {
            let slot = self.active[i];
            let mut op = self.ops[slot].take().unwrap();
            let res = self.advance_op(&mut op);
            self.ops[slot] = Some(op);
            match res {
                Some(result) => {
                    self.active.swap_remove(i);
                    self.finish(slot, result);
                    progress = true;
                }
                None => i += 1,
            }
        }
        progress
    }

    /// One step of an active op's state machine; `Some(result)` when it is finished.
    fn advance_op(&mut self, op: &mut Op) -> Option<BsResult<BsReply>> {
        match &mut op.body {
            Body::Write { .. } => self.advance_write(&mut op.body),
            Body::Sync { .. } => self.advance_sync(&mut op.body),
            Body::Commit { .. } => self.advance_commit(&mut op.body),
            Body::Read { .. } => None,
        }
    }
}

impl<E: IoEngine> Blockstore<E> {
    /// Gives up the buffers that in-flight I/O may still use, without freeing them: the
    /// kernel may go on reading or writing them after we stop waiting, even after the ring is
    /// closed. Every buffer a device I/O can point into lives in the op slots, the flush
    /// jobs, the journal or the header buffer.
    fn leak_io_buffers(&mut self) {
        std::mem::forget(std::mem::take(&mut self.ops));
        std::mem::forget(std::mem::take(&mut self.jobs));
        std::mem::forget(std::mem::replace(&mut self.header_buf, AlignedBuf::new(0)));
        self.journal.leak_buffers();
    }
}

impl<E: IoEngine> Drop for Blockstore<E> {
    /// Buffers of in-flight I/O live in this struct: the device must be done with them before
    /// they are freed, or a read in flight would write into freed (reused) memory and a write
    /// would carry it to the disk. So drop waits for every I/O; if the engine cannot be
    /// waited on, those buffers are leaked on purpose rather than freed.
    fn drop(&mut self) {
        let mut reaped = Vec::new();
        let mut transient = 0;
        while self.engine.in_flight() > 0 {
            match self.engine.submit().and_then(|()| self.engine.wait()) {
                Ok(()) => transient = 0,
                Err(e) if is_transient(&e) && transient < DROP_TRANSIENT_WAITS => transient += 1,
                Err(e) => {
                    tracing::error!(
                        "cannot wait for {} in-flight device I/Os ({e}); leaking their buffers",
                        self.engine.in_flight()
                    );
                    self.leak_io_buffers();
                    return;
                }
            }
            self.engine.reap(&mut reaped);
            reaped.clear();
        }
    }
}
