//! `space_by_inode`, the raw bytes per image an OSD reports in `osd/space`: one block per
//! object whose newest stable version holds data, whether or not it was flushed yet (the
//! flusher waits for a batch, and a report that waited for it would show a freshly written
//! image as empty); unstable versions and stable deletions do not count.

mod common;

use common::*;
use vitastor_blockstore::{BsOp, ObjVerId, ObjectId};

const BLOCK: u32 = 16384;

fn oid(inode: u64, n: u64) -> ObjectId {
    ObjectId::new(1 << 48 | inode, n * BLOCK as u64)
}

fn space(
    bs: &vitastor_blockstore::Blockstore<vitastor_blockstore::simdisk::SimEngine>,
) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = bs
        .space_by_inode()
        .into_iter()
        .filter(|&(_, b)| b > 0)
        .collect();
    v.sort();
    v
}

#[test]
fn counts_stable_objects_before_and_after_the_flush() {
    let cfg = small_cfg(BLOCK, 256 * 1024);
    let mut bs = open_sim(&cfg, sim_disks(&cfg, 2 << 20), 1);
    let b = BLOCK as u64;
    // Fewer objects than `flusher_batch`: nothing is flushed on its own.
    bs.exec(stable_write(oid(1, 0), 1, 0, 1)).unwrap();
    bs.exec(stable_write(oid(1, 1), 2, 1, 2)).unwrap();
    bs.exec(stable_write(oid(2, 0), 3, 0, 1)).unwrap();
    bs.exec(BsOp::Sync).unwrap();
    assert_eq!(space(&bs), vec![(1 << 48 | 1, 2 * b), (1 << 48 | 2, b)]);

    // An unstable part write (as an EC primary sends first) counts once stabilized.
    let unstable = oid(2, 1);
    let mut w = stable_write(unstable, 4, 0, 1);
    if let BsOp::Write { stable, .. } = &mut w {
        *stable = false;
    }
    bs.exec(w).unwrap();
    assert_eq!(space(&bs), vec![(1 << 48 | 1, 2 * b), (1 << 48 | 2, b)]);
    bs.exec(BsOp::Sync).unwrap();
    bs.exec(BsOp::Stabilize(vec![ObjVerId {
        oid: unstable,
        version: 1,
    }]))
    .unwrap();
    assert_eq!(space(&bs), vec![(1 << 48 | 1, 2 * b), (1 << 48 | 2, 2 * b)]);

    // A stable deletion frees its object, flushed or not.
    bs.exec(BsOp::Delete {
        oid: oid(1, 1),
        version: 0,
        stable: true,
    })
    .unwrap();
    assert_eq!(space(&bs), vec![(1 << 48 | 1, b), (1 << 48 | 2, 2 * b)]);

    bs.exec(BsOp::Sync).unwrap();
    bs.flush_all().unwrap();
    assert_eq!(bs.dirty_count(), 0, "everything flushed");
    assert_eq!(space(&bs), vec![(1 << 48 | 1, b), (1 << 48 | 2, 2 * b)]);
}
