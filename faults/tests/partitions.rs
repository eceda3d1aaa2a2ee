//! Network partitions under fio `-verify` (issue #16, scenario 4): etcd and the monitor,
//! each OSD and the fio client run in their own network namespace on a bridge
//! (`vitastor_faults::netns`, 127.77.0.N addresses), and links are cut and healed in a loop.
//!
//! The cuts, in a random order that takes each kind in turn, each silent (packets dropped
//! on input: connections hang) or refused (`prohibit` routes: an error at once) at random:
//! - `peers`: one OSD cut from the other OSDs but not from etcd or the client: it keeps its
//!   lease, so its PGs stay its own and go on degraded (pg_minsize 1), as do the others';
//!   6–10 s, past `osd_ping_timeout`.
//! - `etcd`: one OSD cut from etcd only: its lease runs out (10 s), it must stop leading its
//!   PGs by its own clock before the monitor moves them to another OSD, which claims them;
//!   13–17 s.
//! - `client`: the client cut from one OSD: its ops there wait (dropped and re-sent after
//!   `client_op_timeout`) until the link heals; 6–10 s.
//!
//! At no moment may two OSDs lead one PG: every OSD logs where its primary role for a PG
//! begins and ends, and `pg/state` is sampled throughout (`vitastor_faults::primaries`); the
//! test fails on two overlapping roles or on a role held while `pg/state` named another
//! OSD, printing the intervals. No acknowledged write may be lost on either side of a cut:
//! the fio verify loops, as in every scenario. One `FAULTS` line.
//!
//! Clean-up on every path: the cluster and fio are stopped by PID (testkit's handles), then
//! the namespaces (and with them the veths and routes) are deleted by the lab's drop.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use vitastor_faults::duration::fault_time;
use vitastor_faults::fio::FioJob;
use vitastor_faults::netns::{CutKind, Lab};
use vitastor_faults::primaries::{self, Sampler};
use vitastor_faults::scenario::{self, Run};

/// How often `pg/state` is read while the scenario waits.
const SAMPLE_EVERY: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy)]
enum Cut {
    Peers,
    Etcd,
    Client,
}

/// Samples `pg/state` for a random time in `secs`, cut at `until`.
fn wait(run: &mut Run, sampler: &mut Sampler, secs: std::ops::Range<f64>, until: Instant) {
    let d = Duration::from_secs_f64(run.rng.gen_range(secs));
    sampler.sample_until(&run.cluster, (Instant::now() + d).min(until), SAMPLE_EVERY);
}

/// Whether this machine lets the test make namespaces (root, iproute2, procps); a skip is
/// recorded otherwise.
fn may_run() -> bool {
    let uid = std::fs::metadata("/proc/self").map_or(1, |m| m.uid());
    if uid != 0 {
        vitastor_testkit::skip_unavailable("network namespaces (ip netns) need root");
        return false;
    }
    vitastor_testkit::require_tools(&["/usr/sbin/ip", "/usr/sbin/sysctl"])
}

/// The lab itself: hosts reach each other on their 127.77 addresses; a refused cut fails a
/// connect at once, a silent one lets it time out, a third host still gets through, healing
/// restores the link, and dropping the lab removes its namespaces.
#[test]
fn lab_cuts_and_heals() {
    if !may_run() {
        return;
    }
    let mut lab = Lab::new(&["a", "b", "c"]);
    let (a, b, c) = (lab.host("a"), lab.host("b"), lab.host("c"));
    let listener = b.listen(0).expect("listening in b");
    let to = listener.local_addr().expect("the listener's address");
    let wait = Duration::from_secs(5);
    a.connect(to, wait).expect("a reaches b");
    lab.cut("a", "b", CutKind::Refused);
    let refused = a
        .connect(to, wait)
        .expect_err("a refused cut must fail a connect");
    assert_ne!(refused.kind(), std::io::ErrorKind::TimedOut, "{refused}");
    c.connect(to, wait).expect("c still reaches b");
    lab.heal();
    a.connect(to, wait).expect("a reaches b again");
    lab.cut("b", "a", CutKind::Silent);
    let lost = a
        .connect(to, Duration::from_secs(1))
        .expect_err("a silent cut must fail a connect");
    assert_eq!(lost.kind(), std::io::ErrorKind::TimedOut, "{lost}");
    lab.heal();
    a.connect(to, wait).expect("a reaches b after the heal");
    drop(listener);
    let names = [a.netns, b.netns, c.netns];
    drop(lab);
    for name in names {
        let path = std::path::Path::new("/run/netns").join(&name);
        assert!(!path.exists(), "{} is left", path.display());
    }
}

#[test]
fn network_partitions() {
    const SCENARIO: &str = "network partitions";
    if !may_run() {
        return;
    }
    let osd_names: Vec<String> = (1..=3).map(|i| format!("osd{i}")).collect();
    let mut hosts = vec!["etcd", "client"];
    hosts.extend(osd_names.iter().map(String::as_str));
    let mut lab = Lab::new(&hosts);
    let mut opts = scenario::options(3, 2, 1);
    opts.etcd_host = Some(lab.host("etcd"));
    opts.mon_host = Some(lab.host("etcd"));
    opts.osd_hosts = osd_names.iter().map(|n| lab.host(n)).collect();
    opts.keep_dir_from_env("partitions");
    let cluster = scenario::start(opts);
    // Peers and clients in other namespaces reach an OSD only at what it publishes.
    let states = cluster.get_prefix("osd/state/").expect("reading osd/state");
    for (i, name) in osd_names.iter().enumerate() {
        let key = format!("osd/state/{}", i + 1);
        let published = states
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| &v["addresses"]);
        let addr = lab.host(name).addr.to_string();
        assert_eq!(
            published,
            Some(&serde_json::json!([addr])),
            "{key} must publish the OSD's --bind_address"
        );
    }
    let mut job = FioJob::new(cluster.etcd_address());
    job.netns = Some(lab.host("client").netns);
    let mut run = Run::start_job(SCENARIO, cluster, job, fault_time());
    let mut sampler = Sampler::default();
    let mut order = Vec::new();
    loop {
        let deadline = run.deadline;
        wait(&mut run, &mut sampler, 2.0..5.0, deadline);
        if Instant::now() >= deadline {
            break;
        }
        if order.is_empty() {
            order = vec![Cut::Peers, Cut::Etcd, Cut::Client];
            order.shuffle(&mut run.rng);
        }
        let cut = order.pop().expect("refilled above");
        let osd = run.rng.gen_range(1..=3);
        let kind = if run.rng.gen_bool(0.5) {
            CutKind::Silent
        } else {
            CutKind::Refused
        };
        let name = format!("osd{osd}");
        let hold = match cut {
            Cut::Peers => {
                for other in osd_names.iter().filter(|o| **o != name) {
                    lab.cut(&name, other, kind);
                }
                6.0..10.0
            }
            Cut::Etcd => {
                lab.cut(&name, "etcd", kind);
                13.0..17.0
            }
            Cut::Client => {
                lab.cut("client", &name, kind);
                6.0..10.0
            }
        };
        println!("{SCENARIO}: osd.{osd} cut ({cut:?}, {kind:?})");
        run.faults += 1;
        // A cut is never shortened below its lower bound: the lease or a timeout must act.
        let until = run
            .deadline
            .max(Instant::now() + Duration::from_secs_f64(hold.start));
        wait(&mut run, &mut sampler, hold, until);
        lab.heal();
    }
    // The roles settle after the last heal (peers reconnect, PGs move back).
    let settle = Instant::now() + Duration::from_secs(5);
    sampler.sample_until(&run.cluster, settle, SAMPLE_EVERY);

    let now = primaries::now_us();
    let mut roles = BTreeMap::new();
    for osd in 1..=3 {
        primaries::add_intervals(osd, &run.cluster.osd_log(osd), now, &mut roles);
    }
    let overlaps = primaries::overlaps(&roles);
    let unclaimed = primaries::unclaimed(&sampler.samples, &roles);
    println!(
        "{SCENARIO}: {} primary roles over {} PGs, {} pg/state samples: {} overlaps, {} roles \
         held without pg/state",
        roles.values().map(Vec::len).sum::<usize>(),
        roles.len(),
        sampler.samples.len(),
        overlaps.len(),
        unclaimed.len()
    );
    for (pg, a, b) in &overlaps {
        println!(
            "{SCENARIO}: pg {}/{}: two primaries: {a} and {b}",
            pg.0, pg.1
        );
    }
    for line in &unclaimed {
        println!("{SCENARIO}: {line}");
    }
    assert!(
        sampler.samples.len() > 1,
        "{SCENARIO}: pg/state could not be sampled"
    );
    assert!(
        !roles.is_empty(),
        "{SCENARIO}: no OSD logged a primary role (\"pg P/N: primary role begins at T us\")"
    );
    run.verdict();
    assert!(
        overlaps.is_empty(),
        "{SCENARIO}: two OSDs led one PG at once: {overlaps:?}"
    );
    assert!(
        unclaimed.is_empty(),
        "{SCENARIO}: an OSD led a PG that pg/state did not give it: {unclaimed:#?}"
    );
}
