//! Reads never wait for background work. While client reads are in flight the flusher keeps
//! at most one device I/O of its own in flight (so a read queues behind one background write
//! or fsync at most, not behind a round of them), yet still drains its backlog between reads;
//! and a read whose reply buffers the caller recycles allocates nothing.

mod common;

use std::cell::Cell;
use std::collections::HashMap;

use common::tap::{open_tapped, Observer, Tap};
use common::*;
use vitastor_blockstore::io::{IoKind, IoReq};
use vitastor_blockstore::{
    Blockstore, BsOp, BsReply, Completion, ImmediateCommit, ObjectId, NEWEST,
};

const BLOCK: u32 = 32768;
const OBJECTS: u64 = 16;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static STORE_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting the allocations of the calling thread (tests run on
/// threads of their own).
struct CountingAlloc;

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: as above.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocs() -> u64 {
    ALLOCS.with(|a| a.get())
}

/// How much background I/O (writes and fsyncs) is in flight while reads are.
#[derive(Default)]
struct Watching {
    reads: HashMap<u64, u32>,
    background: HashMap<u64, u32>,
    /// Most writes and fsyncs in flight at any moment a read was in flight too.
    max_background_beside_reads: usize,
}

fn count(m: &HashMap<u64, u32>) -> usize {
    m.values().map(|&n| n as usize).sum()
}

impl Observer for Watching {
    fn pushed(&mut self, req: &IoReq) {
        let m = if req.kind == IoKind::Read {
            &mut self.reads
        } else {
            &mut self.background
        };
        *m.entry(req.token).or_default() += 1;
        if count(&self.reads) > 0 {
            self.max_background_beside_reads = self
                .max_background_beside_reads
                .max(count(&self.background));
        }
    }
    fn reaped(&mut self, done: &[(u64, i32)]) {
        for &(token, _) in done {
            for m in [&mut self.reads, &mut self.background] {
                if let Some(n) = m.get_mut(&token) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&token);
                    }
                    break;
                }
            }
        }
    }
}

fn oid(i: u64) -> ObjectId {
    ObjectId::new(1 << 48 | 1, i * BLOCK as u64)
}

fn write(i: u64, id: u64, granule: u32, granules: u32) -> BsOp {
    stable_write(oid(i), id, granule, granules)
}

/// A store in lazy mode (every fsync on) whose objects are all written and flushed.
fn store() -> Blockstore<Tap<Watching>> {
    let mut cfg = small_cfg(BLOCK, 1 << 20);
    cfg.immediate_commit = ImmediateCommit::None;
    let disks = sim_disks(&cfg, 8 << 20);
    let mut bs = open_tapped(&cfg, disks, Watching::default(), false);
    for i in 0..OBJECTS {
        bs.exec(write(i, 100 + i, 0, BLOCK / GRAN))
            .expect("full write");
    }
    bs.exec(BsOp::Sync).expect("sync");
    bs.flush_all().expect("flush");
    bs
}

/// One read at a time, like an OSD serving a T1Q1 client: submit, advance, wait, take the
/// completion, hand the buffers back. Returns which write produced the granule read; the
/// store's allocations (submit to completion) add up in `STORE_ALLOCS`.
fn read_one(bs: &mut Blockstore<Tap<Watching>>, done: &mut Vec<Completion>, i: u64, g: u32) -> u64 {
    let before = allocs();
    bs.submit(BsOp::Read {
        oid: oid(i),
        version: NEWEST,
        offset: g * GRAN,
        len: GRAN,
    });
    bs.advance();
    while done.is_empty() {
        bs.poll(true).expect("poll");
        bs.take_completions(done);
    }
    STORE_ALLOCS.with(|a| a.set(a.get() + allocs() - before));
    let c = done.pop().expect("a completion");
    match c.result {
        Ok(BsReply::Read { data, bitmap, .. }) => {
            let id = decode_pattern(&data, g).expect("garbage read");
            bs.recycle_read(data, bitmap);
            id
        }
        other => panic!("read failed: {other:?}"),
    }
}

#[test]
fn the_flusher_yields_to_reads_but_still_drains() {
    let mut bs = store();
    // A backlog for the flusher: a journaled write to every object, made stable by a SYNC.
    for i in 0..OBJECTS {
        bs.exec(write(i, 200 + i, 1, 1)).expect("small write");
    }
    bs.exec(BsOp::Sync).expect("sync");
    assert!(bs.dirty_count() as u64 >= OBJECTS);
    bs.engine_mut().seen.max_background_beside_reads = 0;

    let mut done = Vec::with_capacity(4);
    let mut reads = 0;
    while bs.dirty_count() > 0 {
        assert!(reads < 10_000, "the flusher starved behind reads");
        let i = reads % OBJECTS;
        let g = (reads / OBJECTS % 2) as u32;
        let want = if g == 1 { 200 + i } else { 100 + i };
        assert_eq!(read_one(&mut bs, &mut done, i, g), want);
        reads += 1;
    }
    let most = bs.engine_mut().seen.max_background_beside_reads;
    assert!(
        most <= 1,
        "reads shared the device with {most} background writes/fsyncs at once"
    );
}

#[test]
fn reads_with_recycled_buffers_allocate_nothing() {
    let mut bs = store();
    bs.exec(write(0, 300, 2, 1)).expect("small write");
    let mut done = Vec::with_capacity(4);
    // Warm up: the pools and queues reach their working size.
    for n in 0..64 {
        read_one(&mut bs, &mut done, n % OBJECTS, (n / OBJECTS % 4) as u32);
    }
    let before = STORE_ALLOCS.with(|a| a.get());
    for n in 0..256 {
        // Clean data and journaled data (object 0, granule 2).
        read_one(&mut bs, &mut done, n % OBJECTS, (n / OBJECTS % 4) as u32);
    }
    let per_read = (STORE_ALLOCS.with(|a| a.get()) - before) as f64 / 256.0;
    assert!(
        per_read == 0.0,
        "a read allocated {per_read} times on average"
    );
}
