//! Layered images through block-vitastor.so: a clone made by `vitastor-cli create --parent`
//! opens (it was refused before the client read through layers), reads its parent's data,
//! and keeps its own writes while the snapshot under it stays unchanged.

mod common;

use std::process::{Command, Stdio};

use common::*;
use vitastor_testkit::{artifacts, require_tools};

fn cli(cl: &vitastor_testkit::Cluster, args: &[&str]) {
    let out = Command::new(artifacts::fresh_path("vitastor-cli"))
        .args(["--etcd_address", &cl.etcd_address()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("vitastor-cli");
    assert!(
        out.status.success(),
        "vitastor-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clone_of_a_snapshot_through_qemu_io() {
    if !require_tools(&["qemu-io", "qemu-img"]) {
        return;
    }
    let cl = start_cluster();
    let base = image_spec(&cl, "base");
    qemu_ok("qemu-img", &["create", "-f", "raw", &base, "8M"]);
    qemu_ok("qemu-io", &["-f", "raw", "-c", "write -P 0x5a 0 8M", &base]);
    cli(&cl, &["snap-create", "base@golden"]);
    cli(&cl, &["create", "--parent", "base@golden", "clone"]);
    let clone = image_spec(&cl, "clone");
    let out = qemu_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 0x5a 0 8M",
            "-c",
            "write -P 0x77 1000 200000",
            "-c",
            "read -P 0x77 1000 200000",
            "-c",
            "read -P 0x5a 0 1000",
            "-c",
            "read -P 0x5a 201000 100000",
            &clone,
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let snap = image_spec(&cl, "base@golden");
    let out = qemu_ok(
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read -P 0x5a 0 8M", &snap],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
}
