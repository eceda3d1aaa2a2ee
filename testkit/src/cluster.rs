//! A whole local cluster for tests and `devcluster`: one etcd, N `vitastor-osd` processes on
//! sparse files, pool 1 (replicated, XOR or EC) and its `pg/config` (until the monitor
//! writes it).
//!
//! Daemons may run inside network namespaces the test made ([`ClusterOptions::etcd_host`],
//! [`ClusterOptions::osd_hosts`], [`ClusterOptions::mon_host`]); by default all run here on
//! 127.0.0.1.
//!
//! Like the rest of the kit it only signals processes it spawned, by PID, while it holds
//! their unreaped [`Child`]; OSDs are spawned tied to the process (PDEATHSIG), so nothing
//! outlives the test. Every wait is bounded.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::etcd::{spawn_tied_to_process, EtcdOptions, EtcdServer};
use crate::netns::NetHost;
use crate::{artifacts, process, TestkitError};

/// How long an OSD may take to print its listening line (it opens and replays its store
/// first; a few seconds even for a large journal).
const OSD_START_TIMEOUT: Duration = Duration::from_secs(120);

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of OSDs (numbered from 1).
    pub osds: usize,
    /// Pool `pg_size`.
    pub pg_size: usize,
    /// Pool `scheme`: `replicated`, or `xor` / `ec` (then a PG's set is positional: part `i`
    /// of each object lives on its `i`-th OSD).
    pub scheme: String,
    /// Pool `parity_chunks` (`xor` / `ec` only; `pg_size - parity_chunks` data parts).
    pub parity_chunks: usize,
    /// Pool `pg_minsize` (default `pg_size - 1`, at least 1).
    pub pg_minsize: Option<usize>,
    /// Pool `pg_count`.
    pub pg_count: u32,
    /// `all` or `none`: pool option, and the OSDs' blockstore option.
    pub immediate_commit: String,
    /// Size of each OSD's data file (its blocks reserved, not written).
    pub osd_size: u64,
    /// Write every block of each OSD's data file out once (`vitastor-disk prepare --fill`):
    /// for benchmarks, which must not pay first-write costs the raw file they are compared
    /// with does not. Takes as long as writing the files.
    pub osd_fill: bool,
    /// Where data, configs and logs go (kept); `None` = a temp dir removed on drop.
    pub dir: Option<PathBuf>,
    /// Directory with `vitastor-osd`, `vitastor-disk` (and `vitastor-mon`).
    pub bin_dir: PathBuf,
    /// Build each binary first when it is missing or stale ([`crate::artifacts`]); for tests,
    /// where `bin_dir` is the workspace's `target/<profile>`.
    pub build_bins: bool,
    /// Extra options for every OSD.
    pub osd_args: Vec<String>,
    /// Write `pg/config` by hand (when no monitor runs).
    pub write_pg_config: bool,
    /// Monitors to start (`vitastor-mon`); with any, the monitor places PGs.
    pub monitors: usize,
    /// Extra options for every monitor.
    pub mon_args: Vec<String>,
    /// Run etcd inside this network namespace, on its address (`None`: 127.0.0.1 here).
    pub etcd_host: Option<NetHost>,
    /// Run OSD `i + 1` inside `osd_hosts[i]`'s namespace, bound to (and publishing) its
    /// address; OSDs beyond the list run here on 127.0.0.1.
    pub osd_hosts: Vec<NetHost>,
    /// Run the monitors inside this network namespace (`None`: here).
    pub mon_host: Option<NetHost>,
}

impl ClusterOptions {
    /// Options for a test: [`ClusterOptions::new`] with this workspace's binaries, each built
    /// first when missing or older than its sources.
    pub fn from_workspace() -> ClusterOptions {
        ClusterOptions {
            build_bins: true,
            ..ClusterOptions::new(artifacts::profile_dir())
        }
    }

    /// 3 OSDs, pg_size 2, 32 PGs, immediate_commit all, 1 GiB files; binaries from
    /// `bin_dir`, as they are.
    pub fn new(bin_dir: PathBuf) -> ClusterOptions {
        ClusterOptions {
            osds: 3,
            pg_size: 2,
            scheme: "replicated".into(),
            parity_chunks: 0,
            pg_minsize: None,
            pg_count: 32,
            immediate_commit: "all".into(),
            osd_size: 1 << 30,
            osd_fill: false,
            dir: None,
            bin_dir,
            build_bins: false,
            osd_args: Vec::new(),
            write_pg_config: true,
            monitors: 0,
            mon_args: Vec::new(),
            etcd_host: None,
            osd_hosts: Vec::new(),
            mon_host: None,
        }
    }

    /// For post-mortems: with `VITASTOR_TEST_DIR` set, the cluster's data, configs and logs
    /// go to a fresh `$VITASTOR_TEST_DIR/<name>-<pid>-<n>` and stay there (`n` counts the
    /// calls in this process, so parallel tests never share one); without it, nothing changes.
    pub fn keep_dir_from_env(&mut self, name: &str) {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        if let Ok(root) = std::env::var("VITASTOR_TEST_DIR") {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let dir = PathBuf::from(root).join(format!("{name}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            self.dir = Some(dir);
        }
    }
}

/// One OSD process.
#[derive(Debug)]
pub struct OsdProc {
    /// OSD number.
    pub num: u64,
    /// Its config file (from `vitastor-disk prepare`).
    pub config: PathBuf,
    /// Listening address while running.
    pub addr: Option<SocketAddr>,
    child: Option<Child>,
}

/// A running cluster; stopped (OSDs, then etcd) on drop.
#[derive(Debug)]
pub struct Cluster {
    /// Options it was built with.
    pub opts: ClusterOptions,
    /// etcd.
    pub etcd: EtcdServer,
    /// OSDs, `osds[i].num == i + 1`.
    pub osds: Vec<OsdProc>,
    /// Monitor processes (`None` once killed).
    mons: Vec<Option<Child>>,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// `s` as a double-quoted etcdctl txn argument.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn err(what: impl Into<String>) -> TestkitError {
    TestkitError::InvalidOptions(what.into())
}

impl Cluster {
    /// Starts etcd and the OSDs, creates pool 1 `testpool`, writes `pg/config` (if asked)
    /// and waits until every PG is active.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, TestkitError> {
        let (temp, dir) = match &opts.dir {
            Some(d) => {
                fs::create_dir_all(d).map_err(|e| err(format!("creating {}: {e}", d.display())))?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("vitastor-cluster-")
                    .tempdir()
                    .map_err(|e| err(format!("temp dir: {e}")))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let etcd = EtcdServer::start(EtcdOptions {
            dir: Some(dir.join("etcd")),
            extra_args: vec!["--max-txn-ops=100000".into()],
            host: opts.etcd_host.clone(),
            ..EtcdOptions::default()
        })?;
        let mut cluster = Cluster {
            opts,
            etcd,
            osds: Vec::new(),
            mons: Vec::new(),
            dir,
            _temp: temp,
        };
        cluster.put_json(
            "config/global",
            &json!({"immediate_commit": cluster.opts.immediate_commit}),
        )?;
        let minsize = cluster
            .opts
            .pg_minsize
            .unwrap_or(cluster.opts.pg_size.saturating_sub(1).max(1));
        let mut pool = json!({"name": "testpool", "scheme": cluster.opts.scheme,
            "pg_size": cluster.opts.pg_size, "pg_minsize": minsize,
            "pg_count": cluster.opts.pg_count, "failure_domain": "osd",
            "immediate_commit": cluster.opts.immediate_commit});
        if cluster.opts.scheme != "replicated" {
            pool["parity_chunks"] = json!(cluster.opts.parity_chunks);
        }
        cluster.put_json("config/pools", &json!({ "1": pool }))?;
        for i in 0..cluster.opts.osds {
            let num = i as u64 + 1;
            let config = cluster.prepare_osd(num)?;
            cluster.osds.push(OsdProc {
                num,
                config,
                addr: None,
                child: None,
            });
            cluster.start_osd(num)?;
        }
        cluster.wait_osds_up(Duration::from_secs(30))?;
        for _ in 0..cluster.opts.monitors {
            cluster.start_monitor()?;
        }
        if cluster.opts.monitors > 0 {
            cluster.wait_active(Duration::from_secs(60))?;
        } else if cluster.opts.write_pg_config {
            let sets = cluster.default_sets();
            cluster.write_pg_config(&sets)?;
            cluster.wait_active(Duration::from_secs(60))?;
        }
        Ok(cluster)
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `127.0.0.1:PORT/v3`.
    pub fn etcd_address(&self) -> String {
        self.etcd.etcd_address()
    }

    fn bin(&self, name: &str) -> Result<PathBuf, TestkitError> {
        if self.opts.build_bins {
            artifacts::fresh(name)
        } else {
            Ok(self.opts.bin_dir.join(name))
        }
    }

    fn prepare_osd(&self, num: u64) -> Result<PathBuf, TestkitError> {
        let data = self.dir.join(format!("osd{num}.data"));
        let config = self.dir.join(format!("osd{num}.json"));
        if config.exists() {
            return Ok(config);
        }
        let out = Command::new(self.bin("vitastor-disk")?)
            .arg("prepare")
            .arg("--data_device")
            .arg(&data)
            .arg("--size")
            .arg(self.opts.osd_size.to_string())
            .arg("--write_config")
            .arg(&config)
            .args(self.opts.osd_fill.then_some("--fill"))
            .output()
            .map_err(|e| err(format!("running vitastor-disk: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "vitastor-disk prepare failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(config)
    }

    /// Starts OSD `num` (again) and waits for its listening line.
    pub fn start_osd(&mut self, num: u64) -> Result<(), TestkitError> {
        let i = (num - 1) as usize;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("osd{num}.log")))
            .map_err(|e| err(format!("osd log: {e}")))?;
        let binary = self.bin("vitastor-osd")?;
        let mut cmd = Command::new(&binary);
        cmd.arg("--config_path")
            .arg(&self.osds[i].config)
            .args(["--osd_num", &num.to_string()])
            .args(["--etcd_address", &self.etcd_address()])
            .args(["--immediate_commit", &self.opts.immediate_commit])
            .args(["--etcd_report_interval", "1", "--osd_ping_timeout", "3"])
            .args(["--peer_connect_timeout", "2", "--etcd_stats_interval", "5"])
            .args(&self.opts.osd_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(host) = self.opts.osd_hosts.get(i) {
            cmd.args(["--bind_address", &host.addr.to_string()]);
            host.enter_in_child(&mut cmd)
                .map_err(|e| err(format!("osd.{num} in {}: {e}", host.netns)))?;
        }
        let mut child =
            spawn_tied_to_process(cmd).map_err(|source| TestkitError::Spawn { binary, source })?;
        let line = process::first_line_within(&mut child, OSD_START_TIMEOUT);
        let addr = match &line {
            Ok(Some(l)) => l.strip_prefix("listening on ").and_then(|a| a.parse().ok()),
            _ => None,
        };
        if addr.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err(format!(
                "osd.{num} did not start (first line: {line:?}); see {}",
                self.dir.join(format!("osd{num}.log")).display()
            )));
        }
        self.osds[i].addr = addr;
        self.osds[i].child = Some(child);
        Ok(())
    }

    /// Starts one more monitor; returns its index.
    pub fn start_monitor(&mut self) -> Result<usize, TestkitError> {
        let i = self.mons.len();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("mon{i}.log")))
            .map_err(|e| err(format!("mon log: {e}")))?;
        let binary = self.bin("vitastor-mon")?;
        let mut cmd = Command::new(&binary);
        cmd.args(["--etcd_address", &self.etcd_address()])
            .args(["--etcd_mon_ttl", "3", "--mon_stats_interval", "2"])
            .args(&self.opts.mon_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| err(e.to_string()))?)
            .stderr(log);
        if let Some(host) = &self.opts.mon_host {
            host.enter_in_child(&mut cmd)
                .map_err(|e| err(format!("monitor in {}: {e}", host.netns)))?;
        }
        let child =
            spawn_tied_to_process(cmd).map_err(|source| TestkitError::Spawn { binary, source })?;
        self.mons.push(Some(child));
        Ok(i)
    }

    /// SIGKILLs monitor `i`.
    pub fn kill_monitor(&mut self, i: usize) {
        if let Some(mut child) = self.mons.get_mut(i).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// PID of monitor `i` while it runs.
    pub fn monitor_pid(&self, i: usize) -> Option<u32> {
        self.mons.get(i)?.as_ref().map(Child::id)
    }

    /// SIGKILLs OSD `num` (no cleanup: its lease expires by itself).
    pub fn kill_osd(&mut self, num: u64) {
        if let Some(mut child) = self.osds[(num - 1) as usize].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs OSD `num` and waits up to 20 s for it to exit (then SIGKILLs it).
    pub fn stop_osd(&mut self, num: u64) {
        if let Some(mut child) = self.osds[(num - 1) as usize].child.take() {
            // SAFETY: kill(2) on our own unreaped child's PID.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many started OSD processes are still running (not exited).
    pub fn osds_running(&mut self) -> usize {
        self.osds
            .iter_mut()
            .filter_map(|o| o.child.as_mut())
            .filter_map(|c| c.try_wait().ok())
            .filter(Option::is_none)
            .count()
    }

    /// PIDs of the running OSDs.
    pub fn osd_pids(&self) -> Vec<(u64, u32)> {
        self.osds
            .iter()
            .filter_map(|o| o.child.as_ref().map(|c| (o.num, c.id())))
            .collect()
    }

    /// `pg_size` consecutive OSDs per PG, rotating, primary first.
    pub fn default_sets(&self) -> Vec<Vec<u64>> {
        let n = self.opts.osds as u64;
        (0..self.opts.pg_count as u64)
            .map(|pg| {
                (0..self.opts.pg_size as u64)
                    .map(|j| (pg + j) % n + 1)
                    .collect()
            })
            .collect()
    }

    /// Writes `pg/config` for pool 1: PG `i + 1` gets `sets[i]`, its first OSD as primary.
    pub fn write_pg_config(&self, sets: &[Vec<u64>]) -> Result<(), TestkitError> {
        self.put_json("pg/config", &Self::pg_config_json(sets))
    }

    /// Puts a JSON value under the prefix.
    pub fn put_json(&self, key: &str, value: &Value) -> Result<(), TestkitError> {
        self.etcd
            .etcdctl(&["put", &format!("/vitastor/{key}"), &value.to_string()])
            .map(|_| ())
    }

    /// Puts several JSON values under the prefix in one transaction (as the monitor writes
    /// `pg/config` together with `pg/history`).
    pub fn put_json_atomic(&self, kvs: &[(String, Value)]) -> Result<(), TestkitError> {
        let mut input = String::from("\n");
        for (k, v) in kvs {
            input.push_str(&format!(
                "put {} {}\n",
                quote(&format!("/vitastor/{k}")),
                quote(&v.to_string())
            ));
        }
        input.push_str("\n\n");
        let out = self.etcd.etcdctl_with_input(&["txn"], Some(&input))?;
        if !out.starts_with("SUCCESS") {
            return Err(err(format!("etcdctl txn failed: {out}")));
        }
        Ok(())
    }

    /// Creates image `name` of `size` bytes in pool 1 (inode number = the next after
    /// `index/maxid/1`) unless it exists; returns the inode number without pool bits.
    pub fn create_image(&self, name: &str, size: u64) -> Result<u64, TestkitError> {
        // A transaction conditional on the index and maxid still being what was read, retried
        // on conflict: parallel callers never get the same inode number.
        for _ in 0..100 {
            let existing = self
                .get_prefix(&format!("index/image/{name}"))?
                .into_iter()
                .find(|(k, _)| k == &format!("index/image/{name}"))
                .and_then(|(k, v)| vitastor_layout::ImageIndex::from_json(&k, &v).ok())
                .map(|index| index.id);
            if let Some(id) = existing {
                return Ok(id);
            }
            let maxid_raw =
                self.etcd
                    .etcdctl(&["get", "--print-value-only", "/vitastor/index/maxid/1"])?;
            let maxid_raw = maxid_raw.trim().to_string();
            let id = maxid_raw.parse::<u64>().unwrap_or(0) + 1;
            let maxid_cmp = if maxid_raw.is_empty() {
                format!("create({}) = \"0\"", quote("/vitastor/index/maxid/1"))
            } else {
                format!(
                    "val({}) = {}",
                    quote("/vitastor/index/maxid/1"),
                    quote(&maxid_raw)
                )
            };
            let image_key = format!("/vitastor/index/image/{name}");
            let input = format!(
                "{maxid_cmp}\ncreate({}) = \"0\"\n\nput {} {}\nput {} {}\nput {} {}\n\n\n",
                quote(&image_key),
                quote("/vitastor/index/maxid/1"),
                quote(&id.to_string()),
                quote(&format!("/vitastor/config/inode/1/{id}")),
                quote(&json!({"name": name, "size": size}).to_string()),
                quote(&image_key),
                quote(&json!({"id": id, "pool_id": 1}).to_string()),
            );
            let out = self.etcd.etcdctl_with_input(&["txn"], Some(&input))?;
            if out.starts_with("SUCCESS") {
                return Ok(id);
            }
        }
        Err(err(format!(
            "could not create image {name}: too many conflicts"
        )))
    }

    /// `pg/config` JSON for pool 1: PG `i + 1` gets `sets[i]`, its first OSD as primary.
    pub fn pg_config_json(sets: &[Vec<u64>]) -> Value {
        let mut pgs = serde_json::Map::new();
        for (i, set) in sets.iter().enumerate() {
            pgs.insert(
                (i + 1).to_string(),
                json!({"osd_set": set, "primary": set[0], "pause": false}),
            );
        }
        json!({"items": {"1": pgs}})
    }

    /// Reads every key under `/vitastor/<prefix>` as `(relative key, JSON)`.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Value)>, TestkitError> {
        let out = self
            .etcd
            .etcdctl(&["get", "--prefix", &format!("/vitastor/{prefix}")])?;
        let lines: Vec<&str> = out.lines().collect();
        let mut kvs = Vec::new();
        for pair in lines.chunks(2) {
            if let [k, v] = pair {
                let key = k.strip_prefix("/vitastor/").unwrap_or(k).to_string();
                if let Ok(v) = serde_json::from_str(v) {
                    kvs.push((key, v));
                }
            }
        }
        Ok(kvs)
    }

    fn wait_osds_up(&self, timeout: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let up = self.get_prefix("osd/state/")?.len();
            if up >= self.osds.iter().filter(|o| o.child.is_some()).count() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(format!("only {up} OSDs reported up")));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `pg/state` of pool 1 by PG number.
    pub fn pg_states(&self) -> Result<Vec<(u32, Value)>, TestkitError> {
        Ok(self
            .get_prefix("pg/state/1/")?
            .into_iter()
            .filter_map(|(k, v)| Some((k.rsplit('/').next()?.parse().ok()?, v)))
            .collect())
    }

    /// Waits until every PG of pool 1 reports a state that satisfies `pred`.
    pub fn wait_pgs(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[String]) -> bool,
    ) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.pg_states()?;
            let good = states
                .iter()
                .filter(|(_, v)| {
                    let names: Vec<String> = v["state"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    pred(&names)
                })
                .count();
            if good == self.opts.pg_count as usize {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "{good} of {} PGs {what} after {timeout:?}: {states:?}",
                    self.opts.pg_count
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Image bytes one object of pool 1 covers: 128 KiB times its data parts.
    pub fn object_size(&self) -> u64 {
        let data_parts = match self.opts.scheme.as_str() {
            "replicated" => 1,
            _ => self.opts.pg_size - self.opts.parity_chunks,
        };
        (128 << 10) * data_parts as u64
    }

    /// Waits until every PG of pool 1 is active.
    pub fn wait_active(&self, timeout: Duration) -> Result<(), TestkitError> {
        self.wait_pgs(timeout, "active", |s| s.iter().any(|n| n == "active"))
    }

    /// Waits until every PG of pool 1 is exactly `active` (nothing degraded or misplaced).
    pub fn wait_clean(&self, timeout: Duration) -> Result<(), TestkitError> {
        self.wait_pgs(timeout, "clean", |s| s == ["active"])
    }

    /// What OSD `num` has logged so far (empty before its first start).
    pub fn osd_log(&self, num: u64) -> String {
        fs::read_to_string(self.dir.join(format!("osd{num}.log"))).unwrap_or_default()
    }

    /// Sets option `key` of OSD `num` to `value` in its config file, or removes it for
    /// `None`; the OSD reads it when it next starts.
    pub fn set_osd_option(
        &self,
        num: u64,
        key: &str,
        value: Option<Value>,
    ) -> Result<(), TestkitError> {
        let path = &self.osds[(num - 1) as usize].config;
        let io = |source| TestkitError::Io {
            what: format!("OSD config {}", path.display()),
            source,
        };
        let mut cfg: Value = serde_json::from_slice(&fs::read(path).map_err(io)?)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        let map = cfg
            .as_object_mut()
            .ok_or_else(|| err(format!("{} is not a JSON object", path.display())))?;
        match value {
            Some(v) => map.insert(key.into(), v),
            None => map.remove(key),
        };
        fs::write(path, cfg.to_string()).map_err(io)
    }

    /// Writes `pg/config` of pool 1 with `sets` and, as the monitor does when OSDs go down,
    /// the first OSD of each set that is not in `down` as its primary (0 when none is up).
    pub fn set_primaries(&self, sets: &[Vec<u64>], down: &[u64]) -> Result<(), TestkitError> {
        let mut pgs = serde_json::Map::new();
        for (i, set) in sets.iter().enumerate() {
            let primary = set.iter().copied().find(|o| !down.contains(o)).unwrap_or(0);
            pgs.insert(
                (i + 1).to_string(),
                json!({"osd_set": set, "primary": primary}),
            );
        }
        self.put_json("pg/config", &json!({"items": {"1": pgs}}))
    }

    /// Waits until the `pg/state` of every PG of pool 1 names the first OSD of its set in
    /// `sets` as primary.
    pub fn wait_primaries(&self, sets: &[Vec<u64>], timeout: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.pg_states()?;
            let moved = states.len() == sets.len()
                && states
                    .iter()
                    .all(|(pg, v)| v["primary"].as_u64() == Some(sets[*pg as usize - 1][0]));
            if moved {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "primaries are not the first OSDs of {sets:?} after {timeout:?}: {states:?}"
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until at most `n` of the started OSD processes still run (the others exited).
    pub fn wait_osds_running(&mut self, n: usize, timeout: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self.osds_running();
            if running <= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "{running} OSDs still run after {timeout:?} (waited for {n})"
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.mons.len() {
            self.kill_monitor(i);
        }
        let nums: Vec<u64> = self.osds.iter().map(|o| o.num).collect();
        for n in nums {
            self.stop_osd(n);
        }
    }
}
