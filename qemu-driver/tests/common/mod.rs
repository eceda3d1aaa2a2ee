//! Shared by the QEMU driver tests: the local cluster, running QEMU programs with
//! `block-vitastor.so` preloaded (each bounded by a timeout), and data patterns.
//!
//! QEMU's programs are required (`make setup` installs them): a test without them fails, or
//! with `VITASTOR_ALLOW_SKIP=1` is listed as skipped (testkit's `require_tools`).

// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use vitastor_testkit::{process, vm, Cluster, ClusterOptions};

/// Upper bound on one QEMU program run; the slowest (a VM boot under TCG) takes ~10 s.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);
pub const MIB: u64 = 1 << 20;

/// The driver under test. build.rs of this package writes it, and Cargo runs build.rs
/// before compiling these tests, so it is never stale; the libvitastor.so it loads (through
/// `$ORIGIN`) is rebuilt here when stale.
pub fn driver() -> PathBuf {
    vm::driver().unwrap_or_else(|e| panic!("{e}"))
}

/// 3 OSDs, pool 1 with pg_size 2 (pg_minsize 1), 16 PGs, 128 KiB objects.
pub fn start_cluster() -> Cluster {
    let mut opts = ClusterOptions::from_workspace();
    opts.pg_count = 16;
    opts.osd_size = 768 << 20;
    Cluster::start(opts).expect("cluster starts")
}

/// 3 OSDs, pool 1 erasure-coded 2+1 (pg_minsize 2), 16 PGs, 256 KiB objects (two 128 KiB
/// data parts and a parity part).
pub fn start_ec_cluster() -> Cluster {
    let mut opts = ClusterOptions::from_workspace();
    opts.pg_size = 3;
    opts.scheme = "ec".into();
    opts.parity_chunks = 1;
    opts.pg_minsize = Some(2);
    opts.pg_count = 16;
    opts.osd_size = 768 << 20;
    Cluster::start(opts).expect("cluster starts")
}

/// `vitastor:image=NAME:etcd_host=127.0.0.1\:PORT/v3`.
pub fn image_spec(cl: &Cluster, name: &str) -> String {
    format!(
        "vitastor:image={name}:etcd_host={}",
        cl.etcd_address().replace(':', "\\:")
    )
}

/// Runs `program args` with the driver preloaded (in this child only) and returns its
/// output; panics when it does not finish within RUN_TIMEOUT (after killing it).
pub fn qemu(program: &str, args: &[&str]) -> Output {
    process::output_within(
        Command::new(program)
            .args(args)
            .env("LD_PRELOAD", driver())
            .stdin(Stdio::null()),
        RUN_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

/// Like [`qemu`], but the run must succeed; returns stdout.
pub fn qemu_ok(program: &str, args: &[&str]) -> String {
    let out = qemu(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic bytes that differ at every offset and between seeds.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `qemu-img info --output=json` of a raw vitastor image.
pub fn info(spec: &str) -> serde_json::Value {
    let out = qemu_ok("qemu-img", &["info", "-f", "raw", "--output=json", spec]);
    serde_json::from_str(&out).expect("qemu-img info prints JSON")
}

/// Reads `len` bytes at `offset` of the image (through a full copy into `dir`).
pub fn read_image(spec: &str, dir: &Path, offset: u64, len: u64) -> Vec<u8> {
    let out = dir.join("readback.raw");
    qemu_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            spec,
            out.to_str().expect("UTF-8 path"),
        ],
    );
    let data = fs::read(&out).expect("reading the image copy");
    data[offset as usize..(offset + len) as usize].to_vec()
}
