//! A cluster that runs out of space (issue #11), with real etcd and real `vitastor-osd`
//! processes: a client fills 3 OSDs (pool pg_size 2) until writes fail with ENOSPC; every
//! acknowledged byte must read back, deletes must work on the full cluster and free room for
//! new writes, and the PGs must stay active instead of peering again and again (counted from
//! the OSDs' logs: one "active on" line per peering round).

mod common;

use std::time::Duration;

use common::{INODE, OBJ};
use vitastor_testkit::{Cluster, TestClient};

const ENOSPC: i64 = -28;
const PG_COUNT: u32 = 8;

/// One object's worth of bytes, distinct per object and generation.
fn object_data(o: u64, generation: u8) -> Vec<u8> {
    (0..OBJ as u32)
        .map(|i| (o as u8) ^ (i as u8).wrapping_mul(13) ^ ((i >> 12) as u8) ^ generation)
        .collect()
}

/// Peering rounds that ended with an active PG, over every OSD's log.
fn peering_rounds(cl: &Cluster) -> usize {
    (1..=cl.osds.len())
        .map(|n| {
            cl.osd_log(n as u64)
                .lines()
                .filter(|l| l.contains(": active on "))
                .count()
        })
        .sum()
}

#[test]
fn a_full_cluster_serves_reads_and_deletes_and_does_not_peer_in_a_loop() {
    let mut o = common::rep2_options("full", 3, PG_COUNT);
    // About 30 MiB of data blocks per OSD beside the default 32 MiB journal.
    o.osd_size = 64 << 20;
    let cl = Cluster::start(o).expect("cluster starts");
    let mut c = TestClient::new(&cl);
    c.retry_for = Duration::from_secs(30);
    let initial = peering_rounds(&cl);

    let mut acked = Vec::new();
    let mut refused = 0;
    for o in 0..4096u64 {
        match c.write(INODE, o * OBJ, &object_data(o, 1)) {
            Ok(_) => acked.push(o),
            Err(ENOSPC) => {
                refused += 1;
                // Keep going a little: every OSD and most PGs meet the full disks.
                if refused == 32 {
                    break;
                }
            }
            Err(e) => panic!("write of object {o}: unexpected error {e}"),
        }
    }
    assert_eq!(refused, 32, "the cluster never filled up");
    assert!(acked.len() > 100, "only {} writes succeeded", acked.len());

    eprintln!(
        "filled: {} objects acknowledged, {refused} refused",
        acked.len()
    );
    // Everything acknowledged reads back, with the disks full.
    for &o in &acked {
        let got = c
            .read(INODE, o * OBJ, OBJ as u32)
            .expect("read on a full cluster");
        assert!(got == object_data(o, 1), "object {o} differs");
    }
    eprintln!("read back");
    // Deletes work on full disks and make room.
    for &o in &acked {
        c.delete(INODE, o * OBJ).expect("delete on a full cluster");
    }
    eprintln!("deleted");
    for o in 0..64u64 {
        if let Err(e) = c.write(INODE, o * OBJ, &object_data(o, 2)) {
            panic!("write of object {o} after the deletes: {e}");
        }
    }
    for o in 0..64u64 {
        let got = c.read(INODE, o * OBJ, OBJ as u32).expect("read back");
        assert!(got == object_data(o, 2), "object {o} differs after rewrite");
    }
    cl.wait_active(Duration::from_secs(30))
        .expect("every PG active");
    // A failed copy is retried with a backoff, not by peering again: a handful of rounds
    // at most (an OSD reconnecting may re-peer a PG once), never one per failed attempt.
    let rounds = peering_rounds(&cl) - initial;
    assert!(
        rounds <= PG_COUNT as usize,
        "{rounds} peering rounds while full (logs in {})",
        cl.dir().display()
    );
}
