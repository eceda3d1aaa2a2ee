//! A VM doing a checksum loop on its vitastor disk while the cluster fails (issue #16: "and
//! one with a TCG VM doing a checksum loop on its disk"): the guest writes, reads back and
//! records rounds of data through virtio-blk and our QEMU driver; the host reports the
//! longest gap between two rounds and checks the disk afterwards (faults' `vm` module).
//!
//! The two scenarios run one after the other: each TCG guest takes a core of this 2-core
//! machine. Boot is outside the fault time (`VITASTOR_FAULT_SECS`).

use std::sync::Mutex;

use vitastor_faults::scenario::{cluster, kill_random_osd, restart_whole_cluster};
use vitastor_faults::vm::checksum_scenario;

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A random OSD SIGKILLed every 5–15 s and started again 1–3 s later (scenario 1).
#[test]
fn vm_checksum_osd_kill_loop() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    checksum_scenario(
        "vm checksum: osd-kill-loop rep2",
        || cluster(3, 2, 1),
        kill_random_osd,
    );
}

/// Every OSD, etcd and the monitor SIGKILLed together every 5–15 s, started again in a
/// random order (scenario 2): the guest waits, then completes with no error.
#[test]
fn vm_checksum_whole_cluster_restart() {
    const SCENARIO: &str = "vm checksum: whole-cluster restart";
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut mon = 0;
    checksum_scenario(
        SCENARIO,
        || cluster(3, 2, 1),
        |cl, rng| {
            mon = restart_whole_cluster(cl, rng, mon, SCENARIO);
        },
    );
}
