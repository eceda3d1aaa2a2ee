//! Upper bounds for every length field that sizes a buffer.
//!
//! Each limit is checked before any buffer is sized from the field it bounds;
//! the docs say why each number is what it is.

use crate::object::OBJ_VER_ID_SIZE;

/// Largest read or write in one op (64 MiB), as the spec fixes it. Also the
/// yardstick for the other limits: no single frame may pin more memory than
/// one maximal write.
pub const OSD_RW_MAX: u64 = 64 << 20;

/// Largest SHOW_CONFIG JSON in either direction (1 MiB). The handshake carries
/// a few hundred bytes of settings; anything near this is garbage or an
/// attempt to make us buffer it.
pub const MAX_SHOW_CONFIG_JSON: u64 = 1 << 20;

/// Largest per-object bitmap (`attr_len`) of a secondary read or write
/// (32 KiB): one bit per 512-byte sector, the finest bitmap granularity a
/// block device can address, of a 128 MiB object part, which is 1024 times the
/// default 128 KiB block size.
pub const MAX_ATTR_LEN: u64 = (128 << 20) / 512 / 8;

/// Largest `bitmap_len` of a READ reply (1 MiB). A READ bitmap concatenates
/// the bitmaps of every data part of the object, so it is bounded by 32 parts
/// at [`MAX_ATTR_LEN`] each.
pub const MAX_READ_BITMAP_LEN: u64 = 32 * MAX_ATTR_LEN;

/// Most `obj_ver_id` entries in one SEC_STABILIZE, SEC_ROLLBACK or
/// SEC_READ_BMP list: as many as fit in [`OSD_RW_MAX`] bytes, so a list pins no
/// more memory than one maximal write.
pub const MAX_OBJ_VER_LIST_ENTRIES: u64 = OSD_RW_MAX / OBJ_VER_ID_SIZE as u64;

/// [`MAX_OBJ_VER_LIST_ENTRIES`] in bytes; always a whole number of entries.
pub const MAX_OBJ_VER_LIST_BYTES: u64 = MAX_OBJ_VER_LIST_ENTRIES * OBJ_VER_ID_SIZE as u64;

/// Most `obj_ver_id` entries in one SEC_LIST reply (2^24, 384 MiB). Peering
/// lists a whole PG in one reply, so this is far above the other lists:
/// 2^24 versions cover a 2 TiB PG at the default 128 KiB block size. Only a
/// peer answering our own SEC_LIST can make us buffer that much.
pub const MAX_SEC_LIST_ENTRIES: u64 = 1 << 24;

/// Largest SEC_READ_BMP reply payload (`{version u64, bitmap}[]`): the same
/// budget as one maximal write, since it is fetched on the read path.
pub const MAX_READ_BMP_REPLY_BYTES: u64 = OSD_RW_MAX;

// Frame lengths are summed and converted to usize; keeping every limit within
// u32 makes that safe on 32-bit targets too, and keeps lists whole entries.
const _: () = {
    assert!(MAX_OBJ_VER_LIST_BYTES % OBJ_VER_ID_SIZE as u64 == 0);
    assert!(MAX_OBJ_VER_LIST_BYTES <= OSD_RW_MAX);
    assert!(MAX_SEC_LIST_ENTRIES * OBJ_VER_ID_SIZE as u64 <= u32::MAX as u64);
    assert!(OSD_RW_MAX + MAX_READ_BITMAP_LEN <= u32::MAX as u64);
    assert!(OSD_RW_MAX + MAX_ATTR_LEN <= u32::MAX as u64);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_values() {
        assert_eq!(MAX_ATTR_LEN, 32 << 10);
        assert_eq!(MAX_READ_BITMAP_LEN, 1 << 20);
        assert_eq!(MAX_OBJ_VER_LIST_ENTRIES, 2_796_202);
        assert_eq!(MAX_OBJ_VER_LIST_BYTES, 67_108_848);
    }
}
