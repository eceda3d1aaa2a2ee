//! The blockstore's single error type. Mapped to `-errno` once, at the wire boundary, through
//! [`BsError::errno`].

use std::io;

/// Everything that can go wrong inside the blockstore.
#[derive(Debug, thiserror::Error)]
pub enum BsError {
    /// A device could not be opened, read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the device path.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The on-disk layout is not a vitastor-rs OSD, is from another format version, or is damaged.
    #[error("bad on-disk layout: {0}")]
    Layout(String),
    /// An option given at open time contradicts the superblock or another option.
    #[error("configuration error: {0}")]
    Config(String),
    /// A request is malformed (misaligned, out of the object, unknown version…).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A version precondition failed: the version is not newer than the object's current one.
    #[error("version conflict: {0}")]
    VersionConflict(String),
    /// The data area or the journal is full and nothing can be flushed to make room.
    #[error("no space left: {0}")]
    NoSpace(&'static str),
    /// The requested version or object does not exist.
    #[error("not found")]
    NotFound,
    /// A version asked to be stabilized has not been synced yet.
    #[error("version is not synced yet")]
    NotSynced,
    /// The device reported an I/O error on the data path.
    #[error("device I/O error (errno {0})")]
    DeviceIo(i32),
    /// A blocking helper (`exec`, `wait_idle`) found work pending that nothing in flight can
    /// finish (a lost completion, or a bug); the text is the store's internal state.
    #[error("blockstore stuck with no I/O in flight: {0}")]
    Stuck(String),
    /// The blockstore is read-only after a fatal device error.
    #[error("blockstore is read-only after a device error")]
    ReadOnly,
}

impl BsError {
    /// The negative errno that the OSD sends on the wire for this error.
    pub fn errno(&self) -> i32 {
        match self {
            BsError::Io { source, .. } => -source.raw_os_error().unwrap_or(libc::EIO),
            BsError::Layout(_) | BsError::Stuck(_) => -libc::EIO,
            // The device's own error (EIO, ENOSPC of a thin-provisioned device…) tells the
            // client more than a generic EIO.
            BsError::DeviceIo(e) => -e,
            BsError::Config(_) | BsError::Invalid(_) => -libc::EINVAL,
            BsError::VersionConflict(_) => -libc::EEXIST,
            BsError::NoSpace(_) => -libc::ENOSPC,
            BsError::NotFound => -libc::ENOENT,
            BsError::NotSynced => -libc::EBUSY,
            BsError::ReadOnly => -libc::EROFS,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        BsError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result alias for blockstore operations.
pub type BsResult<T> = Result<T, BsError>;
