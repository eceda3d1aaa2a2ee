//! Device faults under a primary (issue #11), with real etcd and real `vitastor-osd`
//! processes: OSD 1's blockstore fails one journal write (EIO or ENOSPC, injected with the
//! hidden `inject_faults` option). Every write a client sees succeed must survive — readable
//! at once (ENOSPC: OSD 1 stays up), and on both replicas once OSD 1 is restarted without
//! faults and recovered — and a write that hit the fault is never reported as a success.
//! After EIO, OSD 1 stops serving at once (issue #16); with no monitor here nothing else
//! leads its PGs, so the writes stop at the first failure and OSD 1 must have exited.

mod common;

use std::time::Duration;

use common::{block, INODE, OBJ};
use vitastor_testkit::{Cluster, TestClient};

const OBJECTS: u64 = 120;
const WAIT: Duration = Duration::from_secs(60);

/// Restarts OSD 1 with `plan` as its `inject_faults` (none for `None`).
fn restart_osd1(cl: &mut Cluster, plan: Option<&str>) {
    cl.stop_osd(1);
    common::start_with_faults(cl, 1, plan);
    cl.wait_active(WAIT).expect("PGs active");
}

fn fault_under_primary(plan: &str, expected: &[i64], stops: bool) {
    let o = common::rep2_options(&format!("faults-{}", plan.len()), 2, 4);
    let mut cl = Cluster::start(o).expect("cluster starts");
    restart_osd1(&mut cl, Some(plan));
    let mut c = TestClient::new(&cl);
    c.retry_for = Duration::from_secs(30);

    let (acked, failed) = common::write_new_objects(&mut c, OBJECTS, expected, stops);
    assert!(
        !failed.is_empty(),
        "the injected fault never reached a client"
    );
    assert!(acked.len() > 10, "only {} writes succeeded", acked.len());
    if stops {
        cl.wait_osds_running(1, WAIT)
            .expect("OSD 1 stops after EIO");
    } else {
        for &o in &acked {
            let got = c.read(INODE, o * OBJ, 4096).expect("read after the fault");
            assert!(got == block(o, 1), "object {o} differs after the fault");
        }
    }

    // Without the fault OSD 1 comes back, recovers, and both replicas hold every acked write.
    restart_osd1(&mut cl, None);
    cl.wait_clean(WAIT).expect("PGs clean after recovery");
    let mut c = TestClient::new(&cl);
    for &o in &acked {
        let got = c.read(INODE, o * OBJ, 4096).expect("read after recovery");
        assert!(got == block(o, 1), "object {o} differs after recovery");
        common::assert_replicas(&mut c, &[1, 2], o, &block(o, 1));
    }
}

#[test]
fn a_journal_write_failing_with_eio_is_never_acknowledged() {
    // OSD 1 stops without answering the ops in flight: with no monitor, the client's retries
    // find no primary for OSD 1's PGs and give up with EPIPE.
    fault_under_primary("write:eio:area=journal,after=40,count=1", &[-32], true);
}

#[test]
fn a_journal_write_failing_with_enospc_is_never_acknowledged() {
    fault_under_primary(
        "write:enospc:area=journal,after=40,count=1",
        &[-28, -5, -30],
        false,
    );
}
