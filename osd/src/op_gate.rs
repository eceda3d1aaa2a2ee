//! The check a WRITE or a DELETE makes once it holds its object's lock, before it creates
//! a version: the PG must be active, and an object whose live copies disagree is recovered
//! first — unless its last recovery failed and the next attempt is not due, when the op
//! fails at once instead of queueing one more doomed recovery.
//!
//! Pure: it reads facts [`crate::op_write`], [`crate::op_delete`] and [`crate::ec::write`]
//! were given and returns a verdict; it never decides anything about the op's own steps.

use vitastor_protocol::errno::Errno;

/// What an op holding the object lock does first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go on with the op.
    Proceed,
    /// Recover the object, then run the op again.
    RecoverFirst,
    /// Fail the op with this error (EPIPE, which clients retry, or the recovery's ENOSPC).
    Fail(Errno),
}

/// The gate for a PG that is `active` or not, an object that is `degraded` or not, and the
/// error its recovery is backing off with (`recovery_waits`), if any.
pub fn gate(active: bool, degraded: bool, recovery_waits: Option<Errno>) -> Gate {
    if !active {
        return Gate::Fail(Errno::EPIPE);
    }
    match (degraded, recovery_waits) {
        (false, _) => Gate::Proceed,
        (true, None) => Gate::RecoverFirst,
        (true, Some(e)) => Gate::Fail(e),
    }
}

#[cfg(test)]
mod tests {
    use vitastor_protocol::errno::Errno;

    use super::{gate, Gate};

    #[test]
    fn an_inactive_pg_fails_retryably_whatever_the_object() {
        assert_eq!(gate(false, false, None), Gate::Fail(Errno::EPIPE));
        assert_eq!(
            gate(false, true, Some(Errno::ENOSPC)),
            Gate::Fail(Errno::EPIPE)
        );
    }

    #[test]
    fn a_degraded_object_is_recovered_first_unless_its_recovery_waits() {
        assert_eq!(gate(true, false, None), Gate::Proceed);
        assert_eq!(gate(true, true, None), Gate::RecoverFirst);
        assert_eq!(
            gate(true, true, Some(Errno::ENOSPC)),
            Gate::Fail(Errno::ENOSPC)
        );
        assert_eq!(
            gate(true, true, Some(Errno::EPIPE)),
            Gate::Fail(Errno::EPIPE)
        );
    }
}
