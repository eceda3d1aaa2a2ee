//! The hidden `--debug_ec_crash <point>:<n>` option: aborts the OSD at a chosen step of
//! the n-th EC client write it leads, so tests can leave a stripe torn exactly there.
//!
//! It owns the option's parsing and the count of EC writes; the primary asks it at each
//! point and aborts the process itself. It must never fire without the option.

use std::cell::Cell;

/// Where in an EC write the OSD aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Right after the first part write of the write completes.
    AfterFirstPartWrite,
    /// Once every part write completed, before any SEC_STABILIZE is sent.
    BeforeStabilize,
    /// When the first SEC_STABILIZE of a write already answered completes (the client's
    /// reply left in an earlier loop turn, the other stabilizes may be in flight).
    AfterReply,
}

/// The parsed option and the count of EC writes seen so far.
#[derive(Debug, Clone)]
pub struct EcCrash {
    point: CrashPoint,
    nth: u64,
    seen: Cell<u64>,
}

impl EcCrash {
    /// Parses `after_first_part_write:N`, `before_stabilize:N` or `after_reply:N` (N from 1).
    pub fn parse(s: &str) -> Result<EcCrash, String> {
        let (point, n) = s
            .split_once(':')
            .ok_or_else(|| format!("debug_ec_crash {s:?}: expected <point>:<n>"))?;
        let point = match point {
            "after_first_part_write" => CrashPoint::AfterFirstPartWrite,
            "before_stabilize" => CrashPoint::BeforeStabilize,
            "after_reply" => CrashPoint::AfterReply,
            other => {
                return Err(format!(
                    "debug_ec_crash: unknown point {other:?} (after_first_part_write, before_stabilize, after_reply)"
                ))
            }
        };
        let nth = n
            .parse::<u64>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("debug_ec_crash: {n:?} is not a write number from 1"))?;
        Ok(EcCrash {
            point,
            nth,
            seen: Cell::new(0),
        })
    }

    /// A new EC client write starts: its number (from 1) on this primary.
    pub fn next_write(&self) -> u64 {
        self.seen.set(self.seen.get() + 1);
        self.seen.get()
    }

    /// Whether write number `write` must abort the process at `point`.
    pub fn fires(&self, point: CrashPoint, write: u64) -> bool {
        self.point == point && self.nth == write
    }
}

/// Aborts at `point` of EC write `write` when the option asks for it.
pub fn check(hook: Option<&EcCrash>, point: CrashPoint, write: u64) {
    if hook.is_some_and(|h| h.fires(point, write)) {
        tracing::error!("debug_ec_crash: aborting at {point:?} of EC write {write}");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_names_a_point_and_a_write() {
        let h = EcCrash::parse("before_stabilize:3").unwrap();
        assert_eq!((h.next_write(), h.next_write(), h.next_write()), (1, 2, 3));
        assert!(h.fires(CrashPoint::BeforeStabilize, 3));
        assert!(!h.fires(CrashPoint::AfterFirstPartWrite, 3));
        assert!(!h.fires(CrashPoint::BeforeStabilize, 2));
        let h = EcCrash::parse("after_first_part_write:1").unwrap();
        assert!(h.fires(CrashPoint::AfterFirstPartWrite, 1));
        let h = EcCrash::parse("after_reply:2").unwrap();
        assert!(h.fires(CrashPoint::AfterReply, 2));
        for bad in [
            "",
            "before_stabilize",
            "before_stabilize:0",
            "x:1",
            "before_stabilize:a",
        ] {
            assert!(EcCrash::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
