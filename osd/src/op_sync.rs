//! A client SYNC on the primary, as a state machine: every unstable write the PGs recorded
//! since the last SYNC is made durable (a sync on each OSD that took one), then stable (a
//! stabilize of exactly those versions on each OSD). The client is acknowledged only after
//! the last stabilize.
//!
//! This module does no I/O and never touches the server: [`SyncOp::advance`] takes an
//! [`Event`] and returns the [`Action`]s the executor (`primary.rs`) carries out. Running
//! SYNCs one at a time in arrival order is the executor's job.
//!
//! What it must never do: acknowledge a SYNC that did not reach every OSD, or lose an
//! unsynced write when it fails — the PGs get them back for the next SYNC.

use vitastor_blockstore::ObjVerId;
use vitastor_layout::{OsdNum, PgId};
use vitastor_protocol::errno::Errno;

use crate::pg::Dirty;

/// What moves a SYNC forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The SYNC is its turn: send the first round.
    Start,
    /// Sub-op `tag` (as named in an [`Action`]) finished.
    Sub {
        /// The sub-op.
        tag: u32,
        /// Its outcome.
        result: Result<(), Errno>,
    },
    /// The executor gives the SYNC up (its sub-ops' results will not come back here).
    Abort(Errno),
}

/// What the executor does for a SYNC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Sub-op `tag`: make the journal of `osd` durable (local `Sync` or SEC_SYNC).
    Sync {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
    },
    /// Sub-op `tag`: make `versions` stable on `osd` (local `Stabilize` or SEC_STABILIZE).
    Stabilize {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
        /// Sorted, without duplicates.
        versions: Vec<ObjVerId>,
    },
    /// The SYNC failed: PG `pg` takes back the unsynced writes it gave, and re-peers when
    /// some went to an OSD whose sub-op failed (peering stabilizes what reached the live
    /// members; the client replays the rest).
    GiveBack {
        /// The PG.
        pg: PgId,
        /// Its unsynced writes, by OSD.
        dirty: Dirty,
        /// Peer again.
        repeer: bool,
    },
    /// Answer the client; the SYNC is over.
    Reply(Result<(), Errno>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    Syncing,
    Stabilizing,
    Done,
}

/// One client SYNC. See the module docs.
#[derive(Debug)]
pub struct SyncOp {
    /// The unsynced writes taken from each PG, given back if the SYNC fails.
    taken: Vec<(PgId, Dirty)>,
    /// The same writes by OSD: sub-op `i` of either round goes to `work[i].0`.
    work: Vec<(OsdNum, Vec<ObjVerId>)>,
    stage: Stage,
    pending: usize,
    /// The first failure.
    errno: Option<Errno>,
    /// OSDs whose sync or stabilize failed.
    failed: Vec<OsdNum>,
}

impl SyncOp {
    /// A SYNC of the unsynced writes `taken` from the PGs (empty lists allowed).
    pub fn new(taken: Vec<(PgId, Dirty)>) -> SyncOp {
        let mut by_osd: std::collections::BTreeMap<OsdNum, Vec<ObjVerId>> = Default::default();
        for (_, dirty) in &taken {
            for (osd, list) in dirty {
                by_osd.entry(*osd).or_default().extend(list);
            }
        }
        let work = by_osd
            .into_iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(osd, mut list)| {
                list.sort_unstable();
                list.dedup();
                (osd, list)
            })
            .collect();
        SyncOp {
            taken,
            work,
            stage: Stage::Idle,
            pending: 0,
            errno: None,
            failed: Vec::new(),
        }
    }

    /// The client has been answered.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Takes one event; returns what to do. Events that do not belong to the current
    /// round (a late or repeated result) change nothing.
    pub fn advance(&mut self, event: Event) -> Vec<Action> {
        match (self.stage, event) {
            (Stage::Idle, Event::Start) if self.work.is_empty() => self.finish(),
            (Stage::Idle, Event::Start) => {
                self.stage = Stage::Syncing;
                self.pending = self.work.len();
                (0u32..)
                    .zip(&self.work)
                    .map(|(tag, (osd, _))| Action::Sync { tag, osd: *osd })
                    .collect()
            }
            (Stage::Syncing | Stage::Stabilizing, Event::Sub { tag, result }) => {
                if self.pending == 0 || tag as usize >= self.work.len() {
                    return Vec::new();
                }
                if let Err(e) = result {
                    self.errno.get_or_insert(e);
                    self.failed.push(self.work[tag as usize].0);
                }
                self.pending -= 1;
                if self.pending > 0 {
                    return Vec::new();
                }
                if self.errno.is_some() || self.stage == Stage::Stabilizing {
                    return self.finish();
                }
                self.stage = Stage::Stabilizing;
                self.pending = self.work.len();
                (0u32..)
                    .zip(&self.work)
                    .map(|(tag, (osd, list))| Action::Stabilize {
                        tag,
                        osd: *osd,
                        versions: list.clone(),
                    })
                    .collect()
            }
            (Stage::Idle | Stage::Syncing | Stage::Stabilizing, Event::Abort(e)) => {
                // Which OSDs the writes reached is unknown: every PG peers again.
                self.errno.get_or_insert(e);
                self.failed = self.work.iter().map(|(osd, _)| *osd).collect();
                self.finish()
            }
            _ => Vec::new(),
        }
    }

    /// The reply, preceded on failure by every PG's writes given back.
    fn finish(&mut self) -> Vec<Action> {
        self.stage = Stage::Done;
        let Some(e) = self.errno else {
            return vec![Action::Reply(Ok(()))];
        };
        let failed = std::mem::take(&mut self.failed);
        let mut out: Vec<Action> = std::mem::take(&mut self.taken)
            .into_iter()
            .map(|(pg, dirty)| {
                let repeer = dirty.keys().any(|o| failed.contains(o));
                Action::GiveBack { pg, dirty, repeer }
            })
            .collect();
        out.push(Action::Reply(Err(e)));
        out
    }
}

#[cfg(test)]
mod tests {
    use vitastor_blockstore::{ObjVerId, ObjectId};
    use vitastor_layout::{OsdNum, PgId};
    use vitastor_protocol::errno::Errno;

    use super::{Action, Event, SyncOp};
    use crate::pg::Dirty;

    fn ov(stripe: u64, version: u64) -> ObjVerId {
        ObjVerId::new(ObjectId::new(1 << 48 | 1, stripe << 17), version)
    }

    fn pg(n: u32) -> PgId {
        (1, n).into()
    }

    fn dirty(entries: &[(u64, &[ObjVerId])]) -> Dirty {
        entries
            .iter()
            .map(|(o, l)| (OsdNum(*o), l.to_vec()))
            .collect()
    }

    /// PG 1 wrote to OSDs 1 and 2, PG 2 to OSDs 1 and 3; PG 1's object 0 twice.
    fn two_pgs() -> [(PgId, Dirty); 2] {
        [
            (
                pg(1),
                dirty(&[
                    (1, &[ov(0, 2), ov(0, 1), ov(0, 2)]),
                    (2, &[ov(0, 1), ov(0, 2)]),
                ]),
            ),
            (pg(2), dirty(&[(1, &[ov(1, 1)]), (3, &[ov(1, 1)])])),
        ]
    }

    fn sub(tag: u32, result: Result<(), Errno>) -> Event {
        Event::Sub { tag, result }
    }

    #[test]
    fn nothing_to_sync_is_acknowledged_at_once() {
        let mut s = SyncOp::new(vec![(pg(1), Dirty::new())]);
        assert_eq!(s.advance(Event::Start), [Action::Reply(Ok(()))]);
        assert!(s.is_done());
    }

    #[test]
    fn every_osd_syncs_then_stabilizes_exactly_its_versions_then_the_client_hears() {
        let mut s = SyncOp::new(two_pgs().to_vec());
        assert_eq!(
            s.advance(Event::Start),
            [
                Action::Sync {
                    tag: 0,
                    osd: OsdNum(1)
                },
                Action::Sync {
                    tag: 1,
                    osd: OsdNum(2)
                },
                Action::Sync {
                    tag: 2,
                    osd: OsdNum(3)
                },
            ]
        );
        // No stabilize before the last sync: a version is made stable only once durable
        // everywhere.
        assert!(s.advance(sub(2, Ok(()))).is_empty());
        assert!(s.advance(sub(0, Ok(()))).is_empty());
        assert_eq!(
            s.advance(sub(1, Ok(()))),
            [
                Action::Stabilize {
                    tag: 0,
                    osd: OsdNum(1),
                    versions: vec![ov(0, 1), ov(0, 2), ov(1, 1)],
                },
                Action::Stabilize {
                    tag: 1,
                    osd: OsdNum(2),
                    versions: vec![ov(0, 1), ov(0, 2)],
                },
                Action::Stabilize {
                    tag: 2,
                    osd: OsdNum(3),
                    versions: vec![ov(1, 1)],
                },
            ]
        );
        assert!(s.advance(sub(0, Ok(()))).is_empty());
        assert!(s.advance(sub(1, Ok(()))).is_empty());
        assert!(!s.is_done());
        assert_eq!(s.advance(sub(2, Ok(()))), [Action::Reply(Ok(()))]);
        assert!(s.is_done());
    }

    #[test]
    fn a_failed_local_sync_gives_every_write_back_and_repeers_the_pgs_that_used_that_osd() {
        let mut s = SyncOp::new(two_pgs().to_vec());
        s.advance(Event::Start);
        // OSD 2 (PG 1 only) fails; the others succeed. Nothing is stabilized.
        assert!(s.advance(sub(1, Err(Errno::EIO))).is_empty());
        assert!(s.advance(sub(0, Ok(()))).is_empty());
        let [pg1, pg2] = two_pgs().map(|(_, d)| d);
        assert_eq!(
            s.advance(sub(2, Ok(()))),
            [
                Action::GiveBack {
                    pg: pg(1),
                    dirty: pg1,
                    repeer: true,
                },
                Action::GiveBack {
                    pg: pg(2),
                    dirty: pg2,
                    repeer: false,
                },
                Action::Reply(Err(Errno::EIO)),
            ]
        );
        assert!(s.is_done());
    }

    #[test]
    fn a_peer_lost_while_stabilizing_fails_the_sync_with_the_first_error() {
        let mut s = SyncOp::new(two_pgs().to_vec());
        s.advance(Event::Start);
        for tag in 0..3 {
            s.advance(sub(tag, Ok(())));
        }
        assert!(s.advance(sub(2, Err(Errno::EPIPE))).is_empty());
        assert!(s.advance(sub(0, Err(Errno::ENOSPC))).is_empty());
        let out = s.advance(sub(1, Ok(())));
        let repeered: Vec<(PgId, bool)> = out
            .iter()
            .filter_map(|a| match a {
                Action::GiveBack { pg, repeer, .. } => Some((*pg, *repeer)),
                _ => None,
            })
            .collect();
        // OSD 1 failed too, and both PGs wrote to it.
        assert_eq!(repeered, [(pg(1), true), (pg(2), true)]);
        assert_eq!(out.last(), Some(&Action::Reply(Err(Errno::EPIPE))));
    }

    #[test]
    fn an_aborted_sync_gives_every_write_back_and_repeers_every_pg() {
        let mut s = SyncOp::new(two_pgs().to_vec());
        s.advance(Event::Start);
        s.advance(sub(0, Ok(())));
        let out = s.advance(Event::Abort(Errno::EPIPE));
        let [pg1, pg2] = two_pgs().map(|(_, d)| d);
        assert_eq!(
            out,
            [
                Action::GiveBack {
                    pg: pg(1),
                    dirty: pg1,
                    repeer: true,
                },
                Action::GiveBack {
                    pg: pg(2),
                    dirty: pg2,
                    repeer: true,
                },
                Action::Reply(Err(Errno::EPIPE)),
            ]
        );
        assert!(s.advance(sub(1, Ok(()))).is_empty());
    }

    #[test]
    fn late_or_unknown_results_change_nothing() {
        let mut s = SyncOp::new(vec![(pg(1), dirty(&[(1, &[ov(0, 1)])]))]);
        assert!(s.advance(sub(0, Ok(()))).is_empty(), "before the start");
        assert_eq!(s.advance(Event::Start).len(), 1);
        assert!(
            s.advance(sub(7, Err(Errno::EIO))).is_empty(),
            "no such sub-op"
        );
        assert_eq!(s.advance(sub(0, Ok(()))).len(), 1);
        assert_eq!(s.advance(sub(0, Ok(()))), [Action::Reply(Ok(()))]);
        assert!(
            s.advance(sub(0, Err(Errno::EIO))).is_empty(),
            "after the reply"
        );
        assert!(s.advance(Event::Start).is_empty());
    }
}
