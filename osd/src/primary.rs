//! Primary ops: client READ / WRITE / SYNC / DELETE on the PGs this OSD leads, and the
//! object recovery that runs behind them. Each op ([`POp`]) is advanced by the results of
//! its sub-ops (local blockstore ops and requests to peers); `Server::on_sub` is the single
//! place where a result moves an op forward. WRITE, DELETE and SYNC decide in pure state
//! machines ([`crate::op_write`], [`crate::op_delete`], [`crate::op_sync`]): here they
//! only get the facts they ask for and carry their actions out. A READ's source is chosen
//! in [`crate::op_read`], a recovery's plan in [`crate::recovery`]; the steps of a recovery
//! are still sequenced here.
//!
//! Ordering: ops that create versions of one object (write, delete, recovery) hold that
//! object's lock in its PG, so versions are assigned and applied in order on every replica.
//! Reads take no lock.
//!
//! What this module must never do: acknowledge a write before every live member of the PG
//! has it, or write to an object whose live copies disagree (it is recovered first).

use std::rc::Rc;

use vitastor_blockstore::{AlignedBuf, BsOp, BsReply, ObjVerId, ObjectId, NEWEST};
use vitastor_layout::{ImmediateCommit, OsdNum, PgId, Scheme};
use vitastor_protocol::errno::Errno;
use vitastor_protocol::{
    encode_obj_ver_ids, obj_ver_ids, DeleteReply, Reply, ReplyOp, Request, RequestOp, RwOp,
    RwReply, SecDeleteOp, SecListOp, SecListReply, SecRwOp, SecStabOp, SecSyncOp,
};

use crate::fanout;
use crate::op_delete as delete;
use crate::op_list as list;
use crate::op_read as read;
use crate::op_recover as recover;
use crate::op_sync::{self as sync, SyncOp};
use crate::op_write as write;
use crate::pg::Dirty;
use crate::recovery::Source;
use crate::secondary::ReplyMsg;
use crate::server::{ConnId, Server, SubRes};
use crate::stats::InodeOp;

/// The client request an op answers.
#[derive(Debug, Clone, Copy)]
pub struct ClientRef {
    /// Connection.
    pub conn: ConnId,
    /// Request id.
    pub id: u64,
    /// Request opcode.
    pub opcode: u64,
    /// Bytes the request pins on its connection.
    pub cost: usize,
    /// When it arrived (for `osd/stats`).
    pub start: std::time::Instant,
}

/// A primary op in progress.
#[derive(Debug)]
pub enum POp {
    /// Client READ.
    Read(ReadOp),
    /// Client WRITE.
    Write(WriteOp),
    /// Client DELETE: tombstone, then purge where possible.
    Delete(DeleteOp),
    /// Client SYNC: sync then stabilize every unstable write on every OSD.
    Sync {
        /// The request it answers.
        client: ClientRef,
        /// Its decisions.
        op: SyncOp,
    },
    /// Background recovery of one object (also run before a write to a degraded object).
    Recover(RecoverOp),
    /// A client's listing of a whole PG (SEC_LIST with `OSD_LIST_PRIMARY`).
    List(PgListOp),
    /// Client READ of an EC/XOR object.
    EcRead(crate::primary_ec::EcReadOp),
    /// Client WRITE of an EC/XOR object.
    EcWrite(crate::primary_ec::EcWrite),
    /// Background recovery of one EC/XOR object (also run before a write to a degraded one).
    EcRecover(crate::primary_ec::EcRecover),
}

/// A listing of a whole PG: the request, beside the merge ([`list::ListOp`]).
#[derive(Debug)]
pub struct PgListOp {
    client: ClientRef,
    pg: PgId,
    steps: list::ListOp,
}

/// A client READ.
#[derive(Debug)]
pub struct ReadOp {
    client: ClientRef,
    oid: ObjectId,
    offset: u32,
    len: u32,
}

/// A client WRITE: the request and its data, beside the decisions ([`write::WriteOp`]).
#[derive(Debug)]
pub struct WriteOp {
    client: ClientRef,
    pg: PgId,
    oid: ObjectId,
    offset: u32,
    data: Rc<AlignedBuf>,
    steps: write::WriteOp,
}

/// A DELETE (a client's, or a background purge): what it deletes, beside the decisions
/// ([`delete::DeleteOp`]).
#[derive(Debug)]
pub struct DeleteOp {
    client: ClientRef,
    pg: PgId,
    oid: ObjectId,
    steps: delete::DeleteOp,
}

/// Recovery of one object: what it recovers and the data read, beside the decisions
/// ([`recover::RecoverOp`]).
#[derive(Debug)]
pub struct RecoverOp {
    start: std::time::Instant,
    pg: PgId,
    oid: ObjectId,
    bitmap: Vec<u8>,
    data: Option<Rc<AlignedBuf>>,
    steps: recover::RecoverOp,
}

pub(crate) fn wire_list(list: &[ObjVerId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len() * vitastor_protocol::OBJ_VER_ID_SIZE);
    encode_obj_ver_ids(list, &mut out);
    out
}

impl Server {
    /// Entry point for READ / WRITE / DELETE / SYNC from a client.
    pub(crate) fn serve_client(
        &mut self,
        client: ClientRef,
        request: &Request,
        payload: AlignedBuf,
    ) {
        match request.op {
            RequestOp::Sync => self.start_sync(client),
            RequestOp::Read(rw) | RequestOp::Write(rw) | RequestOp::Delete(rw) => {
                if let Err(errno) = self.start_rw(client, &request.op, rw, payload) {
                    self.client_error(client, errno);
                }
            }
            _ => self.client_error(client, Errno::EINVAL),
        }
    }

    pub(crate) fn client_error(&mut self, client: ClientRef, errno: Errno) {
        self.reply(
            client.conn,
            client.cost,
            ReplyMsg::error(client.id, client.opcode, errno),
        );
    }

    /// Answers a client READ of `len` bytes of `inode` that found `version`, and counts it.
    pub(crate) fn read_done(
        &mut self,
        client: ClientRef,
        inode: u64,
        len: u64,
        version: u64,
        bitmap: Vec<u8>,
        data: Option<AlignedBuf>,
    ) {
        self.stats.op("primary_read", client.start, len);
        self.stats.inode(inode, InodeOp::Read, client.start, len);
        let mut msg = ReplyMsg::new(
            &Reply {
                id: client.id,
                retval: len as i64,
                op: ReplyOp::Read(RwReply {
                    bitmap_len: bitmap.len() as u32,
                    version,
                }),
            },
            bitmap,
        );
        msg.data = data;
        self.reply(client.conn, client.cost, msg);
    }

    /// Answers a client WRITE of `len` bytes of `inode` that created `version`, and counts it.
    pub(crate) fn write_done(&mut self, client: ClientRef, inode: u64, len: u64, version: u64) {
        self.stats.op("primary_write", client.start, len);
        self.stats.inode(inode, InodeOp::Write, client.start, len);
        let msg = ReplyMsg::new(
            &Reply {
                id: client.id,
                retval: len as i64,
                op: ReplyOp::Write(RwReply {
                    bitmap_len: 0,
                    version,
                }),
            },
            Vec::new(),
        );
        self.reply(client.conn, client.cost, msg);
    }

    /// A recovery of `oid` released its lock; `succeeded` forgets the object's backoff.
    pub(crate) fn recovery_done(&mut self, key: PgId, oid: ObjectId, succeeded: bool) {
        if succeeded {
            self.backoff.succeeded(&(key, oid));
        }
        self.recovering.remove(&(key, oid));
        self.unlock(key, oid);
        self.op_done(key);
        // The next attempt, or the next object, is the event loop's.
        self.recovery_kick = true;
    }

    fn start_rw(
        &mut self,
        client: ClientRef,
        op: &RequestOp,
        rw: RwOp,
        payload: AlignedBuf,
    ) -> Result<(), Errno> {
        let pool_id = vitastor_layout::pool_of(rw.inode);
        let Some(pool) = self.cluster.pools.get(&pool_id) else {
            return Err(Errno::EPIPE);
        };
        if pool.scheme != Scheme::Replicated {
            let pool = pool.clone();
            return self.start_ec_rw(client, op, rw, payload, &pool);
        }
        let stripe = pool.object_start(rw.offset);
        let key = PgId::new(pool_id, pool.pg_of(stripe));
        let in_obj = (rw.offset - stripe) as u32;
        let block = self.geo_block_size();
        if u64::from(in_obj) + u64::from(rw.len) > u64::from(block) {
            return Err(Errno::EINVAL);
        }
        let Some(pg) = self.pgs.get_mut(&key) else {
            return Err(Errno::EPIPE);
        };
        if pg.phase != crate::pg::Phase::Active {
            return Err(Errno::EPIPE);
        }
        let oid = ObjectId::new(rw.inode, stripe);
        match op {
            RequestOp::Read(_) => {
                let align = self.bs.layout().disk_alignment;
                if !in_obj.is_multiple_of(align) || !rw.len.is_multiple_of(align) {
                    return Err(Errno::EINVAL);
                }
                pg.inflight += 1;
                self.start_read(client, key, oid, in_obj, rw.len);
            }
            RequestOp::Write(_) => {
                let gran = self.bs.layout().bitmap_granularity;
                if !in_obj.is_multiple_of(gran) || !rw.len.is_multiple_of(gran) || rw.len == 0 {
                    return Err(Errno::EINVAL);
                }
                pg.inflight += 1;
                let w = WriteOp {
                    client,
                    pg: key,
                    oid,
                    offset: in_obj,
                    // Received into an aligned buffer: written and sent from where it arrived.
                    data: Rc::new(payload),
                    steps: write::WriteOp::new(rw.version),
                };
                self.start_locked(key, oid, POp::Write(w));
            }
            _ => {
                pg.inflight += 1;
                let d = DeleteOp::new(client, key, oid, false);
                self.start_locked(key, oid, POp::Delete(d));
            }
        }
        Ok(())
    }

    /// Starts `op` on object `oid`: it runs once it holds the object's lock.
    pub(crate) fn start_locked(&mut self, key: PgId, oid: ObjectId, op: POp) {
        let idx = self.insert_op(op);
        self.lock_and_run(key, oid, idx);
    }

    /// Takes the object lock for op `idx` and runs it, or queues it behind the holder.
    pub(crate) fn lock_and_run(&mut self, key: PgId, oid: ObjectId, idx: usize) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return self.abort_op(idx, Errno::EPIPE);
        };
        match pg.locks.get_mut(&oid) {
            Some(queue) => queue.push_back(idx),
            None => {
                pg.locks.insert(oid, Default::default());
                self.advance(idx);
            }
        }
    }

    /// Releases the object lock held by a finished op; the next queued op runs.
    pub(crate) fn unlock(&mut self, key: PgId, oid: ObjectId) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let next = match pg.locks.get_mut(&oid) {
            Some(queue) => queue.pop_front(),
            None => return,
        };
        match next {
            Some(idx) => self.advance(idx),
            None => {
                pg.locks.remove(&oid);
            }
        }
    }

    /// An op finished on its PG.
    pub(crate) fn op_done(&mut self, key: PgId) {
        if let Some(pg) = self.pgs.get_mut(&key) {
            pg.inflight -= 1;
        }
        self.pg_maybe_drained(key);
    }

    fn abort_op(&mut self, idx: usize, errno: Errno) {
        let Some(op) = self.take_op(idx) else { return };
        self.release_if_done(idx);
        match op {
            POp::Read(r) => self.client_error(r.client, errno),
            POp::Write(w) => self.client_error(w.client, errno),
            POp::List(l) => self.client_error(l.client, errno),
            op @ (POp::EcRead(_) | POp::EcWrite(_) | POp::EcRecover(_)) => self.abort_ec(op, errno),
            POp::Delete(d) if !d.steps.is_background() => self.client_error(d.client, errno),
            POp::Sync { client, mut op } => {
                // The slot is already free: nothing more may be sent for this op.
                let actions = op.advance(sync::Event::Abort(errno));
                self.run_sync_actions(usize::MAX, client, actions);
            }
            // Background work counts in `recovering` until it ends; an entry left behind
            // would hold a recovery slot and keep the object from being recovered again.
            POp::Delete(DeleteOp { pg, oid, .. }) | POp::Recover(RecoverOp { pg, oid, .. }) => {
                self.recovering.remove(&(pg, oid));
            }
        }
    }

    // ------------------------------------------------------------------ reads

    fn start_read(&mut self, client: ClientRef, key: PgId, oid: ObjectId, offset: u32, len: u32) {
        let me = self.osd_num;
        let st = self.pgs[&key].objects.objects.get(&oid);
        let source = read::first(me, st, |o| self.peers.is_ready(o));
        let idx = self.insert_op(POp::Read(ReadOp {
            client,
            oid,
            offset,
            len,
        }));
        self.read_pgs.insert(idx, key);
        match source {
            None => {
                self.finish_read(idx, Err(Errno::EIO));
                self.release_if_done(idx);
            }
            Some(read::Source::Local) => self.sub_local(
                idx,
                0,
                BsOp::Read {
                    oid,
                    version: NEWEST,
                    offset,
                    len,
                },
            ),
            Some(read::Source::Osd { osd, version }) => {
                self.read_remote(idx, osd, oid, version, offset, len)
            }
        }
    }

    fn read_remote(
        &mut self,
        idx: usize,
        osd: OsdNum,
        oid: ObjectId,
        version: u64,
        offset: u32,
        len: u32,
    ) {
        let bmp = self.bs.layout().bitmap_bytes() as u32;
        let req = Request {
            id: 0,
            op: RequestOp::SecRead(SecRwOp {
                oid,
                version,
                offset,
                len,
                attr_len: bmp,
                flags: 0,
            }),
        };
        self.sub_remote(idx, 0, osd, req, Vec::new(), None);
    }

    /// A local read failed (a device error, a store gone read-only): another live member
    /// holding the current version serves it, so data stays readable while a replica has it.
    fn read_elsewhere(&mut self, idx: usize) -> bool {
        let Some(POp::Read(r)) = self.ops.get(idx).and_then(Option::as_ref) else {
            return false;
        };
        let (oid, offset, len) = (r.oid, r.offset, r.len);
        let Some(pg) = self.read_pgs.get(&idx).and_then(|k| self.pgs.get(k)) else {
            return false;
        };
        let st = pg.objects.objects.get(&oid);
        let members = pg.live_members();
        let me = self.osd_num;
        let source = read::after_local_failure(me, &members, st, |o| self.peers.is_ready(o));
        let Some(read::Source::Osd { osd, version }) = source else {
            return false;
        };
        self.read_remote(idx, osd, oid, version, offset, len);
        true
    }

    fn finish_read(&mut self, idx: usize, res: Result<(u64, Vec<u8>, Option<AlignedBuf>), Errno>) {
        let Some(POp::Read(r)) = self.take_op(idx) else {
            return;
        };
        let key = self.read_pgs.remove(&idx);
        match res {
            Ok((version, bitmap, data)) => {
                self.read_done(
                    r.client,
                    r.oid.inode,
                    u64::from(r.len),
                    version,
                    bitmap,
                    data,
                );
            }
            Err(e) => self.client_error(r.client, e),
        }
        if let Some(key) = key {
            self.op_done(key);
        }
    }

    // ------------------------------------------------------------------ sub-op results

    /// Moves op `idx` forward with the result of its sub-op `tag`.
    pub(crate) fn on_sub(&mut self, idx: usize, tag: u32, res: SubRes) {
        let Some(op) = self.ops.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        match &res {
            SubRes::Bs(Err(e)) => tracing::debug!("op {idx}: local sub-op {tag} failed: {e}"),
            SubRes::Net(Err(e)) => tracing::debug!("op {idx}: sub-op {tag} failed with {e}"),
            _ => {}
        }
        match op {
            POp::EcRead(_) | POp::EcWrite(_) | POp::EcRecover(_) => self.on_ec_sub(idx, tag, res),
            POp::Read(_) => {
                if let SubRes::Bs(Err(e)) = &res {
                    if self.read_elsewhere(idx) {
                        tracing::warn!("op {idx}: local read failed ({e}), reading a replica");
                        return;
                    }
                }
                let res = match res {
                    SubRes::Bs(Ok(BsReply::Read {
                        version,
                        bitmap,
                        data,
                    })) => Ok((version, bitmap, Some(data))),
                    SubRes::Net(Ok((reply, mut payload))) => match reply.op {
                        ReplyOp::SecRead(r) if payload.len() >= r.attr_len as usize => {
                            let data = payload.split_off(r.attr_len as usize);
                            Ok((r.version, payload, Some(AlignedBuf::from_slice(&data))))
                        }
                        _ => Err(Errno::EIO),
                    },
                    other => Err(other.errno().unwrap_or(Errno::EIO)),
                };
                self.finish_read(idx, res);
                self.release_if_done(idx);
            }
            POp::Write(_) => {
                let Some(POp::Write(w)) = self.take_op(idx) else {
                    unreachable!("matched above")
                };
                let result = res.errno().map_or(Ok(()), Err);
                self.step_write(idx, w, write::Event::Sub { tag, result });
                self.release_if_done(idx);
            }
            POp::Delete(_) => {
                let Some(POp::Delete(d)) = self.take_op(idx) else {
                    unreachable!("matched above")
                };
                let result = res.errno().map_or(Ok(()), Err);
                let purgeable = self.can_purge(d.pg);
                self.step_delete(
                    idx,
                    d,
                    delete::Event::Sub {
                        tag,
                        result,
                        purgeable,
                    },
                );
                self.release_if_done(idx);
            }
            POp::Sync { client, op } => {
                let client = *client;
                let result = res.errno().map_or(Ok(()), Err);
                let actions = op.advance(sync::Event::Sub { tag, result });
                self.run_sync_actions(idx, client, actions);
            }
            POp::List(l) => {
                let result = match res {
                    SubRes::Bs(Ok(BsReply::List {
                        mut stable,
                        unstable,
                    })) => {
                        stable.extend(unstable);
                        Ok(stable)
                    }
                    SubRes::Net(Ok((reply, payload))) => match reply.op {
                        ReplyOp::SecList(_) => parse_listing(&payload).ok_or(Errno::EIO),
                        _ => Err(Errno::EIO),
                    },
                    other => Err(other.errno().unwrap_or(Errno::EIO)),
                };
                if let Some(answer) = l.steps.advance(tag, result) {
                    let Some(POp::List(l)) = self.take_op(idx) else {
                        unreachable!("matched above")
                    };
                    self.finish_pg_list(l, answer);
                    self.release_if_done(idx);
                }
            }
            POp::Recover(_) => {
                let Some(POp::Recover(mut r)) = self.take_op(idx) else {
                    unreachable!("matched above")
                };
                let event = if !self.pgs.contains_key(&r.pg) {
                    recover::Event::PgGone
                } else if r.steps.awaits_read(tag) {
                    let result = r.take_read(res);
                    recover::Event::Read { tag, result }
                } else {
                    let result = res.errno().map_or(Ok(()), Err);
                    recover::Event::Sub { tag, result }
                };
                self.step_recover(idx, r, event);
                self.release_if_done(idx);
            }
        }
    }

    /// Runs the next step of op `idx` (all its sub-ops are done, or it just got its lock).
    pub(crate) fn advance(&mut self, idx: usize) {
        let Some(op) = self.take_op(idx) else { return };
        match op {
            POp::Write(w) => {
                let facts = self.write_facts(w.pg, w.oid);
                self.step_write(idx, w, write::Event::Locked(facts));
            }
            POp::Delete(d) => {
                let facts = self.delete_facts(d.pg, d.oid);
                self.step_delete(idx, d, delete::Event::Locked(facts));
            }
            POp::Sync { client, op } => {
                self.ops[idx] = Some(POp::Sync { client, op });
            }
            POp::Recover(r) => {
                let event = match self.pgs.get(&r.pg) {
                    Some(_) => recover::Event::Locked(self.recover_facts(r.pg, r.oid)),
                    None => recover::Event::PgGone,
                };
                self.step_recover(idx, r, event);
            }
            POp::EcWrite(w) => self.ec_write_locked(idx, w),
            POp::EcRecover(r) => self.ec_recover_locked(idx, r),
            POp::Read(r) => {
                self.ops[idx] = Some(POp::Read(r));
            }
            POp::EcRead(r) => {
                self.ops[idx] = Some(POp::EcRead(r));
                self.send_ec_read(idx, true);
            }
            POp::List(l) => {
                self.ops[idx] = Some(POp::List(l));
            }
        }
        self.release_if_done(idx);
    }

    /// The next version of `oid`: above everything this OSD has and everything peering saw.
    pub(crate) fn next_version(&self, key: PgId, oid: ObjectId) -> u64 {
        let known = self
            .pgs
            .get(&key)
            .and_then(|pg| pg.objects.objects.get(&oid))
            .map_or(0, |s| s.version);
        self.bs.object_version(self.local_oid(key, oid)).max(known) + 1
    }

    /// Starts recovery of `oid` ahead of the op `idx` that holds its lock: the recovery takes
    /// the lock over and `idx` runs again right after it.
    pub(crate) fn recover_first(&mut self, key: PgId, oid: ObjectId, idx: usize) {
        if let Some(q) = self.pgs.get_mut(&key).and_then(|pg| pg.locks.get_mut(&oid)) {
            q.push_front(idx);
        }
        if let Some(pg) = self.pgs.get_mut(&key) {
            pg.inflight += 1;
        }
        let r = self.insert_op(self.new_recover_op(key, oid));
        self.recovering.insert((key, oid));
        self.advance(r);
    }

    /// What a write that just got its lock needs to know of its PG and object.
    fn write_facts(&self, key: PgId, oid: ObjectId) -> write::Facts {
        let me = self.osd_num;
        let pg = self.pgs.get(&key);
        let mut targets = vec![me];
        if let Some(pg) = pg {
            targets.extend(pg.live_members().into_iter().filter(|&o| o != me));
        }
        let degraded = pg.is_some_and(|pg| pg.objects.degraded.contains(&oid));
        write::Facts {
            active: pg.is_some_and(|pg| pg.phase == crate::pg::Phase::Active),
            degraded,
            recovery_waits: degraded.then(|| self.recovery_waits(key, oid)).flatten(),
            targets,
            current: self.next_version(key, oid) - 1,
            purged_up_to: pg.map_or(0, |pg| pg.purged_up_to),
            stable: self.pool_commit(key.pool) == ImmediateCommit::All,
        }
    }

    /// Feeds write `idx` (taken out of its slot) one event and carries out what it decided;
    /// puts it back unless it is over.
    fn step_write(&mut self, idx: usize, mut w: WriteOp, event: write::Event) {
        let actions = w.steps.advance(event);
        let (client, key, oid, offset) = (w.client, w.pg, w.oid, w.offset);
        let data = Rc::clone(&w.data);
        if !w.steps.is_done() {
            self.ops[idx] = Some(POp::Write(w));
        }
        for action in actions {
            match action {
                write::Action::RecoverFirst => self.recover_first(key, oid, idx),
                write::Action::Write {
                    tag,
                    osd,
                    version,
                    stable,
                } if osd == self.osd_num => {
                    let op = BsOp::Write {
                        oid,
                        version,
                        offset,
                        // The bytes the replicas are sent, without a copy.
                        data: AlignedBuf::shared(&data),
                        bitmap: None,
                        stable,
                    };
                    self.sub_local(idx, tag, op);
                }
                write::Action::Write {
                    tag,
                    osd,
                    version,
                    stable,
                } => {
                    let rw = SecRwOp {
                        oid,
                        version,
                        offset,
                        len: data.len() as u32,
                        attr_len: 0,
                        flags: 0,
                    };
                    let op = if stable {
                        RequestOp::SecWriteStable(rw)
                    } else {
                        RequestOp::SecWrite(rw)
                    };
                    let req = Request { id: 0, op };
                    self.sub_remote(idx, tag, osd, req, Vec::new(), Some(Rc::clone(&data)));
                }
                write::Action::Written {
                    version,
                    holders,
                    stable,
                } => {
                    let Some(pg) = self.pgs.get_mut(&key) else {
                        continue;
                    };
                    if !stable {
                        for &osd in &holders {
                            pg.dirty
                                .entry(osd)
                                .or_default()
                                .push(ObjVerId::new(oid, version));
                        }
                    }
                    if let Some(st) = pg.objects.objects.get_mut(&oid) {
                        st.version = version;
                        st.stale
                            .extend(st.holders.iter().filter(|h| !holders.contains(h)));
                        st.holders = holders;
                    }
                    pg.tombstones.remove(&oid);
                }
                write::Action::Partial {
                    version,
                    holders,
                    failed,
                    stable,
                } => {
                    self.partial_version(key, oid, version, &holders, &failed, stable);
                }
                write::Action::Repeer => self.peer_trouble(key),
                write::Action::Reply(Ok(version)) => {
                    self.write_done(client, oid.inode, data.len() as u64, version);
                }
                write::Action::Reply(Err(e)) => self.client_error(client, e),
                write::Action::Unlock => {
                    self.unlock(key, oid);
                    self.op_done(key);
                }
            }
        }
    }

    // ------------------------------------------------------------------ deletes

    /// What a delete that just got its lock needs to know of its PG and object.
    fn delete_facts(&self, key: PgId, oid: ObjectId) -> delete::Facts {
        let mut w = self.write_facts(key, oid);
        if let Some(pg) = self.pgs.get(&key).filter(|pg| pg.ec.is_some()) {
            // An EC/XOR PG keeps parts only on its set's positions.
            w.targets.retain(|&o| pg.part_of(o).is_some());
        }
        delete::Facts {
            active: w.active,
            degraded: w.degraded,
            recovery_waits: w.recovery_waits,
            targets: w.targets,
            local_version: self.bs.object_version(self.local_oid(key, oid)),
            known: self
                .pgs
                .get(&key)
                .is_some_and(|pg| pg.objects.objects.contains_key(&oid)),
            current: w.current,
            purged_up_to: w.purged_up_to,
        }
    }

    /// Feeds delete `idx` (taken out of its slot) one event and carries out what it
    /// decided; puts it back unless it is over.
    fn step_delete(&mut self, idx: usize, mut d: DeleteOp, event: delete::Event) {
        let actions = d.steps.advance(event);
        let (client, key, oid) = (d.client, d.pg, d.oid);
        let background = d.steps.is_background();
        if !d.steps.is_done() {
            self.ops[idx] = Some(POp::Delete(d));
        }
        for action in actions {
            match action {
                delete::Action::RecoverFirst => self.recover_first(key, oid, idx),
                delete::Action::Tombstone { tag, osd, version } => {
                    let oid = self.part_oid(key, oid, osd).unwrap_or(oid);
                    let gran = self.bs.layout().bitmap_granularity as usize;
                    let bmp_bytes = self.bs.layout().bitmap_bytes();
                    if osd == self.osd_num {
                        let op = BsOp::Write {
                            oid,
                            version,
                            offset: 0,
                            data: AlignedBuf::new(gran),
                            bitmap: Some(vec![0; bmp_bytes]),
                            stable: true,
                        };
                        self.sub_local(idx, tag, op);
                    } else {
                        let rw = SecRwOp {
                            oid,
                            version,
                            offset: 0,
                            len: gran as u32,
                            attr_len: bmp_bytes as u32,
                            flags: 0,
                        };
                        let req = Request {
                            id: 0,
                            op: RequestOp::SecWriteStable(rw),
                        };
                        let zero = Rc::new(AlignedBuf::new(gran));
                        self.sub_remote(idx, tag, osd, req, vec![0; bmp_bytes], Some(zero));
                    }
                }
                delete::Action::Tombstoned => {
                    if let Some(pg) = self.pgs.get_mut(&key) {
                        pg.objects.ec_parts.remove(&oid);
                        pg.objects.objects.remove(&oid);
                        pg.objects.misplaced.remove(&oid);
                    }
                }
                delete::Action::KeepTombstone { version } => {
                    if let Some(pg) = self.pgs.get_mut(&key) {
                        pg.tombstones.insert(oid, version);
                    }
                }
                delete::Action::Purging { version } => {
                    if let Some(pg) = self.pgs.get_mut(&key) {
                        pg.purged_up_to = pg.purged_up_to.max(version);
                    }
                }
                delete::Action::Purge { tag, osd, version } if osd == self.osd_num => {
                    let oid = self.local_oid(key, oid);
                    let op = BsOp::Delete {
                        oid,
                        version,
                        stable: true,
                    };
                    self.sub_local(idx, tag, op);
                }
                delete::Action::Purge { tag, osd, version } => {
                    let oid = self.part_oid(key, oid, osd).unwrap_or(oid);
                    let req = Request {
                        id: 0,
                        op: RequestOp::SecDelete(SecDeleteOp {
                            oid,
                            version,
                            flags: 0,
                        }),
                    };
                    self.sub_remote(idx, tag, osd, req, Vec::new(), None);
                }
                delete::Action::SyncPeer { tag, osd } => {
                    let req = Request {
                        id: 0,
                        op: RequestOp::SecSync(SecSyncOp { flags: 0 }),
                    };
                    self.sub_remote(idx, tag, osd, req, Vec::new(), None);
                }
                delete::Action::StabilizePeer { tag, osd, version } => {
                    let oid = self.part_oid(key, oid, osd).unwrap_or(oid);
                    let list = wire_list(&[ObjVerId::new(oid, version)]);
                    let req = Request {
                        id: 0,
                        op: RequestOp::SecStabilize(SecStabOp {
                            len: list.len() as u64,
                            flags: 0,
                        }),
                    };
                    self.sub_remote(idx, tag, osd, req, list, None);
                }
                delete::Action::Purged => {
                    if let Some(pg) = self.pgs.get_mut(&key) {
                        pg.tombstones.remove(&oid);
                    }
                }
                delete::Action::Partial {
                    version,
                    holders,
                    failed,
                } => {
                    self.partial_version(key, oid, version, &holders, &failed, true);
                }
                delete::Action::Repeer => self.peer_trouble(key),
                delete::Action::Reply(Ok(())) => {
                    self.stats.op("primary_delete", client.start, 0);
                    self.stats
                        .inode(oid.inode, InodeOp::Delete, client.start, 0);
                    let msg = ReplyMsg::new(
                        &Reply {
                            id: client.id,
                            retval: 0,
                            op: ReplyOp::Delete(DeleteReply::with_left_on_dead(&[])),
                        },
                        Vec::new(),
                    );
                    self.reply(client.conn, client.cost, msg);
                }
                delete::Action::Reply(Err(e)) => self.client_error(client, e),
                delete::Action::Unlock => {
                    if background {
                        self.recovering.remove(&(key, oid));
                    }
                    self.unlock(key, oid);
                    self.op_done(key);
                    if background {
                        self.recovery_kick = true;
                    }
                }
            }
        }
    }

    /// Whether every OSD that may hold data of the PG is live and a member.
    pub(crate) fn can_purge(&self, key: PgId) -> bool {
        self.pgs.get(&key).is_some_and(|pg| {
            let members = pg.members();
            members.len() == pg.pool_cfg.pg_size as usize
                && members
                    .iter()
                    .all(|m| pg.live.contains(m) && (*m == self.osd_num || self.peers.is_ready(*m)))
                && pg.peers.iter().all(|p| members.contains(p))
        })
    }

    /// Purges one tombstone of a clean PG in the background.
    pub(crate) fn start_purge(&mut self, key: PgId, oid: ObjectId) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        pg.inflight += 1;
        let nobody = ClientRef {
            conn: u64::MAX,
            id: 0,
            opcode: 0,
            cost: 0,
            start: std::time::Instant::now(),
        };
        let d = DeleteOp::new(nobody, key, oid, true);
        self.start_locked(key, oid, POp::Delete(d));
    }

    // ------------------------------------------------------------------ sync

    /// SYNCs run one at a time, in arrival order: a SYNC must not be acknowledged while an
    /// earlier one still stabilizes writes it took (they precede this SYNC too), and a SYNC
    /// that fails gives its writes back for the next one to take.
    fn start_sync(&mut self, client: ClientRef) {
        self.sync_queue.push_back(client);
        if !self.sync_running {
            self.next_sync();
        }
    }

    /// Starts queued SYNCs until one has work to wait for (those with none are answered).
    fn next_sync(&mut self) {
        while !self.sync_running {
            let Some(client) = self.sync_queue.pop_front() else {
                return;
            };
            self.run_sync(client);
        }
    }

    fn run_sync(&mut self, client: ClientRef) {
        let taken: Vec<(PgId, Dirty)> = self
            .pgs
            .iter_mut()
            .filter(|(_, pg)| !pg.dirty.is_empty())
            .map(|(key, pg)| (*key, std::mem::take(&mut pg.dirty)))
            .collect();
        let mut op = SyncOp::new(taken);
        let actions = op.advance(sync::Event::Start);
        if op.is_done() {
            return self.run_sync_actions(usize::MAX, client, actions);
        }
        self.sync_running = true;
        let idx = self.insert_op(POp::Sync { client, op });
        self.run_sync_actions(idx, client, actions);
    }

    /// Carries out what SYNC op `idx` decided (`usize::MAX`: it has no slot, so it sends
    /// nothing); frees the slot when the SYNC is answered.
    fn run_sync_actions(&mut self, idx: usize, client: ClientRef, actions: Vec<sync::Action>) {
        for action in actions {
            match action {
                sync::Action::Sync { tag, osd } if osd == self.osd_num => {
                    self.sub_local(idx, tag, BsOp::Sync);
                }
                sync::Action::Sync { tag, osd } => {
                    let req = Request {
                        id: 0,
                        op: RequestOp::SecSync(SecSyncOp { flags: 0 }),
                    };
                    self.sub_remote(idx, tag, osd, req, Vec::new(), None);
                }
                sync::Action::Stabilize { tag, osd, versions } if osd == self.osd_num => {
                    self.sub_local(idx, tag, BsOp::Stabilize(versions));
                }
                sync::Action::Stabilize { tag, osd, versions } => {
                    let bytes = wire_list(&versions);
                    let req = Request {
                        id: 0,
                        op: RequestOp::SecStabilize(SecStabOp {
                            len: bytes.len() as u64,
                            flags: 0,
                        }),
                    };
                    self.sub_remote(idx, tag, osd, req, bytes, None);
                }
                sync::Action::GiveBack { pg, dirty, repeer } => {
                    let key: PgId = pg;
                    if let Some(pg) = self.pgs.get_mut(&key) {
                        for (osd, list) in dirty {
                            pg.dirty.entry(osd).or_default().extend(list);
                        }
                    }
                    if repeer {
                        self.request_repeer(key);
                    }
                }
                sync::Action::Reply(result) => {
                    if idx != usize::MAX {
                        self.ops[idx] = None;
                        self.release_if_done(idx);
                    }
                    self.finish_sync(client, result);
                }
            }
        }
    }

    fn finish_sync(&mut self, client: ClientRef, result: Result<(), Errno>) {
        match result {
            Ok(()) => {
                self.stats.op("primary_sync", client.start, 0);
                let msg = ReplyMsg::new(
                    &Reply {
                        id: client.id,
                        retval: 0,
                        op: ReplyOp::Sync,
                    },
                    Vec::new(),
                );
                self.reply(client.conn, client.cost, msg);
            }
            Err(e) => self.client_error(client, e),
        }
        self.sync_running = false;
        self.next_sync();
    }

    // ------------------------------------------------------------------ PG listings

    /// Starts a listing of a whole PG for a client (SEC_LIST with `OSD_LIST_PRIMARY`): every
    /// live member's store, and what peering found elsewhere. Returns false when this OSD
    /// does not lead that PG, active, in the pool the client means; the request is then
    /// served as a plain listing of this OSD's store, whose reply says so.
    pub(crate) fn start_pg_list(&mut self, client: ClientRef, req: &SecListOp) -> bool {
        let key = PgId::new(vitastor_layout::pool_of(req.min_inode) as u32, req.list_pg);
        let me = self.osd_num;
        let Some(pg) = self.pgs.get_mut(&key) else {
            return false;
        };
        if pg.phase != crate::pg::Phase::Active || pg.pool_cfg.pg_count != req.pg_count {
            return false;
        }
        pg.inflight += 1;
        let filter = crate::secondary::list_filter(req);
        let mut members = vec![me];
        members.extend(pg.live_members().into_iter().filter(|&o| o != me));
        let known = pg
            .objects
            .objects
            .iter()
            .filter(|(oid, _)| filter.matches(oid))
            .map(|(&oid, st)| ObjVerId::new(oid, st.version));
        let steps = list::ListOp::new(members.len(), known, req.stable_limit);
        let idx = self.insert_op(POp::List(PgListOp {
            client,
            pg: key,
            steps,
        }));
        for (tag, osd) in (0u32..).zip(members) {
            if osd == me {
                self.sub_local(idx, tag, BsOp::List(filter));
                continue;
            }
            let op = RequestOp::SecList(SecListOp {
                stable_limit: 0,
                flags: 0,
                ..*req
            });
            self.sub_remote(idx, tag, osd, Request { id: 0, op }, Vec::new(), None);
        }
        true
    }

    fn finish_pg_list(&mut self, l: PgListOp, answer: Result<Vec<ObjVerId>, Errno>) {
        match answer {
            // The client's decoder refuses longer lists (and would drop the connection).
            Ok(all) if all.len() as u64 <= vitastor_protocol::MAX_SEC_LIST_ENTRIES => {
                self.stats.op("list", l.client.start, 0);
                let msg = ReplyMsg::new(
                    &Reply {
                        id: l.client.id,
                        retval: all.len() as i64,
                        op: ReplyOp::SecList(SecListReply {
                            stable_count: all.len() as u64,
                            flags: vitastor_protocol::OSD_LIST_PRIMARY,
                        }),
                    },
                    wire_list(&all),
                );
                self.reply(l.client.conn, l.client.cost, msg);
            }
            Ok(_) => self.client_error(l.client, Errno::EINVAL),
            Err(e) => self.client_error(l.client, e),
        }
        self.op_done(l.pg);
    }

    // ------------------------------------------------------------------ recovery

    /// What a recovery that just got its lock needs to know of its PG and object.
    fn recover_facts(&self, key: PgId, oid: ObjectId) -> recover::LockFacts {
        let pg = self.pgs.get(&key);
        recover::LockFacts {
            state: pg.and_then(|pg| pg.objects.objects.get(&oid).cloned()),
            live: pg.map_or_else(Vec::new, |pg| pg.live_members()),
            me: self.osd_num,
            ready: self.ready_peers(key),
        }
    }

    /// What a recovery's cleanup needs to know of its PG once the live members hold the
    /// object.
    fn cleanup_facts(&self, key: PgId) -> recover::CleanupFacts {
        let pg = self.pgs.get(&key);
        let members = pg.map_or_else(Vec::new, |pg| pg.members());
        recover::CleanupFacts {
            complete: pg.is_some_and(|pg| {
                pg.objects.degraded.is_empty() && members.len() == pg.pool_cfg.pg_size as usize
            }),
            members,
            no_rebalance: self.cluster.global_flag("no_rebalance"),
            ready: self.ready_peers(key),
        }
    }

    /// The PG's peers whose connection is up.
    fn ready_peers(&self, key: PgId) -> Vec<OsdNum> {
        self.pgs.get(&key).map_or_else(Vec::new, |pg| {
            pg.peers
                .iter()
                .copied()
                .filter(|&o| self.peers.is_ready(o))
                .collect()
        })
    }

    /// Feeds recovery `idx` (taken out of its slot) one event and carries out what it
    /// decided; puts it back unless it is over.
    fn step_recover(&mut self, idx: usize, mut r: RecoverOp, event: recover::Event) {
        let (key, oid) = (r.pg, r.oid);
        let flags = vitastor_protocol::OSD_OP_RECOVERY_RELATED;
        let mut next = Some(event);
        while let Some(event) = next.take() {
            for action in r.steps.advance(event) {
                match action {
                    recover::Action::Read {
                        tag,
                        source: Source::Local,
                        version,
                    } => {
                        let len = self.geo_block_size();
                        self.sub_local(
                            idx,
                            tag,
                            BsOp::Read {
                                oid,
                                version,
                                offset: 0,
                                len,
                            },
                        );
                    }
                    recover::Action::Read {
                        tag,
                        source: Source::Osd(osd),
                        version,
                    } => {
                        let req = Request {
                            id: 0,
                            op: RequestOp::SecRead(SecRwOp {
                                oid,
                                version,
                                offset: 0,
                                len: self.geo_block_size(),
                                attr_len: self.bs.layout().bitmap_bytes() as u32,
                                flags,
                            }),
                        };
                        self.sub_remote(idx, tag, osd, req, Vec::new(), None);
                    }
                    recover::Action::Tombstone { version } => {
                        if let Some(pg) = self.pgs.get_mut(&key) {
                            pg.tombstones.insert(oid, version);
                        }
                    }
                    recover::Action::Write { tag, osd, version } => {
                        let data = r.data.clone().expect("kept by a successful read");
                        if osd == self.osd_num {
                            let op = BsOp::Write {
                                oid,
                                version,
                                offset: 0,
                                data: AlignedBuf::shared(&data),
                                bitmap: Some(r.bitmap.clone()),
                                stable: true,
                            };
                            self.sub_local(idx, tag, op);
                        } else {
                            let rw = SecRwOp {
                                oid,
                                version,
                                offset: 0,
                                len: data.len() as u32,
                                attr_len: r.bitmap.len() as u32,
                                flags,
                            };
                            let req = Request {
                                id: 0,
                                op: RequestOp::SecWriteStable(rw),
                            };
                            self.sub_remote(idx, tag, osd, req, r.bitmap.clone(), Some(data));
                        }
                    }
                    recover::Action::NotDegraded => {
                        if let Some(pg) = self.pgs.get_mut(&key) {
                            pg.objects.degraded.remove(&oid);
                        }
                    }
                    recover::Action::Copied { state, targets } => {
                        for &osd in &targets {
                            self.backoff.osd_took(osd);
                        }
                        if let Some(pg) = self.pgs.get_mut(&key) {
                            if let Some(cur) = pg.objects.objects.get_mut(&oid) {
                                *cur = state;
                            }
                            pg.objects.degraded.remove(&oid);
                            let bytes = r.data.as_ref().map_or(0, |d| d.len() as u64);
                            self.stats.recovered(false, r.start, bytes);
                        }
                    }
                    recover::Action::GatherCleanup => {
                        next = Some(recover::Event::Cleanup(self.cleanup_facts(key)));
                    }
                    recover::Action::Clean => {
                        if let Some(pg) = self.pgs.get_mut(&key) {
                            pg.objects.objects.remove(&oid);
                            pg.objects.degraded.remove(&oid);
                            pg.objects.misplaced.remove(&oid);
                        }
                    }
                    recover::Action::Keep { misplaced } => {
                        if let (Some(pg), true) = (self.pgs.get_mut(&key), misplaced) {
                            pg.objects.degraded.remove(&oid);
                            pg.objects.misplaced.insert(oid);
                        }
                    }
                    recover::Action::MovingOut => {
                        if let Some(pg) = self.pgs.get_mut(&key) {
                            pg.objects.degraded.remove(&oid);
                            pg.objects.misplaced.insert(oid);
                        }
                    }
                    recover::Action::Delete { tag, osd, version } => {
                        let req = Request {
                            id: 0,
                            op: RequestOp::SecDelete(SecDeleteOp {
                                oid,
                                version,
                                flags,
                            }),
                        };
                        self.sub_remote(idx, tag, osd, req, Vec::new(), None);
                    }
                    recover::Action::SyncPeer { tag, osd } => {
                        let op = RequestOp::SecSync(SecSyncOp { flags });
                        self.sub_remote(idx, tag, osd, Request { id: 0, op }, Vec::new(), None);
                    }
                    recover::Action::Stabilize { tag, osd, version } => {
                        // A peer's unstable delete can only be stabilized once it is synced.
                        let list = wire_list(&[ObjVerId::new(oid, version)]);
                        let op = RequestOp::SecStabilize(SecStabOp {
                            len: list.len() as u64,
                            flags,
                        });
                        self.sub_remote(idx, tag, osd, Request { id: 0, op }, list, None);
                    }
                    recover::Action::MovedOut => {
                        if let Some(pg) = self.pgs.get_mut(&key) {
                            pg.objects.objects.remove(&oid);
                            pg.objects.misplaced.remove(&oid);
                            self.stats.recovered(true, r.start, 0);
                        }
                    }
                    recover::Action::Failed {
                        errno,
                        full,
                        copied,
                        repeer,
                    } => self.recovery_failed(&r, errno, &full, copied, repeer),
                    recover::Action::Finish { succeeded } => {
                        self.recovery_done(key, oid, succeeded);
                    }
                }
            }
        }
        if !r.steps.is_done() {
            self.ops[idx] = Some(POp::Recover(r));
        }
    }

    /// A recovery failed: the object waits (longer after each failure) before the next
    /// attempt, which the event loop makes, and so do the `full` OSDs for copies. Copies
    /// that were made count. Only an error that says the PG's object map is wrong
    /// re-peers (see [`recovery::failure_needs_repeer`]).
    fn recovery_failed(
        &mut self,
        r: &RecoverOp,
        e: Errno,
        full: &[OsdNum],
        copied: Option<(u64, Vec<OsdNum>)>,
        repeer: bool,
    ) {
        let now = std::time::Instant::now();
        let delay = self.backoff.failed((r.pg, r.oid), e, now);
        for &osd in full {
            self.backoff.osd_full(osd, now);
        }
        tracing::info!(
            "pg {}/{}: recovery of {:?} ({:?}) failed ({e}), next attempt in {delay:?}",
            r.pg.pool,
            r.pg.pg,
            r.oid,
            r.steps.state()
        );
        if let (Some((version, took)), Some(pg)) = (copied, self.pgs.get_mut(&r.pg)) {
            if let Some(cur) = pg.objects.objects.get_mut(&r.oid) {
                if cur.version == version {
                    cur.stale.retain(|o| !took.contains(o));
                    cur.holders.extend(took);
                }
            }
        }
        if repeer {
            self.peer_trouble(r.pg);
        }
    }

    /// Why ops on `oid` fail now instead of recovering it first: its last recovery failed
    /// and its next attempt is not due. Out of space stays ENOSPC; anything else is EPIPE,
    /// which clients retry.
    pub(crate) fn recovery_waits(&self, key: PgId, oid: ObjectId) -> Option<Errno> {
        let e = self
            .backoff
            .waiting(&(key, oid), std::time::Instant::now())?;
        Some(if e == Errno::ENOSPC { e } else { Errno::EPIPE })
    }

    /// A version reached only `holders`: records it in the PG's object map (the object is
    /// degraded and recovered later) and, when unstable, in the unsynced writes.
    fn partial_version(
        &mut self,
        key: PgId,
        oid: ObjectId,
        version: u64,
        holders: &[OsdNum],
        failed: &[(OsdNum, Errno)],
        stable: bool,
    ) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let Some(st) =
            fanout::partial_state(pg.objects.objects.get(&oid), version, holders, failed)
        else {
            return;
        };
        let parts: Vec<(u32, OsdNum)> = holders
            .iter()
            .filter_map(|&o| Some((pg.part_of(o)?, o)))
            .collect();
        if !stable {
            for &osd in holders {
                let part = match &pg.ec {
                    None => Some(oid),
                    Some(ec) => pg
                        .part_of(osd)
                        .map(|p| ObjectId::new(oid.inode, ec.geo.part_stripe(oid.stripe, p))),
                };
                if let Some(part) = part {
                    pg.dirty
                        .entry(osd)
                        .or_default()
                        .push(ObjVerId::new(part, version));
                }
            }
        }
        if pg.ec.is_some() {
            pg.objects.ec_parts.insert(oid, parts);
        }
        pg.objects.objects.insert(oid, st);
        pg.objects.misplaced.remove(&oid);
        pg.objects.degraded.insert(oid);
    }

    /// Starts background recovery of one object of PG `key` (it takes the object lock).
    pub(crate) fn start_recover(&mut self, key: PgId, oid: ObjectId) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        pg.inflight += 1;
        self.recovering.insert((key, oid));
        self.start_locked(key, oid, self.new_recover_op(key, oid));
    }

    pub(crate) fn pool_commit(&self, pool: u32) -> ImmediateCommit {
        self.cluster
            .pools
            .get(&pool)
            .map_or(ImmediateCommit::All, |p| {
                p.commit_mode(self.cluster.default_commit())
            })
    }
}

impl DeleteOp {
    pub(crate) fn new(client: ClientRef, pg: PgId, oid: ObjectId, background: bool) -> DeleteOp {
        DeleteOp {
            client,
            pg,
            oid,
            steps: delete::DeleteOp::new(background),
        }
    }
}

impl RecoverOp {
    pub(crate) fn new(pg: PgId, oid: ObjectId) -> RecoverOp {
        RecoverOp {
            start: std::time::Instant::now(),
            pg,
            oid,
            bitmap: Vec::new(),
            data: None,
            steps: recover::RecoverOp::new(),
        }
    }

    /// Keeps the data and bitmap of the read the op waits for; `Ok(true)` for a tombstone.
    fn take_read(&mut self, res: SubRes) -> Result<bool, Errno> {
        match res {
            SubRes::Bs(Ok(BsReply::Read { bitmap, data, .. })) => {
                self.bitmap = bitmap;
                self.data = Some(Rc::new(data));
            }
            SubRes::Net(Ok((reply, mut payload))) => match reply.op {
                ReplyOp::SecRead(h) if payload.len() >= h.attr_len as usize => {
                    let data = payload.split_off(h.attr_len as usize);
                    self.bitmap = payload;
                    self.data = Some(Rc::new(AlignedBuf::from_slice(&data)));
                }
                _ => return Err(Errno::EIO),
            },
            other => return Err(other.errno().unwrap_or(Errno::EIO)),
        }
        Ok(self.bitmap.iter().all(|&b| b == 0))
    }
}

/// Parses a SEC_LIST reply payload into versions.
pub(crate) fn parse_listing(payload: &[u8]) -> Option<Vec<ObjVerId>> {
    Some(obj_ver_ids(payload).ok()?.collect())
}

#[cfg(test)]
mod tests {
    use crate::testing::{Bench, Setup, BLOCK};

    #[test]
    fn a_failed_local_write_reaches_the_client_as_a_negative_retval() {
        let mut b = Bench::new(Setup {
            data_mib: 4,
            ..Setup::default()
        });
        let data = vec![0x5a; BLOCK as usize];
        for k in 0..1000 {
            let id = b.write(k * BLOCK, &data);
            let (reply, _) = b.reply(id, |_| 0);
            if reply.retval == BLOCK as i64 {
                continue;
            }
            assert_eq!(
                reply.retval, -28,
                "write {k}: a write the store refused must fail with -ENOSPC"
            );
            return;
        }
        panic!("a 4 MiB store took 1000 objects");
    }
}

#[cfg(test)]
mod error_path_tests {
    use vitastor_blockstore::{ImmediateCommit, ObjVerId, ObjectId};

    use vitastor_layout::{OsdNum, PgId};

    use crate::etcd::EtcdEvent;
    use crate::pg::{ObjState, Phase};
    use crate::testing::{Bench, Setup, INODE};

    /// Peering saw the object's only current copy on osd.2, which is gone now.
    fn lost_holder(b: &mut Bench) -> ObjectId {
        let oid = ObjectId::new(INODE, 0);
        let pg = b.server.pgs.get_mut(&PgId::new(1, 1)).unwrap();
        let st = ObjState {
            version: 3,
            holders: vec![vitastor_layout::OsdNum(2)],
            stale: vec![],
        };
        pg.objects.objects.insert(oid, st);
        pg.objects.degraded.insert(oid);
        oid
    }

    #[test]
    fn a_write_to_an_object_without_a_reachable_holder_fails_retryably() {
        let mut b = Bench::new(Setup::default());
        let oid = lost_holder(&mut b);
        let id = b.write(0, &[7; 4096]);
        let (reply, _) = b.reply(id, |_| 0);
        assert_eq!(reply.retval, -32, "EPIPE: the client retries later");
        let key = (PgId::new(1, 1), oid);
        assert!(b.server.recovering.is_empty());
        assert_eq!(b.server.backoff.attempts(&key), 1);
        // Neither a kick nor the loop retries before the object's deadline.
        b.server.kick_recovery();
        for _ in 0..10 {
            b.pump();
        }
        assert_eq!(b.server.backoff.attempts(&key), 1);
        assert_eq!(b.pg_states(), ["Active", "Degraded", "HasDegraded"]);
    }

    #[test]
    fn aborted_background_work_gives_its_recovery_slot_back() {
        let mut b = Bench::new(Setup::default());
        let oid = ObjectId::new(INODE, 0);
        let nobody = super::ClientRef {
            conn: u64::MAX,
            id: 0,
            opcode: 0,
            cost: 0,
            start: std::time::Instant::now(),
        };
        for op in [
            super::POp::Recover(super::RecoverOp::new(PgId::new(1, 1), oid)),
            super::POp::Delete(super::DeleteOp::new(nobody, PgId::new(1, 1), oid, true)),
        ] {
            b.server.recovering.insert((PgId::new(1, 1), oid));
            let idx = b.server.insert_op(op);
            b.server
                .abort_op(idx, vitastor_protocol::errno::Errno::EPIPE);
            assert!(b.server.recovering.is_empty());
        }
    }

    #[test]
    fn background_recovery_of_an_object_without_a_holder_backs_off() {
        let mut b = Bench::new(Setup::default());
        let oid = lost_holder(&mut b);
        let key = (PgId::new(1, 1), oid);
        b.server.kick_recovery();
        b.pump();
        assert_eq!(b.server.backoff.attempts(&key), 1);
        assert!(b.server.recovering.is_empty());
        b.server.kick_recovery();
        b.pump();
        assert_eq!(
            b.server.backoff.attempts(&key),
            1,
            "no retry before the deadline"
        );
        b.server.backoff.expire_all();
        b.server.kick_recovery();
        b.pump();
        assert_eq!(b.server.backoff.attempts(&key), 2, "retried once due");
    }

    #[test]
    fn a_backed_off_object_is_parked_instead_of_rescanned() {
        let mut b = Bench::new(Setup::default());
        let oid = lost_holder(&mut b);
        b.server.kick_recovery();
        b.pump();
        // The first pass after the failure parks it: still degraded, out of the scan.
        b.server.kick_recovery();
        let degraded = &b.server.pgs[&PgId::new(1, 1)].objects.degraded;
        assert!(degraded.contains(&oid));
        assert_eq!(degraded.ready().count(), 0, "parked until its deadline");
        b.server.backoff.expire_all();
        b.server.kick_recovery();
        b.pump();
        let key = (PgId::new(1, 1), oid);
        assert_eq!(
            b.server.backoff.attempts(&key),
            2,
            "unparked and retried once due"
        );
    }

    #[test]
    fn an_object_whose_copy_would_go_to_a_full_osd_is_parked() {
        let mut b = Bench::new(Setup::default());
        let oid = lost_holder(&mut b);
        b.server
            .backoff
            .osd_full(OsdNum(1), std::time::Instant::now());
        b.server.kick_recovery();
        b.pump();
        let key = (PgId::new(1, 1), oid);
        assert_eq!(b.server.backoff.attempts(&key), 0, "no copy to a full OSD");
        assert_eq!(
            b.server.pgs[&PgId::new(1, 1)]
                .objects
                .degraded
                .ready()
                .count(),
            0
        );
        b.server.backoff.expire_all();
        b.server.kick_recovery();
        b.pump();
        assert_eq!(
            b.server.backoff.attempts(&key),
            1,
            "tried once the OSD may take copies"
        );
    }

    #[test]
    fn a_sync_is_not_acknowledged_before_an_earlier_one_finishes() {
        let mut b = Bench::new(Setup {
            immediate_commit: ImmediateCommit::None,
            ..Setup::default()
        });
        for k in 0..3 {
            let id = b.write(k * crate::testing::BLOCK, &[k as u8 + 1; 4096]);
            assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        }
        // The first SYNC takes every unsynced write; the second finds none of its own but
        // must still wait for them to be stable.
        let first = b.sync();
        let second = b.sync();
        let (reply, _) = b.reply(first, |_| 0);
        assert_eq!(reply.retval, 0);
        assert_eq!(b.local_unstable(), vec![]);
        assert_eq!(b.reply(second, |_| 0).0.retval, 0);
    }

    #[test]
    fn a_failed_sync_repeers_and_loses_no_unstable_write() {
        let mut b = Bench::new(Setup {
            immediate_commit: ImmediateCommit::None,
            ..Setup::default()
        });
        for k in 0..3 {
            let id = b.write(k * crate::testing::BLOCK, &[k as u8 + 1; 4096]);
            assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        }
        assert_eq!(b.local_unstable().len(), 3);
        // The writes also reached osd.2, which has died since (its SYNC fails).
        let oid = ObjectId::new(INODE, 0);
        let pg = b.server.pgs.get_mut(&PgId::new(1, 1)).unwrap();
        pg.dirty
            .entry(OsdNum(2))
            .or_default()
            .push(ObjVerId::new(oid, 1));
        let id = b.sync();
        assert_eq!(b.reply(id, |_| 0).0.retval, -32);
        // The PG peers again (it claims first), which stabilizes what reached the live members.
        assert_eq!(b.server.pgs[&PgId::new(1, 1)].phase, Phase::Claiming);
        b.etcd(vec![EtcdEvent::PgClaimed {
            pool: 1,
            pg: 1,
            granted: true,
        }]);
        b.pump_until(|s| s.pgs[&PgId::new(1, 1)].phase == Phase::Active);
        assert_eq!(b.local_unstable(), vec![]);
        let id = b.sync();
        assert_eq!(b.reply(id, |_| 0).0.retval, 0);
    }
}

#[cfg(test)]
mod rewrite_tests {
    use vitastor_protocol::{RequestOp, RwOp};

    use crate::testing::{Bench, Setup, BLOCK, INODE};

    #[test]
    fn an_object_written_again_after_a_delete() {
        let mut b = Bench::new(Setup {
            osd_set: vec![1],
            ..Setup::default()
        });
        let data = vec![3u8; BLOCK as usize];
        for round in 0..3 {
            for o in 0..40 {
                let id = b.write(o * BLOCK, &data);
                assert_eq!(
                    b.reply(id, |_| 0).0.retval,
                    BLOCK as i64,
                    "round {round} write {o}"
                );
            }
            for o in 0..40 {
                let op = RequestOp::Delete(RwOp {
                    inode: INODE,
                    offset: o * BLOCK,
                    len: 0,
                    flags: 0,
                    meta_revision: 0,
                    version: 0,
                });
                let id = b.send(op, &[]);
                assert_eq!(b.reply(id, |_| 0).0.retval, 0, "round {round} delete {o}");
            }
            for _ in 0..200 {
                b.pump();
            }
        }
    }
}

#[cfg(test)]
mod full_store_tests {
    use vitastor_protocol::{RequestOp, RwOp};

    use crate::testing::{Bench, Setup, BLOCK, INODE};

    #[test]
    fn deletes_on_a_full_store_free_room() {
        let mut b = Bench::new(Setup {
            data_mib: 4,
            osd_set: vec![1],
            ..Setup::default()
        });
        let data = vec![3u8; BLOCK as usize];
        let mut acked = 0;
        loop {
            let id = b.write(acked * BLOCK, &data);
            if b.reply(id, |_| 0).0.retval != BLOCK as i64 {
                break;
            }
            acked += 1;
        }
        let start = std::time::Instant::now();
        for o in 0..acked {
            let op = RequestOp::Delete(RwOp {
                inode: INODE,
                offset: o * BLOCK,
                len: 0,
                flags: 0,
                meta_revision: 0,
                version: 0,
            });
            let id = b.send(op, &[]);
            assert_eq!(b.reply(id, |_| 0).0.retval, 0, "delete {o}");
        }
        eprintln!("{acked} deletes in {:?}", start.elapsed());
        let id = b.write(0, &data);
        assert_eq!(b.reply(id, |_| 0).0.retval, BLOCK as i64);
    }
}

#[cfg(test)]
mod list_tests {
    use vitastor_blockstore::{ObjVerId, ObjectId};
    use vitastor_layout::PgId;
    use vitastor_protocol::{ReplyOp, RequestOp, SecListOp, OSD_LIST_PRIMARY};

    use crate::pg::ObjState;
    use crate::testing::{Bench, Setup, BLOCK, INODE};

    #[test]
    fn a_primary_answers_a_pg_listing_for_the_whole_pg() {
        let mut b = Bench::new(Setup::default());
        let id = b.write(BLOCK, &[7u8; 4096]);
        assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        // Peering saw this object only on osd.2, which is down now.
        let far = ObjectId::new(INODE, 3 * BLOCK);
        let pg = b.server.pgs.get_mut(&PgId::new(1, 1)).unwrap();
        let st = ObjState {
            version: 5,
            holders: vec![vitastor_layout::OsdNum(2)],
            stale: vec![],
        };
        pg.objects.objects.insert(far, st);
        pg.objects.degraded.insert(far);
        let list = SecListOp {
            list_pg: 1,
            pg_count: 1,
            pg_stripe_size: BLOCK,
            min_inode: INODE,
            max_inode: INODE,
            flags: OSD_LIST_PRIMARY,
            ..SecListOp::default()
        };
        let id = b.send(RequestOp::SecList(list), &[]);
        let (reply, payload) = b.reply(id, |r| r.retval.max(0) as usize * 24);
        let ReplyOp::SecList(h) = reply.op else {
            panic!("not a listing: {reply:?}");
        };
        assert_eq!(
            h.flags & OSD_LIST_PRIMARY,
            OSD_LIST_PRIMARY,
            "answered for the PG"
        );
        let listed = crate::primary::parse_listing(&payload).unwrap();
        assert_eq!(
            listed,
            [
                ObjVerId::new(ObjectId::new(INODE, BLOCK), 1),
                ObjVerId::new(far, 5)
            ]
        );
        assert_eq!(h.stable_count, 2);
        assert_eq!(b.server.pgs[&PgId::new(1, 1)].inflight, 0);
    }

    #[test]
    fn a_listing_of_a_pg_this_osd_does_not_lead_lists_its_store_only() {
        let mut b = Bench::new(Setup::default());
        let list = SecListOp {
            list_pg: 2,
            pg_count: 2,
            min_inode: INODE,
            max_inode: INODE,
            flags: OSD_LIST_PRIMARY,
            ..SecListOp::default()
        };
        let id = b.send(RequestOp::SecList(list), &[]);
        let (reply, _) = b.reply(id, |r| r.retval.max(0) as usize * 24);
        let ReplyOp::SecList(h) = reply.op else {
            panic!("not a listing: {reply:?}");
        };
        assert_eq!(h.flags, 0, "says it listed its own store only");
    }
}
