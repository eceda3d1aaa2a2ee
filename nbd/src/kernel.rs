//! The kernel side: attaching an export to `/dev/nbdN`, detaching it, listing attachments.
//!
//! # What this module owns
//! - Device choice (the given one, or the first `/sys/block/nbdN` without a `pid`) and the
//!   clear error when the kernel has no NBD devices at all.
//! - The ioctl sequence over a socketpair: `NBD_SET_BLKSIZE` (the pool's granularity, so the
//!   kernel never sends requests the client library cannot take), `NBD_SET_SIZE`,
//!   `NBD_SET_TIMEOUT`, `NBD_SET_FLAGS`, `NBD_SET_SOCK`, then `NBD_DO_IT` on a thread of its
//!   own: that ioctl blocks in the kernel for the device's lifetime, while the serving loop
//!   runs on the main thread over the other end of the socketpair.
//! - `unmap` (`NBD_DISCONNECT`) and `ls` (from sysfs and `/proc/PID/cmdline`).
//!
//! # What it must never do
//! - Serve data: requests on the socket are the server's business.
//! - Guess: a missing device is reported, never created.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};

use serde_json::{json, Map, Value};
use tracing::{info, warn};

use crate::error::NbdError;
use crate::server::Export;
use crate::sys;

/// The hint printed whenever NBD devices are missing.
const NO_NBD_HINT: &str = "the kernel NBD module is not loaded or not available \
     (try `modprobe nbd`; containers usually cannot use NBD)";

/// The device to attach: `requested`, or the first free `/dev/nbdN`.
pub fn pick_device(requested: Option<&Path>) -> Result<PathBuf, NbdError> {
    if let Some(dev) = requested {
        if !dev.exists() {
            return Err(NbdError::NoKernelNbd(format!(
                "{} does not exist: {NO_NBD_HINT}",
                dev.display()
            )));
        }
        return Ok(dev.to_path_buf());
    }
    let mut free: Vec<u32> = devices()
        .into_iter()
        .filter(|&n| !Path::new(&format!("/sys/block/nbd{n}/pid")).exists())
        .collect();
    free.sort_unstable();
    match free.first() {
        Some(n) => Ok(PathBuf::from(format!("/dev/nbd{n}"))),
        None if devices().is_empty() => Err(NbdError::NoKernelNbd(format!(
            "no /dev/nbdN devices: {NO_NBD_HINT}"
        ))),
        None => Err(NbdError::Invalid(
            "every /dev/nbdN is in use (load nbd with more nbds_max)".into(),
        )),
    }
}

/// Numbers of the NBD devices the kernel has (`/sys/block/nbdN`).
fn devices() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("nbd")?.parse().ok())
        .collect()
}

/// An attached device: the server's end of the socket and the thread inside `NBD_DO_IT`.
pub struct Attached {
    /// The server's end of the socketpair.
    pub stream: UnixStream,
    /// Returns when the device is disconnected.
    pub thread: JoinHandle<()>,
}

/// Configures `dev` for `export` and starts the kernel side.
pub fn attach(dev: &Path, export: &Export, timeout_s: u64) -> Result<Attached, NbdError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(NbdError::io(format!("opening {}", dev.display())))?;
    let (ours, theirs) = UnixStream::pair().map_err(NbdError::io("socketpair"))?;
    let fd = file.as_raw_fd();
    let g = &export.geometry;
    let steps = [
        ("NBD_SET_BLKSIZE", sys::NBD_SET_BLKSIZE, g.granularity),
        ("NBD_SET_SIZE", sys::NBD_SET_SIZE, g.size),
        ("NBD_SET_TIMEOUT", sys::NBD_SET_TIMEOUT, timeout_s),
        (
            "NBD_SET_FLAGS",
            sys::NBD_SET_FLAGS,
            u64::from(export.flags()),
        ),
        ("NBD_CLEAR_SOCK", sys::NBD_CLEAR_SOCK, 0),
        ("NBD_SET_SOCK", sys::NBD_SET_SOCK, theirs.as_raw_fd() as u64),
    ];
    for (name, request, arg) in steps {
        sys::nbd_ioctl_arg(fd, request, arg)
            .map_err(NbdError::io(format!("{name} on {}", dev.display())))?;
    }
    let name = dev.display().to_string();
    let thread = thread::Builder::new()
        .name("nbd-do-it".into())
        .spawn(move || do_it(file, theirs, name))
        .map_err(NbdError::io("starting the NBD_DO_IT thread"))?;
    Ok(Attached {
        stream: ours,
        thread,
    })
}

/// Runs the device until it is disconnected, then clears it for the next user.
fn do_it(file: File, kernel_end: UnixStream, name: String) {
    let fd = file.as_raw_fd();
    match sys::nbd_ioctl_arg(fd, sys::NBD_DO_IT, 0) {
        Ok(()) => info!("{name}: disconnected"),
        Err(e) => warn!("{name}: NBD_DO_IT ended: {e}"),
    }
    let _ = sys::nbd_ioctl_arg(fd, sys::NBD_CLEAR_QUE, 0);
    let _ = sys::nbd_ioctl_arg(fd, sys::NBD_CLEAR_SOCK, 0);
    drop(kernel_end);
}

/// Asks the kernel to disconnect `dev`; its serving process then exits.
pub fn disconnect(dev: &Path) -> Result<(), NbdError> {
    if !dev.exists() {
        return Err(NbdError::NoKernelNbd(format!(
            "{} does not exist: {NO_NBD_HINT}",
            dev.display()
        )));
    }
    let file = File::open(dev).map_err(NbdError::io(format!("opening {}", dev.display())))?;
    sys::nbd_ioctl_arg(file.as_raw_fd(), sys::NBD_DISCONNECT, 0)
        .map_err(NbdError::io(format!("NBD_DISCONNECT on {}", dev.display())))
}

/// Attached devices: device → `{"pid", "image"|"inode", "pool"}` as JSON.
pub fn list() -> Map<String, Value> {
    let mut out = Map::new();
    let mut devs = devices();
    devs.sort_unstable();
    for n in devs {
        let Ok(pid) = fs::read_to_string(format!("/sys/block/nbd{n}/pid")) else {
            continue;
        };
        let pid: u32 = match pid.trim().parse() {
            Ok(p) => p,
            Err(_) => continue,
        };
        let mut entry = Map::new();
        entry.insert("pid".into(), json!(pid));
        let args: Vec<String> = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for key in ["image", "pool", "inode"] {
            let flag = format!("--{key}");
            if let Some(v) = args
                .iter()
                .position(|a| a == &flag)
                .and_then(|i| args.get(i + 1))
            {
                entry.insert(key.into(), json!(v));
            }
        }
        out.insert(format!("/dev/nbd{n}"), Value::Object(entry));
    }
    out
}
