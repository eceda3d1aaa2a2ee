//! An OSD whose device fails a write stops serving (issue #16), with real etcd, real
//! `vitastor-osd` processes and a monitor: OSD 1's journal write fails with EIO (the hidden
//! `inject_faults` option) under client writes to every PG of a rep2 pool on 3 OSDs. OSD 1
//! must exit with status 5 and say why in its log, its PGs must move to the other OSDs, no
//! write that hit the fault may be acknowledged, and every acknowledged write must read back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use vitastor_testkit::{Cluster, ClusterOptions, TestClient};

const INODE: u64 = (1 << 48) | 1;
const OBJ: u64 = 128 << 10;
const OBJECTS: u64 = 160;
/// A liveness bound for the cluster's state changes, not a timing criterion.
const WAIT: Duration = Duration::from_secs(120);

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vitastor-osd"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn block(o: u64) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (o as u8).wrapping_mul(11) ^ (i as u8).wrapping_mul(37) ^ 0xa5)
        .collect()
}

#[test]
fn an_osd_whose_device_fails_a_write_stops_and_its_pgs_move() {
    let mut o = ClusterOptions::new(bin_dir());
    o.osds = 3;
    o.pg_size = 2;
    o.pg_minsize = Some(1);
    o.pg_count = 8;
    o.osd_size = 256 << 20;
    o.monitors = 1;
    o.write_pg_config = false;
    if let Ok(dir) = std::env::var("VITASTOR_TEST_DIR") {
        let dir = PathBuf::from(dir).join(format!("device-eio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        o.dir = Some(dir);
    }
    let mut cl = Cluster::start(o).expect("cluster starts");
    cl.kill_osd(1);
    let path = cl.osds[0].config.clone();
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().insert(
        "inject_faults".into(),
        Value::from("write:eio:area=journal,after=60,count=1"),
    );
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    cl.start_osd(1).expect("OSD 1 restarts with the fault");
    cl.wait_active(WAIT).expect("PGs active");

    let mut c = TestClient::new(&cl);
    c.retry_for = WAIT;
    // One new object per write, so an acknowledged block is never overwritten by a failed one.
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for o in 0..OBJECTS {
        match c.write(INODE, o * OBJ, &block(o)) {
            Ok(_) => acked.push(o),
            // The writes in flight on OSD 1 when its device failed.
            Err(e) => {
                assert!([-5, -30].contains(&e), "write {o}: unexpected error {e}");
                failed.push(o);
            }
        }
    }

    let deadline = Instant::now() + WAIT;
    while cl.osds_running() > 2 {
        assert!(
            Instant::now() < deadline,
            "OSD 1 still runs on a failed device"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(cl.dir().join("osd1.log")).unwrap_or_default();
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
            got == block(o),
            "acknowledged object {o} differs after OSD 1 stopped"
        );
    }
    eprintln!(
        "{} writes acknowledged, {} failed with the device ({failed:?})",
        acked.len(),
        failed.len()
    );
}
