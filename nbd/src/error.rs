//! The program's one error type: everything `vitastor-nbd` reports before exiting non-zero.

use std::io;

use vitastor::ClientError;

/// Everything that can make a `vitastor-nbd` command fail.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// The client library refused an option or an op needed to start.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The command line or the cluster state makes the request impossible.
    #[error("{0}")]
    Invalid(String),
    /// The kernel has no NBD devices (module not loaded or not built).
    #[error("{0}")]
    NoKernelNbd(String),
    /// The cluster did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl NbdError {
    /// Wraps an OS error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> NbdError {
        let what = what.into();
        move |source| NbdError::Io { what, source }
    }
}
