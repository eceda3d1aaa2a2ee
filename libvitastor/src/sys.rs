//! Thin, safe wrappers over the few Linux calls the data path makes: epoll, timerfd,
//! non-blocking TCP sockets, readv/writev on iovec lists.
//!
//! # What this module owns
//! Every `unsafe` block of the data path, each with the reason it is sound. Callers above
//! deal only in `OwnedFd`, slices and [`IoVec`] lists whose memory the op table keeps alive.
//!
//! # What it must never do
//! Block: every fd it creates is non-blocking; `epoll_wait` takes the caller's timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// One buffer segment of an op: a raw (pointer, length) pair, exactly `struct iovec`.
///
/// The op table guarantees the memory stays valid until the op completes: it is either a
/// `Vec` the op owns, or caller memory the C ABI contract keeps alive until the callback.
pub type IoVec = libc::iovec;

/// Fills `out` with the part of `src` covering bytes `[off, off + len)` of the list.
pub fn sub_iov(src: &[IoVec], off: u64, len: u64, out: &mut Vec<IoVec>) {
    out.clear();
    extend_sub_iov(src, off, len, out);
}

/// Appends to `out` the part of `src` covering bytes `[off, off + len)` of the list.
pub fn extend_sub_iov(src: &[IoVec], mut off: u64, mut len: u64, out: &mut Vec<IoVec>) {
    for v in src {
        if len == 0 {
            break;
        }
        let vlen = v.iov_len as u64;
        if off >= vlen {
            off -= vlen;
            continue;
        }
        let take = (vlen - off).min(len);
        out.push(IoVec {
            // Pointer arithmetic only; no dereference here. `off < vlen` keeps it in bounds.
            iov_base: v.iov_base.cast::<u8>().wrapping_add(off as usize).cast(),
            iov_len: take as usize,
        });
        len -= take;
        off = 0;
    }
}

/// Copies `data` into the iovec list starting at byte `off` of the list.
pub fn copy_to_iov(iov: &[IoVec], off: u64, data: &[u8], scratch: &mut Vec<IoVec>) {
    sub_iov(iov, off, data.len() as u64, scratch);
    let mut pos = 0;
    for v in scratch.iter() {
        // SAFETY: the segment lies inside op memory that is valid and not otherwise
        // referenced while the op is in flight (see `IoVec`), and `data` is a separate
        // buffer (the connection's receive buffer), so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(data[pos..].as_ptr(), v.iov_base.cast(), v.iov_len)
        };
        pos += v.iov_len;
    }
}

/// Copies `len` bytes at byte `off` of the iovec list into a new vector.
pub fn gather(iov: &[IoVec], off: u64, len: u64, scratch: &mut Vec<IoVec>) -> Vec<u8> {
    sub_iov(iov, off, len, scratch);
    let mut out = Vec::with_capacity(len as usize);
    for v in scratch.iter() {
        // SAFETY: the segment lies inside caller memory valid for the duration of the call
        // that submitted the op (see `IoVec`).
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(v.iov_base.cast(), v.iov_len) });
    }
    out
}

/// Result of a non-blocking read or write.
pub enum Io {
    /// This many bytes moved.
    Done(usize),
    /// Nothing to do now (EAGAIN).
    WouldBlock,
    /// The peer closed (read of 0 bytes).
    Closed,
}

fn io_result(n: isize) -> io::Result<Io> {
    if n > 0 {
        return Ok(Io::Done(n as usize));
    }
    if n == 0 {
        return Ok(Io::Closed);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock => Ok(Io::WouldBlock),
        io::ErrorKind::Interrupted => Ok(Io::Done(0)),
        _ => Err(e),
    }
}

/// `readv` into the segments.
pub fn readv(fd: RawFd, iov: &[IoVec]) -> io::Result<Io> {
    let cnt = iov.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
    // SAFETY: every segment points into writable memory kept alive by the op table or the
    // connection (see `IoVec`); the kernel writes at most iov_len bytes into each.
    io_result(unsafe { libc::readv(fd, iov.as_ptr(), cnt) })
}

/// `read` into a slice.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<Io> {
    // SAFETY: `buf` is a live, writable slice of exactly the length passed.
    io_result(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// The bytes one [`readv`] or [`writev`] of `iov` may move: the kernel takes at most
/// `UIO_MAXIOV` segments, so what lies past them is neither read nor sent by that call.
pub fn iov_bytes(iov: &[IoVec]) -> usize {
    iov.iter()
        .take(libc::UIO_MAXIOV as usize)
        .map(|v| v.iov_len)
        .sum()
}

/// `writev` from the segments (MSG_NOSIGNAL semantics come from ignoring SIGPIPE via
/// `sendmsg`, so a dead peer is an error rather than a signal).
pub fn writev(fd: RawFd, iov: &[IoVec]) -> io::Result<Io> {
    let cnt = iov.len().min(libc::UIO_MAXIOV as usize);
    // SAFETY: an all-zero msghdr is valid; we then point it at `iov`, which outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = cnt as _;
    // SAFETY: the segments point into memory kept alive by the op table (see `IoVec`); the
    // kernel only reads from them.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    match io_result(n)? {
        // A zero-byte send with segments left is not a close; report it as no progress.
        Io::Closed => Ok(Io::Done(0)),
        other => Ok(other),
    }
}

/// Starts a non-blocking TCP connect to `ip:port`.
pub fn connect(ip: IpAddr, port: u16) -> io::Result<OwnedFd> {
    let addr = SocketAddr::new(ip, port);
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_nonblocking(true)?;
    // Failure only costs latency.
    let _ = socket.set_nodelay(true);
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// The pending error of a socket whose non-blocking connect finished (`SO_ERROR`).
pub fn socket_error(fd: RawFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a live c_int and its size for the kernel to fill.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(())
}

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    /// A new epoll fd.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The epoll fd itself (readable when any member is ready).
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: passes a live epoll_event; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.raw(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Adds `fd` with `token`, readable and optionally writable.
    pub fn add(&self, fd: RawFd, token: u64, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, flags(write), token)
    }

    /// Changes whether `fd` is watched for writability.
    pub fn modify(&self, fd: RawFd, token: u64, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, flags(write), token)
    }

    /// Waits up to `timeout` (`None` = forever, zero = poll) and returns how many events
    /// were written into `events`.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout: Option<Duration>) -> usize {
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        // SAFETY: `events` is a live, writable array of the length passed.
        let n = unsafe {
            libc::epoll_wait(
                self.raw(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                ms,
            )
        };
        // EINTR (and any other error) just means no events this time.
        n.max(0) as usize
    }
}

fn flags(write: bool) -> u32 {
    let mut f = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    if write {
        f |= libc::EPOLLOUT as u32;
    }
    f
}

/// A one-shot monotonic timer fd.
#[derive(Debug)]
pub struct Timer(OwnedFd);

impl Timer {
    /// A new disarmed timer.
    pub fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create has no memory-safety preconditions.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(Timer(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The fd.
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Fires once after `after` (at least 1 ms, since zero would disarm it).
    pub fn arm(&self, after: Duration) {
        let after = after.max(Duration::from_millis(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: passes a live itimerspec; the old value is not requested.
        unsafe { libc::timerfd_settime(self.raw(), 0, &spec, std::ptr::null_mut()) };
    }

    /// Consumes an expiry; EAGAIN (not expired) is fine.
    pub fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from an fd this struct owns.
        unsafe { libc::read(self.raw(), (&mut n as *mut u64).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_iov_and_copies() {
        let mut a = vec![0u8; 10];
        let mut b = vec![0u8; 6];
        let src = [
            IoVec {
                iov_base: a.as_mut_ptr().cast(),
                iov_len: a.len(),
            },
            IoVec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            },
        ];
        let mut out = Vec::new();
        sub_iov(&src, 8, 5, &mut out);
        assert_eq!(out.iter().map(|v| v.iov_len).collect::<Vec<_>>(), [2, 3]);
        copy_to_iov(&src, 8, &[1, 2, 3, 4, 5], &mut out);
        assert_eq!(gather(&src, 7, 7, &mut out), [0, 1, 2, 3, 4, 5, 0]);
        sub_iov(&src, 16, 4, &mut out);
        assert!(out.is_empty());
        assert_eq!(&a[8..], &[1, 2]);
        assert_eq!(&b[..4], &[3, 4, 5, 0]);
    }
}
