//! The client's one error type.
//!
//! Every failure an operation or a constructor can report is a [`ClientError`]. The C ABI maps
//! it to `-errno` in exactly one place ([`ClientError::errno`], called only from `capi`); the
//! Rust API hands it out as is, so callers can match on the cause.

use std::io;

/// Linux errno values the C ABI reports (negated). The wire protocol's errno module holds the
/// ones an OSD can send; the client adds its own here.
mod errno {
    pub use vitastor_protocol::errno::{EINVAL, EIO, EPIPE, EROFS};
    /// The image does not exist.
    pub const ENOENT: i32 = 2;
    /// The client was destroyed before the op finished.
    pub const ECANCELED: i32 = 125;
}

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An option is malformed or contradicts another one.
    #[error("invalid option {name}: {reason}")]
    BadOption {
        /// Option name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The config file exists but cannot be read or is not a JSON object.
    #[error("config file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The OS refused a resource (socket, epoll, eventfd, thread).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The request itself is invalid (unaligned, too long, unknown pool, past the image end).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The image is read-only (a snapshot) and the op would modify it.
    #[error("image {0} is read-only")]
    ReadOnlyImage(String),
    /// No such image in `index/image/`.
    #[error("image {0} does not exist")]
    NoSuchImage(String),
    /// A layered image's parents cannot be followed (unknown parent, parent in a missing
    /// pool, a cycle): reads would return wrong data, so they fail.
    #[error("broken image layers: {0}")]
    BrokenLayers(String),
    /// An OSD does not match the pool's block size, bitmap granularity, commit mode or
    /// protocol version; the op is refused rather than retried forever.
    #[error("OSD {osd} is incompatible with pool {pool}: {reason}")]
    Incompatible {
        /// The OSD.
        osd: u64,
        /// The pool.
        pool: u32,
        /// The handshake check's message.
        reason: String,
    },
    /// An OSD answered an op with an error the caller must see (`-EIO`, `-ENOSPC`,
    /// `-EINTR`, `-EROFS`, `-EINVAL`). `errno` is positive.
    #[error("OSD {osd} answered -{errno} ({})", io::Error::from_raw_os_error(*errno))]
    Osd {
        /// The OSD.
        osd: u64,
        /// Positive errno.
        errno: i32,
    },
    /// The client was destroyed while the op was still running.
    #[error("the client was destroyed before the op finished")]
    Cancelled,
}

impl ClientError {
    /// The positive errno the C ABI reports (as `-errno`) for this error.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::BadOption { .. }
            | ClientError::ConfigFile { .. }
            | ClientError::InvalidRequest(_)
            | ClientError::Incompatible { .. } => errno::EINVAL,
            ClientError::Io { source, .. } => source.raw_os_error().unwrap_or(errno::EIO),
            ClientError::ReadOnlyImage(_) => errno::EROFS,
            ClientError::NoSuchImage(_) => errno::ENOENT,
            ClientError::BrokenLayers(_) => errno::EIO,
            ClientError::Osd { errno, .. } => *errno,
            ClientError::Cancelled => errno::ECANCELED,
        }
    }

    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> ClientError {
        move |source| ClientError::Io { what, source }
    }

    pub(crate) fn last_os(what: &'static str) -> ClientError {
        ClientError::Io {
            what,
            source: io::Error::last_os_error(),
        }
    }
}

/// Whether an OSD's `-errno` answer means "retry after the cluster state changes" rather than
/// "tell the caller": `-EPIPE` (PG not active there or not primary now) is the only one.
pub(crate) fn is_retryable_osd_errno(errno: i32) -> bool {
    errno == errno::EPIPE
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitastor_protocol::errno::{EINTR, ENOSPC};

    #[test]
    fn errno_mapping() {
        assert_eq!(ClientError::ReadOnlyImage("a".into()).errno(), errno::EROFS);
        assert_eq!(ClientError::NoSuchImage("a".into()).errno(), errno::ENOENT);
        assert_eq!(
            ClientError::InvalidRequest("x".into()).errno(),
            errno::EINVAL
        );
        for e in [errno::EIO, ENOSPC, EINTR, errno::EROFS, errno::EINVAL] {
            assert_eq!(ClientError::Osd { osd: 1, errno: e }.errno(), e);
            assert!(!is_retryable_osd_errno(e));
        }
        assert!(is_retryable_osd_errno(errno::EPIPE));
        let msg = ClientError::Osd {
            osd: 3,
            errno: errno::EIO,
        }
        .to_string();
        assert!(msg.starts_with("OSD 3 answered -5"), "{msg}");
    }
}
