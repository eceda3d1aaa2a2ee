//! The monitor with real OSDs (issue #5): a pool becomes active with no hand-written
//! `pg/config`; an OSD killed with a short `osd_out_time` is taken out, its PGs re-placed and
//! recovered to clean with the data intact; when the master monitor is killed another takes
//! over and places the returning OSD again.
//!
//! The OSD binaries (`vitastor-osd`, `vitastor-disk`) come from this workspace's target
//! directory; testkit rebuilds them first when missing or stale.

use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;
use vitastor_testkit::{Cluster, ClusterOptions, TestClient};

const INODE: u64 = (1 << 48) | 7;
const OBJ: u64 = 128 << 10;
const WAIT: Duration = Duration::from_secs(90);

fn block(o: u64, generation: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (o as u8) ^ (i as u8).wrapping_mul(13) ^ generation)
        .collect()
}

fn sets(cl: &Cluster) -> Vec<Vec<u64>> {
    let kvs = cl.get_prefix("pg/config").unwrap();
    let Some((_, v)) = kvs.into_iter().find(|(k, _)| k == "pg/config") else {
        return Vec::new();
    };
    let Some(pgs) = v["items"]["1"].as_object() else {
        return Vec::new();
    };
    let mut out: Vec<(u32, Vec<u64>)> = pgs
        .iter()
        .map(|(k, p)| {
            let set = p["osd_set"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            (k.parse().unwrap(), set)
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, s)| s).collect()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(200));
    }
}

fn master(cl: &Cluster) -> Option<Value> {
    cl.get_prefix("mon/master")
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "mon/master")
        .map(|(_, v)| v)
}

fn verify(cl: &Cluster, objects: u64, generation: u8) {
    let mut c = TestClient::new(cl);
    let placed = sets(cl);
    for o in 0..objects {
        let data = c.read(INODE, o * OBJ, 4096).expect("read");
        assert!(data == block(o, generation), "object {o}: wrong data");
        let pg = c.pg_of(o * OBJ) as usize;
        for &osd in &placed[pg - 1] {
            let (version, replica) = c.read_replica(osd, INODE, o * OBJ).expect("replica");
            assert!(version > 0, "object {o} missing on osd.{osd}");
            assert!(
                replica[..4096] == block(o, generation),
                "object {o} differs on osd.{osd}"
            );
        }
    }
}

#[test]
fn monitor_places_recovers_and_fails_over() {
    let mut o = ClusterOptions::from_workspace();
    o.osds = 4;
    o.pg_size = 2;
    o.pg_count = 16;
    o.osd_size = 256 << 20;
    o.monitors = 1;
    o.mon_args = vec!["--osd_out_time".into(), "3".into()];
    if let Ok(dir) = std::env::var("VITASTOR_TEST_DIR") {
        let dir = PathBuf::from(dir).join(format!("mon-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        o.dir = Some(dir);
    }
    // Active with no hand-written pg/config: the monitor placed every PG.
    let mut cl = Cluster::start(o).expect("cluster with a monitor");
    let first = sets(&cl);
    assert_eq!(first.len(), 16);
    assert!(first
        .iter()
        .all(|s| s.len() == 2 && s[0] != s[1] && !s.contains(&0)));
    let first_master = master(&cl).expect("a master monitor");
    cl.start_monitor().unwrap();

    let mut c = TestClient::new(&cl);
    for o in 0..32u64 {
        c.write(INODE, o * OBJ, &block(o, 1)).expect("write");
    }

    // OSD 4 dies: after its lease and osd_out_time it is out of every set, and recovery
    // brings every PG back to clean on the remaining OSDs.
    cl.kill_osd(4);
    wait_until("osd.4 out of pg/config", || {
        let s = sets(&cl);
        s.len() == 16 && s.iter().all(|set| !set.contains(&4) && !set.contains(&0))
    });
    cl.wait_clean(WAIT).expect("clean after re-placement");
    verify(&cl, 32, 1);

    // The master monitor dies; the other takes over, and places osd.4 again when it returns.
    cl.kill_monitor(0);
    wait_until("a new master", || {
        master(&cl).is_some_and(|m| m["id"] != first_master["id"])
    });
    cl.start_osd(4).unwrap();
    wait_until("osd.4 placed again", || {
        sets(&cl).iter().any(|s| s.contains(&4))
    });
    cl.wait_clean(WAIT).expect("clean after osd.4 returns");
    verify(&cl, 32, 1);
}
