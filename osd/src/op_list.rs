//! A listing of a whole PG on its primary (SEC_LIST with `OSD_LIST_PRIMARY`, as clients
//! send to find an image's objects): the objects of every live member's store, and the
//! objects peering found elsewhere (the PG's map of non-clean objects), each once at its
//! newest version.
//!
//! Pure: [`ListOp::advance`] takes the listing of one member (sub-op `tag`) and, once all
//! are in, returns the answer; `primary.rs` sends the listings and the reply. A member
//! that cannot be listed fails the whole answer (the client retries): an answer missing a
//! member's objects would look complete.

use std::collections::BTreeMap;

use vitastor_blockstore::{ObjVerId, ObjectId};
use vitastor_protocol::errno::Errno;

/// One PG listing in progress. See the module docs.
#[derive(Debug)]
pub struct ListOp {
    waiting: Vec<bool>,
    newest: BTreeMap<ObjectId, u64>,
    errno: Option<Errno>,
    stable_limit: usize,
}

impl ListOp {
    /// A listing of `members` sub-ops (tags `0..members`) that starts from `known` (the
    /// PG's non-clean objects) and answers at most `stable_limit` objects (0: all).
    pub fn new(
        members: usize,
        known: impl IntoIterator<Item = ObjVerId>,
        stable_limit: u32,
    ) -> ListOp {
        let mut op = ListOp {
            waiting: vec![true; members],
            newest: BTreeMap::new(),
            errno: None,
            stable_limit: stable_limit as usize,
        };
        op.merge(known);
        op
    }

    fn merge(&mut self, list: impl IntoIterator<Item = ObjVerId>) {
        for ov in list {
            let v = self.newest.entry(ov.oid).or_insert(0);
            *v = (*v).max(ov.version);
        }
    }

    /// Sub-op `tag` listed `result`; returns the answer once every member is in. A result
    /// the op does not wait for changes nothing.
    pub fn advance(
        &mut self,
        tag: u32,
        result: Result<Vec<ObjVerId>, Errno>,
    ) -> Option<Result<Vec<ObjVerId>, Errno>> {
        let slot = self.waiting.get_mut(tag as usize).filter(|w| **w)?;
        *slot = false;
        match result {
            Ok(list) => self.merge(list),
            Err(e) => {
                self.errno.get_or_insert(e);
            }
        }
        if self.waiting.contains(&true) {
            return None;
        }
        if let Some(e) = self.errno {
            return Some(Err(e));
        }
        let all = std::mem::take(&mut self.newest)
            .into_iter()
            .map(|(oid, version)| ObjVerId::new(oid, version));
        Some(Ok(match self.stable_limit {
            0 => all.collect(),
            n => all.take(n).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use vitastor_blockstore::{ObjVerId, ObjectId};
    use vitastor_protocol::errno::Errno;

    use super::ListOp;

    fn ov(stripe: u64, version: u64) -> ObjVerId {
        ObjVerId::new(ObjectId::new(1 << 48, stripe), version)
    }

    #[test]
    fn every_member_and_the_pg_map_each_object_once_at_its_newest() {
        let mut op = ListOp::new(2, [ov(9, 4)], 0);
        assert_eq!(op.advance(0, Ok(vec![ov(1, 3), ov(2, 1)])), None);
        // A repeated or unknown answer changes nothing.
        assert_eq!(op.advance(0, Err(Errno::EIO)), None);
        assert_eq!(op.advance(5, Ok(vec![ov(7, 1)])), None);
        assert_eq!(
            op.advance(1, Ok(vec![ov(1, 2), ov(3, 1)])),
            Some(Ok(vec![ov(1, 3), ov(2, 1), ov(3, 1), ov(9, 4)]))
        );
    }

    #[test]
    fn a_member_that_cannot_be_listed_fails_the_answer() {
        let mut op = ListOp::new(2, [], 0);
        assert_eq!(op.advance(1, Err(Errno::EPIPE)), None);
        assert_eq!(op.advance(0, Ok(vec![ov(1, 1)])), Some(Err(Errno::EPIPE)));
    }

    #[test]
    fn the_stable_limit_caps_the_answer() {
        let mut op = ListOp::new(1, [], 2);
        assert_eq!(
            op.advance(0, Ok(vec![ov(3, 1), ov(1, 1), ov(2, 1)])),
            Some(Ok(vec![ov(1, 1), ov(2, 1)]))
        );
    }
}
