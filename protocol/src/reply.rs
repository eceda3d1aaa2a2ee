//! Reply packets: one struct per body layout, [`Reply`] tying id and retval
//! to a typed op, and the rules for how many payload bytes follow a reply.
//!
//! Offsets in the layout docs count from the start of the 128-byte packet, so
//! every body starts at 32, after `magic`, `id`, `opcode` and `retval`. A
//! reply's payload length depends on the request it answers, so
//! [`Reply::payload_len`] takes that request and checks every length against
//! it and against [`crate::limits`]. Every error here is fatal: a reply cannot
//! be answered with `-EINVAL`. Nothing here allocates.

use crate::errno::Errno;
use crate::error::ProtocolError;
use crate::limits::{
    MAX_ATTR_LEN, MAX_READ_BITMAP_LEN, MAX_READ_BMP_REPLY_BYTES, MAX_SEC_LIST_ENTRIES,
    MAX_SHOW_CONFIG_JSON, OSD_RW_MAX,
};
use crate::object::OBJ_VER_ID_SIZE;
use crate::opcode::{Opcode, OSD_DEL_LEFT_ON_DEAD, OSD_DEL_SUPPORT_LEFT_ON_DEAD};
use crate::packet::{
    get_u32, get_u64, put_i64, put_u32, put_u64, Header, Packet, OSD_PACKET_SIZE,
    REPLY_HEADER_SIZE, REPLY_MAGIC, REQUEST_MAGIC,
};
use crate::request::{Request, RequestOp};

/// Reply body of READ and WRITE (`osd_reply_rw`).
///
/// Layout: `bitmap_len u32 @32, pad u32 @36, version u64 @40`. A successful
/// READ reply is followed by `bitmap_len` bitmap bytes, then `retval` data
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RwReply {
    /// Length of the allocation bitmap that follows a READ reply.
    pub bitmap_len: u32,
    /// Object version read or written.
    pub version: u64,
}

/// Most OSD numbers a DELETE reply can list: they live in the packet tail
/// after `flags` and `left_on_dead_count`, `(128 - 40) / 4` of them.
pub const LEFT_ON_DEAD_MAX: usize = (OSD_PACKET_SIZE - 40) / 4;

/// Reply body of DELETE.
///
/// Layout: `flags u32 @32, left_on_dead_count u32 @36`, then, inside the
/// packet, up to [`LEFT_ON_DEAD_MAX`] `u32` OSD numbers @40 when `flags` has
/// [`OSD_DEL_LEFT_ON_DEAD`]: the OSDs that were down, so the object may still
/// exist there. No payload follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeleteReply {
    /// [`OSD_DEL_SUPPORT_LEFT_ON_DEAD`] and/or [`OSD_DEL_LEFT_ON_DEAD`].
    pub flags: u32,
    /// How many entries of `left_on_dead` are meaningful.
    pub left_on_dead_count: u32,
    /// The packet tail holding the OSD numbers.
    pub left_on_dead: [u32; LEFT_ON_DEAD_MAX],
}

impl DeleteReply {
    /// A successful DELETE reply naming the OSDs the deletion could not reach.
    /// Only the first [`LEFT_ON_DEAD_MAX`] fit in the packet.
    pub fn with_left_on_dead(osds: &[u32]) -> DeleteReply {
        let mut reply = DeleteReply {
            flags: OSD_DEL_SUPPORT_LEFT_ON_DEAD,
            ..DeleteReply::default()
        };
        if !osds.is_empty() {
            let n = osds.len().min(LEFT_ON_DEAD_MAX);
            reply.flags |= OSD_DEL_LEFT_ON_DEAD;
            reply.left_on_dead[..n].copy_from_slice(&osds[..n]);
            reply.left_on_dead_count = n as u32;
        }
        reply
    }

    /// The OSDs the deletion may have missed. A count above what fits in the
    /// packet is clamped, as the original client does, since the list cannot
    /// extend past the packet.
    pub fn left_on_dead_osds(&self) -> &[u32] {
        if self.flags & OSD_DEL_LEFT_ON_DEAD == 0 {
            return &[];
        }
        let n = (self.left_on_dead_count as usize).min(LEFT_ON_DEAD_MAX);
        &self.left_on_dead[..n]
    }
}

/// Reply body of SEC_READ, SEC_WRITE and SEC_WRITE_STABLE.
///
/// Layout: `version u64 @32, attr_len u32 @40, pad u32 @44`. A successful
/// SEC_READ reply is followed by `attr_len` bitmap bytes, then the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecRwReply {
    /// Version read or assigned.
    pub version: u64,
    /// Length of the bitmap that follows a read reply.
    pub attr_len: u32,
}

/// Reply body of SEC_DELETE. Layout: `version u64 @32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecDeleteReply {
    /// Version of the deletion.
    pub version: u64,
}

/// Reply body of SEC_LIST.
///
/// Layout: `stable_count u64 @32, flags u64 @40`. `retval` entries of
/// `obj_ver_id` follow, the `stable_count` stable ones first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecListReply {
    /// How many of the listed versions are stable.
    pub stable_count: u64,
    /// [`crate::OSD_LIST_PRIMARY`] or 0.
    pub flags: u64,
}

/// Reply body of SEC_LOCK. Layout: `cur_primary u64 @32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecLockReply {
    /// The OSD that holds the PG lock now.
    pub cur_primary: u64,
}

/// Bytes of a reply packet after the header.
pub const REPLY_BODY_SIZE: usize = OSD_PACKET_SIZE - REPLY_HEADER_SIZE;

/// The body of a reply whose layout the spec does not give (SCRUB,
/// DESCRIBE): the 96 bytes after the header, kept verbatim. Such replies are
/// taken to carry no payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpaqueReplyBody(pub [u8; REPLY_BODY_SIZE]);

impl Default for OpaqueReplyBody {
    fn default() -> Self {
        OpaqueReplyBody([0; REPLY_BODY_SIZE])
    }
}

/// A reply op with its typed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOp {
    /// SEC_READ; `attr_len` bitmap bytes and `retval` data bytes follow.
    SecRead(SecRwReply),
    /// SEC_WRITE.
    SecWrite(SecRwReply),
    /// SEC_WRITE_STABLE.
    SecWriteStable(SecRwReply),
    /// SEC_SYNC; no body.
    SecSync,
    /// SEC_STABILIZE; no body.
    SecStabilize,
    /// SEC_ROLLBACK; no body.
    SecRollback,
    /// SEC_DELETE.
    SecDelete(SecDeleteReply),
    /// TEST_SYNC_STAB_ALL; no body.
    TestSyncStabAll,
    /// SEC_LIST; `retval` obj_ver_id entries follow.
    SecList(SecListReply),
    /// SHOW_CONFIG; no body, `retval` bytes of JSON follow.
    ShowConfig,
    /// READ; `bitmap_len` bitmap bytes and `retval` data bytes follow.
    Read(RwReply),
    /// WRITE.
    Write(RwReply),
    /// SYNC; no body.
    Sync,
    /// DELETE.
    Delete(DeleteReply),
    /// PING; no body.
    Ping,
    /// SEC_READ_BMP; no body, `retval` bytes of `{version u64, bitmap}[]` follow.
    SecReadBmp,
    /// SCRUB; opaque body.
    Scrub(OpaqueReplyBody),
    /// DESCRIBE; opaque body.
    Describe(OpaqueReplyBody),
    /// SEC_LOCK.
    SecLock(SecLockReply),
}

impl ReplyOp {
    /// The opcode this reply echoes.
    pub fn opcode(&self) -> Opcode {
        match self {
            ReplyOp::SecRead(_) => Opcode::SecRead,
            ReplyOp::SecWrite(_) => Opcode::SecWrite,
            ReplyOp::SecWriteStable(_) => Opcode::SecWriteStable,
            ReplyOp::SecSync => Opcode::SecSync,
            ReplyOp::SecStabilize => Opcode::SecStabilize,
            ReplyOp::SecRollback => Opcode::SecRollback,
            ReplyOp::SecDelete(_) => Opcode::SecDelete,
            ReplyOp::TestSyncStabAll => Opcode::TestSyncStabAll,
            ReplyOp::SecList(_) => Opcode::SecList,
            ReplyOp::ShowConfig => Opcode::ShowConfig,
            ReplyOp::Read(_) => Opcode::Read,
            ReplyOp::Write(_) => Opcode::Write,
            ReplyOp::Sync => Opcode::Sync,
            ReplyOp::Delete(_) => Opcode::Delete,
            ReplyOp::Ping => Opcode::Ping,
            ReplyOp::SecReadBmp => Opcode::SecReadBmp,
            ReplyOp::Scrub(_) => Opcode::Scrub,
            ReplyOp::Describe(_) => Opcode::Describe,
            ReplyOp::SecLock(_) => Opcode::SecLock,
        }
    }

    /// The reply op for `opcode` with an all-zero body, as an error reply
    /// carries.
    pub fn empty(opcode: Opcode) -> ReplyOp {
        match opcode {
            Opcode::SecRead => ReplyOp::SecRead(SecRwReply::default()),
            Opcode::SecWrite => ReplyOp::SecWrite(SecRwReply::default()),
            Opcode::SecWriteStable => ReplyOp::SecWriteStable(SecRwReply::default()),
            Opcode::SecSync => ReplyOp::SecSync,
            Opcode::SecStabilize => ReplyOp::SecStabilize,
            Opcode::SecRollback => ReplyOp::SecRollback,
            Opcode::SecDelete => ReplyOp::SecDelete(SecDeleteReply::default()),
            Opcode::TestSyncStabAll => ReplyOp::TestSyncStabAll,
            Opcode::SecList => ReplyOp::SecList(SecListReply::default()),
            Opcode::ShowConfig => ReplyOp::ShowConfig,
            Opcode::Read => ReplyOp::Read(RwReply::default()),
            Opcode::Write => ReplyOp::Write(RwReply::default()),
            Opcode::Sync => ReplyOp::Sync,
            Opcode::Delete => ReplyOp::Delete(DeleteReply::default()),
            Opcode::Ping => ReplyOp::Ping,
            Opcode::SecReadBmp => ReplyOp::SecReadBmp,
            Opcode::Scrub => ReplyOp::Scrub(OpaqueReplyBody::default()),
            Opcode::Describe => ReplyOp::Describe(OpaqueReplyBody::default()),
            Opcode::SecLock => ReplyOp::SecLock(SecLockReply::default()),
        }
    }
}

/// One reply: the id of the request it answers, its result and its op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Echo of the request id.
    pub id: u64,
    /// `>= 0` on success (a length or count for some ops), `-errno` on error.
    pub retval: i64,
    /// Typed body.
    pub op: ReplyOp,
}

impl Reply {
    /// The opcode this reply echoes.
    pub fn opcode(&self) -> Opcode {
        self.op.opcode()
    }

    /// How many payload bytes follow this reply, given the request it answers.
    ///
    /// Checks that the reply really answers `request` (same id and opcode),
    /// that a successful READ/SEC_READ returns exactly the requested length,
    /// that error replies announce no bitmap, and that every length is within
    /// its limit. All errors are fatal.
    pub fn payload_len(&self, request: &Request) -> Result<usize, ProtocolError> {
        if request.id != self.id {
            return Err(ProtocolError::UnknownReplyId { id: self.id });
        }
        let opcode = self.opcode();
        if request.opcode() != opcode {
            return Err(ProtocolError::ReplyOpcodeMismatch {
                id: self.id,
                sent: request.opcode(),
                received: opcode.code(),
            });
        }
        let limit = |field, len: u64, max| {
            if len > max {
                Err(ProtocolError::PayloadTooLarge {
                    opcode,
                    field,
                    len,
                    max,
                })
            } else {
                Ok(len)
            }
        };
        // Error replies carry no payload; only the read bitmaps have a length
        // field of their own that could contradict that.
        let count = u64::try_from(self.retval).unwrap_or(0);
        let len = match self.op {
            ReplyOp::Read(body) => self.read_payload(
                request,
                body.bitmap_len.into(),
                MAX_READ_BITMAP_LEN,
                "bitmap_len",
            )?,
            ReplyOp::SecRead(body) => {
                self.read_payload(request, body.attr_len.into(), MAX_ATTR_LEN, "attr_len")?
            }
            ReplyOp::SecList(_) => {
                limit("retval", count, MAX_SEC_LIST_ENTRIES)? * OBJ_VER_ID_SIZE as u64
            }
            ReplyOp::SecReadBmp => limit("retval", count, MAX_READ_BMP_REPLY_BYTES)?,
            ReplyOp::ShowConfig => limit("retval", count, MAX_SHOW_CONFIG_JSON)?,
            ReplyOp::SecWrite(_)
            | ReplyOp::SecWriteStable(_)
            | ReplyOp::SecSync
            | ReplyOp::SecStabilize
            | ReplyOp::SecRollback
            | ReplyOp::SecDelete(_)
            | ReplyOp::TestSyncStabAll
            | ReplyOp::Write(_)
            | ReplyOp::Sync
            | ReplyOp::Delete(_)
            | ReplyOp::Ping
            | ReplyOp::Scrub(_)
            | ReplyOp::Describe(_)
            | ReplyOp::SecLock(_) => 0,
        };
        // Every limit is below u32::MAX (see limits.rs), so this cannot fail
        // on any supported target; saturate rather than panic regardless.
        Ok(usize::try_from(len).unwrap_or(usize::MAX))
    }

    fn read_payload(
        &self,
        request: &Request,
        bitmap_len: u64,
        max_bitmap: u64,
        field: &'static str,
    ) -> Result<u64, ProtocolError> {
        let opcode = self.opcode();
        if self.retval < 0 {
            if bitmap_len != 0 {
                return Err(ProtocolError::PayloadOnErrorReply {
                    opcode,
                    retval: self.retval,
                    len: bitmap_len,
                });
            }
            return Ok(0);
        }
        let requested = match request.op {
            RequestOp::Read(op) => u64::from(op.len),
            RequestOp::SecRead(op) => u64::from(op.len),
            _ => 0,
        };
        // Our own request could have been built with a length no receiver
        // accepts; the reply must not make us buffer more than the limit.
        if requested > OSD_RW_MAX {
            return Err(ProtocolError::PayloadTooLarge {
                opcode,
                field: "retval",
                len: requested,
                max: OSD_RW_MAX,
            });
        }
        if self.retval as u64 != requested {
            return Err(ProtocolError::ReadLengthMismatch {
                opcode,
                requested,
                retval: self.retval,
            });
        }
        if bitmap_len > max_bitmap {
            return Err(ProtocolError::PayloadTooLarge {
                opcode,
                field,
                len: bitmap_len,
                max: max_bitmap,
            });
        }
        Ok(bitmap_len + requested)
    }
}

/// Writes `reply` into `packet`: header, body, zeroed tail.
pub fn encode_reply(reply: &Reply, packet: &mut Packet) {
    write_reply_header(packet, reply.id, reply.opcode().code(), reply.retval);
    match &reply.op {
        ReplyOp::Read(body) | ReplyOp::Write(body) => {
            put_u32(packet, 32, body.bitmap_len);
            put_u64(packet, 40, body.version);
        }
        ReplyOp::Delete(body) => {
            put_u32(packet, 32, body.flags);
            put_u32(packet, 36, body.left_on_dead_count);
            for (i, osd) in body.left_on_dead.iter().enumerate() {
                put_u32(packet, 40 + 4 * i, *osd);
            }
        }
        ReplyOp::SecRead(body) | ReplyOp::SecWrite(body) | ReplyOp::SecWriteStable(body) => {
            put_u64(packet, 32, body.version);
            put_u32(packet, 40, body.attr_len);
        }
        ReplyOp::SecDelete(body) => put_u64(packet, 32, body.version),
        ReplyOp::SecList(body) => {
            put_u64(packet, 32, body.stable_count);
            put_u64(packet, 40, body.flags);
        }
        ReplyOp::SecLock(body) => put_u64(packet, 32, body.cur_primary),
        ReplyOp::Scrub(body) | ReplyOp::Describe(body) => {
            packet[REPLY_HEADER_SIZE..].copy_from_slice(&body.0)
        }
        ReplyOp::SecSync
        | ReplyOp::SecStabilize
        | ReplyOp::SecRollback
        | ReplyOp::TestSyncStabAll
        | ReplyOp::ShowConfig
        | ReplyOp::Sync
        | ReplyOp::Ping
        | ReplyOp::SecReadBmp => {}
    }
}

/// Writes a header-only error reply echoing a raw `opcode`, for answering a
/// request whose opcode is unknown (so no [`ReplyOp`] exists for it) or that
/// failed [`Request::validate`]; the wire gets the negative [`Errno::retval`].
pub fn encode_error_reply(id: u64, opcode: u64, errno: Errno, packet: &mut Packet) {
    write_reply_header(packet, id, opcode, errno.retval());
}

fn write_reply_header(packet: &mut Packet, id: u64, opcode: u64, retval: i64) {
    packet.fill(0);
    put_u64(packet, 0, REPLY_MAGIC);
    put_u64(packet, 8, id);
    put_u64(packet, 16, opcode);
    put_i64(packet, 24, retval);
}

/// Parses a reply packet.
///
/// Errors (all fatal): [`ProtocolError::BadMagic`] (also for a request
/// packet) and [`ProtocolError::UnknownReplyOpcode`]. Lengths are checked by
/// [`Reply::payload_len`], which needs the request being answered.
pub fn decode_reply(packet: &Packet) -> Result<Reply, ProtocolError> {
    let (id, code, retval) = match Header::parse(packet)? {
        Header::Reply { id, opcode, retval } => (id, opcode, retval),
        Header::Request { .. } => {
            return Err(ProtocolError::BadMagic {
                found: REQUEST_MAGIC,
            })
        }
    };
    let opcode =
        Opcode::try_from(code).map_err(|_| ProtocolError::UnknownReplyOpcode { opcode: code })?;
    let p = packet;
    let rw = || RwReply {
        bitmap_len: get_u32(p, 32),
        version: get_u64(p, 40),
    };
    let sec_rw = || SecRwReply {
        version: get_u64(p, 32),
        attr_len: get_u32(p, 40),
    };
    let opaque = || {
        let mut body = OpaqueReplyBody::default();
        body.0.copy_from_slice(&p[REPLY_HEADER_SIZE..]);
        body
    };
    let op = match opcode {
        Opcode::SecRead => ReplyOp::SecRead(sec_rw()),
        Opcode::SecWrite => ReplyOp::SecWrite(sec_rw()),
        Opcode::SecWriteStable => ReplyOp::SecWriteStable(sec_rw()),
        Opcode::SecSync => ReplyOp::SecSync,
        Opcode::SecStabilize => ReplyOp::SecStabilize,
        Opcode::SecRollback => ReplyOp::SecRollback,
        Opcode::SecDelete => ReplyOp::SecDelete(SecDeleteReply {
            version: get_u64(p, 32),
        }),
        Opcode::TestSyncStabAll => ReplyOp::TestSyncStabAll,
        Opcode::SecList => ReplyOp::SecList(SecListReply {
            stable_count: get_u64(p, 32),
            flags: get_u64(p, 40),
        }),
        Opcode::ShowConfig => ReplyOp::ShowConfig,
        Opcode::Read => ReplyOp::Read(rw()),
        Opcode::Write => ReplyOp::Write(rw()),
        Opcode::Sync => ReplyOp::Sync,
        Opcode::Delete => {
            let mut body = DeleteReply {
                flags: get_u32(p, 32),
                left_on_dead_count: get_u32(p, 36),
                ..DeleteReply::default()
            };
            for (i, osd) in body.left_on_dead.iter_mut().enumerate() {
                *osd = get_u32(p, 40 + 4 * i);
            }
            ReplyOp::Delete(body)
        }
        Opcode::Ping => ReplyOp::Ping,
        Opcode::SecReadBmp => ReplyOp::SecReadBmp,
        Opcode::Scrub => ReplyOp::Scrub(opaque()),
        Opcode::Describe => ReplyOp::Describe(opaque()),
        Opcode::SecLock => ReplyOp::SecLock(SecLockReply {
            cur_primary: get_u64(p, 32),
        }),
    };
    Ok(Reply { id, retval, op })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::EIO;
    use crate::packet::get_i64;
    use crate::request::{RwOp, SecRwOp};
    use crate::samples;

    fn encoded(reply: &Reply) -> Packet {
        let mut p = [0xffu8; OSD_PACKET_SIZE];
        encode_reply(reply, &mut p);
        p
    }

    fn nonzero_body(p: &Packet) -> Vec<(usize, u8)> {
        (REPLY_HEADER_SIZE..OSD_PACKET_SIZE)
            .filter(|&i| p[i] != 0)
            .map(|i| (i, p[i]))
            .collect()
    }

    #[test]
    fn every_opcode_round_trips() {
        for opcode in Opcode::ALL {
            let request = samples::request(opcode, 77);
            let (reply, payload) = samples::reply(&request);
            let p = encoded(&reply);
            assert_eq!(get_u64(&p, 0), REPLY_MAGIC);
            assert_eq!(get_u64(&p, 8), 77);
            assert_eq!(get_u64(&p, 16), opcode.code());
            assert_eq!(get_i64(&p, 24), reply.retval);
            let back = decode_reply(&p).unwrap();
            assert_eq!(back, reply, "{opcode}");
            assert_eq!(back.payload_len(&request), Ok(payload), "{opcode}");
            assert_eq!(encoded(&back), p);
        }
    }

    #[test]
    fn header_byte_offsets() {
        let reply = Reply {
            id: 0x0102_0304_0506_0708,
            retval: -EIO as i64,
            op: ReplyOp::Sync,
        };
        let p = encoded(&reply);
        assert_eq!(&p[0..8], &REPLY_MAGIC.to_le_bytes());
        assert_eq!(&p[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&p[16..24], &[13, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &p[24..32],
            &[0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert!(nonzero_body(&p).is_empty());
    }

    #[test]
    fn body_byte_offsets() {
        let check = |op, expected: &[(usize, u8)]| {
            let p = encoded(&Reply {
                id: 1,
                retval: 0,
                op,
            });
            assert_eq!(nonzero_body(&p), expected, "{op:?}");
        };
        // bitmap_len u32 @32, pad @36, version @40
        check(
            ReplyOp::Read(RwReply {
                bitmap_len: 0x21,
                version: 0x43,
            }),
            &[(32, 0x21), (40, 0x43)],
        );
        check(
            ReplyOp::Write(RwReply {
                bitmap_len: 0,
                version: 0x1_00,
            }),
            &[(41, 1)],
        );
        // version @32, attr_len u32 @40, pad @44
        check(
            ReplyOp::SecRead(SecRwReply {
                version: 5,
                attr_len: 6,
            }),
            &[(32, 5), (40, 6)],
        );
        check(
            ReplyOp::SecDelete(SecDeleteReply { version: 7 }),
            &[(32, 7)],
        );
        // stable_count @32, flags @40
        check(
            ReplyOp::SecList(SecListReply {
                stable_count: 8,
                flags: 1,
            }),
            &[(32, 8), (40, 1)],
        );
        check(
            ReplyOp::SecLock(SecLockReply { cur_primary: 9 }),
            &[(32, 9)],
        );
        // flags u32 @32, left_on_dead_count u32 @36, osd numbers u32 @40..
        check(
            ReplyOp::Delete(DeleteReply::with_left_on_dead(&[3, 0x0105])),
            &[(32, 3), (36, 2), (40, 3), (44, 5), (45, 1)],
        );
    }

    #[test]
    fn left_on_dead_list_is_bounded_by_the_packet() {
        let osds: Vec<u32> = (1..=30).collect();
        let body = DeleteReply::with_left_on_dead(&osds);
        assert_eq!(body.left_on_dead_count as usize, LEFT_ON_DEAD_MAX);
        assert_eq!(body.left_on_dead_osds(), &osds[..LEFT_ON_DEAD_MAX]);
        assert_eq!(
            DeleteReply::with_left_on_dead(&[]).left_on_dead_osds(),
            &[] as &[u32]
        );

        let mut p = encoded(&Reply {
            id: 1,
            retval: 0,
            op: ReplyOp::Delete(body),
        });
        put_u32(&mut p, 36, u32::MAX);
        match decode_reply(&p).unwrap().op {
            ReplyOp::Delete(d) => assert_eq!(d.left_on_dead_osds().len(), LEFT_ON_DEAD_MAX),
            other => panic!("{other:?}"),
        }
        put_u32(&mut p, 32, OSD_DEL_SUPPORT_LEFT_ON_DEAD);
        match decode_reply(&p).unwrap().op {
            ReplyOp::Delete(d) => assert!(d.left_on_dead_osds().is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_reply_echoes_a_raw_opcode() {
        let mut p = [0xaau8; OSD_PACKET_SIZE];
        encode_error_reply(5, 99, Errno::EINVAL, &mut p);
        assert_eq!(
            Header::parse(&p),
            Ok(Header::Reply {
                id: 5,
                opcode: 99,
                retval: -22
            })
        );
        assert!(nonzero_body(&p).is_empty());
        assert_eq!(
            decode_reply(&p).unwrap_err(),
            ProtocolError::UnknownReplyOpcode { opcode: 99 }
        );
    }

    #[test]
    fn error_replies_carry_no_payload() {
        for opcode in Opcode::ALL {
            let request = samples::request(opcode, 3);
            let reply = Reply {
                id: 3,
                retval: -i64::from(EIO),
                op: ReplyOp::empty(opcode),
            };
            assert_eq!(reply.payload_len(&request), Ok(0), "{opcode}");
            assert_eq!(decode_reply(&encoded(&reply)).unwrap(), reply);
        }
    }

    fn read_request(len: u32) -> Request {
        Request {
            id: 1,
            op: RequestOp::Read(RwOp {
                len,
                ..RwOp::default()
            }),
        }
    }

    #[test]
    fn read_reply_must_return_the_requested_length() {
        let reply = |retval, bitmap_len| Reply {
            id: 1,
            retval,
            op: ReplyOp::Read(RwReply {
                bitmap_len,
                version: 1,
            }),
        };
        assert_eq!(
            reply(4096, 16).payload_len(&read_request(4096)),
            Ok(16 + 4096)
        );
        assert_eq!(
            reply(0, 16).payload_len(&read_request(0)),
            Ok(16),
            "bitmap-only read"
        );
        let err = reply(4095, 0).payload_len(&read_request(4096)).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::ReadLengthMismatch {
                opcode: Opcode::Read,
                requested: 4096,
                retval: 4095
            }
        );
        assert!(err.is_fatal());
        let err = reply(-5, 16).payload_len(&read_request(4096)).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::PayloadOnErrorReply { len: 16, .. }
        ));
        let err = reply(4096, (MAX_READ_BITMAP_LEN + 1) as u32)
            .payload_len(&read_request(4096))
            .unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::PayloadTooLarge {
                field: "bitmap_len",
                ..
            }
        ));
        let huge = read_request(u32::MAX);
        let err = reply(i64::from(u32::MAX), 0)
            .payload_len(&huge)
            .unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::PayloadTooLarge {
                field: "retval",
                ..
            }
        ));
    }

    #[test]
    fn sec_read_reply_limits() {
        let request = Request {
            id: 1,
            op: RequestOp::SecRead(SecRwOp {
                len: 512,
                attr_len: 4,
                ..SecRwOp::default()
            }),
        };
        let reply = |retval, attr_len| Reply {
            id: 1,
            retval,
            op: ReplyOp::SecRead(SecRwReply {
                version: 1,
                attr_len,
            }),
        };
        assert_eq!(reply(512, 4).payload_len(&request), Ok(516));
        assert!(reply(512, (MAX_ATTR_LEN + 1) as u32)
            .payload_len(&request)
            .unwrap_err()
            .is_fatal());
        assert!(reply(-2, 4).payload_len(&request).unwrap_err().is_fatal());
        assert!(reply(1024, 4).payload_len(&request).unwrap_err().is_fatal());
    }

    #[test]
    fn count_replies_are_bounded() {
        let cases = [
            (
                Opcode::SecList,
                MAX_SEC_LIST_ENTRIES,
                MAX_SEC_LIST_ENTRIES * 24,
            ),
            (
                Opcode::SecReadBmp,
                MAX_READ_BMP_REPLY_BYTES,
                MAX_READ_BMP_REPLY_BYTES,
            ),
            (
                Opcode::ShowConfig,
                MAX_SHOW_CONFIG_JSON,
                MAX_SHOW_CONFIG_JSON,
            ),
        ];
        for (opcode, max, bytes) in cases {
            let request = samples::request(opcode, 1);
            let reply = |retval| Reply {
                id: 1,
                retval,
                op: ReplyOp::empty(opcode),
            };
            assert_eq!(reply(max as i64).payload_len(&request), Ok(bytes as usize));
            let err = reply(max as i64 + 1).payload_len(&request).unwrap_err();
            assert!(matches!(
                err,
                ProtocolError::PayloadTooLarge {
                    field: "retval",
                    ..
                }
            ));
            assert!(err.is_fatal());
            assert_eq!(reply(i64::MIN).payload_len(&request), Ok(0));
        }
    }

    #[test]
    fn reply_must_match_its_request() {
        let request = samples::request(Opcode::Read, 1);
        let reply = Reply {
            id: 1,
            retval: 0,
            op: ReplyOp::Write(RwReply::default()),
        };
        assert_eq!(
            reply.payload_len(&request),
            Err(ProtocolError::ReplyOpcodeMismatch {
                id: 1,
                sent: Opcode::Read,
                received: 12
            })
        );
        let other = Reply {
            id: 2,
            retval: 0,
            op: ReplyOp::Ping,
        };
        assert_eq!(
            other.payload_len(&samples::request(Opcode::Ping, 1)),
            Err(ProtocolError::UnknownReplyId { id: 2 })
        );
    }

    #[test]
    fn decode_reply_rejects_requests_and_garbage() {
        let mut p = [0u8; OSD_PACKET_SIZE];
        crate::request::encode_request(&samples::request(Opcode::Ping, 1), &mut p);
        assert_eq!(
            decode_reply(&p),
            Err(ProtocolError::BadMagic {
                found: REQUEST_MAGIC
            })
        );
        p[3] = 0;
        assert!(decode_reply(&p).unwrap_err().is_fatal());
    }
}
