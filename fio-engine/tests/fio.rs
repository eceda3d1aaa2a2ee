//! The fio engine end to end: the installed `/usr/bin/fio` loads
//! `target/<profile>/libfio_vitastor.so` and does I/O on a local cluster (testkit's
//! `Cluster`: etcd + 3 OSDs, pool 1 with 128 KiB objects).
//!
//! Every fio run writes JSON output to a file; a run passes when fio exits 0 and every job
//! reports `error == 0` with the expected byte counts. Data is checked by fio itself
//! (`-verify=crc32c`: each block carries a header and checksum that fio reads back).
//!
//! `/usr/bin/fio` is required (`make setup` installs it): without it the tests fail, or with
//! `VITASTOR_ALLOW_SKIP=1` are listed as skipped (testkit's `prereq`). The engine, libvitastor
//! and the OSD binaries are rebuilt first when stale (testkit's `artifacts`).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vitastor_testkit::{artifacts, require_tools, Cluster, ClusterOptions};

const FIO: &str = "/usr/bin/fio";
/// Upper bound on one fio run; the longest here takes a few seconds.
const FIO_TIMEOUT: Duration = Duration::from_secs(90);
const MIB: u64 = 1 << 20;

/// The engine under test, and the libvitastor.so it loads (through `$ORIGIN`), both fresh.
fn engine() -> PathBuf {
    artifacts::fresh_path("libvitastor.so");
    artifacts::fresh_path("libfio_vitastor.so")
}

fn start_cluster(immediate_commit: &str) -> Cluster {
    engine();
    let mut opts = ClusterOptions::from_workspace();
    opts.immediate_commit = immediate_commit.into();
    // 3 x 512 MiB is plenty for the 64 MiB images here and keeps the sparse files small.
    opts.osd_size = 512 * MIB;
    Cluster::start(opts).expect("starting the cluster")
}

struct FioRun {
    status: ExitStatus,
    /// stdout (JSON when fio got that far) and stderr, for messages and failure reports.
    stdout: String,
    stderr: String,
}

/// The complete JSON documents in fio's output, in order: one per `-status-interval`, then
/// the final report. fio may print warnings before the first; a document still being
/// written ends the list.
fn json_documents(stdout: &str) -> Vec<Value> {
    let Some(start) = stdout.find('{') else {
        return Vec::new();
    };
    serde_json::Deserializer::from_str(&stdout[start..])
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

impl FioRun {
    /// The final report.
    fn json(&self) -> Value {
        json_documents(&self.stdout)
            .pop()
            .unwrap_or_else(|| self.fail("no JSON output"))
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}; fio exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// The jobs of a successful run, each checked for `error == 0`.
    fn ok_jobs(&self) -> Vec<Value> {
        if !self.status.success() {
            self.fail("fio failed");
        }
        let jobs = self.json()["jobs"].as_array().cloned().unwrap_or_default();
        if jobs.is_empty() {
            self.fail("no jobs in the output");
        }
        for j in &jobs {
            if j["error"] != 0 {
                self.fail(&format!(
                    "job {} reported error {}",
                    j["jobname"], j["error"]
                ));
            }
        }
        jobs
    }
}

/// A fio process started with the engine and the cluster's etcd address, then `args`.
struct FioChild {
    child: std::process::Child,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

fn fio_start(cluster: &Cluster, args: &[&str]) -> FioChild {
    fio_start_etcd(&cluster.etcd_address(), args)
}

fn fio_start_etcd(etcd: &str, args: &[&str]) -> FioChild {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = engine();
    let child = Command::new(FIO)
        .arg("-thread")
        .arg(format!("-ioengine={}", engine.display()))
        .arg(format!("-etcd={etcd}"))
        .args(["-name=test", "-direct=1", "-output-format=json"])
        .args(args)
        .stdin(Stdio::null())
        // fio leaves verify state files in its working directory.
        .current_dir(dir.path())
        // Files, not pipes: nothing has to drain them while we wait.
        .stdout(fs::File::create(dir.path().join("out")).expect("stdout file"))
        .stderr(fs::File::create(dir.path().join("err")).expect("stderr file"))
        .spawn()
        .expect("running fio");
    FioChild {
        child,
        dir,
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

impl FioChild {
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("waiting for fio").is_none()
    }

    /// Waits until fio's periodic status (it must run with `-status-interval=1`) reports at
    /// least `bytes` written, and returns the reported byte count. Fails when fio exits first.
    fn wait_written(&mut self, bytes: u64) -> u64 {
        let out = self.dir.path().join("out");
        let deadline = Instant::now() + FIO_TIMEOUT;
        loop {
            let text = fs::read_to_string(&out).unwrap_or_default();
            let written = json_documents(&text)
                .last()
                .map(|doc| bytes_of(&doc["jobs"][0], "write"))
                .unwrap_or(0);
            if written >= bytes {
                return written;
            }
            assert!(
                self.running(),
                "fio {:?} exited after writing {written} bytes, expected it to run on:\n{}",
                self.args,
                fs::read_to_string(self.dir.path().join("err")).unwrap_or_default()
            );
            assert!(
                Instant::now() < deadline,
                "fio {:?} wrote only {written} bytes in {FIO_TIMEOUT:?}",
                self.args
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until fio has written a first part of `total` bytes and asserts it is still
    /// running and still writing, so that what happens next happens in the middle of its
    /// writes (otherwise the test would prove nothing).
    fn wait_mid_write(&mut self, total: u64) {
        let written = self.wait_written(MIB);
        assert!(
            written < total && self.running(),
            "fio {:?} finished its writes ({written} of {total} bytes) before the cluster \
             trouble could start",
            self.args
        );
    }

    fn wait(mut self, timeout: Duration) -> FioRun {
        let (out, err) = (self.dir.path().join("out"), self.dir.path().join("err"));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for fio") {
                break status;
            }
            if Instant::now() > deadline {
                // Our own child, by its handle.
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "fio {:?} ran longer than {timeout:?}; stderr:\n{}",
                    self.args,
                    fs::read_to_string(&err).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        FioRun {
            status,
            stdout: fs::read_to_string(&out).unwrap_or_default(),
            stderr: fs::read_to_string(&err).unwrap_or_default(),
        }
    }
}

/// A fio left running by a failed assertion is killed (our own child, by its handle).
impl Drop for FioChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs fio with the engine and the cluster's etcd address, then `args`.
fn fio(cluster: &Cluster, args: &[&str]) -> FioRun {
    fio_start(cluster, args).wait(FIO_TIMEOUT)
}

fn bytes_of(job: &Value, dir: &str) -> u64 {
    job[dir]["io_bytes"].as_u64().unwrap_or(0)
}

/// Puts an image the way `vitastor-cli create` does: its config and its name index.
fn create_image(cluster: &Cluster, name: &str, id: u64, size: u64, readonly: bool) {
    let mut cfg = json!({"name": name, "size": size});
    if readonly {
        cfg["readonly"] = json!(true);
    }
    cluster
        .put_json(&format!("config/inode/1/{id}"), &cfg)
        .expect("putting the image config");
    cluster
        .put_json(
            &format!("index/image/{name}"),
            &json!({"id": id, "pool_id": 1}),
        )
        .expect("putting the image index");
}

/// Random 4 KiB writes at depth 16 with verification, a 4 MiB sequential pass, two jobs on
/// different offsets, an image addressed by name (size taken from etcd), and the refusals
/// (missing image, read-only image, missing -size), all on one `immediate_commit=all` cluster.
#[test]
fn engine_on_cluster() {
    if !require_tools(&[FIO]) {
        return;
    }
    let cluster = start_cluster("all");

    // randwrite 4k iodepth 16, every block read back and checked.
    let run = fio(
        &cluster,
        &[
            "-pool=1",
            "-inode=1",
            "-size=64M",
            "-bs=4k",
            "-iodepth=16",
            "-rw=randwrite",
            "-verify=crc32c",
        ],
    );
    let job = &run.ok_jobs()[0];
    assert_eq!(bytes_of(job, "write"), 64 * MIB, "randwrite bytes");
    assert_eq!(bytes_of(job, "read"), 64 * MIB, "verify bytes");
    // A new client (given valid client options, which libvitastor checks) reads the same
    // blocks back and checks them again...
    let run = fio(
        &cluster,
        &[
            "-pool=1",
            "-inode=1",
            "-size=64M",
            "-bs=4k",
            "-iodepth=16",
            "-rw=read",
            "-verify=crc32c",
            "-client_op_timeout=3",
            "-client_retry_interval=20",
            "-peer_connect_timeout=2",
        ],
    );
    assert_eq!(
        bytes_of(&run.ok_jobs()[0], "read"),
        64 * MIB,
        "read-back bytes"
    );
    // ...and the same check fails on an inode never written (so verify really looks).
    let run = fio(
        &cluster,
        &[
            "-pool=1",
            "-inode=9",
            "-size=1M",
            "-bs=4k",
            "-rw=read",
            "-verify=crc32c",
        ],
    );
    assert!(!run.status.success(), "verify must fail on unwritten data");
    assert!(
        run.stderr.contains("bad magic header"),
        "verify failure message not found in:\n{}",
        run.stderr
    );

    // Sequential 4 MiB writes (each spans 32 objects), verified.
    let run = fio(
        &cluster,
        &[
            "-pool=1",
            "-inode=2",
            "-size=64M",
            "-bs=4M",
            "-iodepth=4",
            "-rw=write",
            "-verify=crc32c",
        ],
    );
    let job = &run.ok_jobs()[0];
    assert_eq!(bytes_of(job, "write"), 64 * MIB, "sequential write bytes");
    assert_eq!(bytes_of(job, "read"), 64 * MIB, "sequential verify bytes");

    // Two jobs (two clients) on the two halves of one inode.
    let run = fio(
        &cluster,
        &[
            "-pool=1",
            "-inode=3",
            "-size=32M",
            "-offset_increment=32M",
            "-numjobs=2",
            "-bs=4k",
            "-iodepth=8",
            "-rw=randwrite",
            "-verify=crc32c",
        ],
    );
    let jobs = run.ok_jobs();
    assert_eq!(jobs.len(), 2, "numjobs=2 gives two job reports");
    for job in &jobs {
        assert_eq!(
            bytes_of(job, "write"),
            32 * MIB,
            "numjobs write bytes per job"
        );
        assert_eq!(
            bytes_of(job, "read"),
            32 * MIB,
            "numjobs verify bytes per job"
        );
    }

    // By name: the size comes from the image (no -size), then read it all back.
    create_image(&cluster, "fioimg", 4, 16 * MIB, false);
    let run = fio(
        &cluster,
        &[
            "-image=fioimg",
            "-bs=64k",
            "-iodepth=8",
            "-rw=randwrite",
            "-verify=crc32c",
        ],
    );
    let job = &run.ok_jobs()[0];
    assert_eq!(
        bytes_of(job, "write"),
        16 * MIB,
        "image size taken from etcd"
    );
    let run = fio(
        &cluster,
        &["-image=fioimg", "-bs=1M", "-iodepth=2", "-rw=read"],
    );
    assert_eq!(
        bytes_of(&run.ok_jobs()[0], "read"),
        16 * MIB,
        "image read bytes"
    );

    // Trim (vitastor_c_delete) over part of the image.
    let run = fio(
        &cluster,
        &[
            "-image=fioimg",
            "-size=4M",
            "-bs=128k",
            "-iodepth=4",
            "-rw=trim",
        ],
    );
    assert_eq!(bytes_of(&run.ok_jobs()[0], "trim"), 4 * MIB, "trim bytes");

    // Refusals, each with a message that says why.
    let run = fio(&cluster, &["-image=nosuchimage", "-bs=4k", "-rw=randread"]);
    assert!(!run.status.success(), "fio must fail on a missing image");
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(
        text.contains("image nosuchimage does not exist"),
        "missing-image message not found in:\n{text}"
    );

    // I/O errors reach fio as io_u->error: writes below the 4 KiB bitmap granularity are
    // refused by the cluster with EINVAL.
    let run = fio(
        &cluster,
        &[
            "-pool=1",
            "-inode=7",
            "-size=1M",
            "-bs=512",
            "-rw=randwrite",
        ],
    );
    assert!(!run.status.success(), "fio must report the refused write");
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(
        text.contains("Invalid argument"),
        "EINVAL not reported in:\n{text}"
    );

    create_image(&cluster, "roimg", 5, 16 * MIB, true);
    let run = fio(&cluster, &["-image=roimg", "-bs=4k", "-rw=randwrite"]);
    assert!(
        !run.status.success(),
        "fio must refuse to write a read-only image"
    );
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(
        text.contains("image roimg is read-only"),
        "read-only message not found in:\n{text}"
    );

    let run = fio(
        &cluster,
        &["-pool=1", "-inode=6", "-bs=4k", "-rw=randwrite"],
    );
    assert!(
        !run.status.success(),
        "fio must refuse -inode without -size"
    );
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(
        text.contains("-size is required"),
        "missing-size message not found in:\n{text}"
    );
}

/// `-fsync=1` turns into a cluster SYNC after every write; on an `immediate_commit=none`
/// cluster that is what makes writes durable, and the data must still verify.
#[test]
fn fsync_on_immediate_commit_none() {
    if !require_tools(&[FIO]) {
        return;
    }
    let cluster = start_cluster("none");
    let run = fio(
        &cluster,
        &[
            "-pool=1",
            "-inode=1",
            "-size=8M",
            "-bs=4k",
            "-iodepth=4",
            "-rw=randwrite",
            "-fsync=1",
            "-verify=crc32c",
        ],
    );
    let job = &run.ok_jobs()[0];
    assert_eq!(bytes_of(job, "write"), 8 * MIB, "write bytes");
    assert_eq!(bytes_of(job, "read"), 8 * MIB, "verify bytes");
    let syncs = job["sync"]["total_ios"].as_u64().unwrap_or(0);
    // One sync per write (2048 writes); fio may fold the last ones into its final sync.
    assert!(
        syncs >= 2000,
        "expected a sync per write, fio reports {syncs}"
    );
}

/// `-verify=crc32c` at iodepth 1 and 32, random writes and mixed random read/write.
#[test]
fn verify_at_depth_1_and_32() {
    if !require_tools(&[FIO]) {
        return;
    }
    let cluster = start_cluster("all");
    for (rw, depth) in [
        ("randwrite", "1"),
        ("randwrite", "32"),
        ("randrw", "1"),
        ("randrw", "32"),
    ] {
        let run = fio(
            &cluster,
            &[
                "-pool=1",
                "-inode=3",
                "-size=8M",
                "-bs=4k",
                &format!("-iodepth={depth}"),
                &format!("-rw={rw}"),
                "-verify=crc32c",
            ],
        );
        let job = &run.ok_jobs()[0];
        assert!(
            bytes_of(job, "write") > 0,
            "{rw} at depth {depth} wrote nothing"
        );
    }
}

/// Writes `pg/config` of pool 1 with the default sets and, as the monitor does when OSDs go
/// down, the first OSD of each set that is not in `down` as primary.
fn move_primaries(cluster: &Cluster, down: &[u64]) {
    let mut pgs = serde_json::Map::new();
    for (i, set) in cluster.default_sets().iter().enumerate() {
        let primary = set.iter().copied().find(|o| !down.contains(o)).unwrap_or(0);
        pgs.insert(
            (i + 1).to_string(),
            json!({"osd_set": set, "primary": primary}),
        );
    }
    cluster
        .put_json("pg/config", &json!({"items": {"1": pgs}}))
        .expect("writing pg/config");
}

/// An OSD killed while fio writes: fio pauses while the PGs move and completes, verified.
/// Then every OSD stops for a few seconds while fio runs: fio waits and completes.
#[test]
fn fio_survives_osd_kill_and_full_restart() {
    if !require_tools(&[FIO]) {
        return;
    }
    let mut cluster = start_cluster("all");
    const TOTAL: u64 = 16 * MIB;
    // The rate limit keeps fio writing for ~4 s, so the trouble below starts while it
    // writes; the periodic status tells how far it got.
    let args = [
        "-pool=1",
        "-inode=4",
        "-size=16M",
        "-bs=4k",
        "-iodepth=16",
        "-rw=randwrite",
        "-rate=4m",
        "-status-interval=1",
        "-verify=crc32c",
    ];
    let mut run = fio_start(&cluster, &args);
    run.wait_mid_write(TOTAL);
    cluster.kill_osd(3);
    move_primaries(&cluster, &[3]);
    let job = &run.wait(Duration::from_secs(120)).ok_jobs()[0];
    assert_eq!(bytes_of(job, "write"), TOTAL, "writes through the kill");
    assert_eq!(bytes_of(job, "read"), TOTAL, "verified after the kill");
    cluster.start_osd(3).expect("osd.3 back");
    move_primaries(&cluster, &[]);

    let mut run = fio_start(&cluster, &args);
    run.wait_mid_write(TOTAL);
    for osd in 1..=3 {
        cluster.stop_osd(osd);
    }
    // How long the whole cluster stays down; fio must wait through it.
    thread::sleep(Duration::from_secs(3));
    for osd in 1..=3 {
        cluster.start_osd(osd).expect("restart");
    }
    let job = &run.wait(Duration::from_secs(120)).ok_jobs()[0];
    assert_eq!(bytes_of(job, "write"), TOTAL, "writes through the restart");
    assert_eq!(bytes_of(job, "read"), TOTAL, "verified after the restart");
}

/// Bad etcd addresses and malformed options: fio fails with a message, in bounded time.
#[test]
fn bad_options_fail_clearly() {
    if !require_tools(&[FIO]) {
        return;
    }
    for (etcd, args, expect) in [
        (
            "127.0.0.1:1/v3",
            vec!["-pool=1", "-inode=1", "-size=1M", "-rw=read"],
            "etcd",
        ),
        (
            "not an address",
            vec!["-pool=1", "-inode=1", "-size=1M", "-rw=read"],
            "etcd",
        ),
        (
            "127.0.0.1:1/v3",
            vec!["-pool=1", "-inode=1", "-size=0", "-rw=read"],
            "-size is required",
        ),
        ("127.0.0.1:1/v3", vec!["-rw=read", "-size=1M"], "image"),
        (
            "127.0.0.1:1/v3",
            vec![
                "-pool=1",
                "-inode=1",
                "-size=1M",
                "-rw=read",
                "-client_op_timeout=0",
            ],
            "invalid option client_op_timeout: must be positive",
        ),
        (
            "127.0.0.1:1/v3",
            vec![
                "-pool=1",
                "-inode=1",
                "-size=1M",
                "-rw=read",
                "-client_retry_interval=x",
            ],
            "client_retry_interval",
        ),
        (
            "127.0.0.1:1/v3",
            vec![
                "-pool=1",
                "-inode=1",
                "-size=1M",
                "-rw=read",
                "-peer_connect_timeout=0",
            ],
            "peer_connect_timeout",
        ),
    ] {
        let run = fio_start_etcd(etcd, &args).wait(Duration::from_secs(60));
        assert!(!run.status.success(), "fio must fail for {etcd:?} {args:?}");
        let text = format!("{}{}", run.stdout, run.stderr).to_lowercase();
        assert!(
            text.contains(expect),
            "no {expect:?} in the error for {etcd:?} {args:?}:\n{text}"
        );
    }
}
