//! Device faults under a primary (issue #11), with real etcd and real `vitastor-osd`
//! processes: OSD 1's blockstore fails one journal write (EIO or ENOSPC, injected with the
//! hidden `inject_faults` option). Every write a client sees succeed must survive — readable
//! at once (ENOSPC: OSD 1 stays up), and on both replicas once OSD 1 is restarted without
//! faults and recovered — and a write that hit the fault is never reported as a success.
//! After EIO, OSD 1 stops serving at once (issue #16); with no monitor here nothing else
//! leads its PGs, so the writes stop at the first failure and OSD 1 must have exited.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vitastor_testkit::{Cluster, ClusterOptions, TestClient};

const INODE: u64 = (1 << 48) | 1;
const OBJ: u64 = 128 << 10;
const OBJECTS: u64 = 120;
const WAIT: Duration = Duration::from_secs(60);

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vitastor-osd"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn block(o: u64) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (o as u8).wrapping_mul(7) ^ (i as u8).wrapping_mul(29) ^ 0x5a)
        .collect()
}

/// Restarts OSD 1 with `plan` as its `inject_faults` (none for `None`).
fn restart_osd1(cl: &mut Cluster, plan: Option<&str>) {
    cl.stop_osd(1);
    let path = cl.osds[0].config.clone();
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let map = cfg.as_object_mut().expect("OSD config is a JSON object");
    match plan {
        Some(p) => map.insert("inject_faults".into(), Value::from(p)),
        None => map.remove("inject_faults"),
    };
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    cl.start_osd(1).expect("OSD 1 restarts");
    cl.wait_active(WAIT).expect("PGs active");
}

fn fault_under_primary(plan: &str, expected: &[i64], stops: bool) {
    let mut o = ClusterOptions::new(bin_dir());
    o.osds = 2;
    o.pg_size = 2;
    o.pg_minsize = Some(1);
    o.pg_count = 4;
    o.osd_size = 256 << 20;
    if let Ok(dir) = std::env::var("VITASTOR_TEST_DIR") {
        let dir = PathBuf::from(dir).join(format!("faults-{}-{}", std::process::id(), plan.len()));
        let _ = std::fs::remove_dir_all(&dir);
        o.dir = Some(dir);
    }
    let mut cl = Cluster::start(o).expect("cluster starts");
    restart_osd1(&mut cl, Some(plan));
    let mut c = TestClient::new(&cl);
    c.retry_for = Duration::from_secs(30);

    // One new object per write, so an acknowledged block is never overwritten by a failed one.
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for o in 0..OBJECTS {
        match c.write(INODE, o * OBJ, &block(o)) {
            Ok(_) => acked.push(o),
            Err(e) => {
                assert!(expected.contains(&e), "write {o}: unexpected error {e}");
                failed.push(o);
                if stops {
                    break;
                }
            }
        }
    }
    assert!(
        !failed.is_empty(),
        "the injected fault never reached a client"
    );
    assert!(acked.len() > 10, "only {} writes succeeded", acked.len());
    if stops {
        let deadline = std::time::Instant::now() + WAIT;
        while cl.osds_running() > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "OSD 1 still runs after EIO"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    } else {
        for &o in &acked {
            let got = c.read(INODE, o * OBJ, 4096).expect("read after the fault");
            assert!(got == block(o), "object {o} differs after the fault");
        }
    }

    // Without the fault OSD 1 comes back, recovers, and both replicas hold every acked write.
    restart_osd1(&mut cl, None);
    cl.wait_clean(WAIT).expect("PGs clean after recovery");
    let mut c = TestClient::new(&cl);
    for &o in &acked {
        let got = c.read(INODE, o * OBJ, 4096).expect("read after recovery");
        assert!(got == block(o), "object {o} differs after recovery");
        for osd in [1, 2] {
            let (version, data) = c.read_replica(osd, INODE, o * OBJ).expect("replica read");
            assert!(version > 0, "object {o} missing on osd.{osd}");
            assert!(data[..4096] == block(o), "object {o} differs on osd.{osd}");
        }
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
