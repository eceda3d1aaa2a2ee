//! A journal filled with unstable writes must not wedge: the space kept free for commit and
//! stabilize records lets the writer make every version durable and stable, after which the
//! flusher frees the journal and writes are accepted again. Covered for redirect writes (a
//! commit record each) and journaled 4 KiB writes (their data fills the journal), both sector
//! policies, one SYNC per write or one for all, one stabilize per version or one for all.

mod common;

use common::*;
use vitastor_blockstore::{BsError, BsOp, BsReply, ImmediateCommit, ObjVerId, ObjectId};

const BLOCK: u32 = 32768;

fn oid(i: u64) -> ObjectId {
    ObjectId::new(1 << 48 | 1, i * BLOCK as u64)
}

fn write(i: u64, id: u64, stable: bool) -> BsOp {
    BsOp::Write {
        oid: oid(i),
        version: 0,
        offset: 0,
        data: write_buf(id, 0, BLOCK / GRAN),
        bitmap: None,
        stable,
    }
}

/// Objects the journaled writes go to (created stable first).
const SMALL_OBJECTS: u64 = 8;

fn small_write(i: u64, id: u64) -> BsOp {
    let g = (i / SMALL_OBJECTS % (BLOCK / GRAN) as u64) as u32;
    BsOp::Write {
        oid: oid(i % SMALL_OBJECTS),
        version: 0,
        offset: g * GRAN,
        data: write_buf(id, g, 1),
        bitmap: None,
        stable: false,
    }
}

fn fill_then_commit(small: bool, nsso: bool, sync_each: bool, stabilize_each: bool) {
    let case = format!(
        "small={small} no_same_sector_overwrites={nsso} sync_each={sync_each} stabilize_each={stabilize_each}"
    );
    let mut c = small_cfg(BLOCK, 256 * 1024);
    c.immediate_commit = ImmediateCommit::None;
    c.journal_no_same_sector_overwrites = nsso;
    // A data area larger than the journal can describe: the journal is what fills.
    let mut bs = open_sim(&c, sim_disks(&c, 96 << 20), 1);
    if small {
        for i in 0..SMALL_OBJECTS {
            bs.exec(write(i, i + 1, true)).unwrap();
        }
        bs.exec(BsOp::Sync).unwrap();
    }
    let mut versions = Vec::new();
    for i in 0.. {
        let op = if small {
            small_write(i, 100 + i)
        } else {
            write(i, i + 1, false)
        };
        match bs.exec(op) {
            Ok(BsReply::Written { version, .. }) => {
                let o = if small { i % SMALL_OBJECTS } else { i };
                versions.push(ObjVerId::new(oid(o), version))
            }
            Err(BsError::NoSpace(_)) => break,
            other => panic!("{case}: write {i}: {other:?}"),
        }
        if sync_each {
            bs.exec(BsOp::Sync).unwrap();
        }
    }
    assert!(
        versions.len() > 10,
        "{case}: only {} writes fit",
        versions.len()
    );
    bs.exec(BsOp::Sync).unwrap();
    if stabilize_each {
        for ov in &versions {
            bs.exec(BsOp::Stabilize(vec![*ov])).unwrap();
        }
    } else {
        bs.exec(BsOp::Stabilize(versions.clone())).unwrap();
    }
    bs.wait_idle().unwrap();
    let n = versions.len() as u64;
    for i in 0..n {
        bs.exec(write(i, 10_000 + i, true)).unwrap();
    }
    bs.exec(BsOp::Sync).unwrap();
    for i in [0, n - 1] {
        let (_, data) = read_all(&mut bs, oid(i));
        assert_eq!(
            decode_pattern(&data[..GRAN as usize], 0),
            Some(10_000 + i),
            "{case}"
        );
    }
}

#[test]
fn a_journal_full_of_unstable_writes_can_still_be_committed() {
    for small in [false, true] {
        for nsso in [false, true] {
            for sync_each in [false, true] {
                for stabilize_each in [false, true] {
                    fill_then_commit(small, nsso, sync_each, stabilize_each);
                }
            }
        }
    }
}

/// Rollbacks that discard nothing (the OSD sends them when peering finds nothing to undo)
/// must not eat the journal space kept for the records that make writes stable.
#[test]
fn rollbacks_of_nothing_leave_room_for_stabilize() {
    let mut c = small_cfg(BLOCK, 256 * 1024);
    c.immediate_commit = ImmediateCommit::None;
    let mut bs = open_sim(&c, sim_disks(&c, 96 << 20), 1);
    let mut versions = Vec::new();
    for i in 0.. {
        match bs.exec(write(i, i + 1, false)) {
            Ok(BsReply::Written { version, .. }) => versions.push(ObjVerId::new(oid(i), version)),
            Err(BsError::NoSpace(_)) => break,
            other => panic!("write {i}: {other:?}"),
        }
    }
    bs.exec(BsOp::Sync).unwrap();
    let free = bs.journal_free();
    for _ in 0..20 {
        bs.exec(BsOp::Rollback(versions.clone())).unwrap();
    }
    assert_eq!(
        bs.journal_free(),
        free,
        "rollbacks of nothing took journal space"
    );
    bs.exec(BsOp::Stabilize(versions.clone())).unwrap();
    bs.wait_idle().unwrap();
    bs.exec(write(0, 5000, true)).unwrap();
}
