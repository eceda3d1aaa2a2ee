//! How long a connection may leave requests unanswered: the client's op timeout.
//!
//! # What this module owns
//! - The decision, per OSD connection, between "the OSD is working on it", "ask whether it
//!   is alive" and "give up on it". Silence is what counts, not an op's age: an OSD that
//!   keeps sending (replies to other ops, a long payload, a PING's reply) is alive and its
//!   slow ops are left alone, while one that says nothing for `client_op_timeout` gets a
//!   PING, and if that PING is not answered within `client_op_timeout` either, the
//!   connection is dropped; its requests are then sent again to whichever OSD is the PG's
//!   primary by then (a stopped primary's PGs move once its etcd lease expires).
//!
//! # What it must never do
//! - Touch sockets or read the clock: the caller passes the time in and carries out the
//!   [`Action`].

use std::time::{Duration, Instant};

/// What to do about a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Nothing: idle, or heard from recently enough.
    Wait,
    /// Silent for the timeout with requests outstanding: send a PING (then [`ReplyWait::probed`]).
    Probe,
    /// The PING went unanswered too: drop the connection and send its requests again.
    GiveUp {
        /// Time since the OSD was last heard from while requests were outstanding.
        silent: Duration,
    },
}

/// The silence clock of one connection.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ReplyWait {
    /// Since when requests have been outstanding with nothing heard; `None` when none are.
    since: Option<Instant>,
    /// When the unanswered PING was sent.
    probe: Option<Instant>,
}

impl ReplyWait {
    /// A request was sent: the clock starts unless it already runs (the oldest unanswered
    /// request counts). `now` is only read when the clock starts.
    pub(super) fn requested(&mut self, now: impl FnOnce() -> Instant) {
        if self.since.is_none() {
            self.since = Some(now());
        }
    }

    /// The OSD sent something (a reply or part of one): it is alive. The clock restarts if
    /// requests are still `outstanding`, else stops.
    pub(super) fn heard(&mut self, now: Instant, outstanding: bool) {
        self.since = outstanding.then_some(now);
        self.probe = None;
    }

    /// The PING asked for by [`Action::Probe`] was sent.
    pub(super) fn probed(&mut self, now: Instant) {
        self.probe = Some(now);
    }

    /// What to do at `now` with op timeout `timeout`.
    pub(super) fn check(&self, now: Instant, timeout: Duration) -> Action {
        let Some(since) = self.since else {
            return Action::Wait;
        };
        match self.probe {
            Some(sent) if now.saturating_duration_since(sent) >= timeout => Action::GiveUp {
                silent: now.saturating_duration_since(since),
            },
            Some(_) => Action::Wait,
            None if now.saturating_duration_since(since) >= timeout => Action::Probe,
            None => Action::Wait,
        }
    }

    /// When [`ReplyWait::check`] may next have something to do; `None` while idle.
    pub(super) fn next_check(&self, timeout: Duration) -> Option<Instant> {
        let since = self.since?;
        Some(self.probe.unwrap_or(since) + timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn idle_connection_never_times_out() {
        let base = Instant::now();
        let w = ReplyWait::default();
        assert_eq!(w.check(at(base, 3_600_000), T), Action::Wait);
        assert_eq!(w.next_check(T), None);
    }

    #[test]
    fn silent_osd_is_probed_then_given_up() {
        let base = Instant::now();
        let mut w = ReplyWait::default();
        w.requested(|| base);
        // A later request does not restart the clock of the oldest one.
        w.requested(|| panic!("the clock already runs"));
        assert_eq!(w.check(at(base, 4_999), T), Action::Wait);
        assert_eq!(w.next_check(T), Some(at(base, 5_000)));
        assert_eq!(w.check(at(base, 5_000), T), Action::Probe);
        w.probed(at(base, 5_010));
        assert_eq!(w.check(at(base, 9_000), T), Action::Wait);
        assert_eq!(w.next_check(T), Some(at(base, 10_010)));
        assert_eq!(
            w.check(at(base, 10_010), T),
            Action::GiveUp {
                silent: Duration::from_millis(10_010)
            }
        );
    }

    #[test]
    fn answered_probe_keeps_a_slow_osd() {
        let base = Instant::now();
        let mut w = ReplyWait::default();
        w.requested(|| base);
        assert_eq!(w.check(at(base, 5_000), T), Action::Probe);
        w.probed(at(base, 5_000));
        // The PING's reply: alive, the slow op is still outstanding.
        w.heard(at(base, 5_001), true);
        assert_eq!(w.check(at(base, 10_000), T), Action::Wait);
        assert_eq!(w.check(at(base, 10_001), T), Action::Probe);
    }

    #[test]
    fn replies_restart_or_stop_the_clock() {
        let base = Instant::now();
        let mut w = ReplyWait::default();
        w.requested(|| base);
        w.heard(at(base, 4_000), true);
        assert_eq!(w.check(at(base, 8_999), T), Action::Wait);
        w.heard(at(base, 8_999), false);
        assert_eq!(w.check(at(base, 60_000), T), Action::Wait);
        assert_eq!(w.next_check(T), None);
        // A new request after idling starts a fresh clock.
        w.requested(|| at(base, 60_000));
        assert_eq!(w.check(at(base, 64_999), T), Action::Wait);
        assert_eq!(w.check(at(base, 65_000), T), Action::Probe);
    }
}
