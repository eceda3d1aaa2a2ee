//! SIGTERM/SIGINT as a shutdown request the event loop waits for like any other event.
//!
//! The signals are blocked in the process and read from a signalfd, which the loop polls on
//! its io_uring with everything else: a signal can never slip in between "check the flag"
//! and "block", because it stays pending on the fd until read.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Installed SIGTERM/SIGINT handling. One per process.
pub struct Shutdown {
    fd: OwnedFd,
    requested: AtomicBool,
}

impl Shutdown {
    /// Blocks SIGTERM and SIGINT (for this thread and the threads it starts later) and opens
    /// the signalfd that receives them.
    pub fn install() -> io::Result<Shutdown> {
        // SAFETY: plain libc signal-set manipulation on locals; pthread_sigmask and signalfd
        // are given valid pointers; the returned fd is owned by nobody else.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Shutdown {
                fd: OwnedFd::from_raw_fd(fd),
                requested: AtomicBool::new(false),
            })
        }
    }

    /// The fd that becomes readable when a shutdown signal is pending.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads the pending signals (the fd was reported readable) and records the request.
    pub fn take_signals(&self) {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        loop {
            // SAFETY: reads at most `info.len()` bytes into a live buffer from our own fd.
            let n = unsafe { libc::read(self.fd(), info.as_mut_ptr().cast(), info.len()) };
            if n <= 0 {
                break;
            }
            self.requested.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a shutdown signal has arrived.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}
