//! Test kit for vitastor-rs multi-process tests.
//!
//! Tests that need real daemons start them through this crate, so that every
//! suite gets the same guarantees: free ports picked at run time (suites run
//! in parallel), scratch directories that disappear with the test, logs kept
//! next to the data for post-mortems, bounded waits (nothing here can hang a
//! test run) and no daemon left behind, whether the test passes, fails or
//! panics.
//!
//! [`etcd`] launches throwaway single-member etcd servers, [`cluster`] whole local clusters;
//! [`netns`] runs them inside network namespaces a test made.
//! [`artifacts`] finds our own programs for tests and rebuilds stale ones, [`prereq`] makes
//! a missing external tool fail the test (or, when allowed, a listed skip), and [`process`]
//! runs a program with a deadline. [`vm`] boots throwaway VMs on vitastor disks.
//!
//! The kit only ever signals processes it spawned itself, by PID, and only
//! while it still holds the unreaped child (so the PID cannot have been
//! recycled by another process).
#![deny(missing_docs)]

pub mod artifacts;
pub mod client;
pub mod cluster;
pub mod etcd;
pub mod netns;
pub mod prereq;
pub mod process;
pub mod vm;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use client::TestClient;
pub use cluster::{Cluster, ClusterOptions};
pub use etcd::{EtcdOptions, EtcdServer};
pub use netns::NetHost;
pub use prereq::{require, require_tools, skip_unavailable};

/// Everything that can go wrong while launching or driving test daemons.
///
/// Start-up failures carry the tail of the daemon's log: a test failure
/// report should say *why* etcd did not come up without anyone having to
/// find and open the log file.
#[derive(thiserror::Error)]
pub enum TestkitError {
    /// The options cannot work (e.g. a name etcd cannot put in `--initial-cluster`).
    #[error("invalid options: {0}")]
    InvalidOptions(String),

    /// A file system operation on the kit's own files failed.
    #[error("{what}: {source}")]
    Io {
        /// What the kit was doing, with the path involved.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The binary could not be executed at all (missing, not executable...).
    #[error(
        "cannot run {}: {source} (etcd-server/etcd-client are installed by `make setup`)",
        binary.display()
    )]
    Spawn {
        /// The binary that was tried.
        binary: PathBuf,
        /// Why exec failed.
        source: std::io::Error,
    },

    /// etcd exited before it became healthy.
    #[error("etcd exited during start-up ({status}); log {}:\n{tail}", log.display())]
    Exited {
        /// How it exited.
        status: String,
        /// Its log file (deleted along with a temp dir, hence the excerpt).
        log: PathBuf,
        /// The first and last lines it wrote during this start attempt.
        tail: String,
    },

    /// etcd could not bind its ports: a fixed client port that is taken, or
    /// free ports stolen by other processes on every attempt.
    #[error("etcd could not bind its ports after {attempts} attempt(s); log {}:\n{tail}", log.display())]
    PortsBusy {
        /// How many port pairs were tried.
        attempts: u32,
        /// Its log file (deleted along with a temp dir, hence the excerpt).
        log: PathBuf,
        /// The first and last lines of the final attempt.
        tail: String,
    },

    /// etcd kept running but did not report healthy in time (it has been killed).
    #[error(
        "etcd at {url} was not healthy after {after:?} (killed it); log {}:\n{tail}",
        log.display()
    )]
    StartTimeout {
        /// Its client URL.
        url: String,
        /// How long the kit waited.
        after: Duration,
        /// Its log file (deleted along with a temp dir, hence the excerpt).
        log: PathBuf,
        /// The first and last lines it wrote during this start attempt.
        tail: String,
    },

    /// etcdctl ran but failed.
    #[error("etcdctl {args:?} failed ({status}): {stderr}")]
    Etcdctl {
        /// The arguments given (without the endpoint).
        args: Vec<String>,
        /// How it exited.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },

    /// A program did not finish in time (it has been killed).
    #[error(
        "{what} did not finish within {after:?} (killed it); its output until then:\n{output}"
    )]
    Timeout {
        /// The command.
        what: String,
        /// How long it was given.
        after: Duration,
        /// What it wrote to stdout, then stderr.
        output: String,
    },

    /// One of our programs or libraries could not be built for a test.
    #[error("building {what} for the test: {detail}")]
    Build {
        /// The artifact (e.g. `vitastor-osd`).
        what: String,
        /// Why.
        detail: String,
    },

    /// etcdctl did not finish in time (it has been killed).
    #[error("etcdctl {args:?} did not finish within {after:?} (killed it)")]
    EtcdctlTimeout {
        /// The arguments given (without the endpoint).
        args: Vec<String>,
        /// How long the kit waited.
        after: Duration,
    },
}

/// The message itself: tests end in `.expect(..)`, which prints `Debug`, and these errors
/// carry multi-line logs and compiler output that must stay readable there.
impl fmt::Debug for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
