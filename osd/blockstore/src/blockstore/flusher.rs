//! The flusher and journal trimming: moving stable journaled data into place, then metadata,
//! then freeing journal space.
//!
//! A flush job writes data, fsyncs, writes the new metadata entry, fsyncs, clears the old
//! one, fsyncs, and only then frees blocks and lets the journal start move past the flushed
//! entries (the new start itself durable before its space is reused). It must never be on a
//! client operation's path: without journal pressure it works in batched rounds so that
//! client writes do not each pay for its fsyncs, and it never holds up a read.

use super::*;

impl<E: IoEngine> Blockstore<E> {
    pub(super) fn queue_flush(&mut self, oid: ObjectId) {
        if self.flush_queued.insert(oid) {
            self.flush_queue.push_back(oid);
        }
    }

    /// How many flush jobs may run now. Without journal pressure the flusher works in rounds
    /// that start once `flusher_batch` objects are flushable, so that many objects share each
    /// data and metadata fsync instead of every client write paying for two more.
    fn flusher_limit(&mut self) -> usize {
        if self.journal_pressure() || self.force_flush {
            return self.cfg.flusher_count as usize;
        }
        // A round flushes the objects queued when it started, all at once; objects queued
        // meanwhile wait for the next round (else every write would start a lone flush).
        let busy_jobs = self.jobs.iter().filter(|j| j.is_some()).count();
        if self.flush_queue.is_empty() {
            self.round_left = 0;
        }
        if self.round_left == 0
            && busy_jobs == 0
            && self.flush_queue.len() >= self.cfg.flusher_batch as usize
        {
            self.round_left = self.flush_queue.len();
        }
        busy_jobs
            + self.round_left.min(
                self.cfg.flusher_count as usize - busy_jobs.min(self.cfg.flusher_count as usize),
            )
    }

    /// Writes are waiting for room, or the journal is more than half full.
    fn journal_pressure(&self) -> bool {
        self.waiting_space || self.journal.free_bytes() < self.journal.capacity() / 2
    }

    /// Without journal pressure the flusher works in the background: it keeps at most one
    /// device I/O of its own in flight (a write or its fsync), so that a client read, arriving
    /// at any moment, queues behind one background I/O at most, never behind a round's worth
    /// of them. Its rounds still share their fsyncs. Under pressure writes wait for the room
    /// it makes, and it runs at full width.
    fn flusher_in_background(&self) -> bool {
        !self.journal_pressure() && !self.force_flush
    }

    /// Whether the flusher may queue device I/O now.
    fn flusher_may_push(&self, background: bool) -> bool {
        !background || (self.flush_io == 0 && !self.fsyncs.any_in_flight())
    }

    pub(super) fn run_flusher(&mut self) -> bool {
        let mut progress = false;
        let background = self.flusher_in_background();
        let limit = self.flusher_limit();
        let mut active = self.jobs.iter().filter(|j| j.is_some()).count();
        let mut requeue = std::mem::take(&mut self.flush_requeue);
        while active < limit && self.flusher_may_push(background) {
            let Some(oid) = self.flush_queue.pop_front() else {
                break;
            };
            self.flush_queued.remove(&oid);
            if self.flushing.contains(&oid) {
                requeue.push(oid);
                continue;
            }
            let Some(upto) = self.index.flushable_upto(oid) else {
                continue;
            };
            let slot = self.jobs.iter().position(|j| j.is_none()).unwrap();
            let Some(job) = self.plan_flush(slot, oid, upto) else {
                requeue.push(oid);
                break;
            };
            self.jobs[slot] = Some(job);
            self.flushing.insert(oid);
            self.round_left = self.round_left.saturating_sub(1);
            active += 1;
            progress = true;
        }
        for oid in requeue.drain(..) {
            self.queue_flush(oid);
        }
        self.flush_requeue = requeue;
        // Two passes: a job that enters a metadata phase in the first writes in the second,
        // with the jobs that entered it beside it (see `advance_flush`).
        for _ in 0..2 {
            for slot in 0..self.jobs.len() {
                if self.jobs[slot].is_some() && self.flusher_may_push(background) {
                    progress |= self.advance_flush(slot);
                }
            }
        }
        progress
    }

    /// Decide what flushing `oid` up to `upto` writes, and submit its data writes. `None` when
    /// it needs a data block and none is free.
    fn plan_flush(&mut self, slot: usize, oid: ObjectId, upto: u64) -> Option<FlushJob> {
        let gran = self.layout.bitmap_granularity;
        let clean = self.index.clean.get(&oid).copied();
        let entries: Vec<(u64, Dirty)> = self
            .index
            .dirty_of(oid)
            .take_while(|(v, _)| v.version <= upto)
            .map(|(v, d)| (v.version, d.clone()))
            .collect();
        // The newest redirect write or delete is the base; older ones are superseded.
        let base = entries
            .iter()
            .rposition(|(_, d)| matches!(d.kind, DirtyKind::Big { .. } | DirtyKind::Delete));
        let mut superseded = Vec::new();
        for (i, (_, d)) in entries.iter().enumerate() {
            if let DirtyKind::Big { block } = d.kind {
                if Some(i) != base {
                    superseded.push(block);
                }
            }
        }
        let from = base.map(|i| i + 1).unwrap_or(0);
        let has_small = entries[from..]
            .iter()
            .any(|(_, d)| matches!(d.kind, DirtyKind::Small { .. }));
        let target = match base.map(|i| entries[i].1.kind) {
            Some(DirtyKind::Big { block }) => Some(block),
            // Small writes with nothing under them: their base was an unsynced redirect write
            // lost in a crash. They get a block of their own.
            // After a deletion (or with nothing at all below) only journaled writes remain;
            // they can reuse the old block, whose other granules the rebuilt bitmap hides.
            Some(DirtyKind::Delete) | None if has_small => match clean {
                Some(c) => Some(c.block),
                None => match self.alloc.alloc() {
                    Some(b) => Some(b),
                    None => return None,
                },
            },
            Some(DirtyKind::Delete) => None,
            _ => clean.map(|c| c.block),
        };
        // The allocation bitmap is rebuilt from what is really there: base plus journaled
        // ranges, minus what their external bitmaps clear (a version's recorded allocation
        // may include a base that a crash took away). The external bitmap is the newest
        // version's, as written.
        let zeroes = || Bits::zeroed(self.index.bitmap_bytes);
        let (mut bitmap, mut attr) = match base.map(|i| &entries[i].1) {
            Some(d) if matches!(d.kind, DirtyKind::Big { .. }) => {
                (d.bitmap.clone(), d.attr.clone())
            }
            Some(_) => (zeroes(), zeroes()),
            None => match clean {
                Some(c) => (
                    Bits::from(self.index.clean_bitmap(c.block)),
                    Bits::from(self.index.clean_attr(c.block)),
                ),
                None => (zeroes(), zeroes()),
            },
        };
        for (_, d) in &entries[from..] {
            next_allocation(&mut bitmap, &attr, &d.attr, d.offset, d.len, gran);
            attr.copy_from_slice(&d.attr);
        }
        if matches!(base.map(|i| entries[i].1.kind), Some(DirtyKind::Delete)) && !has_small {
            bitmap.fill(0);
        }
        let mut job = FlushJob {
            oid,
            upto,
            target,
            old: clean.map(|c| c.block),
            superseded,
            bitmap,
            attr,
            st: FlushSt::Data,
            pending: 0,
            meta: Vec::new(),
            err: 0,
        };
        // Journaled data newer than the base goes into the target block; per granule, only
        // the newest version's bytes.
        if let Some(tb) = target {
            let ng = (self.layout.block_size / gran) as usize;
            let mut src = std::mem::take(&mut self.flush_src);
            src.clear();
            src.resize(ng, None);
            for (_, d) in entries[from..].iter().rev() {
                if let DirtyKind::Small { loc } = d.kind {
                    for g in d.offset / gran..(d.offset + d.len) / gran {
                        if src[g as usize].is_none() {
                            src[g as usize] = Some(loc + (g * gran - d.offset) as u64);
                        }
                    }
                }
            }
            let mut g = 0usize;
            while g < ng {
                let Some(start_loc) = src[g] else {
                    g += 1;
                    continue;
                };
                let mut n = 1usize;
                while g + n < ng && src[g + n] == Some(start_loc + (n as u64) * gran as u64) {
                    n += 1;
                }
                let ptr = self.journal.mirror.as_mut_ptr();
                // SAFETY: journal data of unflushed entries is never rewritten before the
                // journal is trimmed past them, which waits for this flush to finish.
                unsafe {
                    self.engine.push(IoReq {
                        dev: self.devs.data,
                        kind: IoKind::Write,
                        offset: self.layout.block_offset(tb) + (g as u64) * gran as u64,
                        ptr: ptr.add(start_loc as usize),
                        len: n * gran as usize,
                        token: tok(T_FLUSH, (slot as u64) << 40),
                    });
                }
                self.flush_io += 1;
                job.pending += 1;
                g += n;
            }
            self.flush_src = src;
        }
        let entry = target.map(|_| MetaEntry {
            inode: oid.inode,
            stripe: oid.stripe,
            version: upto,
            bitmap: job.bitmap.to_vec(),
            attr: job.attr.to_vec(),
        });
        if let Some(tb) = target {
            job.meta.push(MetaUpdate {
                block: tb,
                entry,
                mblock: self.layout.meta_pos(tb).0,
                buf: None,
                state: 0,
            });
        }
        if let Some(ob) = job.old {
            if Some(ob) != target {
                job.meta.push(MetaUpdate {
                    block: ob,
                    entry: None,
                    mblock: self.layout.meta_pos(ob).0,
                    buf: None,
                    state: 0,
                });
            }
        }
        Some(job)
    }

    fn advance_flush(&mut self, slot: usize) -> bool {
        let mut job = self.jobs[slot].take().unwrap();
        let mut progress = false;
        let finished = loop {
            match job.st {
                FlushSt::Data => {
                    if job.pending > 0 {
                        break false;
                    }
                    let needs_sync = job.meta.iter().any(|m| m.entry.is_some())
                        && job.target != job.old
                        || job.meta.iter().any(|m| m.entry.is_some());
                    job.st = FlushSt::DataFsync(if needs_sync {
                        self.fsyncs.ticket_background(Area::Data)
                    } else {
                        0
                    });
                    progress = true;
                }
                FlushSt::DataFsync(t) => {
                    if !self.fsyncs.done(Area::Data, t) {
                        break false;
                    }
                    // Its metadata writes start on the flusher's next pass, once the other
                    // jobs of the round that waited for the same fsync are in this phase too
                    // and can ride on the same block writes.
                    job.st = FlushSt::Meta(0);
                    progress = true;
                    if job.meta.iter().any(|m| m.entry.is_some()) {
                        break false;
                    }
                }
                FlushSt::Meta(phase) => {
                    if !self.advance_meta_writes(slot, &mut job, phase) {
                        break false;
                    }
                    let any = job.meta.iter().any(|m| m.entry.is_some() == (phase == 0));
                    job.st = FlushSt::MetaFsync(
                        phase,
                        if any {
                            self.fsyncs.ticket_background(Area::Meta)
                        } else {
                            0
                        },
                    );
                    progress = true;
                }
                FlushSt::MetaFsync(phase, t) => {
                    if !self.fsyncs.done(Area::Meta, t) {
                        break false;
                    }
                    if phase == 1 {
                        break true;
                    }
                    job.st = FlushSt::Meta(1);
                    progress = true;
                    if job.meta.iter().any(|m| m.entry.is_none()) {
                        break false;
                    }
                }
            }
        };
        if finished {
            self.complete_flush(job);
            progress = true;
        } else {
            self.jobs[slot] = Some(job);
        }
        progress
    }

    /// Write the job's metadata blocks, one writer per block at a time. `true` when all are
    /// written.
    fn advance_meta_writes(&mut self, slot: usize, job: &mut FlushJob, phase: u8) -> bool {
        let mbs = self.layout.meta_block_size as usize;
        let esz = self.layout.meta_entry_size();
        let mut all_done = true;
        for i in 0..job.meta.len() {
            if job.meta[i].entry.is_some() != (phase == 0) {
                continue;
            }
            let mblock = job.meta[i].mblock;
            match job.meta[i].state {
                0 => {
                    all_done = false;
                    if self.meta_busy.contains(&mblock) {
                        continue;
                    }
                    self.meta_busy.insert(mblock);
                    // Filled whole below (from the in-memory image or by a read).
                    let mut buf = self.meta_bufs.pop().unwrap_or_else(|| AlignedBuf::new(mbs));
                    if let Some(img) = &self.meta_image {
                        buf.copy_from_slice(
                            &img[mblock as usize * mbs..(mblock as usize + 1) * mbs],
                        );
                        job.meta[i].state = 4;
                    } else {
                        job.meta[i].state = 1;
                        self.push_meta_io(IoKind::Read, slot, mblock, &mut buf);
                    }
                    job.meta[i].buf = Some(buf);
                    if job.meta[i].state == 4 {
                        self.patch_and_write(slot, job, i, mbs, esz);
                    }
                }
                4 => {
                    all_done = false;
                    self.patch_and_write(slot, job, i, mbs, esz);
                }
                3 => {}
                _ => all_done = false,
            }
        }
        all_done
    }

    fn patch_and_write(
        &mut self,
        slot: usize,
        job: &mut FlushJob,
        i: usize,
        mbs: usize,
        esz: usize,
    ) {
        // Updates of the same job to the same block go in one write, and so do those of other
        // jobs waiting to write this block in the same phase (adjacent objects of one round
        // share metadata blocks): they ride on this write, done when it is. Each job's own
        // order holds: a job is in its clearing phase only once its new entry is durable.
        let mblock = job.meta[i].mblock;
        let setting = job.meta[i].entry.is_some();
        let phase = if setting { 0 } else { 1 };
        let mut buf = job.meta[i].buf.take().unwrap();
        for m in job.meta.iter() {
            if m.mblock != mblock || m.entry.is_some() != setting {
                continue;
            }
            let (_, off) = self.layout.meta_pos(m.block);
            encode_meta_update(&mut buf[off..off + esz], m);
        }
        for (other, j) in self.jobs.iter_mut().enumerate() {
            let Some(j) = j.as_mut() else { continue };
            if !matches!(j.st, FlushSt::Meta(p) if p == phase) {
                continue;
            }
            let mut rides = false;
            for m in j.meta.iter_mut() {
                if m.mblock == mblock && m.entry.is_some() == setting && m.state == 0 {
                    let (_, off) = self.layout.meta_pos(m.block);
                    encode_meta_update(&mut buf[off..off + esz], m);
                    m.state = 5;
                    rides = true;
                }
            }
            if rides {
                self.meta_riders.push((mblock, other));
            }
        }
        if let Some(img) = self.meta_image.as_mut() {
            img[mblock as usize * mbs..(mblock as usize + 1) * mbs].copy_from_slice(&buf);
        }
        for j in 0..job.meta.len() {
            if j != i && job.meta[j].mblock == mblock && job.meta[j].entry.is_some() == setting {
                job.meta[j].state = 3;
            }
        }
        job.meta[i].state = 2;
        self.push_meta_io(IoKind::Write, slot, mblock, &mut buf);
        job.meta[i].buf = Some(buf);
    }

    /// A write of metadata block `mblock` completed (`res`): the updates of other jobs that
    /// rode on it are done too.
    pub(super) fn meta_block_written(&mut self, mblock: u64, res: i32) {
        let mut i = 0;
        while i < self.meta_riders.len() {
            let (b, slot) = self.meta_riders[i];
            if b != mblock {
                i += 1;
                continue;
            }
            self.meta_riders.swap_remove(i);
            if let Some(job) = self.jobs[slot].as_mut() {
                for m in job.meta.iter_mut() {
                    if m.mblock == mblock && m.state == 5 {
                        m.state = 3;
                    }
                }
                if res < 0 {
                    job.err = res;
                }
            }
        }
    }

    /// Read or write one metadata block for flush job `slot`. The buffer must stay in the job
    /// (moving the `AlignedBuf` does not move its heap memory) until the I/O completes.
    fn push_meta_io(&mut self, kind: IoKind, slot: usize, mblock: u64, buf: &mut AlignedBuf) {
        let mbs = self.layout.meta_block_size as u64;
        // SAFETY: the caller keeps the buffer alive in the flush job until the completion.
        unsafe {
            self.engine.push(IoReq {
                dev: self.devs.meta,
                kind,
                offset: self.layout.meta.offset + mblock * mbs,
                ptr: buf.as_mut_ptr(),
                len: mbs as usize,
                token: tok(T_META, (slot as u64) << 40 | mblock),
            });
        }
        self.flush_io += 1;
    }

    fn complete_flush(&mut self, mut job: FlushJob) {
        self.flushing.remove(&job.oid);
        // Every metadata I/O of the job is done: its block buffers serve later jobs.
        for m in job.meta.iter_mut() {
            if let Some(b) = m.buf.take() {
                if self.meta_bufs.len() < self.jobs.len() * 2 {
                    self.meta_bufs.push(b);
                }
            }
        }
        if job.err < 0 {
            return;
        }
        match job.target {
            Some(tb) => {
                self.index.clean.insert(
                    job.oid,
                    Clean {
                        version: job.upto,
                        block: tb,
                    },
                );
                self.index.set_clean_bitmap(tb, &job.bitmap, &job.attr);
            }
            None => {
                self.index.clean.remove(&job.oid);
            }
        }
        let keys: Vec<ObjVerId> = self
            .index
            .dirty_of(job.oid)
            .take_while(|(v, _)| v.version <= job.upto)
            .map(|(v, _)| *v)
            .collect();
        let mut last_sector = 0;
        for k in keys {
            let d = self.index.dirty.remove(&k).unwrap();
            last_sector = last_sector.max(d.sector.unwrap_or(0));
            self.release_dirty(&d);
        }
        let mut freed: Vec<u64> = job.superseded;
        if let Some(ob) = job.old {
            if Some(ob) != job.target {
                freed.push(ob);
            }
        }
        if job.target.is_none() {
            self.tombstones.insert(job.oid, (job.upto, last_sector));
            for b in freed {
                self.free_after_trim.push_back((last_sector, b));
            }
        } else {
            self.tombstones.remove(&job.oid);
            for b in freed {
                self.defer_free(b);
            }
        }
        self.stats.flushed += 1;
        if self.index.flushable_upto(job.oid).is_some() {
            self.queue_flush(job.oid);
        }
    }

    // ---------------------------------------------------------------- trimming

    pub(super) fn run_trim(&mut self) -> bool {
        match self.trim {
            TrimSt::Idle => {
                // Each trim costs a header write and an fsync: do it when room is short or when
                // it frees a quarter of the journal at once.
                if !self.journal_pressure()
                    && !self.force_flush
                    && self.journal.trimmable_bytes() < self.journal.capacity() / 4
                {
                    return false;
                }
                let Some((n, start, seq)) = self.journal.trim_target() else {
                    return false;
                };
                let h = JournalHeader {
                    uuid: self.layout.uuid,
                    start,
                    start_seq: seq,
                    epoch: self.journal.epoch,
                };
                self.header_buf[..HEADER_BYTES].copy_from_slice(&h.encode());
                let ptr = self.header_buf.as_mut_ptr();
                // SAFETY: the header buffer is only rewritten when no header write is in flight.
                unsafe {
                    self.engine.push(IoReq {
                        dev: self.devs.journal,
                        kind: IoKind::Write,
                        offset: self.layout.journal.offset,
                        ptr,
                        len: self.journal.block_size() as usize,
                        token: tok(T_HEADER, 0),
                    });
                }
                self.trim = TrimSt::Writing { n };
                true
            }
            TrimSt::Writing { .. } => false,
            TrimSt::Fsync { n, ticket } => {
                if !self.fsyncs.done(Area::Journal, ticket) {
                    return false;
                }
                self.journal.trimmed(n);
                self.stats.trims += 1;
                let base = self.journal.sector_base();
                while let Some(&(sector, block)) = self.free_after_trim.front() {
                    if sector >= base {
                        break;
                    }
                    self.free_after_trim.pop_front();
                    self.defer_free(block);
                }
                self.tombstones.retain(|_, &mut (_, sector)| sector >= base);
                self.trim = TrimSt::Idle;
                true
            }
        }
    }
}

/// Write one metadata update into its slot of a metadata block.
fn encode_meta_update(slot_bytes: &mut [u8], m: &MetaUpdate) {
    match &m.entry {
        Some(e) => encode_meta_entry(slot_bytes, m.block, e),
        None => slot_bytes.fill(0),
    }
}
