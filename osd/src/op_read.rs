//! Where a client READ on the primary is served from: the local copy unless peering found
//! it behind, else a ready holder of the current version; and, when the local read fails
//! (a device error, a store gone read-only), another ready member that holds the current
//! version, so data stays readable while a replica has it.
//!
//! Pure decisions over the PG's object state and which peers are ready; `primary.rs` sends
//! the reads and answers. It must never send a read to a copy known to be behind.

use vitastor_blockstore::NEWEST;
use vitastor_layout::OsdNum;

use crate::pg::ObjState;

/// Where a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This OSD's store, newest version.
    Local,
    /// A peer, asked for exactly `version` (the object's current one, or [`NEWEST`] when
    /// the object is clean).
    Osd {
        /// The peer.
        osd: OsdNum,
        /// The version asked for.
        version: u64,
    },
}

/// The first place to read `st`'s object (`None`: the object is clean) from, on OSD `me`;
/// `None` when no holder of the current version is ready (the read fails with EIO).
pub fn first(me: OsdNum, st: Option<&ObjState>, ready: impl Fn(OsdNum) -> bool) -> Option<Source> {
    match st {
        Some(st) if !st.holders.contains(&me) => st
            .holders
            .iter()
            .copied()
            .find(|&o| ready(o))
            .map(|osd| Source::Osd {
                osd,
                version: st.version,
            }),
        _ => Some(Source::Local),
    }
}

/// After the local read failed: a ready live member (`members`, this OSD's PG) other than
/// `me` that holds the current version; `None` when there is none (the error stands).
pub fn after_local_failure(
    me: OsdNum,
    members: &[OsdNum],
    st: Option<&ObjState>,
    ready: impl Fn(OsdNum) -> bool,
) -> Option<Source> {
    members
        .iter()
        .copied()
        .find(|&o| o != me && ready(o) && st.is_none_or(|st| st.holders.contains(&o)))
        .map(|osd| Source::Osd {
            osd,
            version: st.map_or(NEWEST, |st| st.version),
        })
}

#[cfg(test)]
mod tests {
    use vitastor_blockstore::NEWEST;
    use vitastor_layout::OsdNum;

    use super::{after_local_failure, first, Source};
    use crate::pg::ObjState;

    fn st(version: u64, holders: &[u64], stale: &[u64]) -> ObjState {
        ObjState {
            version,
            holders: holders.iter().copied().map(OsdNum).collect(),
            stale: stale.iter().copied().map(OsdNum).collect(),
        }
    }

    #[test]
    fn the_local_copy_serves_unless_it_is_behind() {
        let all = |_| true;
        assert_eq!(first(OsdNum(1), None, all), Some(Source::Local));
        assert_eq!(
            first(OsdNum(1), Some(&st(5, &[1, 2], &[3])), all),
            Some(Source::Local)
        );
        // Behind: the first ready holder, asked for the current version exactly.
        let only_3 = |o: OsdNum| o == OsdNum(3);
        assert_eq!(
            first(OsdNum(1), Some(&st(5, &[2, 3], &[1])), only_3),
            Some(Source::Osd {
                osd: OsdNum(3),
                version: 5
            })
        );
        assert_eq!(first(OsdNum(1), Some(&st(5, &[2], &[1])), only_3), None);
    }

    #[test]
    fn a_failed_local_read_goes_to_a_ready_member_holding_the_current_version() {
        let all = |_| true;
        assert_eq!(
            after_local_failure(OsdNum(1), &[1, 2, 3].map(OsdNum), None, all),
            Some(Source::Osd {
                osd: OsdNum(2),
                version: NEWEST
            })
        );
        // osd.2 is behind: osd.3 serves, asked for the version peering saw.
        assert_eq!(
            after_local_failure(
                OsdNum(1),
                &[1, 2, 3].map(OsdNum),
                Some(&st(7, &[1, 3], &[2])),
                all
            ),
            Some(Source::Osd {
                osd: OsdNum(3),
                version: 7
            })
        );
        let not_3 = |o: OsdNum| o != OsdNum(3);
        assert_eq!(
            after_local_failure(
                OsdNum(1),
                &[1, 2, 3].map(OsdNum),
                Some(&st(7, &[1, 3], &[2])),
                not_3
            ),
            None
        );
        assert_eq!(
            after_local_failure(OsdNum(1), &[OsdNum(1)], None, all),
            None
        );
    }
}
