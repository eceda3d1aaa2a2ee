//! Throwaway single-member etcd servers for multi-process tests.
//!
//! # What this module owns
//! - One etcd process per [`EtcdServer`] (Debian's `/usr/bin/etcd`, 3.4),
//!   listening on 127.0.0.1 only, on a client port and a peer port picked at
//!   start (binding port 0 and releasing it), so parallel suites never collide.
//!   With [`EtcdOptions::host`] it runs inside that network namespace on that
//!   address instead, and the kit's health checks and etcdctl runs enter the
//!   namespace too ([`crate::netns`]).
//!   Ports are still picked in the test's namespace: a namespace made for the
//!   test has nothing else listening.
//!   If another process grabs a port between the pick and etcd's own bind,
//!   start-up retries with new ports.
//! - The server's directory (a fresh temp dir unless [`EtcdOptions::dir`] is
//!   given): etcd's `--data-dir` is `<dir>/data`, and etcd's stdout+stderr are
//!   appended to `<dir>/etcd.log`, with a marker line before every start. The
//!   log sits next to the data rather than inside it because etcd 3.4 warns
//!   about every unknown file in its data dir ("found invalid file/dir").
//! - etcd's flags: the listen/advertise URLs, a one-member `--initial-cluster`,
//!   short raft timings (a restart is healthy in ~0.15 s instead of 1-2 s),
//!   then [`EtcdOptions::extra_args`].
//! - A tiny [`EtcdServer::etcdctl`] wrapper, so tests can read and write keys
//!   before vitastor-rs has its own etcd client.
//!
//! # Health
//! Start-up polls etcd's HTTP `GET /health` on the client URL (etcd 3.4 serves
//! plain HTTP/1 and gRPC on the same port) over a `std::net::TcpStream` with
//! connect/read/write timeouts. etcd answers `200 {"health":"true"}` only once
//! it has no alarms, has a leader, and a quorum read through raft succeeded
//! (within its own 1 s bound), which is exactly "ready for clients". Polling with etcdctl instead would fork a
//! Go binary every 50 ms and report failures only as text on stderr.
//!
//! # What it must never do
//! - Signal a process it did not spawn, or find processes by name: it signals
//!   only its own child, by PID, while still holding the unreaped
//!   [`std::process::Child`] (so the PID cannot have been recycled).
//! - Leave a daemon behind: [`Drop`] stops the server, and etcd is spawned with
//!   `PR_SET_PDEATHSIG` so the kernel kills it if the test process dies without
//!   running destructors (SIGKILL by a timeout, abort).
//! - Wait without a bound: start, stop, health checks and etcdctl all have
//!   deadlines; a server that misses its start deadline is killed.
//! - Remove or rewrite anything it did not create: a caller-supplied directory
//!   is kept on drop, and a temp dir is removed only after etcd is gone.
//! - Speak etcd's gRPC API: the real client belongs to the crates under test.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::netns::NetHost;
use crate::TestkitError;

/// Where Debian's `etcd-server` package installs the server.
pub const DEFAULT_ETCD_BINARY: &str = "/usr/bin/etcd";
/// Where Debian's `etcd-client` package installs etcdctl.
pub const DEFAULT_ETCDCTL_BINARY: &str = "/usr/bin/etcdctl";

/// Port pairs tried before giving up; a stolen port is rare, five in a row means
/// something else is wrong.
const PORT_ATTEMPTS: u32 = 5;
/// How often start-up checks whether etcd exited or became healthy.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Bound for one health request: above etcd's own 1 s bound on the quorum read
/// behind `/health`, so a slow "false" is read rather than cut off.
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest health response read; the real one is ~300 bytes.
const HEALTH_RESPONSE_LIMIT: u64 = 64 * 1024;
/// Wall-clock bound for one etcdctl run (etcdctl's own `--command-timeout` is 5 s;
/// this only catches commands that never end, such as `watch`).
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines quoted in start-up errors: the first ones (flag errors come first,
/// before etcd's usage text) and the last ones (runtime failures come last).
const LOG_HEAD_LINES: usize = 5;
/// See [`LOG_HEAD_LINES`].
const LOG_TAIL_LINES: usize = 20;
/// Most bytes of one attempt's log read to pick those lines.
const LOG_READ_LIMIT: u64 = 1024 * 1024;
/// Environment variable kept when scrubbing `ETCD_*`: etcd 3.4 refuses to start
/// on architectures it does not list (e.g. arm64) unless it is set.
const KEEP_ETCD_ENV: &str = "ETCD_UNSUPPORTED_ARCH";

/// How to start an [`EtcdServer`]. `EtcdOptions::default()` is what most tests want.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Member name (`--name`, and the key in `--initial-cluster`): ASCII
    /// letters, digits, `-`, `_` and `.` only.
    pub name: String,
    /// Directory the server owns (`data/` and `etcd.log` inside). `None`: a fresh
    /// temp dir, removed on drop. `Some`: created if missing and kept on drop;
    /// existing data in it is reused, so a second server on the same directory
    /// sees the keys the first one wrote.
    pub dir: Option<PathBuf>,
    /// Fixed client port; `None` picks a free one. The peer port is always picked.
    pub client_port: Option<u16>,
    /// The etcd binary.
    pub etcd_binary: PathBuf,
    /// The etcdctl binary used by [`EtcdServer::etcdctl`].
    pub etcdctl_binary: PathBuf,
    /// Extra etcd flags appended after the kit's own (e.g. `--max-txn-ops=10000`);
    /// a flag given twice takes its last value, so these can override the kit's.
    pub extra_args: Vec<String>,
    /// How long a start (or restart) may take, port retries included.
    pub start_timeout: Duration,
    /// How long [`EtcdServer::stop`] waits after SIGTERM before sending SIGKILL.
    pub stop_timeout: Duration,
    /// Run inside this network namespace, listening on its address; `None`: 127.0.0.1 of
    /// the test's own namespace.
    pub host: Option<NetHost>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            name: "testkit".to_string(),
            dir: None,
            client_port: None,
            etcd_binary: PathBuf::from(DEFAULT_ETCD_BINARY),
            etcdctl_binary: PathBuf::from(DEFAULT_ETCDCTL_BINARY),
            extra_args: Vec::new(),
            start_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(5),
            host: None,
        }
    }
}

/// A running (or stopped) single-member etcd on 127.0.0.1, stopped on drop.
#[derive(Debug)]
pub struct EtcdServer {
    opts: EtcdOptions,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// `Some` from spawn until the process has been reaped.
    child: Option<Child>,
    /// Held only to delete the temp dir; `Drop for EtcdServer` stops etcd before
    /// fields are dropped, so etcd never sees its directory vanish.
    _temp: Option<TempDir>,
}

/// How one launch attempt ended, when it is not a hard error.
enum Launch {
    Healthy,
    /// etcd exited because a port was taken; the log tail says which.
    PortBusy {
        tail: String,
    },
}

impl EtcdServer {
    /// Starts etcd and waits until it reports healthy.
    ///
    /// Retries with new ports if etcd cannot bind the ones picked (another
    /// process took them in between). If etcd exits, fails with an excerpt of
    /// what it logged; if it is not healthy within [`EtcdOptions::start_timeout`],
    /// kills it and fails the same way.
    pub fn start(opts: EtcdOptions) -> Result<EtcdServer, TestkitError> {
        validate_name(&opts.name)?;
        let (temp, dir) = match &opts.dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
                (None, dir.clone())
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("vitastor-etcd-")
                    .tempdir()
                    .map_err(io_error("creating a temp dir for etcd".to_string()))?;
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        let mut server = EtcdServer {
            opts,
            dir,
            client_port: 0,
            peer_port: 0,
            child: None,
            _temp: temp,
        };
        let deadline = Instant::now() + server.opts.start_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (client, peer) = pick_ports(server.opts.client_port)?;
            server.client_port = client;
            server.peer_port = peer;
            match server.launch(deadline)? {
                Launch::Healthy => return Ok(server),
                Launch::PortBusy { tail } if attempt >= PORT_ATTEMPTS => {
                    return Err(TestkitError::PortsBusy {
                        attempts: attempt,
                        log: server.log_path(),
                        tail,
                    })
                }
                Launch::PortBusy { .. } => {}
            }
        }
    }

    /// `http://127.0.0.1:<client port>` (or the [`EtcdOptions::host`] address), for
    /// etcdctl and HTTP clients.
    pub fn client_url(&self) -> String {
        format!("http://{}:{}", self.ip(), self.client_port)
    }

    /// `127.0.0.1:<client port>/v3` (or the [`EtcdOptions::host`] address), the form
    /// vitastor's `--etcd_address` takes.
    pub fn etcd_address(&self) -> String {
        format!("{}:{}/v3", self.ip(), self.client_port)
    }

    fn ip(&self) -> Ipv4Addr {
        self.opts
            .host
            .as_ref()
            .map_or(Ipv4Addr::LOCALHOST, |h| h.addr)
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer (raft) port.
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The directory this server owns (`data/`, `etcd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// etcd's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The file etcd's stdout and stderr are appended to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// PID of the etcd process, `None` once it has been stopped or killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the etcd process is still alive (it may have exited on its own).
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            // Exited (now reaped) or unwaitable: either way there is nothing to signal.
            Ok(Some(_)) | Err(_) => {
                self.child = None;
                false
            }
        }
    }

    /// One `/health` request: true if etcd answers 200 `{"health":"true"}`.
    pub fn is_healthy(&self) -> bool {
        self.health_check(HEALTH_REQUEST_TIMEOUT)
    }

    fn health_check(&self, timeout: Duration) -> bool {
        health_check(
            SocketAddr::from((self.ip(), self.client_port)),
            self.opts.host.as_ref(),
            timeout,
        )
    }

    /// Stops etcd: SIGTERM, then SIGKILL after [`EtcdOptions::stop_timeout`].
    /// Does nothing if it is not running; the data stays.
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        match self.child.take() {
            Some(child) => terminate(child, Some(self.opts.stop_timeout)),
            None => Ok(()),
        }
    }

    /// Kills etcd with SIGKILL (a crash, for failure tests). Does nothing if it
    /// is not running; whatever etcd had fsynced stays in the data dir.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        match self.child.take() {
            Some(child) => terminate(child, None),
            None => Ok(()),
        }
    }

    /// Stops etcd if it is running and starts it again on the same directory
    /// and the same ports, so clients holding [`Self::etcd_address`] reconnect.
    /// If a port was taken in the meantime this fails with
    /// [`TestkitError::PortsBusy`] instead of moving the server.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop()?;
        let deadline = Instant::now() + self.opts.start_timeout;
        match self.launch(deadline)? {
            Launch::Healthy => Ok(()),
            Launch::PortBusy { tail } => Err(TestkitError::PortsBusy {
                attempts: 1,
                log: self.log_path(),
                tail,
            }),
        }
    }

    /// Runs `etcdctl --endpoints=<client url> <args>` with `ETCDCTL_API=3` and
    /// returns its stdout. For one-shot commands (`put`, `get`, `del`,
    /// `endpoint status`...): a command still running after 30 s is killed.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, TestkitError> {
        self.etcdctl_with_input(args, None)
    }

    /// Like [`EtcdServer::etcdctl`], with `input` on etcdctl's stdin (`etcdctl txn`).
    pub fn etcdctl_with_input(
        &self,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, TestkitError> {
        let args_owned = || args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        // Output goes to anonymous temp files rather than pipes: then waiting
        // with a deadline needs no reader threads and a chatty command cannot
        // block on a full pipe.
        let capture = || {
            tempfile::tempfile().map_err(io_error(
                "creating a temp file for etcdctl output".to_string(),
            ))
        };
        let (mut stdout, mut stderr) = (capture()?, capture()?);
        let clone = |f: &File| {
            f.try_clone()
                .map_err(io_error("duplicating an etcdctl output file".to_string()))
        };
        let mut cmd = Command::new(&self.opts.etcdctl_binary);
        scrub_env(&mut cmd, "ETCDCTL_");
        if let Some(host) = &self.opts.host {
            host.enter_in_child(&mut cmd)
                .map_err(io_error(format!("entering {} for etcdctl", host.netns)))?;
        }
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.client_url()))
            .args(args)
            .stdout(clone(&stdout)?)
            .stderr(clone(&stderr)?);
        match input {
            Some(text) => {
                let mut file = capture()?;
                file.write_all(text.as_bytes())
                    .and_then(|_| file.seek(SeekFrom::Start(0)).map(|_| ()))
                    .map_err(io_error("writing etcdctl input".to_string()))?;
                cmd.stdin(file);
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        let mut child = cmd.spawn().map_err(|source| TestkitError::Spawn {
            binary: self.opts.etcdctl_binary.clone(),
            source,
        })?;
        let deadline = Instant::now() + ETCDCTL_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TestkitError::EtcdctlTimeout {
                        args: args_owned(),
                        after: ETCDCTL_TIMEOUT,
                    });
                }
                Err(source) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TestkitError::Io {
                        what: "waiting for etcdctl".to_string(),
                        source,
                    });
                }
            }
        };
        if !status.success() {
            return Err(TestkitError::Etcdctl {
                args: args_owned(),
                status: status.to_string(),
                stderr: read_capture(&mut stderr)?.trim().to_string(),
            });
        }
        read_capture(&mut stdout)
    }

    /// Spawns etcd on the current ports and waits for health, exit or `deadline`.
    fn launch(&mut self, deadline: Instant) -> Result<Launch, TestkitError> {
        debug_assert!(self.child.is_none(), "launch over a running etcd");
        let log_path = self.log_path();
        let log_err = || io_error(format!("writing {}", log_path.display()));
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(log_err())?;
        writeln!(
            log,
            "==== vitastor-testkit: starting {} (client {}, peer {}) ====",
            self.opts.etcd_binary.display(),
            self.client_url(),
            self.peer_url(),
        )
        .map_err(log_err())?;
        // The error tail quotes only what this attempt wrote.
        let from = log.metadata().map_err(log_err())?.len();
        let stderr = log.try_clone().map_err(log_err())?;

        let client_url = self.client_url();
        let peer_url = self.peer_url();
        let mut cmd = Command::new(&self.opts.etcd_binary);
        scrub_env(&mut cmd, "ETCD_");
        cmd.arg("--name")
            .arg(&self.opts.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .arg("--initial-cluster")
            .arg(format!("{}={}", self.opts.name, peer_url))
            // A single member elects itself after one election timeout, and etcd
            // 3.4 skips most of it only on the first start: with the defaults
            // (100/1000 ms) every restart takes 1-2 s, with these ~0.15 s. A lone
            // member has no followers to heartbeat and no one to lose its
            // leadership to, so short timeouts cost nothing under load.
            .args(["--heartbeat-interval=10", "--election-timeout=100"])
            .args(&self.opts.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        if let Some(host) = &self.opts.host {
            host.enter_in_child(&mut cmd)
                .map_err(io_error(format!("entering {} for etcd", host.netns)))?;
        }
        let child = spawn_tied_to_process(cmd).map_err(|source| TestkitError::Spawn {
            binary: self.opts.etcd_binary.clone(),
            source,
        })?;
        let health_addr = SocketAddr::from((self.ip(), self.client_port));
        let child = self.child.insert(child);

        loop {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    self.child = None;
                    let tail = log_tail(&log_path, from);
                    if tail.contains("address already in use") {
                        return Ok(Launch::PortBusy { tail });
                    }
                    return Err(TestkitError::Exited {
                        status: status.to_string(),
                        log: log_path,
                        tail,
                    });
                }
                Err(source) => {
                    // Drop (or the caller's stop) still kills it.
                    return Err(TestkitError::Io {
                        what: format!("waiting for etcd (pid {})", child.id()),
                        source,
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // A request may not outlast the deadline; connect_timeout rejects zero.
            let budget = (deadline - now).clamp(Duration::from_millis(10), HEALTH_REQUEST_TIMEOUT);
            if health_check(health_addr, self.opts.host.as_ref(), budget) {
                return Ok(Launch::Healthy);
            }
            thread::sleep(POLL_INTERVAL);
        }
        self.kill()?;
        Err(TestkitError::StartTimeout {
            url: client_url,
            after: self.opts.start_timeout,
            tail: log_tail(&log_path, from),
            log: log_path,
        })
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip(), self.peer_port)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // `terminate` ends in SIGKILL + wait whatever happens before; an error
        // here could only come from that final wait, and there is no one to tell.
        let _ = self.stop();
    }
}

/// Rejects names that would corrupt `--initial-cluster NAME=URL`.
fn validate_name(name: &str) -> Result<(), TestkitError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(TestkitError::InvalidOptions(format!(
            "etcd member name {name:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Picks a client port (or checks the fixed one is free) and a distinct peer
/// port. Both listeners are held together so the two ports differ, and both are
/// released on return, just before etcd binds them.
fn pick_ports(fixed_client: Option<u16>) -> Result<(u16, u16), TestkitError> {
    let bind = |port: u16| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(io_error(format!(
                "binding {}:{port} to reserve a port for etcd",
                Ipv4Addr::LOCALHOST
            )))
    };
    let (client, _client_listener) = bind(fixed_client.unwrap_or(0))?;
    let (peer, _peer_listener) = bind(0)?;
    Ok((client, peer))
}

/// Ends `child`: SIGTERM and up to `grace` to exit if `grace` is given, then
/// SIGKILL; always reaps it.
fn terminate(mut child: Child, grace: Option<Duration>) -> Result<(), TestkitError> {
    let pid = child.id();
    if let Some(grace) = grace {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        if let Ok(raw_pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) has no memory-safety preconditions. `child` is not
            // reaped yet, so `pid` still names our etcd (at worst a zombie),
            // never a process that inherited a recycled PID.
            unsafe { libc::kill(raw_pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            // An error here falls through to SIGKILL rather than leaking the process.
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
    }
    // Fails only if the child was already reaped, which the `wait` below covers.
    let _ = child.kill();
    child
        .wait()
        .map_err(io_error(format!("waiting for etcd (pid {pid}) to exit")))?;
    Ok(())
}

/// Spawns `cmd` so that the kernel SIGKILLs it when the test process dies,
/// even if no destructor runs.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
/// the process, and tests start servers from any thread they like (including
/// helper threads that end right after). So every fork happens on one
/// kit-owned thread that lives as long as the process.
pub(crate) fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Option<mpsc::Sender<Request>>> = OnceLock::new();

    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec; it calls
    // only prctl(2) and getppid(2), which are async-signal-safe, and does not
    // allocate (the error is built from a raw errno).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // If the test process died between fork and prctl, the signal will never come.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }

    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("testkit-spawner".to_string())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // The requester is blocked in recv, so the reply always arrives.
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let gone = || io::Error::other("the testkit spawner thread is not running");
    let spawner = spawner.as_ref().ok_or_else(gone)?;
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner.send((cmd, reply_tx)).map_err(|_| gone())?;
    reply_rx.recv().map_err(|_| gone())?
}

/// Removes inherited `PREFIX*` variables: etcd and etcdctl read them as flags,
/// so a developer's shell (say `ETCDCTL_ENDPOINTS`) would otherwise change what
/// the test runs against.
fn scrub_env(cmd: &mut Command, prefix: &str) {
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| k.starts_with(prefix) && k != KEEP_ETCD_ENV)
        {
            cmd.env_remove(key);
        }
    }
}

/// One `GET /health` to `addr` (from inside `host`'s namespace when given); any failure
/// (refused, timeout, garbage) is "not healthy".
fn health_check(addr: SocketAddr, host: Option<&NetHost>, timeout: Duration) -> bool {
    let fetch = || -> io::Result<Vec<u8>> {
        let mut stream = match host {
            Some(h) => h.connect(addr, timeout)?,
            None => TcpStream::connect_timeout(&addr, timeout)?,
        };
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        // HTTP/1.0: etcd closes the connection after the reply, so reading to
        // EOF is all the framing needed.
        write!(stream, "GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut response = Vec::new();
        stream
            .take(HEALTH_RESPONSE_LIMIT)
            .read_to_end(&mut response)?;
        Ok(response)
    };
    fetch().is_ok_and(|response| health_response_ok(&response))
}

/// True for a `200` response whose JSON body has `"health":"true"`.
fn health_response_ok(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let status_ok = head.lines().next().is_some_and(|line| {
        line.starts_with("HTTP/1.") && line.split_whitespace().nth(1) == Some("200")
    });
    let healthy = serde_json::from_str::<serde_json::Value>(body.trim())
        .ok()
        .is_some_and(|json| json.get("health").and_then(|h| h.as_str()) == Some("true"));
    status_ok && healthy
}

/// The first and last lines written to `path` at or after byte `from`.
fn log_tail(path: &Path, from: u64) -> String {
    let read = || -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(
            from.max(len.saturating_sub(LOG_READ_LIMIT)),
        ))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = match read() {
        Ok(bytes) => bytes,
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    if lines.iter().all(|line| line.trim().is_empty()) {
        return "(etcd wrote nothing)".to_string();
    }
    if lines.len() <= LOG_HEAD_LINES + LOG_TAIL_LINES {
        return lines.join("\n");
    }
    let omitted = lines.len() - LOG_HEAD_LINES - LOG_TAIL_LINES;
    format!(
        "{}\n[... {omitted} lines ...]\n{}",
        lines[..LOG_HEAD_LINES].join("\n"),
        lines[lines.len() - LOG_TAIL_LINES..].join("\n"),
    )
}

fn read_capture(file: &mut File) -> Result<String, TestkitError> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(io_error("reading etcdctl output".to_string()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn io_error(what: String) -> impl FnOnce(io::Error) -> TestkitError {
    move |source| TestkitError::Io { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_response_parsing() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{\"health\":\"true\"}";
        assert!(health_response_ok(ok));
        let no_leader = b"HTTP/1.0 503 Service Unavailable\r\n\r\n{\"health\":\"false\"}";
        assert!(!health_response_ok(no_leader));
        assert!(!health_response_ok(
            b"HTTP/1.0 200 OK\r\n\r\n{\"health\":\"false\"}"
        ));
        assert!(!health_response_ok(b"HTTP/1.0 200 OK\r\n\r\nnot json"));
        assert!(!health_response_ok(b"HTTP/1.0 200 OK\r\n"));
        assert!(!health_response_ok(b""));
    }

    #[test]
    fn member_names() {
        assert!(validate_name("etcd-1_a.b").is_ok());
        for bad in ["", "a=b", "a,b", "a b", "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
