//! The crate's one error type. Every command returns it; `main` prints it as one line and
//! exits with status 1.

use std::time::Duration;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A command-line argument is malformed or contradicts another one.
    #[error("{0}")]
    Usage(String),
    /// The config file cannot be read or is not a JSON object.
    #[error("config file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No etcd address from the command line or the config file.
    #[error(
        "etcd_address is not set: pass --etcd_address HOST:PORT/v3 or set it in the config file"
    )]
    NoEtcdAddress,
    /// etcd answered with an error.
    #[error("etcd: {what}: {reason}")]
    Etcd {
        /// The call that failed.
        what: String,
        /// etcd's error, without gRPC metadata noise.
        reason: String,
    },
    /// etcd did not answer within the bound.
    #[error("etcd: {what}: no answer within {timeout:?} (is etcd reachable?)")]
    EtcdTimeout {
        /// The call that timed out.
        what: String,
        /// The bound.
        timeout: Duration,
    },
    /// A value in etcd does not follow the layout.
    #[error("bad value in etcd: {0}")]
    Layout(#[from] vitastor_layout::LayoutError),
    /// A key holds something that is not JSON.
    #[error("bad value in etcd: {key}: {reason}")]
    BadValue {
        /// The key, relative to the prefix.
        key: String,
        /// The parse error.
        reason: String,
    },
    /// No image with that name.
    #[error("image {0} does not exist")]
    NoSuchImage(String),
    /// An image with that name exists already.
    #[error("image {0} already exists")]
    ImageExists(String),
    /// No pool with that name or id.
    #[error("pool {0} does not exist")]
    NoSuchPool(String),
    /// A pool with that name exists already.
    #[error("pool {0} already exists")]
    PoolExists(String),
    /// No OSD with that number anywhere in etcd.
    #[error("OSD {0} is not known to the cluster")]
    NoSuchOsd(u64),
    /// The command would be unsafe; the message says what overrides the check.
    #[error("{0}")]
    Refused(String),
    /// A transaction kept losing races with other writers.
    #[error("{0}: etcd kept changing under us, giving up after {1} attempts")]
    Conflict(&'static str, u32),
    /// The client library refused to start.
    #[error("client: {0}")]
    Client(#[from] vitastor::ClientError),
    /// Some objects could not be deleted; the etcd keys are kept so the removal can be re-run.
    #[error("{failed} of {total} objects of inode {inode:#x} could not be deleted (first error: {first}); re-run to retry")]
    DataRemoval {
        /// The inode (with pool bits).
        inode: u64,
        /// Objects that failed.
        failed: u64,
        /// Objects tried.
        total: u64,
        /// The first failure.
        first: String,
    },
    /// Some PGs could not be listed, so the inode's objects are not all known; nothing was
    /// deleted.
    #[error("{failed} of {total} PGs could not be listed for inode {inode:#x} (first error: {first}); nothing was deleted, re-run to retry")]
    Listing {
        /// The inode (with pool bits).
        inode: u64,
        /// PGs that failed.
        failed: u64,
        /// PGs of the pool.
        total: u64,
        /// The first failure.
        first: String,
    },
}

/// Shorthand for the crate's results.
pub type Result<T> = std::result::Result<T, CliError>;
