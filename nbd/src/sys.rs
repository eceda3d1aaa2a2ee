//! The Linux calls std does not wrap: poll, signalfd, the send buffer size, the NBD ioctls,
//! fork/setsid/dup2.
//!
//! # What this module owns
//! - Every `unsafe` block of the program, each with its SAFETY argument.
//!
//! # What it must never do
//! - Keep state or decide policy: each function is one system call (or a fixed short
//!   sequence) with its error turned into `io::Error`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `_IO(0xab, nr)`: the NBD ioctl numbers (linux/nbd.h).
const fn nbd_ioctl(nr: u64) -> u64 {
    (0xab << 8) | nr
}
/// Hands the kernel its end of the socket.
pub const NBD_SET_SOCK: u64 = nbd_ioctl(0);
/// Logical block size.
pub const NBD_SET_BLKSIZE: u64 = nbd_ioctl(1);
/// Device size in bytes.
pub const NBD_SET_SIZE: u64 = nbd_ioctl(2);
/// Serves the device until disconnect (blocks).
pub const NBD_DO_IT: u64 = nbd_ioctl(3);
/// Forgets the socket.
pub const NBD_CLEAR_SOCK: u64 = nbd_ioctl(4);
/// Fails the requests still queued.
pub const NBD_CLEAR_QUE: u64 = nbd_ioctl(5);
/// Asks the kernel to send `NBD_CMD_DISC` and stop.
pub const NBD_DISCONNECT: u64 = nbd_ioctl(8);
/// Request timeout in seconds.
pub const NBD_SET_TIMEOUT: u64 = nbd_ioctl(9);
/// Transmission flags.
pub const NBD_SET_FLAGS: u64 = nbd_ioctl(10);

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Blocks SIGTERM and SIGINT in this thread (and in every thread started after it, which
/// inherit the mask) and returns a non-blocking signalfd that reports them.
pub fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    // SAFETY: `set` is initialised; the old mask is not wanted (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `set` is initialised; -1 asks for a new fd.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: signalfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal from a signalfd, `None` when there is none.
pub fn read_signal(fd: &OwnedFd) -> Option<u32> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: reads at most `size` bytes into `info`, which is `size` bytes long.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (n == size as isize).then_some(info.ssi_signo)
}

/// poll(2) with a timeout in milliseconds (-1 = forever); EINTR counts as "nothing ready".
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(rc as usize)
}

/// Asks for a socket send buffer of `bytes`: beyond `net.core.wmem_max` when privileged
/// (`SO_SNDBUFFORCE`, as `map` runs), else capped by it (`SO_SNDBUF`).
pub fn set_send_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |option| {
        // SAFETY: passes a pointer to an int that lives for the call, with its exact size.
        check(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    };
    set(libc::SO_SNDBUFFORCE).or_else(|_| set(libc::SO_SNDBUF))
}

/// An NBD ioctl with an integer argument.
pub fn nbd_ioctl_arg(fd: RawFd, request: u64, arg: u64) -> io::Result<()> {
    // SAFETY: the NBD ioctls used here take an integer (not a pointer) argument, so no
    // memory is passed to the kernel; a wrong fd only makes the call fail.
    check(unsafe { libc::ioctl(fd, request as _, arg as libc::c_ulong) }).map(|_| ())
}

/// Result of [`fork`].
pub enum Forked {
    /// In the parent.
    Parent,
    /// In the child.
    Child,
}

/// fork(2). Only called before any thread is started (the client's etcd thread comes
/// later), so the child is a complete copy of a single-threaded process.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the process is single-threaded here (see above), so the child may run any
    // code, not only async-signal-safe functions.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        _ => Ok(Forked::Parent),
    }
}

/// setsid(2): detaches from the terminal's session.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments, no memory.
    check(unsafe { libc::setsid() }).map(|_| ())
}

/// dup2(2): makes `to` refer to `from`'s file (stdio redirection).
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: only file descriptor numbers are passed; `to` is one of the stdio fds, which
    // this process owns.
    check(unsafe { libc::dup2(from, to) }).map(|_| ())
}
