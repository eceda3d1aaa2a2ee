//! A client WRITE to an EC/XOR object on the primary, as a state machine: once it holds the
//! object's lock it reads what the new parity needs (read-modify-write of the touched
//! columns), computes the new data and parity parts and their bitmaps, writes every live
//! part as one new **unstable** version, and then stabilizes it (`immediate_commit: all`) or
//! leaves it to the next SYNC.
//!
//! With `immediate_commit: all`, once every position of the set holds the new version the
//! client is answered before the stabilize, which runs after the reply while the object
//! stays locked. Each part write is durable when it completes, so the version is on all
//! `k + m` parts; peering goes active only with `pg_minsize >= k` live members of the set,
//! and [`super::torn::settle`] keeps the newest version `k` parts hold, so any peering after
//! a crash of the primary (with up to `m` parts lost besides) completes this version: no
//! newer one exists (the lock), and every live member holds it. A write that missed a
//! position (a part down) waits for its stabilize before answering: there, a member back
//! from down with the older version stable could outvote the new one in a later peering
//! that lacks some of its holders, where a stable version would leave the object
//! incomplete instead of rolled back.
//!
//! Every live part gets the new version, the untouched data parts a zero-length write: the
//! parts of one object then always carry the same versions, so peering ([`super::torn`])
//! judges a version by counting the parts that hold it.
//!
//! What is read: the touched columns `C` (see [`Geometry::columns`]) of every data part
//! whose own new bytes do not cover `C` (the bitmap alone for the others); a data part whose
//! OSD is down is rebuilt from any `k` live parts ([`super::read`]). A new object (version
//! 0) and a write covering every data part whole read nothing. What is written: the new
//! bytes of each touched data part and `C` of every parity part, `C` widened (after a
//! second read round) when the parity attribute clears bits outside it
//! ([`EcWriteOp::cleared_columns`]). Bitmaps: a part's store keeps its allocation bitmap as for any write
//! (the previous one plus the written range; a parity part then covers every column any
//! data part ever had, and reads as zeroes only where every data part does); a parity part
//! also carries an *attribute*, the code of the data parts' bitmaps, from which a lost data
//! part's bitmap is rebuilt like its data. The attribute must not become the parity part's
//! allocation bitmap: the store reads granules outside its allocation bitmap as zeroes.
//!
//! Pure like [`crate::op_write`]: [`EcWriteOp::advance`] takes an [`Event`] and returns
//! [`Action`]s for the executor; the write's data is moved into the op because parity is
//! computed from it.
//!
//! What it must never do: acknowledge a version some live part lacks, or leave a version on
//! fewer than all live parts without either rolling it back or handing the PG to peering.

use std::ops::Range;
use std::rc::Rc;

use vitastor_blockstore::AlignedBuf;
use vitastor_layout::OsdNum;
use vitastor_protocol::errno::Errno;

use super::codec::Codec;
use super::geometry::Geometry;
use super::read::{self, PartData, ReadPlan};
use crate::op_gate::{gate, Gate};
use crate::op_write::version_after;

/// What the executor knows when the write gets its object lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The PG exists and is active.
    pub active: bool,
    /// Some live part lags behind the object's version: it is recovered first.
    pub degraded: bool,
    /// The object's last recovery failed and its next attempt is not due: the error to fail with.
    pub recovery_waits: Option<Errno>,
    /// Per part: the live OSD holding it (`None`: its OSD is down or the slot is empty).
    pub members: Vec<Option<OsdNum>>,
    /// The part this OSD holds, if any (read locally, preferred for reconstruction).
    pub local: Option<u32>,
    /// The object's current version (0: it does not exist).
    pub current: u64,
    /// The highest version purged in the PG while this OSD led it.
    pub purged_up_to: u64,
    /// `immediate_commit: all`: stabilize right after the writes, before the reply.
    pub stabilize_now: bool,
}

/// What moves an EC write forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The object lock is ours.
    Locked(Facts),
    /// Sub-read `tag` (of [`Action::Read`]) finished.
    Read {
        /// The sub-read.
        tag: u32,
        /// Its bitmap and bytes, or the error.
        result: Result<PartData, Errno>,
    },
    /// The write, stabilize or rollback of part `part` finished.
    Sub {
        /// The part.
        part: u32,
        /// Its outcome.
        result: Result<(), Errno>,
    },
}

/// What the executor does for an EC write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Recover the object now, then run this write again.
    RecoverFirst,
    /// Sub-read `tag`: bytes `range` (empty: bitmap only) of `part` at `version`, on `osd`.
    Read {
        /// Sub-read tag.
        tag: u32,
        /// Part number.
        part: u32,
        /// Where.
        osd: OsdNum,
        /// The object's current version.
        version: u64,
        /// Bytes of the part.
        range: Range<u32>,
    },
    /// Write `data` at `offset` of `part` (empty: a version bump) as unstable `version`;
    /// the store's allocation bitmap grows by the written range.
    Write {
        /// Part number.
        part: u32,
        /// Where.
        osd: OsdNum,
        /// The new version.
        version: u64,
        /// Byte offset in the part.
        offset: u32,
        /// The bytes, in a buffer the store writes from and the peer messages send as is.
        data: AlignedBuf,
        /// Parity parts: the code of the data parts' bitmaps for the new version, kept
        /// beside the allocation bitmap and returned by reads of this part.
        attr: Option<Vec<u8>>,
    },
    /// SEC_STABILIZE `version` of `part` on `osd`.
    Stabilize {
        /// Part number.
        part: u32,
        /// Where.
        osd: OsdNum,
        /// The version.
        version: u64,
    },
    /// SEC_ROLLBACK of `part` on `osd` to `version` (drops the unstable versions above it).
    Rollback {
        /// Part number.
        part: u32,
        /// Where.
        osd: OsdNum,
        /// The version to go back to.
        version: u64,
    },
    /// Every live part holds `version` (stable or waiting for a SYNC).
    Written {
        /// The version.
        version: u64,
        /// `(part, osd)` of every live part.
        holders: Vec<(u32, OsdNum)>,
        /// Stabilized already.
        stable: bool,
    },
    /// A peer was lost mid-op or a stabilize/rollback failed: what the parts hold is
    /// unknown, the PG peers again and settles the object there.
    Repeer,
    /// Answer the client.
    Reply(Result<u64, Errno>),
    /// Release the object lock.
    Unlock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Reading,
    Writing,
    Stabilizing,
    RollingBack,
    Done,
}

/// One EC client WRITE. See the module docs.
#[derive(Debug)]
pub struct EcWriteOp {
    geo: Geometry,
    cas: u64,
    offset: u64,
    /// The client's bytes as they arrived (shared with the part writes sent from them).
    data: Rc<AlignedBuf>,
    stage: Stage,
    facts: Option<Facts>,
    version: u64,
    plan: Option<ReadPlan>,
    /// The part bytes every parity part is rewritten over (see [`EcWriteOp::cleared_columns`]).
    columns: Range<u32>,
    /// The columns were widened once after the reads (they stay so).
    widened: bool,
    /// Per data part: the old bytes read (the columns its new bytes leave).
    wanted: Vec<Range<u32>>,
    replies: Vec<Option<PartData>>,
    /// Parts with an outstanding sub-op in the current stage.
    pending: Vec<u32>,
    /// Parts that took the new version.
    holders: Vec<(u32, OsdNum)>,
    /// The first failure, which the client hears.
    failed: Option<Errno>,
    lost_peer: bool,
    /// The client heard the version before its stabilize (the lock waits for the stabilize).
    replied: bool,
}

impl EcWriteOp {
    /// A write of `data` at `offset` of the object (inside it), waiting for its lock; `cas`
    /// as the client sent it.
    pub fn new(geo: Geometry, cas: u64, offset: u64, data: AlignedBuf) -> EcWriteOp {
        EcWriteOp {
            geo,
            cas,
            offset,
            data: Rc::new(data),
            stage: Stage::Waiting,
            facts: None,
            version: 0,
            plan: None,
            columns: 0..0,
            widened: false,
            wanted: Vec::new(),
            replies: Vec::new(),
            pending: Vec::new(),
            holders: Vec::new(),
            failed: None,
            lost_peer: false,
            replied: false,
        }
    }

    /// The client has been answered while the stabilize still runs (an abort must not
    /// answer it again).
    pub fn replied(&self) -> bool {
        self.replied
    }

    /// The version the write creates (0 until it holds the lock).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The client has been answered and the lock released.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Takes one event; returns what to do. Events that do not fit the current stage change
    /// nothing.
    pub fn advance(&mut self, codec: &Codec, event: Event) -> Vec<Action> {
        match (self.stage, event) {
            (Stage::Waiting, Event::Locked(facts)) => self.locked(codec, facts),
            (Stage::Reading, Event::Read { tag, result }) => {
                let Some(slot) = self.replies.get_mut(tag as usize) else {
                    return Vec::new();
                };
                if slot.is_some() || !self.pending.contains(&tag) {
                    return Vec::new();
                }
                self.pending.retain(|&t| t != tag);
                match result {
                    Ok(d) => *slot = Some(d),
                    Err(e) => self.note_failure(e),
                }
                if !self.pending.is_empty() {
                    return Vec::new();
                }
                match self.failed {
                    Some(e) if self.lost_peer => self.finish(vec![Action::Repeer], Err(e)),
                    Some(e) => self.finish(Vec::new(), Err(e)),
                    None => self.write(codec),
                }
            }
            (
                Stage::Writing | Stage::Stabilizing | Stage::RollingBack,
                Event::Sub { part, result },
            ) => {
                if !self.pending.contains(&part) {
                    return Vec::new();
                }
                self.pending.retain(|&p| p != part);
                match result {
                    Ok(()) if self.stage == Stage::Writing => {
                        let osd = self.member(part);
                        self.holders.push((part, osd));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if self.stage != Stage::Writing {
                            self.lost_peer = true;
                        }
                        self.note_failure(e);
                    }
                }
                if !self.pending.is_empty() {
                    return Vec::new();
                }
                match self.stage {
                    Stage::Writing => self.written(),
                    Stage::Stabilizing if self.replied => {
                        self.stage = Stage::Done;
                        let mut actions = Vec::new();
                        if self.lost_peer {
                            actions.push(Action::Repeer);
                        }
                        actions.push(Action::Unlock);
                        actions
                    }
                    Stage::Stabilizing if self.lost_peer => {
                        self.finish(vec![Action::Repeer], Err(Errno::EPIPE))
                    }
                    Stage::Stabilizing => {
                        let done = self.done_action(true);
                        self.finish(vec![done], Ok(self.version))
                    }
                    _ => {
                        let e = self.failed.unwrap_or(Errno::EIO);
                        let learned = if self.lost_peer {
                            vec![Action::Repeer]
                        } else {
                            Vec::new()
                        };
                        self.finish(learned, Err(e))
                    }
                }
            }
            _ => Vec::new(),
        }
    }

    fn member(&self, part: u32) -> OsdNum {
        self.facts
            .as_ref()
            .and_then(|f| f.members.get(part as usize).copied().flatten())
            .unwrap_or(OsdNum(0))
    }

    fn note_failure(&mut self, e: Errno) {
        if e == Errno::EPIPE {
            self.lost_peer = true;
        }
        self.failed.get_or_insert(e);
    }

    fn locked(&mut self, codec: &Codec, facts: Facts) -> Vec<Action> {
        let k = self.geo.data_parts as usize;
        // Fewer than k live parts cannot hold a new version: as for an inactive PG, the
        // client retries once the PG has peered again.
        let writable = facts.active && facts.members.iter().flatten().count() >= k;
        match gate(writable, facts.degraded, facts.recovery_waits) {
            Gate::Proceed => {}
            Gate::RecoverFirst => return vec![Action::RecoverFirst],
            Gate::Fail(e) => return self.finish(Vec::new(), Err(e)),
        }
        if self.cas != 0 && self.cas != facts.current + 1 {
            return self.finish(Vec::new(), Err(Errno::EINTR));
        }
        if facts.members.len() != self.geo.total_parts() as usize
            || self.offset + self.data.len() as u64 > self.geo.object_size()
        {
            return self.finish(Vec::new(), Err(Errno::EINVAL));
        }
        self.version = version_after(facts.current, facts.purged_up_to);
        let current = facts.current;
        self.facts = Some(facts);
        self.columns = self.geo.columns(self.offset, self.data.len() as u64);
        if current == 0 {
            // Nothing stored yet: the old data and bitmaps are zeroes.
            return self.write(codec);
        }
        self.read_old(codec)
    }

    /// Sends the reads of the old bytes of `self.columns` that the new ones leave, and of
    /// every data part's bitmap. A write covering every data part whole reads nothing: its
    /// new bitmaps are full whatever the old ones were.
    fn read_old(&mut self, codec: &Codec) -> Vec<Action> {
        let k = self.geo.data_parts as usize;
        let columns = self.columns.clone();
        let mut wanted = vec![columns.clone(); k];
        for p in self.geo.data_ranges(self.offset, self.data.len() as u64) {
            wanted[p.part as usize] = old_columns(&columns, &p.range);
        }
        let whole = columns == (0..self.geo.block_size) && wanted.iter().all(Range::is_empty);
        self.wanted.clone_from(&wanted);
        if whole {
            self.plan = None;
            return self.write(codec);
        }
        let Some(facts) = self.facts.as_ref() else {
            return self.finish(Vec::new(), Err(Errno::EIO));
        };
        let (current, local) = (facts.current, facts.local);
        let reachable: Vec<bool> = facts.members.iter().map(Option::is_some).collect();
        let plan = match read::plan(&self.geo, wanted, &reachable, local) {
            Ok(p) => p,
            Err(_) => return self.finish(Vec::new(), Err(Errno::EPIPE)),
        };
        self.stage = Stage::Reading;
        self.replies = vec![None; plan.reads.len()];
        self.pending = (0..plan.reads.len() as u32).collect();
        let actions = (0u32..)
            .zip(&plan.reads)
            .map(|(tag, r)| Action::Read {
                tag,
                part: r.part,
                osd: self.member(r.part),
                version: current,
                range: r.range.clone(),
            })
            .collect();
        self.plan = Some(plan);
        actions
    }

    /// The old parts are known: compute and send every part's new version (or, once, read
    /// wider columns first: see [`EcWriteOp::cleared_columns`]).
    fn write(&mut self, codec: &Codec) -> Vec<Action> {
        let geo = self.geo;
        let k = geo.data_parts as usize;
        let len = self.data.len() as u64;
        let bb = geo.part_bitmap_bytes();
        let old: Vec<PartData> = match &self.plan {
            None => vec![
                PartData {
                    bitmap: vec![0; bb],
                    data: Vec::new(),
                };
                k
            ],
            Some(plan) => {
                let replies: Vec<PartData> =
                    self.replies.iter_mut().flat_map(Option::take).collect();
                match plan.rebuild(codec, &replies) {
                    Ok(o) => o,
                    Err(_) => return self.finish(Vec::new(), Err(Errno::EIO)),
                }
            }
        };
        // Bitmaps of every part, old then new: the data parts' first, then their code.
        let n = geo.total_parts() as usize;
        let mut old_bitmaps: Vec<Vec<u8>> = vec![vec![0u8; bb]; n];
        for (j, o) in old.iter().enumerate() {
            old_bitmaps[j].clone_from(&o.bitmap);
        }
        let mut bitmaps = old_bitmaps.clone();
        for p in geo.data_ranges(self.offset, len) {
            geo.mark(&mut bitmaps[p.part as usize], p.range);
        }
        if encode_bitmaps(codec, &mut old_bitmaps).is_err()
            || encode_bitmaps(codec, &mut bitmaps).is_err()
        {
            return self.finish(Vec::new(), Err(Errno::EIO));
        }
        if self.plan.is_some() && !self.widened {
            let wider = self.cleared_columns(&old_bitmaps[k..], &bitmaps[k..]);
            if wider != self.columns {
                self.widened = true;
                self.columns = wider;
                return self.read_old(codec);
            }
        }
        // New columns of every data part, then the parity parts' from them.
        let columns = self.columns.clone();
        let width = columns.len();
        // Per data part: where its new bytes go and where they are in the client's data.
        let mut pieces: Vec<Option<(Range<u32>, Range<usize>)>> = vec![None; k];
        for p in geo.data_ranges(self.offset, len) {
            let src = p.buf_offset..p.buf_offset + p.range.len();
            pieces[p.part as usize] = Some((p.range, src));
        }
        // A data part whose new bytes are its whole columns is coded and written from the
        // client's data as it arrived; the others get a column buffer, their old bytes and
        // their new ones.
        let direct: Vec<bool> = pieces
            .iter()
            .map(|p| matches!(p, Some((range, _)) if *range == columns))
            .collect();
        // Aligned from the start: the parity columns go to a device or a socket as they are.
        // Not zeroed: the code overwrites every parity byte, and a data part's columns are
        // all read (`rebuild` checks the lengths) or new, but for a new object's, whose
        // old bytes are zeroes.
        let mut cols: Vec<AlignedBuf> = (0..n)
            .map(|j| match direct.get(j) {
                Some(true) => AlignedBuf::new(0),
                _ => AlignedBuf::for_overwrite(width),
            })
            .collect();
        if self.plan.is_none() {
            for (col, _) in cols[..k].iter_mut().zip(&direct).filter(|(_, d)| !**d) {
                col.fill(0);
            }
        }
        for (j, o) in old.into_iter().enumerate() {
            if let Some(w) = self.wanted.get(j).filter(|w| !w.is_empty()) {
                let at = (w.start - columns.start) as usize;
                cols[j][at..at + w.len()].copy_from_slice(&o.data);
            }
        }
        for (j, piece) in pieces.iter().enumerate() {
            if let (Some((range, src)), false) = (piece, direct[j]) {
                let at = (range.start - columns.start) as usize;
                cols[j][at..at + range.len()].copy_from_slice(&self.data[src.clone()]);
            }
        }
        if width > 0 {
            let (data_cols, parity_cols) = cols.split_at_mut(k);
            let inputs: Vec<&[u8]> = (0..k)
                .map(|j| match &pieces[j] {
                    Some((_, src)) if direct[j] => &self.data[src.clone()],
                    _ => &data_cols[j][..],
                })
                .collect();
            let mut outputs: Vec<&mut [u8]> = parity_cols.iter_mut().map(|c| &mut c[..]).collect();
            if codec.encode_sep(&inputs, &mut outputs).is_err() {
                return self.finish(Vec::new(), Err(Errno::EIO));
            }
        }
        self.stage = Stage::Writing;
        let mut actions = Vec::new();
        for part in 0..n as u32 {
            let Some(osd) = self.facts.as_ref().and_then(|f| f.members[part as usize]) else {
                continue;
            };
            let (offset, data, attr) = if (part as usize) < k {
                match &pieces[part as usize] {
                    // The client's data as it arrived: a view of the part's bytes goes out,
                    // copied only when they do not start at an aligned offset.
                    Some((range, src)) if direct[part as usize] => {
                        let mut buf = AlignedBuf::shared(&self.data);
                        buf.skip(src.start);
                        buf.set_len(src.len());
                        if !buf.is_aligned() {
                            buf = AlignedBuf::from_slice(&self.data[src.clone()]);
                        }
                        (range.start, buf, None)
                    }
                    // The new bytes sit in the part's column buffer: a view of them goes
                    // out, copied only when they do not start at an aligned offset.
                    Some((range, src)) => {
                        let mut buf =
                            std::mem::replace(&mut cols[part as usize], AlignedBuf::new(0));
                        buf.skip((range.start - columns.start) as usize);
                        buf.set_len(range.len());
                        if !buf.is_aligned() {
                            buf = AlignedBuf::from_slice(&self.data[src.clone()]);
                        }
                        (range.start, buf, None)
                    }
                    None => (0, AlignedBuf::new(0), None),
                }
            } else {
                (
                    columns.start,
                    std::mem::replace(&mut cols[part as usize], AlignedBuf::new(0)),
                    Some(std::mem::take(&mut bitmaps[part as usize])),
                )
            };
            self.pending.push(part);
            actions.push(Action::Write {
                part,
                osd,
                version: self.version,
                offset,
                data,
                attr,
            });
        }
        actions
    }

    fn written(&mut self) -> Vec<Action> {
        let stabilize_now = self.facts.as_ref().is_some_and(|f| f.stabilize_now);
        match self.failed {
            None if stabilize_now => {
                self.stage = Stage::Stabilizing;
                self.pending = self.holders.iter().map(|&(p, _)| p).collect();
                let stabilize = self.holders.iter().map(|&(part, osd)| Action::Stabilize {
                    part,
                    osd,
                    version: self.version,
                });
                let mut actions: Vec<Action> = stabilize.collect();
                if self.holders.len() == self.geo.total_parts() as usize {
                    // Every position holds the version durably: peering completes it
                    // whatever happens to the stabilize (see the module docs), so the
                    // client hears now and the lock waits for the stabilize.
                    self.replied = true;
                    let done = self.done_action(true);
                    actions.splice(0..0, [done, Action::Reply(Ok(self.version))]);
                }
                actions
            }
            None => {
                let done = self.done_action(false);
                self.finish(vec![done], Ok(self.version))
            }
            Some(e) if self.lost_peer => self.finish(vec![Action::Repeer], Err(e)),
            Some(e) if self.holders.is_empty() => self.finish(Vec::new(), Err(e)),
            Some(_) => {
                // Stores refused the version on some parts: take it back everywhere else,
                // so the stripe stays whole at the old version.
                self.stage = Stage::RollingBack;
                let to = self.facts.as_ref().map_or(0, |f| f.current);
                self.pending = self.holders.iter().map(|&(p, _)| p).collect();
                self.holders
                    .iter()
                    .map(|&(part, osd)| Action::Rollback {
                        part,
                        osd,
                        version: to,
                    })
                    .collect()
            }
        }
    }

    /// The columns the parity parts must be rewritten over, given each parity part's
    /// attribute (the code of the data parts' bitmaps) before and after: the touched
    /// columns, and every granule whose attribute bit the write clears. The store drops the
    /// bytes of a granule whose attribute bit a write clears outside its range, so such a
    /// granule must be written again. XOR codes bit by bit, so its bits change only inside
    /// the touched columns; a Reed-Solomon byte mixes 8 granules, so a changed data bit may
    /// clear bits of neighbouring granules. An overwrite of granules already written changes
    /// no bit and writes only its own columns.
    fn cleared_columns(&self, old: &[Vec<u8>], new: &[Vec<u8>]) -> Range<u32> {
        let gran = self.geo.granularity;
        let mut columns = self.columns.clone();
        for (o, n) in old.iter().zip(new) {
            for g in 0..self.geo.part_granules() {
                let bit = |b: &[u8]| b[(g / 8) as usize] >> (g % 8) & 1;
                if bit(o) == 1 && bit(n) == 0 {
                    let at = g * gran;
                    columns = if columns.is_empty() {
                        at..at + gran
                    } else {
                        columns.start.min(at)..columns.end.max(at + gran)
                    };
                }
            }
        }
        columns
    }

    fn done_action(&mut self, stable: bool) -> Action {
        let mut holders = std::mem::take(&mut self.holders);
        holders.sort_unstable();
        Action::Written {
            version: self.version,
            holders,
            stable,
        }
    }

    fn finish(&mut self, mut actions: Vec<Action>, reply: Result<u64, Errno>) -> Vec<Action> {
        self.stage = Stage::Done;
        actions.push(Action::Reply(reply));
        actions.push(Action::Unlock);
        actions
    }
}

/// The data parts' bitmaps (the first `k` of `bitmaps`) encoded into the parity parts'.
fn encode_bitmaps(codec: &Codec, bitmaps: &mut [Vec<u8>]) -> Result<(), super::EcError> {
    let mut refs: Vec<&mut [u8]> = bitmaps.iter_mut().map(Vec::as_mut_slice).collect();
    codec.encode(&mut refs)
}

/// The columns of `columns` that a part's new bytes `new` leave to read. `new` touches an
/// edge of the touched columns (a write covers whole parts between its first and last), so
/// the rest is one range; inside columns widened around it, all of them are read.
fn old_columns(columns: &Range<u32>, new: &Range<u32>) -> Range<u32> {
    if new.start <= columns.start && new.end >= columns.end {
        0..0
    } else if new.start <= columns.start {
        new.end..columns.end
    } else if new.end >= columns.end {
        columns.start..new.start
    } else {
        columns.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A part as one OSD stores it at the newest version: its bytes, the bitmap its reads
    /// return (a parity part's attribute) and, as the store keeps it, the allocation bitmap
    /// outside which it reads zeroes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Stored {
        data: Vec<u8>,
        bitmap: Vec<u8>,
        alloc: Vec<u8>,
        version: u64,
        stable: bool,
    }

    impl Stored {
        /// Bytes `range` as the store reads them: zeroes outside the allocation.
        fn read(&self, geo: &Geometry, range: Range<u32>) -> Vec<u8> {
            let gran = geo.granularity;
            (range.start..range.end)
                .map(|b| {
                    let g = b / gran;
                    let on = self.alloc[(g / 8) as usize] >> (g % 8) & 1 == 1;
                    if on {
                        self.data[b as usize]
                    } else {
                        0
                    }
                })
                .collect()
        }
    }

    /// A PG that is active and clean with `members`, this OSD at position 0.
    pub(crate) fn facts(members: Vec<Option<OsdNum>>, current: u64, stabilize_now: bool) -> Facts {
        Facts {
            active: true,
            degraded: false,
            recovery_waits: None,
            members,
            local: Some(0),
            current,
            purged_up_to: 0,
            stabilize_now,
        }
    }

    fn all_live(n: u32) -> Vec<Option<OsdNum>> {
        (1..=u64::from(n)).map(|o| Some(OsdNum(o))).collect()
    }

    /// Runs a write against `stored` (indexed by part; `None` parts are down), answering
    /// every sub-op successfully; returns the actions after the reads.
    fn run(
        geo: &Geometry,
        codec: &Codec,
        stored: &mut [Option<Stored>],
        offset: u64,
        data: Vec<u8>,
        stabilize_now: bool,
    ) -> Vec<Action> {
        let members = stored
            .iter()
            .enumerate()
            .map(|(i, s)| s.as_ref().map(|_| OsdNum(i as u64 + 1)))
            .collect();
        let current = stored
            .iter()
            .flatten()
            .map(|s| s.version)
            .max()
            .unwrap_or(0);
        let mut op = EcWriteOp::new(*geo, 0, offset, AlignedBuf::from_slice(&data));
        let mut actions = op.advance(codec, Event::Locked(facts(members, current, stabilize_now)));
        let mut log = Vec::new();
        while !actions.is_empty() {
            let mut next = Vec::new();
            for a in actions {
                let ev = match &a {
                    Action::Read {
                        tag, part, range, ..
                    } => {
                        let s = stored[*part as usize].as_ref().expect("read a live part");
                        Some(Event::Read {
                            tag: *tag,
                            result: Ok(PartData {
                                bitmap: s.bitmap.clone(),
                                data: s.read(geo, range.clone()),
                            }),
                        })
                    }
                    Action::Write {
                        part,
                        version,
                        offset,
                        data,
                        attr,
                        ..
                    } => {
                        // As the store does: data parts' bitmaps grow by the written range,
                        // parity parts answer reads with their attribute, and the allocation
                        // drops what the new attribute clears, then takes the written range.
                        let s = stored[*part as usize].as_mut().expect("write a live part");
                        let at = *offset as usize;
                        s.data[at..at + data.len()].copy_from_slice(data);
                        let ext = match attr {
                            Some(a) => a.clone(),
                            None => {
                                let mut b = s.bitmap.clone();
                                geo.mark(&mut b, *offset..*offset + data.len() as u32);
                                b
                            }
                        };
                        vitastor_blockstore::bitmap::next_allocation(
                            &mut s.alloc,
                            &s.bitmap,
                            &ext,
                            *offset,
                            data.len() as u32,
                            geo.granularity,
                        );
                        s.bitmap = ext;
                        s.version = *version;
                        s.stable = false;
                        Some(Event::Sub {
                            part: *part,
                            result: Ok(()),
                        })
                    }
                    Action::Stabilize { part, .. } => {
                        stored[*part as usize].as_mut().unwrap().stable = true;
                        Some(Event::Sub {
                            part: *part,
                            result: Ok(()),
                        })
                    }
                    _ => None,
                };
                log.push(a);
                if let Some(ev) = ev {
                    next.extend(op.advance(codec, ev));
                }
            }
            actions = next;
        }
        assert!(op.is_done());
        log
    }

    fn empty_stripe(geo: &Geometry) -> Vec<Option<Stored>> {
        (0..geo.total_parts())
            .map(|_| {
                Some(Stored {
                    data: vec![0; geo.block_size as usize],
                    bitmap: vec![0; geo.part_bitmap_bytes()],
                    alloc: vec![0; geo.part_bitmap_bytes()],
                    version: 0,
                    stable: true,
                })
            })
            .collect()
    }

    /// What a fresh full encode of the logical object `image` gives.
    fn fresh(
        geo: &Geometry,
        codec: &Codec,
        image: &[u8],
        bitmaps: &[Vec<u8>],
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let bs = geo.block_size as usize;
        let n = geo.total_parts() as usize;
        let mut data: Vec<Vec<u8>> = image.chunks(bs).map(<[u8]>::to_vec).collect();
        data.resize(n, vec![0; bs]);
        let mut refs: Vec<&mut [u8]> = data.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode(&mut refs).unwrap();
        let mut bm: Vec<Vec<u8>> = bitmaps.to_vec();
        bm.resize(n, vec![0; geo.part_bitmap_bytes()]);
        let mut refs: Vec<&mut [u8]> = bm.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode(&mut refs).unwrap();
        data.into_iter().zip(bm).collect()
    }

    /// The store drops a parity part's bytes in granules whose attribute bit a write clears
    /// outside its range: every parity write must cover each granule whose bit it clears.
    #[test]
    fn every_attribute_bit_a_parity_write_clears_is_inside_its_range() {
        for codec in [
            Codec::reed_solomon(2, 2).unwrap(),
            Codec::reed_solomon(2, 1).unwrap(),
        ] {
            let geo = Geometry::new(2, codec.parity_parts() as u32, 65536, 4096).unwrap();
            let mut stored = empty_stripe(&geo);
            for (i, off) in [
                (0u8, 4096u64),
                (1, 65536 + 8192),
                (2, 20480),
                (3, 65536 + 40960),
                (4, 0),
            ] {
                let before: Vec<Vec<u8>> =
                    stored.iter().flatten().map(|s| s.bitmap.clone()).collect();
                let log = run(&geo, &codec, &mut stored, off, vec![i + 1; 4096], true);
                for a in &log {
                    let Action::Write {
                        part,
                        offset,
                        data,
                        attr: Some(attr),
                        ..
                    } = a
                    else {
                        continue;
                    };
                    let old = &before[*part as usize];
                    for g in 0..geo.part_granules() {
                        let bit = |b: &[u8]| b[(g / 8) as usize] >> (g % 8) & 1;
                        let at = g * geo.granularity;
                        if bit(old) == 1 && bit(attr) == 0 {
                            assert!(
                                at >= *offset && at < *offset + data.len() as u32,
                                "write {i}: part {part} granule {g} clears its attribute bit outside {offset}+{}",
                                data.len()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_small_write_reads_the_other_data_part_and_writes_every_part() {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let codec = Codec::xor(2).unwrap();
        let mut stored = empty_stripe(&geo);
        for s in stored.iter_mut().flatten() {
            s.version = 3;
        }
        let log = run(&geo, &codec, &mut stored, 4096, vec![7; 4096], true);
        let reads: Vec<(u32, Range<u32>)> = log
            .iter()
            .filter_map(|a| match a {
                Action::Read {
                    part,
                    range,
                    version,
                    ..
                } => {
                    assert_eq!(*version, 3);
                    Some((*part, range.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(reads, [(0, 0..0), (1, 4096..8192)], "part 0: bitmap only");
        let writes: Vec<(u32, u32, usize)> = log
            .iter()
            .filter_map(|a| match a {
                Action::Write {
                    part,
                    offset,
                    data,
                    version,
                    ..
                } => {
                    assert_eq!(*version, 4);
                    Some((*part, *offset, data.len()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(writes, [(0, 4096, 4096), (1, 0, 0), (2, 4096, 4096)]);
        assert!(matches!(log.last(), Some(Action::Unlock)));
        assert!(log.contains(&Action::Reply(Ok(4))));
        assert!(stored.iter().flatten().all(|s| s.version == 4 && s.stable));
    }

    fn reads_of(log: &[Action]) -> Vec<(u32, Range<u32>)> {
        log.iter()
            .filter_map(|a| match a {
                Action::Read { part, range, .. } => Some((*part, range.clone())),
                _ => None,
            })
            .collect()
    }

    fn writes_of(log: &[Action]) -> Vec<(u32, u32, usize)> {
        log.iter()
            .filter_map(|a| match a {
                Action::Write {
                    part, offset, data, ..
                } => Some((*part, *offset, data.len())),
                _ => None,
            })
            .collect()
    }

    /// A 2+1 Reed-Solomon stripe of 64 KiB parts, every granule written (version 3).
    fn full_rs21() -> (Geometry, Codec, Vec<Option<Stored>>) {
        let geo = Geometry::new(2, 1, 65536, 4096).unwrap();
        let codec = Codec::reed_solomon(2, 1).unwrap();
        let mut stored = empty_stripe(&geo);
        let image = vec![0u8; geo.object_size() as usize];
        let full = vec![0xffu8; geo.part_bitmap_bytes()];
        let fresh = fresh(&geo, &codec, &image, &[full.clone(), full.clone()]);
        for (s, (data, bitmap)) in stored.iter_mut().flatten().zip(fresh) {
            *s = Stored {
                data,
                bitmap,
                alloc: full.clone(),
                version: 3,
                stable: true,
            };
        }
        (geo, codec, stored)
    }

    /// Overwriting granules already written changes no bitmap bit: the parity is rewritten
    /// over the written columns only, not over the 8 granules of their bitmap byte.
    #[test]
    fn an_overwrite_reads_and_writes_only_its_columns() {
        let (geo, codec, mut stored) = full_rs21();
        let log = run(&geo, &codec, &mut stored, 8192, vec![7; 4096], true);
        assert_eq!(reads_of(&log), [(0, 0..0), (1, 8192..12288)]);
        assert_eq!(
            writes_of(&log),
            [(0, 8192, 4096), (1, 0, 0), (2, 8192, 4096)]
        );
    }

    /// A first write into a granule may clear parity attribute bits of its neighbours: the
    /// write reads the wider columns in a second round and rewrites the parity over them.
    #[test]
    fn a_write_clearing_attribute_bits_outside_its_columns_reads_them_first() {
        let geo = Geometry::new(2, 1, 65536, 4096).unwrap();
        let codec = Codec::reed_solomon(2, 1).unwrap();
        let mut widened = 0;
        // Part 0 granules 0-3 written, then one granule of part 1's first bitmap byte.
        for g in 0..8u32 {
            let mut stored = empty_stripe(&geo);
            run(&geo, &codec, &mut stored, 0, vec![1; 16384], true);
            let before = stored[2].as_ref().unwrap().bitmap[0];
            let at = 65536 + u64::from(g) * 4096;
            let log = run(&geo, &codec, &mut stored, at, vec![2; 4096], true);
            let after = stored[2].as_ref().unwrap().bitmap[0];
            let cleared = before & !after;
            let reads = reads_of(&log);
            let own = g * 4096..(g + 1) * 4096;
            assert_eq!(reads[..2], [(0, own.clone()), (1, 0..0)], "first round");
            let parity = writes_of(&log)[2];
            if cleared & !(1 << g) == 0 {
                assert_eq!(reads.len(), 2, "granule {g}: nothing to widen");
                assert_eq!(parity, (2, own.start, 4096));
                continue;
            }
            widened += 1;
            let lo = cleared.trailing_zeros().min(g) * 4096;
            let hi = (8 - cleared.leading_zeros()).max(g + 1) * 4096;
            let left = old_columns(&(lo..hi), &own);
            assert_eq!(
                reads[2..],
                [(0, lo..hi), (1, left)],
                "granule {g}: second round"
            );
            assert_eq!(parity, (2, lo, (hi - lo) as usize), "granule {g}");
        }
        assert!(widened > 0, "some granule clears a neighbour's bit");
    }

    /// The new bytes of a data part go out as a view of its column buffer when aligned,
    /// as a copy when the granule is smaller than the alignment: the same bytes either way.
    #[test]
    fn a_data_part_write_carries_exactly_its_new_bytes() {
        for gran in [4096u32, 1024] {
            let geo = Geometry::new(2, 1, 16384, gran).unwrap();
            let codec = Codec::reed_solomon(2, 1).unwrap();
            let mut stored = empty_stripe(&geo);
            run(&geo, &codec, &mut stored, 0, vec![1; 32768], true);
            // Across the part edge: part 0's piece ends its (whole-part) columns.
            let new: Vec<u8> = (0..2 * gran).map(|i| i as u8 ^ 0x5a).collect();
            let at = u64::from(16384 - gran);
            let log = run(&geo, &codec, &mut stored, at, new.clone(), true);
            let sent: Vec<(u32, u32, Vec<u8>)> = log
                .iter()
                .filter_map(|a| match a {
                    Action::Write {
                        part, offset, data, ..
                    } if *part < 2 => Some((*part, *offset, data.to_vec())),
                    _ => None,
                })
                .collect();
            let (head, tail) = new.split_at(gran as usize);
            assert!(
                sent == [(0, 16384 - gran, head.to_vec()), (1, 0, tail.to_vec())],
                "granularity {gran}"
            );
        }
    }

    /// A write covering every data part whole needs nothing old: no read at all.
    #[test]
    fn a_full_stripe_write_reads_nothing() {
        let (geo, codec, mut stored) = full_rs21();
        let data: Vec<u8> = (0..geo.object_size()).map(|i| i as u8).collect();
        let log = run(&geo, &codec, &mut stored, 0, data, true);
        assert_eq!(reads_of(&log), []);
        assert_eq!(
            writes_of(&log),
            [(0, 0, 65536), (1, 0, 65536), (2, 0, 65536)]
        );
    }

    /// A write covering every data part whole codes and sends the client's bytes where they
    /// arrived: each data part's write is a view of the client's buffer, not a copy.
    #[test]
    fn a_full_stripe_write_sends_the_clients_bytes_as_they_arrived() {
        let (geo, codec, _) = full_rs21();
        let bytes: Vec<u8> = (0..geo.object_size()).map(|i| (i * 7) as u8).collect();
        let data = AlignedBuf::from_slice(&bytes);
        let at = data.as_ptr() as usize;
        let mut op = EcWriteOp::new(geo, 0, 0, data);
        let a = op.advance(&codec, Event::Locked(facts(all_live(3), 3, true)));
        let views: Vec<(u32, usize, usize)> = a
            .iter()
            .filter_map(|a| match a {
                Action::Write { part, data, .. } if *part < 2 => {
                    Some((*part, data.as_ptr() as usize - at, data.len()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(views, [(0, 0, 65536), (1, 65536, 65536)]);
    }

    /// With every position written, the client hears before the stabilize, and the lock is
    /// held until the stabilize ends; a write missing a position stabilizes first.
    #[test]
    fn a_write_on_every_position_replies_before_its_stabilize() {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let codec = Codec::xor(2).unwrap();
        let written = |op: &mut EcWriteOp, parts: &[u32]| {
            let mut out = Vec::new();
            for &part in parts {
                out.extend(op.advance(
                    &codec,
                    Event::Sub {
                        part,
                        result: Ok(()),
                    },
                ));
            }
            out
        };
        let mut op = EcWriteOp::new(geo, 0, 0, AlignedBuf::from_slice(&[1; 4096]));
        assert_eq!(
            op.advance(&codec, Event::Locked(facts(all_live(3), 0, true)))
                .len(),
            3
        );
        let a = written(&mut op, &[0, 1, 2]);
        assert_eq!(
            a[..2],
            [
                Action::Written {
                    version: 1,
                    holders: vec![(0, OsdNum(1)), (1, OsdNum(2)), (2, OsdNum(3))],
                    stable: true
                },
                Action::Reply(Ok(1)),
            ]
        );
        assert!(a[2..].iter().all(|a| matches!(a, Action::Stabilize { .. })) && a.len() == 5);
        assert!(op.replied() && !op.is_done());
        assert!(written(&mut op, &[2, 0]).is_empty(), "the lock waits");
        assert_eq!(written(&mut op, &[1]), [Action::Unlock]);
        assert!(op.is_done());

        // A stabilize lost after the reply: peering settles the object, no second reply.
        let mut op = EcWriteOp::new(geo, 0, 0, AlignedBuf::from_slice(&[1; 4096]));
        op.advance(&codec, Event::Locked(facts(all_live(3), 0, true)));
        written(&mut op, &[0, 1, 2]);
        written(&mut op, &[0, 1]);
        let a = op.advance(
            &codec,
            Event::Sub {
                part: 2,
                result: Err(Errno::EPIPE),
            },
        );
        assert_eq!(a, [Action::Repeer, Action::Unlock]);

        // A position down: the version is on k parts only, the reply waits.
        let mut op = EcWriteOp::new(geo, 0, 0, AlignedBuf::from_slice(&[1; 4096]));
        let members = vec![Some(OsdNum(1)), None, Some(OsdNum(3))];
        assert_eq!(
            op.advance(&codec, Event::Locked(facts(members, 0, true)))
                .len(),
            2
        );
        let a = written(&mut op, &[0, 2]);
        assert!(a.iter().all(|a| matches!(a, Action::Stabilize { .. })) && a.len() == 2);
        let a = written(&mut op, &[0, 2]);
        assert!(matches!(
            a[..],
            [
                Action::Written { stable: true, .. },
                Action::Reply(Ok(1)),
                Action::Unlock
            ]
        ));
    }

    #[test]
    fn a_write_across_a_part_edge_reads_only_the_columns_it_leaves() {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let codec = Codec::reed_solomon(2, 1).unwrap();
        let mut stored = empty_stripe(&geo);
        for s in stored.iter_mut().flatten() {
            s.version = 1;
        }
        let log = run(&geo, &codec, &mut stored, 12288, vec![9; 8192], true);
        let reads: Vec<(u32, Range<u32>)> = log
            .iter()
            .filter_map(|a| match a {
                Action::Read { part, range, .. } => Some((*part, range.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(reads, [(0, 0..12288), (1, 4096..16384)]);
    }

    #[test]
    fn a_new_object_reads_nothing_and_without_immediate_commit_is_left_unstable() {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let codec = Codec::reed_solomon(2, 1).unwrap();
        let mut stored = empty_stripe(&geo);
        let log = run(&geo, &codec, &mut stored, 0, vec![1; 8192], false);
        assert!(!log
            .iter()
            .any(|a| matches!(a, Action::Read { .. } | Action::Stabilize { .. })));
        assert!(log.contains(&Action::Written {
            version: 1,
            holders: vec![(0, OsdNum(1)), (1, OsdNum(2)), (2, OsdNum(3))],
            stable: false
        }));
        assert!(stored.iter().flatten().all(|s| s.version == 1 && !s.stable));
    }

    #[test]
    fn a_store_refusal_rolls_the_version_back_on_the_parts_that_took_it() {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let codec = Codec::xor(2).unwrap();
        let mut op = EcWriteOp::new(geo, 0, 0, AlignedBuf::from_slice(&[1; 4096]));
        let a = op.advance(&codec, Event::Locked(facts(all_live(3), 0, true)));
        assert_eq!(a.len(), 3);
        assert!(op
            .advance(
                &codec,
                Event::Sub {
                    part: 0,
                    result: Ok(())
                }
            )
            .is_empty());
        assert!(op
            .advance(
                &codec,
                Event::Sub {
                    part: 1,
                    result: Err(Errno::ENOSPC)
                }
            )
            .is_empty());
        let a = op.advance(
            &codec,
            Event::Sub {
                part: 2,
                result: Ok(()),
            },
        );
        assert_eq!(
            a,
            [
                Action::Rollback {
                    part: 0,
                    osd: OsdNum(1),
                    version: 0
                },
                Action::Rollback {
                    part: 2,
                    osd: OsdNum(3),
                    version: 0
                },
            ]
        );
        assert!(op
            .advance(
                &codec,
                Event::Sub {
                    part: 2,
                    result: Ok(())
                }
            )
            .is_empty());
        assert_eq!(
            op.advance(
                &codec,
                Event::Sub {
                    part: 0,
                    result: Ok(())
                }
            ),
            [Action::Reply(Err(Errno::ENOSPC)), Action::Unlock]
        );
        assert!(op.is_done());
    }

    #[test]
    fn a_peer_lost_mid_write_hands_the_object_to_peering() {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let codec = Codec::xor(2).unwrap();
        let mut op = EcWriteOp::new(geo, 0, 0, AlignedBuf::from_slice(&[1; 4096]));
        op.advance(&codec, Event::Locked(facts(all_live(3), 0, true)));
        op.advance(
            &codec,
            Event::Sub {
                part: 0,
                result: Ok(()),
            },
        );
        op.advance(
            &codec,
            Event::Sub {
                part: 1,
                result: Err(Errno::EPIPE),
            },
        );
        assert_eq!(
            op.advance(
                &codec,
                Event::Sub {
                    part: 2,
                    result: Ok(())
                }
            ),
            [
                Action::Repeer,
                Action::Reply(Err(Errno::EPIPE)),
                Action::Unlock
            ]
        );
    }

    #[test]
    fn refusals_before_any_write() {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let codec = Codec::xor(2).unwrap();
        let mut f = facts(all_live(3), 4, true);
        f.active = false;
        let mut op = EcWriteOp::new(geo, 0, 0, AlignedBuf::from_slice(&[1; 4096]));
        assert_eq!(
            op.advance(&codec, Event::Locked(f)),
            [Action::Reply(Err(Errno::EPIPE)), Action::Unlock]
        );
        let mut op = EcWriteOp::new(geo, 3, 0, AlignedBuf::from_slice(&[1; 4096]));
        assert_eq!(
            op.advance(&codec, Event::Locked(facts(all_live(3), 4, true))),
            [Action::Reply(Err(Errno::EINTR)), Action::Unlock]
        );
        let mut op = EcWriteOp::new(geo, 0, 0, AlignedBuf::from_slice(&[1; 4096]));
        assert_eq!(
            op.advance(
                &codec,
                Event::Locked(facts(vec![Some(OsdNum(1)), None, None], 4, true))
            ),
            [Action::Reply(Err(Errno::EPIPE)), Action::Unlock],
            "fewer live parts than data parts"
        );
        let mut f = facts(all_live(3), 4, true);
        f.degraded = true;
        let mut op = EcWriteOp::new(geo, 0, 0, AlignedBuf::from_slice(&[1; 4096]));
        assert_eq!(op.advance(&codec, Event::Locked(f)), [Action::RecoverFirst]);
    }

    #[test]
    fn a_failed_read_writes_nothing() {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let codec = Codec::xor(2).unwrap();
        let mut op = EcWriteOp::new(geo, 0, 0, AlignedBuf::from_slice(&[1; 4096]));
        let a = op.advance(&codec, Event::Locked(facts(all_live(3), 2, true)));
        assert_eq!(a.len(), 2);
        assert!(op
            .advance(
                &codec,
                Event::Read {
                    tag: 0,
                    result: Err(Errno::EIO)
                }
            )
            .is_empty());
        let ok = PartData {
            bitmap: vec![0; 1],
            data: vec![0; 4096],
        };
        assert_eq!(
            op.advance(
                &codec,
                Event::Read {
                    tag: 1,
                    result: Ok(ok)
                }
            ),
            [Action::Reply(Err(Errno::EIO)), Action::Unlock]
        );
    }

    proptest! {
        /// A sequence of writes (read-modify-write, some with a part down) leaves every
        /// live part equal to a fresh encode of the object as written.
        #[test]
        fn rmw_equals_a_full_re_encode(
            rs in any::<bool>(),
            writes in proptest::collection::vec((0u64..32, 1u64..12, any::<u8>(), proptest::option::of(0u32..6)), 1..8),
        ) {
            let (geo, codec) = if rs {
                (Geometry::new(4, 2, 16384, 4096).unwrap(), Codec::reed_solomon(4, 2).unwrap())
            } else {
                (Geometry::new(3, 1, 16384, 4096).unwrap(), Codec::xor(3).unwrap())
            };
            let n = geo.total_parts();
            let gran = 4096u64;
            let mut stored = empty_stripe(&geo);
            let mut image = vec![0u8; geo.object_size() as usize];
            let mut bitmaps = vec![vec![0u8; geo.part_bitmap_bytes()]; geo.data_parts as usize];
            for (off, len, fill, down) in writes {
                let off = (off * gran) % geo.object_size();
                let len = (len * gran).min(geo.object_size() - off);
                let data: Vec<u8> = (0..len).map(|i| fill ^ (i as u8)).collect();
                image[off as usize..(off + len) as usize].copy_from_slice(&data);
                for p in geo.data_ranges(off, len) {
                    geo.mark(&mut bitmaps[p.part as usize], p.range);
                }
                // A part down during this write: it misses the version, then is recovered
                // (rebuilt from a fresh encode) before the next one.
                let mut view = stored.clone();
                if let Some(d) = down {
                    view[(d % n) as usize] = None;
                }
                run(&geo, &codec, &mut view, off, data, true);
                let expect = fresh(&geo, &codec, &image, &bitmaps);
                for (p, s) in view.iter().enumerate() {
                    if let Some(s) = s {
                        prop_assert_eq!(&s.read(&geo, 0..geo.block_size), &expect[p].0, "part {} data", p);
                        prop_assert_eq!(&s.bitmap, &expect[p].1, "part {} bitmap", p);
                    }
                }
                let version = view.iter().flatten().map(|s| s.version).max().unwrap();
                // The part that was down is recovered: a data part allocated as its bitmap, a
                // parity part whole.
                let full = vec![0xff; geo.part_bitmap_bytes()];
                stored = expect
                    .into_iter()
                    .enumerate()
                    .map(|(p, (data, bitmap))| {
                        let alloc = match &view[p] {
                            Some(s) => s.alloc.clone(),
                            None if p < geo.data_parts as usize => bitmap.clone(),
                            None => full.clone(),
                        };
                        Some(Stored { data, bitmap, alloc, version, stable: true })
                    })
                    .collect();
            }
        }
    }
}
