//! Recovery of one EC/XOR object on the primary, as a state machine: once it holds the
//! object's lock it reads `k` parts of the current version (whole), rebuilds every part a
//! live position lacks (a data part from the others, a parity part re-encoded) and writes
//! each to its position as a stable version; then, when every position holds the object,
//! it removes the copies of parts sitting on other OSDs (delete, sync, stabilize), which
//! is how a changed set is rebalanced.
//!
//! Pure like [`crate::op_recover`]: [`EcRecoverOp::advance`] takes an [`Event`], returns
//! [`Action`]s; every sub-op has a tag unique over the op's life, so a late or repeated
//! result changes nothing.
//!
//! What it must never do: write a part rebuilt from fewer than `k` parts of one version, or
//! remove a copy before every position holds the object.

use vitastor_layout::OsdNum;
use vitastor_protocol::errno::Errno;

use super::codec::Codec;
use super::geometry::Geometry;
use super::read::{self, PartData, ReadPlan};

/// What the executor knows when the recovery gets its object lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The object's current version.
    pub version: u64,
    /// `(part, osd)` copies at that version.
    pub holders: Vec<(u32, OsdNum)>,
    /// `(part, osd)` copies at older versions.
    pub stale: Vec<(u32, OsdNum)>,
    /// The PG's set by position (`OsdNum(0)`: empty).
    pub set: Vec<OsdNum>,
    /// OSDs that can be read and written now (this one included).
    pub up: Vec<OsdNum>,
    /// This OSD.
    pub me: OsdNum,
    /// `no_rebalance` is set: copies elsewhere stay.
    pub no_rebalance: bool,
}

/// What moves a recovery forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The object lock is ours; `None`: the object needs no recovery any more.
    Locked(Option<Facts>),
    /// Read `tag` finished.
    Read {
        /// The sub-op.
        tag: u32,
        /// Its bitmap and bytes.
        result: Result<PartData, Errno>,
    },
    /// Write, delete, sync or stabilize `tag` finished.
    Sub {
        /// The sub-op.
        tag: u32,
        /// Its outcome.
        result: Result<(), Errno>,
    },
}

/// What the executor does for a recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read the whole of `part` at `version` on `osd` (bitmap included).
    Read {
        /// Sub-op tag.
        tag: u32,
        /// Part.
        part: u32,
        /// Where.
        osd: OsdNum,
        /// Version.
        version: u64,
    },
    /// Write the whole of `part` as stable `version` on `osd`: `bitmap` is a data part's
    /// bitmap or a parity part's attribute.
    Write {
        /// Sub-op tag.
        tag: u32,
        /// Part.
        part: u32,
        /// Where.
        osd: OsdNum,
        /// Version.
        version: u64,
        /// Its bytes.
        data: Vec<u8>,
        /// Its bitmap (attribute).
        bitmap: Vec<u8>,
    },
    /// The parts written hold the version now.
    Rebuilt {
        /// `(part, osd)` written.
        parts: Vec<(u32, OsdNum)>,
    },
    /// Delete `part` on `osd` (a copy off its position) as `version`.
    Delete {
        /// Sub-op tag.
        tag: u32,
        /// Part.
        part: u32,
        /// Where.
        osd: OsdNum,
        /// The version the delete creates.
        version: u64,
    },
    /// SEC_SYNC `osd`.
    Sync {
        /// Sub-op tag.
        tag: u32,
        /// Where.
        osd: OsdNum,
    },
    /// SEC_STABILIZE `part` at `version` on `osd`.
    Stabilize {
        /// Sub-op tag.
        tag: u32,
        /// Part.
        part: u32,
        /// Where.
        osd: OsdNum,
        /// Version.
        version: u64,
    },
    /// Every position holds the object and no copy is elsewhere: it leaves the map.
    Clean,
    /// Every live position holds the object, copies elsewhere stay (a position is down or
    /// a copy's OSD unreachable: the object waits for the next peering; `no_rebalance`:
    /// `misplaced`, moved once rebalancing is allowed).
    Keep {
        /// Listed as misplaced.
        misplaced: bool,
    },
    /// The attempt failed (the executor backs off); `repeer`: a peer was lost.
    Failed {
        /// Why.
        errno: Errno,
        /// Peer again.
        repeer: bool,
    },
    /// Release the lock; `succeeded` resets the object's backoff.
    Finish {
        /// The object needs nothing more.
        succeeded: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Reading,
    Writing,
    Deleting,
    Syncing,
    Stabilizing,
    Done,
}

/// One EC object's recovery. See the module docs.
#[derive(Debug)]
pub struct EcRecoverOp {
    geo: Geometry,
    stage: Stage,
    facts: Option<Facts>,
    plan: Option<ReadPlan>,
    replies: Vec<Option<PartData>>,
    targets: Vec<u32>,
    /// Copies off their position: `(part, osd)`.
    outside: Vec<(u32, OsdNum)>,
    /// Outstanding sub-op tags of the current stage, and the next free tag.
    pending: Vec<u32>,
    next_tag: u32,
    failed: Option<Errno>,
}

impl EcRecoverOp {
    /// A recovery waiting for its lock.
    pub fn new(geo: Geometry) -> EcRecoverOp {
        EcRecoverOp {
            geo,
            stage: Stage::Waiting,
            facts: None,
            plan: None,
            replies: Vec::new(),
            targets: Vec::new(),
            outside: Vec::new(),
            pending: Vec::new(),
            next_tag: 0,
            failed: None,
        }
    }

    /// The lock is released.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Whether sub-op `tag` is one of the reads.
    pub fn awaits_read(&self, tag: u32) -> bool {
        self.stage == Stage::Reading && self.pending.contains(&tag)
    }

    fn tags(&mut self, n: usize) -> Vec<u32> {
        let tags: Vec<u32> = (self.next_tag..self.next_tag + n as u32).collect();
        self.next_tag += n as u32;
        self.pending = tags.clone();
        tags
    }

    /// Takes one event; returns what to do.
    pub fn advance(&mut self, codec: &Codec, event: Event) -> Vec<Action> {
        match (self.stage, event) {
            (Stage::Waiting, Event::Locked(None)) => self.finish(Vec::new(), true),
            (Stage::Waiting, Event::Locked(Some(f))) => self.locked(f),
            (Stage::Reading, Event::Read { tag, result }) => {
                let Some(at) = self.pending.iter().position(|&t| t == tag) else {
                    return Vec::new();
                };
                self.pending.remove(at);
                let first = self.next_tag - self.replies.len() as u32;
                match result {
                    Ok(d) => self.replies[(tag - first) as usize] = Some(d),
                    Err(e) => {
                        self.failed.get_or_insert(e);
                    }
                }
                if !self.pending.is_empty() {
                    return Vec::new();
                }
                match self.failed {
                    Some(e) => self.fail(e),
                    None => self.write(codec),
                }
            }
            (
                stage @ (Stage::Writing | Stage::Deleting | Stage::Syncing | Stage::Stabilizing),
                Event::Sub { tag, result },
            ) => {
                let Some(at) = self.pending.iter().position(|&t| t == tag) else {
                    return Vec::new();
                };
                self.pending.remove(at);
                if let Err(e) = result {
                    self.failed.get_or_insert(e);
                }
                if !self.pending.is_empty() {
                    return Vec::new();
                }
                if let Some(e) = self.failed {
                    return self.fail(e);
                }
                match stage {
                    Stage::Writing => {
                        let set = self.set();
                        let parts = self.targets.iter().map(|&t| (t, set[t as usize])).collect();
                        let mut out = vec![Action::Rebuilt { parts }];
                        out.extend(self.cleanup());
                        out
                    }
                    Stage::Deleting => self.outside_round(Stage::Syncing),
                    Stage::Syncing => self.outside_round(Stage::Stabilizing),
                    _ => self.finish(vec![Action::Clean], true),
                }
            }
            _ => Vec::new(),
        }
    }

    fn set(&self) -> Vec<OsdNum> {
        self.facts.as_ref().map_or_else(Vec::new, |f| f.set.clone())
    }

    fn locked(&mut self, f: Facts) -> Vec<Action> {
        let n = self.geo.total_parts() as usize;
        if f.set.len() != n {
            return self.fail(Errno::EINVAL);
        }
        let up = |o: &OsdNum| f.up.contains(o);
        self.targets = (0..n as u32)
            .filter(|&i| {
                let o = f.set[i as usize];
                o.0 != 0 && up(&o) && !f.holders.contains(&(i, o))
            })
            .collect();
        self.outside = f
            .holders
            .iter()
            .chain(&f.stale)
            .filter(|&&(p, o)| f.set.get(p as usize) != Some(&o))
            .copied()
            .collect();
        self.outside.sort_unstable();
        self.outside.dedup();
        // A source per part: its own position first, any other holder that is up else (a
        // part being moved is read from where it was).
        let sources: Vec<Option<OsdNum>> = (0..n as u32)
            .map(|p| {
                let own = f.set[p as usize];
                if f.holders.contains(&(p, own)) && up(&own) {
                    return Some(own);
                }
                f.holders
                    .iter()
                    .find(|&&(q, o)| q == p && up(&o))
                    .map(|h| h.1)
            })
            .collect();
        let version = f.version;
        let me = f.me;
        self.facts = Some(f);
        if self.targets.is_empty() {
            return self.cleanup();
        }
        let reachable: Vec<bool> = sources.iter().map(Option::is_some).collect();
        let local = (0..n as u32).find(|&p| sources[p as usize] == Some(me));
        let full = vec![0..self.geo.block_size; self.geo.data_parts as usize];
        let plan = match read::plan(&self.geo, full, &reachable, local) {
            Ok(p) => p,
            Err(_) => return self.fail(Errno::EPIPE),
        };
        self.stage = Stage::Reading;
        self.replies = vec![None; plan.reads.len()];
        let tags = self.tags(plan.reads.len());
        let out = tags
            .into_iter()
            .zip(&plan.reads)
            .map(|(tag, r)| Action::Read {
                tag,
                part: r.part,
                osd: sources[r.part as usize].expect("planned from reachable parts"),
                version,
            })
            .collect();
        self.plan = Some(plan);
        out
    }

    fn write(&mut self, codec: &Codec) -> Vec<Action> {
        let Some(plan) = self.plan.take() else {
            return self.fail(Errno::EIO);
        };
        let replies: Vec<PartData> = self.replies.iter_mut().flat_map(Option::take).collect();
        let mut rebuilt = Vec::new();
        for &t in &self.targets {
            match plan.recover(codec, &replies, t) {
                Ok(d) => rebuilt.push((t, d)),
                Err(_) => return self.fail(Errno::EIO),
            }
        }
        let set = self.set();
        let version = self.facts.as_ref().map_or(0, |f| f.version);
        self.stage = Stage::Writing;
        let tags = self.tags(rebuilt.len());
        tags.into_iter()
            .zip(rebuilt)
            .map(|(tag, (part, d))| Action::Write {
                tag,
                part,
                osd: set[part as usize],
                version,
                data: d.data,
                bitmap: d.bitmap,
            })
            .collect()
    }

    /// Every live position holds the object: remove the copies elsewhere when every
    /// position is filled and up, else keep them.
    fn cleanup(&mut self) -> Vec<Action> {
        let Some(f) = &self.facts else {
            return self.finish(Vec::new(), true);
        };
        let whole = f.set.iter().all(|o| o.0 != 0 && f.up.contains(o));
        if self.outside.is_empty() {
            let action = if whole {
                Action::Clean
            } else {
                Action::Keep { misplaced: false }
            };
            return self.finish(vec![action], true);
        }
        let reachable = self.outside.iter().all(|(_, o)| f.up.contains(o));
        if !whole || !reachable || f.no_rebalance {
            let misplaced = whole && reachable && f.no_rebalance;
            return self.finish(vec![Action::Keep { misplaced }], true);
        }
        self.outside_round(Stage::Deleting)
    }

    fn outside_round(&mut self, stage: Stage) -> Vec<Action> {
        let version = self.facts.as_ref().map_or(0, |f| f.version) + 1;
        self.stage = stage;
        let mut osds: Vec<OsdNum> = self.outside.iter().map(|h| h.1).collect();
        osds.dedup();
        match stage {
            Stage::Syncing => {
                osds.sort_unstable();
                osds.dedup();
                let tags = self.tags(osds.len());
                tags.into_iter()
                    .zip(osds)
                    .map(|(tag, osd)| Action::Sync { tag, osd })
                    .collect()
            }
            _ => {
                let outside = self.outside.clone();
                let tags = self.tags(outside.len());
                tags.into_iter()
                    .zip(outside)
                    .map(|(tag, (part, osd))| match stage {
                        Stage::Deleting => Action::Delete {
                            tag,
                            part,
                            osd,
                            version,
                        },
                        _ => Action::Stabilize {
                            tag,
                            part,
                            osd,
                            version,
                        },
                    })
                    .collect()
            }
        }
    }

    fn fail(&mut self, errno: Errno) -> Vec<Action> {
        let repeer = errno == Errno::EPIPE && self.stage != Stage::Waiting;
        self.finish(vec![Action::Failed { errno, repeer }], false)
    }

    fn finish(&mut self, mut out: Vec<Action>, succeeded: bool) -> Vec<Action> {
        self.stage = Stage::Done;
        out.push(Action::Finish { succeeded });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> Geometry {
        Geometry::new(2, 1, 16384, 4096).unwrap()
    }

    fn osds(o: &[u64]) -> Vec<OsdNum> {
        o.iter().map(|&o| OsdNum(o)).collect()
    }

    fn facts(holders: &[(u32, u64)], set: &[u64], up: &[u64]) -> Facts {
        Facts {
            version: 7,
            holders: holders.iter().map(|&(p, o)| (p, OsdNum(o))).collect(),
            stale: Vec::new(),
            set: osds(set),
            up: osds(up),
            me: OsdNum(1),
            no_rebalance: false,
        }
    }

    /// Answers every read from `stored`, every other sub-op with success; returns every
    /// action.
    fn run(op: &mut EcRecoverOp, codec: &Codec, f: Facts, stored: &[PartData]) -> Vec<Action> {
        let mut all = Vec::new();
        let mut next = op.advance(codec, Event::Locked(Some(f)));
        while !next.is_empty() {
            let mut events = Vec::new();
            for a in &next {
                match a {
                    Action::Read { tag, part, .. } => events.push(Event::Read {
                        tag: *tag,
                        result: Ok(stored[*part as usize].clone()),
                    }),
                    Action::Write { tag, .. }
                    | Action::Delete { tag, .. }
                    | Action::Sync { tag, .. }
                    | Action::Stabilize { tag, .. } => events.push(Event::Sub {
                        tag: *tag,
                        result: Ok(()),
                    }),
                    _ => {}
                }
            }
            all.append(&mut next);
            for e in events {
                next.extend(op.advance(codec, e));
            }
        }
        all
    }

    #[test]
    fn a_lost_data_part_is_rebuilt_and_written_to_its_position() {
        let codec = Codec::xor(2).unwrap();
        let stored = read::tests::stripe(&geo(), &codec, 0);
        let mut op = EcRecoverOp::new(geo());
        let f = facts(&[(1, 2), (2, 3)], &[1, 2, 3], &[1, 2, 3]);
        let all = run(&mut op, &codec, f, &stored);
        let write = all
            .iter()
            .find_map(|a| match a {
                Action::Write {
                    part,
                    osd,
                    data,
                    bitmap,
                    version,
                    ..
                } => Some((*part, *osd, data.clone(), bitmap.clone(), *version)),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            write,
            (
                0,
                OsdNum(1),
                stored[0].data.clone(),
                stored[0].bitmap.clone(),
                7
            )
        );
        assert!(all.contains(&Action::Rebuilt {
            parts: vec![(0, OsdNum(1))]
        }));
        assert!(all.contains(&Action::Clean));
        assert_eq!(all.last(), Some(&Action::Finish { succeeded: true }));
    }

    #[test]
    fn a_moved_part_is_rebuilt_on_the_new_position_and_removed_from_the_old() {
        let codec = Codec::reed_solomon(2, 1).unwrap();
        let stored = read::tests::stripe(&geo(), &codec, 0);
        let mut op = EcRecoverOp::new(geo());
        // Part 2 moved from osd.4 to osd.3.
        let f = facts(&[(0, 1), (1, 2), (2, 4)], &[1, 2, 3], &[1, 2, 3, 4]);
        let all = run(&mut op, &codec, f, &stored);
        let parity = all.iter().find_map(|a| match a {
            Action::Write { part: 2, data, .. } => Some(data.clone()),
            _ => None,
        });
        assert_eq!(parity, Some(stored[2].data.clone()));
        let reads: Vec<u32> = all
            .iter()
            .filter_map(|a| match a {
                Action::Read { part, .. } => Some(*part),
                _ => None,
            })
            .collect();
        assert_eq!(reads, [0, 1], "the data parts, from their positions");
        assert!(all.contains(&Action::Delete {
            tag: 3,
            part: 2,
            osd: OsdNum(4),
            version: 8
        }));
        assert!(all.contains(&Action::Sync {
            tag: 4,
            osd: OsdNum(4)
        }));
        assert!(all.contains(&Action::Clean));
    }

    #[test]
    fn copies_elsewhere_stay_while_a_position_is_down() {
        let codec = Codec::xor(2).unwrap();
        let stored = read::tests::stripe(&geo(), &codec, 0);
        let mut op = EcRecoverOp::new(geo());
        let f = facts(&[(0, 1), (2, 4)], &[1, 2, 3], &[1, 3, 4]);
        let all = run(&mut op, &codec, f, &stored);
        assert!(all.iter().any(|a| matches!(
            a,
            Action::Write {
                part: 2,
                osd: OsdNum(3),
                ..
            }
        )));
        assert!(all.contains(&Action::Keep { misplaced: false }));
        assert!(!all.iter().any(|a| matches!(a, Action::Delete { .. })));
    }

    #[test]
    fn fewer_than_k_sources_fail_without_writing() {
        let codec = Codec::xor(2).unwrap();
        let mut op = EcRecoverOp::new(geo());
        let f = facts(&[(0, 1)], &[1, 2, 3], &[1, 2, 3]);
        let out = op.advance(&codec, Event::Locked(Some(f)));
        assert!(matches!(
            out[0],
            Action::Failed {
                errno: Errno::EPIPE,
                ..
            }
        ));
        assert!(op.is_done());
    }

    #[test]
    fn a_failed_read_ends_the_attempt() {
        let codec = Codec::xor(2).unwrap();
        let mut op = EcRecoverOp::new(geo());
        let f = facts(&[(1, 2), (2, 3)], &[1, 2, 3], &[1, 2, 3]);
        let reads = op.advance(&codec, Event::Locked(Some(f)));
        assert_eq!(reads.len(), 2);
        assert!(op
            .advance(
                &codec,
                Event::Read {
                    tag: 0,
                    result: Err(Errno::EIO)
                }
            )
            .is_empty());
        let out = op.advance(
            &codec,
            Event::Read {
                tag: 1,
                result: Ok(PartData::default()),
            },
        );
        assert_eq!(
            out,
            [
                Action::Failed {
                    errno: Errno::EIO,
                    repeer: false
                },
                Action::Finish { succeeded: false }
            ]
        );
    }
}
