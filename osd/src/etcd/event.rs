//! What crosses between the side thread and the data path: events one way, commands the
//! other, and the eventfd that wakes the data path.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;

use serde_json::Value;

use super::EtcdError;

/// What the side thread tells the data path. Keys are relative to the prefix, without the
/// leading slash (`config/pools`, `osd/state/3`).
#[derive(Debug, Clone, PartialEq)]
pub enum EtcdEvent {
    /// A session with etcd is up: the lease is granted and the state key is written. An
    /// [`EtcdEvent::InitialLoad`] follows.
    Connected,
    /// The lease was granted, taken up again or kept alive: etcd keeps it until `expires`
    /// (counted from when the request was sent). Sent before [`EtcdEvent::Connected`] for a
    /// new session and after every keepalive, so the data path can stop leading PGs at the
    /// deadline by its own clock even if this thread is late to report
    /// [`EtcdEvent::LeaseLost`].
    LeaseRenewed {
        /// The lease's expiry (monotonic clock).
        expires: std::time::Instant,
    },
    /// No keepalive succeeded for a whole lease TTL: etcd considers the OSD down, so it must
    /// stop its PGs. Reported at the TTL, or at most one call timeout later if a call to an
    /// unresponsive etcd was in progress then. The thread keeps reconnecting with a new
    /// lease; a new [`EtcdEvent::Connected`] follows.
    LeaseLost,
    /// A full snapshot of the watched keys (see [`super::WATCHED_KEYS`]) after each
    /// (re)connect; it replaces whatever the data path knew, since changes made while
    /// disconnected are not replayed.
    InitialLoad {
        /// Keys with valid JSON values; keys that are not appear as [`EtcdEvent::BadValue`]
        /// between [`EtcdEvent::Connected`] and this event.
        kvs: Vec<(String, Value)>,
    },
    /// A watched key was put (`Some`) or deleted (`None`).
    KeyChanged {
        /// The key.
        key: String,
        /// Its new value.
        value: Option<Value>,
    },
    /// Answer to [`EtcdCommand::ClaimPg`]: whether this OSD now holds `pg/state/<pool>/<pg>`.
    PgClaimed {
        /// Pool.
        pool: u32,
        /// PG.
        pg: u32,
        /// True if the key is ours (it was absent or already under our lease).
        granted: bool,
    },
    /// [`EtcdCommand::PutPgState`] found the key no longer ours: another OSD took the PG or
    /// our lease changed. The PG must stop at once.
    PgLost {
        /// Pool.
        pool: u32,
        /// PG.
        pg: u32,
    },
    /// A watched key holds something that is not JSON; the data path keeps its old view.
    BadValue {
        /// The key.
        key: String,
        /// The parse error.
        error: String,
    },
}

/// What the data path tells the side thread.
#[derive(Debug, Clone, PartialEq)]
pub enum EtcdCommand {
    /// Replace the value of `osd/state/<osd_num>` (written now if connected, else on connect).
    PutState(Value),
    /// Take the primary role of a PG: put `pg/state/<pool>/<pg>` under our lease if the key is
    /// absent or already ours, in one transaction each. Answered by [`EtcdEvent::PgClaimed`].
    ClaimPg {
        /// Pool.
        pool: u32,
        /// PG.
        pg: u32,
        /// The state to write.
        state: Value,
    },
    /// Update the state of a PG we hold; [`EtcdEvent::PgLost`] if it is not ours any more.
    PutPgState {
        /// Pool.
        pool: u32,
        /// PG.
        pg: u32,
        /// The state to write.
        state: Value,
    },
    /// Delete `pg/state/<pool>/<pg>` if it is ours (the PG stopped here).
    ReleasePg {
        /// Pool.
        pool: u32,
        /// PG.
        pg: u32,
    },
    /// Delete `key` if it still holds exactly `value` (e.g. a PG's history once it is clean,
    /// unless the monitor has rewritten it meanwhile).
    DeleteIfUnchanged {
        /// Key relative to the prefix.
        key: String,
        /// The value it must still hold.
        value: Value,
    },
    /// Put `key` without a lease (statistics); a lost update is replaced by the next one.
    Put {
        /// Key relative to the prefix.
        key: String,
        /// Value.
        value: Value,
    },
    /// Revoke the lease (the OSD shows down at once) and end the thread.
    Shutdown,
}

/// Parses a value read from etcd into the event the data path sees.
pub(super) fn decode(key: String, value: &[u8]) -> Result<(String, Value), EtcdEvent> {
    match serde_json::from_slice(value) {
        Ok(v) => Ok((key, v)),
        Err(e) => Err(EtcdEvent::BadValue {
            key,
            error: e.to_string(),
        }),
    }
}

/// A non-blocking eventfd: the side thread adds to it, the data path polls and clears it.
#[derive(Debug)]
pub(super) struct WakeFd(OwnedFd);

impl WakeFd {
    pub(super) fn new() -> Result<WakeFd, EtcdError> {
        // SAFETY: eventfd(2) has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(EtcdError::Io {
                what: "creating the etcd wake-up eventfd",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(WakeFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(super) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Makes the fd readable. The only possible failure is EAGAIN when the counter is at its
    /// maximum, and then the fd is readable anyway.
    pub(super) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an fd this struct owns.
        unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter; EAGAIN (nothing pending) is the normal idle case.
    pub(super) fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from an fd this struct owns.
        unsafe { libc::read(self.raw(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// The side thread's end of the event hand-off.
pub(super) struct EventSink {
    pub(super) tx: mpsc::Sender<EtcdEvent>,
    pub(super) wake: std::sync::Arc<WakeFd>,
}

impl EventSink {
    /// Sends without blocking; if the data path is gone there is no one left to tell.
    pub(super) fn send(&self, event: EtcdEvent) {
        if self.tx.send(event).is_ok() {
            self.wake.signal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_values() {
        assert_eq!(
            decode("config/pools".into(), br#"{"1":{}}"#),
            Ok(("config/pools".into(), serde_json::json!({"1":{}})))
        );
        assert!(matches!(
            decode("config/pools".into(), b"{nope"),
            Err(EtcdEvent::BadValue { .. })
        ));
    }
}
