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

/// Bytes a [`Bits`] holds without a heap allocation: up to 256 granules (128 KiB objects of
/// 512-byte granules, 1 MiB objects of 4 KiB ones).
const INLINE_BYTES: usize = 32;

/// One bitmap of a version, inline when it is small (4 bytes for 128 KiB objects of 4 KiB
/// granules), so that creating a version allocates nothing for its two bitmaps.
#[derive(Clone, PartialEq, Eq)]
pub enum Bits {
    /// `len` bytes in place.
    Inline {
        /// Bytes used.
        len: u8,
        /// Storage; bytes past `len` are zero.
        bytes: [u8; INLINE_BYTES],
    },
    /// A larger bitmap.
    Heap(Box<[u8]>),
}

impl Bits {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Bits {
        if len <= INLINE_BYTES {
            Bits::Inline {
                len: len as u8,
                bytes: [0; INLINE_BYTES],
            }
        } else {
            Bits::Heap(vec![0; len].into())
        }
    }
}

impl From<&[u8]> for Bits {
    fn from(b: &[u8]) -> Bits {
        let mut bits = Bits::zeroed(b.len());
        bits.copy_from_slice(b);
        bits
    }
}

impl From<Vec<u8>> for Bits {
    fn from(b: Vec<u8>) -> Bits {
        if b.len() <= INLINE_BYTES {
            Bits::from(&b[..])
        } else {
            Bits::Heap(b.into())
        }
    }
}

impl std::ops::Deref for Bits {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bits::Inline { len, bytes } => &bytes[..*len as usize],
            Bits::Heap(b) => b,
        }
    }
}

impl std::ops::DerefMut for Bits {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Bits::Inline { len, bytes } => &mut bytes[..*len as usize],
            Bits::Heap(b) => b,
        }
    }
}

impl std::fmt::Debug for Bits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
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

    #[test]
    fn bits_inline_when_small_on_the_heap_when_large() {
        let mut b = Bits::zeroed(4);
        assert!(matches!(b, Bits::Inline { .. }));
        set_range(&mut b, 4096, 4096, 4096);
        assert_eq!(&b[..], [0b10, 0, 0, 0]);
        assert_eq!(Bits::from(&[0b10, 0, 0, 0][..]), b);
        let big = Bits::from(vec![1; INLINE_BYTES + 1]);
        assert!(matches!(big, Bits::Heap(_)));
        assert_eq!(big.len(), INLINE_BYTES + 1);
        assert_eq!(Bits::zeroed(0).len(), 0);
    }
}
