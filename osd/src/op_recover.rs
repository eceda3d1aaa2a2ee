//! Recovery of one object on the primary, as a state machine: once it holds the object's
//! lock it copies the current version from a holder to the live members that lack it, then
//! either leaves the object (clean, or kept misplaced) or removes its copies outside the
//! PG's set (delete, sync, stabilize on those OSDs).
//!
//! This module does no I/O and never touches the server: [`RecoverOp::advance`] takes an
//! [`Event`] and returns the [`Action`]s `primary.rs` carries out; the plans come from
//! [`crate::recovery`]. The data read stays with the executor. Every sub-op has a tag unique
//! over the op's life, so a result the current step does not wait for (late, repeated or
//! unknown) changes nothing.
//!
//! What it must never do: start another attempt by itself. A failure ends the op with
//! [`Action::Failed`] (the executor records the backoff) and [`Action::Finish`]; the next
//! attempt is the event loop's, once the backoff allows it.

use vitastor_layout::OsdNum;
use vitastor_protocol::errno::Errno;

use crate::pg::ObjState;
use crate::recovery::{self, Cleanup, Copy, PgFacts, Source};

/// What the executor knows when the recovery gets its object lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFacts {
    /// The object in the PG's map (`None`: it needs no recovery any more).
    pub state: Option<ObjState>,
    /// Live members of the PG.
    pub live: Vec<OsdNum>,
    /// This OSD.
    pub me: OsdNum,
    /// Peers whose connection is up.
    pub ready: Vec<OsdNum>,
}

/// What the executor knows of the PG once the live members hold the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupFacts {
    /// Members of the current set.
    pub members: Vec<OsdNum>,
    /// Every slot of the set has a member and no object of the PG is degraded.
    pub complete: bool,
    /// `no_rebalance` is set.
    pub no_rebalance: bool,
    /// Peers whose connection is up.
    pub ready: Vec<OsdNum>,
}

/// What moves a recovery forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The object lock is ours.
    Locked(LockFacts),
    /// The PG is gone (this OSD stopped leading it): nothing more is done.
    PgGone,
    /// The read of sub-op `tag` finished; `Ok(true)` when the version is a tombstone (its
    /// bitmap is empty).
    Read {
        /// The sub-op.
        tag: u32,
        /// Its outcome.
        result: Result<bool, Errno>,
    },
    /// Sub-op `tag` (a write, delete, sync or stabilize) finished.
    Sub {
        /// The sub-op.
        tag: u32,
        /// Its outcome.
        result: Result<(), Errno>,
    },
    /// The answer to [`Action::GatherCleanup`].
    Cleanup(CleanupFacts),
}

/// What the executor does for a recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Sub-op `tag`: read the whole object at `version` from `source`.
    Read {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        source: Source,
        /// The current version.
        version: u64,
    },
    /// The current version is a tombstone: the PG purges it once clean.
    Tombstone {
        /// The version.
        version: u64,
    },
    /// Sub-op `tag`: write what was read, stable, as `version` on `osd`.
    Write {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
        /// The version.
        version: u64,
    },
    /// Every live member holds the current version already: the object is not degraded.
    NotDegraded,
    /// The copy reached every target: the object's map entry becomes `state` and it is no
    /// longer degraded; `targets` took a copy (so none of them is out of space).
    Copied {
        /// The object now.
        state: ObjState,
        /// Where it was copied.
        targets: Vec<OsdNum>,
    },
    /// Answer with [`Event::Cleanup`] (the PG's facts after the copy).
    GatherCleanup,
    /// Every member holds it and nothing is left elsewhere: forget the object.
    Clean,
    /// Nothing more to do now; `misplaced`: complete on the set, copies elsewhere.
    Keep {
        /// Complete on the set, copies elsewhere.
        misplaced: bool,
    },
    /// The copies outside the set are about to be removed: the object is misplaced until
    /// then.
    MovingOut,
    /// Sub-op `tag`: delete the object on `osd` (outside the set) below `version`.
    Delete {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
        /// The version the delete creates.
        version: u64,
    },
    /// Sub-op `tag`: SEC_SYNC on `osd`, so its delete can be stabilized.
    SyncPeer {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
    },
    /// Sub-op `tag`: SEC_STABILIZE of the delete `version` on `osd`.
    Stabilize {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
        /// The delete's version.
        version: u64,
    },
    /// The copies outside the set are gone: forget the object.
    MovedOut,
    /// The attempt failed with `errno`: the object waits before the next one, the `full`
    /// OSDs (they refused a copy for lack of space) wait for copies, `copied` are the
    /// targets that did take `version`, and `repeer` says the PG's map is wrong.
    Failed {
        /// The first error.
        errno: Errno,
        /// Targets that answered ENOSPC.
        full: Vec<OsdNum>,
        /// The version and the targets that took it before the failure.
        copied: Option<(u64, Vec<OsdNum>)>,
        /// The PG must peer again.
        repeer: bool,
    },
    /// Release the lock and the recovery slot; `succeeded` forgets the object's backoff.
    Finish {
        /// The object needs no further attempt.
        succeeded: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Reading,
    Writing,
    Cleanup,
    Deleting,
    Syncing,
    Stabilizing,
    Done,
}

/// One object's recovery. See the module docs.
#[derive(Debug)]
pub struct RecoverOp {
    stage: Stage,
    state: Option<ObjState>,
    /// The OSDs of the current step's sub-ops; sub-op `base + i` went to `round[i]`.
    round: Vec<OsdNum>,
    base: u32,
    /// Where the copy goes, between the read and the writes.
    targets: Vec<OsdNum>,
    /// Which of the current step's sub-ops have not answered.
    waiting: Vec<bool>,
    next_tag: u32,
    errno: Option<Errno>,
    /// Sub-ops of the current step that failed, and why.
    failed: Vec<(OsdNum, Errno)>,
}

impl Default for RecoverOp {
    fn default() -> RecoverOp {
        RecoverOp::new()
    }
}

impl RecoverOp {
    /// A recovery waiting for its object lock.
    pub fn new() -> RecoverOp {
        RecoverOp {
            stage: Stage::Waiting,
            state: None,
            round: Vec::new(),
            base: 0,
            targets: Vec::new(),
            waiting: Vec::new(),
            next_tag: 0,
            errno: None,
            failed: Vec::new(),
        }
    }

    /// The lock has been released.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Whether sub-op `tag` is the read the op waits for (its data is kept for the writes).
    pub fn awaits_read(&self, tag: u32) -> bool {
        self.stage == Stage::Reading && self.slot(tag).is_some()
    }

    /// The object as the op knows it (for logs).
    pub fn state(&self) -> Option<&ObjState> {
        self.state.as_ref()
    }

    /// Takes one event; returns what to do.
    pub fn advance(&mut self, event: Event) -> Vec<Action> {
        match (self.stage, event) {
            (Stage::Done, _) => Vec::new(),
            (_, Event::PgGone) => self.finish(true),
            (Stage::Waiting, Event::Locked(facts)) => self.locked(facts),
            (Stage::Reading, Event::Read { tag, result }) => {
                if !self.answered(tag, result.err()) {
                    return Vec::new();
                }
                match self.errno {
                    Some(e) => self.fail(e),
                    None => self.write(result == Ok(true)),
                }
            }
            (Stage::Cleanup, Event::Cleanup(facts)) => self.cleanup(facts),
            (
                stage @ (Stage::Writing | Stage::Deleting | Stage::Syncing | Stage::Stabilizing),
                Event::Sub { tag, result },
            ) => {
                if !self.answered(tag, result.err()) {
                    return Vec::new();
                }
                if let Some(e) = self.errno {
                    return self.fail(e);
                }
                match stage {
                    Stage::Writing => self.copied(),
                    Stage::Deleting => self.send_round(Stage::Syncing),
                    Stage::Syncing => self.send_round(Stage::Stabilizing),
                    _ => {
                        let mut out = vec![Action::MovedOut];
                        out.extend(self.finish(true));
                        out
                    }
                }
            }
            _ => Vec::new(),
        }
    }

    fn slot(&self, tag: u32) -> Option<usize> {
        let i = tag.checked_sub(self.base)? as usize;
        self.waiting.get(i).copied().unwrap_or(false).then_some(i)
    }

    /// Records the answer of sub-op `tag`; true when the step has all its answers. An
    /// answer the step does not wait for is ignored (false).
    fn answered(&mut self, tag: u32, error: Option<Errno>) -> bool {
        let Some(i) = self.slot(tag) else {
            return false;
        };
        self.waiting[i] = false;
        if let Some(e) = error {
            self.failed.push((self.round[i], e));
            self.errno.get_or_insert(e);
        }
        !self.waiting.contains(&true)
    }

    /// Starts a step with one sub-op per OSD of `osds`; returns the first tag.
    fn start_round(&mut self, stage: Stage, osds: Vec<OsdNum>) -> u32 {
        self.stage = stage;
        self.base = self.next_tag;
        self.next_tag += osds.len() as u32;
        self.waiting = vec![true; osds.len()];
        self.round = osds;
        self.failed.clear();
        self.base
    }

    fn locked(&mut self, facts: LockFacts) -> Vec<Action> {
        let Some(st) = facts.state else {
            return self.finish(true);
        };
        let ready = |o| facts.ready.contains(&o);
        let plan = recovery::plan_copy(&st, &facts.live, facts.me, ready);
        let version = st.version;
        self.state = Some(st);
        match plan {
            Copy::Done => {
                self.stage = Stage::Cleanup;
                vec![Action::NotDegraded, Action::GatherCleanup]
            }
            // Its holders are unreachable now; losing one re-peers the PG by itself.
            Copy::NoSource => self.fail(Errno::EPIPE),
            Copy::From { source, targets } => {
                let from = match source {
                    Source::Local => facts.me,
                    Source::Osd(o) => o,
                };
                let tag = self.start_round(Stage::Reading, vec![from]);
                self.targets = targets;
                vec![Action::Read {
                    tag,
                    source,
                    version,
                }]
            }
        }
    }

    fn write(&mut self, tombstone: bool) -> Vec<Action> {
        let version = self.state.as_ref().map_or(0, |s| s.version);
        let targets = std::mem::take(&mut self.targets);
        let base = self.start_round(Stage::Writing, targets);
        let mut out = Vec::with_capacity(self.round.len() + 1);
        if tombstone {
            // Copied like any version, then purged once the PG is clean.
            out.push(Action::Tombstone { version });
        }
        out.extend((base..).zip(&self.round).map(|(tag, &osd)| Action::Write {
            tag,
            osd,
            version,
        }));
        out
    }

    fn copied(&mut self) -> Vec<Action> {
        let targets = std::mem::take(&mut self.round);
        let st = self.state.as_mut().expect("set when locked");
        st.stale.retain(|o| !targets.contains(o));
        st.holders.extend(&targets);
        self.stage = Stage::Cleanup;
        vec![
            Action::Copied {
                state: st.clone(),
                targets,
            },
            Action::GatherCleanup,
        ]
    }

    fn cleanup(&mut self, facts: CleanupFacts) -> Vec<Action> {
        let st = self.state.as_ref().expect("set when locked");
        let pg = PgFacts {
            members: &facts.members,
            complete: facts.complete,
            no_rebalance: facts.no_rebalance,
        };
        match recovery::plan_cleanup(st, pg, |o| facts.ready.contains(&o)) {
            Cleanup::Clean => {
                let mut out = vec![Action::Clean];
                out.extend(self.finish(true));
                out
            }
            Cleanup::Keep { misplaced } => {
                let mut out = vec![Action::Keep { misplaced }];
                out.extend(self.finish(true));
                out
            }
            Cleanup::MoveOut(outside) => {
                self.round = outside;
                let mut out = vec![Action::MovingOut];
                out.extend(self.send_round(Stage::Deleting));
                out
            }
        }
    }

    /// Sends the delete, sync or stabilize round to the OSDs outside the set.
    fn send_round(&mut self, stage: Stage) -> Vec<Action> {
        let version = self.state.as_ref().map_or(0, |s| s.version) + 1;
        let osds = std::mem::take(&mut self.round);
        let base = self.start_round(stage, osds);
        (base..)
            .zip(&self.round)
            .map(|(tag, &osd)| match stage {
                Stage::Deleting => Action::Delete { tag, osd, version },
                Stage::Syncing => Action::SyncPeer { tag, osd },
                _ => Action::Stabilize { tag, osd, version },
            })
            .collect()
    }

    fn fail(&mut self, errno: Errno) -> Vec<Action> {
        let full = self
            .failed
            .iter()
            .filter(|(_, e)| *e == Errno::ENOSPC)
            .map(|&(o, _)| o)
            .collect();
        let copied = (self.stage == Stage::Writing).then(|| {
            let took = self
                .round
                .iter()
                .copied()
                .filter(|t| !self.failed.iter().any(|(o, _)| o == t))
                .collect();
            (self.state.as_ref().map_or(0, |s| s.version), took)
        });
        let mut out = vec![Action::Failed {
            errno,
            full,
            copied,
            repeer: recovery::failure_needs_repeer(errno),
        }];
        out.extend(self.finish(false));
        out
    }

    fn finish(&mut self, succeeded: bool) -> Vec<Action> {
        self.stage = Stage::Done;
        vec![Action::Finish { succeeded }]
    }
}

#[cfg(test)]
mod tests {
    use vitastor_protocol::errno::Errno;

    use vitastor_layout::OsdNum;

    use super::{Action, CleanupFacts, Event, LockFacts, RecoverOp};
    use crate::pg::ObjState;
    use crate::recovery::Source;

    fn o(list: &[u64]) -> Vec<OsdNum> {
        list.iter().copied().map(OsdNum).collect()
    }

    fn st(holders: &[u64], stale: &[u64]) -> ObjState {
        ObjState {
            version: 7,
            holders: o(holders),
            stale: o(stale),
        }
    }

    /// OSD 1 leads a PG whose live members are 1, 2, 3; every peer is reachable.
    fn lock(state: Option<ObjState>) -> Event {
        Event::Locked(LockFacts {
            state,
            live: o(&[1, 2, 3]),
            me: OsdNum(1),
            ready: o(&[2, 3, 8]),
        })
    }

    fn cleanup(complete: bool) -> Event {
        Event::Cleanup(CleanupFacts {
            members: o(&[1, 2, 3]),
            complete,
            no_rebalance: false,
            ready: o(&[2, 3, 8]),
        })
    }

    fn sub(tag: u32, result: Result<(), Errno>) -> Event {
        Event::Sub { tag, result }
    }

    fn read(tag: u32, result: Result<bool, Errno>) -> Event {
        Event::Read { tag, result }
    }

    fn write(tag: u32, osd: u64) -> Action {
        Action::Write {
            tag,
            osd: OsdNum(osd),
            version: 7,
        }
    }

    /// Locked and read from the local store: the writes to 2 and 3 are out, tags 1 and 2.
    fn writing(state: ObjState) -> RecoverOp {
        let mut op = RecoverOp::new();
        let read_action = Action::Read {
            tag: 0,
            source: Source::Local,
            version: 7,
        };
        assert_eq!(op.advance(lock(Some(state))), [read_action]);
        assert!(op.awaits_read(0));
        assert_eq!(op.advance(read(0, Ok(false))), [write(1, 2), write(2, 3)]);
        op
    }

    #[test]
    fn an_object_no_longer_in_the_map_needs_nothing() {
        let mut op = RecoverOp::new();
        assert_eq!(op.advance(lock(None)), [Action::Finish { succeeded: true }]);
        assert!(op.is_done());
    }

    #[test]
    fn an_object_every_live_member_holds_is_cleaned_up() {
        let mut op = RecoverOp::new();
        assert_eq!(
            op.advance(lock(Some(st(&[1, 2, 3], &[])))),
            [Action::NotDegraded, Action::GatherCleanup]
        );
        assert_eq!(
            op.advance(cleanup(true)),
            [Action::Clean, Action::Finish { succeeded: true }]
        );
        assert!(op.is_done());
    }

    #[test]
    fn the_current_version_is_copied_to_the_members_that_lack_it() {
        let mut op = writing(st(&[1], &[2]));
        assert_eq!(op.advance(sub(1, Ok(()))), []);
        assert_eq!(
            op.advance(sub(2, Ok(()))),
            [
                Action::Copied {
                    state: st(&[1, 2, 3], &[]),
                    targets: o(&[2, 3])
                },
                Action::GatherCleanup
            ]
        );
        // The PG still has other degraded objects: a copy outside the set would stay.
        assert_eq!(
            op.advance(cleanup(false)),
            [Action::Clean, Action::Finish { succeeded: true }]
        );
    }

    #[test]
    fn a_tombstone_is_copied_and_remembered() {
        let mut op = RecoverOp::new();
        op.advance(lock(Some(st(&[1, 2], &[]))));
        assert_eq!(
            op.advance(read(0, Ok(true))),
            [Action::Tombstone { version: 7 }, write(1, 3)]
        );
    }

    #[test]
    fn a_peer_holder_is_read_when_this_osd_lacks_the_version() {
        let mut op = RecoverOp::new();
        assert_eq!(
            op.advance(lock(Some(st(&[3], &[1])))),
            [Action::Read {
                tag: 0,
                source: Source::Osd(OsdNum(3)),
                version: 7
            }]
        );
        assert_eq!(op.advance(read(0, Ok(false))), [write(1, 1), write(2, 2)]);
    }

    #[test]
    fn only_holder_gone_fails_into_the_backoff_without_another_attempt() {
        let mut op = RecoverOp::new();
        let lost = Event::Locked(LockFacts {
            state: Some(st(&[5], &[])),
            live: o(&[1, 2]),
            me: OsdNum(1),
            ready: o(&[2]),
        });
        // No read, no retry: the op ends; the next attempt is the event loop's.
        assert_eq!(
            op.advance(lost),
            [
                Action::Failed {
                    errno: Errno::EPIPE,
                    full: o(&[]),
                    copied: None,
                    repeer: false
                },
                Action::Finish { succeeded: false }
            ]
        );
        assert!(op.is_done());
        assert_eq!(op.advance(read(0, Ok(false))), []);
    }

    #[test]
    fn a_full_target_backs_off_and_the_other_copies_count() {
        let mut op = writing(st(&[1], &[]));
        assert_eq!(op.advance(sub(1, Err(Errno::ENOSPC))), []);
        assert_eq!(
            op.advance(sub(2, Ok(()))),
            [
                Action::Failed {
                    errno: Errno::ENOSPC,
                    full: o(&[2]),
                    copied: Some((7, o(&[3]))),
                    repeer: false
                },
                Action::Finish { succeeded: false }
            ]
        );
    }

    #[test]
    fn a_failed_read_ends_the_attempt_and_a_missing_version_repeers() {
        let mut op = RecoverOp::new();
        op.advance(lock(Some(st(&[1], &[]))));
        assert_eq!(
            op.advance(read(0, Err(Errno::EIO))),
            [
                Action::Failed {
                    errno: Errno::EIO,
                    full: o(&[]),
                    copied: None,
                    repeer: false
                },
                Action::Finish { succeeded: false }
            ]
        );
        let mut op = RecoverOp::new();
        op.advance(lock(Some(st(&[1], &[]))));
        let enoent = Errno::new(libc::ENOENT).unwrap();
        let out = op.advance(read(0, Err(enoent)));
        assert!(matches!(out[0], Action::Failed { repeer: true, .. }));
    }

    #[test]
    fn stale_repeated_and_unknown_results_change_nothing() {
        let mut op = writing(st(&[1], &[]));
        // The read's tag again, an unknown tag, a read result while writing.
        assert_eq!(op.advance(sub(0, Err(Errno::EIO))), []);
        assert_eq!(op.advance(sub(9, Err(Errno::EIO))), []);
        assert_eq!(op.advance(read(1, Err(Errno::EIO))), []);
        assert!(!op.awaits_read(0));
        assert_eq!(op.advance(sub(1, Ok(()))), []);
        // The same sub-op answering twice does not complete the step.
        assert_eq!(op.advance(sub(1, Ok(()))), []);
        assert_eq!(op.advance(cleanup(true)), []);
        let out = op.advance(sub(2, Ok(())));
        assert!(matches!(out[0], Action::Copied { .. }));
        assert_eq!(op.advance(sub(2, Ok(()))), []);
    }

    #[test]
    fn copies_outside_the_set_are_deleted_synced_and_stabilized() {
        let mut op = RecoverOp::new();
        assert_eq!(
            op.advance(lock(Some(st(&[1, 2, 3, 8], &[])))),
            [Action::NotDegraded, Action::GatherCleanup]
        );
        assert_eq!(
            op.advance(cleanup(true)),
            [
                Action::MovingOut,
                Action::Delete {
                    tag: 0,
                    osd: OsdNum(8),
                    version: 8
                }
            ]
        );
        assert_eq!(
            op.advance(sub(0, Ok(()))),
            [Action::SyncPeer {
                tag: 1,
                osd: OsdNum(8)
            }]
        );
        assert_eq!(
            op.advance(sub(1, Ok(()))),
            [Action::Stabilize {
                tag: 2,
                osd: OsdNum(8),
                version: 8
            }]
        );
        assert_eq!(
            op.advance(sub(2, Ok(()))),
            [Action::MovedOut, Action::Finish { succeeded: true }]
        );
    }

    #[test]
    fn a_failed_removal_outside_the_set_backs_off() {
        let mut op = RecoverOp::new();
        op.advance(lock(Some(st(&[1, 2, 3, 8], &[]))));
        op.advance(cleanup(true));
        assert_eq!(
            op.advance(sub(0, Err(Errno::EPIPE))),
            [
                Action::Failed {
                    errno: Errno::EPIPE,
                    full: o(&[]),
                    copied: None,
                    repeer: false
                },
                Action::Finish { succeeded: false }
            ]
        );
    }

    #[test]
    fn a_gone_pg_ends_the_op_at_any_step() {
        let mut op = writing(st(&[1], &[]));
        assert_eq!(
            op.advance(Event::PgGone),
            [Action::Finish { succeeded: true }]
        );
        assert_eq!(op.advance(sub(1, Ok(()))), []);
    }
}
