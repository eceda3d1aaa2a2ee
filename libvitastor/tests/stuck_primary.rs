//! A primary that is alive but stuck (SIGSTOP) must not hang client I/O (issue #16): fio
//! writes with `-verify=crc32c` through the fio engine while the primary of a PG is stopped
//! long enough for its etcd lease to expire and the monitor to move its PGs, then continued.
//! fio must finish with no verify error, and the client must have given up on the stuck OSD
//! by `client_op_timeout` (set in `config/global`) rather than waiting for it to wake up.
//!
//! Only processes this test started are signalled or killed, by PID or handle; the cluster
//! stops on drop.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use vitastor_testkit::{artifacts, require_tools, Cluster, ClusterOptions};

/// How long the primary stays stopped: longer than its lease (10 s in testkit's cluster), so
/// its PGs move, and longer than the client's op timeout.
const STOPPED: Duration = Duration::from_secs(20);
/// `client_op_timeout` for the test (the default is 5 s): well below [`STOPPED`].
const OP_TIMEOUT_S: u64 = 3;
/// A liveness bound only: fio needs well under a minute; past this the client hung.
const FIO_DEADLINE: Duration = Duration::from_secs(240);

/// Our fio, killed and reaped if the test fails before it exits.
struct Fio(Child);

impl Drop for Fio {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the PID of an OSD this test's cluster started and still holds.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

#[test]
fn stuck_primary_does_not_hang_fio() {
    if !require_tools(&["fio"]) {
        return;
    }
    let mut opts = ClusterOptions::from_workspace();
    opts.osds = 3;
    opts.pg_size = 2;
    opts.pg_count = 8;
    opts.monitors = 1;
    opts.write_pg_config = false;
    opts.osd_size = 256 << 20;
    let cluster = Cluster::start(opts).expect("starting the cluster");
    // fio's client takes the option from etcd, as any client without a config file does.
    cluster
        .put_json(
            "config/global",
            &serde_json::json!({"immediate_commit": "all", "client_op_timeout": OP_TIMEOUT_S}),
        )
        .expect("writing config/global");
    let engine = artifacts::fresh_path("libfio_vitastor.so");
    artifacts::fresh_path("libvitastor.so");

    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    // 32 MiB at 2 MiB/s: writes go on for ~16 s, across the stop, then fio reads it all back.
    let mut fio = Fio(Command::new("fio")
        .arg("-thread")
        .arg(format!("-ioengine={}", engine.display()))
        .arg(format!("-etcd={}", cluster.etcd_address()))
        .args(["-pool=1", "-inode=1", "-size=32M", "-rate=2m", "-bs=4k"])
        .args(["-name=stuck", "-direct=1", "-iodepth=16", "-rw=randwrite"])
        .args([
            "-verify=crc32c",
            "-continue_on_error=verify",
            "-output-format=json",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .expect("running fio"));

    thread::sleep(Duration::from_secs(3));
    let states = cluster.pg_states().expect("reading pg/state");
    let primary = states
        .iter()
        .find_map(|(_, v)| v["primary"].as_u64())
        .expect("a PG with a primary");
    let pid = cluster
        .osd_pids()
        .into_iter()
        .find_map(|(osd, pid)| (osd == primary).then_some(pid))
        .expect("the primary's PID");
    signal(pid, libc::SIGSTOP);
    thread::sleep(STOPPED);
    signal(pid, libc::SIGCONT);

    let started = Instant::now();
    let status = loop {
        if let Some(status) = fio.0.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > FIO_DEADLINE {
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    drop(fio);
    let stdout = fs::read_to_string(&out).unwrap_or_default();
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("fio hung; stderr: {stderr}"));
    let report: serde_json::Value = stdout
        .find('{')
        .and_then(|i| serde_json::from_str(&stdout[i..]).ok())
        .unwrap_or_else(|| panic!("no fio report; stdout: {stdout}; stderr: {stderr}"));
    let job = &report["jobs"][0];
    println!(
        "stuck primary OSD {primary} for {} s: longest write {:.1} s; client log:\n{stderr}",
        STOPPED.as_secs(),
        job["write"]["clat_ns"]["max"].as_f64().unwrap_or(0.0) / 1e9
    );
    assert!(status.success(), "fio failed: {status}; stderr: {stderr}");
    assert_eq!(job["error"], 0, "fio job error; stderr: {stderr}");
    assert_eq!(job["total_err"], 0, "verify errors; stderr: {stderr}");
    assert!(
        stderr.contains(&format!("OSD {primary}: no reply"))
            && stderr.contains(&format!("client_op_timeout {OP_TIMEOUT_S} s")),
        "the client waited for the stuck OSD {primary} instead of timing out; stderr: {stderr}"
    );
}
