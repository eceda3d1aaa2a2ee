//! A stuck OSD and failing devices under fio `-verify` (issue #16, scenarios 5 and 6): clients
//! pause, never lose a write, and see only the errors the fault is allowed to cause.
//!
//! - `stuck osd`: a random OSD (primaries included) SIGSTOPped for 30 s (cut at the
//!   scenario's end), then continued; its peers drop it after `osd_ping_timeout`, clients
//!   after `client_op_timeout`, the monitor moves its PGs once its lease expires. Continued
//!   past its lease, a former primary executes nothing that waited in its sockets (it stops
//!   its PGs at the lease's deadline by its own clock) and rejoins.
//! - `device eio`: a random OSD restarted with a device that fails one write or fsync with
//!   EIO; it must stop by itself (its PGs move), and it is started again without the fault.
//! - `device enospc`: a random OSD's device fails a write with ENOSPC: the OSD stays up and
//!   its ops fail with a clean ENOSPC/EROFS (fio runs ended by that are expected, nothing else
//!   is), until it is restarted without the fault; every fault ends at least 15 s before the
//!   scenario does, so the final verify pass checks runs that completed.
//! - `slow device`: a random OSD's device holds a share of writes and fsyncs 20–300 ms for
//!   5–15 s, then it is restarted without the fault.
//!
//! Each prints one `FAULTS` line. Only processes the test started are signalled or killed
//! (by PID, through testkit's handles); a stopped OSD is continued on every path.

use std::process::Command;
use std::time::{Duration, Instant};

use rand::Rng;
use vitastor_faults::duration::fault_time;
use vitastor_faults::scenario::{cluster, pause_until, restart_osd_with_faults, Run};
use vitastor_testkit::Cluster;

/// How long a stuck OSD stays stopped.
const STOPPED: Duration = Duration::from_secs(30);
/// A liveness bound for an OSD to stop by itself after its device failed.
const EXIT_WAIT: Duration = Duration::from_secs(30);

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// An OSD process this test stopped; continued when dropped, also on a failed assertion.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal(pid, "-STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn osd_pid(cluster: &Cluster, osd: u64) -> u32 {
    cluster
        .osd_pids()
        .into_iter()
        .find_map(|(o, pid)| (o == osd).then_some(pid))
        .expect("the OSD's PID")
}

#[test]
fn stuck_osd() {
    const SCENARIO: &str = "stuck osd (SIGSTOP 30 s)";
    let mut run = Run::start(SCENARIO, cluster(3, 2, 1));
    while run.pause(3.0..6.0) {
        let osd = run.rng.gen_range(1..=3);
        let stopped = Stopped::new(osd_pid(&run.cluster, osd));
        run.faults += 1;
        let left = run.deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(STOPPED.min(left.max(Duration::from_secs(10))));
        drop(stopped);
    }
    run.verdict();
}

/// Waits until fewer than `before` OSDs run (one stopped by itself); false after the bound.
fn one_exits(cluster: &mut Cluster, before: usize) -> bool {
    let deadline = Instant::now() + EXIT_WAIT;
    while Instant::now() < deadline {
        if cluster.osds_running() < before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn device_eio() {
    const SCENARIO: &str = "device eio";
    let mut run = Run::start(SCENARIO, cluster(3, 2, 1));
    while run.pause(3.0..8.0) {
        let osd = run.rng.gen_range(1..=3);
        let target = if run.rng.gen_bool(0.5) {
            "write"
        } else {
            "fsync"
        };
        let plan = format!("{target}:eio:after={},count=1", run.rng.gen_range(10..200));
        println!("{SCENARIO}: osd.{osd} with {plan}");
        restart_osd_with_faults(&mut run.cluster, osd, Some(&plan));
        if one_exits(&mut run.cluster, 3) {
            run.faults += 1;
        } else {
            // An fsync fault needs fsyncs, which immediate_commit all may never issue.
            println!("{SCENARIO}: osd.{osd}'s fault did not fire in {EXIT_WAIT:?}");
        }
        restart_osd_with_faults(&mut run.cluster, osd, None);
    }
    run.verdict();
}

#[test]
fn device_enospc() {
    const SCENARIO: &str = "device enospc";
    let mut run = Run::start_for(
        SCENARIO,
        cluster(3, 2, 1),
        fault_time().max(Duration::from_secs(30)),
    );
    let last_fault = run.deadline - Duration::from_secs(15);
    while pause_until(&mut run.rng, 3.0..8.0, last_fault) {
        let osd = run.rng.gen_range(1..=3);
        let plan = format!("write:enospc:after={},count=1", run.rng.gen_range(10..200));
        println!("{SCENARIO}: osd.{osd} with {plan}");
        restart_osd_with_faults(&mut run.cluster, osd, Some(&plan));
        run.faults += 1;
        run.sleep(3.0..6.0);
        assert_eq!(run.cluster.osds_running(), 3, "an OSD stopped on ENOSPC");
        restart_osd_with_faults(&mut run.cluster, osd, None);
    }
    let left = run.deadline.saturating_duration_since(Instant::now());
    std::thread::sleep(left);
    run.verdict_allowing(|failure| {
        failure.contains("No space left on device") || failure.contains("Read-only file system")
    });
}

#[test]
fn slow_device() {
    const SCENARIO: &str = "slow device";
    let mut run = Run::start(SCENARIO, cluster(3, 2, 1));
    while run.pause(2.0..5.0) {
        let osd = run.rng.gen_range(1..=3);
        let seed: u64 = run.rng.gen();
        let plan = format!(
            "write:delay:ms={},prob=0.2,seed={seed};fsync:delay:ms={},prob=0.5,seed={seed}",
            run.rng.gen_range(20..300),
            run.rng.gen_range(20..300)
        );
        println!("{SCENARIO}: osd.{osd} with {plan}");
        restart_osd_with_faults(&mut run.cluster, osd, Some(&plan));
        run.faults += 1;
        run.pause(5.0..15.0);
        restart_osd_with_faults(&mut run.cluster, osd, None);
    }
    run.verdict();
}
