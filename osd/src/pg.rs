//! One PG on its primary: lifecycle phase, the peers it works with, and the per-object map
//! that peering builds (which OSDs hold the current version of each object that is not
//! clean). PGs are ephemeral: nothing here is ever written to disk.
//!
//! This module is pure bookkeeping and decisions ([`classify`], [`Pg::state_names`]); it
//! sends nothing. The server drives the phases (see `peering.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use vitastor_blockstore::{ObjVerId, ObjectId};
use vitastor_layout::{OsdNum, PgConfigItem, PgId, PgStateName, PoolConfig};

use crate::ec::EcPool;
use crate::peering_round::{Listing, PeeringRound};

/// Where a PG is in its life on this OSD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for etcd to grant `pg/state` (the primary role).
    Claiming,
    /// Waiting for connections to the PG's up peers.
    Connecting,
    /// Listing objects on every reachable peer.
    Listing,
    /// Stabilizing unstable versions found by the listing.
    Stabilizing,
    /// Serving I/O.
    Active,
    /// Too few members are reachable; waits for a cluster change.
    Incomplete,
    /// Re-peering or stopping: new ops are refused, ops in flight finish first.
    Draining {
        /// After draining: stop the PG (true) or peer again (false).
        stop: bool,
        /// When stopping: delete `pg/state` (false when the lease or the key is gone).
        release: bool,
    },
}

/// What peering learned about one object that is not clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjState {
    /// The newest version any peer has: the object's current version.
    pub version: u64,
    /// Peers holding exactly that version.
    pub holders: Vec<OsdNum>,
    /// Peers holding an older version.
    pub stale: Vec<OsdNum>,
}

/// The non-clean objects of a PG.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ObjectMap {
    /// Every object that is degraded or misplaced.
    pub objects: HashMap<ObjectId, ObjState>,
    /// Objects missing on a live member (recovered first).
    pub degraded: ObjSet,
    /// Objects complete on the live members but also present elsewhere.
    pub misplaced: ObjSet,
    /// EC/XOR PGs: for each object above, the `(part, OSD)` copies at its version (on the
    /// part's own position or elsewhere); an object absent here is whole on every live
    /// member.
    pub ec_parts: HashMap<ObjectId, Vec<(u32, OsdNum)>>,
    /// EC/XOR PGs: for each object above, the `(part, OSD)` copies at older versions.
    pub ec_stale: HashMap<ObjectId, Vec<(u32, OsdNum)>>,
}

/// A set of objects recovery works through. Objects whose recovery must wait (a backoff)
/// are parked: still members, but out of [`ObjSet::ready`], so a recovery pass does not
/// walk them again until the backoff unparks them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ObjSet {
    all: BTreeSet<ObjectId>,
    ready: BTreeSet<ObjectId>,
}

impl ObjSet {
    /// Adds `oid`, ready.
    pub fn insert(&mut self, oid: ObjectId) -> bool {
        self.ready.insert(oid);
        self.all.insert(oid)
    }

    /// Removes `oid`, parked or not.
    pub fn remove(&mut self, oid: &ObjectId) -> bool {
        self.ready.remove(oid);
        self.all.remove(oid)
    }

    /// Whether `oid` is in the set, parked or not.
    pub fn contains(&self, oid: &ObjectId) -> bool {
        self.all.contains(oid)
    }

    /// Members, parked or not.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// No members at all.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every member, in order.
    pub fn iter(&self) -> impl Iterator<Item = &ObjectId> {
        self.all.iter()
    }

    /// The members that are not parked, in order.
    pub fn ready(&self) -> impl Iterator<Item = &ObjectId> {
        self.ready.iter()
    }

    /// Takes `oid` out of [`ObjSet::ready`] until [`ObjSet::unpark`].
    pub fn park(&mut self, oid: &ObjectId) {
        self.ready.remove(oid);
    }

    /// Makes `oid` ready again if it is still a member.
    pub fn unpark(&mut self, oid: &ObjectId) {
        if self.all.contains(oid) {
            self.ready.insert(*oid);
        }
    }
}

/// Builds the object map from the listings of the live peers (`osd → versions`, stable and
/// unstable together). `members` are the live OSDs of the current set.
///
/// Replicated pools: the newest version anywhere is current. An object is degraded when a
/// live member lacks that version, misplaced when it is complete on the live members but a
/// non-member still has a copy. Clean objects are not kept: memory stays proportional to
/// what needs work.
pub fn classify(members: &[OsdNum], listings: &BTreeMap<OsdNum, Vec<ObjVerId>>) -> ObjectMap {
    let mut newest: HashMap<ObjectId, BTreeMap<OsdNum, u64>> = HashMap::new();
    for (&osd, list) in listings {
        for ov in list {
            let v = newest.entry(ov.oid).or_default().entry(osd).or_insert(0);
            *v = (*v).max(ov.version);
        }
    }
    let mut map = ObjectMap::default();
    for (oid, copies) in newest {
        let version = *copies
            .values()
            .max()
            .expect("an object comes from some listing");
        let holders: Vec<OsdNum> = copies
            .iter()
            .filter(|(_, &v)| v == version)
            .map(|(&o, _)| o)
            .collect();
        let degraded = members.iter().any(|m| !holders.contains(m));
        let misplaced = copies.keys().any(|o| !members.contains(o));
        if !degraded && !misplaced {
            continue;
        }
        let stale = copies
            .iter()
            .filter(|(_, &v)| v != version)
            .map(|(&o, _)| o)
            .collect();
        if degraded {
            map.degraded.insert(oid);
        } else {
            map.misplaced.insert(oid);
        }
        map.objects.insert(
            oid,
            ObjState {
                version,
                holders,
                stale,
            },
        );
    }
    map
}

/// Replicated pools: the SEC_ROLLBACK lists (per OSD, `(object, version to go back to)`)
/// for unstable versions that some OSD's stable version makes untrustworthy.
///
/// A version number can be given twice: a write torn by a crash may leave version `v`
/// unstable on one OSD only; if that OSD is down when the PG peers again, the newest
/// version the others have is below `v`, and the next write of the object is `v` again,
/// with other data. Once the OSD is back, its `v` is not the `v` the others hold. Listings
/// do not tell the two apart, but they do tell which copy cannot be wrong: a stable
/// version was SYNCed by a primary of the PG, so when an OSD's unstable version is at or
/// below a version another OSD holds stable, that OSD's unstable versions of the object are
/// rolled back to its own newest stable one and the object is recovered onto it. (When
/// the copies were the same write, one that a SYNC stabilized elsewhere before its
/// primary died, this costs a recovery and loses nothing.) Unstable versions above every
/// stable one were never SYNCed; they are kept.
///
/// An OSD's newest stable version is never above its own unstable versions, so a rollback
/// to it drops exactly the unstable ones.
pub fn untrusted_unstable(listings: &BTreeMap<OsdNum, Listing>) -> BTreeMap<OsdNum, Vec<ObjVerId>> {
    // Only objects with an unstable version somewhere are looked at (usually few).
    let mut newest_stable: HashMap<ObjectId, u64> = listings
        .values()
        .flat_map(|(_, unstable)| unstable.iter().map(|ov| (ov.oid, 0)))
        .collect();
    if newest_stable.is_empty() {
        return BTreeMap::new();
    }
    for (stable, _) in listings.values() {
        for ov in stable {
            if let Some(v) = newest_stable.get_mut(&ov.oid) {
                *v = (*v).max(ov.version);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (&osd, (stable, unstable)) in listings {
        if unstable.is_empty() {
            continue;
        }
        let mut lowest: HashMap<ObjectId, u64> = HashMap::new();
        for ov in unstable {
            let v = lowest.entry(ov.oid).or_insert(u64::MAX);
            *v = (*v).min(ov.version);
        }
        // Own newest stable version of the objects with unstable versions only.
        let mut own: HashMap<ObjectId, u64> = HashMap::new();
        for ov in stable.iter().filter(|ov| lowest.contains_key(&ov.oid)) {
            let v = own.entry(ov.oid).or_insert(0);
            *v = (*v).max(ov.version);
        }
        let mut list: Vec<ObjVerId> = lowest
            .into_iter()
            .filter_map(|(oid, low)| {
                let own = own.get(&oid).copied().unwrap_or(0);
                let newest = newest_stable.get(&oid).copied().unwrap_or(0);
                (low > own && low <= newest).then_some(ObjVerId::new(oid, own))
            })
            .collect();
        if !list.is_empty() {
            list.sort_unstable();
            out.insert(osd, list);
        }
    }
    out
}

/// Why this OSD cannot serve a pool's PGs (`None`: it can): a stripe shape no code serves,
/// or a block size or bitmap granularity other than this OSD's store has.
pub fn pool_refusal(pool: &PoolConfig, block_size: u32, granularity: u32) -> Option<String> {
    if pool.block_size != block_size || pool.bitmap_granularity != granularity {
        return Some(format!(
            "block_size {} / bitmap_granularity {} differ from this OSD's {block_size} / {granularity}",
            pool.block_size, pool.bitmap_granularity
        ));
    }
    match EcPool::of_pool(pool) {
        Some(Err(e)) => Some(format!("{:?} pool cannot be served: {e}", pool.scheme)),
        _ => None,
    }
}

/// Why this OSD cannot serve one PG of a valid pool: an EC/XOR set must have one slot per
/// part.
pub fn pg_refusal(pool: &PoolConfig, cfg: &PgConfigItem) -> Option<String> {
    (pool.scheme != vitastor_layout::Scheme::Replicated
        && cfg.osd_set.len() != pool.pg_size as usize)
        .then(|| {
            format!(
                "its pg/config set {:?} has {} slots, the pool's pg_size is {}",
                cfg.osd_set,
                cfg.osd_set.len(),
                pool.pg_size
            )
        })
}

/// Unstable versions by the OSD that holds them.
pub type Dirty = BTreeMap<OsdNum, Vec<ObjVerId>>;

/// One PG this OSD is (becoming) primary of.
#[derive(Debug)]
pub struct Pg {
    /// Pool id.
    pub pool: u32,
    /// PG number.
    pub num: u32,
    /// The pool as it was when peering started.
    pub pool_cfg: PoolConfig,
    /// `pg/config` entry peering started from.
    pub cfg: PgConfigItem,
    /// Phase.
    pub phase: Phase,
    /// Peering round, new at every claim and unique on this server (see
    /// `Server::peering_epoch`): sub-ops of peering carry it, and a reply from any other
    /// round is dropped.
    pub epoch: u64,
    /// Every OSD that may hold data of the PG (set, history, all_peers).
    pub peers: BTreeSet<OsdNum>,
    /// Peers reachable when peering started (this OSD included).
    pub live: BTreeSet<OsdNum>,
    /// The current peering round.
    pub round: PeeringRound,
    /// Non-clean objects.
    pub objects: ObjectMap,
    /// Client and recovery ops running on the PG.
    pub inflight: usize,
    /// Unstable writes since the last SYNC (`immediate_commit` other than `all`).
    pub dirty: Dirty,
    /// The highest version purged while this OSD led the PG: objects created afterwards
    /// start above it (see `Server::version_after`).
    pub purged_up_to: u64,
    /// Objects deleted with a tombstone while some peer was missing; purged once clean.
    pub tombstones: BTreeMap<ObjectId, u64>,
    /// Objects with an op (write, delete, recovery) in progress, and ops queued behind it.
    pub locks: HashMap<ObjectId, std::collections::VecDeque<usize>>,
    /// State last written to etcd.
    pub reported: Vec<PgStateName>,
    /// EC/XOR PGs: the pool's stripe shape and code (`None`: replicated).
    pub ec: Option<std::rc::Rc<EcPool>>,
}

impl Pg {
    /// A PG that is about to claim its primary role.
    pub fn new(pool_cfg: PoolConfig, num: u32, cfg: PgConfigItem, peers: BTreeSet<OsdNum>) -> Pg {
        let pool_cfg_ec = pool_cfg.clone();
        Pg {
            pool: pool_cfg.id,
            num,
            pool_cfg,
            cfg,
            phase: Phase::Claiming,
            epoch: 0,
            peers,
            live: BTreeSet::new(),
            round: PeeringRound::new(0),
            objects: ObjectMap::default(),
            inflight: 0,
            dirty: BTreeMap::new(),
            purged_up_to: 0,
            tombstones: BTreeMap::new(),
            locks: HashMap::new(),
            reported: Vec::new(),
            ec: None,
        }
        .with_pool(pool_cfg_ec)
    }

    /// Takes the pool's config (and EC shape) as it is now.
    pub fn with_pool(mut self, pool_cfg: PoolConfig) -> Pg {
        self.set_pool(pool_cfg);
        self
    }

    /// Refreshes the pool's config and, when it changed, its EC shape.
    pub fn set_pool(&mut self, pool_cfg: PoolConfig) {
        if self.ec.is_none() || self.pool_cfg != pool_cfg {
            self.ec = EcPool::of_pool(&pool_cfg)
                .and_then(Result::ok)
                .map(std::rc::Rc::new);
        }
        self.pool_cfg = pool_cfg;
    }

    /// The PG's set by position (`OsdNum(0)` for an empty slot): part `i` of an EC object
    /// lives on `set()[i]`.
    pub fn set(&self) -> Vec<OsdNum> {
        self.cfg.osd_set.iter().map(|&o| OsdNum(o)).collect()
    }

    /// The part an EC PG keeps on `osd` (its position in the set).
    pub fn part_of(&self, osd: OsdNum) -> Option<u32> {
        self.cfg
            .osd_set
            .iter()
            .position(|&o| o != 0 && OsdNum(o) == osd)
            .map(|p| p as u32)
    }

    /// `(pool, pg)`.
    pub fn key(&self) -> PgId {
        PgId::new(self.pool, self.num)
    }

    /// Members of the current set (nonzero slots).
    pub fn members(&self) -> Vec<OsdNum> {
        self.cfg
            .osd_set
            .iter()
            .copied()
            .filter(|&o| o != 0)
            .map(OsdNum)
            .collect()
    }

    /// Members that were reachable when peering started.
    pub fn live_members(&self) -> Vec<OsdNum> {
        self.members()
            .into_iter()
            .filter(|o| self.live.contains(o))
            .collect()
    }

    /// True when every slot has a live member and no object needs work: every object is
    /// complete on the current set and its copies elsewhere are gone, so the PG's history
    /// can go. (Copies on history OSDs that are down are unknown; they are left behind.)
    pub fn is_clean(&self) -> bool {
        let members = self.members();
        members.len() == self.pool_cfg.pg_size as usize
            && members.iter().all(|m| self.live.contains(m))
            && self.objects.objects.is_empty()
            && self.tombstones.is_empty()
    }

    /// The state names to report for the current phase.
    pub fn state_names(&self) -> Vec<PgStateName> {
        let mut names = match self.phase {
            Phase::Claiming => vec![PgStateName::Starting],
            Phase::Connecting | Phase::Listing | Phase::Stabilizing => vec![PgStateName::Peering],
            Phase::Incomplete => vec![PgStateName::Incomplete],
            Phase::Draining { stop: true, .. } => vec![PgStateName::Stopping],
            Phase::Draining { stop: false, .. } => vec![PgStateName::Repeering],
            Phase::Active => vec![PgStateName::Active],
        };
        if self.phase == Phase::Active {
            if self.live_members().len() < self.pool_cfg.pg_size as usize {
                names.push(PgStateName::Degraded);
            }
            if !self.objects.degraded.is_empty() {
                names.push(PgStateName::HasDegraded);
            }
            if !self.objects.misplaced.is_empty() {
                names.push(PgStateName::HasMisplaced);
            }
            if !self.tombstones.is_empty() {
                names.push(PgStateName::HasUnclean);
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ov(stripe: u64, version: u64) -> ObjVerId {
        ObjVerId::new(ObjectId::new(1 << 48, stripe), version)
    }

    #[test]
    fn a_parked_object_stays_a_member_but_is_not_ready() {
        let (a, b) = (ObjectId::new(1 << 48, 0), ObjectId::new(1 << 48, 1));
        let mut set = ObjSet::default();
        set.insert(a);
        set.insert(b);
        set.park(&a);
        assert!(set.contains(&a));
        assert_eq!(set.len(), 2);
        assert_eq!(set.ready().collect::<Vec<_>>(), [&b]);
        set.unpark(&a);
        assert_eq!(set.ready().count(), 2);
        // A removed object is not brought back by a late unpark.
        set.park(&b);
        set.remove(&b);
        set.unpark(&b);
        assert_eq!(set.iter().collect::<Vec<_>>(), [&a]);
        assert_eq!(set.ready().collect::<Vec<_>>(), [&a]);
    }

    #[test]
    fn unstable_versions_at_or_below_a_stable_one_elsewhere_are_untrusted() {
        let listings = BTreeMap::from([
            // 0: v3 stable here, 1: v1 stable, 2: never stable anywhere.
            (OsdNum(1), (vec![ov(0, 3), ov(1, 1)], vec![ov(2, 1)])),
            // 0: unstable 3 over stable 2 (untrusted: back to 2); 1: unstable 2 above
            // every stable version (kept); 2: kept.
            (
                OsdNum(2),
                (vec![ov(0, 2)], vec![ov(0, 3), ov(1, 2), ov(2, 1)]),
            ),
            // 0: unstable 2 and 4 with nothing stable (2 is untrusted: back to nothing).
            (OsdNum(3), (vec![], vec![ov(0, 2), ov(0, 4)])),
        ]);
        assert_eq!(
            untrusted_unstable(&listings),
            BTreeMap::from([(OsdNum(2), vec![ov(0, 2)]), (OsdNum(3), vec![ov(0, 0)])])
        );
        let clean = BTreeMap::from([(OsdNum(1), (vec![ov(0, 3)], vec![]))]);
        assert!(untrusted_unstable(&clean).is_empty());
    }

    #[test]
    fn classification() {
        let listings = BTreeMap::from([
            (OsdNum(1), vec![ov(0, 3), ov(1, 2), ov(2, 1), ov(3, 5)]),
            (OsdNum(2), vec![ov(0, 3), ov(1, 1), ov(3, 5)]),
            (OsdNum(7), vec![ov(3, 4), ov(4, 9)]),
        ]);
        let map = classify(&[OsdNum(1), OsdNum(2)], &listings);
        // 0: clean; 1: stale on 2; 2: missing on 2; 3: complete but old copy on 7;
        // 4: only on a non-member.
        assert!(!map.objects.contains_key(&ov(0, 0).oid));
        assert_eq!(
            map.degraded.iter().map(|o| o.stripe).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        assert_eq!(
            map.misplaced.iter().map(|o| o.stripe).collect::<Vec<_>>(),
            vec![3]
        );
        let o1 = &map.objects[&ov(1, 0).oid];
        assert_eq!(
            (o1.version, o1.holders.clone(), o1.stale.clone()),
            (2, vec![OsdNum(1)], vec![OsdNum(2)])
        );
        assert_eq!(map.objects[&ov(4, 0).oid].holders, vec![OsdNum(7)]);
    }
}
