//! Data path through block-vitastor.so: `qemu-io` pattern writes and reads at unaligned
//! offsets and across object (128 KiB) and PG boundaries, parallel AIO, `qemu-img bench` at
//! queue depth 32, the `json:` and `--image-opts` forms, and `qemu-nbd` exporting a vitastor
//! image read by `nbdcopy`. The patterns also run once on an erasure-coded (EC 2+1) image.
//!
//! Needs qemu-io, qemu-img, qemu-nbd and nbdcopy (`make setup` installs them; see testkit's
//! `require_tools`).

mod common;

use std::fs;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use vitastor_testkit::{process, require_tools};

const OBJ: u64 = 128 * 1024;

#[test]
fn unaligned_and_boundary_crossing_patterns() {
    if !require_tools(&["qemu-io", "qemu-img"]) {
        return;
    }
    let cl = start_cluster();
    let spec = image_spec(&cl, "io");
    patterns_and_parallel_aio(&spec);

    // qemu-img bench: 4096 writes at queue depth 32 with a pattern, then read them back.
    qemu_ok(
        "qemu-img",
        &[
            "bench",
            "-f",
            "raw",
            "-w",
            "-t",
            "none",
            "-d",
            "32",
            "-c",
            "4096",
            "-s",
            "4096",
            "-S",
            "4096",
            "--pattern=0x42",
            &spec,
        ],
    );
    let out = qemu_ok("qemu-io", &["-f", "raw", "-c", "read -P 0x42 0 16M", &spec]);
    assert!(!out.contains("Pattern verification failed"), "{out}");

    // The same image through json: and --image-opts, with vitastor.conf-style names.
    let json = format!(
        r#"json:{{"driver":"raw","file":{{"driver":"vitastor","image":"io","etcd_host":"{}"}}}}"#,
        cl.etcd_address()
    );
    qemu_ok("qemu-io", &["-c", "read -P 0x42 0 4k", &json]);
    let opts = format!("driver=vitastor,image=io,etcd-host={}", cl.etcd_address());
    qemu_ok(
        "qemu-io",
        &["--image-opts", "-c", "read -P 0x42 4k 4k", &opts],
    );
    // And by pool/inode/size instead of the name.
    let by_inode = format!(
        "vitastor:etcd_host={}:pool=1:inode=1:size=67108864",
        cl.etcd_address().replace(':', "\\:")
    );
    qemu_ok(
        "qemu-io",
        &["-f", "raw", "-c", "read -P 0x42 8k 4k", &by_inode],
    );
}

/// Creates a 64 MiB image at `spec`; pattern writes and reads at unaligned offsets and
/// across object and PG boundaries (the bytes around each write keep the background), then
/// 16 parallel AIO writes, a flush and their reads.
fn patterns_and_parallel_aio(spec: &str) {
    qemu_ok("qemu-img", &["create", "-f", "raw", spec, "64M"]);
    // (offset, len): inside a 4 KiB block, across blocks, across objects (and so PGs: object
    // n lives in a different PG than object n + 1), across several objects, sector-sized.
    let writes: [(u64, u64); 8] = [
        (1000, 3000),
        (4095, 2),
        (OBJ - 1000, 3000),
        (3 * OBJ - 513, 1025),
        (5 * OBJ + 7, 3 * OBJ + 11),
        (16 * OBJ - 4096, 8192),
        (40 * OBJ + 512, 512),
        (64 * MIB - 5000, 5000),
    ];
    // Background first, then the small writes over it: their neighbours must keep 0xaa.
    let mut cmds = vec!["write -P 0xaa 0 64M".to_string()];
    for (i, (off, len)) in writes.iter().enumerate() {
        cmds.push(format!("write -P {} {off} {len}", 0x10 + i));
    }
    for (i, (off, len)) in writes.iter().enumerate() {
        cmds.push(format!("read -P {} {off} {len}", 0x10 + i));
        // The bytes just before and after were not touched by the read-modify-write.
        if *off > 100 && !writes.iter().any(|(o, l)| o + l > off - 100 && *o < *off) {
            cmds.push(format!("read -P 0xaa {} 100", off - 100));
        }
        let end = off + len;
        if end + 100 <= 64 * MIB && !writes.iter().any(|(o, l)| *o < end + 100 && o + l > end) {
            cmds.push(format!("read -P 0xaa {end} 100"));
        }
    }
    let mut args = vec!["-f", "raw"];
    for c in &cmds {
        args.extend(["-c", c.as_str()]);
    }
    args.push(spec);
    let out = qemu_ok("qemu-io", &args);
    assert!(!out.contains("Pattern verification failed"), "{out}");

    // Parallel AIO: 16 overlapping-free requests in flight, then a flush.
    let mut args = vec!["-f".to_string(), "raw".to_string()];
    for i in 0..16u64 {
        args.push("-c".into());
        args.push(format!(
            "aio_write -P {} {} {}",
            0x40 + i,
            i * 300 * 1024 + 512,
            300 * 1024 - 1024
        ));
    }
    args.extend(["-c".into(), "aio_flush".into()]);
    for i in 0..16u64 {
        args.push("-c".into());
        args.push(format!(
            "aio_read -P {} {} {}",
            0x40 + i,
            i * 300 * 1024 + 512,
            300 * 1024 - 1024
        ));
    }
    args.extend(["-c".into(), "aio_flush".into(), spec.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = qemu_ok("qemu-io", &args);
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert_eq!(out.matches("read 306176/306176").count(), 16, "{out}");
}

/// The same patterns and parallel AIO on an image of an erasure-coded 2+1 pool (issue #13):
/// writes inside one 128 KiB part, across the two data parts of an object and across
/// objects, each a read-modify-write of the parity.
#[test]
fn patterns_on_an_ec_image() {
    if !require_tools(&["qemu-io", "qemu-img"]) {
        return;
    }
    let cl = start_ec_cluster();
    patterns_and_parallel_aio(&image_spec(&cl, "ec"));
}

/// Stops the qemu-nbd we started (by its PID, as our own unreaped child).
struct NbdServer(Child);

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn qemu_nbd_exports_a_vitastor_image_to_nbdcopy() {
    if !require_tools(&["qemu-nbd", "nbdcopy", "qemu-img"]) {
        return;
    }
    let cl = start_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.raw");
    fs::write(&src, pattern(7, 24 * MIB as usize)).unwrap();
    let spec = image_spec(&cl, "nbd");
    qemu_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &spec,
        ],
    );

    let sock = tmp.path().join("nbd.sock");
    let server = NbdServer(
        Command::new("qemu-nbd")
            .args([
                "--read-only",
                "--persistent",
                "--shared=2",
                "-f",
                "raw",
                "-k",
            ])
            .arg(&sock)
            .arg(&spec)
            .env("LD_PRELOAD", driver())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting qemu-nbd"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "qemu-nbd did not create {}",
            sock.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let copy = tmp.path().join("copy.raw");
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let out = process::output_within(
        Command::new("nbdcopy")
            .args(["--requests=16", &uri])
            .arg(&copy)
            .stdin(Stdio::null()),
        RUN_TIMEOUT,
    )
    .expect("nbdcopy");
    assert!(
        out.status.success(),
        "nbdcopy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
    assert!(
        fs::read(&src).unwrap() == fs::read(&copy).unwrap(),
        "nbdcopy read other data"
    );
}
