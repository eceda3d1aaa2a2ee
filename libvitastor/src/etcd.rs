//! The client's etcd side thread: loads and watches the cluster state the client needs.
//!
//! # What this module owns
//! - One std thread running a current-thread tokio runtime, the only place in the client that
//!   speaks etcd's gRPC API. Each session connects, reads every watched key in one
//!   transaction ([`WATCHED_KEYS`]), then watches the prefix from the next revision. Any
//!   failure ends the session and a new one starts after a backoff, forever.
//! - The hand-off to the caller's thread: [`EtcdEvent`]s on a channel plus a non-blocking
//!   eventfd ([`EtcdWatcher::wake_fd`]) written after every event, so the client's single poll
//!   loop waits on etcd together with its OSD sockets.
//!
//! # What it must never do
//! - Block the caller's thread: the client only reads the eventfd and drains the channel.
//! - Panic on a network error or a bad value: a value that is not JSON becomes
//!   [`EtcdEvent::BadValue`]; an unreachable etcd means retrying with backoff.
//! - Write to etcd: the client only reads cluster state (no lease).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use vitastor_etcd::watch::{self, Range, Watch};
use vitastor_etcd::Backoff;

use crate::error::ClientError;
pub use vitastor_etcd::EtcdAddress;

/// Keys under the prefix the client loads and watches.
pub const WATCHED_KEYS: &[Range] = &[
    Range::key("config/global"),
    Range::key("config/pools"),
    Range::prefix("config/inode/"),
    Range::prefix("index/image/"),
    Range::key("pg/config"),
    Range::prefix("pg/state/"),
    Range::prefix("osd/state/"),
];
/// Bound on one etcd call (connect, load, watch creation): a stuck etcd shows up as a
/// failed session and a retry, never as a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the side thread reports. Keys are relative to the prefix (`config/pools`).
#[derive(Debug, Clone, PartialEq)]
pub enum EtcdEvent {
    /// A full snapshot of the watched keys after each (re)connect; it replaces the whole
    /// view, since changes made while disconnected are not replayed.
    Loaded {
        /// Keys with JSON values (keys with bad values come as [`EtcdEvent::BadValue`]
        /// just before this event).
        kvs: Vec<EtcdKv>,
    },
    /// A watched key was put (`Some` value) or deleted (`None`).
    Changed(EtcdKv<Option<Value>>),
    /// A watched key holds something that is not JSON; the view treats it as absent.
    BadValue {
        /// The key.
        key: String,
        /// The parse error.
        error: String,
    },
    /// A session ended; the thread retries. The view stays as it was.
    Disconnected {
        /// Why.
        error: String,
    },
}

/// One key with its value and the etcd revision that last modified it.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdKv<V = Value> {
    /// Key relative to the prefix.
    pub key: String,
    /// The value.
    pub value: V,
    /// etcd `mod_revision` of the key (of the deletion for a deleted key).
    pub mod_revision: i64,
}

/// Whether `key` (relative to the prefix) is one of [`WATCHED_KEYS`].
pub fn is_watched(key: &str) -> bool {
    watch::watched(WATCHED_KEYS, key)
}

/// A non-blocking eventfd: the side thread adds to it, the client polls and clears it.
#[derive(Debug)]
struct WakeFd(OwnedFd);

impl WakeFd {
    fn new() -> Result<WakeFd, ClientError> {
        // SAFETY: eventfd(2) has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(ClientError::last_os("creating the etcd wake-up eventfd"));
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(WakeFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the fd readable. EAGAIN (counter at its maximum) leaves it readable anyway.
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an fd this struct owns.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter; EAGAIN (nothing pending) is the normal idle case.
    fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from an fd this struct owns.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// The side thread's end of the hand-off.
struct Sink {
    tx: mpsc::Sender<EtcdEvent>,
    wake: Arc<WakeFd>,
}

impl Sink {
    /// Sends without blocking; false when the client is gone.
    fn send(&self, event: EtcdEvent) -> bool {
        let sent = self.tx.send(event).is_ok();
        if sent {
            self.wake.signal();
        }
        sent
    }
}

/// The client's handle on the side thread; dropping it stops the thread.
#[derive(Debug)]
pub struct EtcdWatcher {
    events: mpsc::Receiver<EtcdEvent>,
    wake: Arc<WakeFd>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl EtcdWatcher {
    /// Starts the side thread. Fails only if the OS refuses an eventfd, a runtime or a
    /// thread; an unreachable etcd is retried on the thread.
    pub fn spawn(address: EtcdAddress, prefix: String) -> Result<EtcdWatcher, ClientError> {
        let wake = Arc::new(WakeFd::new()?);
        let (tx, events) = mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::io("building the etcd thread's runtime"))?;
        let sink = Sink {
            tx,
            wake: Arc::clone(&wake),
        };
        let handle = thread::Builder::new()
            .name("vitastor-etcd".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = run(address, prefix, sink) => {}
                        _ = stopped => {}
                    }
                })
            })
            .map_err(ClientError::io("spawning the etcd thread"))?;
        Ok(EtcdWatcher {
            events,
            wake,
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// An fd that is readable whenever [`Self::drain`] has something to return.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.0.as_raw_fd()
    }

    /// Clears the wake fd and returns every pending event, without blocking.
    pub fn drain(&self) -> Vec<EtcdEvent> {
        // Clear first: an event sent after this signals the fd again, so none is left behind
        // with a quiet fd.
        self.wake.clear();
        self.events.try_iter().collect()
    }
}

impl Drop for EtcdWatcher {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the thread already ended.
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            // The select above drops the session at its next await point, which is never
            // more than one timer tick away, so the join is short.
            let _ = handle.join();
        }
    }
}

async fn run(address: EtcdAddress, prefix: String, sink: Sink) {
    let mut backoff = Backoff::default();
    loop {
        match session(&address, &prefix, &sink, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                if !sink.send(EtcdEvent::Disconnected {
                    error: e.to_string(),
                }) {
                    return;
                }
            }
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

fn decode(key: String, value: &[u8], mod_revision: i64) -> Result<EtcdKv, EtcdEvent> {
    match serde_json::from_slice(value) {
        Ok(value) => Ok(EtcdKv {
            key,
            value,
            mod_revision,
        }),
        Err(e) => Err(EtcdEvent::BadValue {
            key,
            error: e.to_string(),
        }),
    }
}

/// One session; `Ok` only when the client is gone. The load, the watch and what ends a
/// session are `vitastor_etcd`'s; turning values into events is ours.
async fn session(
    address: &EtcdAddress,
    prefix: &str,
    sink: &Sink,
    backoff: &mut Backoff,
) -> Result<(), vitastor_etcd::CallError> {
    let mut client = vitastor_etcd::connect(address.endpoints(), CALL_TIMEOUT).await?;
    let snapshot = watch::load(&mut client, CALL_TIMEOUT, prefix, WATCHED_KEYS).await?;
    let mut kvs = Vec::with_capacity(snapshot.kvs.len());
    for kv in snapshot.kvs {
        let value = kv.value.unwrap_or_default();
        match decode(kv.key, &value, kv.mod_revision) {
            Ok(pair) => kvs.push(pair),
            Err(bad) => {
                if !sink.send(bad) {
                    return Ok(());
                }
            }
        }
    }
    // One watch over the whole prefix, filtered here: simpler than seven watches.
    let mut changes = Watch::start(
        &mut client,
        CALL_TIMEOUT,
        prefix,
        "",
        true,
        snapshot.revision + 1,
    )
    .await?;
    if !sink.send(EtcdEvent::Loaded { kvs }) {
        return Ok(());
    }
    backoff.reset();
    loop {
        // The stream is long-lived, so it has no per-call bound; etcd-client's keepalive on
        // the channel notices a dead server.
        for kv in changes.next().await? {
            if !is_watched(&kv.key) {
                continue;
            }
            let mod_revision = kv.mod_revision;
            let event = match kv.value {
                None => EtcdEvent::Changed(EtcdKv {
                    key: kv.key,
                    value: None,
                    mod_revision,
                }),
                Some(value) => match decode(kv.key, &value, mod_revision) {
                    Ok(kv) => EtcdEvent::Changed(EtcdKv {
                        key: kv.key,
                        value: Some(kv.value),
                        mod_revision,
                    }),
                    Err(bad) => bad,
                },
            };
            if !sink.send(event) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_filter() {
        for k in [
            "config/global",
            "config/inode/1/2",
            "index/image/x",
            "pg/state/1/1",
            "osd/state/3",
        ] {
            assert!(is_watched(k), "{k}");
        }
        for k in ["config/globalx", "osd/stats/1", "pg/history/1/1"] {
            assert!(!is_watched(k), "{k}");
        }
    }
}
