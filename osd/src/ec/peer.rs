//! Peering of an EC/XOR PG: from every live OSD's listing (part versions, stable and
//! unstable), each logical object's settled version ([`super::torn::settle`], once unstable
//! parts of a version number given twice are set aside: [`distrust_reused`]), the
//! SEC_ROLLBACK and SEC_STABILIZE lists that make every part read as it, and the PG's map
//! of degraded and misplaced objects. An object is degraded when the part of some live
//! member's position lacks the settled version, misplaced when a copy of some part sits on
//! an OSD other than that part's position.
//!
//! Pure: listings in, decisions out; peering sends the lists.
//!
//! What it must never do: call an object whole that a live position lacks, or leave a
//! version no `k` parts hold readable (it is rolled back, or the object is lost).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use vitastor_blockstore::{ObjVerId, ObjectId};
use vitastor_layout::OsdNum;

use super::geometry::Geometry;
use super::torn::{settle, PartListing, PartOp, Settle};
use crate::pg::{ObjState, ObjectMap};

/// An object whose newest stable version is on fewer than `k` parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The logical object.
    pub oid: ObjectId,
    /// Its newest stable version.
    pub stable: u64,
    /// Distinct parts holding it.
    pub parts: usize,
}

/// What peering does for an EC PG.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Peered {
    /// Degraded and misplaced objects (by logical object).
    pub objects: ObjectMap,
    /// SEC_ROLLBACK per OSD (part objects, the version to go back to).
    pub rollback: BTreeMap<OsdNum, Vec<ObjVerId>>,
    /// SEC_STABILIZE per OSD (part objects).
    pub stabilize: BTreeMap<OsdNum, Vec<ObjVerId>>,
    /// Objects that cannot be read: the PG must not go active.
    pub lost: Vec<Lost>,
}

/// Decides a PG from `listings` (`osd → (stable, unstable)` part versions); `set` is the
/// PG's set by position (`OsdNum(0)`: empty), `live` the OSDs that answered.
pub fn classify(
    geo: &Geometry,
    set: &[OsdNum],
    live: &BTreeSet<OsdNum>,
    listings: &BTreeMap<OsdNum, (Vec<ObjVerId>, Vec<ObjVerId>)>,
) -> Peered {
    let mut parts: HashMap<ObjectId, BTreeMap<(u32, OsdNum), PartListing>> = HashMap::new();
    for (&osd, (stable, unstable)) in listings {
        for (ov, is_stable) in stable
            .iter()
            .map(|o| (o, true))
            .chain(unstable.iter().map(|o| (o, false)))
        {
            // A stripe no part has is not this pool's data: left alone.
            let Some((start, part)) = geo.split_stripe(ov.oid.stripe) else {
                continue;
            };
            let oid = ObjectId::new(ov.oid.inode, start);
            let l = parts
                .entry(oid)
                .or_default()
                .entry((part, osd))
                .or_insert_with(|| PartListing {
                    part,
                    osd,
                    stable: None,
                    unstable: Vec::new(),
                });
            if is_stable {
                l.stable = l.stable.max(Some(ov.version));
            } else {
                l.unstable.push(ov.version);
            }
        }
    }
    let mut out = Peered::default();
    let mut oids: Vec<ObjectId> = parts.keys().copied().collect();
    oids.sort_unstable();
    for oid in oids {
        let mut listed: Vec<PartListing> = parts
            .remove(&oid)
            .unwrap_or_default()
            .into_values()
            .collect();
        let part_oid = |part: u32| ObjectId::new(oid.inode, geo.part_stripe(oid.stripe, part));
        for (part, osd, v) in distrust_reused(geo.data_parts, &mut listed) {
            out.rollback
                .entry(osd)
                .or_default()
                .push(ObjVerId::new(part_oid(part), v));
        }
        match settle(geo.data_parts, &listed) {
            Settle::Lost { stable, parts } => out.lost.push(Lost { oid, stable, parts }),
            Settle::At {
                version,
                holders,
                stale,
                stabilize,
                rollback,
            } => {
                for (part, osd, v) in rollback {
                    out.rollback
                        .entry(osd)
                        .or_default()
                        .push(ObjVerId::new(part_oid(part), v));
                }
                for (part, osd, v) in stabilize {
                    out.stabilize
                        .entry(osd)
                        .or_default()
                        .push(ObjVerId::new(part_oid(part), v));
                }
                if version == 0 {
                    continue;
                }
                let positional =
                    |&(part, osd): &(u32, OsdNum)| set.get(part as usize) == Some(&osd);
                let degraded = set.iter().enumerate().any(|(i, &o)| {
                    o.0 != 0 && live.contains(&o) && !holders.contains(&(i as u32, o))
                });
                let misplaced = holders.iter().chain(&stale).any(|h| !positional(h));
                if !degraded && !misplaced {
                    continue;
                }
                let mut on: Vec<OsdNum> = holders
                    .iter()
                    .filter(|h| positional(h))
                    .map(|h| h.1)
                    .collect();
                on.sort_unstable();
                let mut off: Vec<OsdNum> = holders
                    .iter()
                    .chain(&stale)
                    .map(|h| h.1)
                    .filter(|o| !on.contains(o))
                    .collect();
                off.sort_unstable();
                off.dedup();
                if degraded {
                    out.objects.degraded.insert(oid);
                } else {
                    out.objects.misplaced.insert(oid);
                }
                out.objects.objects.insert(
                    oid,
                    ObjState {
                        version,
                        holders: on,
                        stale: off,
                    },
                );
                out.objects.ec_parts.insert(oid, holders);
                out.objects.ec_stale.insert(oid, stale);
            }
        }
    }
    out
}

/// Rolls back the unstable part versions that a stable version of the object makes
/// untrustworthy (a version number given twice: see [`crate::pg::untrusted_unstable`]) and
/// drops them from `listed`, so that [`settle`] sees the part at its own stable version
/// (then stale, rebuilt from the others). Only when at least `k` parts hold the newest
/// stable version: with fewer, the unstable parts are needed to complete it (a SYNC that
/// stabilized some parts of one write before its primary died), and they are kept.
fn distrust_reused(k: u32, listed: &mut [PartListing]) -> Vec<PartOp> {
    let Some(newest) = listed.iter().filter_map(|l| l.stable).max() else {
        return Vec::new();
    };
    let mut stable_parts: Vec<u32> = listed
        .iter()
        .filter(|l| l.stable == Some(newest))
        .map(|l| l.part)
        .collect();
    stable_parts.sort_unstable();
    stable_parts.dedup();
    if stable_parts.len() < k as usize {
        return Vec::new();
    }
    let mut rollback = Vec::new();
    for l in listed.iter_mut() {
        let own = l.stable.unwrap_or(0);
        if l.unstable.iter().any(|&u| u > own && u <= newest) {
            rollback.push((l.part, l.osd, own));
            l.unstable.retain(|&u| u <= own);
        }
    }
    rollback
}

#[cfg(test)]
mod tests {
    use super::*;

    const INODE: u64 = 1 << 48 | 1;

    fn geo() -> Geometry {
        Geometry::new(2, 1, 128 << 10, 4096).unwrap()
    }

    fn part(start: u64, p: u64, v: u64) -> ObjVerId {
        ObjVerId::new(ObjectId::new(INODE, start + p), v)
    }

    fn osds(o: &[u64]) -> Vec<OsdNum> {
        o.iter().map(|&o| OsdNum(o)).collect()
    }

    #[test]
    fn a_whole_stripe_is_clean_and_a_torn_one_is_settled() {
        let g = geo();
        let obj = 256 << 10;
        // Object 0 whole at v1; object 1 torn: v2 only on part 0, v1 stable everywhere.
        let listings = BTreeMap::from([
            (
                OsdNum(1),
                (vec![part(0, 0, 1), part(obj, 0, 1)], vec![part(obj, 0, 2)]),
            ),
            (OsdNum(2), (vec![part(0, 1, 1), part(obj, 1, 1)], vec![])),
            (OsdNum(3), (vec![part(0, 2, 1), part(obj, 2, 1)], vec![])),
        ]);
        let live: BTreeSet<OsdNum> = osds(&[1, 2, 3]).into_iter().collect();
        let p = classify(&g, &osds(&[1, 2, 3]), &live, &listings);
        assert!(p.objects.objects.is_empty(), "{:?}", p.objects);
        assert_eq!(
            p.rollback,
            BTreeMap::from([(OsdNum(1), vec![part(obj, 0, 1)])])
        );
        assert!(p.stabilize.is_empty());
        assert!(p.lost.is_empty());
    }

    #[test]
    fn a_version_on_k_parts_is_stabilized_and_the_lagging_part_is_degraded() {
        let g = geo();
        let listings = BTreeMap::from([
            (OsdNum(1), (vec![part(0, 0, 1)], vec![part(0, 0, 2)])),
            (OsdNum(2), (vec![part(0, 1, 1)], vec![])),
            (OsdNum(3), (vec![part(0, 2, 1)], vec![part(0, 2, 2)])),
        ]);
        let live: BTreeSet<OsdNum> = osds(&[1, 2, 3]).into_iter().collect();
        let p = classify(&g, &osds(&[1, 2, 3]), &live, &listings);
        let oid = ObjectId::new(INODE, 0);
        assert!(p.objects.degraded.contains(&oid));
        assert_eq!(p.objects.objects[&oid].version, 2);
        assert_eq!(p.objects.objects[&oid].holders, osds(&[1, 3]));
        assert_eq!(p.objects.ec_parts[&oid], [(0, OsdNum(1)), (2, OsdNum(3))]);
        assert_eq!(p.stabilize.len(), 2);
    }

    #[test]
    fn a_part_on_another_position_is_misplaced_and_a_down_member_is_not_degraded() {
        let g = geo();
        let listings = BTreeMap::from([
            (OsdNum(1), (vec![part(0, 0, 1)], vec![])),
            (OsdNum(4), (vec![part(0, 1, 1)], vec![])),
        ]);
        // osd.2 (part 1's position) is down; osd.4 holds part 1 from an older set.
        let live: BTreeSet<OsdNum> = osds(&[1, 4]).into_iter().collect();
        let p = classify(&g, &osds(&[1, 2, 3]), &live, &listings);
        let oid = ObjectId::new(INODE, 0);
        assert!(p.objects.misplaced.contains(&oid));
        assert_eq!(p.objects.objects[&oid].stale, osds(&[4]));
    }

    /// Version 2 of the object reached only part 0 (osd 1, unstable) before its primary
    /// died; osd 1 went down, the PG went on without it and wrote version 2 again, with
    /// other data, as parts 1 and 2 (stable). Part 0's 2 belongs to no stripe of that
    /// version: it is rolled back and rebuilt from the other two.
    #[test]
    fn an_unstable_part_of_a_version_others_hold_stable_is_rolled_back() {
        let g = geo();
        let listings = BTreeMap::from([
            (OsdNum(1), (vec![part(0, 0, 1)], vec![part(0, 0, 2)])),
            (OsdNum(2), (vec![part(0, 1, 2)], vec![])),
            (OsdNum(3), (vec![part(0, 2, 2)], vec![])),
        ]);
        let live: BTreeSet<OsdNum> = osds(&[1, 2, 3]).into_iter().collect();
        let p = classify(&g, &osds(&[1, 2, 3]), &live, &listings);
        let oid = ObjectId::new(INODE, 0);
        assert_eq!(
            p.rollback,
            BTreeMap::from([(OsdNum(1), vec![part(0, 0, 1)])])
        );
        assert!(p.stabilize.is_empty(), "{:?}", p.stabilize);
        assert!(p.objects.degraded.contains(&oid));
        assert_eq!(p.objects.objects[&oid].version, 2);
        assert_eq!(p.objects.ec_parts[&oid], [(1, OsdNum(2)), (2, OsdNum(3))]);
        assert_eq!(p.objects.ec_stale[&oid], [(0, OsdNum(1))]);
    }

    /// A SYNC stabilized version 2 on part 1 only before its primary died: fewer than `k`
    /// stable parts cannot rebuild the others, so the unstable parts 0 and 2 are kept and
    /// stabilized (a version rolled back here would leave the stable one lost).
    #[test]
    fn unstable_parts_are_kept_when_fewer_than_k_parts_hold_the_stable_version() {
        let g = geo();
        let listings = BTreeMap::from([
            (OsdNum(1), (vec![part(0, 0, 1)], vec![part(0, 0, 2)])),
            (OsdNum(2), (vec![part(0, 1, 2)], vec![])),
            (OsdNum(3), (vec![part(0, 2, 1)], vec![part(0, 2, 2)])),
        ]);
        let live: BTreeSet<OsdNum> = osds(&[1, 2, 3]).into_iter().collect();
        let p = classify(&g, &osds(&[1, 2, 3]), &live, &listings);
        assert!(p.rollback.is_empty(), "{:?}", p.rollback);
        assert_eq!(p.stabilize.len(), 2);
        assert!(p.objects.objects.is_empty(), "{:?}", p.objects);
        assert!(p.lost.is_empty());
    }

    proptest::proptest! {
        /// Every part is at stable version `w`; a write of `w + 1` reached the parts in
        /// `torn` only, whose OSDs then went down; the PG went on with the others (at least
        /// `k`), wrote `w + 1` again to all of them and stabilized it on `synced`. With every
        /// OSD back, nothing is lost, and once `k` parts hold the second `w + 1` stable no
        /// part of the first one is read: each is rolled back and stale.
        #[test]
        fn a_reused_version_never_mixes_the_two_writes(
            rs in proptest::bool::ANY,
            torn_mask in 1u8..,
            synced_mask in proptest::num::u8::ANY,
            w in 1u64..5,
        ) {
            let (k, n) = if rs { (4u32, 6u32) } else { (2, 3) };
            let g = Geometry::new(k, n - k, 128 << 10, 4096).unwrap();
            let torn: Vec<u32> = (0..n).filter(|p| torn_mask & (1 << p) != 0).collect();
            proptest::prop_assume!(!torn.is_empty() && n as usize - torn.len() >= k as usize);
            let synced: Vec<u32> = (0..n)
                .filter(|p| !torn.contains(p) && synced_mask & (1 << p) != 0)
                .collect();
            let set: Vec<OsdNum> = (1..=u64::from(n)).map(OsdNum).collect();
            let listings: BTreeMap<OsdNum, (Vec<ObjVerId>, Vec<ObjVerId>)> = (0..n)
                .map(|p| {
                    let at = |v| part(0, u64::from(p), v);
                    let listing = if synced.contains(&p) {
                        (vec![at(w + 1)], vec![])
                    } else {
                        (vec![at(w)], vec![at(w + 1)])
                    };
                    (set[p as usize], listing)
                })
                .collect();
            let live: BTreeSet<OsdNum> = set.iter().copied().collect();
            let peered = classify(&g, &set, &live, &listings);
            proptest::prop_assert!(peered.lost.is_empty());
            if synced.len() >= k as usize {
                let oid = ObjectId::new(INODE, 0);
                let holders = peered.objects.ec_parts.get(&oid).cloned().unwrap_or_default();
                for &p in &torn {
                    let osd = set[p as usize];
                    proptest::prop_assert!(!holders.contains(&(p, osd)));
                    proptest::prop_assert_eq!(
                        peered.rollback.get(&osd).cloned(),
                        Some(vec![part(0, u64::from(p), w)])
                    );
                    proptest::prop_assert!(!peered.stabilize.contains_key(&osd));
                }
                proptest::prop_assert_eq!(peered.objects.objects[&oid].version, w + 1);
            }
        }
    }

    #[test]
    fn a_stable_version_on_fewer_than_k_parts_is_lost() {
        let g = geo();
        let listings = BTreeMap::from([(OsdNum(1), (vec![part(0, 0, 3)], vec![]))]);
        let live: BTreeSet<OsdNum> = osds(&[1]).into_iter().collect();
        let p = classify(&g, &osds(&[1, 2, 3]), &live, &listings);
        assert_eq!(p.lost.len(), 1);
        assert_eq!(p.lost[0].stable, 3);
    }
}
