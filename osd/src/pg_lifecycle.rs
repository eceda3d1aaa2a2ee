//! The life of a PG on its primary, as a state machine over the PG's [`Phase`]: claiming
//! `pg/state`, handing a claimed PG to its peering round, draining it before it peers again
//! or stops, and what a peer coming or going means in each phase.
//!
//! This module does no I/O: [`step`] takes the phase and an [`Event`] and returns the
//! [`Action`]s `peering.rs` carries out (etcd claims and releases, reports, connections, the
//! peering round). What it must never do: let a draining PG peer again or stop while an op
//! still runs on it, or release `pg/state` under a lease that is gone.
//!
//! [`LeaseWatch`] decides whether the OSD may lead PGs at all: the etcd thread posts the
//! lease's expiry after every grant and keepalive, and the data path stops every PG at that
//! deadline (less [`LEASE_MARGIN`]) by its own clock, without waiting for the etcd thread to
//! notice. A process stopped (SIGSTOP, a long stall) past its lease then executes nothing
//! that waited in its sockets, because the server checks the deadline after every wait,
//! before it reads a request, and again before it sends the sub-ops it queued (a monotonic
//! clock, which runs on under SIGSTOP). What remains is a stop between that last check and
//! the sends in the same loop turn (a few microseconds of work): sub-ops queued in that turn
//! may still leave, and blockstore writes submitted in it still run.

use std::time::{Duration, Instant};

use vitastor_layout::OsdNum;

use crate::peering_round::Event as RoundEvent;
use crate::pg::Phase;

/// What happens to a PG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Something the PG depends on changed (set, history, a peer, a failed sub-op): peer
    /// again.
    Repeer,
    /// The PG is not ours to lead any more; `release` deletes its `pg/state` once drained.
    Stop {
        /// Delete `pg/state`.
        release: bool,
    },
    /// Whether a draining PG has drained.
    Drain {
        /// Ops still running on the PG.
        inflight: usize,
        /// The etcd lease is gone (nothing can be released under it).
        lease_lost: bool,
    },
    /// etcd answered the claim of `pg/state`.
    ClaimAnswered {
        /// The PG is ours.
        granted: bool,
    },
    /// The connection to `osd` is ready; `live`: it was live when the PG last peered.
    PeerUp {
        /// The peer.
        osd: OsdNum,
        /// It was among the PG's live OSDs.
        live: bool,
    },
    /// The connection to `osd` is gone (or could not be made).
    PeerDown {
        /// The peer.
        osd: OsdNum,
        /// It was among the PG's live OSDs.
        live: bool,
    },
    /// The once-a-second timer.
    Tick,
}

/// What the executor does for a PG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Refresh the PG's config and claim `pg/state` (phase `Claiming`, a new round).
    Claim,
    /// Report the PG's state to etcd if it changed.
    Report,
    /// Look whether the PG has drained: answer with [`Event::Drain`].
    CheckDrained,
    /// Forget the PG; `release` its `pg/state`.
    Forget {
        /// Delete `pg/state`.
        release: bool,
    },
    /// Another OSD holds `pg/state`: wait (the timer claims again).
    HeldElsewhere,
    /// The PG is ours: start its peering round with the state of its connections.
    StartRound,
    /// Feed the peering round.
    Round(RoundEvent),
    /// Connect to the PG's peers that are up in etcd but not connected.
    Reconnect,
}

/// Moves `phase` by `event`; returns what to do.
pub fn step(phase: &mut Phase, event: Event) -> Vec<Action> {
    match (*phase, event) {
        (Phase::Active, Event::Repeer) => {
            *phase = Phase::Draining {
                stop: false,
                release: false,
            };
            vec![Action::Report, Action::CheckDrained]
        }
        // Claims are idempotent: asking again is the simplest restart.
        (Phase::Incomplete | Phase::Connecting | Phase::Claiming, Event::Repeer) => {
            vec![Action::Claim]
        }
        (Phase::Listing | Phase::Stabilizing, Event::Repeer) => {
            vec![Action::Round(RoundEvent::Repeer)]
        }
        (Phase::Draining { .. }, Event::Repeer) => Vec::new(),
        (_, Event::Stop { release }) => {
            *phase = Phase::Draining {
                stop: true,
                release,
            };
            vec![Action::CheckDrained]
        }
        (
            Phase::Draining { stop, release },
            Event::Drain {
                inflight: 0,
                lease_lost,
            },
        ) => {
            if stop {
                vec![Action::Forget {
                    release: release && !lease_lost,
                }]
            } else {
                vec![Action::Claim]
            }
        }
        (Phase::Claiming, Event::ClaimAnswered { granted: false }) => vec![Action::HeldElsewhere],
        (Phase::Claiming, Event::ClaimAnswered { granted: true }) => {
            *phase = Phase::Connecting;
            vec![Action::StartRound]
        }
        (Phase::Connecting, Event::PeerUp { osd, .. }) => {
            vec![Action::Round(RoundEvent::PeerUp(osd))]
        }
        (Phase::Connecting, Event::PeerDown { osd, .. }) => {
            vec![Action::Round(RoundEvent::PeerDown(osd))]
        }
        // A peer that was not live is back: the PG may do better with it.
        (Phase::Active | Phase::Incomplete, Event::PeerUp { live: false, .. })
        // A live peer is gone: writes cannot reach every live member any more.
        | (Phase::Active, Event::PeerDown { live: true, .. }) => step(phase, Event::Repeer),
        (Phase::Claiming, Event::Tick) => vec![Action::Claim],
        (Phase::Active | Phase::Incomplete, Event::Tick) => vec![Action::Reconnect],
        _ => Vec::new(),
    }
}

/// How long before the lease's computed expiry the data path stops leading PGs. The expiry
/// already counts from when the last keepalive was sent (never later than etcd's own view);
/// the margin covers scheduling delays between a clock read and what follows it.
pub const LEASE_MARGIN: Duration = Duration::from_millis(500);

/// What happens to the lease, as the data path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// The etcd thread granted or kept the lease alive: etcd keeps it until `expires`.
    Renewed {
        /// The lease's expiry.
        expires: Instant,
        /// The data path's clock now.
        now: Instant,
    },
    /// The etcd thread reports the lease gone (it will get a new one).
    Lost,
    /// A session's initial load arrived: the lease is held and the view of etcd is current.
    Loaded,
    /// The data path's clock, read once per loop turn.
    Check(Instant),
}

/// What the server does about the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Stop every PG at once and drop the requests queued to peers: nothing more is done
    /// as primary.
    StopAll,
    /// The deadline had passed here but the lease turned out alive (a keepalive got
    /// through): the PGs are led again.
    ResumeAll,
}

/// The data path's view of its etcd lease. Starts without a lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseWatch {
    expires: Option<Instant>,
    held: bool,
    /// Stopped by the deadline here, not by the etcd thread: a renewal resumes.
    expired_here: bool,
}

impl LeaseWatch {
    /// Whether PGs may be led.
    pub fn held(&self) -> bool {
        self.held
    }

    fn past(expires: Instant, now: Instant) -> bool {
        now + LEASE_MARGIN >= expires
    }

    /// Moves the view by `event`; returns what to do.
    pub fn step(&mut self, event: LeaseEvent) -> Option<LeaseAction> {
        match event {
            LeaseEvent::Renewed { expires, now } => {
                self.expires = Some(expires);
                if self.expired_here && !Self::past(expires, now) {
                    self.expired_here = false;
                    self.held = true;
                    return Some(LeaseAction::ResumeAll);
                }
                None
            }
            LeaseEvent::Lost => {
                self.expired_here = false;
                std::mem::replace(&mut self.held, false).then_some(LeaseAction::StopAll)
            }
            LeaseEvent::Loaded => {
                self.expired_here = false;
                self.held = true;
                None
            }
            LeaseEvent::Check(now) => {
                if self.held && self.expires.is_some_and(|e| Self::past(e, now)) {
                    self.held = false;
                    self.expired_here = true;
                    return Some(LeaseAction::StopAll);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use vitastor_layout::OsdNum;

    use super::{step, Action, Event, LeaseAction, LeaseEvent, LeaseWatch, LEASE_MARGIN};
    use crate::peering_round::Event as RoundEvent;
    use crate::pg::Phase;

    const DRAIN_REPEER: Phase = Phase::Draining {
        stop: false,
        release: false,
    };

    fn run(mut phase: Phase, event: Event) -> (Phase, Vec<Action>) {
        let out = step(&mut phase, event);
        (phase, out)
    }

    fn drained(inflight: usize, lease_lost: bool) -> Event {
        Event::Drain {
            inflight,
            lease_lost,
        }
    }

    #[test]
    fn repeer_drains_an_active_pg_and_claims_again_once_drained() {
        let (phase, out) = run(Phase::Active, Event::Repeer);
        assert_eq!(phase, DRAIN_REPEER);
        assert_eq!(out, [Action::Report, Action::CheckDrained]);
        // Ops still run: nothing yet; a second repeer changes nothing.
        assert_eq!(run(phase, drained(2, false)), (phase, vec![]));
        assert_eq!(run(phase, Event::Repeer), (phase, vec![]));
        assert_eq!(run(phase, drained(0, false)).1, [Action::Claim]);
    }

    #[test]
    fn repeer_between_steps_claims_and_mid_round_tells_the_round() {
        for phase in [Phase::Claiming, Phase::Connecting, Phase::Incomplete] {
            assert_eq!(run(phase, Event::Repeer), (phase, vec![Action::Claim]));
        }
        for phase in [Phase::Listing, Phase::Stabilizing] {
            assert_eq!(
                run(phase, Event::Repeer),
                (phase, vec![Action::Round(RoundEvent::Repeer)])
            );
        }
    }

    #[test]
    fn a_stopped_pg_is_forgotten_once_drained_and_released_only_under_its_lease() {
        for from in [Phase::Active, Phase::Listing, DRAIN_REPEER] {
            let (phase, out) = run(from, Event::Stop { release: true });
            assert_eq!(out, [Action::CheckDrained]);
            assert_eq!(run(phase, drained(1, false)).1, []);
            assert_eq!(
                run(phase, drained(0, false)).1,
                [Action::Forget { release: true }]
            );
            assert_eq!(
                run(phase, drained(0, true)).1,
                [Action::Forget { release: false }]
            );
        }
        let (phase, _) = run(Phase::Active, Event::Stop { release: false });
        assert_eq!(
            run(phase, drained(0, false)).1,
            [Action::Forget { release: false }]
        );
        // Only a draining PG drains.
        assert_eq!(run(Phase::Active, drained(0, false)).1, []);
    }

    #[test]
    fn a_claim_answer_counts_only_while_claiming() {
        assert_eq!(
            run(Phase::Claiming, Event::ClaimAnswered { granted: true }),
            (Phase::Connecting, vec![Action::StartRound])
        );
        assert_eq!(
            run(Phase::Claiming, Event::ClaimAnswered { granted: false }),
            (Phase::Claiming, vec![Action::HeldElsewhere])
        );
        for phase in [Phase::Connecting, Phase::Active, DRAIN_REPEER] {
            let event = Event::ClaimAnswered { granted: true };
            assert_eq!(run(phase, event), (phase, vec![]));
        }
    }

    #[test]
    fn peers_coming_and_going() {
        let osd = OsdNum(2);
        let up = |live| Event::PeerUp { osd, live };
        let down = |live| Event::PeerDown { osd, live };
        // While connecting, the round decides.
        assert_eq!(
            run(Phase::Connecting, up(false)).1,
            [Action::Round(RoundEvent::PeerUp(osd))]
        );
        assert_eq!(
            run(Phase::Connecting, down(false)).1,
            [Action::Round(RoundEvent::PeerDown(osd))]
        );
        // A peer that was not live comes up: peer again to use it.
        assert_eq!(run(Phase::Active, up(false)).0, DRAIN_REPEER);
        assert_eq!(run(Phase::Incomplete, up(false)).1, [Action::Claim]);
        assert_eq!(run(Phase::Active, up(true)).1, []);
        // A live peer goes: an active PG peers again; an incomplete one waits.
        assert_eq!(run(Phase::Active, down(true)).0, DRAIN_REPEER);
        assert_eq!(run(Phase::Active, down(false)).1, []);
        assert_eq!(run(Phase::Incomplete, down(true)).1, []);
        // Mid-round, failed sub-ops restart the round; the peer table is not its business.
        assert_eq!(run(Phase::Listing, down(true)).1, []);
    }

    #[test]
    fn the_timer_claims_again_or_reconnects() {
        assert_eq!(run(Phase::Claiming, Event::Tick).1, [Action::Claim]);
        assert_eq!(run(Phase::Active, Event::Tick).1, [Action::Reconnect]);
        assert_eq!(run(Phase::Incomplete, Event::Tick).1, [Action::Reconnect]);
        for phase in [Phase::Connecting, Phase::Listing, DRAIN_REPEER] {
            assert_eq!(run(phase, Event::Tick).1, []);
        }
    }

    fn held_until(expires: Instant, now: Instant) -> LeaseWatch {
        let mut w = LeaseWatch::default();
        assert_eq!(w.step(LeaseEvent::Renewed { expires, now }), None);
        assert_eq!(w.step(LeaseEvent::Loaded), None);
        assert!(w.held());
        w
    }

    #[test]
    fn the_deadline_stops_every_pg_by_the_data_paths_own_clock() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut w = held_until(t0 + ttl, t0);
        assert_eq!(w.step(LeaseEvent::Check(t0 + Duration::from_secs(9))), None);
        assert!(w.held());
        // Within the margin of the expiry: stop, once.
        let late = t0 + ttl - LEASE_MARGIN;
        assert_eq!(w.step(LeaseEvent::Check(late)), Some(LeaseAction::StopAll));
        assert!(!w.held());
        assert_eq!(w.step(LeaseEvent::Check(late + ttl)), None);
        // A renewal whose expiry has passed too (a keepalive sent before the stall) does
        // not resume; the etcd thread's verdict then changes nothing more.
        let stale = LeaseEvent::Renewed {
            expires: t0 + ttl,
            now: late + ttl,
        };
        assert_eq!(w.step(stale), None);
        assert!(!w.held());
        assert_eq!(w.step(LeaseEvent::Lost), None);
        // The next session's load leads again.
        assert_eq!(w.step(LeaseEvent::Loaded), None);
        assert!(w.held());
    }

    #[test]
    fn a_keepalive_that_got_through_after_the_deadline_resumes() {
        let t0 = Instant::now();
        let mut w = held_until(t0 + Duration::from_secs(10), t0);
        let late = t0 + Duration::from_millis(9800);
        assert_eq!(w.step(LeaseEvent::Check(late)), Some(LeaseAction::StopAll));
        let renewed = LeaseEvent::Renewed {
            expires: late + Duration::from_secs(10),
            now: late,
        };
        assert_eq!(w.step(renewed), Some(LeaseAction::ResumeAll));
        assert!(w.held());
        assert_eq!(w.step(renewed), None);
    }

    #[test]
    fn the_etcd_threads_verdict_stops_without_a_deadline_and_needs_a_new_load() {
        let t0 = Instant::now();
        let mut w = held_until(t0 + Duration::from_secs(10), t0);
        assert_eq!(w.step(LeaseEvent::Lost), Some(LeaseAction::StopAll));
        assert_eq!(w.step(LeaseEvent::Lost), None);
        // The new lease's grant alone does not lead PGs: its load does.
        let granted = LeaseEvent::Renewed {
            expires: t0 + Duration::from_secs(20),
            now: t0 + Duration::from_secs(10),
        };
        assert_eq!(w.step(granted), None);
        assert!(!w.held());
        assert_eq!(w.step(LeaseEvent::Loaded), None);
        assert!(w.held());
        // Without any lease yet, nothing is led and nothing expires.
        let mut fresh = LeaseWatch::default();
        assert_eq!(fresh.step(LeaseEvent::Check(t0)), None);
        assert!(!fresh.held());
    }
}
