//! Per-object bitmaps: one bit per `bitmap_granularity` of the object. Bit order: granule `i`
//! is bit `i % 8` of byte `i / 8`.
//!
//! Every version has two of them. The allocation bitmap is the store's own: set where the
//! version holds written bytes (unset granules read as zeroes). The external bitmap
//! (`attr`) is the client's: what reads report, unchanged by the store — for snapshot layers
//! the granules that do not fall through to the parent, for an erasure-coded parity part the
//! code of the data parts' bitmaps. Without an explicit one, a write's external bitmap is the
//! previous one plus the written range, so the two stay equal for plain writes.

/// Set bits for the granules covering `[offset, offset+len)`.
pub fn set_range(bitmap: &mut [u8], offset: u32, len: u32, granularity: u32) {
    if len == 0 {
        return;
    }
    let first = offset / granularity;
    let last = (offset + len - 1) / granularity;
    for g in first..=last {
        bitmap[(g / 8) as usize] |= 1 << (g % 8);
    }
}

/// Turn the previous version's allocation bitmap `alloc` into the new version's: granules
/// whose external bit the write clears (set in `prev_ext`, unset in `ext`) are dropped — an
/// explicit empty bitmap deletes what it clears, as a tombstone must — and the written range
/// is added. Granules whose external bit stays as it was keep their bytes whatever the bit
/// says (a parity part's bytes are real where its code bit is 0).
pub fn next_allocation(
    alloc: &mut [u8],
    prev_ext: &[u8],
    ext: &[u8],
    offset: u32,
    len: u32,
    granularity: u32,
) {
    for ((a, &p), &e) in alloc.iter_mut().zip(prev_ext).zip(ext) {
        *a &= !(p & !e);
    }
    set_range(alloc, offset, len, granularity);
}

/// Whether granule `g` is set.
#[inline]
pub fn is_set(bitmap: &[u8], g: u32) -> bool {
    bitmap[(g / 8) as usize] & (1 << (g % 8)) != 0
}

/// Bytes needed for the bitmap of one object.
pub fn bitmap_bytes(block_size: u32, granularity: u32) -> usize {
    (block_size / granularity).div_ceil(8) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let mut b = vec![0u8; 4];
        set_range(&mut b, 4096, 8192, 4096);
        assert_eq!(b, [0b110, 0, 0, 0]);
        set_range(&mut b, 31 * 4096, 4096, 4096);
        assert!(is_set(&b, 31));
        assert!(!is_set(&b, 30));
        set_range(&mut b, 0, 0, 4096);
        assert!(!is_set(&b, 0));
    }

    #[test]
    fn allocation_follows_cleared_external_bits_only() {
        // Unchanged external bits keep their bytes, set or not.
        let mut a = [0b1111];
        next_allocation(&mut a, &[0b0101], &[0b0101], 4096, 4096, 4096);
        assert_eq!(a, [0b1111]);
        // A cleared bit drops its granule; the written range is added back.
        let mut a = [0b1111];
        next_allocation(&mut a, &[0b1111], &[0], 0, 4096, 4096);
        assert_eq!(a, [0b0001]);
        // A set bit adds nothing without data; an empty write changes only what it clears.
        let mut a = [0b0011];
        next_allocation(&mut a, &[0b0011], &[0b1110], 0, 0, 4096);
        assert_eq!(a, [0b0010]);
    }
}
