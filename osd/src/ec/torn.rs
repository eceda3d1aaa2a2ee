//! Peering's decision for one EC/XOR object whose parts carry unstable versions (a write
//! torn by a crash between its chunk writes and its stabilize): which version the object
//! is at, which parts to stabilize, which to roll back (SEC_ROLLBACK), and which parts are
//! stale and need recovery.
//!
//! The rule: an EC write gives every live part the same version (see [`super::write`]), so
//! a version held by at least `k` distinct parts can be completed (every other part is
//! rebuilt from those `k`), and a version held by fewer cannot be read back at all. The
//! object settles at the newest version held by `k` parts; newer unstable versions are
//! rolled back, unstable versions up to it are stabilized. A stable version is never rolled
//! back: if the newest stable version cannot be completed, the object is reported lost
//! instead of silently going back to older data.
//!
//! Pure: listings in, decision out; peering sends the SEC_STABILIZE / SEC_ROLLBACK.
//!
//! What it must never do: leave a part reading as a version other than the settled one
//! without calling it stale, or discard a version that was ever stable.

use vitastor_layout::OsdNum;

/// What one OSD listed for one part of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartListing {
    /// Part number.
    pub part: u32,
    /// The OSD that listed it (an OSD of the current set or of the PG's history).
    pub osd: OsdNum,
    /// Its newest stable version, if any.
    pub stable: Option<u64>,
    /// Its unstable versions (any order).
    pub unstable: Vec<u64>,
}

impl PartListing {
    fn holds(&self, v: u64) -> bool {
        self.stable == Some(v) || self.unstable.contains(&v)
    }

    /// The version this part reads as once unstable versions above `v` are rolled back.
    fn visible_after(&self, v: u64) -> u64 {
        self.unstable
            .iter()
            .copied()
            .filter(|&u| u <= v)
            .chain(self.stable)
            .max()
            .unwrap_or(0)
    }
}

/// `(part, osd, version)`: one SEC_STABILIZE or SEC_ROLLBACK to send.
pub type PartOp = (u32, OsdNum, u64);

/// The decision for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// The object is at `version`.
    At {
        /// The settled version (0: the object does not exist).
        version: u64,
        /// Parts that read as `version` after the ops below.
        holders: Vec<(u32, OsdNum)>,
        /// Parts that read as an older version: recovered from the holders.
        stale: Vec<(u32, OsdNum)>,
        /// SEC_STABILIZE of the given version (it and every unstable version below it).
        stabilize: Vec<PartOp>,
        /// SEC_ROLLBACK to the given version (drops the unstable versions above it).
        rollback: Vec<PartOp>,
    },
    /// A stable version is on fewer than `k` parts: the object cannot be read; nothing is
    /// changed (the PG reports it as incomplete until those OSDs come back).
    Lost {
        /// The newest stable version.
        stable: u64,
        /// Distinct parts that hold it.
        parts: usize,
    },
}

/// Distinct parts holding `v`.
fn parts_holding(listings: &[PartListing], v: u64) -> usize {
    let mut parts: Vec<u32> = listings
        .iter()
        .filter(|l| l.holds(v))
        .map(|l| l.part)
        .collect();
    parts.sort_unstable();
    parts.dedup();
    parts.len()
}

/// Decides one object from every listing of its parts; `k` is the number of data parts.
pub fn settle(k: u32, listings: &[PartListing]) -> Settle {
    let newest_stable = listings.iter().filter_map(|l| l.stable).max();
    let mut versions: Vec<u64> = listings
        .iter()
        .flat_map(|l| l.stable.into_iter().chain(l.unstable.iter().copied()))
        .collect();
    versions.sort_unstable();
    versions.dedup();
    let settled = versions
        .iter()
        .rev()
        .copied()
        .find(|&v| parts_holding(listings, v) >= k as usize);
    let version = match (settled, newest_stable) {
        (Some(v), Some(s)) if v < s => {
            return Settle::Lost {
                stable: s,
                parts: parts_holding(listings, s),
            }
        }
        (None, Some(s)) => {
            return Settle::Lost {
                stable: s,
                parts: parts_holding(listings, s),
            }
        }
        (v, _) => v.unwrap_or(0),
    };
    let (mut holders, mut stale, mut stabilize, mut rollback) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for l in listings {
        if l.unstable.iter().any(|&u| u > version) {
            rollback.push((l.part, l.osd, version));
        }
        if let Some(u) = l.unstable.iter().copied().filter(|&u| u <= version).max() {
            stabilize.push((l.part, l.osd, u));
        }
        if version > 0 && l.visible_after(version) == version {
            holders.push((l.part, l.osd));
        } else if version > 0 {
            stale.push((l.part, l.osd));
        }
    }
    holders.sort_unstable();
    stale.sort_unstable();
    Settle::At {
        version,
        holders,
        stale,
        stabilize,
        rollback,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn l(part: u32, osd: u64, stable: Option<u64>, unstable: &[u64]) -> PartListing {
        PartListing {
            part,
            osd: OsdNum(osd),
            stable,
            unstable: unstable.to_vec(),
        }
    }

    #[test]
    fn a_version_on_k_parts_is_completed() {
        // 2+1: version 5 reached parts 0 and 2 before the crash, part 1 still has 4.
        let s = settle(
            2,
            &[
                l(0, 1, Some(4), &[5]),
                l(1, 2, Some(4), &[]),
                l(2, 3, Some(4), &[5]),
            ],
        );
        assert_eq!(
            s,
            Settle::At {
                version: 5,
                holders: vec![(0, OsdNum(1)), (2, OsdNum(3))],
                stale: vec![(1, OsdNum(2))],
                stabilize: vec![(0, OsdNum(1), 5), (2, OsdNum(3), 5)],
                rollback: vec![],
            }
        );
    }

    #[test]
    fn a_version_on_fewer_than_k_parts_is_rolled_back() {
        let s = settle(
            2,
            &[
                l(0, 1, Some(4), &[5]),
                l(1, 2, Some(4), &[]),
                l(2, 3, Some(4), &[]),
            ],
        );
        assert_eq!(
            s,
            Settle::At {
                version: 4,
                holders: vec![(0, OsdNum(1)), (1, OsdNum(2)), (2, OsdNum(3))],
                stale: vec![],
                stabilize: vec![],
                rollback: vec![(0, OsdNum(1), 4)],
            }
        );
    }

    #[test]
    fn a_stable_version_is_never_rolled_back() {
        // Version 5 was stabilized, then two of the three OSDs holding it were lost.
        let s = settle(
            2,
            &[
                l(0, 1, Some(5), &[]),
                l(1, 4, Some(4), &[]),
                l(2, 5, Some(4), &[]),
            ],
        );
        assert_eq!(
            s,
            Settle::Lost {
                stable: 5,
                parts: 1
            }
        );
    }

    #[test]
    fn copies_of_one_part_on_several_osds_count_once() {
        let s = settle(
            2,
            &[l(0, 1, None, &[1]), l(0, 7, None, &[1]), l(1, 2, None, &[])],
        );
        assert_eq!(
            s,
            Settle::At {
                version: 0,
                holders: vec![],
                stale: vec![],
                stabilize: vec![],
                rollback: vec![(0, OsdNum(1), 0), (0, OsdNum(7), 0)],
            }
        );
    }

    proptest! {
        /// Writes reach every part, possibly unstable (lazy sync), the last one torn by a
        /// crash on a random subset, with some OSDs' listings missing: the decision never
        /// mixes versions — every holder reads as the settled version, at least k parts do,
        /// nothing newer survives — and never drops an acknowledged write.
        #[test]
        fn torn_stripes_settle_on_one_version(
            rs in any::<bool>(),
            writes in 1u64..6,
            stable_upto in 0u64..6,
            torn_mask in any::<u8>(),
            missing_mask in any::<u8>(),
        ) {
            let (k, n) = if rs { (4u32, 6u32) } else { (2, 3) };
            let m = n - k;
            let stable_upto = stable_upto.min(writes - 1);
            // Versions 1..writes-1 reached every part; `writes` only the torn subset.
            let mut listings = Vec::new();
            for p in 0..n {
                let got_last = torn_mask & (1 << p) != 0;
                let top = if got_last { writes } else { writes - 1 };
                let stable = (stable_upto > 0).then_some(stable_upto.min(top));
                let unstable: Vec<u64> = (stable_upto + 1..=top).collect();
                if stable.is_none() && unstable.is_empty() {
                    continue;
                }
                // At most m parts' OSDs are unreachable.
                let gone = (missing_mask & (1 << p) != 0)
                    && (0..p).filter(|q| missing_mask & (1 << q) != 0).count() < m as usize;
                if !gone {
                    listings.push(l(p, u64::from(p) + 1, stable, &unstable));
                }
            }
            let reached = (0..n).filter(|p| torn_mask & (1 << p) != 0).count();
            match settle(k, &listings) {
                Settle::At { version, holders, stabilize, rollback, .. } => {
                    prop_assert!(version == writes || version == writes - 1);
                    if version > 0 {
                        prop_assert!(holders.len() >= k as usize);
                    }
                    // A write that reached every part was acknowledged: it must survive.
                    if reached == n as usize {
                        prop_assert_eq!(version, writes);
                    }
                    prop_assert!(version >= stable_upto);
                    for li in &listings {
                        let rolled = rollback.iter().any(|&(p, o, _)| p == li.part && o == li.osd);
                        let newest = li.unstable.iter().copied().chain(li.stable).max().unwrap_or(0);
                        prop_assert_eq!(rolled, newest > version);
                        let is_holder = holders.contains(&(li.part, li.osd));
                        prop_assert_eq!(is_holder, version > 0 && li.visible_after(version) == version);
                    }
                    prop_assert!(stabilize.iter().all(|&(_, _, v)| v <= version));
                }
                Settle::Lost { .. } => prop_assert!(false, "nothing stable was lost here"),
            }
        }
    }
}
