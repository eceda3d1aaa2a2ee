//! The stabilizes of EC writes gathered over one loop turn: every part version the writes of
//! a turn want stabilized on one OSD (or the local store) goes in one SEC_STABILIZE list,
//! sent at the end of the turn, instead of one request per part per write.
//!
//! A batch's sub-op belongs to its *leader*, its first member's op: that op waits for the
//! answer itself (its own stabilize is in the list), so it outlives the sub-op. The answer,
//! success or error, is every member's: the store validates a whole list before it writes
//! any of it, and a lost peer leaves the whole list unknown, so no member can tell that its
//! own versions were stabilized. A member hearing an error does what a failed stabilize
//! always did: its PG peers again and settles the object (see [`super::write`]).
//!
//! Ordering: an EC write holds its object's lock until all of its stabilizes are answered,
//! so a batch never carries two versions of one object, and a later write of an object is
//! never stabilized before an earlier one.
//!
//! What it must never do: answer a member before its batch is answered, or answer it twice.

use vitastor_blockstore::ObjVerId;
use vitastor_layout::OsdNum;

/// One part's stabilize that an EC write wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The write's op slot.
    pub op: usize,
    /// The part.
    pub part: u32,
    /// Where the part is.
    pub osd: OsdNum,
    /// The part object and its new version.
    pub obj: ObjVerId,
}

/// A write waiting in a batch for one of its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The write's op slot.
    pub op: usize,
    /// The part.
    pub part: u32,
    /// The part object and its new version (to tell the write still waits for it).
    pub obj: ObjVerId,
}

/// One SEC_STABILIZE (or local stabilize) of many part versions on one OSD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Where it goes.
    pub osd: OsdNum,
    /// What it stabilizes, in member order.
    pub list: Vec<ObjVerId>,
    /// Who waits for it, in the order their stabilizes were wanted.
    pub members: Vec<Member>,
}

impl Batch {
    /// The op that owns the batch's sub-op: its first member (see the module docs).
    pub fn leader(&self) -> usize {
        self.members[0].op
    }
}

/// The batches for the stabilizes `wanted` in one turn: one per OSD, split only past `max`
/// entries (the protocol's list limit); within an OSD in the order they were wanted.
pub fn gather(mut wanted: Vec<Wanted>, max: usize) -> Vec<Batch> {
    let max = max.max(1);
    // Stable: the OSDs' entries keep the order their writes wanted them in.
    wanted.sort_by_key(|w| w.osd);
    let mut out: Vec<Batch> = Vec::new();
    for w in wanted {
        let member = Member {
            op: w.op,
            part: w.part,
            obj: w.obj,
        };
        match out.last_mut() {
            Some(b) if b.osd == w.osd && b.list.len() < max => {
                b.list.push(w.obj);
                b.members.push(member);
            }
            _ => out.push(Batch {
                osd: w.osd,
                list: vec![w.obj],
                members: vec![member],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use vitastor_blockstore::{AlignedBuf, ObjectId};
    use vitastor_protocol::errno::Errno;

    use super::*;
    use crate::ec::codec::Codec;
    use crate::ec::geometry::Geometry;
    use crate::ec::write::{Action, EcWriteOp, Event, Facts};

    fn facts(members: Vec<Option<OsdNum>>) -> Facts {
        crate::ec::write::tests::facts(members, 0, true)
    }

    /// Writes of new objects `0..n` on `sets[i % sets.len()]`, driven to their stabilizes
    /// (every part write answered): the writes and the stabilizes they want, as the executor
    /// queues them.
    fn stabilizing(n: usize, sets: &[Vec<Option<OsdNum>>]) -> (Vec<EcWriteOp>, Vec<Wanted>) {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let codec = Codec::xor(2).unwrap();
        let mut ops = Vec::new();
        let mut wanted = Vec::new();
        for i in 0..n {
            let set = sets[i % sets.len()].clone();
            let mut op = EcWriteOp::new(geo, 0, 0, AlignedBuf::from_slice(&[i as u8; 4096]));
            let writes = op.advance(&codec, Event::Locked(facts(set)));
            let mut out = Vec::new();
            for a in writes {
                let Action::Write { part, .. } = a else {
                    panic!("a new object is written at once: {a:?}")
                };
                out.extend(op.advance(
                    &codec,
                    Event::Sub {
                        part,
                        result: Ok(()),
                    },
                ));
            }
            for a in out {
                if let Action::Stabilize { part, osd, version } = a {
                    let oid = ObjectId::new(1 << 48, i as u64 * 4 + u64::from(part));
                    wanted.push(Wanted {
                        op: i,
                        part,
                        osd,
                        obj: ObjVerId::new(oid, version),
                    });
                }
            }
            ops.push(op);
        }
        (ops, wanted)
    }

    fn live(osds: &[u64]) -> Vec<Option<OsdNum>> {
        osds.iter().map(|&o| Some(OsdNum(o))).collect()
    }

    /// Answers `batch` with `result`, as the executor does: every member hears it.
    fn answer(ops: &mut [EcWriteOp], batch: &Batch, result: Result<(), Errno>) -> Vec<Vec<Action>> {
        let codec = Codec::xor(2).unwrap();
        batch
            .members
            .iter()
            .map(|m| {
                ops[m.op].advance(
                    &codec,
                    Event::Sub {
                        part: m.part,
                        result,
                    },
                )
            })
            .collect()
    }

    /// 40 writes of one turn on three OSDs: three stabilizes, one per OSD, each carrying
    /// every write's part there; each write ends when its last batch is answered.
    #[test]
    fn the_stabilizes_of_a_turn_go_as_one_list_per_osd() {
        let (mut ops, wanted) = stabilizing(40, &[live(&[1, 2, 3]), live(&[2, 3, 1])]);
        assert_eq!(wanted.len(), 120);
        let batches = gather(wanted.clone(), 1024);
        assert_eq!(
            batches
                .iter()
                .map(|b| (b.osd, b.list.len()))
                .collect::<Vec<_>>(),
            [(OsdNum(1), 40), (OsdNum(2), 40), (OsdNum(3), 40)]
        );
        for b in &batches {
            assert_eq!(b.leader(), 0, "the first write leads");
            let ops_in: Vec<usize> = b.members.iter().map(|m| m.op).collect();
            assert_eq!(ops_in, (0..40).collect::<Vec<_>>(), "in the order wanted");
            assert!(b.members.iter().zip(&b.list).all(|(m, o)| m.obj == *o));
        }
        for (i, b) in batches.iter().enumerate() {
            let heard = answer(&mut ops, b, Ok(()));
            let last = i == batches.len() - 1;
            for a in heard {
                assert_eq!(a, if last { vec![Action::Unlock] } else { vec![] });
            }
        }
        assert!(ops.iter().all(EcWriteOp::is_done));
    }

    /// A list longer than the protocol allows is split; each piece has its own leader.
    #[test]
    fn a_batch_is_split_past_the_list_limit() {
        let (_, wanted) = stabilizing(5, &[live(&[1, 2, 3])]);
        let batches = gather(wanted, 2);
        let shape: Vec<(OsdNum, usize, usize)> = batches
            .iter()
            .map(|b| (b.osd, b.list.len(), b.leader()))
            .collect();
        let mut expect = Vec::new();
        for osd in 1..=3 {
            expect.extend([
                (OsdNum(osd), 2, 0),
                (OsdNum(osd), 2, 2),
                (OsdNum(osd), 1, 4),
            ]);
        }
        assert_eq!(shape, expect);
    }

    /// A failed batch fails every write in it (each peers its PG again; the client already
    /// heard when every position took the write, else it hears the error); the writes
    /// that had nothing on that OSD finish normally.
    #[test]
    fn a_batch_error_is_every_members_error() {
        let sets = [live(&[1, 2, 3]), live(&[4, 5, 6])];
        let (mut ops, wanted) = stabilizing(6, &sets);
        let batches = gather(wanted, 1024);
        assert_eq!(batches.len(), 6);
        for b in &batches {
            let result = if b.osd == OsdNum(2) {
                Err(Errno::EPIPE)
            } else {
                Ok(())
            };
            answer(&mut ops, b, result);
        }
        assert!(ops.iter().all(EcWriteOp::is_done));

        // Again, checking what each write did at its end.
        let (mut ops, wanted) = stabilizing(6, &sets);
        let batches = gather(wanted, 1024);
        let mut ends = vec![Vec::new(); ops.len()];
        for b in &batches {
            let result = if b.osd == OsdNum(2) {
                Err(Errno::EIO)
            } else {
                Ok(())
            };
            for (m, a) in b.members.iter().zip(answer(&mut ops, b, result)) {
                ends[m.op].extend(a);
            }
        }
        for (i, end) in ends.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(end, &[Action::Repeer, Action::Unlock], "write {i}");
            } else {
                assert_eq!(end, &[Action::Unlock], "write {i}");
            }
        }

        // A write that missed a position has not answered its client yet: it hears the
        // batch's error.
        let down = vec![Some(OsdNum(1)), None, Some(OsdNum(3))];
        let (mut ops, wanted) = stabilizing(2, &[down]);
        let batches = gather(wanted, 1024);
        assert_eq!(batches.len(), 2);
        answer(&mut ops, &batches[1], Ok(()));
        let heard = answer(&mut ops, &batches[0], Err(Errno::EPIPE));
        for a in heard {
            assert_eq!(
                a,
                [
                    Action::Repeer,
                    Action::Reply(Err(Errno::EPIPE)),
                    Action::Unlock
                ]
            );
        }
    }
}
