//! Decisions of one object's recovery on the primary: where the current version is copied
//! from and to, what is left to do once the live members hold it, and which failures mean
//! the PG's object map is wrong.
//!
//! Pure: it reads an [`ObjState`] and facts the caller passes in (who is live, who is
//! reachable) and returns a plan; `primary.rs` carries it out. It never plans a copy onto
//! an OSD that already holds the current version, and never removes the copies outside the
//! PG's set before every member holds the object and the whole PG is complete.

use vitastor_protocol::errno::Errno;

use vitastor_layout::OsdNum;

use crate::pg::ObjState;

/// Where a copy is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This OSD's store.
    Local,
    /// A peer.
    Osd(OsdNum),
}

/// The copy step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copy {
    /// Every live member holds the current version already.
    Done,
    /// Read the current version from `source`, write it to `targets`.
    From {
        /// Where to read.
        source: Source,
        /// Live members that lack the version.
        targets: Vec<OsdNum>,
    },
    /// No holder of the current version is reachable now.
    NoSource,
}

/// Plans the copy of `st` onto the `live` members; `me` is this OSD, `ready` says whether a
/// peer's connection is up.
pub fn plan_copy(
    st: &ObjState,
    live: &[OsdNum],
    me: OsdNum,
    ready: impl Fn(OsdNum) -> bool,
) -> Copy {
    let targets: Vec<OsdNum> = live
        .iter()
        .copied()
        .filter(|m| !st.holders.contains(m))
        .collect();
    if targets.is_empty() {
        return Copy::Done;
    }
    let source = if st.holders.contains(&me) {
        Some(Source::Local)
    } else {
        st.holders
            .iter()
            .copied()
            .find(|&o| ready(o))
            .map(Source::Osd)
    };
    match source {
        Some(source) => Copy::From { source, targets },
        None => Copy::NoSource,
    }
}

/// What is left once the live members hold the current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Every member holds it and no copy exists outside the set: the object is clean.
    Clean,
    /// Nothing to do now; `misplaced` when it is complete on the set but has copies
    /// outside it (removed later, once allowed).
    Keep {
        /// Complete on the set, copies elsewhere.
        misplaced: bool,
    },
    /// Remove the copies on these OSDs outside the set.
    MoveOut(Vec<OsdNum>),
}

/// Facts about the PG a cleanup depends on.
#[derive(Debug, Clone, Copy)]
pub struct PgFacts<'a> {
    /// Members of the current set.
    pub members: &'a [OsdNum],
    /// Every slot of the set has a member and no object of the PG is degraded.
    pub complete: bool,
    /// `no_rebalance` is set.
    pub no_rebalance: bool,
}

/// Plans the cleanup of `st`: copies outside the set go only when the object is complete on
/// the set, the whole PG is complete, rebalancing is allowed and every such OSD is reachable.
pub fn plan_cleanup(st: &ObjState, pg: PgFacts<'_>, ready: impl Fn(OsdNum) -> bool) -> Cleanup {
    let outside: Vec<OsdNum> = st
        .holders
        .iter()
        .chain(&st.stale)
        .copied()
        .filter(|o| !pg.members.contains(o))
        .collect();
    let complete = pg.members.iter().all(|m| st.holders.contains(m));
    if outside.is_empty() && complete {
        return Cleanup::Clean;
    }
    if complete && pg.complete && !pg.no_rebalance && outside.iter().all(|&o| ready(o)) {
        return Cleanup::MoveOut(outside);
    }
    Cleanup::Keep {
        misplaced: complete,
    }
}

/// Whether a failed recovery step means the PG's object map is wrong (the source lacks the
/// version, a target already has it), so the PG must peer again. Out of space, device errors
/// and lost peers are retried later instead (a lost peer re-peers the PG by itself).
pub fn failure_needs_repeer(e: Errno) -> bool {
    e.get() == libc::ENOENT || e.get() == libc::EEXIST
}

#[cfg(test)]
mod tests {
    use super::*;

    fn osds(list: &[u64]) -> Vec<OsdNum> {
        list.iter().copied().map(OsdNum).collect()
    }

    fn st(holders: &[u64], stale: &[u64]) -> ObjState {
        ObjState {
            version: 9,
            holders: osds(holders),
            stale: osds(stale),
        }
    }

    #[test]
    fn copies_go_to_the_live_members_that_lack_the_version() {
        let all = |_| true;
        assert_eq!(
            plan_copy(&st(&[1, 2], &[]), &osds(&[1, 2]), OsdNum(1), all),
            Copy::Done
        );
        assert_eq!(
            plan_copy(&st(&[1], &[2]), &osds(&[1, 2, 3]), OsdNum(1), all),
            Copy::From {
                source: Source::Local,
                targets: osds(&[2, 3])
            }
        );
        // Read from the first reachable holder when this OSD lacks it.
        assert_eq!(
            plan_copy(&st(&[5, 6], &[]), &osds(&[1, 2]), OsdNum(1), |o| o
                == OsdNum(6)),
            Copy::From {
                source: Source::Osd(OsdNum(6)),
                targets: osds(&[1, 2])
            }
        );
    }

    #[test]
    fn no_reachable_holder_is_no_source() {
        assert_eq!(
            plan_copy(&st(&[5], &[]), &osds(&[1, 2]), OsdNum(1), |_| false),
            Copy::NoSource
        );
    }

    #[test]
    fn copies_outside_the_set_go_only_when_everything_allows() {
        let facts = |complete, no_rebalance| PgFacts {
            members: &[OsdNum(1), OsdNum(2)],
            complete,
            no_rebalance,
        };
        let all = |_| true;
        assert_eq!(
            plan_cleanup(&st(&[1, 2], &[]), facts(true, false), all),
            Cleanup::Clean
        );
        let moved = st(&[1, 2, 7], &[8]);
        assert_eq!(
            plan_cleanup(&moved, facts(true, false), all),
            Cleanup::MoveOut(osds(&[7, 8]))
        );
        let keep = Cleanup::Keep { misplaced: true };
        assert_eq!(plan_cleanup(&moved, facts(false, false), all), keep);
        assert_eq!(plan_cleanup(&moved, facts(true, true), all), keep);
        assert_eq!(
            plan_cleanup(&moved, facts(true, false), |o| o != OsdNum(8)),
            keep
        );
        // Not on every member yet: nothing moves, and it is not merely misplaced.
        assert_eq!(
            plan_cleanup(&st(&[1, 7], &[]), facts(true, false), all),
            Cleanup::Keep { misplaced: false }
        );
    }

    #[test]
    fn only_a_wrong_map_repeers() {
        assert!(failure_needs_repeer(Errno::new(libc::EEXIST).unwrap()));
        assert!(failure_needs_repeer(Errno::new(libc::ENOENT).unwrap()));
        for e in [Errno::ENOSPC, Errno::EIO, Errno::EROFS, Errno::EPIPE] {
            assert!(!failure_needs_repeer(e));
        }
    }
}
