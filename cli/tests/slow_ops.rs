//! `vitastor-cli status` names the OSDs with slow ops (issue #16), against real etcd and real
//! OSDs: OSD 2's disk hangs (the OSD's hidden `inject_faults` option with a `delay` fault),
//! so a write to a PG OSD 1 leads waits on OSD 2 — a slow primary op on OSD 1, a slow
//! secondary op on OSD 2, both reported in `osd/stats` once older than `slow_log_interval`
//! (1 s here; `osd_op_timeout` is long, so OSD 1 keeps waiting). The warning must show both,
//! in text and JSON, and go away once OSD 2 is restarted without the fault.
//!
//! Only processes this test started are stopped; the cluster stops on drop.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use vitastor_testkit::{Cluster, ClusterOptions, TestClient};

const CLI: &str = env!("CARGO_BIN_EXE_vitastor-cli");
/// A liveness bound for the cluster's state changes, not a timing criterion.
const WAIT: Duration = Duration::from_secs(90);

fn status(addr: &str, json: bool) -> String {
    let mut cmd = Command::new(CLI);
    cmd.args(["--etcd_address", addr, "status"]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("running vitastor-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `status` until `pred` holds for its text output; returns that output.
fn wait_status(addr: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = status(addr, false);
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "status never {what}:\n{text}");
        thread::sleep(Duration::from_millis(200));
    }
}

fn restart_osd2(cl: &mut Cluster, plan: Option<&str>) {
    cl.kill_osd(2);
    let path = cl.osds[1].config.clone();
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let map = cfg.as_object_mut().unwrap();
    match plan {
        Some(p) => map.insert("inject_faults".into(), Value::from(p)),
        None => map.remove("inject_faults"),
    };
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    cl.start_osd(2).expect("OSD 2 restarts");
}

#[test]
fn status_names_the_osds_with_slow_ops() {
    let mut o = ClusterOptions::from_workspace();
    o.osds = 2;
    o.pg_size = 2;
    o.pg_minsize = Some(1);
    o.pg_count = 4;
    o.osd_size = 256 << 20;
    o.osd_args = ["--slow_log_interval", "1", "--osd_op_timeout", "600"]
        .map(String::from)
        .to_vec();
    let mut cl = Cluster::start(o).expect("cluster starts");
    let addr = cl.etcd_address();
    assert!(!status(&addr, false).contains("slow ops"));
    restart_osd2(&mut cl, Some("write:delay:ms=3600000"));
    cl.wait_active(WAIT).expect("PGs active");

    // PG 1 is led by OSD 1 with OSD 2 as its secondary (testkit's default sets).
    let mut c = TestClient::new(&cl);
    c.retry_for = WAIT;
    let writer = thread::spawn(move || c.write((1 << 48) | 1, 0, &[7u8; 4096]));

    let text = wait_status(&addr, "named both OSDs", |t| {
        t.contains("slow ops on") && t.contains("osd.1 (") && t.contains("osd.2 (")
    });
    assert!(text.contains("warnings:"), "{text}");
    let v: Value = serde_json::from_str(&status(&addr, true)).unwrap();
    let slow = v["slow_ops"].as_array().expect("slow_ops in JSON");
    let on = |osd: u64, field: &str| {
        slow.iter()
            .find(|s| s["osd"] == osd)
            .and_then(|s| s[field].as_u64())
            .unwrap_or(0)
    };
    // The JSON is read after the text; counts can only have grown or vanished meanwhile.
    assert!(
        on(1, "primary") > 0 || slow.is_empty(),
        "osd.1 has no slow primary op: {v}"
    );

    restart_osd2(&mut cl, None);
    let written = writer.join().expect("the writer thread");
    assert!(
        written.is_ok(),
        "the write waiting on OSD 2 failed: {written:?}"
    );
    wait_status(&addr, "dropped the warning", |t| !t.contains("slow ops"));
}
