//! Shared by the NBD tests: one local cluster per test binary, `vitastor-nbd serve`
//! processes, external tools with time limits, and a minimal hand-written NBD client for
//! the malformed-input cases.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use vitastor_testkit::{process, Cluster, ClusterOptions};

pub const MIB: u64 = 1 << 20;

/// The cluster shared by every test of this binary (tests use distinct images). Its
/// processes are tied to the test process and end with it; its directory is removed at exit.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut opts = ClusterOptions::from_workspace();
        opts.osd_size = 512 * MIB;
        remove_at_exit(Cluster::start(opts).expect("starting the cluster"))
    })
}

/// Directories of this binary's shared clusters. A `static` is never dropped, so the
/// cluster's own clean-up never runs: every `make test` left each of them (1.7 GiB of
/// reserved OSD files) in the temp directory.
static CLUSTER_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_cluster_dirs() {
    let dirs = CLUSTER_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    for d in dirs.iter() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Has `cl`'s directory removed when the test process exits (the test harness ends with
/// `exit`, which runs `atexit` handlers; its OSDs and etcd die with the process).
fn remove_at_exit(cl: Cluster) -> Cluster {
    let mut dirs = CLUSTER_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if dirs.is_empty() {
        // SAFETY: registers a plain `extern "C"` function without captured state; it only
        // takes a lock and removes files, which is allowed while the process exits.
        unsafe { libc::atexit(remove_cluster_dirs) };
    }
    dirs.push(cl.dir().to_path_buf());
    cl
}

/// A second cluster for the tests that need an erasure-coded image: 3 OSDs, pool 1 EC 2+1
/// (pg_minsize 2), 256 KiB objects of two 128 KiB data parts and a parity part.
pub fn ec_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut opts = ClusterOptions::from_workspace();
        opts.osd_size = 512 * MIB;
        opts.pg_size = 3;
        opts.scheme = "ec".into();
        opts.parity_chunks = 1;
        opts.pg_minsize = Some(2);
        remove_at_exit(Cluster::start(opts).expect("starting the EC cluster"))
    })
}

/// Creates `image` in pool 1. Serialized: the testkit picks the next inode number with a
/// read then a write, so two tests creating images at once could get the same inode.
pub fn create_image(image: &str, size: u64) {
    create_image_on(cluster(), image, size);
}

/// [`create_image`] on `cl`.
pub fn create_image_on(cl: &Cluster, image: &str, size: u64) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    cl.create_image(image, size).expect("creating the image");
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vitastor-nbd-{name}-"))
        .tempdir()
        .expect("temp dir")
}

/// A running `vitastor-nbd serve` on a Unix socket; SIGTERMed and reaped on drop.
pub struct Serve {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub image: String,
}

impl Serve {
    /// Creates `image` (if needed) and serves it on `dir/nbd.sock`.
    pub fn start(dir: &Path, image: &str, size: u64) -> Serve {
        Serve::start_on(cluster(), dir, image, size)
    }

    /// [`Serve::start`] on `cl`.
    pub fn start_on(cl: &Cluster, dir: &Path, image: &str, size: u64) -> Serve {
        create_image_on(cl, image, size);
        let socket = dir.join("nbd.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vitastor-nbd"))
            .args([
                "serve",
                "--etcd_address",
                &cl.etcd_address(),
                "--image",
                image,
            ])
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning vitastor-nbd serve");
        let line = process::first_line_within(&mut child, Duration::from_secs(60));
        if !matches!(&line, Ok(Some(l)) if l.starts_with("listening on unix:")) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vitastor-nbd serve did not start: first line {line:?}");
        }
        Serve {
            child: Some(child),
            socket,
            image: image.to_string(),
        }
    }

    /// `nbd+unix:///IMAGE?socket=PATH`.
    pub fn uri(&self) -> String {
        format!(
            "nbd+unix:///{}?socket={}",
            self.image,
            self.socket.display()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own unreaped child's PID.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("waitpid") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vitastor-nbd did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
    }
}

/// Runs a tool; a hang fails the test (the tool is killed) instead of stalling it.
pub fn run(secs: u64, program: &str, args: &[&str]) -> Output {
    process::output_within(
        Command::new(program).args(args).stdin(Stdio::null()),
        Duration::from_secs(secs),
    )
    .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

/// Like [`run`], but panics with the output unless the tool succeeds.
pub fn run_ok(secs: u64, program: &str, args: &[&str]) -> String {
    let out = run(secs, program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

// ---- a minimal NBD client (fixed newstyle, simple replies) ----

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const FLAG_FUA: u16 = 1;
pub const OPT_GO: u32 = 7;
pub const REP_ACK: u32 = 1;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) | 6;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;

pub struct RawClient {
    pub s: UnixStream,
    pub size: u64,
    pub flags: u16,
    pub min_block: u32,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

impl RawClient {
    /// Connects and reads the greeting; sends client flags (fixed newstyle, no zeroes).
    pub fn connect(socket: &Path) -> UnixStream {
        let mut s = UnixStream::connect(socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut greet = [0u8; 18];
        s.read_exact(&mut greet).expect("greeting");
        assert_eq!(&greet[..8], b"NBDMAGIC");
        assert_eq!(&greet[8..16], b"IHAVEOPT");
        s.write_all(&3u32.to_be_bytes()).unwrap();
        s
    }

    /// Sends NBD_OPT_GO for `name`; returns the final reply type and the infos seen.
    pub fn go(s: &mut UnixStream, name: &str) -> (u32, Vec<Vec<u8>>) {
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&3u16.to_be_bytes()); // NBD_INFO_BLOCK_SIZE
        let mut msg = 0x4948_4156_454f_5054u64.to_be_bytes().to_vec();
        msg.extend_from_slice(&OPT_GO.to_be_bytes());
        msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
        msg.extend_from_slice(&data);
        s.write_all(&msg).unwrap();
        let mut infos = Vec::new();
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).expect("option reply");
            assert_eq!(be64(&h), 0x0003_e889_0455_65a9);
            let kind = be32(&h[12..]);
            let mut d = vec![0u8; be32(&h[16..]) as usize];
            s.read_exact(&mut d).unwrap();
            if kind == REP_INFO {
                infos.push(d);
                continue;
            }
            return (kind, infos);
        }
    }

    /// Connects and negotiates `name`.
    pub fn open(socket: &Path, name: &str) -> RawClient {
        let mut s = RawClient::connect(socket);
        let (kind, infos) = RawClient::go(&mut s, name);
        assert_eq!(kind, REP_ACK);
        let mut c = RawClient {
            s,
            size: 0,
            flags: 0,
            min_block: 0,
        };
        for i in infos {
            match u16::from_be_bytes([i[0], i[1]]) {
                0 => {
                    c.size = be64(&i[2..]);
                    c.flags = u16::from_be_bytes([i[10], i[11]]);
                }
                3 => c.min_block = be32(&i[2..]),
                _ => {}
            }
        }
        c
    }

    pub fn send(&mut self, kind: u16, flags: u16, cookie: u64, offset: u64, len: u32, data: &[u8]) {
        let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).expect("sending a request");
    }

    /// Reads one simple reply: (cookie, error).
    pub fn reply(&mut self) -> (u64, u32) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).expect("reply header");
        assert_eq!(be32(&h), 0x6744_6698);
        (be64(&h[8..]), be32(&h[4..]))
    }

    /// A synchronous request; returns the error and (for reads) the data.
    pub fn call(
        &mut self,
        kind: u16,
        flags: u16,
        offset: u64,
        len: u32,
        data: &[u8],
    ) -> (u32, Vec<u8>) {
        self.send(kind, flags, 77, offset, len, data);
        let (cookie, err) = self.reply();
        assert_eq!(cookie, 77);
        let mut buf = Vec::new();
        if kind == CMD_READ && err == 0 {
            buf.resize(len as usize, 0);
            self.s.read_exact(&mut buf).expect("read data");
        }
        (err, buf)
    }
}
