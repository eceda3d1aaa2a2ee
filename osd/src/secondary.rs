//! Secondary (OSD ↔ OSD) ops served straight from the blockstore: each decoded SEC_* request
//! becomes one or more [`BsOp`]s, and each blockstore completion becomes the next op or the
//! reply.
//!
//! This module does no I/O and knows nothing of sockets: [`start`] turns a request into a
//! [`Step`], [`complete`] turns a blockstore result into the next [`Step`]. A multi-op request
//! (SEC_READ_BMP, TEST_SYNC_STAB_ALL) carries its progress in its [`SecOp`], so the caller only
//! routes completions back by blockstore op id.
//!
//! Blockstore errors reach the wire through [`bs_errno`] and nothing else.

use vitastor_blockstore::{AlignedBuf, BsError, BsOp, BsReply, BsResult, ListFilter, NEWEST};
use vitastor_protocol::errno::Errno;
use vitastor_protocol::{
    encode_error_reply, encode_obj_ver_ids, encode_reply, obj_ver_ids, ObjVerId, Opcode, Packet,
    Reply, ReplyOp, Request, RequestOp, SecDeleteReply, SecListOp, SecListReply, SecRwOp,
    SecRwReply, MAX_READ_BMP_REPLY_BYTES, MAX_SEC_LIST_ENTRIES, OSD_PACKET_SIZE,
};

/// What the local store looks like to a peer; fixed for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreGeometry {
    /// Bytes of one object's allocation bitmap.
    pub bitmap_bytes: usize,
}

/// One reply ready to be queued: the packet, then `payload`, then `data`.
#[derive(Debug)]
pub struct ReplyMsg {
    /// The 128-byte reply packet.
    pub packet: Packet,
    /// Bytes that follow the packet (bitmap, list, JSON).
    pub payload: Vec<u8>,
    /// Read data that follows the payload, kept in the blockstore's buffer to avoid a copy.
    pub data: Option<AlignedBuf>,
}

impl ReplyMsg {
    /// A reply with a payload.
    pub fn new(reply: &Reply, payload: Vec<u8>) -> ReplyMsg {
        let mut packet = [0u8; OSD_PACKET_SIZE];
        encode_reply(reply, &mut packet);
        ReplyMsg {
            packet,
            payload,
            data: None,
        }
    }

    /// A header-only error reply (`retval` is `-errno`).
    pub fn error(id: u64, opcode: u64, errno: Errno) -> ReplyMsg {
        let mut packet = [0u8; OSD_PACKET_SIZE];
        encode_error_reply(id, opcode, errno, &mut packet);
        ReplyMsg {
            packet,
            payload: Vec::new(),
            data: None,
        }
    }

    /// Bytes this reply puts on the wire.
    pub fn wire_len(&self) -> usize {
        OSD_PACKET_SIZE + self.payload.len() + self.data.as_ref().map_or(0, |d| d.len())
    }
}

/// What to do next for one request.
#[derive(Debug)]
pub enum Step {
    /// Send this reply; the request is finished.
    Reply(ReplyMsg),
    /// Submit this blockstore op and pass its result to [`complete`] with the [`SecOp`].
    Submit(SecOp, BsOp),
}

/// A secondary request waiting for the blockstore.
#[derive(Debug)]
pub struct SecOp {
    id: u64,
    opcode: Opcode,
    kind: Kind,
}

impl SecOp {
    /// The name this op is counted under in `osd/stats` `op_stats`.
    pub fn stat_name(&self) -> &'static str {
        self.opcode.stat_name()
    }

    /// Payload bytes the op moves (read or written data).
    pub fn data_bytes(&self) -> u64 {
        match self.kind {
            Kind::Read { len, .. } | Kind::Write { len } => len as u64,
            _ => 0,
        }
    }
}

#[derive(Debug)]
enum Kind {
    Read {
        attr_len: u32,
        len: u32,
    },
    Write {
        len: u32,
    },
    Delete,
    Done,
    List {
        stable_limit: u32,
    },
    ReadBmp {
        list: Vec<ObjVerId>,
        next: usize,
        out: Vec<u8>,
    },
    SyncStabAll(SyncStabStage),
}

/// TEST_SYNC_STAB_ALL runs sync, then a full listing, then one stabilize of every unstable
/// version the listing found.
#[derive(Debug, Clone, Copy)]
enum SyncStabStage {
    Syncing,
    Listing,
    Stabilizing,
}

fn bs_list(bytes: &[u8]) -> Result<Vec<ObjVerId>, vitastor_protocol::ProtocolError> {
    Ok(obj_ver_ids(bytes)?.collect())
}

/// The first step of a secondary request, or `None` if `request` is not one (SHOW_CONFIG,
/// PING, client ops and SEC_LOCK are the server's business). `payload` is the frame's payload,
/// exactly [`Request::payload_len`] bytes, already bounded by the decoder; a write takes it
/// (leaving it empty) to write its data from where it arrived.
pub fn start(request: &Request, payload: &mut AlignedBuf, geo: &StoreGeometry) -> Option<Step> {
    let id = request.id;
    let opcode = request.opcode();
    let op = |kind| SecOp { id, opcode, kind };
    let step = match request.op {
        RequestOp::SecRead(rw) => Step::Submit(
            op(Kind::Read {
                attr_len: rw.attr_len,
                len: rw.len,
            }),
            BsOp::Read {
                oid: rw.oid,
                // No object has a version 0, so a read "up to version 0" could only ever
                // find nothing; peers use it to mean the newest version.
                version: if rw.version == 0 { NEWEST } else { rw.version },
                offset: rw.offset,
                len: rw.len,
            },
        ),
        RequestOp::SecWrite(rw) => write_step(op(Kind::Write { len: rw.len }), rw, payload, false),
        RequestOp::SecWriteStable(rw) => {
            write_step(op(Kind::Write { len: rw.len }), rw, payload, true)
        }
        RequestOp::SecSync(_) => Step::Submit(op(Kind::Done), BsOp::Sync),
        RequestOp::SecStabilize(_) | RequestOp::SecRollback(_) => match bs_list(payload) {
            Ok(list) if matches!(request.op, RequestOp::SecStabilize(_)) => {
                Step::Submit(op(Kind::Done), BsOp::Stabilize(list))
            }
            Ok(list) => Step::Submit(op(Kind::Done), BsOp::Rollback(list)),
            Err(e) => Step::Reply(ReplyMsg::error(id, opcode.code(), protocol_errno(&e))),
        },
        RequestOp::SecDelete(del) => Step::Submit(
            op(Kind::Delete),
            // Deletions are two-phase like writes: the primary stabilizes them afterwards,
            // as the original does.
            BsOp::Delete {
                oid: del.oid,
                version: del.version,
                stable: false,
            },
        ),
        RequestOp::SecList(list) => Step::Submit(
            op(Kind::List {
                stable_limit: list.stable_limit,
            }),
            BsOp::List(list_filter(&list)),
        ),
        RequestOp::SecReadBmp(_) => {
            let list = match bs_list(payload) {
                Ok(list) => list,
                Err(e) => {
                    return Some(Step::Reply(ReplyMsg::error(
                        id,
                        opcode.code(),
                        protocol_errno(&e),
                    )))
                }
            };
            // A reply the peer's decoder would refuse (and drop the connection over) is
            // better refused here, before any work.
            let reply_len = list.len() as u64 * (8 + geo.bitmap_bytes as u64);
            if reply_len > MAX_READ_BMP_REPLY_BYTES {
                return Some(Step::Reply(ReplyMsg::error(
                    id,
                    opcode.code(),
                    Errno::EINVAL,
                )));
            }
            let out = Vec::with_capacity(reply_len as usize);
            read_bmp_next(id, opcode, list, 0, out)
        }
        RequestOp::TestSyncStabAll => {
            Step::Submit(op(Kind::SyncStabAll(SyncStabStage::Syncing)), BsOp::Sync)
        }
        RequestOp::ShowConfig(_)
        | RequestOp::Read(_)
        | RequestOp::Write(_)
        | RequestOp::Sync
        | RequestOp::Delete(_)
        | RequestOp::Ping
        | RequestOp::Scrub(_)
        | RequestOp::Describe(_)
        | RequestOp::SecLock(_) => return None,
    };
    Some(step)
}

fn write_step(op: SecOp, rw: SecRwOp, payload: &mut AlignedBuf, stable: bool) -> Step {
    // The decoder delivers exactly attr_len + len bytes.
    let mut data = std::mem::replace(payload, AlignedBuf::new(0));
    let head = rw.attr_len as usize;
    let bitmap = (head > 0).then(|| data[..head].to_vec());
    data.skip(head);
    // Received to end on a block boundary, whole blocks of data start on one; anything else
    // (a peer writing at a finer granularity than our alignment) needs an aligned copy for
    // O_DIRECT.
    if !data.is_aligned() {
        data = AlignedBuf::from_slice(&data);
    }
    Step::Submit(
        op,
        BsOp::Write {
            oid: rw.oid,
            version: rw.version,
            offset: rw.offset,
            data,
            bitmap,
            stable,
        },
    )
}

/// The wire's SEC_LIST fields are the blockstore's filter, field for field.
pub fn list_filter(list: &SecListOp) -> ListFilter {
    ListFilter {
        pg_count: list.pg_count,
        pg_num: list.list_pg,
        pg_stripe_size: list.pg_stripe_size,
        min_inode: list.min_inode,
        max_inode: list.max_inode,
        min_stripe: list.min_stripe,
        max_stripe: list.max_stripe,
    }
}

fn read_bmp_next(id: u64, opcode: Opcode, list: Vec<ObjVerId>, next: usize, out: Vec<u8>) -> Step {
    match list.get(next).copied() {
        Some(ov) => Step::Submit(
            SecOp {
                id,
                opcode,
                kind: Kind::ReadBmp { list, next, out },
            },
            BsOp::ReadBitmap {
                oid: ov.oid,
                version: ov.version,
            },
        ),
        None => {
            let retval = out.len() as i64;
            Step::Reply(ReplyMsg::new(
                &Reply {
                    id,
                    retval,
                    op: ReplyOp::SecReadBmp,
                },
                out,
            ))
        }
    }
}

/// A bitmap of exactly `len` bytes: the store's own, cut or zero-padded to what the peer
/// asked for (a peer with another bitmap size gets what it can frame, as in the original).
fn fit_bitmap(mut bitmap: Vec<u8>, len: usize) -> Vec<u8> {
    bitmap.resize(len, 0);
    bitmap
}

/// The next step of `op` now that its blockstore op finished with `result`.
pub fn complete(op: SecOp, result: BsResult<BsReply>, geo: &StoreGeometry) -> Step {
    let SecOp { id, opcode, kind } = op;
    let reply = |retval: i64, body: ReplyOp, payload: Vec<u8>| {
        Step::Reply(ReplyMsg::new(
            &Reply {
                id,
                retval,
                op: body,
            },
            payload,
        ))
    };
    let result = match result {
        Ok(r) => r,
        Err(e) => return error_step(id, opcode, &e),
    };
    match (kind, result) {
        (
            Kind::Read { attr_len, len },
            BsReply::Read {
                version,
                bitmap,
                data,
            },
        ) => {
            let body = ReplyOp::SecRead(SecRwReply { version, attr_len });
            let mut msg = ReplyMsg::new(
                &Reply {
                    id,
                    retval: i64::from(len),
                    op: body,
                },
                fit_bitmap(bitmap, attr_len as usize),
            );
            msg.data = Some(data);
            Step::Reply(msg)
        }
        (Kind::Write { len }, BsReply::Written { version, .. }) => {
            let body = SecRwReply {
                version,
                attr_len: 0,
            };
            let body = match opcode {
                Opcode::SecWriteStable => ReplyOp::SecWriteStable(body),
                _ => ReplyOp::SecWrite(body),
            };
            reply(i64::from(len), body, Vec::new())
        }
        (Kind::Delete, BsReply::Written { version, .. }) => reply(
            0,
            ReplyOp::SecDelete(SecDeleteReply { version }),
            Vec::new(),
        ),
        (Kind::Done, BsReply::Done) => reply(0, ReplyOp::empty(opcode), Vec::new()),
        (
            Kind::List { stable_limit },
            BsReply::List {
                mut stable,
                unstable,
            },
        ) => {
            if stable_limit != 0 {
                stable.truncate(stable_limit as usize);
            }
            let total = stable.len() + unstable.len();
            // The peer's decoder refuses longer lists and would drop the connection; the
            // primary has to list with a narrower filter instead.
            if total as u64 > MAX_SEC_LIST_ENTRIES {
                return Step::Reply(ReplyMsg::error(id, opcode.code(), Errno::EINVAL));
            }
            let mut payload = Vec::new();
            encode_obj_ver_ids(&stable, &mut payload);
            encode_obj_ver_ids(&unstable, &mut payload);
            let body = SecListReply {
                stable_count: stable.len() as u64,
                flags: 0,
            };
            reply(total as i64, ReplyOp::SecList(body), payload)
        }
        (
            Kind::ReadBmp {
                list,
                next,
                mut out,
            },
            BsReply::Bitmap { version, bitmap },
        ) => {
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(&fit_bitmap(bitmap, geo.bitmap_bytes));
            read_bmp_next(id, opcode, list, next + 1, out)
        }
        (Kind::SyncStabAll(SyncStabStage::Syncing), BsReply::Done) => Step::Submit(
            SecOp {
                id,
                opcode,
                kind: Kind::SyncStabAll(SyncStabStage::Listing),
            },
            BsOp::List(ListFilter::default()),
        ),
        (Kind::SyncStabAll(SyncStabStage::Listing), BsReply::List { unstable, .. }) => {
            // Stabilizing the newest unstable version of an object stabilizes the older
            // ones too. A write from another connection racing this test-only op may be
            // listed before it is synced; the stabilize then fails with the blockstore's
            // "not synced" error, which the caller sees and may retry.
            Step::Submit(
                SecOp {
                    id,
                    opcode,
                    kind: Kind::SyncStabAll(SyncStabStage::Stabilizing),
                },
                BsOp::Stabilize(unstable),
            )
        }
        (Kind::SyncStabAll(SyncStabStage::Stabilizing), BsReply::Done) => {
            reply(0, ReplyOp::TestSyncStabAll, Vec::new())
        }
        (kind, other) => {
            // Each BsOp has exactly one reply variant; anything else is a blockstore bug.
            // Fail the request rather than the OSD.
            eprintln!("vitastor-osd: blockstore answered {opcode} ({kind:?}) with {other:?}");
            Step::Reply(ReplyMsg::error(id, opcode.code(), Errno::EIO))
        }
    }
}

fn error_step(id: u64, opcode: Opcode, e: &BsError) -> Step {
    Step::Reply(ReplyMsg::error(id, opcode.code(), bs_errno(e)))
}

/// The errno of a blockstore error. The blockstore reports it as a (negative) `retval`;
/// this is the one place that sign is handled, for the secondary and the primary alike.
pub(crate) fn bs_errno(e: &BsError) -> Errno {
    Errno::new(e.errno()).unwrap_or(Errno::EIO)
}

/// The errno of a protocol error (the codec's constants are positive).
pub(crate) fn protocol_errno(e: &vitastor_protocol::ProtocolError) -> Errno {
    Errno::new(e.errno()).unwrap_or(Errno::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitastor_protocol::{decode_reply, ObjectId, SecStabOp, SecSyncOp};

    const GEO: StoreGeometry = StoreGeometry { bitmap_bytes: 4 };

    fn submit(step: Step) -> (SecOp, BsOp) {
        match step {
            Step::Submit(op, bs) => (op, bs),
            Step::Reply(r) => panic!("expected a blockstore op, got {r:?}"),
        }
    }

    fn replied(step: Step) -> (Reply, Vec<u8>) {
        match step {
            Step::Reply(r) => (decode_reply(&r.packet).unwrap(), r.payload),
            Step::Submit(op, bs) => panic!("expected a reply, got {op:?} {bs:?}"),
        }
    }

    #[test]
    fn write_splits_bitmap_and_data() {
        let rw = SecRwOp {
            oid: ObjectId {
                inode: 1,
                stripe: 0,
            },
            version: 7,
            offset: 4096,
            len: 4096,
            attr_len: 4,
            flags: 0,
        };
        let req = Request {
            id: 3,
            op: RequestOp::SecWriteStable(rw),
        };
        // As the connection receives it: the data ends (so starts) on a block boundary.
        let mut payload = AlignedBuf::for_receive(4 + 4096);
        payload.copy_from_slice(&[vec![0xf0, 0, 0, 0], vec![0xab; 4096]].concat());
        let data_at = payload[4..].as_ptr();
        let (op, bs) = submit(start(&req, &mut payload, &GEO).unwrap());
        match bs {
            BsOp::Write {
                version,
                offset,
                data,
                bitmap,
                stable,
                ..
            } => {
                assert_eq!((version, offset, stable), (7, 4096, true));
                assert_eq!(bitmap, Some(vec![0xf0, 0, 0, 0]));
                assert!(data.iter().all(|&b| b == 0xab) && data.len() == 4096);
                assert_eq!(data.as_ptr(), data_at, "written from where it arrived");
            }
            other => panic!("{other:?}"),
        }
        let ok = Ok(BsReply::Written {
            version: 7,
            data: None,
        });
        let (reply, payload) = replied(complete(op, ok, &GEO));
        assert_eq!(reply.retval, 4096);
        assert_eq!(
            reply.op,
            ReplyOp::SecWriteStable(SecRwReply {
                version: 7,
                attr_len: 0
            })
        );
        assert!(payload.is_empty());
    }

    #[test]
    fn errors_map_through_bs_errno() {
        let req = Request {
            id: 9,
            op: RequestOp::SecSync(SecSyncOp { flags: 0 }),
        };
        let (op, bs) = submit(start(&req, &mut AlignedBuf::new(0), &GEO).unwrap());
        assert!(matches!(bs, BsOp::Sync));
        let (reply, _) = replied(complete(op, Err(BsError::NoSpace("journal")), &GEO));
        assert_eq!(reply.retval, -28);
        assert_eq!(reply.id, 9);
    }

    #[test]
    fn misaligned_list_is_einval() {
        let req = Request {
            id: 1,
            op: RequestOp::SecStabilize(SecStabOp { len: 24, flags: 0 }),
        };
        // The decoder refuses misaligned lists itself; a direct caller still gets -EINVAL.
        let (reply, _) = replied(start(&req, &mut AlignedBuf::from_slice(&[0; 25]), &GEO).unwrap());
        assert_eq!(reply.retval, -22);
    }

    #[test]
    fn list_puts_stable_first_and_honours_stable_limit() {
        let list = SecListOp {
            stable_limit: 1,
            ..SecListOp::default()
        };
        let req = Request {
            id: 2,
            op: RequestOp::SecList(list),
        };
        let (op, _) = submit(start(&req, &mut AlignedBuf::new(0), &GEO).unwrap());
        let ov = |s, v| ObjVerId::new(ObjectId::new(1, s), v);
        let result = Ok(BsReply::List {
            stable: vec![ov(0, 1), ov(1, 2)],
            unstable: vec![ov(2, 5)],
        });
        let (reply, payload) = replied(complete(op, result, &GEO));
        assert_eq!(reply.retval, 2);
        assert_eq!(
            reply.op,
            ReplyOp::SecList(SecListReply {
                stable_count: 1,
                flags: 0
            })
        );
        let got: Vec<ObjVerId> = obj_ver_ids(&payload).unwrap().collect();
        assert_eq!(
            got.iter()
                .map(|e| (e.oid.stripe, e.version))
                .collect::<Vec<_>>(),
            [(0, 1), (2, 5)]
        );
    }

    #[test]
    fn read_bmp_walks_the_list() {
        let entries: Vec<ObjVerId> = (0..3)
            .map(|i| ObjVerId {
                oid: ObjectId {
                    inode: 1,
                    stripe: i,
                },
                version: NEWEST,
            })
            .collect();
        let mut payload = Vec::new();
        encode_obj_ver_ids(&entries, &mut payload);
        let op = vitastor_protocol::SecReadBmpOp {
            len: payload.len() as u64,
            flags: 0,
        };
        let req = Request {
            id: 4,
            op: RequestOp::SecReadBmp(op),
        };
        let mut step = start(&req, &mut AlignedBuf::from_slice(&payload), &GEO).unwrap();
        for i in 0..3u64 {
            let (op, bs) = submit(step);
            assert!(matches!(bs, BsOp::ReadBitmap { oid, .. } if oid.stripe == i));
            step = complete(
                op,
                Ok(BsReply::Bitmap {
                    version: i + 10,
                    bitmap: vec![i as u8; 4],
                }),
                &GEO,
            );
        }
        let (reply, payload) = replied(step);
        assert_eq!(reply.retval, 36);
        assert_eq!(&payload[12..20], &11u64.to_le_bytes());
        assert_eq!(&payload[20..24], &[1, 1, 1, 1]);
    }

    #[test]
    fn non_secondary_ops_are_not_handled_here() {
        for op in [RequestOp::Ping, RequestOp::Sync] {
            assert!(start(&Request { id: 1, op }, &mut AlignedBuf::new(0), &GEO).is_none());
        }
    }
}
