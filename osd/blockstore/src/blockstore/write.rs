//! Writes and deletions: the FIFO that assigns versions, the journal entry (with the data of
//! a small write, joined with the data of adjacent small writes of the same loop turn into one
//! device write) or the redirect to a fresh data block, and the state machine that
//! acknowledges a write once it is as durable as `immediate_commit` demands.
//!
//! It must never acknowledge a write before every journal entry up to its own has reached the
//! device (and an fsync after that, when it must be durable), never journal a redirect
//! write's commit record (or, when data needs no fsync, its only entry) before its data is
//! durable, and never journal a record of an object behind that object's redirect write
//! whose entry is still to come.

use super::*;

impl<E: IoEngine> Blockstore<E> {
    /// Queue a write or deletion behind the FIFO (versions are assigned in that order).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue_write(
        &mut self,
        id: OpId,
        ov: ObjVerId,
        offset: u32,
        data: AlignedBuf,
        bitmap: Option<Vec<u8>>,
        stable: bool,
        delete: bool,
    ) {
        let body = Body::Write {
            ov,
            offset,
            data,
            bitmap,
            stable,
            delete,
            big: None,
            st: WriteSt::Queued,
            err: 0,
            commit_sector: None,
        };
        let slot = self.alloc_slot(Op { id, body });
        self.fifo.push_back(slot);
    }

    pub(super) fn check_write(
        &self,
        offset: u32,
        len: usize,
        bitmap: Option<&[u8]>,
    ) -> BsResult<()> {
        let g = self.layout.bitmap_granularity as u64;
        let (off, len) = (offset as u64, len as u64);
        if off % g != 0 || len % g != 0 || off + len > self.layout.block_size as u64 {
            return Err(BsError::Invalid(format!(
                "write of {len} bytes at {off}: must be aligned to {g} and inside the {}-byte object",
                self.layout.block_size
            )));
        }
        if let Some(b) = bitmap {
            if b.len() != self.index.bitmap_bytes {
                return Err(BsError::Invalid(format!(
                    "bitmap must be {} bytes",
                    self.index.bitmap_bytes
                )));
            }
        }
        Ok(())
    }

    /// Durability rules per operation kind.
    pub(super) fn durable_at_ack(&self, big: bool) -> bool {
        match self.cfg.immediate_commit {
            ImmediateCommit::All => true,
            ImmediateCommit::Small => !big,
            ImmediateCommit::None => false,
        }
    }

    pub(super) fn start_write(&mut self, body: &mut Body) -> BsResult<bool> {
        let Body::Write {
            ov,
            offset,
            data,
            bitmap,
            stable,
            delete,
            big,
            st,
            ..
        } = body
        else {
            unreachable!()
        };
        let latest = self.latest_version(ov.oid);
        let version = if ov.version == 0 {
            latest + 1
        } else {
            ov.version
        };
        if version <= latest {
            return Err(BsError::VersionConflict(format!(
                "version {version} is not newer than {latest}"
            )));
        }
        let gran = self.layout.bitmap_granularity;
        let bb = self.index.bitmap_bytes;
        if *delete {
            let e = Entry {
                stable: *stable,
                ..Entry::record(Kind::Delete, ov.oid, version)
            };
            let Some(a) = self.journal.append(e, None, self.write_reserve()) else {
                return Ok(false);
            };
            ov.version = version;
            self.insert_dirty(
                *ov,
                DirtyKind::Delete,
                0,
                0,
                Bits::zeroed(bb),
                Bits::zeroed(bb),
                *stable,
                Some(a.sector),
            );
            *st = WriteSt::Journal(JWait::Watermark(a.seq));
            return Ok(true);
        }
        let len = data.len() as u32;
        let current = self
            .index
            .current_bitmaps(ov.oid)
            .map(|(a, e)| (Bits::from(a), Bits::from(e)));
        // A version without data never takes a data block: it is journaled like a small write.
        let is_big =
            len != 0 && ((*offset == 0 && len == self.layout.block_size) || current.is_none());
        let (mut new_bitmap, prev_attr) = match current {
            Some((alloc, attr)) if !is_big => (alloc, attr),
            Some((_, attr)) => (Bits::zeroed(bb), attr),
            None => (Bits::zeroed(bb), Bits::zeroed(bb)),
        };
        // Not taken: a write that finds no room is started again later with the same op.
        let new_attr = match bitmap.as_deref() {
            Some(b) => Bits::from(b),
            None => {
                let mut b = prev_attr.clone();
                set_range(&mut b, *offset, len, gran);
                b
            }
        };
        next_allocation(&mut new_bitmap, &prev_attr, &new_attr, *offset, len, gran);
        if is_big {
            if self.alloc.free_count() <= DATA_RESERVE_BLOCKS {
                return Ok(false);
            }
            // With data that needs no fsync the entry follows the data, appended later without
            // a reserve of its own, so its room is checked now; otherwise a pending entry goes
            // first and a commit record follows the durable data.
            let after_data = self.big_entry_after_data;
            if after_data {
                let esize = journal::entry_size(Kind::BigWrite, bb) as u64;
                if self.journal.free_bytes()
                    < self.write_reserve() + esize + self.journal.block_size()
                {
                    return Ok(false);
                }
            }
            let block = self.alloc.alloc().expect("free count said a block is free");
            let sector = if after_data {
                None
            } else {
                let e = Entry {
                    kind: Kind::BigWrite,
                    offset: *offset,
                    len,
                    loc: block,
                    stable: *stable,
                    pending: true,
                    bitmap: &new_bitmap,
                    attr: &new_attr,
                    ..Entry::record(Kind::BigWrite, ov.oid, version)
                };
                let Some(a) = self.journal.append(e, None, self.write_reserve()) else {
                    self.alloc.free(block);
                    return Ok(false);
                };
                Some(a.sector)
            };
            ov.version = version;
            *big = Some(block);
            self.insert_dirty(
                *ov,
                DirtyKind::Big { block },
                *offset,
                len,
                new_bitmap,
                new_attr,
                *stable,
                sector,
            );
            if after_data {
                self.big_unjournaled.insert(ov.oid);
            }
            self.push_big_data(block, *offset, data);
            *st = WriteSt::BigData;
            return Ok(true);
        }
        let e = Entry {
            offset: *offset,
            len,
            stable: *stable,
            bitmap: &new_bitmap,
            attr: &new_attr,
            ..Entry::record(Kind::SmallWrite, ov.oid, version)
        };
        let Some(a) = self.journal.append(e, Some(data), self.write_reserve()) else {
            return Ok(false);
        };
        ov.version = version;
        if len != 0 {
            self.submit_jdata(&a, len);
        }
        self.insert_dirty(
            *ov,
            DirtyKind::Small { loc: a.data_loc },
            *offset,
            len,
            new_bitmap,
            new_attr,
            *stable,
            Some(a.sector),
        );
        *st = WriteSt::Journal(JWait::Watermark(a.seq));
        Ok(true)
    }

    /// Queue the data write of a redirect write started from the FIFO head.
    fn push_big_data(&mut self, block: u64, offset: u32, data: &mut AlignedBuf) {
        let slot_token = self.slot_of_current_start();
        // SAFETY: `data` lives in the op slot until this write completes.
        unsafe {
            self.engine.push(IoReq {
                dev: self.devs.data,
                kind: IoKind::Write,
                offset: self.layout.block_offset(block) + offset as u64,
                ptr: data.as_mut_ptr(),
                len: data.len(),
                token: tok(T_OP, slot_token as u64),
            });
        }
    }

    pub(super) fn latest_version(&self, oid: ObjectId) -> u64 {
        let v = self.index.latest_version(oid);
        match self.tombstones.get(&oid) {
            Some(&(tv, _)) => v.max(tv),
            None => v,
        }
    }

    pub(super) fn slot_of_current_start(&self) -> usize {
        *self
            .fifo
            .front()
            .expect("a write is started from the FIFO head")
    }

    /// Room a new write must leave: a few sectors, plus enough for one commit or stabilize
    /// record for every dirty version (each may still need one, and those records are what
    /// lets the flusher free space; without room for them the journal could deadlock).
    pub(super) fn write_reserve(&self) -> u64 {
        // Without same-sector overwrites every record may need a sector of its own.
        // Otherwise records pack into sectors, but sector ends waste up to one record each.
        let per_record = if self.cfg.journal_no_same_sector_overwrites {
            self.journal.block_size()
        } else {
            4 * RECORD_BYTES
        };
        // Redirect writes whose entry comes after their data need that entry too.
        let entries = self.big_unjournaled.len() as u64
            * journal::entry_size(Kind::BigWrite, self.index.bitmap_bytes) as u64;
        JOURNAL_RESERVE_SECTORS * self.journal.block_size()
            + self.index.dirty.len() as u64 * per_record
            + entries
    }

    /// Queue the data write of a small write's journal entry, joined to the run of data
    /// appended just before it when it lies right after it.
    pub(super) fn submit_jdata(&mut self, a: &Appended, len: u32) {
        let dlen = (len as u64).div_ceil(self.journal.block_size()) * self.journal.block_size();
        if let Some(run) = self.jdata_run.as_mut() {
            if run.loc + run.len == a.data_loc
                && run.len + dlen <= MAX_JDATA_RUN
                && a.seq - run.first_seq <= MAX_JDATA_SPAN
            {
                run.len += dlen;
                run.last_seq = a.seq;
                return;
            }
        }
        self.push_jdata_run();
        self.jdata_run = Some(JdataRun {
            loc: a.data_loc,
            len: dlen,
            first_seq: a.seq,
            last_seq: a.seq,
        });
    }

    /// Hand the pending run of journal data to the engine.
    pub(super) fn push_jdata_run(&mut self) {
        let Some(run) = self.jdata_run.take() else {
            return;
        };
        debug_assert!(run.first_seq <= LOW40);
        let ptr = self.journal.mirror.as_mut_ptr();
        // SAFETY: the mirror region of a live entry is never rewritten before the entry is
        // trimmed, which needs this write to have completed.
        unsafe {
            self.engine.push(IoReq {
                dev: self.devs.journal,
                kind: IoKind::Write,
                offset: self.layout.journal.offset + run.loc,
                ptr: ptr.add(run.loc as usize),
                len: run.len as usize,
                token: tok(
                    T_JDATA,
                    (run.last_seq - run.first_seq) << 40 | run.first_seq,
                ),
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_dirty(
        &mut self,
        ov: ObjVerId,
        kind: DirtyKind,
        offset: u32,
        len: u32,
        bitmap: Bits,
        attr: Bits,
        stable: bool,
        sector: Option<u64>,
    ) {
        self.index.dirty.insert(
            ov,
            Dirty {
                kind,
                offset,
                len,
                state: DState::InFlight,
                stable,
                sector,
                stable_sector: None,
                bitmap,
                attr,
            },
        );
    }

    pub(super) fn advance_write(&mut self, body: &mut Body) -> Option<BsResult<BsReply>> {
        let Body::Write {
            ov,
            stable,
            big,
            st,
            err,
            commit_sector,
            ..
        } = body
        else {
            unreachable!()
        };
        let ov = *ov;
        loop {
            match st {
                WriteSt::Queued => unreachable!("queued writes are not active"),
                WriteSt::BigData => return None,
                WriteSt::BigDataFsync(t) => {
                    if *err < 0 {
                        self.big_unjournaled.remove(&ov.oid);
                        return Some(Err(BsError::DeviceIo(-*err)));
                    }
                    if !self.index.dirty.contains_key(&ov) {
                        // Rolled back while its data was in flight.
                        self.big_unjournaled.remove(&ov.oid);
                        self.defer_free(big.unwrap());
                        return Some(Err(BsError::Invalid("write was rolled back".into())));
                    }
                    if self.big_unjournaled.contains(&ov.oid) {
                        *st = WriteSt::BigEntry;
                        continue;
                    }
                    if !self.durable_at_ack(true) {
                        let d = self.index.dirty.get_mut(&ov).unwrap();
                        d.state = DState::Written;
                        self.unsynced_big.push(ov);
                        return Some(Ok(BsReply::Written {
                            version: ov.version,
                            data: None,
                        }));
                    }
                    if *t == u64::MAX {
                        *t = self.fsyncs.ticket(Area::Data);
                    }
                    if !self.fsyncs.done(Area::Data, *t) {
                        return None;
                    }
                    *st = WriteSt::BigAppend;
                }
                WriteSt::BigEntry => {
                    let d = &self.index.dirty[&ov];
                    let DirtyKind::Big { block } = d.kind else {
                        unreachable!("a redirect write's version is a redirect")
                    };
                    let e = Entry {
                        kind: Kind::BigWrite,
                        offset: d.offset,
                        len: d.len,
                        loc: block,
                        stable: *stable,
                        bitmap: &d.bitmap,
                        attr: &d.attr,
                        ..Entry::record(Kind::BigWrite, ov.oid, ov.version)
                    };
                    let a = self.journal.append(e, None, 0)?;
                    self.index.dirty.get_mut(&ov).unwrap().sector = Some(a.sector);
                    self.big_unjournaled.remove(&ov.oid);
                    *st = WriteSt::Journal(JWait::Watermark(a.seq));
                }
                WriteSt::BigAppend => {
                    let a = self.append_commit(ov)?;
                    *commit_sector = Some(a.sector);
                    *st = WriteSt::Journal(JWait::Watermark(a.seq));
                }
                WriteSt::Journal(w) => {
                    let durable = self.durable_at_ack(big.is_some());
                    if !self.journal_wait(w, durable) {
                        return None;
                    }
                    if let Some(cs) = commit_sector.take() {
                        self.journal.release(cs);
                    }
                    let Some(d) = self.index.dirty.get_mut(&ov) else {
                        return Some(Err(BsError::Invalid("write was rolled back".into())));
                    };
                    if durable {
                        d.state = DState::Synced;
                        if *stable {
                            self.mark_stable_upto(ov);
                        }
                    } else {
                        d.state = DState::Written;
                        self.unsynced.push(ov);
                    }
                    return Some(Ok(BsReply::Written {
                        version: ov.version,
                        data: None,
                    }));
                }
            }
        }
    }

    /// Journal the commit record of a redirect write whose data is durable. The record needs
    /// no life of its own: the write's entry, older in the journal, keeps it from being trimmed.
    pub(super) fn append_commit(&mut self, ov: ObjVerId) -> Option<Appended> {
        self.journal
            .append(Entry::record(Kind::Commit, ov.oid, ov.version), None, 0)
    }
}
