//! Object identity on the wire: `object_id`, `obj_ver_id`, the pool bits of an
//! inode number, and the `obj_ver_id[]` lists that follow SEC_STABILIZE,
//! SEC_ROLLBACK, SEC_READ_BMP requests and SEC_LIST replies. The blockstore keys
//! its objects by these same types, so an id crosses from the wire to the store
//! unchanged.
//!
//! List decoding borrows the caller's bytes and never allocates; a list whose
//! length is not a whole number of entries is rejected, not truncated.

use crate::error::ProtocolError;

/// Bits of an inode number below the pool id.
pub const POOL_ID_BITS: u32 = 48;

/// Bytes of one encoded [`ObjectId`].
pub const OBJECT_ID_SIZE: usize = 16;

/// Bytes of one encoded [`ObjVerId`].
pub const OBJ_VER_ID_SIZE: usize = 24;

/// Pool id carried in the top 16 bits of an inode number.
pub fn pool_of(inode: u64) -> u64 {
    inode >> POOL_ID_BITS
}

/// The inode number with its pool bits cleared.
pub fn inode_no_pool(inode: u64) -> u64 {
    inode & ((1u64 << POOL_ID_BITS) - 1)
}

/// One stored object: `{ inode u64, stripe u64 }`, 16 bytes.
///
/// For replicated pools `stripe` is the object's byte offset in the image; for
/// EC/XOR pools it is the logical object start plus the part number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectId {
    /// Inode number, pool id in the top 16 bits.
    pub inode: u64,
    /// Object offset (plus part number for EC/XOR pools).
    pub stripe: u64,
}

impl ObjectId {
    /// The object `stripe` of `inode`.
    pub const fn new(inode: u64, stripe: u64) -> ObjectId {
        ObjectId { inode, stripe }
    }
}

/// One version of one object: `{ inode u64, stripe u64, version u64 }`, 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjVerId {
    /// The object.
    pub oid: ObjectId,
    /// Its version; versions of one object only grow.
    pub version: u64,
}

impl ObjVerId {
    /// Version `version` of `oid`.
    pub const fn new(oid: ObjectId, version: u64) -> ObjVerId {
        ObjVerId { oid, version }
    }

    /// Decodes one entry from exactly [`OBJ_VER_ID_SIZE`] bytes.
    pub fn from_bytes(bytes: &[u8; OBJ_VER_ID_SIZE]) -> ObjVerId {
        ObjVerId {
            oid: ObjectId {
                inode: le_u64(&bytes[0..8]),
                stripe: le_u64(&bytes[8..16]),
            },
            version: le_u64(&bytes[16..24]),
        }
    }

    /// Encodes this entry as it appears on the wire.
    pub fn to_bytes(&self) -> [u8; OBJ_VER_ID_SIZE] {
        let mut out = [0u8; OBJ_VER_ID_SIZE];
        out[0..8].copy_from_slice(&self.oid.inode.to_le_bytes());
        out[8..16].copy_from_slice(&self.oid.stripe.to_le_bytes());
        out[16..24].copy_from_slice(&self.version.to_le_bytes());
        out
    }
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

/// Iterates over an `obj_ver_id[]` payload without copying it.
///
/// Fails with [`ProtocolError::MisalignedList`] unless `bytes.len()` is a
/// multiple of [`OBJ_VER_ID_SIZE`].
pub fn obj_ver_ids(
    bytes: &[u8],
) -> Result<impl ExactSizeIterator<Item = ObjVerId> + '_, ProtocolError> {
    if bytes.len() % OBJ_VER_ID_SIZE != 0 {
        return Err(ProtocolError::MisalignedList {
            len: bytes.len() as u64,
        });
    }
    Ok(bytes.chunks_exact(OBJ_VER_ID_SIZE).map(|chunk| {
        let mut entry = [0u8; OBJ_VER_ID_SIZE];
        entry.copy_from_slice(chunk);
        ObjVerId::from_bytes(&entry)
    }))
}

/// Appends the wire form of `list` to `out` (the payload of SEC_STABILIZE,
/// SEC_ROLLBACK, SEC_READ_BMP or a SEC_LIST reply).
pub fn encode_obj_ver_ids(list: &[ObjVerId], out: &mut Vec<u8>) {
    out.reserve(list.len() * OBJ_VER_ID_SIZE);
    for entry in list {
        out.extend_from_slice(&entry.to_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_bits() {
        let inode = (3u64 << 48) | 0x1234;
        assert_eq!(pool_of(inode), 3);
        assert_eq!(inode_no_pool(inode), 0x1234);
        assert_eq!(pool_of(u64::MAX), 0xffff);
        assert_eq!(inode_no_pool(u64::MAX), (1 << 48) - 1);
    }

    #[test]
    fn obj_ver_id_layout() {
        let e = ObjVerId {
            oid: ObjectId {
                inode: 0x0102,
                stripe: 0x0304,
            },
            version: 0x0506,
        };
        let b = e.to_bytes();
        assert_eq!(&b[0..2], &[0x02, 0x01]);
        assert_eq!(&b[8..10], &[0x04, 0x03]);
        assert_eq!(&b[16..18], &[0x06, 0x05]);
        assert!(b[2..8]
            .iter()
            .chain(&b[10..16])
            .chain(&b[18..])
            .all(|&x| x == 0));
        assert_eq!(ObjVerId::from_bytes(&b), e);
    }

    #[test]
    fn list_round_trip() {
        let list: Vec<ObjVerId> = (0..5)
            .map(|i| ObjVerId {
                oid: ObjectId {
                    inode: i,
                    stripe: i * 131072,
                },
                version: i + 100,
            })
            .collect();
        let mut bytes = Vec::new();
        encode_obj_ver_ids(&list, &mut bytes);
        assert_eq!(bytes.len(), 5 * OBJ_VER_ID_SIZE);
        let back: Vec<ObjVerId> = obj_ver_ids(&bytes).unwrap().collect();
        assert_eq!(back, list);
        assert_eq!(obj_ver_ids(&[]).unwrap().len(), 0);
    }

    #[test]
    fn misaligned_list_is_rejected() {
        let err = obj_ver_ids(&[0u8; 25]).err().unwrap();
        assert_eq!(err, ProtocolError::MisalignedList { len: 25 });
    }
}
