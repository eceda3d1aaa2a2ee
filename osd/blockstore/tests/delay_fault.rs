//! The `delay` device fault (a slow or hung disk, issue #16): a held I/O counts as in flight,
//! reaches the device only after its delay, and then completes normally — with the simulated
//! disks (whose blocking wait must sleep through the hold rather than find nothing to wait
//! for) and with io_uring on a real file.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vitastor_blockstore::{Blockstore, BsOp, FaultPlan, ImmediateCommit, ObjectId};

const BLOCK: u32 = 131072;

fn write(n: u64) -> BsOp {
    stable_write(
        ObjectId::new(1 << 48 | 5, n * BLOCK as u64),
        n,
        0,
        BLOCK / GRAN,
    )
}

fn check<E: vitastor_blockstore::IoEngine>(bs: &mut Blockstore<E>) {
    let plan: FaultPlan = "write:delay:ms=300,count=1;fsync:delay:ms=200,count=1"
        .parse()
        .unwrap();
    bs.set_fault_plan(Some(plan));
    let start = Instant::now();
    bs.exec(write(1)).expect("a delayed write completes");
    // A lower bound only: the write cannot finish before its held I/O reached the device.
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(bs.fault_plan().unwrap().fired(), 2);
    bs.set_fault_plan(None);
    let (_, data) = read_all(bs, ObjectId::new(1 << 48 | 5, BLOCK as u64));
    assert_eq!(decode_pattern(&data[..GRAN as usize], 0), Some(1));
}

#[test]
fn a_delayed_write_waits_then_completes_on_simulated_disks() {
    let mut c = small_cfg(BLOCK, 1 << 20);
    c.immediate_commit = ImmediateCommit::All;
    let mut bs = open_sim(&c, sim_disks(&c, 8 << 20), 3);
    check(&mut bs);
}

#[test]
fn a_delayed_write_waits_then_completes_with_io_uring() {
    let dir = tempfile::tempdir().unwrap();
    let c = prepared_file(&dir.path().join("osd.img"), BLOCK);
    let mut bs = Blockstore::open(&c).unwrap();
    check(&mut bs);
}
