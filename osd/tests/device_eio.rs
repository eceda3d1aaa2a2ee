//! An OSD whose device fails a write stops serving (issue #16), with real etcd, real
//! `vitastor-osd` processes and a monitor: OSD 1's journal write fails with EIO (the hidden
//! `inject_faults` option) under client writes to every PG of a rep2 pool on 3 OSDs. OSD 1
//! must exit with status 5 and say why in its log, its PGs must move to the other OSDs, no
//! write that hit the fault may be acknowledged, and every acknowledged write must read back.

mod common;

use std::time::Duration;

use common::{block, INODE, OBJ};
use vitastor_testkit::{Cluster, TestClient};

const OBJECTS: u64 = 160;
/// A liveness bound for the cluster's state changes, not a timing criterion.
const WAIT: Duration = Duration::from_secs(120);

#[test]
fn an_osd_whose_device_fails_a_write_stops_and_its_pgs_move() {
    let mut o = common::rep2_options("device-eio", 3, 8);
    o.monitors = 1;
    o.write_pg_config = false;
    let mut cl = Cluster::start(o).expect("cluster starts");
    cl.kill_osd(1);
    common::start_with_faults(&mut cl, 1, Some("write:eio:area=journal,after=60,count=1"));
    cl.wait_active(WAIT).expect("PGs active");

    let mut c = TestClient::new(&cl);
    c.retry_for = WAIT;
    // The writes in flight on OSD 1 when its device failed fail with EIO or EROFS.
    let (acked, failed) = common::write_new_objects(&mut c, OBJECTS, &[-5, -30], false);

    cl.wait_osds_running(2, WAIT)
        .expect("OSD 1 stops on a failed device");
    let log = cl.osd_log(1);
    assert!(
        log.contains("device error") && log.contains("stopped serving"),
        "OSD 1's log does not say why it stopped:\n{log}"
    );
    let states = cl.pg_states().expect("pg/state");
    assert!(
        states.iter().all(|(_, v)| v["primary"].as_u64() != Some(1)),
        "OSD 1 still leads a PG: {states:?}"
    );
    cl.wait_active(WAIT).expect("PGs active without OSD 1");
    let mut c = TestClient::new(&cl);
    c.retry_for = WAIT;
    for &o in &acked {
        let got = c
            .read(INODE, o * OBJ, 4096)
            .expect("read after OSD 1 stopped");
        assert!(
            got == block(o, 1),
            "acknowledged object {o} differs after OSD 1 stopped"
        );
    }
    eprintln!(
        "{} writes acknowledged, {} failed with the device ({failed:?})",
        acked.len(),
        failed.len()
    );
}
