//! Splitting an image range into per-object parts, and validating ranges.
//!
//! # What this module owns
//! The rule every client op follows on its way to the OSDs: a READ/WRITE/DELETE packet covers
//! at most one object (`pg_block_size` bytes, `block_size * data_chunks` for EC/XOR) and at
//! most `OSD_RW_MAX` bytes, and goes to the PG of that object's stripe.
//!
//! # What it must never do
//! Allocate or do I/O: it computes offsets only, so it is tested exhaustively on its own.

use vitastor_layout::PoolConfig;
use vitastor_protocol::OSD_RW_MAX;

/// One piece of an op that goes to one PG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// PG number (from 1).
    pub pg: u32,
    /// Byte offset in the image.
    pub offset: u64,
    /// Byte count (at most one object and `OSD_RW_MAX`).
    pub len: u32,
    /// Where this piece starts inside the op's buffer.
    pub op_offset: u64,
}

/// Calls `f` with each piece of `[offset, offset + len)` in order. `len = 0` yields one empty
/// piece (a bitmap-only read of the object holding `offset`).
pub fn split(pool: &PoolConfig, offset: u64, len: u64, mut f: impl FnMut(Piece)) {
    let block = pool.pg_block_size();
    let mut pos = offset;
    let end = offset.saturating_add(len);
    loop {
        let object_end = pool.object_start(pos).saturating_add(block);
        let piece_len = (end.min(object_end) - pos).min(OSD_RW_MAX);
        f(Piece {
            pg: pool.pg_of(pool.object_start(pos)),
            offset: pos,
            // At most OSD_RW_MAX, which fits u32.
            len: piece_len as u32,
            op_offset: pos - offset,
        });
        pos += piece_len;
        if pos >= end {
            return;
        }
    }
}

/// Why a range is refused before any I/O, or `None` when it is acceptable: offset and
/// length must be multiples of the pool's bitmap granularity (the OSD tracks data in those
/// units) and the end must not overflow.
pub fn check_range(pool: &PoolConfig, offset: u64, len: u64) -> Option<String> {
    let g = u64::from(pool.bitmap_granularity);
    if offset % g != 0 || len % g != 0 {
        return Some(format!(
            "offset {offset} and length {len} must be multiples of the pool's bitmap \
             granularity {g}"
        ));
    }
    if offset.checked_add(len).is_none() {
        return Some(format!("offset {offset} + length {len} overflows"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(extra: serde_json::Value) -> PoolConfig {
        let mut v = json!({"name":"p","pg_size":2,"pg_minsize":1,"pg_count":4});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        PoolConfig::from_json(1, &v).unwrap()
    }

    fn pieces(p: &PoolConfig, offset: u64, len: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        split(p, offset, len, |x| out.push(x));
        out
    }

    #[test]
    fn splits_at_object_boundaries() {
        let p = pool(json!({}));
        let k = 128 << 10;
        assert_eq!(
            pieces(&p, k - 4096, 8192),
            vec![
                Piece {
                    pg: 1,
                    offset: k - 4096,
                    len: 4096,
                    op_offset: 0
                },
                Piece {
                    pg: 2,
                    offset: k,
                    len: 4096,
                    op_offset: 4096
                },
            ]
        );
        // Four objects wrap around 4 PGs; the fifth goes back to PG 1.
        let all = pieces(&p, 0, 5 * k);
        assert_eq!(
            all.iter().map(|x| x.pg).collect::<Vec<_>>(),
            [1, 2, 3, 4, 1]
        );
        assert!(all.iter().all(|x| x.len == k as u32));
        assert_eq!(
            pieces(&p, 4096, 0),
            vec![Piece {
                pg: 1,
                offset: 4096,
                len: 0,
                op_offset: 0
            }]
        );
    }

    #[test]
    fn covers_every_byte_once() {
        let p = pool(json!({"pg_stripe_size": 1 << 20}));
        for (off, len) in [
            (0u64, 1u64 << 20),
            (4096, 3 << 20),
            (12288, 4096),
            (1 << 40, 5 << 17),
        ] {
            let v = pieces(&p, off, len);
            let mut pos = off;
            for x in &v {
                assert_eq!(x.offset, pos);
                assert_eq!(x.op_offset, pos - off);
                assert!(x.len > 0);
                assert_eq!(
                    p.object_start(x.offset),
                    p.object_start(x.offset + x.len as u64 - 1)
                );
                assert_eq!(x.pg, p.pg_of(p.object_start(x.offset)));
                pos += x.len as u64;
            }
            assert_eq!(pos, off + len);
        }
        // With an 1 MiB stripe, the first 8 objects share PG 1.
        let v = pieces(&p, 0, 2 << 20);
        assert!(v[..8].iter().all(|x| x.pg == 1) && v[8].pg == 2);
    }

    #[test]
    fn ec_objects_and_rw_max() {
        let p = PoolConfig::from_json(
            2,
            &json!({"name":"ec","scheme":"ec","pg_size":5,"parity_chunks":2,"pg_minsize":3,
                    "pg_count":2,"block_size":67108864}),
        )
        .unwrap();
        // An object is 3 * 64 MiB; pieces are capped at OSD_RW_MAX inside it.
        let v = pieces(&p, 0, 3 << 26);
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|x| x.pg == 1 && x.len as u64 == OSD_RW_MAX));
    }

    #[test]
    fn range_checks() {
        let p = pool(json!({}));
        assert_eq!(check_range(&p, 4096, 8192), None);
        assert!(check_range(&p, 512, 4096).unwrap().contains("granularity"));
        assert!(check_range(&p, 0, 100).is_some());
        assert!(check_range(&p, u64::MAX - 4095, 8192).is_some());
    }
}
