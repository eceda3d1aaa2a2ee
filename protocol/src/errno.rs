//! Linux errno values as they appear, negated, in a reply's `retval`.
//!
//! The wire carries Linux numbers whatever the host is, so these are fixed
//! constants rather than the host's `libc` values.

/// Interrupted: a compare-and-set write or delete found another version.
pub const EINTR: i32 = 4;
/// I/O error on the OSD.
pub const EIO: i32 = 5;
/// Invalid request (also every non-fatal protocol error).
pub const EINVAL: i32 = 22;
/// The OSD is out of space.
pub const ENOSPC: i32 = 28;
/// The OSD is read-only.
pub const EROFS: i32 = 30;
/// The PG is not active here or this OSD is not its primary now; also what
/// outstanding ops fail with when a connection is dropped.
pub const EPIPE: i32 = 32;
