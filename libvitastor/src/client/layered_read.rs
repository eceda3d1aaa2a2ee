//! The lower levels of a layered read: where the granules a layer lacks are read from.
//!
//! # What this module owns
//! - Turning one layer's READ reply (its bitmap) into parts for the next layer down, sent at
//!   once; the decisions themselves (chain, missing runs) are pure, in [`crate::layers`].
//!
//! # What it must never do
//! - Send a lower part for a granule the upper layer holds: its data would overwrite the
//!   newer bytes already in the caller's buffer.

use vitastor_layout::{pool_of, PoolConfig};

use super::{Client, Part, PartState, NO_PAIR};
use crate::error::ClientError;
use crate::layers::missing_runs;
use crate::mapping::split;

impl Client {
    /// A layer answered part `p` of a layered read: the granules it lacks (clear in its
    /// bitmap) are read from the next layer down, into the same place of the op's buffer.
    /// Every such part is sent at once, so one level costs one round trip.
    pub(super) fn read_lower_layer(&mut self, idx: usize, p: Part, conn_idx: usize) {
        let layer = p.layer + 1;
        let lower = self.ops[idx].layers[usize::from(layer)];
        let (Some(upper_pool), Some(lower_pool)) = (
            self.view.pools.get(&p.pool),
            self.view.pools.get(&pool_of(lower)),
        ) else {
            let op = &mut self.ops[idx];
            op.error.get_or_insert(ClientError::BrokenLayers(format!(
                "the pool of layer {lower:#x} disappeared during a read"
            )));
            return;
        };
        let g = u64::from(upper_pool.bitmap_granularity);
        let first_bit = (p.offset - upper_pool.object_start(p.offset)) / g;
        let bitmap = self.conns[conn_idx]
            .as_ref()
            .map_or(&[][..], |c| &c.payload);
        let first_new = self.ops[idx].parts.len();
        let parts = &mut self.ops[idx].parts;
        missing_runs(bitmap, first_bit, g, u64::from(p.len), |off, len| {
            split(lower_pool, p.offset + off, len, |s| {
                parts.push(Part {
                    pool: lower_pool.id,
                    pg: s.pg,
                    offset: s.offset,
                    len: s.len,
                    op_offset: p.op_offset + off + s.op_offset,
                    layer,
                    ..Part::default()
                })
            });
        });
        for part in first_new..self.ops[idx].parts.len() {
            self.dispatch(idx, part);
        }
    }
}

/// Most objects remembered as empty in their top layer; past it the hints start over.
const EMPTY_TOP_HINTS: usize = 1 << 16;

/// Which granules of `[first_bit, first_bit + granules)` are set, as a mask (`granules` ≤ 64).
fn held_mask(bitmap: &[u8], first_bit: u64, granules: u64) -> u64 {
    let mut mask = 0;
    for i in 0..granules {
        let bit = first_bit + i;
        if bitmap
            .get((bit / 8) as usize)
            .is_some_and(|b| b & (1 << (bit % 8)) != 0)
        {
            mask |= 1 << i;
        }
    }
    mask
}

/// Runs `(offset, len)` within a part of the granules whose bit in `mask` is set.
fn mask_runs(mask: u64, granules: u64, g: u64, mut f: impl FnMut(u64, u64)) {
    let mut i = 0;
    while i < granules {
        if mask & (1 << i) == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < granules && mask & (1 << i) != 0 {
            i += 1;
        }
        f(start * g, (i - start) * g);
    }
}

impl Client {
    /// After a top-layer reply: remember whether the top held nothing of that object.
    pub(super) fn note_top_bitmap(&mut self, inode: u64, p: Part, conn_idx: usize) {
        let Some(pool) = self.view.pools.get(&p.pool) else {
            return;
        };
        let key = (inode, pool.object_start(p.offset));
        let empty = self.conns[conn_idx]
            .as_ref()
            .map_or(true, |c| c.payload.iter().all(|&b| b == 0));
        if empty {
            if self.empty_top.len() >= EMPTY_TOP_HINTS {
                self.empty_top.clear();
            }
            self.empty_top.insert(key);
        } else {
            self.empty_top.remove(&key);
        }
    }

    /// A layered read's parts over objects whose top layer held nothing last time become
    /// pairs: a bitmap-only read of the top and the parent's data read, sent together.
    pub(super) fn pair_empty_top(&mut self, idx: usize, pool: &PoolConfig) {
        let g = u64::from(pool.bitmap_granularity);
        let parent = self.ops[idx].layers[1];
        let Some(parent_pool) = self
            .view
            .pools
            .get(&pool_of(parent))
            .filter(|pp| pp.bitmap_granularity == pool.bitmap_granularity)
        else {
            return;
        };
        let inode = self.ops[idx].inode;
        for i in 0..self.ops[idx].parts.len() {
            let p = self.ops[idx].parts[i];
            let object = pool.object_start(p.offset);
            if u64::from(p.len) / g > 64 || !self.empty_top.contains(&(inode, object)) {
                continue;
            }
            // Only when the parent reads the range in one piece (same object geometry).
            let mut piece = None;
            let mut pieces = 0;
            split(parent_pool, p.offset, u64::from(p.len), |s| {
                pieces += 1;
                piece = Some(s);
            });
            let (1, Some(s)) = (pieces, piece) else {
                continue;
            };
            let ops = &mut self.ops[idx];
            let lower = ops.parts.len() as u32;
            ops.parts[i].pair = lower;
            ops.parts.push(Part {
                pool: parent_pool.id,
                pg: s.pg,
                layer: 1,
                pair: i as u32,
                ..p
            });
        }
    }

    /// One half of a speculative pair answered. The first answer is kept; with both, the
    /// parent's data (already in the buffer) stands where the top lacks granules, the top's
    /// own granules are read over it, and granules neither holds go one layer further down.
    pub(super) fn join_pair(&mut self, idx: usize, part: usize, conn_idx: usize) {
        let p = self.ops[idx].parts[part];
        let Some(pool) = self.view.pools.get(&p.pool) else {
            return;
        };
        let g = u64::from(pool.bitmap_granularity);
        let granules = u64::from(p.len) / g;
        let first_bit = (p.offset - pool.object_start(p.offset)) / g;
        let bitmap = self.conns[conn_idx]
            .as_ref()
            .map_or(&[][..], |c| &c.payload);
        let mine = held_mask(bitmap, first_bit, granules);
        let other = self.ops[idx].parts[p.pair as usize];
        if other.state != PartState::Done {
            self.ops[idx].parts[part].held = mine;
            return;
        }
        let (top, parent) = if p.layer == 0 {
            (mine, other.held)
        } else {
            (other.held, mine)
        };
        let inode = self.ops[idx].inode;
        if top != 0 {
            self.empty_top.remove(&(inode, pool.object_start(p.offset)));
        }
        let top_part = if p.layer == 0 { p } else { other };
        let first_new = self.ops[idx].parts.len();
        let parts = &mut self.ops[idx].parts;
        mask_runs(top, granules, g, |off, len| {
            parts.push(Part {
                offset: top_part.offset + off,
                len: len as u32,
                op_offset: top_part.op_offset + off,
                osd: 0,
                layer: 0,
                pair: NO_PAIR,
                held: 0,
                state: PartState::Waiting,
                ..top_part
            });
        });
        let full = if granules == 64 {
            u64::MAX
        } else {
            (1 << granules) - 1
        };
        let neither = !top & !parent & full;
        if neither != 0 && self.ops[idx].layers.len() > 2 {
            let lower = self.ops[idx].layers[2];
            match self.view.pools.get(&pool_of(lower)) {
                Some(lower_pool) => {
                    let parts = &mut self.ops[idx].parts;
                    mask_runs(neither, granules, g, |off, len| {
                        split(lower_pool, top_part.offset + off, len, |s| {
                            parts.push(Part {
                                pool: lower_pool.id,
                                pg: s.pg,
                                offset: s.offset,
                                len: s.len,
                                op_offset: top_part.op_offset + off + s.op_offset,
                                layer: 2,
                                ..Part::default()
                            })
                        });
                    });
                }
                None => {
                    self.ops[idx]
                        .error
                        .get_or_insert(ClientError::BrokenLayers(format!(
                            "the pool of layer {lower:#x} disappeared during a read"
                        )));
                }
            }
        }
        for part in first_new..self.ops[idx].parts.len() {
            self.dispatch(idx, part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_their_runs() {
        // Bits 9..12 of the object are the part's granules 0..3.
        assert_eq!(held_mask(&[0, 0b0001_0010], 9, 4), 0b1001);
        assert_eq!(held_mask(&[], 0, 4), 0);
        let mut runs = Vec::new();
        mask_runs(0b1101, 4, 4096, |o, l| runs.push((o, l)));
        assert_eq!(runs, [(0, 4096), (2 * 4096, 2 * 4096)]);
        runs.clear();
        mask_runs(u64::MAX, 64, 1, |o, l| runs.push((o, l)));
        assert_eq!(runs, [(0, 64)]);
    }
}
