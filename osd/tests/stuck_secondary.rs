//! A secondary that is alive but stuck must not hang client I/O (issue #16), with real etcd
//! and real `vitastor-osd` processes, no monitor (so nothing but the primary's own failure
//! detection can move on), rep2 with `pg_minsize` 1:
//!
//! - a hung disk: OSD 2's device holds every write for an hour (the `delay` fault), so it
//!   still answers PINGs but never a write. The primary drops it after `osd_op_timeout` and
//!   writes go on degraded (before sub-op timeouts they waited forever);
//! - a stopped process: OSD 2 is SIGSTOPped; writes go on while it stays stopped.
//!
//! In both cases OSD 2 comes back (restarted without the fault, or SIGCONT), every PG gets
//! clean again and both replicas hold every acknowledged write. Clients write only to the PGs
//! OSD 1 leads: OSD 2's own PGs have no other primary without a monitor.
//!
//! Only processes this test started are signalled, by PID; the cluster stops on drop.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vitastor_testkit::{Cluster, ClusterOptions, TestClient};

const INODE: u64 = (1 << 48) | 1;
const OBJ: u64 = 128 << 10;
const PG_COUNT: u32 = 4;
/// A liveness bound for the cluster's state changes, not a timing criterion.
const WAIT: Duration = Duration::from_secs(90);

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vitastor-osd"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn block(o: u64, round: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (o as u8).wrapping_mul(13) ^ (i as u8).wrapping_mul(31) ^ round)
        .collect()
}

fn cluster(name: &str) -> Cluster {
    let mut o = ClusterOptions::new(bin_dir());
    o.osds = 2;
    o.pg_size = 2;
    o.pg_minsize = Some(1);
    o.pg_count = PG_COUNT;
    o.osd_size = 256 << 20;
    o.osd_args = ["--osd_op_timeout", "3", "--peer_connect_interval", "3"]
        .map(String::from)
        .to_vec();
    if let Ok(dir) = std::env::var("VITASTOR_TEST_DIR") {
        let dir = PathBuf::from(dir).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        o.dir = Some(dir);
    }
    Cluster::start(o).expect("cluster starts")
}

/// Restarts OSD 2 with `plan` as its `inject_faults` (none for `None`).
fn restart_osd2(cl: &mut Cluster, plan: Option<&str>) {
    cl.kill_osd(2);
    let path = cl.osds[1].config.clone();
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let map = cfg.as_object_mut().expect("OSD config is a JSON object");
    match plan {
        Some(p) => map.insert("inject_faults".into(), Value::from(p)),
        None => map.remove("inject_faults"),
    };
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    cl.start_osd(2).expect("OSD 2 restarts");
}

/// Objects in PGs whose primary is OSD 1 (`default_sets`: odd PG numbers).
fn objects_led_by_osd1(c: &TestClient, n: u64) -> Vec<u64> {
    (0..)
        .filter(|o| c.pg_of(o * OBJ) % 2 == 1)
        .take(n as usize)
        .collect()
}

/// Writes every object (each must be acknowledged) and returns them.
fn write_all(c: &mut TestClient, objects: &[u64], round: u8) {
    for &o in objects {
        c.write(INODE, o * OBJ, &block(o, round))
            .unwrap_or_else(|e| panic!("write of object {o} while OSD 2 is stuck: {e}"));
    }
}

/// Once OSD 2 is back: clean PGs, and both replicas hold the last round of every object.
fn check_recovered(cl: &Cluster, objects: &[u64], round: u8) {
    cl.wait_clean(WAIT).expect("PGs clean once OSD 2 is back");
    let mut c = TestClient::new(cl);
    for &o in objects {
        assert!(
            c.read(INODE, o * OBJ, 4096).unwrap() == block(o, round),
            "object {o}"
        );
        for osd in [1, 2] {
            let (version, data) = c.read_replica(osd, INODE, o * OBJ).expect("replica read");
            assert!(version > 0, "object {o} missing on osd.{osd}");
            assert!(
                data[..4096] == block(o, round),
                "object {o} differs on osd.{osd}"
            );
        }
    }
}

fn osd_log(cl: &Cluster, osd: u64) -> String {
    std::fs::read_to_string(cl.dir().join(format!("osd{osd}.log"))).unwrap_or_default()
}

#[test]
fn a_secondary_whose_disk_hangs_is_dropped_after_the_op_timeout() {
    let mut cl = cluster("hung-disk");
    let mut c = TestClient::new(&cl);
    c.retry_for = Duration::from_secs(60);
    let objects = objects_led_by_osd1(&c, 24);
    write_all(&mut c, &objects, 1);
    restart_osd2(&mut cl, Some("write:delay:ms=3600000"));
    cl.wait_active(WAIT)
        .expect("PGs active with OSD 2's disk hung");
    write_all(&mut c, &objects, 2);
    let log = osd_log(&cl, 1);
    assert!(
        log.contains("peer osd.2 lost") && log.contains("osd_op_timeout"),
        "OSD 1 never dropped OSD 2 for an op timeout; its log:\n{log}"
    );
    restart_osd2(&mut cl, None);
    check_recovered(&cl, &objects, 2);
}

#[test]
fn a_stopped_secondary_does_not_hang_writes() {
    let cl = cluster("sigstop");
    let mut c = TestClient::new(&cl);
    c.retry_for = Duration::from_secs(60);
    let objects = objects_led_by_osd1(&c, 24);
    write_all(&mut c, &objects, 1);
    let pid = cl
        .osd_pids()
        .into_iter()
        .find_map(|(osd, pid)| (osd == 2).then_some(pid))
        .expect("OSD 2's PID");
    // SAFETY: kill(2) on the PID of an OSD this test's cluster started and still holds.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        write_all(&mut c, &objects, 2)
    }));
    // SAFETY: as above; continued even when the writes failed, so the cluster can stop.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) }, 0);
    if let Err(e) = written {
        std::panic::resume_unwind(e);
    }
    check_recovered(&cl, &objects, 2);
}
