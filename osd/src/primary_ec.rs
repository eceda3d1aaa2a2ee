//! Client READ and WRITE on the EC/XOR PGs this OSD leads: the same lock cycle, sub-op
//! plumbing and replies as [`crate::primary`], with the plans of [`crate::ec`] — a read
//! is a set of part reads put together (or rebuilt) by [`ec::read::ReadPlan`], a write is
//! [`ec::write::EcWriteOp`]'s read-modify-write, unstable part writes, then its stabilize
//! (after the reply when every position took the write).
//! DELETE and SYNC are the replicated machines' ([`crate::op_delete`], [`crate::op_sync`]):
//! only the object each OSD is sent changes (its part, see [`Server::part_oid`]).
//!
//! Sub-op tags of a write: the part number for writes and rollbacks, [`READ_TAG`] + the
//! sub-read's number for its reads, [`BATCH_TAG`] + the batch's number for the stabilize
//! lists it leads. A write's stabilizes wait in the op until the end of the loop turn, when
//! [`Server::flush_ec_stabilizes`] sends those of every write as one list per OSD
//! ([`ec_stabilize`]); the answer goes to every write in the list.
//!
//! What it must never do: answer a read with bytes it neither read nor rebuilt, or let a
//! write's versions reach the unsynced list of a PG other than its own.

use std::rc::Rc;

use vitastor_blockstore::{AlignedBuf, BsOp, BsReply, ObjVerId, ObjectId, NEWEST};
use vitastor_layout::{ImmediateCommit, OsdNum, PgId, PoolConfig};
use vitastor_protocol::errno::Errno;
use vitastor_protocol::{ReplyOp, Request, RequestOp, RwOp, SecRwOp, SecStabOp};

use crate::debug_crash::{self, CrashPoint};
use crate::ec::read::{self as ec_read, PartData, ReadPlan};
use crate::ec::recover::{self as ec_recover, EcRecoverOp};
use crate::ec::stabilize::{self as ec_stabilize, Member, Wanted};
use crate::ec::write::{self as ec_write, EcWriteOp};
use crate::ec::EcPool;
use crate::primary::{wire_list, ClientRef, DeleteOp, POp};
use crate::server::{Server, SubRes};

/// Tags of a write's sub-reads start here (below are part numbers).
pub const READ_TAG: u32 = 1 << 16;

/// Tags of the stabilize lists a write leads start here (see [`ec_stabilize`]).
pub const BATCH_TAG: u32 = 1 << 24;

/// One part write of an EC write or recovery: `data` at `offset` of the part object `oid`
/// as `version`.
struct PartWrite {
    oid: ObjectId,
    version: u64,
    offset: u32,
    /// Aligned already: written to the local store or sent to a peer without a copy.
    data: AlignedBuf,
    /// Kept beside the part's allocation bitmap and returned by its reads: a parity part's
    /// attribute, or the bitmap of a rebuilt part.
    attr: Option<Vec<u8>>,
    /// Written stable (recovery) or as an unstable version (a client write).
    stable: bool,
    /// The peer request's flags.
    flags: u32,
}

/// A client READ of an EC/XOR object.
#[derive(Debug)]
pub struct EcReadOp {
    client: ClientRef,
    pg: PgId,
    oid: ObjectId,
    offset: u64,
    len: u64,
    ec: Rc<EcPool>,
    /// Holds the object's lock (a read that rebuilds a part takes it).
    locked: bool,
    plan: Option<ReadPlan>,
    replies: Vec<Option<PartData>>,
    pending: usize,
    version: u64,
    failed: Option<Errno>,
}

/// A client WRITE of an EC/XOR object, beside its decisions ([`EcWriteOp`]).
#[derive(Debug)]
pub struct EcWrite {
    client: ClientRef,
    pg: PgId,
    oid: ObjectId,
    len: usize,
    /// Its number among this primary's EC writes (for `--debug_ec_crash`).
    seq: u64,
    first_written: bool,
    ec: Rc<EcPool>,
    steps: EcWriteOp,
    /// Stabilizes decided in this loop turn, sent at its end.
    queued: Vec<Wanted>,
    /// The members of each stabilize list this write leads, by tag − [`BATCH_TAG`] (taken
    /// when the list is answered).
    led: Vec<Vec<Member>>,
}

/// Recovery of one EC/XOR object, beside its decisions ([`EcRecoverOp`]).
#[derive(Debug)]
pub struct EcRecover {
    start: std::time::Instant,
    pg: PgId,
    oid: ObjectId,
    ec: Rc<EcPool>,
    steps: EcRecoverOp,
}

/// The bytes and bitmap of a part read, from the store or a peer.
fn part_data(res: SubRes) -> Result<(u64, PartData), Errno> {
    match res {
        SubRes::Bs(Ok(BsReply::Read {
            version,
            bitmap,
            data,
        })) => Ok((
            version,
            PartData {
                bitmap,
                data: data.to_vec(),
            },
        )),
        SubRes::Net(Ok((reply, mut payload))) => match reply.op {
            ReplyOp::SecRead(r) if payload.len() >= r.attr_len as usize => {
                let data = payload.split_off(r.attr_len as usize);
                Ok((
                    r.version,
                    PartData {
                        bitmap: payload,
                        data,
                    },
                ))
            }
            _ => Err(Errno::EIO),
        },
        other => Err(other.errno().unwrap_or(Errno::EIO)),
    }
}

impl Server {
    /// The object OSD `osd` stores for `oid` in PG `key`: `oid` itself in a replicated PG,
    /// the part of `osd`'s position in an EC/XOR one (`None`: `osd` holds no part).
    pub(crate) fn part_oid(&self, key: PgId, oid: ObjectId, osd: OsdNum) -> Option<ObjectId> {
        let pg = self.pgs.get(&key)?;
        match &pg.ec {
            None => Some(oid),
            Some(ec) => {
                let part = pg.part_of(osd)?;
                Some(ObjectId::new(
                    oid.inode,
                    ec.geo.part_stripe(oid.stripe, part),
                ))
            }
        }
    }

    /// The object this OSD's store keeps for `oid` (its part in an EC/XOR PG).
    pub(crate) fn local_oid(&self, key: PgId, oid: ObjectId) -> ObjectId {
        self.part_oid(key, oid, self.osd_num).unwrap_or(oid)
    }

    /// Per part of `oid`: the live OSD at its position (`None`: down or empty), and with
    /// `current`, only if it holds the object's current version.
    fn ec_members(&self, key: PgId, oid: ObjectId, current: bool) -> Vec<Option<OsdNum>> {
        let Some(pg) = self.pgs.get(&key) else {
            return Vec::new();
        };
        let parts = pg.objects.ec_parts.get(&oid);
        let me = self.osd_num;
        pg.set()
            .into_iter()
            .enumerate()
            .map(|(i, osd)| {
                let up =
                    osd.0 != 0 && pg.live.contains(&osd) && (osd == me || self.peers.is_ready(osd));
                let holds = !current || parts.is_none_or(|p| p.contains(&(i as u32, osd)));
                (up && holds).then_some(osd)
            })
            .collect()
    }

    /// Starts a client READ, WRITE or DELETE on an EC/XOR pool.
    pub(crate) fn start_ec_rw(
        &mut self,
        client: ClientRef,
        op: &RequestOp,
        rw: RwOp,
        payload: AlignedBuf,
        pool: &PoolConfig,
    ) -> Result<(), Errno> {
        let stripe = pool.object_start(rw.offset);
        let key = PgId::new(pool.id, pool.pg_of(stripe));
        let in_obj = rw.offset - stripe;
        let Some(pg) = self.pgs.get_mut(&key) else {
            return Err(Errno::EPIPE);
        };
        if pg.phase != crate::pg::Phase::Active {
            return Err(Errno::EPIPE);
        }
        let Some(ec) = pg.ec.clone() else {
            return Err(Errno::EPIPE);
        };
        if in_obj + u64::from(rw.len) > ec.geo.object_size() {
            return Err(Errno::EINVAL);
        }
        let oid = ObjectId::new(rw.inode, stripe);
        match op {
            RequestOp::Read(_) => {
                let align = u64::from(self.bs.layout().disk_alignment);
                if !in_obj.is_multiple_of(align) || !u64::from(rw.len).is_multiple_of(align) {
                    return Err(Errno::EINVAL);
                }
                pg.inflight += 1;
                self.start_ec_read(client, key, oid, ec, in_obj, u64::from(rw.len));
            }
            RequestOp::Write(_) => {
                let gran = u64::from(self.bs.layout().bitmap_granularity);
                if !in_obj.is_multiple_of(gran)
                    || !u64::from(rw.len).is_multiple_of(gran)
                    || rw.len == 0
                {
                    return Err(Errno::EINVAL);
                }
                pg.inflight += 1;
                let seq = self
                    .cfg
                    .debug_ec_crash
                    .as_ref()
                    .map_or(0, |h| h.next_write());
                let w = EcWrite {
                    client,
                    pg: key,
                    oid,
                    len: payload.len(),
                    seq,
                    first_written: false,
                    steps: EcWriteOp::new(ec.geo, rw.version, in_obj, payload),
                    ec,
                    queued: Vec::new(),
                    led: Vec::new(),
                };
                self.start_locked(key, oid, POp::EcWrite(w));
            }
            _ => {
                pg.inflight += 1;
                let d = DeleteOp::new(client, key, oid, false);
                self.start_locked(key, oid, POp::Delete(d));
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ reads

    fn start_ec_read(
        &mut self,
        client: ClientRef,
        key: PgId,
        oid: ObjectId,
        ec: Rc<EcPool>,
        offset: u64,
        len: u64,
    ) {
        let idx = self.insert_op(POp::EcRead(EcReadOp {
            client,
            pg: key,
            oid,
            offset,
            len,
            ec,
            locked: false,
            plan: None,
            replies: Vec::new(),
            pending: 0,
            version: 0,
            failed: None,
        }));
        self.send_ec_read(idx, false);
    }

    /// Plans read `idx` and sends its part reads. A read that rebuilds a part first waits
    /// for the object's lock (`locked`: it holds it): parts read while a write is between
    /// them would mix versions, and a mix rebuilds garbage.
    pub(crate) fn send_ec_read(&mut self, idx: usize, locked: bool) {
        let Some(POp::EcRead(mut r)) = self.take_op(idx) else {
            return;
        };
        let (key, oid) = (r.pg, r.oid);
        let Some(pg) = self.pgs.get(&key) else {
            self.client_error(r.client, Errno::EPIPE);
            return self.release_if_done(idx);
        };
        let members = self.ec_members(key, oid, true);
        let reachable: Vec<bool> = members.iter().map(Option::is_some).collect();
        let local = pg.part_of(self.osd_num).filter(|&p| reachable[p as usize]);
        let version = pg.objects.objects.get(&oid).map_or(NEWEST, |s| s.version);
        let plan = match ec_read::plan_range(&r.ec.geo, r.offset, r.len, &reachable, local) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("pg {}/{}: read of {oid:?}: {e}", key.pool, key.pg);
                self.client_error(r.client, Errno::EIO);
                self.release_if_done(idx);
                if locked {
                    self.unlock(key, oid);
                }
                return self.op_done(key);
            }
        };
        if !plan.rebuilt.is_empty() && !locked {
            self.ops[idx] = Some(POp::EcRead(r));
            return self.lock_and_run(key, oid, idx);
        }
        let reads = plan.reads.clone();
        let ec = Rc::clone(&r.ec);
        r.locked = locked;
        r.replies = vec![None; reads.len()];
        r.pending = reads.len();
        r.plan = Some(plan);
        self.ops[idx] = Some(POp::EcRead(r));
        for (tag, part) in (0u32..).zip(reads) {
            let osd = members[part.part as usize].expect("planned from reachable parts");
            let part_oid = ObjectId::new(oid.inode, ec.geo.part_stripe(oid.stripe, part.part));
            self.read_part(idx, tag, osd, part_oid, version, part.range.clone());
        }
    }

    /// One part read (bitmap included) of op `idx`, from the store or a peer.
    fn read_part(
        &mut self,
        idx: usize,
        tag: u32,
        osd: OsdNum,
        part: ObjectId,
        version: u64,
        range: std::ops::Range<u32>,
    ) {
        if osd == self.osd_num {
            let op = BsOp::Read {
                oid: part,
                version,
                offset: range.start,
                len: range.len() as u32,
            };
            return self.sub_local(idx, tag, op);
        }
        let req = Request {
            id: 0,
            op: RequestOp::SecRead(SecRwOp {
                oid: part,
                // The wire's 0 is the newest version.
                version: if version == NEWEST { 0 } else { version },
                offset: range.start,
                len: range.len() as u32,
                attr_len: self.bs.layout().bitmap_bytes() as u32,
                flags: 0,
            }),
        };
        self.sub_remote(idx, tag, osd, req, Vec::new(), None);
    }

    fn on_ec_read(&mut self, idx: usize, tag: u32, res: SubRes) {
        let Some(POp::EcRead(r)) = self.ops.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let Some(slot) = r.replies.get_mut(tag as usize) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        r.pending -= 1;
        match part_data(res) {
            Ok((version, d)) => {
                r.version = r.version.max(version);
                *slot = Some(d);
            }
            Err(e) => {
                r.failed.get_or_insert(e);
                *slot = Some(PartData::default());
            }
        }
        if r.pending > 0 {
            return;
        }
        let Some(POp::EcRead(r)) = self.take_op(idx) else {
            unreachable!("matched above")
        };
        self.release_if_done(idx);
        if r.locked {
            self.unlock(r.pg, r.oid);
        }
        let result = match (r.failed, &r.plan) {
            (Some(e), _) => Err(e),
            (None, None) => Err(Errno::EIO),
            (None, Some(plan)) => {
                let replies: Vec<PartData> = r.replies.into_iter().flatten().collect();
                plan.assemble(&r.ec.codec, &replies, r.offset, r.len)
                    .map_err(|e| {
                        tracing::warn!("pg {}/{}: EC read: {e}", r.pg.pool, r.pg.pg);
                        Errno::EIO
                    })
            }
        };
        match result {
            Ok((bitmap, data)) => {
                let data = Some(AlignedBuf::from_slice(&data));
                self.read_done(r.client, r.oid.inode, r.len, r.version, bitmap, data);
            }
            Err(e) => self.client_error(r.client, e),
        }
        self.op_done(r.pg);
    }

    // ------------------------------------------------------------------ writes

    /// What an EC write that just got its lock needs to know.
    fn ec_write_facts(&self, key: PgId, oid: ObjectId) -> ec_write::Facts {
        let pg = self.pgs.get(&key);
        let degraded = pg.is_some_and(|pg| pg.objects.degraded.contains(&oid));
        let members = self.ec_members(key, oid, false);
        ec_write::Facts {
            active: pg.is_some_and(|pg| pg.phase == crate::pg::Phase::Active),
            degraded,
            recovery_waits: degraded.then(|| self.recovery_waits(key, oid)).flatten(),
            local: pg
                .and_then(|pg| pg.part_of(self.osd_num))
                .filter(|&p| members.get(p as usize).copied().flatten().is_some()),
            members,
            current: self.next_version(key, oid) - 1,
            purged_up_to: pg.map_or(0, |pg| pg.purged_up_to),
            stabilize_now: self.pool_commit(key.pool) == ImmediateCommit::All,
        }
    }

    /// An EC write got its object lock.
    pub(crate) fn ec_write_locked(&mut self, idx: usize, w: EcWrite) {
        let facts = self.ec_write_facts(w.pg, w.oid);
        self.step_ec_write(idx, w, ec_write::Event::Locked(facts));
    }

    fn on_ec_write(&mut self, idx: usize, tag: u32, res: SubRes) {
        if tag >= BATCH_TAG {
            return self.on_ec_stabilized(idx, tag - BATCH_TAG, res);
        }
        if tag < READ_TAG {
            let result = res.errno().map_or(Ok(()), Err);
            return self.ec_write_sub(idx, tag, result);
        }
        let Some(POp::EcWrite(w)) = self.take_op(idx) else {
            return;
        };
        let event = ec_write::Event::Read {
            tag: tag - READ_TAG,
            result: part_data(res).map(|(_, d)| d),
        };
        self.step_ec_write(idx, w, event);
        self.release_if_done(idx);
    }

    /// The write, stabilize or rollback of `part` of EC write `idx` ended with `result`.
    fn ec_write_sub(&mut self, idx: usize, part: u32, result: Result<(), Errno>) {
        let Some(POp::EcWrite(mut w)) = self.take_op(idx) else {
            return;
        };
        let hook = self.cfg.debug_ec_crash.as_ref();
        if w.steps.replied() {
            // A stabilize ended: the reply went out in an earlier loop turn.
            debug_crash::check(hook, CrashPoint::AfterReply, w.seq);
        } else if result.is_ok() && !w.first_written {
            w.first_written = true;
            debug_crash::check(hook, CrashPoint::AfterFirstPartWrite, w.seq);
        }
        self.step_ec_write(idx, w, ec_write::Event::Sub { part, result });
        self.release_if_done(idx);
    }

    /// Stabilize list `n` led by EC write `idx` was answered: every write in it hears the
    /// answer (see [`ec_stabilize`] for why an error is everyone's).
    fn on_ec_stabilized(&mut self, idx: usize, n: u32, res: SubRes) {
        let Some(POp::EcWrite(w)) = self.ops.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let Some(members) = w.led.get_mut(n as usize).map(std::mem::take) else {
            return;
        };
        let result = res.errno().map_or(Ok(()), Err);
        for m in members {
            // Still the write that wanted it (it cannot have ended: it waits for this list).
            let waits = match self.ops.get(m.op).and_then(Option::as_ref) {
                Some(POp::EcWrite(w)) => {
                    w.steps.version() == m.obj.version
                        && ObjectId::new(w.oid.inode, w.ec.geo.part_stripe(w.oid.stripe, m.part))
                            == m.obj.oid
                }
                _ => false,
            };
            if waits {
                self.ec_write_sub(m.op, m.part, result);
            }
        }
    }

    /// Sends the stabilizes the EC writes of this loop turn decided, one list per OSD (see
    /// [`ec_stabilize`]). Called at the end of every turn, after the turn's completions and
    /// before its messages are written; a list for the local store is started at once.
    pub(crate) fn flush_ec_stabilizes(&mut self) {
        while std::mem::take(&mut self.ec_stabilizes_queued) {
            let mut wanted = Vec::new();
            for op in self.ops.iter_mut().flatten() {
                if let POp::EcWrite(w) = op {
                    wanted.append(&mut w.queued);
                }
            }
            let max = vitastor_protocol::MAX_OBJ_VER_LIST_ENTRIES as usize;
            let mut local = false;
            for batch in ec_stabilize::gather(wanted, max) {
                let leader = batch.leader();
                let Some(POp::EcWrite(w)) = self.ops.get_mut(leader).and_then(Option::as_mut)
                else {
                    unreachable!("a write that wants a stabilize waits for it in its slot");
                };
                let tag = BATCH_TAG + w.led.len() as u32;
                w.led.push(batch.members);
                local |= batch.osd == self.osd_num;
                self.part_list_op(leader, tag, batch.osd, batch.list, false);
            }
            if local {
                // The turn advanced the store already: start the list now (its journal write
                // goes with the loop's next wait) and take what ends without I/O, which may
                // queue more stabilizes.
                self.bs.advance();
                self.drain_completions();
            }
        }
    }

    /// Feeds EC write `idx` (taken out of its slot) one event and carries out what it
    /// decided; puts it back unless it is over.
    fn step_ec_write(&mut self, idx: usize, mut w: EcWrite, event: ec_write::Event) {
        let mut actions = w.steps.advance(&w.ec.codec, event);
        let (client, key, oid, len, seq) = (w.client, w.pg, w.oid, w.len, w.seq);
        let ec = Rc::clone(&w.ec);
        let part_oid = |part: u32| ObjectId::new(oid.inode, ec.geo.part_stripe(oid.stripe, part));
        let all_written = actions.iter().any(|a| {
            matches!(
                a,
                ec_write::Action::Stabilize { .. } | ec_write::Action::Written { .. }
            )
        });
        // Stabilizes wait for the end of the turn, to go in one list per OSD.
        actions.retain(|a| match *a {
            ec_write::Action::Stabilize { part, osd, version } => {
                self.ec_stabilizes_queued = true;
                w.queued.push(Wanted {
                    op: idx,
                    part,
                    osd,
                    obj: ObjVerId::new(part_oid(part), version),
                });
                false
            }
            _ => true,
        });
        if !w.steps.is_done() {
            self.ops[idx] = Some(POp::EcWrite(w));
        }
        if all_written {
            debug_crash::check(
                self.cfg.debug_ec_crash.as_ref(),
                CrashPoint::BeforeStabilize,
                seq,
            );
        }
        for action in actions {
            match action {
                ec_write::Action::RecoverFirst => self.recover_first(key, oid, idx),
                ec_write::Action::Read {
                    tag,
                    part,
                    osd,
                    version,
                    range,
                } => self.read_part(idx, READ_TAG + tag, osd, part_oid(part), version, range),
                ec_write::Action::Write {
                    part,
                    osd,
                    version,
                    offset,
                    data,
                    attr,
                } => {
                    let w = PartWrite {
                        oid: part_oid(part),
                        version,
                        offset,
                        data,
                        attr,
                        stable: false,
                        flags: 0,
                    };
                    self.part_write(idx, part, osd, w);
                }
                // Queued above.
                ec_write::Action::Stabilize { .. } => {}
                ec_write::Action::Rollback { part, osd, version } => {
                    let list = vec![ObjVerId::new(part_oid(part), version)];
                    self.part_list_op(idx, part, osd, list, true);
                }
                ec_write::Action::Written {
                    version,
                    holders,
                    stable,
                } => {
                    let Some(pg) = self.pgs.get_mut(&key) else {
                        continue;
                    };
                    if !stable {
                        for &(part, osd) in &holders {
                            pg.dirty
                                .entry(osd)
                                .or_default()
                                .push(ObjVerId::new(part_oid(part), version));
                        }
                    }
                    if let Some(st) = pg.objects.objects.get_mut(&oid) {
                        st.version = version;
                        let on: Vec<OsdNum> = holders.iter().map(|h| h.1).collect();
                        st.stale
                            .extend(st.holders.iter().filter(|h| !on.contains(h)));
                        st.stale.retain(|h| !on.contains(h));
                        st.holders = on;
                        pg.objects.ec_parts.insert(oid, holders);
                    }
                    pg.tombstones.remove(&oid);
                }
                ec_write::Action::Repeer => self.peer_trouble(key),
                ec_write::Action::Reply(Ok(version)) => {
                    self.write_done(client, oid.inode, len as u64, version);
                }
                ec_write::Action::Reply(Err(e)) => self.client_error(client, e),
                ec_write::Action::Unlock => {
                    self.unlock(key, oid);
                    self.op_done(key);
                }
            }
        }
    }

    /// Part write `w` on `osd` (this OSD's store or a peer) as sub-op `tag` of op `idx`.
    fn part_write(&mut self, idx: usize, tag: u32, osd: OsdNum, w: PartWrite) {
        if osd == self.osd_num {
            let op = BsOp::Write {
                oid: w.oid,
                version: w.version,
                offset: w.offset,
                data: w.data,
                bitmap: w.attr,
                stable: w.stable,
            };
            return self.sub_local(idx, tag, op);
        }
        let attr = w.attr.unwrap_or_default();
        let rw = SecRwOp {
            oid: w.oid,
            version: w.version,
            offset: w.offset,
            len: w.data.len() as u32,
            attr_len: attr.len() as u32,
            flags: w.flags,
        };
        let op = if w.stable {
            RequestOp::SecWriteStable(rw)
        } else {
            RequestOp::SecWrite(rw)
        };
        let data = Rc::new(w.data);
        self.sub_remote(idx, tag, osd, Request { id: 0, op }, attr, Some(data));
    }

    /// SEC_STABILIZE (or SEC_ROLLBACK) of `list` on `osd` as sub-op `tag` of op `idx`.
    fn part_list_op(
        &mut self,
        idx: usize,
        tag: u32,
        osd: OsdNum,
        list: Vec<ObjVerId>,
        rollback: bool,
    ) {
        if osd == self.osd_num {
            let op = if rollback {
                BsOp::Rollback(list)
            } else {
                BsOp::Stabilize(list)
            };
            return self.sub_local(idx, tag, op);
        }
        let bytes = wire_list(&list);
        let stab = SecStabOp {
            len: bytes.len() as u64,
            flags: 0,
        };
        let op = if rollback {
            RequestOp::SecRollback(stab)
        } else {
            RequestOp::SecStabilize(stab)
        };
        self.sub_remote(idx, tag, osd, Request { id: 0, op }, bytes, None);
    }

    /// Moves an EC op forward with the result of its sub-op `tag`.
    pub(crate) fn on_ec_sub(&mut self, idx: usize, tag: u32, res: SubRes) {
        match self.ops.get(idx).and_then(Option::as_ref) {
            Some(POp::EcRead(_)) => self.on_ec_read(idx, tag, res),
            Some(POp::EcWrite(_)) => self.on_ec_write(idx, tag, res),
            Some(POp::EcRecover(_)) => self.on_ec_recover(idx, tag, res),
            _ => {}
        }
    }

    /// An EC op is dropped before its end (its PG went away).
    pub(crate) fn abort_ec(&mut self, op: POp, errno: Errno) {
        match op {
            POp::EcRead(r) => {
                if r.locked {
                    self.unlock(r.pg, r.oid);
                }
                self.client_error(r.client, errno);
            }
            // Answered already when only its stabilize was left.
            POp::EcWrite(w) if w.steps.replied() => {}
            POp::EcWrite(w) => self.client_error(w.client, errno),
            // Background work counts in `recovering` until it ends.
            POp::EcRecover(r) => {
                self.recovering.remove(&(r.pg, r.oid));
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------ recovery

    /// The recovery op for `oid` of PG `key`: parts rebuilt in an EC/XOR PG, copies in a
    /// replicated one.
    pub(crate) fn new_recover_op(&self, key: PgId, oid: ObjectId) -> POp {
        match self.pgs.get(&key).and_then(|pg| pg.ec.clone()) {
            Some(ec) => POp::EcRecover(EcRecover {
                start: std::time::Instant::now(),
                pg: key,
                oid,
                steps: EcRecoverOp::new(ec.geo),
                ec,
            }),
            None => POp::Recover(crate::primary::RecoverOp::new(key, oid)),
        }
    }

    /// What an EC recovery that just got its lock needs to know (`None`: the object needs
    /// nothing any more).
    fn ec_recover_facts(&self, key: PgId, oid: ObjectId) -> Option<ec_recover::Facts> {
        let pg = self.pgs.get(&key)?;
        let st = pg.objects.objects.get(&oid)?;
        let me = self.osd_num;
        Some(ec_recover::Facts {
            version: st.version,
            holders: pg.objects.ec_parts.get(&oid).cloned().unwrap_or_default(),
            stale: pg.objects.ec_stale.get(&oid).cloned().unwrap_or_default(),
            set: pg.set(),
            up: pg
                .live
                .iter()
                .copied()
                .filter(|&o| o == me || self.peers.is_ready(o))
                .collect(),
            me,
            no_rebalance: self.cluster.global_flag("no_rebalance"),
        })
    }

    /// An EC recovery got its object lock.
    pub(crate) fn ec_recover_locked(&mut self, idx: usize, r: EcRecover) {
        let facts = self.ec_recover_facts(r.pg, r.oid);
        self.step_ec_recover(idx, r, ec_recover::Event::Locked(facts));
    }

    fn on_ec_recover(&mut self, idx: usize, tag: u32, res: SubRes) {
        let Some(POp::EcRecover(r)) = self.take_op(idx) else {
            return;
        };
        let event = if r.steps.awaits_read(tag) {
            ec_recover::Event::Read {
                tag,
                result: part_data(res).map(|(_, d)| d),
            }
        } else {
            ec_recover::Event::Sub {
                tag,
                result: res.errno().map_or(Ok(()), Err),
            }
        };
        self.step_ec_recover(idx, r, event);
        self.release_if_done(idx);
    }

    fn step_ec_recover(&mut self, idx: usize, mut r: EcRecover, event: ec_recover::Event) {
        let actions = r.steps.advance(&r.ec.codec, event);
        let (key, oid, start) = (r.pg, r.oid, r.start);
        let ec = Rc::clone(&r.ec);
        if !r.steps.is_done() {
            self.ops[idx] = Some(POp::EcRecover(r));
        }
        let part_oid = |part: u32| ObjectId::new(oid.inode, ec.geo.part_stripe(oid.stripe, part));
        let flags = vitastor_protocol::OSD_OP_RECOVERY_RELATED;
        for action in actions {
            match action {
                ec_recover::Action::Read {
                    tag,
                    part,
                    osd,
                    version,
                } => self.read_part(idx, tag, osd, part_oid(part), version, 0..ec.geo.block_size),
                ec_recover::Action::Write {
                    tag,
                    part,
                    osd,
                    version,
                    data,
                    bitmap,
                } => {
                    let w = PartWrite {
                        oid: part_oid(part),
                        version,
                        offset: 0,
                        data: AlignedBuf::from_slice(&data),
                        attr: Some(bitmap),
                        stable: true,
                        flags,
                    };
                    self.part_write(idx, tag, osd, w);
                }
                ec_recover::Action::Rebuilt { parts } => {
                    self.stats.recovered(
                        false,
                        start,
                        u64::from(ec.geo.block_size) * parts.len() as u64,
                    );
                    for &(_, osd) in &parts {
                        self.backoff.osd_took(osd);
                    }
                    if let Some(pg) = self.pgs.get_mut(&key) {
                        if let Some(st) = pg.objects.objects.get_mut(&oid) {
                            for &(_, osd) in &parts {
                                if !st.holders.contains(&osd) {
                                    st.holders.push(osd);
                                }
                                st.stale.retain(|&o| o != osd);
                            }
                        }
                        pg.objects.ec_parts.entry(oid).or_default().extend(parts);
                        pg.objects.degraded.remove(&oid);
                    }
                }
                ec_recover::Action::Delete {
                    tag,
                    part,
                    osd,
                    version,
                } => {
                    if osd == self.osd_num {
                        let op = BsOp::Delete {
                            oid: part_oid(part),
                            version,
                            stable: false,
                        };
                        self.sub_local(idx, tag, op);
                        continue;
                    }
                    let req = Request {
                        id: 0,
                        op: RequestOp::SecDelete(vitastor_protocol::SecDeleteOp {
                            oid: part_oid(part),
                            version,
                            flags,
                        }),
                    };
                    self.sub_remote(idx, tag, osd, req, Vec::new(), None);
                }
                ec_recover::Action::Sync { tag, osd } if osd == self.osd_num => {
                    self.sub_local(idx, tag, BsOp::Sync);
                }
                ec_recover::Action::Sync { tag, osd } => {
                    let op = RequestOp::SecSync(vitastor_protocol::SecSyncOp { flags });
                    self.sub_remote(idx, tag, osd, Request { id: 0, op }, Vec::new(), None);
                }
                ec_recover::Action::Stabilize {
                    tag,
                    part,
                    osd,
                    version,
                } => {
                    let list = vec![ObjVerId::new(part_oid(part), version)];
                    self.part_list_op(idx, tag, osd, list, false);
                }
                ec_recover::Action::Clean => {
                    if let Some(pg) = self.pgs.get_mut(&key) {
                        pg.objects.objects.remove(&oid);
                        pg.objects.degraded.remove(&oid);
                        pg.objects.misplaced.remove(&oid);
                        pg.objects.ec_parts.remove(&oid);
                        pg.objects.ec_stale.remove(&oid);
                    }
                }
                ec_recover::Action::Keep { misplaced } => {
                    if let Some(pg) = self.pgs.get_mut(&key) {
                        pg.objects.degraded.remove(&oid);
                        if misplaced {
                            pg.objects.misplaced.insert(oid);
                        } else {
                            pg.objects.misplaced.remove(&oid);
                        }
                    }
                }
                ec_recover::Action::Failed { errno, repeer } => {
                    let delay = self
                        .backoff
                        .failed((key, oid), errno, std::time::Instant::now());
                    tracing::info!(
                        "pg {}/{}: recovery of EC object {oid:?} failed ({errno}), next attempt in {delay:?}",
                        key.pool,
                        key.pg
                    );
                    if repeer {
                        self.peer_trouble(key);
                    }
                }
                ec_recover::Action::Finish { succeeded } => {
                    self.recovery_done(key, oid, succeeded);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vitastor_blockstore::{BsOp, BsReply, ImmediateCommit, ObjectId, NEWEST};
    use vitastor_layout::PgId;
    use vitastor_protocol::{RequestOp, RwOp};

    use crate::ec::codec::Codec;
    use crate::testing::{Bench, Setup, BLOCK, INODE};

    /// An EC 1+1 PG whose other OSD is down: `set` puts this OSD (osd.1) on the data part
    /// (`[1, 2]`) or on the parity part (`[2, 1]`).
    fn ec11(set: [u64; 2], commit: ImmediateCommit) -> Bench {
        Bench::new(Setup {
            osd_set: set.to_vec(),
            scheme: "ec",
            parity_chunks: 1,
            immediate_commit: commit,
            ..Setup::default()
        })
    }

    /// The object's bitmap of a 1+1 pool: one part of 32 granules.
    const BMP: usize = 4;

    fn local_part(b: &mut Bench, part: u64) -> (u64, Vec<u8>, Vec<u8>) {
        let op = BsOp::Read {
            oid: ObjectId::new(INODE, part),
            version: NEWEST,
            offset: 0,
            len: BLOCK as u32,
        };
        match b.server.bs.exec(op) {
            Ok(BsReply::Read {
                version,
                bitmap,
                data,
            }) => (version, bitmap, data.to_vec()),
            other => panic!("local read: {other:?}"),
        }
    }

    #[test]
    fn an_ec_pg_goes_active_with_pg_minsize_parts_and_serves_writes_and_reads() {
        let mut b = ec11([1, 2], ImmediateCommit::All);
        assert_eq!(b.pg_states(), ["Active", "Degraded"]);
        let id = b.write(8192, &[7; 8192]);
        assert_eq!(b.reply(id, |_| 0).0.retval, 8192);
        // A partial overwrite reads the old columns back (read-modify-write).
        let id = b.write(12288, &[9; 4096]);
        assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        let (ret, bitmap, data) = b.read(0, 16384, BMP);
        assert_eq!(ret, 16384);
        assert_eq!(bitmap, [0b1100, 0, 0, 0]);
        assert_eq!(&data[..8192], &[0; 8192]);
        assert_eq!(&data[8192..12288], &[7; 4096]);
        assert_eq!(&data[12288..], &[9; 4096]);
        // The data part is stored as the part object `object start + 0`, stable.
        let (version, _, stored) = local_part(&mut b, 0);
        assert_eq!(version, 2);
        assert_eq!(&stored[8192..12288], &[7; 4096]);
        assert_eq!(b.local_unstable(), []);
    }

    /// The writes whose part writes end in one loop turn stabilize their parts in one list
    /// per OSD: four writes of four objects here are four part writes and one local
    /// stabilize (was four).
    #[test]
    fn the_writes_of_a_turn_stabilize_in_one_list() {
        let mut b = ec11([1, 2], ImmediateCommit::All);
        let before = b.server.bs.stats().ops;
        let ids: Vec<u64> = (0..4u64)
            .map(|k| b.write(k * 2 * BLOCK, &[k as u8 + 1; 4096]))
            .collect();
        // The part writes start; their completions are all taken in one turn.
        let s = &mut b.server;
        s.end_turn();
        for _ in 0..20_000 {
            if s.bs.is_idle() {
                break;
            }
            s.bs.engine_mut()
                .wait_for(Some(std::time::Duration::from_millis(2)))
                .expect("wait for the ring");
            s.bs.poll(false).expect("blockstore poll");
            s.bs.advance();
        }
        assert!(s.bs.is_idle());
        s.drain_completions();
        s.end_turn();
        for id in ids {
            assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        }
        b.pump_until(|s| s.pgs[&PgId::new(1, 1)].locks.is_empty());
        assert_eq!(b.server.bs.stats().ops - before, 5);
        assert_eq!(b.local_unstable(), []);
        // Later writes of the same objects see the stable versions.
        for k in 0..4u64 {
            let id = b.write(k * 2 * BLOCK + 4096, &[9; 4096]);
            assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
            let (ret, _, data) = b.read(k * 2 * BLOCK, 8192, BMP);
            assert_eq!(ret, 8192);
            assert_eq!(data, [[k as u8 + 1; 4096], [9; 4096]].concat());
        }
        assert_eq!(b.local_unstable(), []);
    }

    #[test]
    fn a_read_of_a_missing_data_part_is_rebuilt_from_parity() {
        let mut b = ec11([2, 1], ImmediateCommit::All);
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
        let id = b.write(4096, &data);
        assert_eq!(b.reply(id, |_| 0).0.retval, 8192);
        // Only the parity part exists here; its bytes are the code of the data.
        let (_, attr, parity) = local_part(&mut b, 1);
        let mut shards = [vec![0u8; BLOCK as usize], vec![0u8; BLOCK as usize]];
        shards[0][4096..12288].copy_from_slice(&data);
        let codec = Codec::reed_solomon(1, 1).unwrap();
        let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(|s| s.as_mut_slice()).collect();
        codec.encode(&mut refs).unwrap();
        assert_eq!(parity, shards[1]);
        assert_ne!(
            attr, [0; BMP],
            "the parity part carries the code of the bitmaps"
        );
        let (ret, bitmap, got) = b.read(0, 16384, BMP);
        assert_eq!(ret, 16384);
        assert_eq!(
            bitmap,
            [0b0110, 0, 0, 0],
            "the rebuilt bitmap is the data part's"
        );
        assert_eq!(&got[4096..12288], &data[..]);
        assert_eq!(&got[..4096], &[0; 4096]);
        // The rebuilding read held the object's lock (no write between its part reads)
        // and gave it back.
        let pg = &b.server.pgs[&PgId::new(1, 1)];
        assert!(pg.locks.is_empty());
        assert_eq!(pg.inflight, 0);
        let id = b.write(0, &[1; 4096]);
        assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        assert_eq!(b.read(0, 4096, BMP).2, [1; 4096]);
    }

    #[test]
    fn lazy_ec_writes_wait_for_the_clients_sync() {
        let mut b = ec11([1, 2], ImmediateCommit::None);
        for k in 0..3u64 {
            let id = b.write(k * 2 * BLOCK, &[k as u8 + 1; 4096]);
            assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        }
        assert_eq!(b.local_unstable().len(), 3, "unstable until the SYNC");
        let id = b.sync();
        assert_eq!(b.reply(id, |_| 0).0.retval, 0);
        assert_eq!(b.local_unstable(), []);
    }

    #[test]
    fn a_deleted_ec_object_reads_as_zeroes() {
        let mut b = ec11([1, 2], ImmediateCommit::All);
        let id = b.write(0, &[5; 4096]);
        assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        let op = RequestOp::Delete(RwOp {
            inode: INODE,
            offset: 0,
            len: 0,
            flags: 0,
            meta_revision: 0,
            version: 0,
        });
        let id = b.send(op, &[]);
        assert_eq!(b.reply(id, |_| 0).0.retval, 0);
        let (ret, bitmap, data) = b.read(0, 4096, BMP);
        assert_eq!(ret, 4096);
        assert_eq!(bitmap, [0; BMP]);
        assert_eq!(data, [0; 4096]);
        // Written again after the delete: a version above the tombstone.
        let id = b.write(0, &[6; 4096]);
        assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        assert_eq!(b.read(0, 4096, BMP).2, [6; 4096]);
    }

    #[test]
    fn peering_stabilizes_an_ec_version_held_by_k_parts() {
        let mut b = ec11([1, 2], ImmediateCommit::All);
        // A write that a previous primary left unstable on this part (k = 1 part holds it).
        let op = BsOp::Write {
            oid: ObjectId::new(INODE, 0),
            version: 4,
            offset: 0,
            data: vitastor_blockstore::AlignedBuf::from_slice(&[3; 4096]),
            bitmap: None,
            stable: false,
        };
        b.server.bs.exec(op).unwrap();
        b.server.request_repeer(PgId::new(1, 1));
        claim_and_peer(&mut b);
        assert_eq!(b.local_unstable(), []);
        assert_eq!(b.read(0, 4096, BMP).2, [3; 4096]);
    }

    #[test]
    fn an_unaligned_or_oversized_ec_request_is_refused() {
        let mut b = ec11([1, 2], ImmediateCommit::All);
        let id = b.write(100, &[1; 4096]);
        assert_eq!(b.reply(id, |_| 0).0.retval, -22);
        let id = b.write(BLOCK - 4096, &[1; 8192]);
        assert_eq!(b.reply(id, |_| 0).0.retval, -22, "crosses the object's end");
    }

    /// `pg/config` moves PG 1/1 to `set` (this OSD stays primary) and it peers again.
    fn move_pg(b: &mut Bench, set: &[u64]) {
        b.etcd(vec![crate::etcd::EtcdEvent::KeyChanged {
            key: "pg/config".into(),
            value: Some(serde_json::json!({"items": {"1": {"1": {"osd_set": set, "primary": 1}}}})),
        }]);
        claim_and_peer(b);
    }

    /// etcd grants PG 1/1 to this OSD; it peers until active.
    fn claim_and_peer(b: &mut Bench) {
        b.etcd(vec![crate::etcd::EtcdEvent::PgClaimed {
            pool: 1,
            pg: 1,
            granted: true,
        }]);
        b.pump_until(|s| s.pgs[&PgId::new(1, 1)].phase == crate::pg::Phase::Active);
    }

    #[test]
    fn a_part_that_moves_to_another_position_is_rebuilt_there() {
        let mut b = ec11([1, 2], ImmediateCommit::All);
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 241) as u8).collect();
        let id = b.write(0, &data);
        assert_eq!(b.reply(id, |_| 0).0.retval, 8192);
        // This OSD now holds the parity position; its data part is the only source.
        move_pg(&mut b, &[2, 1]);
        let pg = &b.server.pgs[&PgId::new(1, 1)];
        assert!(pg.objects.degraded.contains(&ObjectId::new(INODE, 0)));
        b.pump_until(|s| s.pgs[&PgId::new(1, 1)].objects.degraded.is_empty());
        let (version, attr, parity) = local_part(&mut b, 1);
        assert_eq!(version, 1, "the rebuilt part is at the object's version");
        assert_ne!(attr, [0; BMP]);
        assert_eq!(&parity[..8192], &data[..], "1+1 parity of data is the data");
        // The old copy stays while a position is down: the PG is not clean.
        assert_eq!(b.pg_states(), ["Active", "Degraded"]);
        assert!(!b.server.pgs[&PgId::new(1, 1)].is_clean());
        let (ret, bitmap, got) = b.read(0, 8192, BMP);
        assert_eq!((ret, bitmap), (8192, vec![0b11, 0, 0, 0]));
        assert_eq!(got, data);
    }

    #[test]
    fn a_write_to_a_degraded_ec_object_recovers_it_first() {
        let mut b = ec11([1, 2], ImmediateCommit::All);
        let id = b.write(0, &[4; 4096]);
        assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        b.server.cfg.recovery_queue_depth = 0;
        move_pg(&mut b, &[2, 1]);
        let id = b.write(4096, &[5; 4096]);
        assert_eq!(b.reply(id, |_| 0).0.retval, 4096);
        let (version, _, parity) = local_part(&mut b, 1);
        assert_eq!(version, 2);
        assert_eq!(&parity[..8192], [[4u8; 4096], [5u8; 4096]].concat());
    }

    #[test]
    fn a_pool_no_code_can_serve_is_ignored_with_its_reason() {
        // A set with one slot too many for the pool's pg_size.
        let mut b = ec11([1, 2], ImmediateCommit::All);
        b.etcd(vec![crate::etcd::EtcdEvent::KeyChanged {
            key: "pg/config".into(),
            value: Some(
                serde_json::json!({"items": {"1": {"1": {"osd_set": [1, 2, 3], "primary": 1}}}}),
            ),
        }]);
        b.pump_until(|s| !s.pgs.contains_key(&PgId::new(1, 1)));
        let why = b.server.cluster.refused[&PgId::new(1, 1)].clone();
        assert!(why.contains("pg_size is 2"), "{why}");
        // Unknown schemes and parity_chunks >= pg_size never become pools at all.
        b.etcd(vec![crate::etcd::EtcdEvent::KeyChanged {
            key: "config/pools".into(),
            value: Some(serde_json::json!({
                "1": {"name": "p", "scheme": "lrc", "pg_size": 2, "pg_minsize": 1, "pg_count": 1},
                "2": {"name": "q", "scheme": "ec", "pg_size": 2, "parity_chunks": 2, "pg_minsize": 1, "pg_count": 1}
            })),
        }]);
        for _ in 0..10 {
            b.pump();
        }
        assert!(b.server.pgs.is_empty());
        assert!(b.server.cluster.pools.is_empty());
    }
}
