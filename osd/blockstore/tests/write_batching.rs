//! Batching on the write path. Journaled small writes submitted in one loop turn reach the
//! device as few large writes: their data lies back to back in the journal, and one device
//! write per run of adjacent data costs the disk one I/O instead of one per client write
//! (checked by counting the device writes the store asks for, then reading every write back
//! after a power loss that keeps only what was fsynced). And one loop turn enters the kernel
//! once: `poll` and `advance` leave their I/O queued for the next wait to submit.

mod common;

use common::tap::{open_tapped, Observer, Tap};
use common::*;
use vitastor_blockstore::io::{IoKind, IoReq};
use vitastor_blockstore::{Blockstore, BlockstoreConfig, BsOp, BsReply, Completion, ObjectId};

const BLOCK: u32 = 32768;
const OBJECTS: u64 = 16;

/// The writes and fsyncs the store asks for.
#[derive(Default)]
struct Counting {
    writes: u64,
    fsyncs: u64,
    /// Calls that would be an `io_uring_enter` on the real engine: a submit with something
    /// queued, or a wait with something pending.
    enters: u64,
    queued: u64,
}

impl Observer for Counting {
    fn pushed(&mut self, req: &IoReq) {
        match req.kind {
            IoKind::Write => self.writes += 1,
            IoKind::Fsync => self.fsyncs += 1,
            IoKind::Read => {}
        }
        self.queued += 1;
    }
    fn submitting(&mut self) {
        if self.queued > 0 {
            self.enters += 1;
            self.queued = 0;
        }
    }
    fn waiting(&mut self, in_flight: usize) {
        if in_flight > 0 {
            self.enters += 1;
            self.queued = 0;
        }
    }
}

fn oid(i: u64) -> ObjectId {
    ObjectId::new(1 << 48 | 1, i * BLOCK as u64)
}

fn write(i: u64, id: u64, granule: u32, granules: u32) -> BsOp {
    stable_write(oid(i), id, granule, granules)
}

/// A counted store whose objects are all written whole (redirect writes, write ids
/// `100 + i`), stable and flushed.
fn store(cfg: &BlockstoreConfig) -> Blockstore<Tap<Counting>> {
    let mut bs = open_tapped(cfg, sim_disks(cfg, 8 << 20), Counting::default(), true);
    for i in 0..OBJECTS {
        bs.exec(write(i, 100 + i, 0, BLOCK / GRAN))
            .expect("full write");
    }
    if cfg.immediate_commit == vitastor_blockstore::ImmediateCommit::None {
        bs.exec(BsOp::Sync).expect("sync");
    }
    bs.flush_all().expect("flush");
    bs
}

/// After a power loss that keeps only what was fsynced, granule `g` of every object `i`
/// holds the data of write `want(i, g)`.
fn assert_after_power_loss(
    mut bs: Blockstore<Tap<Counting>>,
    cfg: &BlockstoreConfig,
    want: impl Fn(u64, u32) -> u64,
) {
    let disks = bs.engine_mut().inner.power_loss_none();
    drop(bs);
    let mut bs = open_sim(cfg, disks, 8);
    for i in 0..OBJECTS {
        let (_, data) = read_all(&mut bs, oid(i));
        for g in 0..BLOCK / GRAN {
            let got = decode_pattern(&data[(g * GRAN) as usize..((g + 1) * GRAN) as usize], g);
            assert_eq!(got, Some(want(i, g)), "object {i} granule {g}");
        }
    }
}

#[test]
fn one_operation_at_a_time_enters_the_kernel_once_per_device_round_trip() {
    let mut cfg = small_cfg(BLOCK, 1 << 20);
    cfg.immediate_commit = vitastor_blockstore::ImmediateCommit::All;
    let mut bs = store(&cfg);
    // A client loop like the OSD's: submit, advance, wait (which submits), take completions.
    let before = bs.engine_mut().seen.enters;
    let mut done: Vec<Completion> = Vec::new();
    for i in 0..OBJECTS {
        bs.submit(BsOp::Read {
            oid: oid(i),
            version: vitastor_blockstore::NEWEST,
            offset: 0,
            len: GRAN,
        });
        bs.advance();
        while done.is_empty() {
            bs.poll(true).expect("poll");
            bs.take_completions(&mut done);
        }
        assert!(matches!(done[0].result, Ok(BsReply::Read { .. })));
        done.clear();
    }
    let enters = bs.engine_mut().seen.enters - before;
    assert_eq!(
        enters, OBJECTS,
        "{OBJECTS} reads one at a time took {enters} kernel entries"
    );
}

#[test]
fn small_writes_of_one_turn_share_device_writes_and_survive_power_loss() {
    let mut cfg = small_cfg(BLOCK, 1 << 20);
    // Every write durable at once, fsyncs on: acknowledged means fsynced.
    cfg.immediate_commit = vitastor_blockstore::ImmediateCommit::All;
    // Whole objects first (redirect writes), so that the 4 KiB writes below are journaled.
    let mut bs = store(&cfg);

    let before = bs.engine_mut().seen.writes;
    for i in 0..OBJECTS {
        bs.submit(write(i, 200 + i, 1, 1));
    }
    bs.run();
    let writes = bs.engine_mut().seen.writes - before;
    // One journal sector holds every entry; their data is one run. Before batching each
    // write's data was a device write of its own (OBJECTS + 1 in all).
    assert!(
        writes <= 3,
        "{OBJECTS} journaled writes took {writes} device writes"
    );
    let mut done: Vec<Completion> = Vec::new();
    while done.len() < OBJECTS as usize {
        bs.poll(true).expect("poll");
        bs.take_completions(&mut done);
    }
    for c in &done {
        assert!(
            matches!(c.result, Ok(BsReply::Written { .. })),
            "{:?}",
            c.result
        );
    }

    // Power loss keeping only fsynced data: every acknowledged write reads back.
    assert_after_power_loss(bs, &cfg, |i, g| if g == 1 { 200 + i } else { 100 + i });
}

#[test]
fn a_flush_round_of_adjacent_objects_writes_each_metadata_block_once_per_phase() {
    let mut cfg = small_cfg(BLOCK, 1 << 20);
    cfg.immediate_commit = vitastor_blockstore::ImmediateCommit::All;
    cfg.flusher_count = OBJECTS as u32;
    // No rounds of their own: flush_all below flushes every object at once.
    cfg.flusher_batch = 1000;
    let mut bs = store(&cfg);
    // Redirect writes again: flushing each sets its new metadata entry, then clears the old.
    for i in 0..OBJECTS {
        bs.submit(write(i, 200 + i, 0, BLOCK / GRAN));
    }
    bs.wait_idle().expect("writes");
    let before = bs.engine_mut().seen.writes;
    bs.flush_all().expect("flush");
    let writes = bs.engine_mut().seen.writes - before;
    // The entries of 16 adjacent blocks lie in one or two metadata blocks: one write of each
    // per phase, plus the journal header (3 here). Before, every job wrote the block on its
    // own: 33.
    assert!(
        writes <= 5,
        "flushing {OBJECTS} redirect writes took {writes} device writes"
    );
    assert_after_power_loss(bs, &cfg, |i, _| 200 + i);
}

#[test]
fn concurrent_syncs_share_one_journal_fsync() {
    let mut cfg = small_cfg(BLOCK, 1 << 20);
    cfg.immediate_commit = vitastor_blockstore::ImmediateCommit::None;
    // The flusher stays out of the way: this counts the SYNCs' own fsyncs.
    cfg.flusher_batch = 1000;
    let mut bs = store(&cfg);
    // Clients each write, then SYNC at the same moment, like T1Q1 fio jobs on one OSD (a
    // SYNC covers the writes completed before it).
    let before = bs.engine_mut().seen.fsyncs;
    for i in 0..OBJECTS {
        bs.submit(write(i, 200 + i, 1, 1));
    }
    bs.wait_idle().expect("writes");
    for _ in 0..OBJECTS {
        bs.submit(BsOp::Sync);
    }
    bs.run();
    let mut done: Vec<Completion> = Vec::new();
    while done.len() < 2 * OBJECTS as usize {
        bs.poll(true).expect("poll");
        bs.take_completions(&mut done);
        bs.run();
    }
    assert!(done.iter().all(|c| c.result.is_ok()), "{done:?}");
    let fsyncs = bs.engine_mut().seen.fsyncs - before;
    assert!(
        fsyncs <= 2,
        "{OBJECTS} concurrent SYNCs took {fsyncs} fsyncs"
    );
    // Every SYNC was acknowledged: all of it survives a power loss.
    let disks = bs.engine_mut().inner.power_loss(9);
    drop(bs);
    let mut bs = open_sim(&cfg, disks, 8);
    for i in 0..OBJECTS {
        let (_, data) = read_all(&mut bs, oid(i));
        let got = decode_pattern(&data[GRAN as usize..2 * GRAN as usize], 1);
        assert_eq!(got, Some(200 + i), "object {i}");
    }
}
