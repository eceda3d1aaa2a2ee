//! Where the bytes of an EC/XOR object live: a logical object covers `block_size × k` bytes
//! of the image; data part `i` holds bytes `[i × block_size, (i+1) × block_size)` of it and
//! is stored on the i-th OSD of the PG's set as `stripe = object start + i`; parity parts
//! `k..k+m` follow. Byte `c` of every part is one codeword (column `c`).
//!
//! Also the bitmaps: each part's store keeps one bit per `bitmap_granularity` of the part; a
//! client asks for the whole logical object's bitmap, which is the data parts' bitmaps one
//! after the other, granule by granule.
//!
//! Pure arithmetic; it must never produce a range crossing a part's end.

use std::ops::Range;

use vitastor_layout::{PoolConfig, Scheme};

use super::EcError;

/// The shape of one pool's stripes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Data parts (`k`).
    pub data_parts: u32,
    /// Parity parts (`m`).
    pub parity_parts: u32,
    /// Bytes of one part (the pool's `block_size`).
    pub block_size: u32,
    /// Bytes per bitmap bit.
    pub granularity: u32,
}

/// The piece of a byte range that one data part holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRange {
    /// Data part number.
    pub part: u32,
    /// Bytes inside the part.
    pub range: Range<u32>,
    /// Where those bytes sit in the caller's buffer for the whole range.
    pub buf_offset: usize,
}

impl Geometry {
    /// Checked: a power-of-two part size of whole granules, 1..=256 parts with at least one
    /// data and one parity part.
    pub fn new(
        data_parts: u32,
        parity_parts: u32,
        block_size: u32,
        granularity: u32,
    ) -> Result<Geometry, EcError> {
        if data_parts == 0 || parity_parts == 0 || data_parts + parity_parts > 256 {
            return Err(EcError::Shape(format!(
                "{data_parts}+{parity_parts}: need k >= 1, m >= 1, k+m <= 256"
            )));
        }
        if granularity == 0 || block_size == 0 || !block_size.is_multiple_of(granularity) {
            return Err(EcError::Shape(format!(
                "block_size {block_size} is not a multiple of granularity {granularity}"
            )));
        }
        Ok(Geometry {
            data_parts,
            parity_parts,
            block_size,
            granularity,
        })
    }

    /// The geometry of an `ec`/`xor` pool (`None` for a replicated one).
    pub fn of_pool(pool: &PoolConfig) -> Option<Result<Geometry, EcError>> {
        (pool.scheme != Scheme::Replicated).then(|| {
            Geometry::new(
                pool.data_chunks(),
                pool.parity_chunks,
                pool.block_size,
                pool.bitmap_granularity,
            )
        })
    }

    /// Every part.
    pub fn total_parts(&self) -> u32 {
        self.data_parts + self.parity_parts
    }

    /// Image bytes one logical object covers.
    pub fn object_size(&self) -> u64 {
        u64::from(self.block_size) * u64::from(self.data_parts)
    }

    /// The `stripe` of part `part` of the object starting at `object_start`.
    pub fn part_stripe(&self, object_start: u64, part: u32) -> u64 {
        object_start + u64::from(part)
    }

    /// `(object start, part)` of a stored part's `stripe`; `None` for a stripe no part has.
    pub fn split_stripe(&self, stripe: u64) -> Option<(u64, u32)> {
        let part = stripe % self.object_size();
        (part < u64::from(self.total_parts())).then(|| (stripe - part, part as u32))
    }

    /// The data parts a byte range of the object (`offset + len <= object_size`) touches, in
    /// order. Empty for `len == 0`.
    pub fn data_ranges(&self, offset: u64, len: u64) -> Vec<PartRange> {
        let bs = u64::from(self.block_size);
        let end = (offset + len).min(self.object_size());
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let part = pos / bs;
            let part_end = ((part + 1) * bs).min(end);
            out.push(PartRange {
                part: part as u32,
                range: (pos - part * bs) as u32..(part_end - part * bs) as u32,
                buf_offset: (pos - offset) as usize,
            });
            pos = part_end;
        }
        out
    }

    /// The columns a byte range of the object touches: the smallest range of part bytes that
    /// holds every touched part's piece (whole part bytes when it crosses a part edge).
    pub fn columns(&self, offset: u64, len: u64) -> Range<u32> {
        let r = self.data_ranges(offset, len);
        let start = r.iter().map(|p| p.range.start).min().unwrap_or(0);
        let end = r.iter().map(|p| p.range.end).max().unwrap_or(0);
        start..end
    }

    /// Granules (bitmap bits) of one part.
    pub fn part_granules(&self) -> u32 {
        self.block_size / self.granularity
    }

    /// Bytes of one part's bitmap.
    pub fn part_bitmap_bytes(&self) -> usize {
        self.part_granules().div_ceil(8) as usize
    }

    /// Bytes of the whole logical object's bitmap (what a client READ returns).
    pub fn object_bitmap_bytes(&self) -> usize {
        (self.part_granules() * self.data_parts).div_ceil(8) as usize
    }

    /// Sets the bits of `range` (part bytes) in a part's bitmap.
    pub fn mark(&self, part_bitmap: &mut [u8], range: Range<u32>) {
        if range.is_empty() {
            return;
        }
        let first = range.start / self.granularity;
        let last = (range.end - 1) / self.granularity;
        for g in first..=last {
            set_bit(part_bitmap, g, true);
        }
    }

    /// The object's bitmap from the data parts' bitmaps (part order).
    pub fn object_bitmap(&self, part_bitmaps: &[&[u8]]) -> Vec<u8> {
        let gpp = self.part_granules();
        let mut out = vec![0u8; self.object_bitmap_bytes()];
        for (p, bm) in part_bitmaps
            .iter()
            .enumerate()
            .take(self.data_parts as usize)
        {
            for g in 0..gpp {
                if get_bit(bm, g) {
                    set_bit(&mut out, p as u32 * gpp + g, true);
                }
            }
        }
        out
    }
}

fn get_bit(bm: &[u8], g: u32) -> bool {
    bm.get((g / 8) as usize)
        .is_some_and(|b| b & (1 << (g % 8)) != 0)
}

fn set_bit(bm: &mut [u8], g: u32, on: bool) {
    if let Some(b) = bm.get_mut((g / 8) as usize) {
        if on {
            *b |= 1 << (g % 8);
        } else {
            *b &= !(1 << (g % 8));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn g21() -> Geometry {
        Geometry::new(2, 1, 128 << 10, 4096).unwrap()
    }

    #[test]
    fn parts_are_addressed_as_object_start_plus_part_number() {
        let g = g21();
        assert_eq!(g.object_size(), 256 << 10);
        assert_eq!(g.part_stripe(512 << 10, 2), (512 << 10) + 2);
        assert_eq!(g.split_stripe((512 << 10) + 2), Some((512 << 10, 2)));
        assert_eq!(g.split_stripe((512 << 10) + 3), None, "a 2+1 has no part 3");
    }

    #[test]
    fn a_range_crossing_a_part_edge_is_split() {
        let g = g21();
        let r = g.data_ranges((128 << 10) - 4096, 8192);
        assert_eq!(
            r,
            [
                PartRange {
                    part: 0,
                    range: (124 << 10)..(128 << 10),
                    buf_offset: 0
                },
                PartRange {
                    part: 1,
                    range: 0..4096,
                    buf_offset: 4096
                },
            ]
        );
        assert_eq!(g.columns((128 << 10) - 4096, 8192), 0..(128 << 10));
        assert_eq!(g.columns(8192, 4096), 8192..12288);
        assert!(g.data_ranges(0, 0).is_empty());
    }

    #[test]
    fn the_object_bitmap_is_the_data_parts_bitmaps_in_order() {
        // 3 granules per part: the parts' bits are not byte-aligned in the object bitmap.
        let g = Geometry::new(3, 1, 3 * 4096, 4096).unwrap();
        assert_eq!(g.part_bitmap_bytes(), 1);
        assert_eq!(g.object_bitmap_bytes(), 2);
        let (a, b, c) = ([0b001u8], [0b110u8], [0b100u8]);
        // Part 0 granule 0, part 1 granules 1-2 (object 4-5), part 2 granule 2 (object 8).
        assert_eq!(g.object_bitmap(&[&a, &b, &c]), [0b0011_0001, 0b1]);
        let mut bm = [0u8];
        g.mark(&mut bm, 4096..4097);
        assert_eq!(bm, [0b010]);
    }

    #[test]
    fn pools_give_their_geometry() {
        let p = PoolConfig::from_json(
            1,
            &json!({"name":"e","scheme":"jerasure","pg_size":6,"parity_chunks":2,"pg_minsize":5,"pg_count":8}),
        )
        .unwrap();
        let g = Geometry::of_pool(&p).unwrap().unwrap();
        assert_eq!(
            (g.data_parts, g.parity_parts, g.block_size),
            (4, 2, 128 << 10)
        );
        let r = PoolConfig::from_json(
            1,
            &json!({"name":"r","pg_size":2,"pg_minsize":1,"pg_count":8}),
        )
        .unwrap();
        assert!(Geometry::of_pool(&r).is_none());
        assert!(Geometry::new(2, 0, 4096, 4096).is_err());
        assert!(Geometry::new(2, 1, 4096, 3000).is_err());
    }

    proptest! {
        /// The pieces cover the range exactly, in order, each inside its part.
        #[test]
        fn pieces_tile_the_range(k in 1u32..6, off in 0u64..(5 * 16384), len in 0u64..(5 * 16384)) {
            let g = Geometry::new(k, 1, 16384, 4096).unwrap();
            let off = off % g.object_size();
            let len = len.min(g.object_size() - off);
            let r = g.data_ranges(off, len);
            let mut pos = off;
            let mut buf = 0usize;
            for p in &r {
                prop_assert!(p.range.end <= g.block_size && !p.range.is_empty());
                prop_assert_eq!(u64::from(p.part) * 16384 + u64::from(p.range.start), pos);
                prop_assert_eq!(p.buf_offset, buf);
                pos += u64::from(p.range.len() as u32);
                buf += p.range.len();
            }
            prop_assert_eq!(pos, off + len);
        }
    }
}
