//! SYNC, stabilize and rollback: making completed writes durable (one journal fsync for
//! everything completed before the SYNC; concurrent SYNCs share fsyncs through the tickets of
//! [`crate::fsync`]), and the commit records that make versions stable or discard them.
//!
//! A SYNC never waits for the flusher or for metadata: it only needs the data of redirect
//! writes and the journal up to now on the device. It must never complete before every
//! earlier SYNC, since an earlier one may hold writes this one found nothing left to do for.

use super::*;

impl<E: IoEngine> Blockstore<E> {
    pub(super) fn start_commit(&mut self, body: &mut Body) -> BsResult<bool> {
        let Body::Commit {
            list,
            rollback,
            started,
            sectors,
            wait,
        } = body
        else {
            unreachable!()
        };
        if !*started {
            // Validate everything before writing anything.
            for ov in list.iter() {
                if *rollback {
                    for (v, d) in self.index.dirty_of(ov.oid) {
                        if v.version > ov.version && d.stable {
                            return Err(BsError::Invalid(format!(
                                "cannot roll back stable version {} of {:?}",
                                v.version, ov.oid
                            )));
                        }
                        if v.version > ov.version && d.state == DState::InFlight {
                            return Err(BsError::NotSynced);
                        }
                    }
                } else {
                    // Without dirty versions everything there is is already stable (or gone).
                    let newest_dirty = self
                        .index
                        .dirty_desc(ov.oid, u64::MAX)
                        .next()
                        .map(|(v, _)| v.version);
                    if newest_dirty.is_some_and(|nd| {
                        ov.version > nd && ov.version > self.latest_version(ov.oid)
                    }) {
                        return Err(BsError::NotFound);
                    }
                    for (v, d) in self.index.dirty_of(ov.oid) {
                        if v.version > ov.version {
                            break;
                        }
                        if !d.stable && d.state != DState::Synced {
                            return Err(BsError::NotSynced);
                        }
                    }
                }
            }
            *started = true;
        }
        // Append as many records as fit; the rest waits for room (the reserve is ours). The
        // wait (Watermark(0) when the op is made) holds the newest record's seq across those
        // passes: a last pass that appends nothing must still wait for the earlier ones.
        while sectors.len() < list.len() {
            let ov = list[sectors.len()];
            // Nothing to stabilize up to this version, or nothing to discard above it: no
            // record, no journal space (else repeated no-op commits could eat the reserve
            // that the records of unstable writes need).
            let needless = if *rollback {
                self.index
                    .dirty_of(ov.oid)
                    .all(|(v, _)| v.version <= ov.version)
            } else {
                self.index
                    .dirty_of(ov.oid)
                    .take_while(|(v, _)| v.version <= ov.version)
                    .all(|(_, d)| d.stable)
            };
            if needless {
                sectors.push(NO_RECORD);
                continue;
            }
            let e = Entry::record(
                if *rollback {
                    Kind::Rollback
                } else {
                    Kind::Stable
                },
                ov.oid,
                ov.version,
            );
            let Some(a) = self.journal.append(e, None, 0) else {
                return Ok(false);
            };
            sectors.push(a.sector);
            *wait = JWait::Watermark(a.seq);
        }
        Ok(true)
    }

    /// Move journal waits forward; `true` when the records are durable (as required).
    pub(super) fn journal_wait(&mut self, w: &mut JWait, durable: bool) -> bool {
        loop {
            match *w {
                JWait::Watermark(seq) => {
                    if self.journal.watermark() < seq {
                        return false;
                    }
                    if !durable {
                        return true;
                    }
                    *w = JWait::Fsync(self.fsyncs.ticket(Area::Journal));
                }
                JWait::Fsync(t) => return self.fsyncs.done(Area::Journal, t),
            }
        }
    }

    pub(super) fn advance_sync(&mut self, body: &mut Body) -> Option<BsResult<BsReply>> {
        let Body::Sync {
            st,
            small,
            big,
            commits,
            seq,
        } = body
        else {
            unreachable!()
        };
        loop {
            match st {
                SyncSt::Start => {
                    self.sync_seq += 1;
                    *seq = self.sync_seq;
                    self.active_syncs.insert(*seq);
                    *small = std::mem::take(&mut self.unsynced);
                    *big = std::mem::take(&mut self.unsynced_big);
                    *st = if small.is_empty() && big.is_empty() {
                        SyncSt::Wait
                    } else if big.is_empty() {
                        SyncSt::Append
                    } else {
                        SyncSt::DataFsync(self.fsyncs.ticket(Area::Data))
                    };
                }
                SyncSt::Wait => {
                    if self.active_syncs.first() != Some(seq) {
                        return None;
                    }
                    self.active_syncs.remove(seq);
                    return Some(Ok(BsReply::Done));
                }
                SyncSt::DataFsync(t) => {
                    if !self.fsyncs.done(Area::Data, *t) {
                        return None;
                    }
                    *st = SyncSt::Append;
                }
                SyncSt::EarlySmall(w) => {
                    if !self.journal_wait(w, true) {
                        return None;
                    }
                    for ov in std::mem::take(small) {
                        self.mark_synced(ov);
                    }
                    *st = SyncSt::Append;
                }
                SyncSt::Append => {
                    while commits.len() < big.len() {
                        let ov = big[commits.len()];
                        if !self.index.dirty.contains_key(&ov) {
                            commits.push(u64::MAX);
                            continue;
                        }
                        let Some(a) = self.append_commit(ov) else {
                            if small.is_empty() {
                                return None;
                            }
                            *st = SyncSt::EarlySmall(JWait::Watermark(self.journal.next_seq - 1));
                            break;
                        };
                        commits.push(a.sector);
                    }
                    if matches!(st, SyncSt::EarlySmall(_)) {
                        continue;
                    }
                    let upto = self.journal.next_seq - 1;
                    *st = SyncSt::Journal(JWait::Watermark(upto));
                }
                SyncSt::Journal(w) => {
                    if !self.journal_wait(w, true) {
                        return None;
                    }
                    for &cs in commits.iter().filter(|&&cs| cs != u64::MAX) {
                        self.journal.release(cs);
                    }
                    for ov in small.iter().chain(big.iter()).copied().collect::<Vec<_>>() {
                        self.mark_synced(ov);
                    }
                    *st = SyncSt::Wait;
                }
            }
        }
    }

    pub(super) fn advance_commit(&mut self, body: &mut Body) -> Option<BsResult<BsReply>> {
        let Body::Commit {
            list,
            rollback,
            sectors,
            wait,
            ..
        } = body
        else {
            unreachable!()
        };
        if !self.journal_wait(wait, true) {
            return None;
        }
        for (i, ov) in list.iter().enumerate() {
            let sector = sectors[i];
            if sector == NO_RECORD {
                continue;
            }
            if *rollback {
                let doomed: Vec<ObjVerId> = self
                    .index
                    .dirty_of(ov.oid)
                    .filter(|(v, _)| v.version > ov.version)
                    .map(|(v, _)| *v)
                    .collect();
                for v in doomed {
                    let d = self.index.dirty.remove(&v).unwrap();
                    self.release_dirty(&d);
                    if let DirtyKind::Big { block } = d.kind {
                        if d.state != DState::InFlight {
                            self.defer_free(block);
                        }
                    }
                }
                self.unsynced.retain(|v| self.index.dirty.contains_key(v));
                self.unsynced_big
                    .retain(|v| self.index.dirty.contains_key(v));
                self.journal.release(sector);
            } else {
                let mut holder = None;
                for (v, _) in self.index.dirty_of(ov.oid) {
                    if v.version > ov.version {
                        break;
                    }
                    holder = Some(*v);
                }
                let oid = ov.oid;
                let keys: Vec<ObjVerId> = self
                    .index
                    .dirty_of(oid)
                    .filter(|(v, _)| v.version <= ov.version)
                    .map(|(v, _)| *v)
                    .collect();
                for k in keys {
                    self.index.dirty.get_mut(&k).unwrap().stable = true;
                }
                match holder.and_then(|h| self.index.dirty.get_mut(&h)) {
                    Some(d) if d.stable_sector.is_none() => d.stable_sector = Some(sector),
                    _ => self.journal.release(sector),
                }
                self.queue_flush(oid);
            }
        }
        Some(Ok(BsReply::Done))
    }

    pub(super) fn mark_synced(&mut self, ov: ObjVerId) {
        if let Some(d) = self.index.dirty.get_mut(&ov) {
            d.state = DState::Synced;
            if d.stable {
                self.mark_stable_upto(ov);
            }
        }
    }

    /// A version written stable became durable: every older version of the object is
    /// committed with it (replay applies the same rule), and it may be flushed.
    pub(super) fn mark_stable_upto(&mut self, ov: ObjVerId) {
        for (_, d) in self.index.dirty.range_mut(ObjVerId::new(ov.oid, 0)..=ov) {
            d.stable = true;
        }
        self.queue_flush(ov.oid);
    }

    pub(super) fn release_dirty(&mut self, d: &Dirty) {
        if let Some(s) = d.sector {
            self.journal.release(s);
        }
        if let Some(s) = d.stable_sector {
            self.journal.release(s);
        }
    }
}
