//! A stabilize whose records do not all fit in the journal appends them over several passes,
//! waiting for room in between. Its acknowledgement must wait for the records of every pass,
//! not only the last one's: here the last pass appends nothing (the versions it had left were
//! stabilized meanwhile by the operations that took the room), and the journal sector holding
//! its first pass's records is kept from reaching the device. A power loss at the moment the
//! stabilize is acknowledged must lose none of the versions it stabilized.

mod common;

use std::collections::VecDeque;

use common::*;
use vitastor_blockstore::io::{IoKind, IoReq};
use vitastor_blockstore::simdisk::{SimDisk, SimEngine};
use vitastor_blockstore::{
    device_paths, Blockstore, BsOp, BsReply, ImmediateCommit, IoEngine, ListFilter, ObjVerId,
    ObjectId,
};

const BLOCK: u32 = 32768;
/// Versions only the stabilize under test commits.
const OWN: u64 = 150;
/// Versions that earlier stabilizes commit too, taking the journal's room with them.
const SHARED: u64 = 200;
/// Bytes of a stabilize record in the journal.
const RECORD: u64 = 56;

fn oid(i: u64) -> ObjectId {
    ObjectId::new(1 << 48 | 1, i * BLOCK as u64)
}

/// The simulated disks, with journal sector writes held back while `holding`: they count as
/// in flight and reach the disks only when the test releases them, in the order they came.
struct Holding {
    inner: SimEngine,
    /// Journal sectors (the area after its header block): `(first byte, end)`.
    sectors: (u64, u64),
    holding: bool,
    held: VecDeque<IoReq>,
}

impl Holding {
    fn release_one(&mut self) -> bool {
        match self.held.pop_front() {
            // SAFETY: the store keeps the buffer alive while the write is in flight, and to
            // the store a held write is in flight.
            Some(req) => unsafe {
                self.inner.push(req);
                true
            },
            None => false,
        }
    }
}

impl IoEngine for Holding {
    unsafe fn push(&mut self, req: IoReq) {
        let (from, to) = self.sectors;
        if self.holding && req.kind == IoKind::Write && req.offset >= from && req.offset < to {
            self.held.push_back(req);
        } else {
            // SAFETY: forwarded unchanged; our caller upholds the buffer contract.
            unsafe { self.inner.push(req) }
        }
    }
    fn submit(&mut self) -> std::io::Result<()> {
        self.inner.submit()
    }
    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        self.inner.reap(out)
    }
    /// A blocking wait with only held writes in flight would never return: they complete.
    /// (The test turns the store without blocking; this is for the store's `Drop`.)
    fn wait(&mut self) -> std::io::Result<()> {
        if self.inner.in_flight() == 0 {
            while self.release_one() {}
        }
        self.inner.wait()
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.held.len()
    }
    vitastor_blockstore::forward_device_access!(inner);
}

/// One loop turn: device completions in, the store advanced, its I/O out.
fn turn(bs: &mut Blockstore<Holding>, done: &mut Vec<u64>) {
    bs.poll(false).unwrap();
    bs.run();
    let mut out = Vec::new();
    bs.take_completions(&mut out);
    for c in out {
        assert!(c.result.is_ok(), "op {}: {:?}", c.id, c.result);
        done.push(c.id);
    }
}

fn stabilize_acknowledged_after_all_its_records(seed: u64) {
    let mut c = small_cfg(BLOCK, 192 * 1024);
    c.immediate_commit = ImmediateCommit::None;
    let (_, devs) = device_paths(&c);
    let disks = sim_disks(&c, 32 << 20);
    let mut bs = Blockstore::open_with(
        Holding {
            inner: SimEngine::new(disks, seed),
            sectors: (0, 0),
            holding: false,
            held: VecDeque::new(),
        },
        devs,
        &c,
    )
    .unwrap();
    let j = bs.layout().journal;
    let jbs = bs.layout().journal_block_size as u64;
    bs.engine_mut().sectors = (j.offset + jbs, j.offset + j.size);

    let mut versions = Vec::new();
    for i in 0..OWN + SHARED {
        let op = BsOp::Write {
            oid: oid(i),
            version: 0,
            offset: 0,
            data: write_buf(i + 1, 0, BLOCK / GRAN),
            bitmap: None,
            stable: false,
        };
        match bs.exec(op).unwrap() {
            BsReply::Written { version, .. } => versions.push(ObjVerId::new(oid(i), version)),
            other => panic!("write {i}: {other:?}"),
        }
    }
    bs.exec(BsOp::Sync).unwrap();
    bs.wait_idle().unwrap();
    let (own, shared) = versions.split_at(OWN as usize);

    // Room for records, give or take the rest of the open sector: the stabilizes of the shared
    // versions leave the one under test room for all its own records and about half of the
    // shared ones, so that it waits for room with only shared versions left.
    let per_sector = jbs / RECORD;
    let room = bs.journal_free() / jbs * per_sector;
    let takers = (room - OWN - SHARED / 2) / SHARED;
    assert!(takers >= 1, "journal room for {room} records only");
    let mut list = own.to_vec();
    list.extend_from_slice(shared);

    bs.engine_mut().holding = true;
    let taker_ids: Vec<u64> = (0..takers)
        .map(|_| bs.submit(BsOp::Stabilize(shared.to_vec())))
        .collect();
    let id = bs.submit(BsOp::Stabilize(list));
    let mut done = Vec::new();
    turn(&mut bs, &mut done);
    assert!(
        bs.journal_free() < jbs,
        "the stabilize under test found room for all its records ({} bytes free)",
        bs.journal_free()
    );
    // Let the journal writes through one by one until the other stabilizes are done; what is
    // still held then holds the stabilize's own records (after theirs in the journal).
    let mut rounds = 0;
    let mut acked_while_holding = false;
    while !done.contains(&id) {
        rounds += 1;
        assert!(rounds < 100_000, "stuck: {}", bs.debug_state());
        let takers_done = taker_ids.iter().all(|t| done.contains(t));
        if bs.engine_mut().inner.in_flight() == 0 {
            // Nothing else can move: once the other stabilizes are done, a correct store is
            // waiting for the held records; let one through.
            let e = bs.engine_mut();
            if takers_done {
                e.holding = false;
            }
            assert!(
                e.release_one() || !e.holding,
                "nothing held, nothing in flight"
            );
        }
        turn(&mut bs, &mut done);
        if done.contains(&id) {
            acked_while_holding = !bs.engine_mut().held.is_empty();
        }
    }
    // The power goes at the acknowledgement: held writes never reached the device.
    let disks: Vec<SimDisk> = bs.engine_mut().inner.power_loss(seed);
    drop(bs);
    let mut bs = open_sim(&c, disks, seed);
    let BsReply::List { unstable, .. } = bs.exec(BsOp::List(ListFilter::default())).unwrap() else {
        panic!("list reply")
    };
    assert!(
        unstable.is_empty(),
        "seed {seed}: acknowledged stabilize lost {} of its versions (acknowledged while its \
         journal writes were held: {acked_while_holding}), e.g. {:?}",
        unstable.len(),
        unstable.first()
    );
}

#[test]
fn a_stabilize_that_waited_for_room_is_acknowledged_only_once_all_its_records_are_durable() {
    for seed in 0..4 {
        stabilize_acknowledged_after_all_its_records(seed);
    }
}
