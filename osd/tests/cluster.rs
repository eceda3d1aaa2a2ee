//! Multi-OSD scenarios with real etcd and real `vitastor-osd` processes (issue #3): replicated
//! writes and reads, SYNC with lazy commit, an OSD killed during writes and recovered,
//! rebalancing after a `pg/config` change, two OSDs racing for one PG, deletes while an OSD is
//! down, and garbage on the OSD port.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{INODE, OBJ};
use serde_json::json;
use vitastor_testkit::{Cluster, TestClient};

const WAIT: Duration = Duration::from_secs(60);

fn cluster(osds: usize, pg_size: usize, commit: &str, pg_count: u32) -> Cluster {
    let mut o = common::options(&format!("cluster-{pg_size}-{commit}"));
    o.osds = osds;
    o.pg_size = pg_size;
    o.pg_count = pg_count;
    o.immediate_commit = commit.into();
    o.osd_size = 256 << 20;
    Cluster::start(o).expect("cluster starts")
}

/// A block of 4 KiB whose bytes depend on the object, the block and a generation.
fn pattern(offset: u64, generation: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (offset / 4096) as u8 ^ (i as u8).wrapping_mul(31) ^ generation.wrapping_mul(101))
        .collect()
}

/// Compares a block without printing 4 KiB of numbers on failure.
fn check_block(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: data differs (len {} vs {}, first difference at {first:?}, all zero: {})",
            got.len(),
            want.len(),
            got.iter().all(|&b| b == 0)
        );
    }
}

/// Writes one 4 KiB block into each of `objects` objects at a varying position.
fn write_objects(c: &mut TestClient, objects: u64, generation: u8) {
    for o in 0..objects {
        let off = o * OBJ + (o % 32) * 4096;
        c.write(INODE, off, &pattern(off, generation))
            .expect("write");
    }
}

fn verify_objects(c: &mut TestClient, objects: u64, generation: u8) {
    for o in 0..objects {
        let off = o * OBJ + (o % 32) * 4096;
        let data = c.read(INODE, off, 4096).expect("read");
        check_block(
            &data,
            &pattern(off, generation),
            &format!("object {o} generation {generation}"),
        );
    }
}

/// Every member of every PG's set holds the newest data of each object.
fn verify_replicas(c: &mut TestClient, sets: &[Vec<u64>], objects: u64, generation: u8) {
    for o in 0..objects {
        let off = o * OBJ + (o % 32) * 4096;
        let pg = c.pg_of(off) as usize;
        let in_obj = (off % OBJ) as usize;
        for &osd in &sets[pg - 1] {
            let (version, data) = c.read_replica(osd, INODE, o * OBJ).expect("replica read");
            assert!(version > 0, "object {o} missing on osd.{osd}");
            check_block(
                &data[in_obj..in_obj + 4096],
                &pattern(off, generation),
                &format!("object {o} on osd.{osd}"),
            );
        }
    }
}

#[test]
fn replicated_io_pg_size_2_and_3_with_and_without_immediate_commit() {
    for (pg_size, commit) in [(2, "all"), (3, "all"), (2, "none"), (3, "none")] {
        let cl = cluster(3, pg_size, commit, 16);
        let mut c = TestClient::new(&cl);
        write_objects(&mut c, 40, 1);
        if commit == "none" {
            c.sync_all().expect("sync");
        }
        verify_objects(&mut c, 40, 1);
        write_objects(&mut c, 40, 2);
        c.sync_all().expect("sync");
        verify_objects(&mut c, 40, 2);
        verify_replicas(&mut c, &cl.default_sets(), 40, 2);
        // Misaligned and cross-object requests are refused, not mangled.
        assert_eq!(c.write(INODE, 100, &[1u8; 4096]), Err(-22));
        assert_eq!(c.write(INODE, OBJ - 4096, &[1u8; 8192]), Err(-22));
    }
}

#[test]
fn killed_osd_degrades_then_recovers() {
    let mut cl = cluster(3, 2, "all", 16);
    let mut c = TestClient::new(&cl);
    write_objects(&mut c, 48, 1);
    let sets = cl.default_sets();
    // SIGKILL in the middle of a stream of writes: every write still completes (the client
    // retries while the PGs re-peer and, as the monitor would, primaries move off osd.3).
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let writer = {
        let mut c = TestClient::new(&cl);
        std::thread::spawn(move || {
            for o in 0..48u64 {
                if o == 12 {
                    started_tx.send(()).unwrap();
                }
                let off = o * OBJ + (o % 32) * 4096;
                c.write(INODE, off, &pattern(off, 2))
                    .expect("write during the kill");
            }
        })
    };
    started_rx.recv().unwrap();
    cl.kill_osd(3);
    cl.set_primaries(&sets, &[3]).unwrap();
    writer.join().expect("writer thread");
    verify_objects(&mut c, 48, 2);
    cl.wait_pgs(WAIT, "active and serving", |s| {
        s.iter().any(|n| n == "active")
    })
    .unwrap();
    let states = cl.pg_states().unwrap();
    assert!(
        states.iter().any(|(_, v)| v["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "degraded")),
        "some PG must report degraded: {states:?}"
    );
    cl.start_osd(3).unwrap();
    cl.set_primaries(&sets, &[]).unwrap();
    cl.wait_primaries(&sets, WAIT).unwrap();
    cl.wait_clean(WAIT).unwrap();
    let mut c = TestClient::new(&cl);
    verify_objects(&mut c, 48, 2);
    verify_replicas(&mut c, &cl.default_sets(), 48, 2);
}

#[test]
fn pg_config_change_rebalances_and_removes_old_copies() {
    let cl = cluster(4, 2, "all", 8);
    let mut c = TestClient::new(&cl);
    write_objects(&mut c, 32, 1);
    let old = cl.default_sets();
    // Move every PG to the OSDs it did not use.
    let new: Vec<Vec<u64>> = old
        .iter()
        .map(|s| (1..=4u64).filter(|o| !s.contains(o)).collect())
        .collect();
    // As the monitor does: the new sets and the history naming the old ones in one transaction.
    let mut kvs = vec![("pg/config".to_string(), Cluster::pg_config_json(&new))];
    for (pg, set) in old.iter().enumerate() {
        kvs.push((
            format!("pg/history/1/{}", pg + 1),
            json!({"osd_sets": [set], "all_peers": set}),
        ));
    }
    cl.put_json_atomic(&kvs).unwrap();
    cl.wait_primaries(&new, WAIT).unwrap();
    cl.wait_clean(WAIT).unwrap();
    let deadline = Instant::now() + WAIT;
    while !cl.get_prefix("pg/history/").unwrap().is_empty() {
        assert!(Instant::now() < deadline, "history not removed once clean");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = TestClient::new(&cl);
    verify_objects(&mut c, 32, 1);
    verify_replicas(&mut c, &new, 32, 1);
    for (pg, set) in old.iter().enumerate() {
        for &osd in set {
            let left = c.list_pg(osd, pg as u32 + 1).unwrap();
            assert!(
                left.is_empty(),
                "PG {} still has {left:?} on old osd.{osd}",
                pg + 1
            );
        }
    }
}

#[test]
fn racing_primaries_never_both_active() {
    let cl = cluster(3, 2, "all", 4);
    // Flip the primary of every PG back and forth quickly; at every observation each
    // PG has at most one pg/state, held by one OSD, and the I/O stays correct.
    let mut c = TestClient::new(&cl);
    write_objects(&mut c, 8, 1);
    let sets = cl.default_sets();
    for round in 0..6 {
        let mut pgs = serde_json::Map::new();
        for (i, set) in sets.iter().enumerate() {
            let primary = set[round % 2];
            pgs.insert(
                (i + 1).to_string(),
                json!({"osd_set": set, "primary": primary}),
            );
        }
        cl.put_json("pg/config", &json!({"items": {"1": pgs}}))
            .unwrap();
        for _ in 0..5 {
            let states = cl.pg_states().unwrap();
            let mut seen = std::collections::HashSet::new();
            for (pg, _) in &states {
                assert!(seen.insert(*pg), "two pg/state keys for PG {pg}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    cl.wait_active(WAIT).unwrap();
    // Every OSD that believes it is primary must be the one in pg/state: ask each OSD
    // directly; only the pg/state primary may accept I/O.
    for o in 0..4u64 {
        let off = o * OBJ;
        let pg = c.pg_of(off);
        let holder = cl
            .pg_states()
            .unwrap()
            .into_iter()
            .find(|(p, _)| *p == pg)
            .unwrap()
            .1["primary"]
            .as_u64()
            .unwrap();
        for osd in 1..=3u64 {
            let r = c.call(
                osd,
                vitastor_protocol::RequestOp::Read(vitastor_protocol::RwOp {
                    inode: INODE,
                    offset: off,
                    len: 4096,
                    ..Default::default()
                }),
                &[],
                &[],
            );
            let accepted = matches!(&r, Ok((reply, _)) if reply.retval >= 0);
            assert_eq!(
                accepted,
                osd == holder,
                "osd.{osd} serving PG {pg} held by osd.{holder}: {r:?}"
            );
        }
    }
    verify_objects(&mut c, 8, 1);
}

#[test]
fn delete_while_an_osd_is_down_stays_deleted() {
    let mut cl = cluster(3, 3, "all", 4);
    let mut c = TestClient::new(&cl);
    write_objects(&mut c, 8, 1);
    cl.kill_osd(2);
    let sets = cl.default_sets();
    cl.set_primaries(&sets, &[2]).unwrap();
    for o in 0..4u64 {
        c.delete(INODE, o * OBJ).expect("delete");
    }
    for o in 0..4u64 {
        check_block(
            &c.read(INODE, o * OBJ, 4096).unwrap(),
            &[0u8; 4096],
            &format!("object {o} after delete"),
        );
    }
    // osd.2 returns with the old copies: the primaries that took the deletes recover it and
    // then purge the tombstones they left, in the background once the PG is clean.
    cl.start_osd(2).unwrap();
    cl.wait_clean(WAIT).unwrap();
    for o in 0..4u64 {
        for osd in 1..=3u64 {
            let deadline = Instant::now() + WAIT;
            loop {
                let listed = c.list_pg(osd, c.pg_of(o * OBJ)).unwrap();
                if !listed.iter().any(|&(stripe, _)| stripe == o * OBJ) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "deleted object {o} still stored on osd.{osd}: {listed:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    // The PGs go back to their default primaries, osd.2 among them: nothing comes back.
    cl.set_primaries(&sets, &[]).unwrap();
    cl.wait_primaries(&sets, WAIT).unwrap();
    cl.wait_clean(WAIT).unwrap();
    let mut c = TestClient::new(&cl);
    for o in 0..8u64 {
        let off = o * OBJ + (o % 32) * 4096;
        let data = c.read(INODE, off, 4096).unwrap();
        if o < 4 {
            check_block(
                &data,
                &[0u8; 4096],
                &format!("deleted object {o} came back"),
            );
        } else {
            check_block(&data, &pattern(off, 1), &format!("object {o}"));
        }
    }
}

#[test]
fn garbage_on_the_port_closes_only_that_connection() {
    let cl = cluster(2, 2, "all", 2);
    let addr = cl.osds[0].addr.unwrap();
    let mut bad = TcpStream::connect(addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut junk = vec![0xA5u8; 4096];
    // An oversized length in an otherwise valid-looking header.
    junk[..8].copy_from_slice(&0x2bd7b10325434553u64.to_le_bytes());
    bad.write_all(&junk).unwrap();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match bad.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(_) => break true,
        }
    };
    assert!(closed);
    let mut c = TestClient::new(&cl);
    write_objects(&mut c, 4, 3);
    verify_objects(&mut c, 4, 3);
}

#[test]
fn etcd_outage_keeps_serving_until_the_lease_lapses() {
    let mut cl = cluster(3, 2, "all", 4);
    let mut c = TestClient::new(&cl);
    write_objects(&mut c, 8, 1);
    cl.etcd.stop().unwrap();
    // Within the lease TTL (10 s) the PGs keep serving: no etcd needed on the data path.
    write_objects(&mut c, 8, 2);
    verify_objects(&mut c, 8, 2);
    // Once the lease cannot be proven, every PG stops: I/O is refused, not served by a
    // primary etcd may already consider gone.
    c.retry_for = Duration::from_secs(1);
    let deadline = Instant::now() + WAIT;
    loop {
        let off = 4096;
        if c.write(INODE, off, &pattern(off, 2)).is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "PGs kept serving without etcd");
        std::thread::sleep(Duration::from_millis(500));
    }
    // etcd returns: the OSDs (still running) take their PGs again.
    cl.etcd.restart().unwrap();
    cl.wait_active(WAIT).unwrap();
    let mut c = TestClient::new(&cl);
    verify_objects(&mut c, 8, 2);
    write_objects(&mut c, 8, 3);
    verify_objects(&mut c, 8, 3);
    assert_eq!(cl.osds_running(), 3, "an OSD exited");
}

/// `osd/stats` counts as the original does: `op_stats` every op the OSD executed (a client's
/// `primary_write`, a peer's `write_stable`), `subop_stats` the sub-ops it sent to peers.
#[test]
fn stats_count_executed_ops_and_sent_subops() {
    let cl = cluster(2, 2, "all", 1);
    let primary = cl.default_sets()[0][0];
    let secondary = 3 - primary;
    let mut c = TestClient::new(&cl);
    write_objects(&mut c, 4, 1);
    let count = |stats: &serde_json::Value, group: &str, op: &str| {
        stats[group][op]["count"].as_u64().unwrap_or(0)
    };
    let deadline = Instant::now() + WAIT;
    let (p, s) = loop {
        let all = cl.get_prefix("osd/stats/").unwrap();
        let of = |osd: u64| {
            all.iter()
                .find(|(k, _)| *k == format!("osd/stats/{osd}"))
                .map(|(_, v)| v.clone())
        };
        if let (Some(p), Some(s)) = (of(primary), of(secondary)) {
            if count(&p, "op_stats", "primary_write") >= 4 {
                break (p, s);
            }
        }
        assert!(Instant::now() < deadline, "no osd/stats with the writes");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        count(&p, "subop_stats", "write_stable") >= 4,
        "primary sent: {p}"
    );
    assert_eq!(count(&p, "op_stats", "write_stable"), 0, "primary: {p}");
    assert!(
        count(&s, "op_stats", "write_stable") >= 4,
        "secondary executed: {s}"
    );
    assert_eq!(
        count(&s, "subop_stats", "write_stable"),
        0,
        "secondary: {s}"
    );
}
