//! Daemons SIGKILLed and restarted in a loop while fio writes with `-verify=crc32c` through
//! the fio engine (issue #16, scenarios 1–3): clients may pause, never lose a write.
//!
//! Each test runs `VITASTOR_FAULT_SECS` (30 s by default; `make test-faults` runs longer) and
//! prints one `FAULTS` line of figures. Only processes the test started are killed, through
//! testkit's handles; the cluster and fio are stopped on every path (drop).

use std::fs;

use rand::Rng;
use vitastor_testkit::Cluster;

use vitastor_faults::duration::kill_loop_time;
use vitastor_faults::scenario::{cluster, ec_cluster, kill_random_osd, restart_whole_cluster, Run};

/// A random OSD SIGKILLed every 5–15 s, started again 1–3 s later, for
/// `VITASTOR_KILL_LOOP_SECS` (else `VITASTOR_FAULT_SECS`).
fn osd_kill_loop(scenario: &'static str, cluster: Cluster) {
    let mut run = Run::start_for(scenario, cluster, kill_loop_time());
    while run.pause(5.0..15.0) {
        kill_random_osd(&mut run.cluster, &mut run.rng);
        run.faults += 1;
    }
    run.verdict();
}

#[test]
fn osd_kill_loop_rep2() {
    osd_kill_loop("osd-kill-loop rep2", cluster(3, 2, 1));
}

#[test]
fn osd_kill_loop_rep3() {
    osd_kill_loop("osd-kill-loop rep3", cluster(3, 3, 1));
}

#[test]
fn osd_kill_loop_ec_2_1() {
    osd_kill_loop("osd-kill-loop EC 2+1", ec_cluster(3, 2, 1, 1));
}

/// Every OSD, etcd and the monitor SIGKILLed together every 5–15 s, down 1–3 s, started
/// again in a random order.
#[test]
fn whole_cluster_restart() {
    const SCENARIO: &str = "whole-cluster restart";
    let mut run = Run::start(SCENARIO, cluster(3, 2, 1));
    let mut mon = 0;
    while run.pause(5.0..15.0) {
        mon = restart_whole_cluster(&mut run.cluster, &mut run.rng, mon, SCENARIO);
        run.faults += 1;
    }
    run.verdict();
}

/// etcd SIGKILLed every 5–15 s, started again 1–3 s later on the same ports and data.
#[test]
fn etcd_kill_loop() {
    let mut run = Run::start("etcd kill loop", cluster(3, 2, 1));
    while run.pause(5.0..15.0) {
        run.cluster.etcd.kill().expect("killing etcd");
        run.faults += 1;
        run.sleep(1.0..3.0);
        run.cluster.etcd.restart().expect("restarting etcd");
    }
    run.verdict();
}

/// The running monitor holding `mon/master`: the one whose log says it became master with
/// the lease `mon/master` names.
fn master_monitor(cluster: &Cluster, running: &[usize]) -> Option<usize> {
    let (_, master) = cluster
        .get_prefix("mon/master")
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "mon/master")?;
    let lease = master["id"].as_u64()?;
    let line = format!("became master (lease {lease:x})");
    running.iter().copied().find(|i| {
        fs::read_to_string(cluster.dir().join(format!("mon{i}.log")))
            .map(|log| log.contains(&line))
            .unwrap_or(false)
    })
}

/// Two monitors; every 5–15 s the master is SIGKILLed (and a random OSD with it, so the new
/// master has placement work) and a new monitor started, so two run again.
#[test]
fn monitor_master_kill_loop() {
    const SCENARIO: &str = "monitor master kill loop";
    let mut run = Run::start(SCENARIO, cluster(3, 2, 2));
    let mut running = vec![0, 1];
    while run.pause(5.0..15.0) {
        let Some(master) = master_monitor(&run.cluster, &running) else {
            println!("{SCENARIO}: no master at the moment; next round");
            continue;
        };
        run.cluster.kill_monitor(master);
        running.retain(|&i| i != master);
        let osd = run.rng.gen_range(1..=3);
        run.cluster.kill_osd(osd);
        run.faults += 1;
        running.push(run.cluster.start_monitor().expect("starting a monitor"));
        run.sleep(1.0..3.0);
        run.cluster.start_osd(osd).expect("restarting the OSD");
    }
    run.verdict();
}
