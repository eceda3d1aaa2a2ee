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

mod common;

use std::time::Duration;

use common::{block, INODE, OBJ};
use vitastor_testkit::{Cluster, TestClient};

const PG_COUNT: u32 = 4;
/// A liveness bound for the cluster's state changes, not a timing criterion.
const WAIT: Duration = Duration::from_secs(90);

fn cluster(name: &str) -> Cluster {
    let mut o = common::rep2_options(name, 2, PG_COUNT);
    o.osd_args = ["--osd_op_timeout", "3", "--peer_connect_interval", "3"]
        .map(String::from)
        .to_vec();
    Cluster::start(o).expect("cluster starts")
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
        common::assert_replicas(&mut c, &[1, 2], o, &block(o, round));
    }
}

#[test]
fn a_secondary_whose_disk_hangs_is_dropped_after_the_op_timeout() {
    let mut cl = cluster("hung-disk");
    let mut c = TestClient::new(&cl);
    c.retry_for = Duration::from_secs(60);
    let objects = objects_led_by_osd1(&c, 24);
    write_all(&mut c, &objects, 1);
    cl.kill_osd(2);
    common::start_with_faults(&mut cl, 2, Some("write:delay:ms=3600000"));
    cl.wait_active(WAIT)
        .expect("PGs active with OSD 2's disk hung");
    write_all(&mut c, &objects, 2);
    let log = cl.osd_log(1);
    assert!(
        log.contains("peer osd.2 lost") && log.contains("osd_op_timeout"),
        "OSD 1 never dropped OSD 2 for an op timeout; its log:\n{log}"
    );
    cl.kill_osd(2);
    common::start_with_faults(&mut cl, 2, None);
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
