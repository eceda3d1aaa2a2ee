//! The OSD's etcd side thread (issue #3): lease, state report and the watch on cluster config.
//!
//! # What this module owns
//! - One std thread ([`EtcdThread`]) running a current-thread tokio runtime, the only place in
//!   the OSD that speaks etcd's gRPC API. It connects (retrying with backoff for as long as
//!   etcd is unreachable), grants a lease, puts `<prefix>/osd/state/<osd_num>` bound to it,
//!   keeps the lease alive every report interval, loads the keys the OSD cares about and then
//!   watches them (see [`WATCHED_KEYS`]).
//! - The hand-off to the data-path thread: typed [`EtcdEvent`]s on a channel plus a
//!   non-blocking `eventfd` ([`EtcdThread::wake_fd`]) written after every event, so the data
//!   path's single poll loop can wait on etcd together with its sockets and disk.
//! - The commands back ([`EtcdCommand`]): a new state JSON, and shutdown (revoke the lease so
//!   the OSD is seen down at once, then exit).
//!
//! # What it must never do
//! - Block the data path: the data path only reads the eventfd and drains channels
//!   ([`EtcdThread::drain`]); sending a command never waits. Every etcd call on the side
//!   thread is bounded by [`EtcdConfig::call_timeout`], so a stuck etcd shows up as
//!   [`EtcdEvent::LeaseLost`] rather than as a hang. Since this thread may itself be late
//!   (a stalled process), it also posts the lease's expiry ([`EtcdEvent::LeaseRenewed`]) so
//!   the data path can stop at the deadline by its own clock.
//! - Panic or exit the process on a network error or on a bad value in etcd: unreachable
//!   etcd means retrying, a value that is not JSON becomes [`EtcdEvent::BadValue`].
//! - Decide anything about PGs: it reports what etcd says, the data path acts on it.

mod event;
mod session;
mod thread;

use std::io;
use std::time::Duration;

pub use event::{EtcdCommand, EtcdEvent};
pub use session::WATCHED_KEYS;
pub use thread::{osd_state_json, EtcdConfig, EtcdThread};
pub use vitastor_etcd::EtcdAddress;

/// Default key prefix of the cluster (`etcd_prefix`).
pub const DEFAULT_PREFIX: &str = "/vitastor";
/// Default `etcd_report_interval`: how often the lease is kept alive.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Default bound on one etcd call; longer than any healthy etcd answer, short enough that a
/// stuck etcd is noticed well within the lease TTL.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Smallest lease TTL [`EtcdConfig::new`] picks: a couple of missed keepalives because of a
/// short etcd leader election must not mark the OSD down.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(10);

/// Errors of the etcd side thread.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The configuration cannot work (e.g. a zero interval).
    #[error("invalid etcd configuration: {0}")]
    BadConfig(String),
    /// Creating the eventfd, the runtime or the thread failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// An etcd call failed, did not finish within the call timeout, or a stream ended (a
    /// cancelled watch).
    #[error(transparent)]
    Call(#[from] vitastor_etcd::CallError),
    /// The lease expired on the server (keepalive answered TTL 0).
    #[error("lease {0:x} expired")]
    LeaseExpired(i64),
}
