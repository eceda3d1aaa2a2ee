//! SIGTERM/SIGINT as a shutdown request the event loop can wait for without races.
//!
//! The signals stay blocked while the loop works and are unblocked only inside `ppoll`
//! ([`Shutdown::wait_mask`]), so a signal either interrupts the wait or is delivered at the
//! start of the next one: it can never slip in between "check the flag" and "block".

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installed SIGTERM/SIGINT handling. One per process.
pub struct Shutdown {
    wait_mask: libc::sigset_t,
}

impl Shutdown {
    /// Blocks SIGTERM and SIGINT for this thread and installs the handler that records them.
    pub fn install() -> io::Result<Shutdown> {
        // SAFETY: plain libc signal-set manipulation on locals; the handler only touches an
        // atomic; sigaction/pthread_sigmask are given valid pointers.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, libc::SIGTERM);
            libc::sigaddset(&mut block, libc::SIGINT);
            let mut old: libc::sigset_t = std::mem::zeroed();
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            for sig in [libc::SIGTERM, libc::SIGINT] {
                if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let mut wait_mask = old;
            libc::sigdelset(&mut wait_mask, libc::SIGTERM);
            libc::sigdelset(&mut wait_mask, libc::SIGINT);
            Ok(Shutdown { wait_mask })
        }
    }

    /// Whether a shutdown signal has arrived.
    pub fn requested(&self) -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }

    /// The signal mask to wait with in `ppoll`: the caller's, with the shutdown signals open.
    pub fn wait_mask(&self) -> &libc::sigset_t {
        &self.wait_mask
    }
}
