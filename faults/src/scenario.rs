//! What every scenario does the same way: its cluster, its random pauses (with a printed,
//! replayable seed) and its verdict (figures printed, then pass/fail on data only).

use std::time::{Duration, Instant};

use crate::figures::Figures;
use crate::fio::{FioFigures, FioLoop};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vitastor_testkit::{Cluster, ClusterOptions};

/// A cluster of `osds` OSDs, pool 1 replicated `pg_size`, `monitors` monitors placing PGs.
pub fn cluster(osds: usize, pg_size: usize, monitors: usize) -> Cluster {
    let mut opts = ClusterOptions::from_workspace();
    opts.osds = osds;
    opts.pg_size = pg_size;
    opts.monitors = monitors;
    opts.osd_size = 512 << 20;
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

/// Finishes fio, prints the figures line and fails on any verify error, lost write or failed
/// fio run (never on a timing).
pub fn verdict(scenario: &str, duration: Duration, faults: u64, fio: FioLoop) -> FioFigures {
    let (fio, lost) = fio.finish();
    Figures {
        scenario: scenario.into(),
        duration,
        faults,
        longest_pause: fio.longest_pause,
        verify_errors: fio.verify_errors,
        lost_writes: lost,
        fio_runs: fio.runs,
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
