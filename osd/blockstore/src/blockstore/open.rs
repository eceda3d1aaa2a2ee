//! Opening a store: the superblock and the layout it records checked against the options and
//! the devices, the metadata area loaded into the clean index, the journal replayed into the
//! dirty index, then the epoch bump (with the torn tail of the last sector cleared) made
//! durable before anything new can be appended.
//!
//! It owns the replay rules (a redirect write counts only once its commit record follows;
//! a stable version commits every older one; versions under a stable deletion are gone). It
//! must never run on the data path: it blocks on the engine's synchronous reads and writes,
//! and it writes nothing but stale metadata slots, the journal header and the last sector.

use super::*;

impl Blockstore<UringEngine> {
    /// Open a prepared OSD store on real devices with io_uring.
    pub fn open(cfg: &BlockstoreConfig) -> BsResult<Self> {
        cfg.validate_runtime()?;
        let (paths, devs) = device_paths(cfg);
        let flags = OpenFlags {
            lock: !cfg.disable_device_lock,
            direct: cfg.direct_io,
            readonly: false,
        };
        let engine = UringEngine::open(&paths, flags)?;
        Self::open_with(engine, devs, cfg)
    }
}

fn read_area<E: IoEngine>(
    engine: &mut E,
    dev: DevId,
    offset: u64,
    size: u64,
    what: &str,
) -> BsResult<AlignedBuf> {
    let mut buf = AlignedBuf::new(size as usize);
    let mut done = 0usize;
    while done < size as usize {
        let n = LOAD_CHUNK.min(size as usize - done);
        engine
            .read_at(dev, offset + done as u64, &mut buf[done..done + n])
            .map_err(|e| BsError::io(format!("read {what}"), e))?;
        done += n;
    }
    Ok(buf)
}

/// Read and verify the superblock of a store (for tools).
pub fn read_superblock<E: IoEngine>(
    engine: &mut E,
    devs: Devices,
    meta_offset: u64,
) -> BsResult<Layout> {
    let size = engine.dev_size(devs.meta);
    if meta_offset + 4096 > size {
        return Err(BsError::Layout(format!(
            "metadata device is only {size} bytes: no superblock at offset {meta_offset}"
        )));
    }
    let mut sb = AlignedBuf::new(4096);
    engine
        .read_at(devs.meta, meta_offset, &mut sb)
        .map_err(|e| BsError::io("read superblock", e))?;
    Layout::decode_sb(&sb, false)
}

/// Redirect writes seen in the journal whose commit record has not been seen yet.
type PendingBig = rustc_hash::FxHashMap<ObjVerId, (Dirty, u64)>;

/// Apply one replayed journal entry to the index.
fn replay_entry(
    index: &mut Index,
    pending: &mut PendingBig,
    refs: &mut [u32],
    layout: &Layout,
    e: &journal::Entry<'_>,
    sector: u64,
) -> Result<(), String> {
    let clean_ver = index.clean.get(&e.oid).map(|c| c.version).unwrap_or(0);
    let ov = ObjVerId::new(e.oid, e.version);
    let dirty = |kind: DirtyKind| Dirty {
        kind,
        offset: e.offset,
        len: e.len,
        state: DState::Synced,
        stable: e.stable,
        sector: Some(sector),
        stable_sector: None,
        bitmap: e.bitmap.into(),
        attr: e.attr.into(),
    };
    let insert = |index: &mut Index, refs: &mut [u32], d: Dirty| {
        if ov.version <= clean_ver || index.dirty.contains_key(&ov) {
            return;
        }
        // A commit record comes after newer versions' entries: a newer stable one already
        // committed this one.
        let newer_stable = index
            .dirty
            .range(ov..=ObjVerId::new(ov.oid, u64::MAX))
            .any(|(_, n)| n.stable);
        let stable = d.stable || newer_stable;
        refs[d.sector.unwrap() as usize] += 1;
        index.dirty.insert(ov, Dirty { stable, ..d });
        if stable {
            for (_, d) in index.dirty.range_mut(ObjVerId::new(e.oid, 0)..=ov) {
                d.stable = true;
            }
        }
    };
    match e.kind {
        Kind::SmallWrite | Kind::BigWrite => {
            if e.offset as u64 + e.len as u64 > layout.block_size as u64 {
                return Err(format!("entry seq {} writes past the object end", e.seq));
            }
            if e.kind == Kind::SmallWrite {
                insert(index, refs, dirty(DirtyKind::Small { loc: e.loc }));
            } else {
                if e.loc == 0 || e.loc >= layout.data_blocks() {
                    return Err(format!(
                        "entry seq {} names data block {} outside the data area",
                        e.seq, e.loc
                    ));
                }
                let d = dirty(DirtyKind::Big { block: e.loc });
                if e.pending {
                    pending.insert(ov, (d, sector));
                } else {
                    // Journaled after its data, which needed no fsync: it counts at once.
                    insert(index, refs, d);
                }
            }
        }
        Kind::Delete => insert(index, refs, dirty(DirtyKind::Delete)),
        Kind::Commit => {
            if let Some((d, _)) = pending.remove(&ov) {
                insert(index, refs, d);
            }
        }
        Kind::Stable => {
            let keys: Vec<ObjVerId> = index
                .dirty_of(e.oid)
                .take_while(|(v, _)| v.version <= e.version)
                .map(|(v, _)| *v)
                .collect();
            for k in &keys {
                index.dirty.get_mut(k).unwrap().stable = true;
            }
            if let Some(last) = keys.last() {
                let d = index.dirty.get_mut(last).unwrap();
                if d.stable_sector.is_none() {
                    d.stable_sector = Some(sector);
                    refs[sector as usize] += 1;
                }
            }
        }
        Kind::Rollback => {
            pending.retain(|k, _| k.oid != e.oid || k.version <= e.version);
            let doomed: Vec<ObjVerId> = index
                .dirty_of(e.oid)
                .filter(|(v, _)| v.version > e.version)
                .map(|(v, _)| *v)
                .collect();
            for k in doomed {
                let d = index.dirty.remove(&k).unwrap();
                for s in [d.sector, d.stable_sector].into_iter().flatten() {
                    refs[s as usize] -= 1;
                }
            }
        }
    }
    Ok(())
}

/// After replay: versions older than an object's newest stable deletion can never be read or
/// rolled back to; their blocks may already belong to other objects (the deletion was flushed
/// and its old clean entry is gone), so they must not be resurrected.
fn drop_below_stable_deletes(index: &mut Index, refs: &mut [u32]) {
    let mut doomed = Vec::new();
    let mut cur: Option<ObjectId> = None;
    let mut below: Vec<ObjVerId> = Vec::new();
    for (ov, d) in &index.dirty {
        if cur != Some(ov.oid) {
            cur = Some(ov.oid);
            below.clear();
        }
        if d.kind == DirtyKind::Delete && d.stable {
            doomed.append(&mut below);
        }
        below.push(*ov);
    }
    for k in doomed {
        let d = index.dirty.remove(&k).unwrap();
        for s in [d.sector, d.stable_sector].into_iter().flatten() {
            refs[s as usize] -= 1;
        }
    }
}

impl<E: IoEngine> Blockstore<E> {
    /// Open over an engine whose devices are `devs`: load metadata, replay the journal, bump
    /// the journal epoch.
    pub fn open_with(mut engine: E, devs: Devices, cfg: &BlockstoreConfig) -> BsResult<Self> {
        cfg.validate_runtime()?;
        let layout = read_superblock(&mut engine, devs, cfg.meta_offset.unwrap_or(0))?;
        layout.check_config(cfg)?;
        for (name, dev, a) in [
            ("data", devs.data, layout.data),
            ("metadata", devs.meta, layout.meta),
            ("journal", devs.journal, layout.journal),
        ] {
            let size = engine.dev_size(dev);
            if a.offset + a.size > size {
                return Err(BsError::Layout(format!(
                    "{name} area ends at byte {} but its device has only {size} bytes (truncated device?)",
                    a.offset + a.size
                )));
            }
        }
        // The data area's own superblock copy proves the data device is the right one.
        let mut dsb = AlignedBuf::new(4096);
        engine
            .read_at(devs.data, layout.data.offset, &mut dsb)
            .map_err(|e| BsError::io("read data superblock", e))?;
        let dl = Layout::decode_sb(&dsb, true)
            .map_err(|e| BsError::Layout(format!("data area: {e}")))?;
        if dl != layout {
            return Err(BsError::Layout(
                "the data area belongs to a different OSD than the metadata area".into(),
            ));
        }
        let bb = layout.bitmap_bytes();
        let blocks = layout.data_blocks();
        let mut index = Index::new(blocks, bb);
        let mut alloc = Allocator::new(blocks);

        // Metadata.
        let mut meta_image = read_area(
            &mut engine,
            devs.meta,
            layout.meta.offset,
            layout.meta.size,
            "metadata area",
        )?;
        let esz = layout.meta_entry_size();
        let mut stale_slots = Vec::new();
        for b in 1..blocks {
            let (mb, off) = layout.meta_pos(b);
            let at = (mb * layout.meta_block_size as u64) as usize + off;
            match decode_meta_entry(&meta_image[at..at + esz], b, bb) {
                Ok(None) => {}
                Err(()) => {
                    return Err(BsError::Layout(format!(
                        "metadata entry of data block {b} is corrupted (checksum mismatch)"
                    )))
                }
                Ok(Some(e)) => {
                    let oid = ObjectId::new(e.inode, e.stripe);
                    if let Some(prev) = index.clean.get(&oid).copied() {
                        // A crash between writing a new location and clearing the old one.
                        if prev.version >= e.version {
                            stale_slots.push(b);
                            continue;
                        }
                        stale_slots.push(prev.block);
                        alloc.free(prev.block);
                    }
                    index.clean.insert(
                        oid,
                        Clean {
                            version: e.version,
                            block: b,
                        },
                    );
                    index.set_clean_bitmap(b, &e.bitmap, &e.attr);
                    alloc.set_used(b);
                }
            }
        }
        for &b in &stale_slots {
            let (mb, off) = layout.meta_pos(b);
            let at = (mb * layout.meta_block_size as u64) as usize + off;
            meta_image[at..at + esz].fill(0);
            let mbs = layout.meta_block_size as usize;
            let start = mb as usize * mbs;
            engine
                .write_at(
                    devs.meta,
                    layout.meta.offset + start as u64,
                    &meta_image[start..start + mbs],
                )
                .map_err(|e| BsError::io("clear stale metadata entry", e))?;
        }
        if !stale_slots.is_empty() {
            engine
                .sync_dev(devs.meta)
                .map_err(|e| BsError::io("fsync metadata", e))?;
        }

        // Journal.
        let mirror = read_area(
            &mut engine,
            devs.journal,
            layout.journal.offset,
            layout.journal.size,
            "journal",
        )?;
        let header = JournalHeader::decode(&mirror[..HEADER_BYTES])?;
        if header.uuid != layout.uuid {
            return Err(BsError::Layout(
                "the journal belongs to a different OSD (uuid mismatch)".into(),
            ));
        }
        let jbs = layout.journal_block_size as u64;
        if header.start < jbs || header.start > layout.journal.size || header.start % jbs != 0 {
            return Err(BsError::Layout(format!(
                "journal header names an impossible start offset {}",
                header.start
            )));
        }
        let mut sector_refs: Vec<u32> = Vec::new();
        let mut pending = PendingBig::default();
        let mut bad: Option<String> = None;
        let end = Journal::replay(
            &mirror,
            jbs,
            bb,
            header.start,
            header.start_seq,
            header.epoch,
            |e, sector| {
                if bad.is_some() {
                    return;
                }
                if sector_refs.len() <= sector as usize {
                    sector_refs.resize(sector as usize + 1, 0);
                }
                if let Err(msg) = replay_entry(
                    &mut index,
                    &mut pending,
                    &mut sector_refs,
                    &layout,
                    e,
                    sector,
                ) {
                    bad = Some(msg);
                }
            },
        );
        if let Some(msg) = bad {
            return Err(BsError::Layout(format!("journal replay: {msg}")));
        }
        drop_below_stable_deletes(&mut index, &mut sector_refs);
        // Blocks of live redirect writes are known only once rollbacks have been replayed.
        for (ov, d) in &index.dirty {
            if let DirtyKind::Big { block } = d.kind {
                if alloc.is_used(block) {
                    return Err(BsError::Layout(format!(
                        "journal replay: version {} of {:?} names data block {block}, which is already in use",
                        ov.version, ov.oid
                    )));
                }
                alloc.set_used(block);
            }
        }
        let epoch = header.epoch + 1;
        let mut journal = Journal::new(
            mirror,
            jbs,
            bb,
            header.start,
            epoch,
            &end,
            cfg.journal_sector_buffer_count as usize,
            cfg.journal_no_same_sector_overwrites,
        );
        for (abs, &n) in sector_refs.iter().enumerate() {
            for _ in 0..n {
                journal.add_ref(abs as u64);
            }
        }
        // Persist the epoch bump and the last sector with its torn tail cleared before any new
        // entry can be written after them.
        let mut hb = AlignedBuf::new(jbs as usize);
        hb[..HEADER_BYTES].copy_from_slice(&JournalHeader { epoch, ..header }.encode());
        engine
            .write_at(devs.journal, layout.journal.offset, &hb)
            .map_err(|e| BsError::io("write journal header", e))?;
        if let Some(pos) = journal.last_sector_pos() {
            let s = AlignedBuf::from_slice(&journal.mirror[pos as usize..(pos + jbs) as usize]);
            engine
                .write_at(devs.journal, layout.journal.offset + pos, &s)
                .map_err(|e| BsError::io("rewrite journal sector", e))?;
        }
        engine
            .sync_dev(devs.journal)
            .map_err(|e| BsError::io("fsync journal", e))?;

        let mut engine = Tracked::new(engine, &layout, devs);
        engine.set_plan(cfg.inject_faults.clone());
        let (journal_fsync, data_fsync, meta_fsync) = cfg.fsyncs_enabled();
        let mut bs = Blockstore {
            engine,
            cfg: cfg.clone(),
            devs,
            index,
            alloc,
            journal,
            meta_image: cfg.inmemory_metadata.then_some(meta_image),
            meta_busy: FxHashSet::default(),
            meta_riders: Vec::new(),
            meta_bufs: Vec::new(),
            flush_src: Vec::new(),
            ops: Vec::new(),
            free_slots: Vec::new(),
            next_id: 1,
            fifo: VecDeque::new(),
            active: Vec::new(),
            done: Vec::new(),
            unsynced: Vec::new(),
            unsynced_big: Vec::new(),
            big_entry_after_data: !data_fsync,
            big_unjournaled: FxHashSet::default(),
            big_wait_slot: None,
            fsyncs: Fsyncs::new([
                (devs.journal, journal_fsync),
                (devs.data, data_fsync),
                (devs.meta, meta_fsync),
            ]),
            fsync_out: Vec::new(),
            flush_queue: VecDeque::new(),
            flush_queued: FxHashSet::default(),
            flushing: FxHashSet::default(),
            jobs: (0..cfg.flusher_count).map(|_| None).collect(),
            trim: TrimSt::Idle,
            header_buf: AlignedBuf::new(jbs as usize),
            read_epoch: 0,
            reads_inflight: VecDeque::new(),
            pending_free: VecDeque::new(),
            free_after_trim: VecDeque::new(),
            tombstones: Default::default(),
            failed: None,
            sync_seq: 0,
            round_left: 0,
            force_flush: false,
            active_syncs: Default::default(),
            sector_writes: Vec::new(),
            jdata_run: None,
            reaped: Vec::new(),
            waiting_space: false,
            stats: Stats::default(),
            flush_io: 0,
            flush_requeue: Vec::new(),
            read_scratch: Default::default(),
            layout,
        };
        let oids: Vec<ObjectId> = bs
            .index
            .dirty
            .keys()
            .map(|ov| ov.oid)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for oid in oids {
            bs.queue_flush(oid);
        }
        Ok(bs)
    }
}
