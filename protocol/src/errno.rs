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

/// An errno as one value, whatever produced it: always the positive Linux number inside,
/// negated only when it becomes a reply's `retval` ([`Errno::retval`]). Producers disagree
/// on the sign (`retval`s are negative, `errno(3)` is positive); converting at the edge with
/// [`Errno::new`] or [`Errno::from_retval`] keeps a failure from ever reaching the wire as a
/// positive, successful-looking `retval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(std::num::NonZeroI32);

impl Errno {
    /// See [`EINTR`].
    pub const EINTR: Errno = Errno::positive(EINTR);
    /// See [`EIO`].
    pub const EIO: Errno = Errno::positive(EIO);
    /// See [`EINVAL`].
    pub const EINVAL: Errno = Errno::positive(EINVAL);
    /// See [`ENOSPC`].
    pub const ENOSPC: Errno = Errno::positive(ENOSPC);
    /// See [`EROFS`].
    pub const EROFS: Errno = Errno::positive(EROFS);
    /// See [`EPIPE`].
    pub const EPIPE: Errno = Errno::positive(EPIPE);

    const fn positive(n: i32) -> Errno {
        match std::num::NonZeroI32::new(n) {
            Some(n) if n.get() > 0 => Errno(n),
            _ => panic!("errno constants are positive"),
        }
    }

    /// An errno given with either sign (`5` and `-5` are both EIO); `None` for 0 and for
    /// numbers no errno can have.
    pub fn new(n: i32) -> Option<Errno> {
        let n = i32::try_from(n.unsigned_abs()).ok()?;
        std::num::NonZeroI32::new(n).map(Errno)
    }

    /// The errno of a failed reply (`retval < 0`); `None` for a success.
    pub fn from_retval(retval: i64) -> Option<Errno> {
        if retval >= 0 {
            return None;
        }
        Errno::new(i32::try_from(retval.unsigned_abs()).ok()?)
    }

    /// The positive number.
    pub fn get(self) -> i32 {
        self.0.get()
    }

    /// The `retval` a reply carries for this error: always negative.
    pub fn retval(self) -> i64 {
        -i64::from(self.0.get())
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "errno {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_sign_in_negative_out() {
        assert_eq!(Errno::new(-28), Some(Errno::ENOSPC));
        assert_eq!(Errno::new(28), Some(Errno::ENOSPC));
        assert_eq!(Errno::new(0), None);
        assert_eq!(Errno::new(i32::MIN), None);
        assert_eq!(Errno::ENOSPC.retval(), -28);
        assert_eq!(Errno::from_retval(-5), Some(Errno::EIO));
        assert_eq!(Errno::from_retval(0), None);
        assert_eq!(Errno::from_retval(4096), None);
        assert_eq!(Errno::from_retval(i64::MIN), None);
    }
}
