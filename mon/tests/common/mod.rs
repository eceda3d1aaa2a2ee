//! What the monitor's multi-process tests share: a `vitastor-mon` process on a testkit etcd,
//! killed by its own child handle when dropped (its log printed if the test failed), and the
//! etcd helpers every test reads the monitor's output with.
#![allow(dead_code)] // each test file uses part of it

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;
use serde_json::Value;
use tempfile::TempDir;
use vitastor_testkit::etcd::EtcdServer;

pub const PREFIX: &str = "/vitastor";

/// Short timings so tests see elections and changes quickly.
pub const QUICK: [&str; 6] = [
    "--etcd_mon_ttl",
    "3",
    "--mon_change_timeout",
    "200",
    "--mon_stats_interval",
    "1",
];

/// Log lines shown when a test fails.
const LOG_TAIL: usize = 60;

/// One monitor process.
pub struct Mon {
    child: Child,
    log: PathBuf,
}

impl Mon {
    /// A monitor of `etcd` under [`PREFIX`] with exactly `args` beside the address, logging to
    /// `dir/name.log`.
    pub fn start(etcd: &EtcdServer, dir: &TempDir, name: &str, args: &[&str]) -> Mon {
        let log = dir.path().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_vitastor-mon"))
            .args([
                "--etcd_address",
                &etcd.etcd_address(),
                "--etcd_prefix",
                PREFIX,
            ])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Mon { child, log }
    }

    /// A monitor with the [`QUICK`] timings and `extra` options.
    pub fn quick(etcd: &EtcdServer, dir: &TempDir, name: &str, extra: &[&str]) -> Mon {
        Mon::start(etcd, dir, name, &[&QUICK[..], extra].concat())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Mon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("---- {} (last lines) ----", self.log.display());
            for l in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                eprintln!("{l}");
            }
        }
    }
}

pub fn key(k: &str) -> String {
    format!("{PREFIX}/{k}")
}

pub async fn get(c: &mut Client, k: &str) -> Option<Value> {
    let r = c.get(key(k), None).await.unwrap();
    r.kvs()
        .first()
        .and_then(|kv| serde_json::from_slice(kv.value()).ok())
}

/// Polls `check` until it returns `Some` or `limit` passes.
pub async fn wait_within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
