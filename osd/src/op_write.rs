//! A client WRITE on the primary, as a state machine: once it holds the object's lock it
//! checks the PG and the object (recover a degraded object first, compare-and-set), picks
//! the new version, fans the data out to every live member, and from their results decides
//! what the PG learns (written everywhere / reached only some members / peer lost: re-peer)
//! and what the client hears.
//!
//! This module does no I/O and never touches the server: [`WriteOp::advance`] takes an
//! [`Event`] — carrying the [`Facts`] the executor read from the server when the lock was
//! granted — and returns the [`Action`]s `primary.rs` carries out. The data buffer stays
//! with the executor.
//!
//! What it must never do: acknowledge a write that some live member lacks, or write to an
//! object whose live copies disagree.

use vitastor_layout::OsdNum;
use vitastor_protocol::errno::Errno;

use crate::fanout::{self, Verdict};
use crate::op_gate::{gate, Gate};

/// What the executor knows when the write gets its object lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The PG exists and is active (an op that waited for the lock may find it re-peering).
    pub active: bool,
    /// The object's live copies disagree: it is recovered before anything is written.
    pub degraded: bool,
    /// The object's last recovery failed and its next attempt is not due: the error the
    /// write fails with instead of recovering (ENOSPC, or EPIPE which clients retry).
    pub recovery_waits: Option<Errno>,
    /// The live members of the PG, this OSD first.
    pub targets: Vec<OsdNum>,
    /// The object's current version anywhere known (0: it does not exist).
    pub current: u64,
    /// The highest version purged in the PG while this OSD led it.
    pub purged_up_to: u64,
    /// The pool writes stable versions (`immediate_commit: all`): nothing to SYNC later.
    pub stable: bool,
}

/// What moves a write forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The object lock is ours (first, or again after the recovery it asked for).
    Locked(Facts),
    /// Sub-op `tag` (the write to `targets[tag]`) finished.
    Sub {
        /// The sub-op.
        tag: u32,
        /// Its outcome.
        result: Result<(), Errno>,
    },
}

/// What the executor does for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Recover the object now, then run this write again (it keeps the lock's queue head).
    RecoverFirst,
    /// Sub-op `tag`: write the data as `version` on `osd` (local store or SEC_WRITE[_STABLE]).
    Write {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
        /// The new version.
        version: u64,
        /// Written stable.
        stable: bool,
    },
    /// Every target has `version`: the object is current on `holders` (stale elsewhere),
    /// any tombstone is superseded, and unstable versions join the PG's unsynced writes.
    Written {
        /// The version.
        version: u64,
        /// Every target.
        holders: Vec<OsdNum>,
        /// Written stable.
        stable: bool,
    },
    /// Stores refused the version on some targets: only `holders` have it; the object is
    /// degraded and recovered later, and the PG stays active.
    Partial {
        /// The version.
        version: u64,
        /// Targets that have it (possibly none).
        holders: Vec<OsdNum>,
        /// Targets that refused it, and why.
        failed: Vec<(OsdNum, Errno)>,
        /// Written stable.
        stable: bool,
    },
    /// A peer was lost mid-write: what it holds is unknown, the PG peers again.
    Repeer,
    /// Answer the client: the version written, or the error.
    Reply(Result<u64, Errno>),
    /// Release the object lock (the next queued op runs) and the op's hold on the PG.
    Unlock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Writing,
    Done,
}

/// One client WRITE. See the module docs.
#[derive(Debug)]
pub struct WriteOp {
    /// Compare-and-set: the version the write must create (0: any).
    cas: u64,
    stage: Stage,
    version: u64,
    stable: bool,
    targets: Vec<OsdNum>,
    pending: usize,
    /// Targets whose sub-op failed, and why, in arrival order (the first is the reply's).
    failed: Vec<(OsdNum, Errno)>,
}

/// The version a write creates when the object is at `current`: `current + 1`, except that
/// an object that does not exist starts above every version purged in its PG. A replica's
/// store remembers a purged object's version until its journal is trimmed past the delete,
/// and refuses lower versions until then, while this OSD's store may have forgotten it.
pub fn version_after(current: u64, purged_up_to: u64) -> u64 {
    let floor = if current == 0 { purged_up_to } else { 0 };
    current.max(floor) + 1
}

impl WriteOp {
    /// A write waiting for its object lock; `cas` as the client sent it.
    pub fn new(cas: u64) -> WriteOp {
        WriteOp {
            cas,
            stage: Stage::Waiting,
            version: 0,
            stable: false,
            targets: Vec::new(),
            pending: 0,
            failed: Vec::new(),
        }
    }

    /// The client has been answered and the lock released.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Takes one event; returns what to do. Events that do not fit the current stage (a
    /// late or unknown result) change nothing.
    pub fn advance(&mut self, event: Event) -> Vec<Action> {
        match (self.stage, event) {
            (Stage::Waiting, Event::Locked(facts)) => self.locked(facts),
            (Stage::Writing, Event::Sub { tag, result }) => {
                let Some(&osd) = self.targets.get(tag as usize) else {
                    return Vec::new();
                };
                if self.pending == 0 {
                    return Vec::new();
                }
                if let Err(e) = result {
                    self.failed.push((osd, e));
                }
                self.pending -= 1;
                if self.pending > 0 {
                    return Vec::new();
                }
                self.written()
            }
            _ => Vec::new(),
        }
    }

    fn locked(&mut self, facts: Facts) -> Vec<Action> {
        match gate(facts.active, facts.degraded, facts.recovery_waits) {
            Gate::Proceed => {}
            Gate::RecoverFirst => return vec![Action::RecoverFirst],
            Gate::Fail(e) => return self.fail(e),
        }
        if self.cas != 0 && self.cas != facts.current + 1 {
            return self.fail(Errno::EINTR);
        }
        self.stage = Stage::Writing;
        self.version = version_after(facts.current, facts.purged_up_to);
        self.stable = facts.stable;
        self.targets = facts.targets;
        self.pending = self.targets.len();
        (0u32..)
            .zip(&self.targets)
            .map(|(tag, &osd)| Action::Write {
                tag,
                osd,
                version: self.version,
                stable: self.stable,
            })
            .collect()
    }

    fn written(&mut self) -> Vec<Action> {
        self.stage = Stage::Done;
        let reply = match self.failed.first() {
            None => Ok(self.version),
            Some(&(_, e)) => Err(e),
        };
        let learned = match fanout::verdict(&self.targets, &self.failed) {
            Verdict::Written => Action::Written {
                version: self.version,
                holders: self.targets.clone(),
                stable: self.stable,
            },
            Verdict::Partial { holders } => Action::Partial {
                version: self.version,
                holders,
                failed: std::mem::take(&mut self.failed),
                stable: self.stable,
            },
            Verdict::Repeer => Action::Repeer,
        };
        vec![learned, Action::Reply(reply), Action::Unlock]
    }

    fn fail(&mut self, e: Errno) -> Vec<Action> {
        self.stage = Stage::Done;
        vec![Action::Reply(Err(e)), Action::Unlock]
    }
}

#[cfg(test)]
mod tests {
    use vitastor_layout::OsdNum;
    use vitastor_protocol::errno::Errno;

    use super::{version_after, Action, Event, Facts, WriteOp};

    fn facts() -> Facts {
        Facts {
            active: true,
            degraded: false,
            recovery_waits: None,
            targets: vec![OsdNum(1), OsdNum(2), OsdNum(3)],
            current: 4,
            purged_up_to: 0,
            stable: true,
        }
    }

    fn sub(tag: u32, result: Result<(), Errno>) -> Event {
        Event::Sub { tag, result }
    }

    fn write(tag: u32, osd: u64, version: u64) -> Action {
        Action::Write {
            tag,
            osd: OsdNum(osd),
            version,
            stable: true,
        }
    }

    /// A write past its lock, its three sub-ops sent.
    fn writing() -> WriteOp {
        let mut w = WriteOp::new(0);
        assert_eq!(w.advance(Event::Locked(facts())).len(), 3);
        w
    }

    #[test]
    fn every_member_written_then_the_client_hears_the_new_version() {
        let mut w = WriteOp::new(0);
        assert_eq!(
            w.advance(Event::Locked(facts())),
            [write(0, 1, 5), write(1, 2, 5), write(2, 3, 5)]
        );
        assert!(w.advance(sub(2, Ok(()))).is_empty());
        assert!(w.advance(sub(0, Ok(()))).is_empty());
        assert_eq!(
            w.advance(sub(1, Ok(()))),
            [
                Action::Written {
                    version: 5,
                    holders: vec![OsdNum(1), OsdNum(2), OsdNum(3)],
                    stable: true,
                },
                Action::Reply(Ok(5)),
                Action::Unlock,
            ]
        );
        assert!(w.is_done());
        assert!(w.advance(sub(1, Ok(()))).is_empty(), "a late result");
    }

    #[test]
    fn a_failed_local_write_is_never_acknowledged_and_leaves_the_others_holding_it() {
        for e in [Errno::EIO, Errno::ENOSPC] {
            let mut w = writing();
            w.advance(sub(0, Err(e)));
            w.advance(sub(1, Ok(())));
            assert_eq!(
                w.advance(sub(2, Ok(()))),
                [
                    Action::Partial {
                        version: 5,
                        holders: vec![OsdNum(2), OsdNum(3)],
                        failed: vec![(OsdNum(1), e)],
                        stable: true,
                    },
                    Action::Reply(Err(e)),
                    Action::Unlock,
                ]
            );
        }
    }

    #[test]
    fn a_peer_lost_mid_write_repeers_and_fails_with_the_first_error() {
        let mut w = writing();
        w.advance(sub(2, Err(Errno::ENOSPC)));
        w.advance(sub(1, Err(Errno::EPIPE)));
        assert_eq!(
            w.advance(sub(0, Ok(()))),
            [
                Action::Repeer,
                Action::Reply(Err(Errno::ENOSPC)),
                Action::Unlock
            ]
        );
    }

    #[test]
    fn compare_and_set_takes_only_the_next_version() {
        let mut w = WriteOp::new(4);
        assert_eq!(
            w.advance(Event::Locked(facts())),
            [Action::Reply(Err(Errno::EINTR)), Action::Unlock]
        );
        let mut w = WriteOp::new(5);
        assert_eq!(w.advance(Event::Locked(facts())).len(), 3);
    }

    #[test]
    fn a_pg_that_is_not_active_fails_the_write_retryably() {
        let mut w = WriteOp::new(0);
        let f = Facts {
            active: false,
            ..facts()
        };
        assert_eq!(
            w.advance(Event::Locked(f)),
            [Action::Reply(Err(Errno::EPIPE)), Action::Unlock]
        );
        assert!(w.is_done());
    }

    #[test]
    fn a_degraded_object_is_recovered_first_unless_its_recovery_waits() {
        let mut w = WriteOp::new(0);
        let degraded = Facts {
            degraded: true,
            ..facts()
        };
        assert_eq!(
            w.advance(Event::Locked(degraded.clone())),
            [Action::RecoverFirst]
        );
        // Recovered: the lock comes back with the object clean.
        assert_eq!(w.advance(Event::Locked(facts())).len(), 3);

        let mut w = WriteOp::new(0);
        let full = Facts {
            recovery_waits: Some(Errno::ENOSPC),
            ..degraded
        };
        assert_eq!(
            w.advance(Event::Locked(full)),
            [Action::Reply(Err(Errno::ENOSPC)), Action::Unlock]
        );
    }

    #[test]
    fn unstable_writes_say_so_and_new_objects_start_above_purged_versions() {
        let mut w = WriteOp::new(0);
        let f = Facts {
            current: 0,
            purged_up_to: 9,
            stable: false,
            targets: vec![OsdNum(1)],
            ..facts()
        };
        assert_eq!(
            w.advance(Event::Locked(f)),
            [Action::Write {
                tag: 0,
                osd: OsdNum(1),
                version: 10,
                stable: false,
            }]
        );
        assert_eq!(
            w.advance(sub(0, Ok(())))[0],
            Action::Written {
                version: 10,
                holders: vec![OsdNum(1)],
                stable: false,
            }
        );
        assert_eq!(version_after(3, 9), 4);
        assert_eq!(version_after(0, 0), 1);
    }
}
