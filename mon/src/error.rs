//! Errors of the monitor daemon (the placement core keeps its own [`crate::placement::PlacementError`]).

/// Why a monitor session (or start-up) failed. Sessions end on any of these and start again
/// after a backoff; only start-up errors (options, config file, listener) end the process.
#[derive(Debug, thiserror::Error)]
pub enum MonError {
    /// An option value is malformed.
    #[error("invalid option {name}: {reason}")]
    BadOption {
        /// Option name as on the command line.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The config file cannot be read or is not a JSON object.
    #[error("config file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A local I/O operation failed (listener, runtime).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An etcd call failed, did not finish within the call timeout, or etcd answered
    /// something a session cannot go on with (a cancelled watch, no header).
    #[error(transparent)]
    Call(#[from] vitastor_etcd::CallError),
    /// The monitor's lease is gone: it is no longer (or cannot become) master.
    #[error("lease {0:x} expired")]
    LeaseExpired(i64),
    /// `mon/master` is gone or held by another lease: this monitor must stop writing.
    #[error("mon/master is no longer held by this monitor")]
    NotMaster,
    /// etcd refused a transaction for its size (`--max-request-bytes`, 1.5 MiB by default;
    /// `pg/config` is one key holding every PG, ~60 bytes each). Retrying cannot help, so
    /// the round reports it and waits for the next change instead of ending the session.
    #[error(
        "etcd refused a {what} transaction of {bytes} bytes as too large ({detail}): start etcd \
         with --max-request-bytes above the largest pg/config (e.g. --max-request-bytes={suggest})"
    )]
    RequestTooLarge {
        /// Which transaction.
        what: &'static str,
        /// Keys and values it carried.
        bytes: usize,
        /// A flag value with room to grow: twice the size, rounded up to a MiB.
        suggest: usize,
        /// etcd's (or gRPC's) words.
        detail: String,
    },
    /// The placement computation task died (a panic inside the solver).
    #[error("placement task failed: {0}")]
    Task(String),
}
