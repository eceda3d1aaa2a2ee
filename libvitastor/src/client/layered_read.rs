//! The lower levels of a layered read: where the granules a layer lacks are read from.
//!
//! # What this module owns
//! - Turning one layer's READ reply (its bitmap) into parts for the next layer down, sent at
//!   once; the decisions themselves (chain, missing runs) are pure, in [`crate::layers`].
//!
//! # What it must never do
//! - Send a lower part for a granule the upper layer holds: its data would overwrite the
//!   newer bytes already in the caller's buffer.

use vitastor_layout::pool_of;

use super::{Client, Part, PartState};
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
                    osd: 0,
                    direct: false,
                    layer,
                    state: PartState::Waiting,
                })
            });
        });
        for part in first_new..self.ops[idx].parts.len() {
            self.dispatch(idx, part);
        }
    }
}
