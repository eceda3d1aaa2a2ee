//! One peering round of a PG on its primary, as a state machine: once the PG is claimed it
//! connects to the peers not connected yet and waits until every peer is connected or has
//! failed (a connect or handshake that times out is a failure: the peer table drops it), then
//! declares the PG incomplete (too few live members) or lists the PG's objects on every
//! reachable peer, rolls back unstable versions that cannot be trusted (a version number given
//! twice, see [`crate::pg::untrusted_unstable`]; EC: torn stripes), stabilizes the other
//! unstable versions (SEC_SYNC, then SEC_STABILIZE, on each OSD holding such versions), and
//! declares the PG active with its map of degraded and misplaced objects — or starts over
//! when a step failed or something changed meanwhile.
//!
//! This module does no I/O and never touches the server: [`PeeringRound::advance`] takes an
//! [`Event`] and returns the [`Action`]s `peering.rs` carries out. Every reply carries the
//! round's epoch and its OSD: a reply of another round, or one the round does not wait for,
//! changes nothing.
//!
//! What it must never do: declare a PG active from an incomplete set of listings, or from
//! listings of an earlier round.

use std::collections::{BTreeMap, BTreeSet};

use vitastor_blockstore::ObjVerId;
use vitastor_layout::OsdNum;

use crate::ec::geometry::Geometry;
use crate::ec::peer::{Lost, Peered};
use crate::pg::{classify, untrusted_unstable, ObjectMap};

/// Where the connection to a peer stands when the round starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Connected and past the handshake.
    Ready,
    /// A connection is being made (for another PG, or earlier).
    Connecting,
    /// No connection: the round asks for one.
    Absent,
}

/// What the executor knows once the PG is claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// This OSD.
    pub me: OsdNum,
    /// Every other peer that may hold the PG's data, and its connection.
    pub peers: BTreeMap<OsdNum, Link>,
    /// The members of the current set (reachable or not).
    pub members: Vec<OsdNum>,
    /// The pool's `pg_minsize`.
    pub pg_minsize: usize,
    /// EC/XOR PGs: the stripe shape and the set by position (`OsdNum(0)`: empty slot).
    pub ec: Option<(Geometry, Vec<OsdNum>)>,
}

/// A listing: stable versions, unstable versions.
pub type Listing = (Vec<ObjVerId>, Vec<ObjVerId>);

/// What moves a round forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The PG's `pg/state` is granted: the round connects to its peers.
    Claimed(Claimed),
    /// The connection to `osd` is ready.
    PeerUp(OsdNum),
    /// The connection to `osd` failed, timed out or was lost (or none can be made).
    PeerDown(OsdNum),
    /// `osd` answered the listing of round `epoch` (`None`: it failed).
    Listed {
        /// The OSD.
        osd: OsdNum,
        /// The round the listing was sent in.
        epoch: u64,
        /// The listing.
        listing: Option<Listing>,
    },
    /// `osd` answered the sync or stabilize of round `epoch`.
    Stabilized {
        /// The OSD.
        osd: OsdNum,
        /// The round.
        epoch: u64,
        /// It succeeded.
        ok: bool,
    },
    /// Something the round depends on changed (a peer, the set, the history): start over
    /// once the current step is done.
    Repeer,
}

/// What the executor does for a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Connect to `osd`; if no connection can even be started, answer with
    /// [`Event::PeerDown`].
    Connect {
        /// The peer.
        osd: OsdNum,
    },
    /// Every peer is connected or failed: these OSDs (this one included) are the PG's live
    /// OSDs for this round.
    Live(BTreeSet<OsdNum>),
    /// Too few members are reachable: the PG is incomplete until the cluster changes.
    Incomplete {
        /// Live members.
        live_members: usize,
    },
    /// The PG is listing (report it).
    Listing,
    /// List the PG's objects on `osd` (this OSD's store when it is this OSD).
    List {
        /// Where.
        osd: OsdNum,
    },
    /// The PG stabilizes what the listings found unstable.
    Stabilizing,
    /// Sync `osd`, so its unstable versions can be stabilized.
    Sync {
        /// Where.
        osd: OsdNum,
    },
    /// Roll back `list` on `osd`: EC/XOR parts of versions no `k` parts hold, and (any
    /// PG) unstable versions a stable version elsewhere makes untrustworthy.
    Rollback {
        /// Where.
        osd: OsdNum,
        /// Part versions to go back to.
        list: Vec<ObjVerId>,
    },
    /// EC/XOR PGs: these objects' newest stable versions are on fewer than `k` parts, so
    /// they cannot be read: the PG is incomplete until more OSDs come back.
    Lost(Vec<Lost>),
    /// Stabilize `list` on `osd`.
    Stabilize {
        /// Where.
        osd: OsdNum,
        /// The unstable versions it listed.
        list: Vec<ObjVerId>,
    },
    /// A step failed or something changed: peer again from the claim.
    Restart,
    /// Every listing is in and nothing is unstable: the PG is active with `objects`.
    Active {
        /// The degraded and misplaced objects.
        objects: Box<ObjectMap>,
        /// Versions listed per OSD (for the log).
        listed: Vec<(OsdNum, usize)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Listing,
    RollingBack,
    Syncing,
    Stabilizing,
    Done,
}

/// One peering round. See the module docs.
#[derive(Debug)]
pub struct PeeringRound {
    epoch: u64,
    stage: Stage,
    members: Vec<OsdNum>,
    pg_minsize: usize,
    /// The PG's peers other than this OSD.
    peers: BTreeSet<OsdNum>,
    /// Peers connected so far, this OSD included.
    ready: BTreeSet<OsdNum>,
    /// OSDs whose answer the current step waits for.
    waiting: BTreeSet<OsdNum>,
    /// Each OSD's listing (stable, unstable); replicated PGs drop what they roll back.
    listings: BTreeMap<OsdNum, Listing>,
    /// Unstable versions to sync and stabilize, by OSD.
    unstable: BTreeMap<OsdNum, Vec<ObjVerId>>,
    ec: Option<(Geometry, Vec<OsdNum>)>,
    /// EC/XOR PGs: what peering decided, once every listing is in.
    ec_peered: Option<Peered>,
    failed: bool,
    repeer: bool,
    claimed: bool,
}

impl PeeringRound {
    /// A round numbered `epoch` (unique on the server), waiting for its peers.
    pub fn new(epoch: u64) -> PeeringRound {
        PeeringRound {
            epoch,
            stage: Stage::Connecting,
            members: Vec::new(),
            pg_minsize: 0,
            peers: BTreeSet::new(),
            ready: BTreeSet::new(),
            waiting: BTreeSet::new(),
            listings: BTreeMap::new(),
            unstable: BTreeMap::new(),
            ec: None,
            ec_peered: None,
            failed: false,
            repeer: false,
            claimed: false,
        }
    }

    /// The round's epoch: its sub-ops carry it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Takes one event; returns what to do.
    pub fn advance(&mut self, event: Event) -> Vec<Action> {
        match (self.stage, event) {
            (Stage::Done, _) => Vec::new(),
            (_, Event::Repeer) => {
                self.repeer = true;
                Vec::new()
            }
            (Stage::Connecting, Event::Claimed(claim)) if !self.claimed => self.claim(claim),
            // Any peer of the PG ready when the round starts is live, also one that failed
            // and was connected again meanwhile (for another PG).
            (Stage::Connecting, Event::PeerUp(osd)) if self.peers.contains(&osd) => {
                self.ready.insert(osd);
                self.waiting.remove(&osd);
                self.maybe_start()
            }
            (Stage::Connecting, Event::PeerDown(osd)) if self.peers.contains(&osd) => {
                self.ready.remove(&osd);
                self.waiting.remove(&osd);
                self.maybe_start()
            }
            (
                Stage::Listing,
                Event::Listed {
                    osd,
                    epoch,
                    listing,
                },
            ) if epoch == self.epoch && self.waiting.remove(&osd) => {
                match listing {
                    Some(l) => {
                        self.listings.insert(osd, l);
                    }
                    None => self.failed = true,
                }
                if !self.waiting.is_empty() {
                    return Vec::new();
                }
                if self.failed || self.repeer {
                    return self.restart();
                }
                if self.ec.is_some() {
                    return self.ec_settle();
                }
                self.settle()
            }
            (
                stage @ (Stage::RollingBack | Stage::Syncing | Stage::Stabilizing),
                Event::Stabilized { osd, epoch, ok },
            ) if epoch == self.epoch && self.waiting.remove(&osd) => {
                self.failed |= !ok;
                if !self.waiting.is_empty() {
                    return Vec::new();
                }
                if self.failed || self.repeer {
                    return self.restart();
                }
                if stage == Stage::RollingBack {
                    if self.unstable.is_empty() {
                        return self.active();
                    }
                    return self.stab_round(Stage::Syncing);
                }
                if stage == Stage::Syncing {
                    return self.stab_round(Stage::Stabilizing);
                }
                self.unstable.clear();
                self.active()
            }
            _ => Vec::new(),
        }
    }

    fn claim(&mut self, claim: Claimed) -> Vec<Action> {
        self.claimed = true;
        self.ec = claim.ec;
        self.members = claim.members;
        self.pg_minsize = claim.pg_minsize;
        self.ready.insert(claim.me);
        let mut out = Vec::new();
        for (osd, link) in claim.peers {
            if osd == claim.me {
                continue;
            }
            self.peers.insert(osd);
            match link {
                Link::Ready => {
                    self.ready.insert(osd);
                }
                Link::Connecting => {
                    self.waiting.insert(osd);
                }
                Link::Absent => {
                    self.waiting.insert(osd);
                    out.push(Action::Connect { osd });
                }
            }
        }
        out.extend(self.maybe_start());
        out
    }

    /// Starts listing once no peer is still connecting.
    fn maybe_start(&mut self) -> Vec<Action> {
        if !self.waiting.is_empty() {
            return Vec::new();
        }
        let live = std::mem::take(&mut self.ready);
        let live_members: Vec<OsdNum> = self
            .members
            .iter()
            .copied()
            .filter(|m| live.contains(m))
            .collect();
        let mut out = vec![Action::Live(live.clone())];
        if live_members.len() < self.pg_minsize {
            self.stage = Stage::Done;
            out.push(Action::Incomplete {
                live_members: live_members.len(),
            });
            return out;
        }
        self.stage = Stage::Listing;
        self.members = live_members;
        self.waiting = live.clone();
        out.push(Action::Listing);
        out.extend(live.into_iter().map(|osd| Action::List { osd }));
        out
    }

    fn stab_round(&mut self, stage: Stage) -> Vec<Action> {
        self.stage = stage;
        self.waiting = self.unstable.keys().copied().collect();
        self.unstable
            .iter()
            .map(|(&osd, list)| match stage {
                Stage::Syncing => Action::Sync { osd },
                _ => Action::Stabilize {
                    osd,
                    list: list.clone(),
                },
            })
            .collect()
    }

    fn restart(&mut self) -> Vec<Action> {
        self.stage = Stage::Done;
        vec![Action::Restart]
    }

    /// EC/XOR PGs, every listing in: settle each object, then roll back, sync and
    /// stabilize what that needs before going active.
    fn ec_settle(&mut self) -> Vec<Action> {
        let Some((geo, set)) = &self.ec else {
            return self.restart();
        };
        let live: BTreeSet<OsdNum> = self.members.iter().copied().collect();
        let mut peered = crate::ec::peer::classify(geo, set, &live, &self.listings);
        if !peered.lost.is_empty() {
            self.stage = Stage::Done;
            return vec![Action::Lost(std::mem::take(&mut peered.lost))];
        }
        self.unstable = std::mem::take(&mut peered.stabilize);
        let rollback = std::mem::take(&mut peered.rollback);
        self.ec_peered = Some(peered);
        self.roll_back(rollback)
    }

    /// Replicated PGs, every listing in: unstable versions that a stable version elsewhere
    /// makes untrustworthy are rolled back ([`crate::pg::untrusted_unstable`]); the others,
    /// left by a primary that stopped before a SYNC, are kept (synced, then stabilized), as
    /// a disk cache that persisted them would.
    fn settle(&mut self) -> Vec<Action> {
        let rollback = untrusted_unstable(&self.listings);
        for (osd, list) in &rollback {
            if let Some((_, unstable)) = self.listings.get_mut(osd) {
                let back_to: BTreeMap<_, _> = list.iter().map(|ov| (ov.oid, ov.version)).collect();
                unstable.retain(|ov| back_to.get(&ov.oid).is_none_or(|&v| ov.version <= v));
            }
        }
        self.unstable = self
            .listings
            .iter()
            .filter(|(_, (_, unstable))| !unstable.is_empty())
            .map(|(&osd, (_, unstable))| (osd, unstable.clone()))
            .collect();
        self.roll_back(rollback)
    }

    /// Sends `rollback`, then syncs and stabilizes what is unstable, then goes active (each
    /// step only when there is something to do).
    fn roll_back(&mut self, rollback: BTreeMap<OsdNum, Vec<ObjVerId>>) -> Vec<Action> {
        if rollback.is_empty() && self.unstable.is_empty() {
            return self.active();
        }
        let mut out = vec![Action::Stabilizing];
        if rollback.is_empty() {
            out.extend(self.stab_round(Stage::Syncing));
            return out;
        }
        self.stage = Stage::RollingBack;
        self.waiting = rollback.keys().copied().collect();
        out.extend(
            rollback
                .into_iter()
                .map(|(osd, list)| Action::Rollback { osd, list }),
        );
        out
    }

    fn active(&mut self) -> Vec<Action> {
        self.stage = Stage::Done;
        if let Some(peered) = self.ec_peered.take() {
            let listed = self
                .listings
                .iter()
                .map(|(o, l)| (*o, l.0.len() + l.1.len()))
                .collect();
            return vec![Action::Active {
                objects: Box::new(peered.objects),
                listed,
            }];
        }
        let listings: BTreeMap<OsdNum, Vec<ObjVerId>> = std::mem::take(&mut self.listings)
            .into_iter()
            .map(|(osd, (mut stable, unstable))| {
                stable.extend(unstable);
                (osd, stable)
            })
            .collect();
        let listed = listings.iter().map(|(o, l)| (*o, l.len())).collect();
        vec![Action::Active {
            objects: Box::new(classify(&self.members, &listings)),
            listed,
        }]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vitastor_blockstore::{ObjVerId, ObjectId};
    use vitastor_layout::OsdNum;

    use super::{Action, Claimed, Event, Link, Listing, PeeringRound};

    const EPOCH: u64 = 5;

    fn ov(stripe: u64, version: u64) -> ObjVerId {
        ObjVerId::new(ObjectId::new(1 << 48, stripe), version)
    }

    fn live(osds: &[u64]) -> Action {
        Action::Live(osds.iter().map(|&o| OsdNum(o)).collect())
    }

    /// This is OSD 1; the set is OSDs 1, 2 and 3 (pg_minsize 2); OSD 7 holds history.
    fn claimed(peers: &[(u64, Link)]) -> Event {
        Event::Claimed(Claimed {
            me: OsdNum(1),
            peers: peers
                .iter()
                .map(|&(o, l)| (OsdNum(o), l))
                .collect::<BTreeMap<_, _>>(),
            members: [1, 2, 3].map(OsdNum).to_vec(),
            pg_minsize: 2,
            ec: None,
        })
    }

    /// OSDs 1 and 2 (members) and 7 (history) are reachable, 3 is not.
    fn started() -> PeeringRound {
        let mut r = PeeringRound::new(EPOCH);
        let out = r.advance(claimed(&[
            (1, Link::Ready),
            (2, Link::Ready),
            (3, Link::Connecting),
            (7, Link::Ready),
        ]));
        assert_eq!(out, []);
        let out = r.advance(Event::PeerDown(OsdNum(3)));
        assert_eq!(
            out,
            [
                live(&[1, 2, 7]),
                Action::Listing,
                Action::List { osd: OsdNum(1) },
                Action::List { osd: OsdNum(2) },
                Action::List { osd: OsdNum(7) }
            ]
        );
        r
    }

    #[test]
    fn absent_peers_are_connected_and_listing_waits_for_every_answer() {
        let mut r = PeeringRound::new(EPOCH);
        let out = r.advance(claimed(&[
            (1, Link::Ready),
            (2, Link::Absent),
            (3, Link::Absent),
            (7, Link::Connecting),
        ]));
        assert_eq!(
            out,
            [
                Action::Connect { osd: OsdNum(2) },
                Action::Connect { osd: OsdNum(3) }
            ]
        );
        assert_eq!(r.advance(Event::PeerUp(OsdNum(2))), []);
        // Twice, or from an OSD that is not the PG's: nothing moves.
        assert_eq!(r.advance(Event::PeerUp(OsdNum(2))), []);
        assert_eq!(r.advance(Event::PeerUp(OsdNum(9))), []);
        assert_eq!(r.advance(Event::PeerDown(OsdNum(9))), []);
        // osd.3's connect fails (or cannot start); then another PG connects it again.
        assert_eq!(r.advance(Event::PeerDown(OsdNum(3))), []);
        assert_eq!(r.advance(Event::PeerUp(OsdNum(3))), []);
        // osd.7's connect times out: the round starts with osd.3, ready by then.
        let out = r.advance(Event::PeerDown(OsdNum(7)));
        assert_eq!(
            out,
            [
                live(&[1, 2, 3]),
                Action::Listing,
                Action::List { osd: OsdNum(1) },
                Action::List { osd: OsdNum(2) },
                Action::List { osd: OsdNum(3) }
            ]
        );
        // Connection news after the round started are the executor's business, not the round's.
        assert_eq!(r.advance(Event::PeerUp(OsdNum(3))), []);
        assert_eq!(r.advance(Event::PeerDown(OsdNum(2))), []);
    }

    #[test]
    fn with_every_peer_connected_listing_starts_at_once() {
        let mut r = PeeringRound::new(EPOCH);
        let out = r.advance(claimed(&[
            (1, Link::Ready),
            (2, Link::Ready),
            (3, Link::Ready),
        ]));
        assert_eq!(out[0], live(&[1, 2, 3]));
        assert_eq!(out[1], Action::Listing);
        assert_eq!(out.len(), 5);
        // A second claim event is not a second start.
        assert_eq!(r.advance(claimed(&[(1, Link::Ready)])), []);
    }

    #[test]
    fn a_peer_lost_before_the_round_starts_is_not_live() {
        let mut r = PeeringRound::new(EPOCH);
        r.advance(claimed(&[(2, Link::Ready), (3, Link::Connecting)]));
        assert_eq!(r.advance(Event::PeerDown(OsdNum(2))), []);
        // This OSD itself never drops out of its own round.
        assert_eq!(r.advance(Event::PeerDown(OsdNum(1))), []);
        let out = r.advance(Event::PeerUp(OsdNum(3)));
        assert_eq!(out[0], live(&[1, 3]));
        assert_eq!(out[1], Action::Listing);
    }

    #[test]
    fn too_few_members_connected_is_incomplete() {
        let mut r = PeeringRound::new(EPOCH);
        let out = r.advance(claimed(&[
            (2, Link::Absent),
            (3, Link::Absent),
            (7, Link::Ready),
        ]));
        assert_eq!(out.len(), 2);
        assert_eq!(r.advance(Event::PeerDown(OsdNum(2))), []);
        assert_eq!(
            r.advance(Event::PeerDown(OsdNum(3))),
            [live(&[1, 7]), Action::Incomplete { live_members: 1 }]
        );
        assert_eq!(r.advance(Event::PeerUp(OsdNum(2))), []);
        assert_eq!(r.advance(listed(1, EPOCH, Some((vec![], vec![])))), []);
    }

    fn listed(osd: u64, epoch: u64, listing: Option<Listing>) -> Event {
        Event::Listed {
            osd: OsdNum(osd),
            epoch,
            listing,
        }
    }

    fn stabilized(osd: u64, epoch: u64, ok: bool) -> Event {
        Event::Stabilized {
            osd: OsdNum(osd),
            epoch,
            ok,
        }
    }

    fn objects(out: &[Action]) -> (usize, usize) {
        match out {
            [Action::Active { objects, .. }] => (objects.degraded.len(), objects.misplaced.len()),
            other => panic!("not active: {other:?}"),
        }
    }

    #[test]
    fn every_listing_in_makes_the_pg_active_with_its_object_map() {
        let mut r = started();
        assert_eq!(
            r.advance(listed(1, EPOCH, Some((vec![ov(0, 2)], vec![])))),
            []
        );
        assert_eq!(
            r.advance(listed(7, EPOCH, Some((vec![ov(1, 1)], vec![])))),
            []
        );
        // Object 0 is missing on member 2, object 1 lives only outside the set.
        let out = r.advance(listed(2, EPOCH, Some((vec![], vec![]))));
        assert_eq!(objects(&out), (2, 0));
        let Action::Active { listed, .. } = &out[0] else {
            unreachable!()
        };
        assert_eq!(listed, &[(OsdNum(1), 1), (OsdNum(2), 0), (OsdNum(7), 1)]);
    }

    #[test]
    fn stale_epoch_and_repeated_listings_are_dropped() {
        let mut r = started();
        // A reply of an earlier round, with an object nobody has now.
        assert_eq!(
            r.advance(listed(2, EPOCH - 1, Some((vec![ov(5, 99)], vec![])))),
            []
        );
        assert_eq!(r.advance(listed(1, EPOCH, Some((vec![], vec![])))), []);
        // The same OSD answering twice does not stand in for another.
        assert_eq!(r.advance(listed(1, EPOCH, Some((vec![], vec![])))), []);
        // An OSD the round never asked.
        assert_eq!(r.advance(listed(9, EPOCH, Some((vec![], vec![])))), []);
        assert_eq!(r.advance(listed(7, EPOCH, Some((vec![], vec![])))), []);
        let out = r.advance(listed(2, EPOCH, Some((vec![], vec![]))));
        assert_eq!(objects(&out), (0, 0));
    }

    #[test]
    fn a_member_failing_mid_round_restarts_once_the_step_is_done() {
        let mut r = started();
        assert_eq!(r.advance(listed(2, EPOCH, None)), []);
        assert_eq!(r.advance(listed(1, EPOCH, Some((vec![], vec![])))), []);
        assert_eq!(
            r.advance(listed(7, EPOCH, Some((vec![], vec![])))),
            [Action::Restart]
        );
        assert_eq!(r.advance(listed(2, EPOCH, Some((vec![], vec![])))), []);
    }

    #[test]
    fn a_change_during_the_round_restarts_it() {
        let mut r = started();
        assert_eq!(r.advance(Event::Repeer), []);
        for osd in [1, 2] {
            r.advance(listed(osd, EPOCH, Some((vec![], vec![]))));
        }
        assert_eq!(
            r.advance(listed(7, EPOCH, Some((vec![], vec![])))),
            [Action::Restart]
        );
    }

    #[test]
    fn unstable_versions_are_synced_then_stabilized_then_active() {
        let mut r = started();
        r.advance(listed(1, EPOCH, Some((vec![], vec![ov(0, 3)]))));
        r.advance(listed(7, EPOCH, Some((vec![], vec![]))));
        let out = r.advance(listed(2, EPOCH, Some((vec![ov(0, 2)], vec![ov(1, 1)]))));
        assert_eq!(
            out,
            [
                Action::Stabilizing,
                Action::Sync { osd: OsdNum(1) },
                Action::Sync { osd: OsdNum(2) }
            ]
        );
        assert_eq!(r.advance(stabilized(1, EPOCH - 1, true)), []);
        assert_eq!(r.advance(stabilized(1, EPOCH, true)), []);
        assert_eq!(r.advance(stabilized(1, EPOCH, true)), []);
        assert_eq!(
            r.advance(stabilized(2, EPOCH, true)),
            [
                Action::Stabilize {
                    osd: OsdNum(1),
                    list: vec![ov(0, 3)]
                },
                Action::Stabilize {
                    osd: OsdNum(2),
                    list: vec![ov(1, 1)]
                }
            ]
        );
        r.advance(stabilized(1, EPOCH, true));
        let out = r.advance(stabilized(2, EPOCH, true));
        // Object 0: 3 on osd 1, 2 on osd 2 (degraded); object 1 on osd 2 only (degraded).
        assert_eq!(objects(&out), (2, 0));
    }

    /// OSDs 1, 2 and 3 (every member) are reachable.
    fn started_whole() -> PeeringRound {
        let mut r = PeeringRound::new(EPOCH);
        let out = r.advance(claimed(&[
            (1, Link::Ready),
            (2, Link::Ready),
            (3, Link::Ready),
        ]));
        assert_eq!(out[0], live(&[1, 2, 3]));
        r
    }

    /// A write of version 3 reached only osd 3 (unstable) before its primary died; osd 3
    /// went down, the PG went on without it and gave the next write of the object version
    /// 3 again, with other data, stable on osds 1 and 2. osd 3 is back: its 3 is not that
    /// version, so it is rolled back (to its stable 2) and the object recovered onto it.
    #[test]
    fn an_unstable_version_that_others_hold_stable_is_rolled_back_and_recovered() {
        let mut r = started_whole();
        r.advance(listed(1, EPOCH, Some((vec![ov(0, 3)], vec![]))));
        r.advance(listed(2, EPOCH, Some((vec![ov(0, 3)], vec![]))));
        let out = r.advance(listed(3, EPOCH, Some((vec![ov(0, 2)], vec![ov(0, 3)]))));
        assert_eq!(
            out,
            [
                Action::Stabilizing,
                Action::Rollback {
                    osd: OsdNum(3),
                    list: vec![ov(0, 2)]
                }
            ]
        );
        let out = r.advance(stabilized(3, EPOCH, true));
        let [Action::Active { objects, .. }] = &out[..] else {
            panic!("not active: {out:?}")
        };
        let st = &objects.objects[&ov(0, 0).oid];
        assert_eq!(
            (st.version, st.holders.clone(), st.stale.clone()),
            (3, vec![OsdNum(1), OsdNum(2)], vec![OsdNum(3)])
        );
        assert!(objects.degraded.contains(&ov(0, 0).oid));
    }

    /// The same on a member of the set, with no stable version of its own below: it is
    /// rolled back to nothing and the object is degraded on it.
    #[test]
    fn an_unstable_version_on_a_member_below_a_stable_one_elsewhere_is_rolled_back() {
        let mut r = started();
        r.advance(listed(1, EPOCH, Some((vec![ov(0, 4)], vec![]))));
        r.advance(listed(7, EPOCH, Some((vec![], vec![]))));
        let out = r.advance(listed(2, EPOCH, Some((vec![], vec![ov(0, 1), ov(0, 2)]))));
        assert_eq!(
            out,
            [
                Action::Stabilizing,
                Action::Rollback {
                    osd: OsdNum(2),
                    list: vec![ov(0, 0)]
                }
            ]
        );
        let out = r.advance(stabilized(2, EPOCH, true));
        let [Action::Active { objects, .. }] = &out[..] else {
            panic!("not active: {out:?}")
        };
        let st = &objects.objects[&ov(0, 0).oid];
        assert_eq!((st.version, st.holders.clone()), (4, vec![OsdNum(1)]));
        assert!(objects.degraded.contains(&ov(0, 0).oid));
    }

    /// A version unstable on the only OSD that has it, above everything stable, was never
    /// SYNCed: keeping it is allowed (as a disk cache that persisted it would), so it is
    /// stabilized and copied to the others; other objects' unstable versions are kept too
    /// while one is rolled back.
    #[test]
    fn an_unstable_version_above_every_stable_one_is_kept() {
        let mut r = started();
        r.advance(listed(1, EPOCH, Some((vec![ov(0, 2), ov(1, 5)], vec![]))));
        r.advance(listed(2, EPOCH, Some((vec![ov(0, 2)], vec![]))));
        let out = r.advance(listed(
            7,
            EPOCH,
            Some((vec![ov(0, 2), ov(1, 4)], vec![ov(0, 3), ov(1, 5)])),
        ));
        assert_eq!(
            out,
            [
                Action::Stabilizing,
                Action::Rollback {
                    osd: OsdNum(7),
                    list: vec![ov(1, 4)]
                }
            ]
        );
        assert_eq!(
            r.advance(stabilized(7, EPOCH, true)),
            [Action::Sync { osd: OsdNum(7) }]
        );
        assert_eq!(
            r.advance(stabilized(7, EPOCH, true)),
            [Action::Stabilize {
                osd: OsdNum(7),
                list: vec![ov(0, 3)]
            }]
        );
        let out = r.advance(stabilized(7, EPOCH, true));
        let [Action::Active { objects, .. }] = &out[..] else {
            panic!("not active: {out:?}")
        };
        let st0 = &objects.objects[&ov(0, 0).oid];
        assert_eq!((st0.version, st0.holders.clone()), (3, vec![OsdNum(7)]));
        let st1 = &objects.objects[&ov(1, 0).oid];
        assert_eq!((st1.version, st1.stale.clone()), (5, vec![OsdNum(7)]));
    }

    #[test]
    fn a_failed_stabilization_restarts() {
        let mut r = started();
        r.advance(listed(1, EPOCH, Some((vec![], vec![ov(0, 3)]))));
        r.advance(listed(2, EPOCH, Some((vec![], vec![]))));
        r.advance(listed(7, EPOCH, Some((vec![], vec![]))));
        assert_eq!(r.advance(stabilized(1, EPOCH, false)), [Action::Restart]);
    }
}
