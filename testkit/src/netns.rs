//! Running the kit's daemons and tools inside a network namespace that a test made (with
//! `ip netns add`, so it is named by `/run/netns/<name>`), bound to an address of that
//! namespace.
//!
//! # What this module owns
//! - [`NetHost`]: a namespace name and the address a daemon binds and publishes there.
//! - Entering the namespace in a spawned child, between fork and exec (`setns(2)` on the
//!   namespace file), so the child keeps its own PID (the kit signals it by that PID) and
//!   needs no `ip netns exec` wrapper.
//! - Connecting (or listening) from the test process inside the namespace: a short-lived
//!   thread enters it and opens the socket; a socket stays in the namespace it was made in, so the caller uses
//!   it from any thread while the test process itself never leaves the root namespace.
//!
//! # What it must never do
//! - Create, change or remove namespaces, links, addresses or routes: that is the test's
//!   (see the fault suite's `netns` module). This module only enters what exists.
//! - Move the calling thread (or any thread but its own short-lived one) into a namespace.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

/// Where a daemon runs: inside network namespace `netns`, on address `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetHost {
    /// The namespace's `ip netns` name.
    pub netns: String,
    /// The address the daemon binds (and publishes, for an OSD).
    pub addr: Ipv4Addr,
}

impl NetHost {
    /// `addr` in namespace `netns`.
    pub fn new(netns: impl Into<String>, addr: Ipv4Addr) -> NetHost {
        NetHost {
            netns: netns.into(),
            addr,
        }
    }

    /// Makes `cmd`'s child enter this namespace before it executes.
    pub fn enter_in_child(&self, cmd: &mut Command) -> io::Result<()> {
        enter_in_child(cmd, &self.netns)
    }

    /// A TCP connection to `to`, made inside this namespace.
    pub fn connect(&self, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        connect_in(&self.netns, to, timeout)
    }

    /// A TCP listener on this host's address (port `port`, 0 for any), made inside this
    /// namespace.
    pub fn listen(&self, port: u16) -> io::Result<TcpListener> {
        let addr = SocketAddr::from((self.addr, port));
        in_netns(&self.netns, move || TcpListener::bind(addr))
    }
}

fn netns_path(netns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(netns)
}

fn open(netns: &str) -> io::Result<File> {
    let path = netns_path(netns);
    File::open(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("network namespace {}: {e}", path.display()),
        )
    })
}

/// Enters the namespace of `ns` in the calling thread only.
fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: setns(2) on an open namespace file descriptor; it changes only the calling
    // thread's network namespace and touches no memory of ours.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `cmd`'s child enter network namespace `netns` before it executes (the namespace
/// file is opened now, so a missing namespace fails here rather than in the child).
pub fn enter_in_child(cmd: &mut Command, netns: &str) -> io::Result<()> {
    let ns = open(netns)?;
    // SAFETY: the closure runs in the child between fork and exec and only calls setns(2),
    // which is async-signal-safe; on failure it builds the error from the raw errno without
    // allocating. The file is opened with O_CLOEXEC, so the program never inherits it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// A TCP connection to `to` made inside network namespace `netns`, with `timeout` for the
/// connect.
pub fn connect_in(netns: &str, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    in_netns(netns, move || TcpStream::connect_timeout(&to, timeout))
}

/// Runs `make` (which makes a socket) on a thread of its own inside `netns`.
fn in_netns<T: Send + 'static>(
    netns: &str,
    make: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ns = open(netns)?;
    thread::Builder::new()
        .name("testkit-netns".into())
        .spawn(move || {
            setns(&ns)?;
            make()
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}
