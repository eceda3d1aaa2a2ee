//! What a version-creating fan-out (a client write, a delete's tombstone) leaves behind,
//! decided from the per-target results alone, and the object's state afterwards.
//!
//! Pure decisions: no I/O and no server state; `primary.rs` applies the verdict. It must
//! never call a version written where a target failed, and never guess about a target whose
//! connection was lost mid-op (it may or may not have the version).

use vitastor_layout::OsdNum;
use vitastor_protocol::errno::Errno;

use crate::pg::ObjState;

/// The outcome of one fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every target has the version: the op succeeded.
    Written,
    /// A peer was lost during the op: what it holds is unknown, so the PG peers again (the
    /// lost peer makes it do so anyway) and the listings tell.
    Repeer,
    /// Every failure was a refusal by a store (out of space, device error, version
    /// conflict): `holders` have the version, the other targets do not.
    Partial {
        /// Targets that hold the version (possibly none).
        holders: Vec<OsdNum>,
    },
}

/// The verdict for a fan-out to `targets` where `failed` lists the targets that failed.
pub fn verdict(targets: &[OsdNum], failed: &[(OsdNum, Errno)]) -> Verdict {
    if failed.is_empty() {
        return Verdict::Written;
    }
    if failed.iter().any(|&(_, e)| e == Errno::EPIPE) {
        return Verdict::Repeer;
    }
    Verdict::Partial {
        holders: targets
            .iter()
            .copied()
            .filter(|t| !failed.iter().any(|(o, _)| o == t))
            .collect(),
    }
}

/// The object's state once `holders` (not empty) have `version` and the `failed` targets
/// do not: every other OSD known to have a copy now has a stale one. `None` when no target
/// has the version (nothing changed anywhere).
pub fn partial_state(
    prev: Option<&ObjState>,
    version: u64,
    holders: &[OsdNum],
    failed: &[(OsdNum, Errno)],
) -> Option<ObjState> {
    if holders.is_empty() {
        return None;
    }
    let mut stale: Vec<OsdNum> = prev
        .into_iter()
        .flat_map(|st| st.holders.iter().chain(&st.stale))
        .chain(failed.iter().map(|(o, _)| o))
        .copied()
        .filter(|o| !holders.contains(o))
        .collect();
    stale.sort_unstable();
    stale.dedup();
    Some(ObjState {
        version,
        holders: holders.to_vec(),
        stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(list: &[u64]) -> Vec<OsdNum> {
        list.iter().copied().map(OsdNum).collect()
    }

    fn f(list: &[(u64, Errno)]) -> Vec<(OsdNum, Errno)> {
        list.iter().map(|&(n, e)| (OsdNum(n), e)).collect()
    }

    #[test]
    fn every_target_written() {
        assert_eq!(verdict(&o(&[1, 2, 3]), &[]), Verdict::Written);
    }

    #[test]
    fn a_store_refusal_leaves_the_others_holding_it() {
        let v = verdict(&o(&[1, 2, 3]), &f(&[(2, Errno::ENOSPC)]));
        assert_eq!(
            v,
            Verdict::Partial {
                holders: o(&[1, 3])
            }
        );
        let v = verdict(&o(&[1, 2]), &f(&[(1, Errno::EIO), (2, Errno::EROFS)]));
        assert_eq!(v, Verdict::Partial { holders: o(&[]) });
    }

    #[test]
    fn a_lost_peer_means_peering_again() {
        let failed = [(2, Errno::ENOSPC), (3, Errno::EPIPE)];
        assert_eq!(verdict(&o(&[1, 2, 3]), &f(&failed)), Verdict::Repeer);
    }

    #[test]
    fn the_partial_state_marks_everyone_else_stale() {
        let prev = ObjState {
            version: 4,
            holders: o(&[1, 2]),
            stale: o(&[7]),
        };
        let st = partial_state(Some(&prev), 5, &o(&[1]), &f(&[(2, Errno::ENOSPC)])).unwrap();
        assert_eq!(
            st,
            ObjState {
                version: 5,
                holders: o(&[1]),
                stale: o(&[2, 7]),
            }
        );
        let st = partial_state(None, 1, &o(&[2]), &f(&[(1, Errno::EIO)])).unwrap();
        assert_eq!((st.holders, st.stale), (o(&[2]), o(&[1])));
        assert_eq!(
            partial_state(Some(&prev), 5, &o(&[]), &f(&[(1, Errno::EIO)])),
            None
        );
    }
}
