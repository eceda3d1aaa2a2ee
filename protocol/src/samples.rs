//! Valid sample messages for every opcode, shared by the unit tests.

use crate::object::ObjectId;
use crate::opcode::*;
use crate::reply::*;
use crate::request::*;

pub(crate) const SAMPLE_OID: ObjectId = ObjectId {
    inode: (1 << 48) | 0x0a0b,
    stripe: 0x0002_0000,
};

/// A valid request of each opcode with small, distinct field values.
pub(crate) fn request(opcode: Opcode, id: u64) -> Request {
    let rw = RwOp {
        inode: (2 << 48) | 7,
        offset: 0x0003_0000,
        len: 8192,
        flags: 0,
        meta_revision: 11,
        version: 0,
    };
    let sec_rw = SecRwOp {
        oid: SAMPLE_OID,
        version: 42,
        offset: 4096,
        len: 8192,
        attr_len: 4,
        flags: OSD_OP_RECOVERY_RELATED,
    };
    let op = match opcode {
        Opcode::SecRead => RequestOp::SecRead(sec_rw),
        Opcode::SecWrite => RequestOp::SecWrite(sec_rw),
        Opcode::SecWriteStable => RequestOp::SecWriteStable(sec_rw),
        Opcode::SecSync => RequestOp::SecSync(SecSyncOp {
            flags: OSD_OP_IGNORE_PG_LOCK,
        }),
        Opcode::SecStabilize => RequestOp::SecStabilize(SecStabOp { len: 48, flags: 0 }),
        Opcode::SecRollback => RequestOp::SecRollback(SecStabOp { len: 24, flags: 3 }),
        Opcode::SecDelete => RequestOp::SecDelete(SecDeleteOp {
            oid: SAMPLE_OID,
            version: 43,
            flags: OSD_OP_RECOVERY_RELATED,
        }),
        Opcode::TestSyncStabAll => RequestOp::TestSyncStabAll,
        Opcode::SecList => RequestOp::SecList(SecListOp {
            list_pg: 3,
            pg_count: 256,
            pg_stripe_size: 4 << 20,
            min_inode: 1 << 48,
            max_inode: (2 << 48) - 1,
            min_stripe: 0,
            max_stripe: u64::MAX,
            stable_limit: 1000,
            flags: OSD_LIST_PRIMARY,
        }),
        Opcode::ShowConfig => RequestOp::ShowConfig(ShowConfigOp { json_len: 20 }),
        Opcode::Read => RequestOp::Read(rw),
        Opcode::Write => RequestOp::Write(RwOp { version: 5, ..rw }),
        Opcode::Sync => RequestOp::Sync,
        Opcode::Delete => RequestOp::Delete(RwOp { len: 0, ..rw }),
        Opcode::Ping => RequestOp::Ping,
        Opcode::SecReadBmp => RequestOp::SecReadBmp(SecReadBmpOp { len: 72, flags: 1 }),
        Opcode::Scrub => RequestOp::Scrub(opaque_request(0x51)),
        Opcode::Describe => RequestOp::Describe(opaque_request(0xd5)),
        Opcode::SecLock => RequestOp::SecLock(SecLockOp {
            flags: OSD_SEC_LOCK_PG,
            pool_id: 1,
            pg_num: 17,
            pg_state: 0x40,
        }),
    };
    Request { id, op }
}

fn opaque_request(seed: u8) -> OpaqueRequestBody {
    let mut body = OpaqueRequestBody::default();
    for (i, b) in body.0.iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    body
}

fn opaque_reply(seed: u8) -> OpaqueReplyBody {
    let mut body = OpaqueReplyBody::default();
    for (i, b) in body.0.iter_mut().enumerate() {
        *b = seed.wrapping_mul(i as u8);
    }
    body
}

/// A successful reply to `request` whose lengths agree with it, and the
/// number of payload bytes that must follow it.
pub(crate) fn reply(request: &Request) -> (Reply, usize) {
    let (op, retval, payload) = match request.op {
        RequestOp::SecRead(q) => (
            ReplyOp::SecRead(SecRwReply {
                version: 42,
                attr_len: 4,
            }),
            i64::from(q.len),
            4 + q.len as usize,
        ),
        RequestOp::SecWrite(q) => (
            ReplyOp::SecWrite(SecRwReply {
                version: 44,
                attr_len: 0,
            }),
            i64::from(q.len),
            0,
        ),
        RequestOp::SecWriteStable(q) => (
            ReplyOp::SecWriteStable(SecRwReply {
                version: 45,
                attr_len: 0,
            }),
            i64::from(q.len),
            0,
        ),
        RequestOp::SecSync(_) => (ReplyOp::SecSync, 0, 0),
        RequestOp::SecStabilize(_) => (ReplyOp::SecStabilize, 0, 0),
        RequestOp::SecRollback(_) => (ReplyOp::SecRollback, 0, 0),
        RequestOp::SecDelete(_) => (ReplyOp::SecDelete(SecDeleteReply { version: 46 }), 0, 0),
        RequestOp::TestSyncStabAll => (ReplyOp::TestSyncStabAll, 0, 0),
        RequestOp::SecList(_) => (
            ReplyOp::SecList(SecListReply {
                stable_count: 2,
                flags: OSD_LIST_PRIMARY,
            }),
            3,
            72,
        ),
        RequestOp::ShowConfig(_) => (ReplyOp::ShowConfig, 30, 30),
        RequestOp::Read(q) => (
            ReplyOp::Read(RwReply {
                bitmap_len: 8,
                version: 47,
            }),
            i64::from(q.len),
            8 + q.len as usize,
        ),
        RequestOp::Write(q) => (
            ReplyOp::Write(RwReply {
                bitmap_len: 0,
                version: 48,
            }),
            i64::from(q.len),
            0,
        ),
        RequestOp::Sync => (ReplyOp::Sync, 0, 0),
        RequestOp::Delete(_) => (
            ReplyOp::Delete(DeleteReply::with_left_on_dead(&[4, 9])),
            0,
            0,
        ),
        RequestOp::Ping => (ReplyOp::Ping, 0, 0),
        RequestOp::SecReadBmp(_) => (ReplyOp::SecReadBmp, 36, 36),
        RequestOp::Scrub(_) => (ReplyOp::Scrub(opaque_reply(3)), 0, 0),
        RequestOp::Describe(_) => (ReplyOp::Describe(opaque_reply(5)), 0, 0),
        RequestOp::SecLock(_) => (ReplyOp::SecLock(SecLockReply { cur_primary: 12 }), 0, 0),
    };
    (
        Reply {
            id: request.id,
            retval,
            op,
        },
        payload,
    )
}

/// Bytes `0, 1, 2, ...` (wrapping) of length `len`.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}
