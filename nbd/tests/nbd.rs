//! `vitastor-nbd` end to end on a local cluster (etcd + 3 OSDs, pool 1, 128 KiB objects,
//! 4 KiB granularity), through the NBD tools of Debian's libnbd-bin, qemu-img, fio, the
//! kernel's loop device and ext4 (over nbdfuse), and a hand-written client for malformed
//! input. The tools are required (`make setup` installs them; see testkit's
//! `require_tools`); what this machine cannot do (no NBD kernel module, not root) is skipped
//! and listed in the run's skip summary (testkit's `skip_unavailable`). The nbdcopy round
//! trip also runs once on an erasure-coded (EC 2+1) image of a second cluster.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vitastor_testkit::{require_tools, skip_unavailable};

#[test]
fn nbdinfo_and_nbdcopy_round_trip() {
    if !require_tools(&["nbdinfo", "nbdcopy"]) {
        return;
    }
    let dir = scratch("copy");
    let serve = Serve::start(dir.path(), "nbd-copy", 64 * MIB);
    let info: serde_json::Value =
        serde_json::from_str(&run_ok(30, "nbdinfo", &["--json", &serve.uri()]))
            .expect("nbdinfo JSON");
    let export = &info["exports"][0];
    assert_eq!(export["export-size"], 64 * MIB, "{info}");
    assert_eq!(export["block_size_minimum"], 4096, "{info}");
    assert_eq!(export["can_flush"], true, "{info}");
    assert_eq!(export["can_fua"], true, "{info}");
    assert_eq!(export["can_trim"], true, "{info}");
    assert_eq!(export["can_zero"], true, "{info}");
    assert_eq!(export["is_read_only"], false, "{info}");
    nbdcopy_round_trip(&serve, dir.path());
}

/// The nbdcopy round trip on an image of an erasure-coded 2+1 pool (issue #13).
#[test]
fn nbdcopy_round_trip_on_an_ec_image() {
    if !require_tools(&["nbdcopy"]) {
        return;
    }
    let dir = scratch("ec-copy");
    let serve = Serve::start_on(ec_cluster(), dir.path(), "nbd-ec", 64 * MIB);
    nbdcopy_round_trip(&serve, dir.path());
}

/// 24 MiB of data copied into the start of the 64 MiB export and all of it copied back:
/// the data, then zeroes.
fn nbdcopy_round_trip(serve: &Serve, dir: &Path) {
    let data = pattern(24 * MIB as usize, 1);
    let src = dir.join("src.bin");
    let out = dir.join("out.bin");
    fs::write(&src, &data).unwrap();
    run_ok(60, "nbdcopy", &[src.to_str().unwrap(), &serve.uri()]);
    run_ok(60, "nbdcopy", &[&serve.uri(), out.to_str().unwrap()]);
    let back = fs::read(&out).unwrap();
    assert_eq!(back.len() as u64, 64 * MIB);
    assert!(
        back[..data.len()] == data[..],
        "data differs after the round trip"
    );
    assert!(
        back[data.len()..].iter().all(|&b| b == 0),
        "tail is not zero"
    );
}

#[test]
fn qemu_img_convert_and_compare() {
    if !require_tools(&["qemu-img"]) {
        return;
    }
    let dir = scratch("qemu");
    let serve = Serve::start(dir.path(), "nbd-qemu", 32 * MIB);
    let src = dir.path().join("src.raw");
    let mut data = pattern(32 * MIB as usize, 2);
    // Leave holes so qemu-img sends zero/trim requests as well as writes.
    data[4 * MIB as usize..6 * MIB as usize].fill(0);
    fs::write(&src, &data).unwrap();
    let uri = serve.uri();
    let s = src.to_str().unwrap();
    run_ok(
        60,
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", s, &uri],
    );
    let cmp = run_ok(
        60,
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", s, &uri],
    );
    assert!(cmp.contains("identical"), "{cmp}");
}

#[test]
fn fio_nbd_engine_verify() {
    if !require_tools(&["fio"]) {
        return;
    }
    let dir = scratch("fio");
    let serve = Serve::start(dir.path(), "nbd-fio", 64 * MIB);
    let out = run_ok(
        90,
        "fio",
        &[
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={}", serve.uri()),
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--size=32M",
            "--verify=crc32c",
            "--do_verify=1",
            // Otherwise fio leaves its verify state file in the package directory.
            "--verify_state_save=0",
            "--output-format=json",
        ],
    );
    let start = out.find('{').expect("fio JSON");
    let v: serde_json::Value = serde_json::from_str(&out[start..]).expect("fio JSON");
    let job = &v["jobs"][0];
    assert_eq!(job["error"], 0, "{job}");
    assert_eq!(job["write"]["io_bytes"], 32 * MIB, "{job}");
    assert_eq!(
        job["read"]["io_bytes"],
        32 * MIB,
        "verify pass read everything: {job}"
    );
}

/// nbdfuse exposes the export as a file; a loop device over it carries ext4.
#[test]
fn ext4_over_nbdfuse_and_loop() {
    if !require_tools(&[
        "nbdfuse",
        "fusermount3",
        "mkfs.ext4",
        "fsck.ext4",
        "losetup",
        "blockdev",
        "mount",
        "umount",
    ]) {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_unavailable("mounting needs root (loop devices, mount)");
        return;
    }
    for dev in ["/dev/fuse", "/dev/loop-control"] {
        if !Path::new(dev).exists() {
            skip_unavailable(&format!("{dev} is missing"));
            return;
        }
    }
    let dir = scratch("ext4");
    let serve = Serve::start(dir.path(), "nbd-ext4", 128 * MIB);
    let fuse_dir = dir.path().join("fuse");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&fuse_dir).unwrap();
    fs::create_dir(&mnt).unwrap();
    let pidfile = dir.path().join("nbdfuse.pid");
    let mut fuse = Command::new("nbdfuse")
        .arg("-P")
        .arg(&pidfile)
        .arg(&fuse_dir)
        .arg(serve.uri())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning nbdfuse");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pidfile.exists() {
        assert!(Instant::now() < deadline, "nbdfuse did not become ready");
        if let Some(st) = fuse.try_wait().unwrap() {
            panic!("nbdfuse exited early with {st}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let file = fuse_dir.join("nbd");
    let result = std::panic::catch_unwind(|| {
        // 4 KiB sectors: the export's advertised minimum block size. With 512-byte sectors
        // the loop device sends 512-byte-aligned I/O, which libnbd (under nbdfuse) refuses
        // itself because it honours that minimum.
        let loopdev = run_ok(
            30,
            "losetup",
            &["-f", "--show", "-b", "4096", file.to_str().unwrap()],
        )
        .trim()
        .to_string();
        let inner = std::panic::catch_unwind(|| ext4_cycle(&loopdev, &mnt));
        let _ = run(30, "umount", &[mnt.to_str().unwrap()]);
        run_ok(30, "losetup", &["-d", &loopdev]);
        if let Err(e) = inner {
            std::panic::resume_unwind(e);
        }
    });
    let _ = run(30, "fusermount3", &["-u", fuse_dir.to_str().unwrap()]);
    let _ = fuse.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn ext4_cycle(loopdev: &str, mnt: &Path) {
    let m = mnt.to_str().unwrap();
    run_ok(60, "mkfs.ext4", &["-q", "-F", loopdev]);
    run_ok(30, "mount", &[loopdev, m]);
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            (
                format!("f{i}.bin"),
                pattern(((i + 1) * 700_001) % (3 << 20), i as u64 + 10),
            )
        })
        .collect();
    fs::create_dir(mnt.join("sub")).unwrap();
    for (name, data) in &files {
        fs::write(mnt.join("sub").join(name), data).unwrap();
    }
    run_ok(30, "sync", &[]);
    run_ok(30, "umount", &[m]);
    let fsck = run(60, "fsck.ext4", &["-n", "-f", loopdev]);
    assert!(
        fsck.status.success(),
        "fsck -n reported problems:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    // Drop the loop device's page cache so the second mount reads through NBD.
    run_ok(30, "blockdev", &["--flushbufs", loopdev]);
    run_ok(30, "mount", &[loopdev, m]);
    for (name, data) in &files {
        let back = fs::read(mnt.join("sub").join(name)).unwrap();
        assert!(back == *data, "{name} differs after remount");
    }
    run_ok(30, "umount", &[m]);
}

/// The kernel path where /dev/nbd0 exists; elsewhere `map` must fail with a clear message.
#[test]
fn kernel_map() {
    let c = cluster();
    create_image("nbd-map", 32 * MIB);
    let nbd = env!("CARGO_BIN_EXE_vitastor-nbd");
    let addr = c.etcd_address();
    if !Path::new("/dev/nbd0").exists() {
        let out = run(
            60,
            nbd,
            &["map", "--etcd_address", &addr, "--image", "nbd-map"],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "map succeeded without /dev/nbd0");
        assert!(err.contains("NBD module"), "unclear message: {err}");
        skip_unavailable(&format!(
            "kernel map path: /dev/nbd0 does not exist (no nbd module); checked the error: {}",
            err.trim()
        ));
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_unavailable("kernel map path needs root");
        return;
    }
    let dev = run_ok(
        60,
        nbd,
        &["map", "--etcd_address", &addr, "--image", "nbd-map"],
    );
    let dev = dev.trim().to_string();
    assert!(dev.starts_with("/dev/nbd"), "{dev}");
    let ls = run_ok(30, nbd, &["ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(v[&dev]["image"], "nbd-map", "{ls}");
    let data = pattern(4 * MIB as usize, 5);
    let tmp = scratch("map");
    let src = tmp.path().join("src");
    fs::write(&src, &data).unwrap();
    run_ok(
        60,
        "dd",
        &[
            &format!("if={}", src.display()),
            &format!("of={dev}"),
            "bs=1M",
            "oflag=direct",
        ],
    );
    let out = tmp.path().join("out");
    run_ok(
        60,
        "dd",
        &[
            &format!("if={dev}"),
            &format!("of={}", out.display()),
            "bs=1M",
            "count=4",
            "iflag=direct",
        ],
    );
    assert!(fs::read(&out).unwrap() == data);
    run_ok(30, nbd, &["unmap", &dev]);
}

#[test]
fn malformed_input_and_protocol_edges() {
    let dir = scratch("bad");
    let serve = Serve::start(dir.path(), "nbd-bad", 8 * MIB);

    // Unknown export: an error reply, and the connection stays usable for a known one.
    let mut s = RawClient::connect(&serve.socket);
    let (kind, _) = RawClient::go(&mut s, "no-such-image");
    assert_eq!(kind, REP_ERR_UNKNOWN);
    let (kind, _) = RawClient::go(&mut s, "nbd-bad");
    assert_eq!(kind, REP_ACK);
    drop(s);

    let mut c = RawClient::open(&serve.socket, "nbd-bad");
    assert_eq!(c.size, 8 * MIB);
    assert_eq!(c.min_block, 4096);
    // Out-of-range and oversized requests: error replies, connection kept.
    assert_eq!(c.call(CMD_READ, 0, 8 * MIB, 4096, &[]).0, EINVAL);
    assert_eq!(c.call(CMD_READ, 0, u64::MAX - 100, 4096, &[]).0, EINVAL);
    assert_eq!(c.call(CMD_READ, 0, 0, u32::MAX, &[]).0, EINVAL);
    assert_eq!(c.call(CMD_WRITE, 0, 8 * MIB, 4096, &[0; 4096]).0, ENOSPC);
    assert_eq!(
        c.call(CMD_WRITE, 0, 512, 512, &[0; 512]).0,
        EINVAL,
        "unaligned write"
    );
    assert_eq!(c.call(CMD_TRIM, 0, 0, u32::MAX, &[]).0, ENOSPC);
    assert_eq!(c.call(99, 0, 0, 0, &[]).0, EINVAL, "unknown command");
    // A write bigger than the advertised maximum: payload skipped, EINVAL.
    let huge = vec![0xA5u8; (32 << 20) + 4096];
    assert_eq!(c.call(CMD_WRITE, 0, 0, huge.len() as u32, &huge).0, EINVAL);

    // Data path: FUA write, 512-byte-aligned read, flush, zeroes across objects, trim.
    let obj = 128 * 1024u64;
    let data = pattern(4 * obj as usize, 3);
    assert_eq!(
        c.call(CMD_WRITE, FLAG_FUA, 0, data.len() as u32, &data).0,
        0
    );
    let (e, back) = c.call(CMD_READ, 0, 512, 1536, &[]);
    assert_eq!(e, 0);
    assert_eq!(back, data[512..2048]);
    assert_eq!(c.call(CMD_FLUSH, 0, 0, 0, &[]).0, 0);
    // Zero [obj - 8K, 3*obj + 4K): a partial head, two whole objects, a partial tail.
    let (zs, ze) = (obj - 8192, 3 * obj + 4096);
    assert_eq!(c.call(CMD_WRITE_ZEROES, 0, zs, (ze - zs) as u32, &[]).0, 0);
    let (e, back) = c.call(CMD_READ, 0, 0, data.len() as u32, &[]);
    assert_eq!(e, 0);
    let mut expect = data.clone();
    expect[zs as usize..ze as usize].fill(0);
    assert!(back == expect, "WRITE_ZEROES result differs");
    assert_eq!(c.call(CMD_TRIM, 0, 0, 4 * obj as u32, &[]).0, 0);
    let (_, back) = c.call(CMD_READ, 0, 0, 4 * obj as u32, &[]);
    assert!(back.iter().all(|&b| b == 0), "trimmed range is not zero");

    // Many requests in flight, answered in completion order (match by cookie).
    let n = 200u64;
    for i in 0..n {
        let block = pattern(4096, 100 + i);
        c.send(CMD_WRITE, 0, 1000 + i, i * 4096, 4096, &block);
    }
    let mut seen: Vec<u64> = (0..n)
        .map(|_| c.reply())
        .map(|(k, e)| {
            assert_eq!(e, 0);
            k
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1000..1000 + n).collect::<Vec<_>>());
    let (_, back) = c.call(CMD_READ, 0, 0, (n * 4096) as u32, &[]);
    for i in 0..n as usize {
        assert!(back[i * 4096..(i + 1) * 4096] == pattern(4096, 100 + i as u64)[..]);
    }

    // Garbage after the handshake closes that connection only.
    let mut g = RawClient::open(&serve.socket, "nbd-bad");
    use std::io::{Read, Write};
    g.s.write_all(&[0xEE; 64]).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(g.s.read(&mut buf).unwrap_or(0), 0, "expected a close");
    // Garbage in the handshake too.
    let mut h = std::os::unix::net::UnixStream::connect(&serve.socket).unwrap();
    h.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greet = [0u8; 18];
    h.read_exact(&mut greet).unwrap();
    h.write_all(&[0xFF; 200]).unwrap();
    assert_eq!(h.read(&mut buf).unwrap_or(0), 0, "expected a close");

    // The first connection and new ones still work.
    assert_eq!(c.call(CMD_READ, 0, 0, 4096, &[]).0, 0);
    let mut d = RawClient::open(&serve.socket, "");
    assert_eq!(d.call(CMD_READ, 0, 4096, 4096, &[]).1, pattern(4096, 101));
    d.send(CMD_DISC, 0, 1, 0, 0, &[]);
    assert_eq!(d.s.read(&mut buf).unwrap_or(0), 0, "DISC closes");
}

/// A 4 MiB read reply goes to the socket in one write call, header and data together (the
/// server asks for a send buffer that holds it), not one per default-sized socket buffer
/// plus the calls refused with `EAGAIN` in between. Counted by the server's write-family
/// system calls (`syscw` of /proc/PID/io; the cluster client sends with sendmsg, which that
/// count leaves out).
#[test]
fn large_read_reply_is_one_write() {
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let wmem_max: u64 = fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if !root && wmem_max < 4 * MIB + 4096 {
        skip_unavailable("large_read_reply_is_one_write: not root and net.core.wmem_max < 4 MiB");
        return;
    }
    let dir = scratch("bigread");
    let serve = Serve::start(dir.path(), "nbd-bigread", 16 * MIB);
    let mut c = RawClient::open(&serve.socket, "nbd-bigread");
    let data = pattern(4 * MIB as usize, 9);
    assert_eq!(c.call(CMD_WRITE, 0, 0, data.len() as u32, &data).0, 0);
    let reads = 8;
    let before = write_calls(serve.pid());
    for _ in 0..reads {
        let (e, back) = c.call(CMD_READ, 0, 0, data.len() as u32, &[]);
        assert_eq!(e, 0);
        assert!(back == data, "read data differs");
    }
    let calls = write_calls(serve.pid()) - before;
    assert!(
        calls <= reads,
        "{calls} write calls for {reads} replies of 4 MiB"
    );
}

/// Write-family system calls a process has made (`syscw` in /proc/PID/io).
fn write_calls(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).expect("reading /proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("syscw in /proc/PID/io")
}

#[test]
fn sigterm_finishes_in_flight_and_exits_cleanly() {
    let dir = scratch("term");
    let mut serve = Serve::start(dir.path(), "nbd-term", 16 * MIB);
    let mut c = RawClient::open(&serve.socket, "nbd-term");
    let n = 64u64;
    for i in 0..n {
        c.send(CMD_WRITE, 0, i, i * 65536, 65536, &pattern(65536, i));
    }
    // SAFETY: kill(2) on our own unreaped child's PID.
    unsafe { libc::kill(serve.pid() as libc::pid_t, libc::SIGTERM) };
    // Requests the server had read are answered; ones still in the socket buffer when the
    // signal came may not be. Every reply must be a success, then the connection closes.
    use std::io::Read;
    let mut answered = Vec::new();
    loop {
        let mut h = [0u8; 16];
        match c.s.read_exact(&mut h) {
            Ok(()) => {
                assert_eq!(&h[4..8], &[0; 4], "an in-flight write failed at shutdown");
                answered.push(u64::from_be_bytes(h[8..16].try_into().unwrap()));
            }
            Err(_) => break,
        }
    }
    assert!(!answered.is_empty(), "no request was answered");
    let st = serve.terminate();
    assert!(st.success(), "exit status {st}");
    assert!(!serve.socket.exists(), "socket file left behind");
    // The writes are there.
    let dir2 = scratch("term2");
    let serve2 = Serve::start(dir2.path(), "nbd-term", 16 * MIB);
    let mut c = RawClient::open(&serve2.socket, "nbd-term");
    for i in answered {
        assert!(c.call(CMD_READ, 0, i * 65536, 65536, &[]).1 == pattern(65536, i));
    }
}

/// Client options on the command line reach libvitastor: bad values (zero, not a number)
/// stop `serve` with an error naming the option; good ones serve the image.
#[test]
fn client_options_pass_through() {
    let dir = scratch("clientopts");
    create_image("nbd-clientopts", 4 * MIB);
    let etcd = cluster().etcd_address();
    let socket = dir.path().join("nbd.sock");
    let socket = socket.to_str().unwrap();
    let base = [
        "serve",
        "--etcd_address",
        &etcd,
        "--image",
        "nbd-clientopts",
        "--socket",
        socket,
    ];
    for (name, bad) in [
        ("--client_op_timeout", "0"),
        ("--client_retry_interval", "soon"),
        ("--peer_connect_timeout", "0"),
    ] {
        let mut args = base.to_vec();
        args.extend([name, bad]);
        let out = run(60, env!("CARGO_BIN_EXE_vitastor-nbd"), &args);
        assert!(!out.status.success(), "{name} {bad} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("invalid option {}", &name[2..])),
            "{name} {bad}: {err}"
        );
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_vitastor-nbd"))
        .args(base)
        .args(["--client_op_timeout", "3", "--client_retry_interval", "20"])
        .args(["--peer_connect_timeout", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning vitastor-nbd serve");
    let mut serve = Serve {
        child: None,
        socket: socket.into(),
        image: "nbd-clientopts".into(),
    };
    let line = vitastor_testkit::process::first_line_within(&mut child, Duration::from_secs(60));
    serve.child = Some(child);
    assert!(
        matches!(&line, Ok(Some(l)) if l.starts_with("listening on unix:")),
        "{line:?}"
    );
    assert_eq!(
        RawClient::open(&serve.socket, "nbd-clientopts").size,
        4 * MIB
    );
    assert!(serve.terminate().success());
}
