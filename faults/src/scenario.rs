//! What every scenario does the same way: its cluster, its random pauses (with a printed,
//! replayable seed) and its verdict (figures printed, then pass/fail on data only).

use std::time::{Duration, Instant};

use crate::duration::fault_time;
use crate::figures::Figures;
use crate::fio::{FioFigures, FioJob, FioLoop};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use vitastor_testkit::{Cluster, ClusterOptions};

/// One scenario under way: its cluster, its replayable random generator, the fio verify
/// loops running against the cluster, the time it injects faults for and the faults so far.
pub struct Run {
    /// The scenario's name, as printed in its `FAULTS` line.
    pub name: &'static str,
    /// The cluster under test.
    pub cluster: Cluster,
    /// The scenario's random choices (seed printed, see [`rng`]).
    pub rng: StdRng,
    /// How long faults are injected.
    pub time: Duration,
    /// When fault injection ends.
    pub deadline: Instant,
    /// Faults injected so far.
    pub faults: u64,
    fio: FioLoop,
}

impl Run {
    /// Starts fio against `cluster` for [`fault_time`].
    pub fn start(name: &'static str, cluster: Cluster) -> Run {
        Run::start_for(name, cluster, fault_time())
    }

    /// Starts fio against `cluster` for `time`.
    pub fn start_for(name: &'static str, cluster: Cluster, time: Duration) -> Run {
        let job = FioJob::new(cluster.etcd_address());
        Run::start_job(name, cluster, job, time)
    }

    /// Starts fio `job` (its loops, see [`FioLoop::start`]) against `cluster` for `time`.
    pub fn start_job(name: &'static str, cluster: Cluster, job: FioJob, time: Duration) -> Run {
        let rng = rng(name);
        let fio = FioLoop::start(job);
        Run {
            name,
            cluster,
            rng,
            time,
            deadline: Instant::now() + time,
            faults: 0,
            fio,
        }
    }

    /// [`pause_until`] the run's deadline.
    pub fn pause(&mut self, secs: std::ops::Range<f64>) -> bool {
        pause_until(&mut self.rng, secs, self.deadline)
    }

    /// [`sleep`] with the run's generator.
    pub fn sleep(&mut self, secs: std::ops::Range<f64>) {
        sleep(&mut self.rng, secs);
    }

    /// [`verdict`] of the run.
    pub fn verdict(self) -> FioFigures {
        verdict(self.name, self.time, self.faults, self.fio)
    }

    /// [`verdict_allowing`] of the run.
    pub fn verdict_allowing(self, expected: impl Fn(&str) -> bool) -> FioFigures {
        verdict_allowing(self.name, self.time, self.faults, self.fio, expected)
    }
}

/// A cluster of `osds` OSDs, pool 1 replicated `pg_size`, `monitors` monitors placing PGs.
pub fn cluster(osds: usize, pg_size: usize, monitors: usize) -> Cluster {
    start(options(osds, pg_size, monitors))
}

/// [`cluster`] whose pool 1 is Reed-Solomon `k`+`m` (`pg_minsize` k: writes go on with m
/// parts down).
pub fn ec_cluster(osds: usize, k: usize, m: usize, monitors: usize) -> Cluster {
    let mut opts = options(osds, k + m, monitors);
    opts.scheme = "ec".into();
    opts.parity_chunks = m;
    opts.pg_minsize = Some(k);
    start(opts)
}

/// The options [`cluster`] starts with.
pub fn options(osds: usize, pg_size: usize, monitors: usize) -> ClusterOptions {
    let mut opts = ClusterOptions::from_workspace();
    opts.osds = osds;
    opts.pg_size = pg_size;
    opts.monitors = monitors;
    opts.osd_size = 512 << 20;
    opts
}

/// Starts a cluster for a scenario.
pub fn start(opts: ClusterOptions) -> Cluster {
    Cluster::start(opts).expect("starting the cluster")
}

/// A random generator whose seed is printed, so a failing run can be replayed
/// (`VITASTOR_FAULT_SEED`).
pub fn rng(scenario: &str) -> StdRng {
    let seed = std::env::var("VITASTOR_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{scenario}: VITASTOR_FAULT_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Sleeps a random time in `range` seconds, cut at `deadline`; false once it has passed.
pub fn pause_until(rng: &mut StdRng, secs: std::ops::Range<f64>, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    let d = Duration::from_secs_f64(rng.gen_range(secs)).min(deadline - now);
    std::thread::sleep(d);
    Instant::now() < deadline
}

/// Sleeps a random time in `secs` seconds (not cut at any deadline).
pub fn sleep(rng: &mut StdRng, secs: std::ops::Range<f64>) {
    std::thread::sleep(Duration::from_secs_f64(rng.gen_range(secs)));
}

/// A random OSD SIGKILLed and started again 1–3 s later (issue #16 scenario 1).
pub fn kill_random_osd(cluster: &mut Cluster, rng: &mut StdRng) {
    let osd = rng.gen_range(1..=cluster.osds.len() as u64);
    cluster.kill_osd(osd);
    sleep(rng, 1.0..3.0);
    cluster.start_osd(osd).expect("restarting the OSD");
}

/// What a whole-cluster restart starts again.
#[derive(Debug, Clone, Copy)]
enum Daemon {
    Etcd,
    Monitor,
    Osd(u64),
}

/// Every OSD, etcd and monitor `mon` SIGKILLed together, down 1–3 s, then started again in a
/// random order, printed (issue #16 scenario 2); returns the new monitor's index.
pub fn restart_whole_cluster(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    mon: usize,
    scenario: &str,
) -> usize {
    let osds = cluster.osds.len() as u64;
    for osd in 1..=osds {
        cluster.kill_osd(osd);
    }
    cluster.kill_monitor(mon);
    cluster.etcd.kill().expect("killing etcd");
    sleep(rng, 1.0..3.0);
    let mut order = vec![Daemon::Etcd, Daemon::Monitor];
    order.extend((1..=osds).map(Daemon::Osd));
    order.shuffle(rng);
    println!("{scenario}: restart order {order:?}");
    let mut new_mon = mon;
    for daemon in order {
        match daemon {
            Daemon::Etcd => cluster.etcd.restart().expect("restarting etcd"),
            Daemon::Monitor => new_mon = cluster.start_monitor().expect("restarting the monitor"),
            Daemon::Osd(n) => cluster.start_osd(n).expect("restarting the OSD"),
        }
    }
    new_mon
}

/// Restarts OSD `osd` with `plan` as its hidden `inject_faults` option (the blockstore's
/// device faults, `vitastor_blockstore::FaultPlan`'s grammar), or without faults for `None`.
/// The option goes into the OSD's config file, which the restart reads.
pub fn restart_osd_with_faults(cluster: &mut Cluster, osd: u64, plan: Option<&str>) {
    cluster.kill_osd(osd);
    let path = cluster.osds[(osd - 1) as usize].config.clone();
    let text = std::fs::read(&path).expect("reading the OSD's config");
    let mut cfg: serde_json::Value = serde_json::from_slice(&text).expect("OSD config JSON");
    let map = cfg.as_object_mut().expect("OSD config is a JSON object");
    match plan {
        Some(p) => map.insert("inject_faults".into(), serde_json::Value::from(p)),
        None => map.remove("inject_faults"),
    };
    std::fs::write(&path, serde_json::to_vec(&cfg).expect("JSON")).expect("writing the config");
    cluster.start_osd(osd).expect("restarting the OSD");
}

/// Finishes fio, prints the figures line and fails on any verify error, lost write or failed
/// fio run (never on a timing).
pub fn verdict(scenario: &str, duration: Duration, faults: u64, fio: FioLoop) -> FioFigures {
    verdict_allowing(scenario, duration, faults, fio, |_| false)
}

/// [`verdict`], except that fio runs whose failure `expected` accepts (a clean per-op error
/// the scenario provokes, by fio's message) are counted and printed, not failed.
pub fn verdict_allowing(
    scenario: &str,
    duration: Duration,
    faults: u64,
    fio: FioLoop,
    expected: impl Fn(&str) -> bool,
) -> FioFigures {
    let (mut fio, lost) = fio.finish();
    let before = fio.failures.len();
    fio.failures.retain(|f| !expected(f));
    if before > fio.failures.len() {
        println!(
            "{scenario}: {} fio runs ended by the expected per-op error",
            before - fio.failures.len()
        );
    }
    Figures {
        scenario: scenario.into(),
        duration,
        faults,
        longest_pause: fio.longest_pause,
        verify_errors: fio.verify_errors,
        lost_writes: lost,
        fio_runs: fio.runs,
        vm_rounds: 0,
    }
    .report();
    assert!(fio.runs > 0, "{scenario}: no fio run completed");
    assert_eq!(fio.verify_errors, 0, "{scenario}: verify errors");
    assert_eq!(lost, 0, "{scenario}: acknowledged writes lost");
    assert!(
        fio.failures.is_empty(),
        "{scenario}: fio runs failed: {:#?}",
        fio.failures
    );
    fio
}
