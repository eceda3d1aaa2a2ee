//! The operator's flow on a real block device: `vitastor-disk prepare /dev/loopN` with the
//! cluster named only by vitastor.conf (found through `VITASTOR_CONFIG_PATH`, so /etc is not
//! touched) reserves the next OSD number in etcd, writes `osd<N>.json` beside vitastor.conf;
//! an OSD started from exactly that file (no other option), a monitor, vitastor-cli and fio
//! (libvitastor), all reading the same vitastor.conf, then serve I/O; `list` shows the OSD and
//! `purge` refuses while it is up, then erases the store once it is stopped.
//!
//! Needs root (losetup); every loop device is detached and every process it started killed
//! by PID, on every path (guards' Drop).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use vitastor_testkit::{
    artifacts, process, require_tools, skip_unavailable, EtcdOptions, EtcdServer,
};

const TIMEOUT: Duration = Duration::from_secs(120);
const CONF_ENV: &str = "VITASTOR_CONFIG_PATH";

/// A loop device over a file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A daemon this test started, killed by its PID on drop.
struct Daemon(Child);

impl Daemon {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(bin: &Path, args: &[&str], conf: &Path) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).env(CONF_ENV, conf).stdin(Stdio::null());
    process::output_within(&mut cmd, TIMEOUT).expect("run within the timeout")
}

fn ok(bin: &Path, args: &[&str], conf: &Path) -> String {
    let o = run(bin, args, conf);
    assert!(
        o.status.success(),
        "{} {args:?}: {}{}",
        bin.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn spawn(bin: &Path, args: &[&str], conf: &Path, log: PathBuf) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    Daemon(
        Command::new(bin)
            .args(args)
            .env(CONF_ENV, conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start daemon"),
    )
}

#[test]
fn prepare_a_loop_device_and_serve_io_from_its_config() {
    if !require_tools(&["losetup", "etcd", "fio"]) {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_unavailable("disk_prepare: losetup needs root");
        return;
    }
    let disk = PathBuf::from(env!("CARGO_BIN_EXE_vitastor-disk"));
    let osd_bin = PathBuf::from(env!("CARGO_BIN_EXE_vitastor-osd"));
    let mon = artifacts::fresh_path("vitastor-mon");
    let cli = artifacts::fresh_path("vitastor-cli");
    artifacts::fresh_path("libvitastor.so");
    let engine = artifacts::fresh_path("libfio_vitastor.so");

    let etcd = EtcdServer::start(EtcdOptions::default()).expect("start etcd");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let conf = dir.path().join("vitastor.conf");
    std::fs::write(
        &conf,
        format!(r#"{{"etcd_address":"{}"}}"#, etcd.etcd_address()),
    )
    .unwrap();
    // Numbers 1..4 are taken by an OSD the cluster knows only by its config.
    etcd.etcdctl(&["put", "/vitastor/config/osd/4", r#"{"reweight":1}"#])
        .unwrap();

    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let dev = Loop::attach(&img);

    let printed = ok(&disk, &["prepare", &dev.0, "--no-systemd", "--json"], &conf);
    let printed: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(printed["osd_num"], 5, "{printed}");
    let reserved = etcd
        .etcdctl(&["get", "--print-value-only", "/vitastor/osd/stats/5"])
        .unwrap();
    assert_eq!(reserved.trim(), "{}");

    let osd_conf = dir.path().join("osd5.json");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&osd_conf).unwrap()).unwrap();
    assert_eq!(written, printed);
    assert_eq!(written["data_device"], dev.0.as_str());
    assert!(
        written.get("etcd_address").is_none(),
        "the OSD must take the cluster from vitastor.conf: {written}"
    );

    // The same device again is refused: it holds a store now, and no number is taken.
    let again = run(&disk, &["prepare", &dev.0, "--no-systemd"], &conf);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds an OSD store"));
    // A store run by hand (--write_config, as the test clusters do) takes no number either.
    let manual = dir.path().join("manual.json");
    let manual_img = dir.path().join("manual.img");
    ok(
        &disk,
        &[
            "prepare",
            manual_img.to_str().unwrap(),
            "--size",
            "256M",
            "--write_config",
            manual.to_str().unwrap(),
        ],
        &conf,
    );
    let manual: Value = serde_json::from_str(&std::fs::read_to_string(&manual).unwrap()).unwrap();
    assert!(manual.get("osd_num").is_none(), "{manual}");
    let stats = etcd
        .etcdctl(&["get", "--keys-only", "--prefix", "/vitastor/osd/stats/"])
        .unwrap();
    assert_eq!(
        stats.split_whitespace().collect::<Vec<_>>(),
        ["/vitastor/osd/stats/5"]
    );

    // read-sb takes the device positionally.
    let sb = ok(&disk, &["read-sb", &dev.0, "--json"], &conf);
    let sb: Value = serde_json::from_str(&sb).unwrap();
    assert_eq!(sb["data_superblock"], "ok");

    let osd_conf_s = osd_conf.to_str().unwrap();
    let mut osd = spawn(
        &osd_bin,
        &["--config_path", osd_conf_s],
        &conf,
        dir.path().join("osd.log"),
    );
    let _mon = spawn(&mon, &[], &conf, dir.path().join("mon.log"));
    ok(
        &cli,
        &[
            "create-pool",
            "p1",
            "-s",
            "1",
            "-n",
            "8",
            "--failure_domain",
            "osd",
        ],
        &conf,
    );
    ok(&cli, &["create", "-s", "64M", "img"], &conf);

    // fio names no etcd either; libvitastor waits for the PGs to become active.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut fio = Command::new("fio");
    fio.current_dir(work.path())
        .env(CONF_ENV, &conf)
        .arg("-thread")
        .arg(format!("-ioengine={}", engine.display()))
        .args([
            "-name=t",
            "-image=img",
            "-direct=1",
            "-bs=64k",
            "-iodepth=8",
            "-rw=write",
            "-size=16M",
            "-verify=crc32c",
            "-do_verify=1",
        ]);
    let out = process::output_within(&mut fio, TIMEOUT).expect("fio within the timeout");
    assert!(
        out.status.success(),
        "fio: {}{}\nosd log: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("osd.log")).unwrap_or_default()
    );

    let listed = ok(&disk, &["list", "--json"], &conf);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["osd_num"], 5, "{listed}");
    assert_eq!(listed[0]["data_device"], dev.0.as_str());
    assert_eq!(listed[0]["store"], "ok");

    // Purge refuses a running OSD and keeps everything: it is up in etcd, and without etcd
    // (a host whose vitastor.conf names none) the OSD's device lock still says so.
    let refused = run(&disk, &["purge", &dev.0, "--no-systemd"], &conf);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("OSD 5 is up"));
    let no_etcd = dir.path().join("none.conf");
    let dir_s = dir.path().to_str().unwrap();
    let refused = run(
        &disk,
        &["purge", &dev.0, "--no-systemd", "--config_dir", dir_s],
        &no_etcd,
    );
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("is in use") && err.contains("stop OSD 5"),
        "{err}"
    );
    assert!(osd_conf.exists());
    let sb = ok(&disk, &["read-sb", &dev.0, "--json"], &conf);
    assert!(sb.contains("\"data_superblock\": \"ok\""), "{sb}");

    osd.stop();
    // The stopped OSD's key goes with its lease (revoked on a clean stop, else its TTL).
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let o = run(&disk, &["purge", &dev.0, "--no-systemd"], &conf);
        if o.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(err.contains("is up"), "{err}");
        assert!(
            std::time::Instant::now() < deadline,
            "OSD 5 stayed up: {err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!osd_conf.exists());
    let gone = run(&disk, &["read-sb", &dev.0], &conf);
    assert_eq!(gone.status.code(), Some(1));
    // Purged means prepare works again without --force.
    ok(
        &disk,
        &["prepare", &dev.0, "--no-systemd", "--osd_num", "5"],
        &conf,
    );
}
