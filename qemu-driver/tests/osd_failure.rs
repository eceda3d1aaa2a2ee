//! Cluster trouble under a running QEMU program: an OSD is SIGKILLed while `qemu-img convert`
//! writes into a vitastor image, and (as the monitor would) the primaries move off it. The
//! convert must complete without an error and the image must equal the source.
//!
//! Needs qemu-img (`make setup` installs it; see testkit's `require_tools`).

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use vitastor_testkit::require_tools;
use vitastor_testkit::Cluster;

/// Rewrites pool 1's `pg/config` with the first OSD of each set that is not `down` as
/// primary (what the monitor does when an OSD goes down).
fn set_primaries(cl: &Cluster, sets: &[Vec<u64>], down: &[u64]) {
    let mut pgs = serde_json::Map::new();
    for (i, set) in sets.iter().enumerate() {
        let primary = set.iter().copied().find(|o| !down.contains(o)).unwrap_or(0);
        pgs.insert(
            (i + 1).to_string(),
            json!({"osd_set": set, "primary": primary}),
        );
    }
    cl.put_json("pg/config", &json!({"items": {"1": pgs}}))
        .unwrap();
}

#[test]
fn convert_survives_an_osd_kill() {
    if !require_tools(&["qemu-img"]) {
        return;
    }
    let mut cl = start_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.raw");
    fs::write(&src, pattern(21, 64 * MIB as usize)).unwrap();
    let spec = image_spec(&cl, "survivor");
    // -r: a rate limit (bytes/s) keeps the convert running for ~6 s, long enough to kill an
    // OSD in the middle of it.
    let mut convert = Command::new("qemu-img")
        .args(["convert", "-r", "10M", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(&spec)
        .env("LD_PRELOAD", driver())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting qemu-img convert");
    thread::sleep(Duration::from_millis(1500));
    assert!(
        convert.try_wait().unwrap().is_none(),
        "convert finished before the OSD was killed"
    );
    let sets = cl.default_sets();
    cl.kill_osd(3);
    set_primaries(&cl, &sets, &[3]);
    let deadline = Instant::now() + RUN_TIMEOUT;
    while convert.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = convert.kill();
            panic!("qemu-img convert did not finish within {RUN_TIMEOUT:?} after the OSD kill");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let out = convert.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img convert failed across the OSD kill:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    qemu_ok(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            src.to_str().unwrap(),
            &spec,
        ],
    );
}
