//! The suite's own check: a verify that could not see a lost write would make every
//! scenario pass. A block left from an earlier run is exactly what a write acknowledged but
//! not stored looks like; the final `-verify_only` pass must count it.

use vitastor_faults::fio::{FioJob, FIO};
use vitastor_testkit::require_tools;

#[test]
fn verify_counts_blocks_of_an_older_run() {
    if !require_tools(&[FIO]) {
        return;
    }
    let cluster = vitastor_faults::scenario::cluster(3, 2, 0);
    let mut job = FioJob::new(cluster.etcd_address());
    job.size = 1 << 20;
    job.rate = "64m".into();
    let crc = job.run_once(1, false);
    assert_eq!((crc.runs, crc.verify_errors), (1, 0), "{:?}", crc.failures);
    assert!(crc.failures.is_empty(), "{:?}", crc.failures);
    job.pattern = true;
    let pattern = job.run_once(2, false);
    assert_eq!(pattern.verify_errors, 0, "{:?}", pattern.failures);
    assert!(pattern.failures.is_empty(), "{:?}", pattern.failures);
    assert_eq!(job.run_once(2, true).verify_errors, 0);
    let other = job.run_once(4, true);
    assert_eq!(
        other.verify_errors, 256,
        "every 4 KiB block of the 1 MiB area is from another run: {other:?}"
    );
}
