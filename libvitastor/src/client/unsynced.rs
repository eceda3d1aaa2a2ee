//! Unsynced writes (every `immediate_commit` mode but `all`): SYNC, replay and auto-sync.
//!
//! # What this module owns
//! - SYNC fan-out: one SYNC to each OSD holding acknowledged, unsynced writes, and nothing
//!   when there are none.
//! - Replay: the writes an OSD acknowledged but may lose (its connection dropped, or its PG
//!   moved to another primary) are written again to the PG's primary of the moment before
//!   any new op starts.
//! - Syncing on its own past `client_max_dirty_bytes`/`client_max_dirty_ops`.
//!
//! # What it must never do
//! - Forget an acknowledged write before a SYNC covering it succeeded.
//! - Let a SYNC finish before the replays it depends on.

use std::rc::Rc;

use rustc_hash::FxHashSet;

use super::{Client, DirtyState, OpKind, Part};
use crate::sys::IoVec;

impl Client {
    pub(super) fn replaying(&self) -> bool {
        self.replays_running > 0
            || self
                .dirty
                .values()
                .any(|d| d.state == DirtyState::NeedsReplay)
    }

    pub(super) fn start_sync(&mut self, idx: usize) {
        let mut osds: Vec<u64> = self
            .dirty
            .values()
            .filter(|d| d.state == DirtyState::Acked)
            .map(|d| d.osd)
            .collect::<FxHashSet<u64>>()
            .into_iter()
            .collect();
        osds.sort_unstable();
        let op = &mut self.ops[idx];
        op.parts.clear();
        op.restart = false;
        op.parts.extend(osds.iter().map(|&osd| Part {
            osd,
            ..Part::default()
        }));
        if osds.is_empty() {
            return self.finish_op(idx);
        }
        self.sync_running = true;
        for part in 0..osds.len() {
            self.dispatch(idx, part);
        }
    }

    pub(super) fn start_replays(&mut self) {
        let todo: Vec<u64> = self
            .dirty
            .iter()
            .filter(|(_, d)| d.state == DirtyState::NeedsReplay)
            .map(|(&k, _)| k)
            .collect();
        for key in todo {
            let Some(d) = self.dirty.get_mut(&key) else {
                continue;
            };
            d.state = DirtyState::Replaying;
            let (kind, iov) = match &d.data {
                Some((data, off)) => (
                    OpKind::Write,
                    IoVec {
                        iov_base: data.as_ptr().cast_mut().wrapping_add(*off as usize).cast(),
                        iov_len: d.len as usize,
                    },
                ),
                None => (
                    OpKind::Delete,
                    IoVec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    },
                ),
            };
            let part = Part {
                pool: d.pool,
                pg: d.pg,
                offset: d.offset,
                len: d.len,
                ..Part::default()
            };
            let (inode, offset, len) = (d.inode, d.offset, d.len);
            let keep = d.data.as_ref().map(|(data, _)| Rc::clone(data));
            let idx = self.take_op_slot(kind);
            let op = &mut self.ops[idx];
            op.inode = inode;
            op.offset = offset;
            op.len = len.into();
            op.version = 0;
            op.iov.clear();
            op.iov.push(iov);
            op.copy = keep;
            op.parts.clear();
            op.parts.push(part);
            op.replay_of = Some(key);
            self.replays_running += 1;
            self.dispatch(idx, 0);
        }
    }

    /// The OSD may have lost the writes it acknowledged but did not sync: replay them.
    pub(super) fn lose_unsynced(&mut self, osd: u64) {
        for d in self.dirty.values_mut() {
            if d.osd == osd && d.state == DirtyState::Acked {
                d.state = DirtyState::NeedsReplay;
            }
        }
    }

    /// Past the dirty limits the client syncs on its own, bounding the memory held for
    /// replay.
    pub(super) fn maybe_auto_sync(&mut self) {
        let over = self.dirty_bytes >= self.settings.max_dirty_bytes
            || self.dirty.len() as u64 >= self.settings.max_dirty_ops;
        if over && !self.sync_running && self.syncs_queued == 0 {
            let idx = self.take_op_slot(OpKind::Sync);
            let op = &mut self.ops[idx];
            op.callback = None;
            self.syncs_queued += 1;
            self.queue.push_back(idx);
        }
    }
}
