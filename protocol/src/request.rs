//! Request packets: one struct per body layout, [`Request`] tying an id to a
//! typed op, and the rules for how many payload bytes follow each request.
//!
//! Offsets in the layout docs count from the start of the 128-byte packet, so
//! every body starts at 24, right after `magic`, `id` and `opcode`.
//! [`decode_request`] checks every length field that frames a payload before
//! returning, so [`Request::payload_len`] of a decoded request is always
//! within the limits in [`crate::limits`]. Nothing here allocates.

use crate::error::ProtocolError;
use crate::limits::{MAX_ATTR_LEN, MAX_OBJ_VER_LIST_BYTES, MAX_SHOW_CONFIG_JSON, OSD_RW_MAX};
use crate::object::{ObjectId, OBJ_VER_ID_SIZE};
use crate::opcode::{Opcode, OSD_SEC_LOCK_PG, OSD_SEC_UNLOCK_PG};
use crate::packet::{
    get_u32, get_u64, put_u32, put_u64, Header, Packet, OSD_PACKET_SIZE, REPLY_MAGIC,
    REQUEST_HEADER_SIZE, REQUEST_MAGIC,
};

/// Body of a client READ, WRITE or DELETE (`osd_op_rw`).
///
/// Layout: `inode u64 @24, offset u64 @32, len u32 @40, flags u32 @44,
/// meta_revision u64 @48, version u64 @56`. A WRITE is followed by `len`
/// data bytes. The range must lie inside one PG stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RwOp {
    /// Inode (pool id in the top 16 bits).
    pub inode: u64,
    /// Byte offset inside the image.
    pub offset: u64,
    /// Byte count; a READ with `len = 0` asks for bitmaps only.
    pub len: u32,
    /// Op flags.
    pub flags: u32,
    /// Inode metadata revision the client saw.
    pub meta_revision: u64,
    /// Non-zero: compare-and-set, fails with `-EINTR` unless the object is
    /// at `version - 1`.
    pub version: u64,
}

impl RwOp {
    fn read(p: &Packet) -> RwOp {
        RwOp {
            inode: get_u64(p, 24),
            offset: get_u64(p, 32),
            len: get_u32(p, 40),
            flags: get_u32(p, 44),
            meta_revision: get_u64(p, 48),
            version: get_u64(p, 56),
        }
    }

    fn write(&self, p: &mut Packet) {
        put_u64(p, 24, self.inode);
        put_u64(p, 32, self.offset);
        put_u32(p, 40, self.len);
        put_u32(p, 44, self.flags);
        put_u64(p, 48, self.meta_revision);
        put_u64(p, 56, self.version);
    }
}

/// Body of SEC_READ, SEC_WRITE and SEC_WRITE_STABLE (`osd_op_sec_rw`).
///
/// Layout: `oid.inode u64 @24, oid.stripe u64 @32, version u64 @40,
/// offset u32 @48, len u32 @52, attr_len u32 @56, flags u32 @60`. A write is
/// followed by `attr_len` bitmap bytes and then `len` data bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecRwOp {
    /// The object.
    pub oid: ObjectId,
    /// Version to read or write.
    pub version: u64,
    /// Byte offset inside the object.
    pub offset: u32,
    /// Byte count.
    pub len: u32,
    /// Bitmap length: sent before the data of a write, returned before the
    /// data of a read.
    pub attr_len: u32,
    /// [`crate::OSD_OP_RECOVERY_RELATED`], [`crate::OSD_OP_IGNORE_PG_LOCK`].
    pub flags: u32,
}

impl SecRwOp {
    fn read(p: &Packet) -> SecRwOp {
        SecRwOp {
            oid: read_oid(p, 24),
            version: get_u64(p, 40),
            offset: get_u32(p, 48),
            len: get_u32(p, 52),
            attr_len: get_u32(p, 56),
            flags: get_u32(p, 60),
        }
    }

    fn write(&self, p: &mut Packet) {
        write_oid(p, 24, self.oid);
        put_u64(p, 40, self.version);
        put_u32(p, 48, self.offset);
        put_u32(p, 52, self.len);
        put_u32(p, 56, self.attr_len);
        put_u32(p, 60, self.flags);
    }
}

/// Body of SEC_DELETE.
///
/// Layout: `oid.inode u64 @24, oid.stripe u64 @32, version u64 @40,
/// flags u32 @48, pad u32 @52`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecDeleteOp {
    /// The object.
    pub oid: ObjectId,
    /// Version of the deletion.
    pub version: u64,
    /// [`crate::OSD_OP_RECOVERY_RELATED`], [`crate::OSD_OP_IGNORE_PG_LOCK`].
    pub flags: u32,
}

impl SecDeleteOp {
    fn read(p: &Packet) -> SecDeleteOp {
        SecDeleteOp {
            oid: read_oid(p, 24),
            version: get_u64(p, 40),
            flags: get_u32(p, 48),
        }
    }

    fn write(&self, p: &mut Packet) {
        write_oid(p, 24, self.oid);
        put_u64(p, 40, self.version);
        put_u32(p, 48, self.flags);
    }
}

/// Body of SEC_SYNC. Layout: `flags u32 @24, pad u32 @28`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecSyncOp {
    /// [`crate::OSD_OP_RECOVERY_RELATED`], [`crate::OSD_OP_IGNORE_PG_LOCK`].
    pub flags: u32,
}

/// Body of SEC_STABILIZE and SEC_ROLLBACK.
///
/// Layout: `len u64 @24, flags u32 @32, pad u32 @36`; `len` bytes of
/// `obj_ver_id[]` follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecStabOp {
    /// Length of the following list in bytes (24 per entry).
    pub len: u64,
    /// [`crate::OSD_OP_RECOVERY_RELATED`], [`crate::OSD_OP_IGNORE_PG_LOCK`].
    pub flags: u32,
}

/// Body of SEC_READ_BMP.
///
/// Layout: `len u64 @24, flags u32 @32`; `len` bytes of `obj_ver_id[]` follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecReadBmpOp {
    /// Length of the following list in bytes (24 per entry).
    pub len: u64,
    /// [`crate::OSD_OP_RECOVERY_RELATED`], [`crate::OSD_OP_IGNORE_PG_LOCK`].
    pub flags: u32,
}

/// Body of SEC_LIST.
///
/// Layout: `list_pg u32 @24, pg_count u32 @28, pg_stripe_size u64 @32,
/// min_inode u64 @40, max_inode u64 @48, min_stripe u64 @56,
/// max_stripe u64 @64, stable_limit u32 @72, flags u64 @76`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecListOp {
    /// PG to list.
    pub list_pg: u32,
    /// Total PG count of the pool.
    pub pg_count: u32,
    /// Size of an area that maps to one PG continuously.
    pub pg_stripe_size: u64,
    /// Lowest inode to list (selects the pool).
    pub min_inode: u64,
    /// Highest inode to list.
    pub max_inode: u64,
    /// Lowest stripe to list.
    pub min_stripe: u64,
    /// Highest stripe to list.
    pub max_stripe: u64,
    /// Most stable versions to return.
    pub stable_limit: u32,
    /// [`crate::OSD_LIST_PRIMARY`] or 0.
    pub flags: u64,
}

impl SecListOp {
    fn read(p: &Packet) -> SecListOp {
        SecListOp {
            list_pg: get_u32(p, 24),
            pg_count: get_u32(p, 28),
            pg_stripe_size: get_u64(p, 32),
            min_inode: get_u64(p, 40),
            max_inode: get_u64(p, 48),
            min_stripe: get_u64(p, 56),
            max_stripe: get_u64(p, 64),
            stable_limit: get_u32(p, 72),
            flags: get_u64(p, 76),
        }
    }

    fn write(&self, p: &mut Packet) {
        put_u32(p, 24, self.list_pg);
        put_u32(p, 28, self.pg_count);
        put_u64(p, 32, self.pg_stripe_size);
        put_u64(p, 40, self.min_inode);
        put_u64(p, 48, self.max_inode);
        put_u64(p, 56, self.min_stripe);
        put_u64(p, 64, self.max_stripe);
        put_u32(p, 72, self.stable_limit);
        put_u64(p, 76, self.flags);
    }
}

/// Body of SEC_LOCK.
///
/// Layout: `flags u64 @24, pool_id u64 @32, pg_num u64 @40, pg_state u64 @48`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecLockOp {
    /// [`crate::OSD_SEC_LOCK_PG`] or [`crate::OSD_SEC_UNLOCK_PG`].
    pub flags: u64,
    /// Pool of the PG.
    pub pool_id: u64,
    /// PG number.
    pub pg_num: u64,
    /// PG state as the primary computed it.
    pub pg_state: u64,
}

impl SecLockOp {
    fn read(p: &Packet) -> SecLockOp {
        SecLockOp {
            flags: get_u64(p, 24),
            pool_id: get_u64(p, 32),
            pg_num: get_u64(p, 40),
            pg_state: get_u64(p, 48),
        }
    }

    fn write(&self, p: &mut Packet) {
        put_u64(p, 24, self.flags);
        put_u64(p, 32, self.pool_id);
        put_u64(p, 40, self.pg_num);
        put_u64(p, 48, self.pg_state);
    }
}

/// Body of SHOW_CONFIG. Layout: `json_len u64 @24`; `json_len` bytes of JSON
/// follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShowConfigOp {
    /// Length of the JSON that follows.
    pub json_len: u64,
}

/// Bytes of a request packet after the header.
pub const REQUEST_BODY_SIZE: usize = OSD_PACKET_SIZE - REQUEST_HEADER_SIZE;

/// The body of a request whose layout the spec does not give (SCRUB,
/// DESCRIBE): the 104 bytes after the header, kept verbatim so that a packet
/// survives decode and re-encode unchanged. Such requests carry no payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpaqueRequestBody(pub [u8; REQUEST_BODY_SIZE]);

impl Default for OpaqueRequestBody {
    fn default() -> Self {
        OpaqueRequestBody([0; REQUEST_BODY_SIZE])
    }
}

/// A request op with its typed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOp {
    /// SEC_READ (1); no payload.
    SecRead(SecRwOp),
    /// SEC_WRITE (2); `attr_len + len` payload bytes.
    SecWrite(SecRwOp),
    /// SEC_WRITE_STABLE (3); `attr_len + len` payload bytes.
    SecWriteStable(SecRwOp),
    /// SEC_SYNC (4).
    SecSync(SecSyncOp),
    /// SEC_STABILIZE (5); `len` bytes of `obj_ver_id[]`.
    SecStabilize(SecStabOp),
    /// SEC_ROLLBACK (6); `len` bytes of `obj_ver_id[]`.
    SecRollback(SecStabOp),
    /// SEC_DELETE (7).
    SecDelete(SecDeleteOp),
    /// TEST_SYNC_STAB_ALL (8); no body.
    TestSyncStabAll,
    /// SEC_LIST (9).
    SecList(SecListOp),
    /// SHOW_CONFIG (10); `json_len` bytes of JSON.
    ShowConfig(ShowConfigOp),
    /// READ (11); no payload.
    Read(RwOp),
    /// WRITE (12); `len` data bytes.
    Write(RwOp),
    /// SYNC (13); no body.
    Sync,
    /// DELETE (14).
    Delete(RwOp),
    /// PING (15); no body.
    Ping,
    /// SEC_READ_BMP (16); `len` bytes of `obj_ver_id[]`.
    SecReadBmp(SecReadBmpOp),
    /// SCRUB (17); the spec gives no body layout, so it is opaque.
    Scrub(OpaqueRequestBody),
    /// DESCRIBE (18); the spec gives no body layout, so it is opaque.
    Describe(OpaqueRequestBody),
    /// SEC_LOCK (19).
    SecLock(SecLockOp),
}

impl RequestOp {
    /// The opcode this op travels under.
    pub fn opcode(&self) -> Opcode {
        match self {
            RequestOp::SecRead(_) => Opcode::SecRead,
            RequestOp::SecWrite(_) => Opcode::SecWrite,
            RequestOp::SecWriteStable(_) => Opcode::SecWriteStable,
            RequestOp::SecSync(_) => Opcode::SecSync,
            RequestOp::SecStabilize(_) => Opcode::SecStabilize,
            RequestOp::SecRollback(_) => Opcode::SecRollback,
            RequestOp::SecDelete(_) => Opcode::SecDelete,
            RequestOp::TestSyncStabAll => Opcode::TestSyncStabAll,
            RequestOp::SecList(_) => Opcode::SecList,
            RequestOp::ShowConfig(_) => Opcode::ShowConfig,
            RequestOp::Read(_) => Opcode::Read,
            RequestOp::Write(_) => Opcode::Write,
            RequestOp::Sync => Opcode::Sync,
            RequestOp::Delete(_) => Opcode::Delete,
            RequestOp::Ping => Opcode::Ping,
            RequestOp::SecReadBmp(_) => Opcode::SecReadBmp,
            RequestOp::Scrub(_) => Opcode::Scrub,
            RequestOp::Describe(_) => Opcode::Describe,
            RequestOp::SecLock(_) => Opcode::SecLock,
        }
    }
}

/// One request: its connection-unique id and its op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the sender, unique per connection; echoed by the reply.
    pub id: u64,
    /// What to do.
    pub op: RequestOp,
}

impl Request {
    /// The opcode of [`Request::op`].
    pub fn opcode(&self) -> Opcode {
        self.op.opcode()
    }

    /// How many payload bytes follow this request's packet.
    ///
    /// Exact for any request returned by [`decode_request`] or accepted by
    /// [`Request::validate`]; for a hand-built request with out-of-range
    /// lengths it saturates rather than overflows.
    pub fn payload_len(&self) -> usize {
        let len = match self.op {
            RequestOp::SecWrite(op) | RequestOp::SecWriteStable(op) => {
                u64::from(op.attr_len) + u64::from(op.len)
            }
            RequestOp::SecStabilize(op) | RequestOp::SecRollback(op) => op.len,
            RequestOp::SecReadBmp(op) => op.len,
            RequestOp::Write(op) => u64::from(op.len),
            RequestOp::ShowConfig(op) => op.json_len,
            RequestOp::SecRead(_)
            | RequestOp::SecSync(_)
            | RequestOp::SecDelete(_)
            | RequestOp::TestSyncStabAll
            | RequestOp::SecList(_)
            | RequestOp::Read(_)
            | RequestOp::Sync
            | RequestOp::Delete(_)
            | RequestOp::Ping
            | RequestOp::Scrub(_)
            | RequestOp::Describe(_)
            | RequestOp::SecLock(_) => 0,
        };
        usize::try_from(len).unwrap_or(usize::MAX)
    }

    /// Checks the length fields that decide how many payload bytes follow.
    /// Every error here is fatal: see [`ProtocolError::PayloadTooLarge`].
    fn check_framing(&self) -> Result<(), ProtocolError> {
        let opcode = self.opcode();
        let limit = |field, len: u64, max| {
            if len > max {
                Err(ProtocolError::PayloadTooLarge {
                    opcode,
                    field,
                    len,
                    max,
                })
            } else {
                Ok(())
            }
        };
        match self.op {
            RequestOp::SecWrite(op) | RequestOp::SecWriteStable(op) => {
                limit("len", op.len.into(), OSD_RW_MAX)?;
                limit("attr_len", op.attr_len.into(), MAX_ATTR_LEN)
            }
            RequestOp::SecStabilize(op) | RequestOp::SecRollback(op) => {
                limit("len", op.len, MAX_OBJ_VER_LIST_BYTES)
            }
            RequestOp::SecReadBmp(op) => limit("len", op.len, MAX_OBJ_VER_LIST_BYTES),
            RequestOp::Write(op) => limit("len", op.len.into(), OSD_RW_MAX),
            RequestOp::ShowConfig(op) => limit("json_len", op.json_len, MAX_SHOW_CONFIG_JSON),
            _ => Ok(()),
        }
    }

    /// Checks every field this crate can judge without cluster state.
    ///
    /// Fatal errors mean the payload cannot be followed (the receiver drops
    /// the connection; a sender has a bug). Non-fatal ones leave the stream in
    /// sync: the receiver reads the payload and answers `-EINVAL`.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        self.check_framing()?;
        let opcode = self.opcode();
        let range = |field, value: u64, max| {
            if value > max {
                Err(ProtocolError::FieldOutOfRange {
                    opcode,
                    field,
                    value,
                    max,
                })
            } else {
                Ok(())
            }
        };
        let whole_list = |len: u64| {
            if len % OBJ_VER_ID_SIZE as u64 != 0 {
                Err(ProtocolError::MisalignedList { len })
            } else {
                Ok(())
            }
        };
        match self.op {
            // The reply buffer of a read is sized from these.
            RequestOp::SecRead(op) => {
                range("len", op.len.into(), OSD_RW_MAX)?;
                range("attr_len", op.attr_len.into(), MAX_ATTR_LEN)
            }
            RequestOp::Read(op) => range("len", op.len.into(), OSD_RW_MAX),
            RequestOp::SecStabilize(op) | RequestOp::SecRollback(op) => whole_list(op.len),
            RequestOp::SecReadBmp(op) => whole_list(op.len),
            RequestOp::SecLock(op) => match op.flags {
                OSD_SEC_LOCK_PG | OSD_SEC_UNLOCK_PG => Ok(()),
                flags => Err(ProtocolError::BadLockFlags { flags }),
            },
            _ => Ok(()),
        }
    }
}

/// Writes `request` into `packet`: header, body, zeroed tail. Fields are
/// written as given; call [`Request::validate`] first to catch values a
/// receiver would refuse.
pub fn encode_request(request: &Request, packet: &mut Packet) {
    packet.fill(0);
    put_u64(packet, 0, REQUEST_MAGIC);
    put_u64(packet, 8, request.id);
    put_u64(packet, 16, request.opcode().code());
    match &request.op {
        RequestOp::SecRead(op) | RequestOp::SecWrite(op) | RequestOp::SecWriteStable(op) => {
            op.write(packet)
        }
        RequestOp::SecSync(op) => put_u32(packet, 24, op.flags),
        RequestOp::SecStabilize(op) | RequestOp::SecRollback(op) => {
            put_u64(packet, 24, op.len);
            put_u32(packet, 32, op.flags);
        }
        RequestOp::SecDelete(op) => op.write(packet),
        RequestOp::SecList(op) => op.write(packet),
        RequestOp::ShowConfig(op) => put_u64(packet, 24, op.json_len),
        RequestOp::Read(op) | RequestOp::Write(op) | RequestOp::Delete(op) => op.write(packet),
        RequestOp::SecReadBmp(op) => {
            put_u64(packet, 24, op.len);
            put_u32(packet, 32, op.flags);
        }
        RequestOp::Scrub(body) | RequestOp::Describe(body) => {
            packet[REQUEST_HEADER_SIZE..].copy_from_slice(&body.0)
        }
        RequestOp::SecLock(op) => op.write(packet),
        RequestOp::TestSyncStabAll | RequestOp::Sync | RequestOp::Ping => {}
    }
}

/// Parses a request packet and checks every length field that frames a
/// payload, so that [`Request::payload_len`] can be trusted afterwards.
///
/// Errors: [`ProtocolError::BadMagic`] (also for a reply packet),
/// [`ProtocolError::PayloadTooLarge`] (both fatal), and
/// [`ProtocolError::UnknownOpcode`], which is not fatal: such a request has
/// no payload, and the receiver answers it with `-EINVAL`, echoing the id and
/// opcode from [`Header::parse`]. Non-framing fields are left to
/// [`Request::validate`].
pub fn decode_request(packet: &Packet) -> Result<Request, ProtocolError> {
    let (id, code) = match Header::parse(packet)? {
        Header::Request { id, opcode } => (id, opcode),
        Header::Reply { .. } => return Err(ProtocolError::BadMagic { found: REPLY_MAGIC }),
    };
    let p = packet;
    let op = match Opcode::try_from(code)? {
        Opcode::SecRead => RequestOp::SecRead(SecRwOp::read(p)),
        Opcode::SecWrite => RequestOp::SecWrite(SecRwOp::read(p)),
        Opcode::SecWriteStable => RequestOp::SecWriteStable(SecRwOp::read(p)),
        Opcode::SecSync => RequestOp::SecSync(SecSyncOp {
            flags: get_u32(p, 24),
        }),
        Opcode::SecStabilize => RequestOp::SecStabilize(read_stab(p)),
        Opcode::SecRollback => RequestOp::SecRollback(read_stab(p)),
        Opcode::SecDelete => RequestOp::SecDelete(SecDeleteOp::read(p)),
        Opcode::TestSyncStabAll => RequestOp::TestSyncStabAll,
        Opcode::SecList => RequestOp::SecList(SecListOp::read(p)),
        Opcode::ShowConfig => RequestOp::ShowConfig(ShowConfigOp {
            json_len: get_u64(p, 24),
        }),
        Opcode::Read => RequestOp::Read(RwOp::read(p)),
        Opcode::Write => RequestOp::Write(RwOp::read(p)),
        Opcode::Sync => RequestOp::Sync,
        Opcode::Delete => RequestOp::Delete(RwOp::read(p)),
        Opcode::Ping => RequestOp::Ping,
        Opcode::SecReadBmp => RequestOp::SecReadBmp(SecReadBmpOp {
            len: get_u64(p, 24),
            flags: get_u32(p, 32),
        }),
        Opcode::Scrub => RequestOp::Scrub(read_opaque(p)),
        Opcode::Describe => RequestOp::Describe(read_opaque(p)),
        Opcode::SecLock => RequestOp::SecLock(SecLockOp::read(p)),
    };
    let request = Request { id, op };
    request.check_framing()?;
    Ok(request)
}

fn read_stab(p: &Packet) -> SecStabOp {
    SecStabOp {
        len: get_u64(p, 24),
        flags: get_u32(p, 32),
    }
}

fn read_opaque(p: &Packet) -> OpaqueRequestBody {
    let mut body = OpaqueRequestBody::default();
    body.0.copy_from_slice(&p[REQUEST_HEADER_SIZE..]);
    body
}

fn read_oid(p: &Packet, at: usize) -> ObjectId {
    ObjectId {
        inode: get_u64(p, at),
        stripe: get_u64(p, at + 8),
    }
}

fn write_oid(p: &mut Packet, at: usize, oid: ObjectId) {
    put_u64(p, at, oid.inode);
    put_u64(p, at + 8, oid.stripe);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{get_u64 as u64_at, put_u64 as set_u64};
    use crate::samples;

    fn encoded(request: &Request) -> Packet {
        let mut p = [0xffu8; OSD_PACKET_SIZE];
        encode_request(request, &mut p);
        p
    }

    fn le32(p: &Packet, at: usize) -> u32 {
        u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
    }

    fn assert_zero_from(p: &Packet, from: usize) {
        assert!(
            p[from..].iter().all(|&b| b == 0),
            "tail not zeroed from {from}: {p:?}"
        );
    }

    #[test]
    fn every_opcode_round_trips() {
        for (i, opcode) in Opcode::ALL.into_iter().enumerate() {
            let request = samples::request(opcode, 1000 + i as u64);
            let p = encoded(&request);
            assert_eq!(u64_at(&p, 0), REQUEST_MAGIC);
            assert_eq!(u64_at(&p, 8), 1000 + i as u64);
            assert_eq!(u64_at(&p, 16), opcode.code());
            let back = decode_request(&p).unwrap();
            assert_eq!(back, request, "{opcode}");
            assert_eq!(back.opcode(), opcode);
            back.validate().unwrap();
            assert_eq!(encoded(&back), p);
        }
    }

    #[test]
    fn payload_lengths_follow_the_spec() {
        let len = |opcode| samples::request(opcode, 1).payload_len();
        assert_eq!(len(Opcode::SecRead), 0);
        assert_eq!(len(Opcode::SecWrite), 4 + 8192);
        assert_eq!(len(Opcode::SecWriteStable), 4 + 8192);
        assert_eq!(len(Opcode::SecStabilize), 48);
        assert_eq!(len(Opcode::SecRollback), 24);
        assert_eq!(len(Opcode::SecReadBmp), 72);
        assert_eq!(len(Opcode::ShowConfig), 20);
        assert_eq!(len(Opcode::Read), 0);
        assert_eq!(len(Opcode::Write), 8192);
        assert_eq!(len(Opcode::Delete), 0);
        for opcode in [
            Opcode::SecSync,
            Opcode::SecDelete,
            Opcode::TestSyncStabAll,
            Opcode::SecList,
            Opcode::Sync,
            Opcode::Ping,
            Opcode::Scrub,
            Opcode::Describe,
            Opcode::SecLock,
        ] {
            assert_eq!(len(opcode), 0, "{opcode}");
        }
    }

    #[test]
    fn osd_op_rw_byte_offsets() {
        let request = Request {
            id: 0x1122_3344_5566_7788,
            op: RequestOp::Write(RwOp {
                inode: 0x0001_0000_0000_0005,
                offset: 0x0000_0000_0012_0000,
                len: 0x0002_0000,
                flags: 0x0000_0007,
                meta_revision: 0x0000_0000_0000_0abc,
                version: 0x0000_0000_0000_0009,
            }),
        };
        let p = encoded(&request);
        // magic @0, id @8, opcode @16
        assert_eq!(&p[8..16], &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(&p[16..24], &[12, 0, 0, 0, 0, 0, 0, 0]);
        // inode @24
        assert_eq!(&p[24..32], &[5, 0, 0, 0, 0, 0, 1, 0]);
        // offset @32
        assert_eq!(&p[32..40], &[0, 0, 0x12, 0, 0, 0, 0, 0]);
        // len u32 @40, flags u32 @44
        assert_eq!(&p[40..44], &[0, 0, 2, 0]);
        assert_eq!(&p[44..48], &[7, 0, 0, 0]);
        // meta_revision @48, version @56
        assert_eq!(&p[48..56], &[0xbc, 0x0a, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&p[56..64], &[9, 0, 0, 0, 0, 0, 0, 0]);
        assert_zero_from(&p, 64);
    }

    #[test]
    fn sec_rw_byte_offsets() {
        let request = Request {
            id: 1,
            op: RequestOp::SecWriteStable(SecRwOp {
                oid: ObjectId {
                    inode: 0xa1,
                    stripe: 0xb2,
                },
                version: 0xc3,
                offset: 0xd4,
                len: 0xe5,
                attr_len: 0xf6,
                flags: 0x02,
            }),
        };
        let p = encoded(&request);
        assert_eq!(u64_at(&p, 16), 3);
        assert_eq!(p[24], 0xa1); // oid.inode @24
        assert_eq!(p[32], 0xb2); // oid.stripe @32
        assert_eq!(p[40], 0xc3); // version @40
        assert_eq!(le32(&p, 48), 0xd4); // offset u32 @48
        assert_eq!(le32(&p, 52), 0xe5); // len u32 @52
        assert_eq!(le32(&p, 56), 0xf6); // attr_len u32 @56
        assert_eq!(le32(&p, 60), 0x02); // flags u32 @60
        let set: Vec<usize> = (24..OSD_PACKET_SIZE).filter(|&i| p[i] != 0).collect();
        assert_eq!(set, [24, 32, 40, 48, 52, 56, 60]);
    }

    #[test]
    fn sec_list_byte_offsets() {
        let request = Request {
            id: 1,
            op: RequestOp::SecList(SecListOp {
                list_pg: 0x11,
                pg_count: 0x22,
                pg_stripe_size: 0x33,
                min_inode: 0x44,
                max_inode: 0x55,
                min_stripe: 0x66,
                max_stripe: 0x77,
                stable_limit: 0x88,
                flags: 0x0100_0000_0000_0099,
            }),
        };
        let p = encoded(&request);
        let expected = [
            (24, 0x11), // list_pg u32
            (28, 0x22), // pg_count u32
            (32, 0x33), // pg_stripe_size
            (40, 0x44), // min_inode
            (48, 0x55), // max_inode
            (56, 0x66), // min_stripe
            (64, 0x77), // max_stripe
            (72, 0x88), // stable_limit u32
            (76, 0x99), // flags u64, unaligned: packed after stable_limit
        ];
        for (at, byte) in expected {
            assert_eq!(p[at], byte, "offset {at}");
        }
        assert_eq!(p[83], 0x01, "top byte of flags");
        let set: Vec<usize> = (24..OSD_PACKET_SIZE).filter(|&i| p[i] != 0).collect();
        assert_eq!(set, [24, 28, 32, 40, 48, 56, 64, 72, 76, 83]);
    }

    #[test]
    fn small_body_byte_offsets() {
        let check = |op, expected: &[(usize, u8)]| {
            let p = encoded(&Request { id: 1, op });
            let set: Vec<(usize, u8)> = (24..OSD_PACKET_SIZE)
                .filter(|&i| p[i] != 0)
                .map(|i| (i, p[i]))
                .collect();
            assert_eq!(set, expected, "{op:?}");
        };
        check(
            RequestOp::SecDelete(SecDeleteOp {
                oid: ObjectId {
                    inode: 1,
                    stripe: 2,
                },
                version: 3,
                flags: 4,
            }),
            &[(24, 1), (32, 2), (40, 3), (48, 4)],
        );
        check(RequestOp::SecSync(SecSyncOp { flags: 2 }), &[(24, 2)]);
        check(
            RequestOp::SecStabilize(SecStabOp { len: 24, flags: 1 }),
            &[(24, 24), (32, 1)],
        );
        check(
            RequestOp::SecRollback(SecStabOp { len: 48, flags: 2 }),
            &[(24, 48), (32, 2)],
        );
        check(
            RequestOp::SecReadBmp(SecReadBmpOp { len: 72, flags: 1 }),
            &[(24, 72), (32, 1)],
        );
        check(
            RequestOp::ShowConfig(ShowConfigOp { json_len: 9 }),
            &[(24, 9)],
        );
        check(
            RequestOp::SecLock(SecLockOp {
                flags: 2,
                pool_id: 3,
                pg_num: 4,
                pg_state: 5,
            }),
            &[(24, 2), (32, 3), (40, 4), (48, 5)],
        );
        check(RequestOp::Ping, &[]);
        check(RequestOp::Sync, &[]);
        check(RequestOp::TestSyncStabAll, &[]);
    }

    #[test]
    fn opaque_bodies_are_kept_verbatim() {
        let mut p = [0u8; OSD_PACKET_SIZE];
        set_u64(&mut p, 0, REQUEST_MAGIC);
        set_u64(&mut p, 16, Opcode::Describe.code());
        for (i, b) in p[24..].iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let request = decode_request(&p).unwrap();
        assert_eq!(request.payload_len(), 0);
        assert_eq!(encoded(&request), p);
    }

    fn packet_of(request: &Request) -> Packet {
        let mut p = [0u8; OSD_PACKET_SIZE];
        encode_request(request, &mut p);
        p
    }

    #[test]
    fn bad_magic_is_fatal() {
        let mut p = packet_of(&samples::request(Opcode::Ping, 1));
        p[0] ^= 1;
        let err = decode_request(&p).unwrap_err();
        assert!(matches!(err, ProtocolError::BadMagic { .. }));
        assert!(err.is_fatal());
        set_u64(&mut p, 0, REPLY_MAGIC);
        assert_eq!(
            decode_request(&p).unwrap_err(),
            ProtocolError::BadMagic { found: REPLY_MAGIC }
        );
    }

    #[test]
    fn unknown_opcode_is_not_fatal() {
        for code in [0u64, 20, 1 << 40] {
            let mut p = packet_of(&samples::request(Opcode::Ping, 1));
            set_u64(&mut p, 16, code);
            let err = decode_request(&p).unwrap_err();
            assert_eq!(err, ProtocolError::UnknownOpcode { opcode: code });
            assert!(!err.is_fatal());
            assert_eq!(err.errno(), crate::errno::EINVAL);
        }
    }

    fn with_field(opcode: Opcode, at: usize, value: u64, width: usize) -> Packet {
        let mut p = packet_of(&samples::request(opcode, 9));
        p[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        p
    }

    #[test]
    fn oversized_framing_lengths_are_fatal() {
        let cases = [
            (Opcode::Write, 40, OSD_RW_MAX + 1, 4, "len"),
            (Opcode::Write, 40, u64::from(u32::MAX), 4, "len"),
            (Opcode::SecWrite, 52, OSD_RW_MAX + 1, 4, "len"),
            (Opcode::SecWriteStable, 56, MAX_ATTR_LEN + 1, 4, "attr_len"),
            (
                Opcode::SecStabilize,
                24,
                MAX_OBJ_VER_LIST_BYTES + 24,
                8,
                "len",
            ),
            (Opcode::SecRollback, 24, u64::MAX, 8, "len"),
            (Opcode::SecReadBmp, 24, 1 << 40, 8, "len"),
            (
                Opcode::ShowConfig,
                24,
                MAX_SHOW_CONFIG_JSON + 1,
                8,
                "json_len",
            ),
        ];
        for (opcode, at, value, width, name) in cases {
            let err = decode_request(&with_field(opcode, at, value, width)).unwrap_err();
            match &err {
                ProtocolError::PayloadTooLarge {
                    opcode: o,
                    field,
                    len,
                    ..
                } => {
                    assert_eq!((*o, *field, *len), (opcode, name, value));
                }
                other => panic!("{opcode}: unexpected {other:?}"),
            }
            assert!(err.is_fatal());
        }
    }

    #[test]
    fn framing_lengths_at_the_limit_are_accepted() {
        let cases = [
            (Opcode::Write, 40, OSD_RW_MAX, 4),
            (Opcode::SecWrite, 52, OSD_RW_MAX, 4),
            (Opcode::SecWrite, 56, MAX_ATTR_LEN, 4),
            (Opcode::SecStabilize, 24, MAX_OBJ_VER_LIST_BYTES, 8),
            (Opcode::SecReadBmp, 24, MAX_OBJ_VER_LIST_BYTES, 8),
            (Opcode::ShowConfig, 24, MAX_SHOW_CONFIG_JSON, 8),
        ];
        for (opcode, at, value, width) in cases {
            let request = decode_request(&with_field(opcode, at, value, width)).unwrap();
            request.validate().unwrap();
        }
    }

    #[test]
    fn non_framing_errors_are_not_fatal() {
        let cases: [(Opcode, usize, u64, usize); 6] = [
            (Opcode::Read, 40, OSD_RW_MAX + 1, 4),
            (Opcode::SecRead, 52, OSD_RW_MAX + 1, 4),
            (Opcode::SecRead, 56, MAX_ATTR_LEN + 1, 4),
            (Opcode::SecStabilize, 24, 25, 8),
            (Opcode::SecReadBmp, 24, 23, 8),
            (Opcode::SecLock, 24, 3, 8),
        ];
        for (opcode, at, value, width) in cases {
            let request = decode_request(&with_field(opcode, at, value, width)).unwrap();
            let err = request.validate().unwrap_err();
            assert!(!err.is_fatal(), "{opcode}: {err}");
            assert_eq!(err.errno(), crate::errno::EINVAL);
        }
        let misaligned = decode_request(&with_field(Opcode::SecRollback, 24, 50, 8)).unwrap();
        assert_eq!(
            misaligned.validate(),
            Err(ProtocolError::MisalignedList { len: 50 })
        );
        assert_eq!(
            misaligned.payload_len(),
            50,
            "the stream is still framed by len"
        );
        let lock = decode_request(&with_field(Opcode::SecLock, 24, 0, 8)).unwrap();
        assert_eq!(
            lock.validate(),
            Err(ProtocolError::BadLockFlags { flags: 0 })
        );
    }

    #[test]
    fn hand_built_requests_are_validated_too() {
        let request = Request {
            id: 1,
            op: RequestOp::Write(RwOp {
                len: u32::MAX,
                ..RwOp::default()
            }),
        };
        assert!(request.validate().unwrap_err().is_fatal());
        assert_eq!(request.payload_len(), u32::MAX as usize);
    }
}
