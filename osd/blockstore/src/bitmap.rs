//! Per-object allocation bitmaps: one bit per `bitmap_granularity` of the object, set where this
//! object version holds written data (unset granules read as zeroes and, for snapshot layers,
//! fall through to the parent). Bit order: granule `i` is bit `i % 8` of byte `i / 8`.

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
}
