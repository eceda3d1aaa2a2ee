//! A secondary that dies between writes and the SYNC that covers them (issue #11), with real
//! etcd and real `vitastor-osd` processes, `immediate_commit` none: the SYNC is refused or
//! retried until the PG has peered without the dead OSD, never acknowledged for writes that
//! are not stable; once acknowledged, the writes survive the primary's crash too and end up
//! on both replicas after recovery.

mod common;

use std::time::{Duration, Instant};

use common::{block, INODE, OBJ};
use vitastor_testkit::{Cluster, TestClient};

const OBJECTS: u64 = 16;
const WAIT: Duration = Duration::from_secs(60);

/// SYNC until it succeeds: a failure tells the client to keep (and here: retry) its writes.
fn sync_until_ok(c: &mut TestClient) {
    let deadline = Instant::now() + WAIT;
    while let Err(e) = c.sync_all() {
        assert!(Instant::now() < deadline, "SYNC kept failing ({e})");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_secondary_killed_between_write_and_sync() {
    // One PG, set [1, 2]: osd.1 is the primary, osd.2 the secondary that dies.
    let mut o = common::rep2_options("sync-failure", 2, 1);
    o.immediate_commit = "none".into();
    let mut cl = Cluster::start(o).expect("cluster starts");
    let mut c = TestClient::new(&cl);
    for o in 0..OBJECTS {
        c.write(INODE, o * OBJ, &block(o, 1)).expect("write");
    }
    cl.kill_osd(2);
    sync_until_ok(&mut c);
    // Degraded, the PG takes and syncs more writes.
    for o in 0..OBJECTS / 2 {
        c.write(INODE, o * OBJ, &block(o, 2))
            .expect("write while degraded");
    }
    sync_until_ok(&mut c);

    // What the SYNCs acknowledged survives the primary's crash and reaches osd.2 again.
    cl.kill_osd(1);
    cl.start_osd(1).expect("osd.1 restarts");
    cl.start_osd(2).expect("osd.2 restarts");
    cl.wait_clean(WAIT).expect("PG clean after recovery");
    let mut c = TestClient::new(&cl);
    for o in 0..OBJECTS {
        let want = block(o, if o < OBJECTS / 2 { 2 } else { 1 });
        let got = c.read(INODE, o * OBJ, 4096).expect("read");
        assert!(got == want, "object {o} differs");
        common::assert_replicas(&mut c, &[1, 2], o, &want);
    }
}
