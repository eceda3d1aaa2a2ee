//! What an OSD's reply means for the part it answers.
//!
//! # What this module owns
//! - The handshake's answer (the OSD's config, checked against each pool's expectations
//!   when parts are sent), the PING probe's answer, and every part's reply: data and bitmaps
//!   in place, versions, listings, retries of retryable errors, failure of the op on the
//!   others, recording acknowledged writes as unsynced.
//!
//! # What it must never do
//! - Trust a reply beyond what was checked: a malformed one drops the connection (the
//!   caller's `Err`), and its part is retried.
//! - Call a user callback: finished ops are queued as completions.

use std::rc::Rc;

use vitastor_protocol::handshake::{ImmediateCommit as WireCommit, ShowConfigReplyJson};
use vitastor_protocol::{obj_ver_ids, Reply, ReplyOp, OSD_LIST_PRIMARY};

use super::{
    Client, ConnState, Dirty, DirtyState, OpKind, Outstanding, PartState, Target, NO_PAIR,
};
use crate::error::{is_retryable_osd_errno, ClientError};

impl Client {
    pub(super) fn on_reply(
        &mut self,
        conn_idx: usize,
        out: Outstanding,
        reply: Reply,
    ) -> Result<(), String> {
        let Some(conn) = self.conns[conn_idx].as_mut() else {
            return Ok(());
        };
        let osd = conn.osd;
        let (op, part) = match out.target {
            Target::Handshake => {
                if reply.retval < 0 {
                    return Err(format!("SHOW_CONFIG failed with {}", reply.retval));
                }
                let cfg = ShowConfigReplyJson::parse(&conn.payload)
                    .map_err(|e| format!("handshake: {e}"))?;
                conn.payload = Vec::new();
                conn.state = ConnState::Ready(cfg);
                // Parts parked for this connection can go now.
                let waiting = std::mem::take(&mut self.waiting);
                for (op, part) in waiting {
                    if self.ops[op].active
                        && self.ops[op].parts.get(part).map(|p| p.state) == Some(PartState::Waiting)
                    {
                        self.dispatch(op, part);
                    }
                }
                return Ok(());
            }
            Target::Ping => return Ok(()),
            Target::Part { op, part } => (op, part),
        };
        let conn_commit = match &conn.state {
            ConnState::Ready(cfg) => cfg.immediate_commit,
            _ => WireCommit::None,
        };
        let o = &mut self.ops[op];
        if reply.retval < 0 {
            let errno = i32::try_from(-reply.retval).unwrap_or(i32::MAX);
            if is_retryable_osd_errno(errno) {
                if o.kind == OpKind::Sync {
                    o.restart = true;
                    self.lose_unsynced(osd);
                    self.part_done(op, part);
                    return Ok(());
                }
                o.parts[part].state = PartState::Waiting;
                self.waiting.push((op, part));
                return Ok(());
            }
            o.error.get_or_insert(ClientError::Osd { osd, errno });
            self.part_done(op, part);
            return Ok(());
        }
        let p = o.parts[part];
        let mut primary_listed_own_store_only = false;
        match (o.kind, reply.op) {
            (OpKind::List, ReplyOp::SecList(h)) => {
                let payload = self.conns[conn_idx]
                    .as_ref()
                    .map_or(&[][..], |c| &c.payload);
                let ids = obj_ver_ids(payload).map_err(|e| format!("bad listing: {e}"))?;
                if let Some(pool) = self.view.pools.get(&p.pool) {
                    o.listed.extend(
                        ids.filter(|v| v.oid.inode == o.inode)
                            .map(|v| pool.object_start(v.oid.stripe)),
                    );
                }
                primary_listed_own_store_only = !p.direct && h.flags & OSD_LIST_PRIMARY == 0;
            }
            (OpKind::Read, ReplyOp::Read(r)) => {
                if p.layer == 0 {
                    o.version_out = r.version;
                }
                if p.pair != NO_PAIR {
                    self.join_pair(op, part, conn_idx);
                } else if usize::from(p.layer) + 1 < o.layers.len() {
                    if p.layer == 0 {
                        let inode = o.inode;
                        self.note_top_bitmap(inode, p, conn_idx);
                    }
                    self.read_lower_layer(op, p, conn_idx);
                }
            }
            (OpKind::ReadBitmap, ReplyOp::Read(_)) => {
                if let Some(pool) = self.view.pools.get(&p.pool) {
                    let g = u64::from(pool.bitmap_granularity);
                    let first = (p.offset - pool.object_start(p.offset)) / g;
                    let dst_first = p.op_offset / g;
                    for i in 0..u64::from(p.len) / g {
                        let src = first + i;
                        let bit = self.conns[conn_idx]
                            .as_ref()
                            .and_then(|c| c.payload.get((src / 8) as usize))
                            .is_some_and(|b| b & (1 << (src % 8)) != 0);
                        if bit {
                            let dst = dst_first + i;
                            if let Some(b) = o.bitmap.get_mut((dst / 8) as usize) {
                                *b |= 1 << (dst % 8);
                            }
                        }
                    }
                }
            }
            (OpKind::Write | OpKind::Delete, _) if o.replay_of.is_some() => {
                let key = o.replay_of.unwrap_or_default();
                if conn_commit == WireCommit::All {
                    // Durable where it landed: nothing left to sync.
                    if let Some(d) = self.dirty.remove(&key) {
                        self.dirty_bytes -= u64::from(d.len);
                    }
                } else if let Some(d) = self.dirty.get_mut(&key) {
                    d.osd = osd;
                    d.state = DirtyState::Acked;
                }
            }
            (OpKind::Write | OpKind::Delete, _) if conn_commit != WireCommit::All => {
                let data = match (o.kind, &o.copy) {
                    (OpKind::Write, Some(copy)) => Some((Rc::clone(copy), p.op_offset)),
                    _ => None,
                };
                if o.kind == OpKind::Delete || data.is_some() {
                    self.dirty_bytes += u64::from(p.len);
                    self.dirty.insert(
                        self.next_dirty,
                        Dirty {
                            pool: p.pool,
                            pg: p.pg,
                            osd,
                            inode: o.inode,
                            offset: p.offset,
                            len: p.len,
                            data,
                            state: DirtyState::Acked,
                        },
                    );
                    self.next_dirty += 1;
                }
            }
            _ => {}
        }
        if primary_listed_own_store_only {
            self.list_peers_too(op, p, osd);
        }
        self.part_done(op, part);
        Ok(())
    }
}
