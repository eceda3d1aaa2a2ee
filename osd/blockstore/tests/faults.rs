//! Injected device faults through the blockstore API: every fault kind reaches the operation
//! that caused it, the store never reports success for I/O that failed, short transfers are
//! completed (or failed) rather than taken for whole ones, and after any fault a reopened
//! store still holds every acknowledged write. Mostly on simulated disks; the io_uring engine
//! gets the same faults on a real file.

mod common;

use common::workload::{verify, Checker, Workload};
use common::*;
use rand::{Rng, SeedableRng};
use vitastor_blockstore::simdisk::{SimDisk, SimEngine};
use vitastor_blockstore::{
    Blockstore, BlockstoreConfig, BsError, BsOp, FaultPlan, ImmediateCommit, ObjectId,
};

const BLOCK: u32 = 131072;

fn cfg() -> BlockstoreConfig {
    let mut c = small_cfg(BLOCK, 1 << 20);
    c.immediate_commit = ImmediateCommit::All;
    c
}

fn oid(n: u64) -> ObjectId {
    ObjectId::new(1 << 48 | 5, n * BLOCK as u64)
}

fn plan(text: &str) -> Option<FaultPlan> {
    Some(text.parse().expect("plan"))
}

fn big_write(id: u64) -> BsOp {
    BsOp::Write {
        oid: oid(id),
        version: 0,
        offset: 0,
        data: write_buf(id, 0, BLOCK / GRAN),
        bitmap: None,
        stable: true,
    }
}

/// A journaled write of granule 1 (the object must already exist).
fn small_write(obj: u64, id: u64) -> BsOp {
    BsOp::Write {
        oid: oid(obj),
        version: 0,
        offset: GRAN,
        data: write_buf(id, 1, 1),
        bitmap: None,
        stable: true,
    }
}

/// Which write produced each granule of an object.
fn writers<E: vitastor_blockstore::IoEngine>(bs: &mut Blockstore<E>, obj: u64) -> Vec<u64> {
    let (_, data) = read_all(bs, oid(obj));
    (0..BLOCK / GRAN)
        .map(|g| {
            decode_pattern(&data[(g * GRAN) as usize..((g + 1) * GRAN) as usize], g)
                .unwrap_or_else(|| panic!("object {obj} granule {g}: garbage"))
        })
        .collect()
}

fn expect_full(bs: &mut Blockstore<SimEngine>, obj: u64, id: u64, small: Option<u64>) {
    expect_object(bs, obj, id, &[small.unwrap_or(id)]);
}

/// Object `obj` holds write `id` everywhere but in granule 1, which holds one of `granule1`.
fn expect_object(bs: &mut Blockstore<SimEngine>, obj: u64, id: u64, granule1: &[u64]) {
    let w = writers(bs, obj);
    for (g, &got) in w.iter().enumerate() {
        let ok = if g == 1 {
            granule1.contains(&got)
        } else {
            got == id
        };
        assert!(ok, "object {obj} granule {g}: {w:?}");
    }
}

/// A store with objects 1..=3 written whole and acknowledged (durably: immediate_commit all).
fn populated() -> Blockstore<SimEngine> {
    let cfg = cfg();
    let mut bs = open_sim(&cfg, sim_disks(&cfg, 8 << 20), 3);
    for i in 1..=3 {
        bs.exec(big_write(i)).unwrap();
    }
    bs
}

/// Every power-loss outcome of `bs`'s disks (and the clean one), reopened without faults,
/// shows objects 1..=3 as acknowledged, `extra` objects included. `unacked` is a small write
/// `(object, id)` that failed: it may or may not be there.
fn check_after_power_loss(
    bs: &mut Blockstore<SimEngine>,
    extra: &[(u64, u64, Option<u64>)],
    unacked: Option<(u64, u64)>,
) {
    let mut outcomes: Vec<Vec<SimDisk>> = vec![bs.engine_mut().power_loss_none()];
    for seed in 0..8 {
        outcomes.push(bs.engine_mut().power_loss(seed));
    }
    for disks in outcomes {
        let mut re = open_sim(&cfg(), disks, 9);
        for i in 1..=3 {
            match unacked {
                Some((obj, id)) if obj == i => expect_object(&mut re, i, i, &[i, id]),
                _ if extra.iter().any(|e| e.0 == i) => {}
                _ => expect_full(&mut re, i, i, None),
            }
        }
        for &(obj, id, small) in extra {
            expect_full(&mut re, obj, id, small);
        }
    }
}

#[test]
fn short_writes_are_finished_before_the_ack() {
    let mut bs = populated();
    // Halves the redirect write (64 KiB of 128 KiB), and gives the journal's 4 KiB sector and
    // data writes nothing at first.
    bs.set_fault_plan(plan(
        "write:short:area=data,count=1;write:short:area=journal,count=2",
    ));
    bs.exec(big_write(4)).unwrap();
    bs.exec(small_write(4, 40)).unwrap();
    assert_eq!(bs.fault_plan().unwrap().fired(), 3);
    expect_full(&mut bs, 4, 4, Some(40));
    check_after_power_loss(&mut bs, &[(4, 4, Some(40))], None);
}

#[test]
fn short_reads_are_finished_before_the_reply() {
    let mut bs = populated();
    bs.flush_all().unwrap();
    bs.set_fault_plan(plan("read:short:count=2"));
    expect_full(&mut bs, 2, 2, None);
    assert_eq!(bs.fault_plan().unwrap().fired(), 2);
}

#[test]
fn a_write_that_stays_short_fails_with_eio() {
    let mut bs = populated();
    bs.set_fault_plan(plan("write:short:area=journal"));
    let e = bs.exec(small_write(1, 10)).unwrap_err();
    assert_eq!(e.errno(), -libc::EIO, "{e}");
    // Durability is no longer known: the store refuses writes until reopened.
    assert!(matches!(bs.exec(big_write(7)), Err(BsError::ReadOnly)));
    bs.set_fault_plan(None);
    check_after_power_loss(&mut bs, &[], Some((1, 10)));
}

#[test]
fn failed_writes_and_fsyncs_reach_the_operation_and_lose_nothing_acknowledged() {
    // (plan, whether the operation is a journaled write, errno the operation must get)
    let cases = [
        ("write:eio:area=data", false, libc::EIO),
        ("write:enospc:area=data", false, libc::ENOSPC),
        ("write:eio:area=journal", true, libc::EIO),
        ("write:enospc:area=journal", true, libc::ENOSPC),
        ("fsync:eio", false, libc::EIO),
        ("fsync:enospc:area=journal", true, libc::ENOSPC),
    ];
    for (text, small, errno) in cases {
        let mut bs = populated();
        bs.set_fault_plan(plan(text));
        let op = if small {
            small_write(2, 20)
        } else {
            big_write(5)
        };
        let e = bs.exec(op).expect_err(text);
        assert_eq!(e.errno(), -errno, "{text}: {e}");
        assert!(bs.fault_plan().unwrap().fired() > 0, "{text}");
        assert!(
            matches!(bs.exec(big_write(6)), Err(BsError::ReadOnly)),
            "{text}"
        );
        // The failed write may or may not be there after a restart; the others must be.
        check_after_power_loss(&mut bs, &[], Some((2, 20)));
    }
}

#[test]
fn a_sync_whose_fsync_fails_gets_the_error() {
    let mut c = cfg();
    c.immediate_commit = ImmediateCommit::None;
    let mut bs = open_sim(&c, sim_disks(&c, 8 << 20), 4);
    for i in 1..=3 {
        bs.exec(big_write(i)).unwrap();
    }
    bs.exec(BsOp::Sync).unwrap();
    bs.exec(small_write(2, 20)).unwrap();
    bs.exec(big_write(4)).unwrap();
    bs.set_fault_plan(plan("fsync:enospc"));
    let e = bs.exec(BsOp::Sync).unwrap_err();
    assert_eq!(e.errno(), -libc::ENOSPC, "{e}");
    assert!(matches!(bs.exec(BsOp::Sync), Err(BsError::ReadOnly)));
    // Nothing after the first SYNC was acknowledged as durable.
    check_after_power_loss(&mut bs, &[], Some((2, 20)));
}

#[test]
fn a_failed_read_fails_only_that_read() {
    let mut bs = populated();
    bs.flush_all().unwrap();
    bs.set_fault_plan(plan("read:eio:count=1"));
    let e = bs
        .exec(BsOp::Read {
            oid: oid(1),
            version: vitastor_blockstore::NEWEST,
            offset: 0,
            len: BLOCK,
        })
        .unwrap_err();
    assert_eq!(e.errno(), -libc::EIO);
    expect_full(&mut bs, 1, 1, None);
    bs.exec(big_write(4)).unwrap();
    expect_full(&mut bs, 4, 4, None);
}

#[test]
fn interrupted_waits_are_retried_and_failed_waits_are_errors() {
    let mut bs = populated();
    bs.set_fault_plan(plan("wait:eintr:count=3;wait:ebusy:after=3,count=2"));
    bs.exec(big_write(4)).unwrap();
    bs.wait_idle().unwrap();
    assert_eq!(bs.fault_plan().unwrap().fired(), 5);
    bs.set_fault_plan(plan("wait:eio"));
    bs.submit(big_write(5));
    bs.run();
    let e = bs.wait_idle().unwrap_err();
    assert_eq!(e.errno(), -libc::EIO, "{e}");
    bs.set_fault_plan(None);
    bs.wait_idle().unwrap();
    expect_full(&mut bs, 5, 5, None);
}

#[test]
fn the_plan_comes_from_the_options() {
    let mut m = serde_json::Map::new();
    m.insert("data_device".into(), "/sim/data".into());
    m.insert("block_size".into(), BLOCK.into());
    m.insert("journal_size".into(), (1u64 << 20).into());
    m.insert("immediate_commit".into(), "all".into());
    m.insert("inject_faults".into(), "write:eio:area=data,after=1".into());
    let c = BlockstoreConfig::from_map(&m).unwrap();
    let mut bs = open_sim(&c, sim_disks(&c, 8 << 20), 1);
    bs.exec(big_write(1)).unwrap();
    assert!(bs.exec(big_write(2)).is_err());
    assert_eq!(bs.fault_plan().unwrap().fired(), 1);
}

/// Random workloads, each round under a random fault plan, then a power loss; every round
/// reopens without faults and checks every durable write.
#[test]
fn random_faults_lose_nothing_acknowledged() {
    const OBJECTS: u64 = 16;
    let block = 32768;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let mut fired = 0;
    for mode in [ImmediateCommit::All, ImmediateCommit::None] {
        let mut c = small_cfg(block, 256 * 1024);
        c.immediate_commit = mode;
        let mut disks = sim_disks(&c, 3 << 20);
        let mut checker = Checker::new(mode == ImmediateCommit::All);
        let mut next_id = 1;
        for round in 0..150 {
            // Without the in-memory copy the flusher reads metadata blocks, so reads can fail.
            c.inmemory_metadata = rng.gen_bool(0.5);
            let mut bs = open_sim(&c, disks, rng.gen());
            verify(&mut bs, &mut checker, OBJECTS, block)
                .unwrap_or_else(|e| panic!("{mode:?} round {round}: {e}"));
            checker.next_round();
            let (target, fault) = [
                ("read", "eio"),
                ("read", "enospc"),
                ("read", "short"),
                ("write", "eio"),
                ("write", "enospc"),
                ("write", "short"),
                ("fsync", "eio"),
                ("fsync", "enospc"),
            ][rng.gen_range(0..8)];
            let area = ["data", "meta", "journal"][rng.gen_range(0..3)];
            let text = format!(
                "{target}:{fault}:area={area},after={},count={}",
                rng.gen_range(0..120),
                rng.gen_range(1..4)
            );
            bs.set_fault_plan(plan(&text));
            let mut w = Workload::new(OBJECTS, block, rng.gen_range(1..16), rng.gen(), next_id);
            w.device_errors_ok = true;
            w.run(&mut bs, Some(rng.gen_range(50..300)), &mut |e| {
                checker.feed(&e)
            });
            next_id = w.next_id;
            fired += bs.fault_plan().unwrap().fired();
            disks = bs.engine_mut().power_loss(rng.gen());
        }
    }
    eprintln!("{fired} faults injected");
    assert!(fired > 100, "only {fired} faults injected");
}

#[test]
fn io_uring_engine_gets_the_same_faults() {
    let dir = tempfile::tempdir().unwrap();
    let c = prepared_file(&dir.path().join("osd.img"), BLOCK);
    {
        let mut bs = Blockstore::open(&c).unwrap();
        bs.set_fault_plan(plan("write:short:count=4;read:short:count=2"));
        bs.exec(big_write(1)).unwrap();
        bs.exec(small_write(1, 10)).unwrap();
        bs.flush_all().unwrap();
        let w = writers(&mut bs, 1);
        assert_eq!(bs.fault_plan().unwrap().fired(), 6);
        assert!(
            w.iter()
                .enumerate()
                .all(|(g, &x)| x == if g == 1 { 10 } else { 1 }),
            "{w:?}"
        );
        bs.set_fault_plan(plan("read:enospc:count=1"));
        assert!(matches!(
            bs.exec(BsOp::Read {
                oid: oid(1),
                version: vitastor_blockstore::NEWEST,
                offset: 0,
                len: GRAN,
            }),
            Err(BsError::DeviceIo(libc::ENOSPC))
        ));
        bs.set_fault_plan(plan("write:eio:area=journal"));
        let e = bs.exec(small_write(1, 11)).unwrap_err();
        assert_eq!(e.errno(), -libc::EIO);
    }
    let mut bs = Blockstore::open(&c).unwrap();
    let w = writers(&mut bs, 1);
    assert!(
        w.iter()
            .enumerate()
            .all(|(g, &x)| x == if g == 1 { 10 } else { 1 }),
        "{w:?}"
    );
}
