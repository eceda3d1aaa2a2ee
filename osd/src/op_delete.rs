//! A DELETE on the primary, as a state machine. Deletes are two-phase so that an OSD that
//! misses one cannot bring the object back: first a tombstone version (no data, empty
//! bitmap) goes to every live member like any write, so peering sees it as the newest
//! version and recovers it, never the old data; then, once every OSD that may hold the
//! object has the tombstone, the object is purged everywhere (peers delete it as an
//! unstable version: synced, then stabilized). A purge that cannot happen now (a member is
//! down, the PG has history) is left to a background delete once the PG is clean, which
//! starts at the purge.
//!
//! This module does no I/O and never touches the server: [`DeleteOp::advance`] takes an
//! [`Event`] and returns the [`Action`]s `primary.rs` carries out.
//!
//! What it must never do: purge an object some OSD that may hold it has not seen the
//! tombstone of, or acknowledge a delete whose tombstone a live member lacks.

use vitastor_layout::OsdNum;
use vitastor_protocol::errno::Errno;

use crate::fanout::{self, Verdict};
use crate::op_gate::{gate, Gate};

/// What the executor knows when the delete gets its object lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The PG exists and is active.
    pub active: bool,
    /// The object's live copies disagree: it is recovered first.
    pub degraded: bool,
    /// The object's last recovery failed and its next attempt is not due: the error the
    /// delete fails with instead.
    pub recovery_waits: Option<Errno>,
    /// The live members of the PG, this OSD first.
    pub targets: Vec<OsdNum>,
    /// The version this OSD's store has (0: none).
    pub local_version: u64,
    /// Peering saw a copy somewhere (the object is in the PG's map of non-clean objects).
    pub known: bool,
    /// The object's current version anywhere known.
    pub current: u64,
    /// The highest version purged in the PG while this OSD led it.
    pub purged_up_to: u64,
}

/// What moves a delete forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The object lock is ours (first, or again after the recovery it asked for).
    Locked(Facts),
    /// Sub-op `tag` of the current round finished.
    Sub {
        /// The sub-op.
        tag: u32,
        /// Its outcome.
        result: Result<(), Errno>,
        /// Every OSD that may hold data of the PG is live and a member now (what decides,
        /// when the tombstone round ends, whether the purge runs now or later).
        purgeable: bool,
    },
}

/// What the executor does for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Recover the object now, then run this delete again.
    RecoverFirst,
    /// Sub-op `tag`: write tombstone `version` on `osd`, stable.
    Tombstone {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
        /// The tombstone's version.
        version: u64,
    },
    /// Every member has the tombstone: the object leaves the PG's map of non-clean objects.
    Tombstoned,
    /// The purge waits for a clean PG: remember tombstone `version` for a background delete.
    KeepTombstone {
        /// The tombstone's version.
        version: u64,
    },
    /// Versions up to `version` are purged in the PG: new objects start above it.
    Purging {
        /// The purge's version.
        version: u64,
    },
    /// Sub-op `tag`: delete the object as `version` on `osd` (stable locally).
    Purge {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
        /// The purge's version.
        version: u64,
    },
    /// Sub-op `tag`: SEC_SYNC on peer `osd`, making its unstable purge durable.
    SyncPeer {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
    },
    /// Sub-op `tag`: SEC_STABILIZE of the purge `version` on peer `osd`.
    StabilizePeer {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
        /// The purge's version.
        version: u64,
    },
    /// The object is purged everywhere: forget its tombstone.
    Purged,
    /// Stores refused the tombstone on some targets: only `holders` have it; the object is
    /// degraded and recovered later (the tombstone is written stable).
    Partial {
        /// The tombstone's version.
        version: u64,
        /// Targets that have it.
        holders: Vec<OsdNum>,
        /// Targets that refused it, and why.
        failed: Vec<(OsdNum, Errno)>,
    },
    /// A peer was lost, or a purge step failed: the PG peers again.
    Repeer,
    /// Answer the client (client deletes only).
    Reply(Result<(), Errno>),
    /// Release the object lock and the op's hold on the PG.
    Unlock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Tombstone,
    Purge,
    PurgeSync,
    Stabilize,
    Done,
}

/// One delete. See the module docs.
#[derive(Debug)]
pub struct DeleteOp {
    /// A background purge of a tombstone left by an earlier delete: nobody to answer.
    background: bool,
    stage: Stage,
    /// The tombstone's version; the purge is one above.
    version: u64,
    targets: Vec<OsdNum>,
    pending: usize,
    errno: Option<Errno>,
    /// Targets that refused the tombstone, and why.
    failed: Vec<(OsdNum, Errno)>,
}

impl DeleteOp {
    /// A client delete (`background` false) or a background purge, waiting for the lock.
    pub fn new(background: bool) -> DeleteOp {
        DeleteOp {
            background,
            stage: Stage::Waiting,
            version: 0,
            targets: Vec::new(),
            pending: 0,
            errno: None,
            failed: Vec::new(),
        }
    }

    /// A background purge of a tombstone.
    pub fn is_background(&self) -> bool {
        self.background
    }

    /// Over: answered (if anyone asked) and unlocked.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Takes one event; returns what to do. Events that do not fit the current stage
    /// change nothing.
    pub fn advance(&mut self, event: Event) -> Vec<Action> {
        match (self.stage, event) {
            (Stage::Waiting, Event::Locked(facts)) => self.locked(facts),
            (
                Stage::Tombstone | Stage::Purge | Stage::PurgeSync | Stage::Stabilize,
                Event::Sub {
                    tag,
                    result,
                    purgeable,
                },
            ) => {
                if self.pending == 0 || tag as usize >= self.round_len() {
                    return Vec::new();
                }
                if let Err(e) = result {
                    self.errno.get_or_insert(e);
                    if self.stage == Stage::Tombstone {
                        self.failed.push((self.targets[tag as usize], e));
                    }
                }
                self.pending -= 1;
                if self.pending > 0 {
                    return Vec::new();
                }
                self.round_done(purgeable)
            }
            _ => Vec::new(),
        }
    }

    /// Sub-ops in the current round: every target, or only the peers once purged.
    fn round_len(&self) -> usize {
        match self.stage {
            Stage::PurgeSync | Stage::Stabilize => self.targets.len() - 1,
            _ => self.targets.len(),
        }
    }

    fn locked(&mut self, facts: Facts) -> Vec<Action> {
        match gate(facts.active, facts.degraded, facts.recovery_waits) {
            Gate::Proceed => {}
            Gate::RecoverFirst => return vec![Action::RecoverFirst],
            Gate::Fail(e) => return self.finish(Err(e)),
        }
        self.targets = facts.targets;
        if self.background {
            // The tombstone is already everywhere.
            self.version = facts.local_version;
            return self.purge();
        }
        if facts.local_version == 0 && !facts.known {
            // Nothing to delete anywhere: the live members all lack it too.
            return self.finish(Ok(()));
        }
        self.version = crate::op_write::version_after(facts.current, facts.purged_up_to);
        self.stage = Stage::Tombstone;
        self.pending = self.targets.len();
        (0u32..)
            .zip(&self.targets)
            .map(|(tag, &osd)| Action::Tombstone {
                tag,
                osd,
                version: self.version,
            })
            .collect()
    }

    fn purge(&mut self) -> Vec<Action> {
        self.stage = Stage::Purge;
        self.pending = self.targets.len();
        let version = self.version + 1;
        let mut out = vec![Action::Purging { version }];
        out.extend(
            (0u32..)
                .zip(&self.targets)
                .map(|(tag, &osd)| Action::Purge { tag, osd, version }),
        );
        out
    }

    fn round_done(&mut self, purgeable: bool) -> Vec<Action> {
        if let Some(e) = self.errno {
            let mut out = Vec::new();
            match (self.stage, fanout::verdict(&self.targets, &self.failed)) {
                (Stage::Tombstone, Verdict::Partial { holders }) => out.push(Action::Partial {
                    version: self.version,
                    holders,
                    failed: std::mem::take(&mut self.failed),
                }),
                _ => out.push(Action::Repeer),
            }
            out.extend(self.finish(Err(e)));
            return out;
        }
        let version = self.version + 1;
        let peers = self.targets[1..].iter().copied();
        match self.stage {
            Stage::Tombstone => {
                let mut out = vec![Action::Tombstoned];
                if purgeable {
                    out.extend(self.purge());
                } else {
                    out.push(Action::KeepTombstone {
                        version: self.version,
                    });
                    out.extend(self.finish(Ok(())));
                }
                out
            }
            Stage::Purge if self.targets.len() == 1 => {
                // No peer holds an unstable purge.
                let mut out = vec![Action::Purged];
                out.extend(self.finish(Ok(())));
                out
            }
            Stage::Purge => {
                self.stage = Stage::PurgeSync;
                self.pending = self.targets.len() - 1;
                (0u32..)
                    .zip(peers)
                    .map(|(tag, osd)| Action::SyncPeer { tag, osd })
                    .collect()
            }
            Stage::PurgeSync => {
                self.stage = Stage::Stabilize;
                self.pending = self.targets.len() - 1;
                (0u32..)
                    .zip(peers)
                    .map(|(tag, osd)| Action::StabilizePeer { tag, osd, version })
                    .collect()
            }
            _ => {
                let mut out = vec![Action::Purged];
                out.extend(self.finish(Ok(())));
                out
            }
        }
    }

    fn finish(&mut self, result: Result<(), Errno>) -> Vec<Action> {
        self.stage = Stage::Done;
        if self.background {
            vec![Action::Unlock]
        } else {
            vec![Action::Reply(result), Action::Unlock]
        }
    }
}

#[cfg(test)]
mod tests {
    use vitastor_layout::OsdNum;
    use vitastor_protocol::errno::Errno;

    use super::{Action, DeleteOp, Event, Facts};

    fn facts() -> Facts {
        Facts {
            active: true,
            degraded: false,
            recovery_waits: None,
            targets: vec![OsdNum(1), OsdNum(2)],
            local_version: 3,
            known: false,
            current: 3,
            purged_up_to: 0,
        }
    }

    fn ok(tag: u32) -> Event {
        Event::Sub {
            tag,
            result: Ok(()),
            purgeable: true,
        }
    }

    fn err(tag: u32, e: Errno) -> Event {
        Event::Sub {
            tag,
            result: Err(e),
            purgeable: true,
        }
    }

    /// A client delete whose tombstone (version 4) went to both members.
    fn tombstoning() -> DeleteOp {
        let mut d = DeleteOp::new(false);
        assert_eq!(
            d.advance(Event::Locked(facts())),
            [
                Action::Tombstone {
                    tag: 0,
                    osd: OsdNum(1),
                    version: 4
                },
                Action::Tombstone {
                    tag: 1,
                    osd: OsdNum(2),
                    version: 4
                },
            ]
        );
        d
    }

    #[test]
    fn tombstone_then_purge_then_the_peers_sync_and_stabilize_then_the_client_hears() {
        let mut d = tombstoning();
        assert!(d.advance(ok(1)).is_empty());
        assert_eq!(
            d.advance(ok(0)),
            [
                Action::Tombstoned,
                Action::Purging { version: 5 },
                Action::Purge {
                    tag: 0,
                    osd: OsdNum(1),
                    version: 5
                },
                Action::Purge {
                    tag: 1,
                    osd: OsdNum(2),
                    version: 5
                },
            ]
        );
        d.advance(ok(0));
        assert_eq!(
            d.advance(ok(1)),
            [Action::SyncPeer {
                tag: 0,
                osd: OsdNum(2)
            }]
        );
        assert_eq!(
            d.advance(ok(0)),
            [Action::StabilizePeer {
                tag: 0,
                osd: OsdNum(2),
                version: 5
            }]
        );
        assert_eq!(
            d.advance(ok(0)),
            [Action::Purged, Action::Reply(Ok(())), Action::Unlock]
        );
        assert!(d.is_done());
    }

    #[test]
    fn a_pg_that_cannot_purge_keeps_the_tombstone_for_later() {
        let mut d = tombstoning();
        d.advance(ok(0));
        let not_now = Event::Sub {
            tag: 1,
            result: Ok(()),
            purgeable: false,
        };
        assert_eq!(
            d.advance(not_now),
            [
                Action::Tombstoned,
                Action::KeepTombstone { version: 4 },
                Action::Reply(Ok(())),
                Action::Unlock
            ]
        );
    }

    #[test]
    fn a_background_purge_starts_at_the_purge_and_answers_nobody() {
        let mut d = DeleteOp::new(true);
        let single = Facts {
            targets: vec![OsdNum(1)],
            ..facts()
        };
        assert_eq!(
            d.advance(Event::Locked(single)),
            [
                Action::Purging { version: 4 },
                Action::Purge {
                    tag: 0,
                    osd: OsdNum(1),
                    version: 4
                },
            ]
        );
        // No peer to sync; the tombstone is gone for good.
        assert_eq!(d.advance(ok(0)), [Action::Purged, Action::Unlock]);
    }

    #[test]
    fn nothing_anywhere_is_deleted_at_once() {
        let mut d = DeleteOp::new(false);
        let absent = Facts {
            local_version: 0,
            current: 0,
            ..facts()
        };
        assert_eq!(
            d.advance(Event::Locked(absent)),
            [Action::Reply(Ok(())), Action::Unlock]
        );
        // Known to peering (a copy elsewhere): a tombstone above every purged version.
        let mut d = DeleteOp::new(false);
        let elsewhere = Facts {
            local_version: 0,
            current: 0,
            known: true,
            purged_up_to: 7,
            ..facts()
        };
        assert!(matches!(
            d.advance(Event::Locked(elsewhere))[0],
            Action::Tombstone { version: 8, .. }
        ));
    }

    #[test]
    fn a_tombstone_refused_by_a_full_store_leaves_it_where_it_was_written() {
        let mut d = tombstoning();
        d.advance(err(1, Errno::ENOSPC));
        assert_eq!(
            d.advance(ok(0)),
            [
                Action::Partial {
                    version: 4,
                    holders: vec![OsdNum(1)],
                    failed: vec![(OsdNum(2), Errno::ENOSPC)],
                },
                Action::Reply(Err(Errno::ENOSPC)),
                Action::Unlock,
            ]
        );
    }

    #[test]
    fn a_peer_lost_during_the_tombstone_or_the_purge_repeers() {
        let mut d = tombstoning();
        d.advance(err(1, Errno::EPIPE));
        assert_eq!(
            d.advance(ok(0)),
            [
                Action::Repeer,
                Action::Reply(Err(Errno::EPIPE)),
                Action::Unlock
            ]
        );
        let mut d = tombstoning();
        d.advance(ok(0));
        d.advance(ok(1));
        d.advance(ok(0));
        d.advance(ok(1));
        assert_eq!(
            d.advance(err(0, Errno::EIO)),
            [
                Action::Repeer,
                Action::Reply(Err(Errno::EIO)),
                Action::Unlock
            ]
        );
    }

    #[test]
    fn not_active_degraded_and_backing_off() {
        let mut d = DeleteOp::new(false);
        let inactive = Facts {
            active: false,
            ..facts()
        };
        assert_eq!(
            d.advance(Event::Locked(inactive)),
            [Action::Reply(Err(Errno::EPIPE)), Action::Unlock]
        );
        let mut d = DeleteOp::new(false);
        let degraded = Facts {
            degraded: true,
            ..facts()
        };
        assert_eq!(
            d.advance(Event::Locked(degraded.clone())),
            [Action::RecoverFirst]
        );
        assert_eq!(d.advance(Event::Locked(facts())).len(), 2);
        let mut d = DeleteOp::new(true);
        let waits = Facts {
            recovery_waits: Some(Errno::ENOSPC),
            ..degraded
        };
        assert_eq!(d.advance(Event::Locked(waits)), [Action::Unlock]);
    }

    #[test]
    fn late_or_unknown_results_change_nothing() {
        let mut d = tombstoning();
        assert!(d.advance(ok(5)).is_empty());
        d.advance(ok(0));
        assert_eq!(d.advance(ok(1)).len(), 4);
        // The purge round: peers' sub-ops are only tags 0 and 1 of two targets.
        assert!(d.advance(ok(2)).is_empty());
        d.advance(ok(0));
        d.advance(ok(1));
        // The sync round has one peer.
        assert!(d.advance(ok(1)).is_empty());
    }
}
