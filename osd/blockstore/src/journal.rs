//! The journal: a circular log of entry sectors and small-write data, mirrored in memory.
//! Owns entry encoding, space allocation, sector write batching, the write watermark that
//! orders acknowledgements, trimming bookkeeping and replay. It never decides when an
//! operation is acknowledged and never touches the index; the blockstore does.
//!
//! Format of an entry (little endian), packed inside one journal sector, never straddling it:
//! `magic u32, crc32c u32, seq u64, epoch u64, kind u16, size u16, flags u32` then a body
//! (`inode, stripe, version`; for writes also `offset, len, loc, data crc32c`, the allocation
//! bitmap and the external bitmap of the new version).
//! Each entry has `seq` = previous + 1; replay stops at the first entry that breaks the chain
//! (bad magic, checksum, sequence, or an epoch going backwards), so torn and stale sectors end
//! the log instead of being replayed. Small-write data lives in the journal right after the
//! sector that describes it and is verified by a CRC32C in the entry; a zero-length small
//! write (a version carrying only bitmaps) has no data, `loc` 0 and data CRC 0.

use std::collections::VecDeque;

use crate::io::AlignedBuf;
use crate::layout::{get16, get32, get64, put16, put32, put64};
use crate::types::ObjectId;

const JE_MAGIC: u32 = 0x4C4E_524A;
/// Entry header bytes.
pub const JE_HEADER: usize = 32;
const FLAG_STABLE: u32 = 1;
const FLAG_PENDING: u32 = 2;

/// Entry kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// A write whose data follows in the journal.
    SmallWrite = 1,
    /// A write redirected to a newly allocated data block.
    BigWrite = 2,
    /// A deletion.
    Delete = 3,
    /// Versions up to this one are stable.
    Stable = 4,
    /// Unstable versions above this one are discarded.
    Rollback = 5,
    /// The data of this (pending) redirect write is durable: the write counts at replay.
    Commit = 6,
}

impl Kind {
    fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            1 => Kind::SmallWrite,
            2 => Kind::BigWrite,
            3 => Kind::Delete,
            4 => Kind::Stable,
            5 => Kind::Rollback,
            6 => Kind::Commit,
            _ => return None,
        })
    }
}

/// A decoded journal entry, borrowing its bitmap from the journal mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Epoch of the run that wrote it.
    pub epoch: u64,
    /// What it records.
    pub kind: Kind,
    /// Object.
    pub oid: ObjectId,
    /// Version.
    pub version: u64,
    /// Written range (writes only).
    pub offset: u32,
    /// Written length (writes only).
    pub len: u32,
    /// Journal offset of the data (small writes) or data block number (big writes).
    pub loc: u64,
    /// CRC32C of the data (small writes).
    pub data_crc: u32,
    /// Written as stable.
    pub stable: bool,
    /// A redirect write journaled before its data is durable: replay ignores it unless a
    /// later [`Kind::Commit`] names it. Journaling it first keeps each object's entries in
    /// version order, so trimming past a record also trims every older version of the object.
    /// A redirect write without it was journaled after its data (data that needs no fsync)
    /// and counts at once.
    pub pending: bool,
    /// Allocation bitmap after this version (writes only).
    pub bitmap: &'a [u8],
    /// External bitmap after this version (writes only; see [`crate::bitmap`]).
    pub attr: &'a [u8],
}

impl<'a> Entry<'a> {
    /// A record without data: every field but these zero.
    pub fn record(kind: Kind, oid: ObjectId, version: u64) -> Self {
        Entry {
            seq: 0,
            epoch: 0,
            kind,
            oid,
            version,
            offset: 0,
            len: 0,
            loc: 0,
            data_crc: 0,
            stable: false,
            pending: false,
            bitmap: &[],
            attr: &[],
        }
    }
}

/// Encoded size of an entry of `kind`.
pub fn entry_size(kind: Kind, bitmap_bytes: usize) -> usize {
    match kind {
        Kind::SmallWrite | Kind::BigWrite => (80 + 2 * bitmap_bytes).div_ceil(8) * 8,
        Kind::Delete | Kind::Stable | Kind::Rollback | Kind::Commit => 56,
    }
}

/// Encode `e` (its `seq`/`epoch` included) into `out`, which is exactly `entry_size` bytes.
pub fn encode(out: &mut [u8], e: &Entry<'_>) {
    out.fill(0);
    put32(out, 0, JE_MAGIC);
    put64(out, 8, e.seq);
    put64(out, 16, e.epoch);
    put16(out, 24, e.kind as u16);
    put16(out, 26, out.len() as u16);
    put32(
        out,
        28,
        if e.stable { FLAG_STABLE } else { 0 } | if e.pending { FLAG_PENDING } else { 0 },
    );
    put64(out, 32, e.oid.inode);
    put64(out, 40, e.oid.stripe);
    put64(out, 48, e.version);
    if matches!(e.kind, Kind::SmallWrite | Kind::BigWrite) {
        put32(out, 56, e.offset);
        put32(out, 60, e.len);
        put64(out, 64, e.loc);
        put32(out, 72, e.data_crc);
        let bb = e.bitmap.len();
        out[80..80 + bb].copy_from_slice(e.bitmap);
        out[80 + bb..80 + 2 * bb].copy_from_slice(e.attr);
    }
    let crc = crc32c::crc32c(out);
    put32(out, 4, crc);
}

/// Decode the entry at the start of `b` (the rest of its sector). `None` means "not a valid
/// entry": end of the log.
pub fn decode(b: &[u8], bitmap_bytes: usize) -> Option<Entry<'_>> {
    if b.len() < JE_HEADER || get32(b, 0) != JE_MAGIC {
        return None;
    }
    let kind = Kind::from_u16(get16(b, 24))?;
    let size = get16(b, 26) as usize;
    if size != entry_size(kind, bitmap_bytes) || size > b.len() {
        return None;
    }
    let mut crc = crc32c::crc32c(&b[..4]);
    crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc = crc32c::crc32c_append(crc, &b[8..size]);
    if crc != get32(b, 4) {
        return None;
    }
    let write = matches!(kind, Kind::SmallWrite | Kind::BigWrite);
    Some(Entry {
        seq: get64(b, 8),
        epoch: get64(b, 16),
        kind,
        stable: get32(b, 28) & FLAG_STABLE != 0,
        pending: get32(b, 28) & FLAG_PENDING != 0,
        oid: ObjectId::new(get64(b, 32), get64(b, 40)),
        version: get64(b, 48),
        offset: if write { get32(b, 56) } else { 0 },
        len: if write { get32(b, 60) } else { 0 },
        loc: if write { get64(b, 64) } else { 0 },
        data_crc: if write { get32(b, 72) } else { 0 },
        bitmap: if write {
            &b[80..80 + bitmap_bytes]
        } else {
            &[]
        },
        attr: if write {
            &b[80 + bitmap_bytes..80 + 2 * bitmap_bytes]
        } else {
            &[]
        },
    })
}

/// Bookkeeping of one journal sector.
#[derive(Debug)]
struct Sector {
    pos: u64,
    first_seq: u64,
    last_seq: u64,
    /// Highest seq whose sector write has completed.
    written_seq: u64,
    /// Seq covered by the write in flight.
    inflight: Option<u64>,
    /// Live records in this sector (entries not yet flushed, records not yet acknowledged).
    refs: u32,
    /// Appended to since the last submitted write.
    dirty: bool,
}

/// A sector write to submit: journal offset and the buffer index holding its copy.
#[derive(Debug, Clone, Copy)]
pub struct SectorWrite {
    /// Absolute sector number (for the completion).
    pub abs: u64,
    /// Offset inside the journal area.
    pub pos: u64,
    /// Index of the sector buffer (see [`Journal::sector_buf_ptr`]).
    pub buf: usize,
}

/// Where an appended entry went.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// Its sequence number.
    pub seq: u64,
    /// Absolute number of its sector (for refs).
    pub sector: u64,
    /// Journal offset of its data, if any.
    pub data_loc: u64,
}

/// The in-memory journal state.
pub struct Journal {
    /// Copy of the whole journal area (block 0 is the header).
    pub mirror: AlignedBuf,
    bs: u64,
    size: u64,
    bitmap_bytes: usize,
    /// Start of the live region as recorded in the durable header.
    pub used_start: u64,
    /// Next byte to allocate (before the wrap rule).
    pub next_free: u64,
    /// Sequence of the next entry.
    pub next_seq: u64,
    /// This run's epoch.
    pub epoch: u64,
    sectors: VecDeque<Sector>,
    sector_base: u64,
    open: Option<u64>,
    open_fill: usize,
    no_same_sector_overwrites: bool,
    data_inflight: VecDeque<(u64, bool)>,
    bufs: Vec<AlignedBuf>,
    free_bufs: Vec<usize>,
    scan_from: u64,
}

/// State handed from replay to the writer.
pub struct ReplayEnd {
    /// Sectors holding valid entries, in order: (pos, first_seq, last_seq).
    pub sectors: Vec<(u64, u64, u64)>,
    /// Fill of the last sector (bytes of valid entries).
    pub last_fill: usize,
    /// Where allocation continues.
    pub next_free: u64,
    /// Next sequence number.
    pub next_seq: u64,
}

impl Journal {
    /// Wrap rule shared by the writer and replay: an allocation that does not fit before the
    /// end of the area starts at the first block after the header.
    pub fn wrap(&self, pos: u64, len: u64) -> u64 {
        if pos + len > self.size {
            self.bs
        } else {
            pos
        }
    }

    /// Replay the mirror from `start`, calling `apply(entry, sector_index)` for each valid
    /// entry in order. `sector_index` counts sectors from 0 in replay order.
    pub fn replay<F: FnMut(&Entry<'_>, u64)>(
        mirror: &[u8],
        bs: u64,
        bitmap_bytes: usize,
        start: u64,
        start_seq: u64,
        max_epoch: u64,
        mut apply: F,
    ) -> ReplayEnd {
        let size = mirror.len() as u64;
        let wrap = |pos: u64, len: u64| if pos + len > size { bs } else { pos };
        let mut sectors = Vec::new();
        let mut seq = start_seq;
        let mut epoch = 0u64;
        let mut cursor = start;
        let mut last_fill = 0usize;
        // Sequence numbers make a lap around the ring impossible; the cap is belt and braces.
        for _ in 0..size / bs {
            let pos = wrap(cursor, bs);
            let sector = &mirror[pos as usize..(pos + bs) as usize];
            let mut fill = 0usize;
            let mut data_cursor = pos + bs;
            let first_seq = seq;
            while fill < sector.len() {
                let Some(e) = decode(&sector[fill..], bitmap_bytes) else {
                    break;
                };
                if e.seq != seq || e.epoch < epoch || e.epoch > max_epoch {
                    break;
                }
                if e.kind == Kind::SmallWrite && e.len == 0 {
                    if e.loc != 0 || e.data_crc != 0 {
                        break;
                    }
                } else if e.kind == Kind::SmallWrite {
                    let dlen = (e.len as u64).div_ceil(bs) * bs;
                    let dpos = wrap(data_cursor, dlen);
                    if dpos != e.loc || dlen == 0 && e.len != 0 || dpos + dlen > size {
                        break;
                    }
                    let data = &mirror[dpos as usize..(dpos as usize + e.len as usize)];
                    if crc32c::crc32c(data) != e.data_crc {
                        break;
                    }
                    data_cursor = dpos + dlen;
                }
                apply(&e, sectors.len() as u64);
                epoch = e.epoch;
                seq += 1;
                fill += entry_size(e.kind, bitmap_bytes);
            }
            if fill == 0 {
                break;
            }
            sectors.push((pos, first_seq, seq - 1));
            last_fill = fill;
            cursor = data_cursor;
            if fill < sector.len() && decode(&sector[fill..], bitmap_bytes).is_some() {
                // A valid-looking entry that broke the chain: the log ends inside this sector.
                break;
            }
            if fill + JE_HEADER <= sector.len() && get32(&sector[fill..], 0) != 0 {
                break;
            }
        }
        if sectors.is_empty() {
            last_fill = 0;
        }
        ReplayEnd {
            sectors,
            last_fill,
            next_free: cursor,
            next_seq: seq,
        }
    }

    /// A journal positioned after replay. The last replayed sector stays open for appends
    /// (its torn tail, if any, is zeroed in the mirror) unless same-sector overwrites are off.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mirror: AlignedBuf,
        bs: u64,
        bitmap_bytes: usize,
        used_start: u64,
        epoch: u64,
        end: &ReplayEnd,
        sector_buffers: usize,
        no_same_sector_overwrites: bool,
    ) -> Self {
        let size = mirror.len() as u64;
        let mut j = Journal {
            mirror,
            bs,
            size,
            bitmap_bytes,
            used_start,
            next_free: end.next_free,
            next_seq: end.next_seq,
            epoch,
            sectors: VecDeque::new(),
            sector_base: 0,
            open: None,
            open_fill: 0,
            no_same_sector_overwrites,
            data_inflight: VecDeque::new(),
            bufs: (0..sector_buffers)
                .map(|_| AlignedBuf::new(bs as usize))
                .collect(),
            free_bufs: (0..sector_buffers).rev().collect(),
            scan_from: 0,
        };
        for &(pos, first_seq, last_seq) in &end.sectors {
            j.sectors.push_back(Sector {
                pos,
                first_seq,
                last_seq,
                written_seq: last_seq,
                inflight: None,
                refs: 0,
                dirty: false,
            });
        }
        if let Some(first) = end.sectors.first() {
            j.used_start = first.0;
        }
        if let Some(last) = end.sectors.last() {
            let p = last.0 as usize;
            j.mirror[p + end.last_fill..p + bs as usize].fill(0);
            if !no_same_sector_overwrites && end.last_fill + JE_HEADER < bs as usize {
                j.open = Some(end.sectors.len() as u64 - 1);
                j.open_fill = end.last_fill;
            }
        }
        j
    }

    /// Replayed sector `idx` (from replay's numbering) gets one more live record.
    pub fn add_ref(&mut self, abs: u64) {
        let i = (abs - self.sector_base) as usize;
        self.sectors[i].refs += 1;
    }

    /// A record in sector `abs` died (flushed, rolled back, or acknowledged for records that
    /// need no longer life).
    pub fn release(&mut self, abs: u64) {
        let i = (abs - self.sector_base) as usize;
        debug_assert!(self.sectors[i].refs > 0, "journal sector ref underflow");
        self.sectors[i].refs -= 1;
    }

    /// The last replayed sector: the blockstore rewrites it once at open (its torn tail zeroed)
    /// so that the next replay does not stop there before reaching newer sectors.
    pub fn last_sector_pos(&self) -> Option<u64> {
        self.sectors.back().map(|s| s.pos)
    }

    fn is_empty(&self) -> bool {
        self.sectors.is_empty()
    }

    /// Try to place `len` bytes at `from` without crossing the live region.
    fn fit(&self, from: u64, len: u64, empty: bool) -> Option<u64> {
        if len + self.bs > self.size {
            return None;
        }
        let p = self.wrap(from, len);
        if empty {
            return Some(p);
        }
        // `from == used_start` on a non-empty journal means it is full.
        let wrapped = from <= self.used_start;
        if !wrapped {
            // Live region is [used_start, from): free is [from, size) and [bs, used_start).
            (p == from || p + len <= self.used_start).then_some(p)
        } else if p == from && p + len <= self.used_start {
            Some(p)
        } else {
            None
        }
    }

    /// Bytes still free (ignoring the waste of wrapping).
    pub fn free_bytes(&self) -> u64 {
        if self.is_empty() {
            return self.size - self.bs;
        }
        let ring = self.size - self.bs;
        if self.next_free == self.used_start {
            return 0;
        }
        let used = if self.next_free > self.used_start {
            self.next_free - self.used_start
        } else {
            (self.size - self.used_start) + (self.next_free - self.bs)
        };
        ring.saturating_sub(used)
    }

    /// Total bytes of the circular region.
    pub fn capacity(&self) -> u64 {
        self.size - self.bs
    }

    /// Append an entry (and copy its data into the mirror). Fails when there is no room; the
    /// caller decides whether to wait for the flusher or report ENOSPC.
    pub fn append(
        &mut self,
        mut e: Entry<'_>,
        data: Option<&[u8]>,
        reserve: u64,
    ) -> Option<Appended> {
        let esize = entry_size(e.kind, self.bitmap_bytes);
        let dlen = data
            .map(|d| (d.len() as u64).div_ceil(self.bs) * self.bs)
            .unwrap_or(0);
        let reuse_open = self.open.is_some() && self.open_fill + esize <= self.bs as usize;
        let empty = self.is_empty();
        if self.free_bytes() < reserve + dlen + if reuse_open { 0 } else { self.bs } {
            return None;
        }
        // Dry run: both allocations must fit before anything changes.
        let (sector_pos, after_sector) = if reuse_open {
            (
                self.sectors[(self.open.unwrap() - self.sector_base) as usize].pos,
                self.next_free,
            )
        } else {
            let p = self.fit(self.next_free, self.bs, empty)?;
            (p, p + self.bs)
        };
        let data_pos = if dlen == 0 {
            None
        } else if empty {
            // The fresh sector starts the live region: the data must not wrap onto it.
            let p = self.wrap(after_sector, dlen);
            if p != after_sector && p + dlen > sector_pos {
                return None;
            }
            Some(p)
        } else {
            Some(self.fit(after_sector, dlen, false)?)
        };
        // Commit.
        if !reuse_open {
            let abs = self.sector_base + self.sectors.len() as u64;
            self.mirror[sector_pos as usize..(sector_pos + self.bs) as usize].fill(0);
            self.sectors.push_back(Sector {
                pos: sector_pos,
                first_seq: self.next_seq,
                last_seq: self.next_seq - 1,
                written_seq: self.next_seq - 1,
                inflight: None,
                refs: 0,
                dirty: false,
            });
            if empty {
                self.used_start = sector_pos;
            }
            self.open = Some(abs);
            self.open_fill = 0;
            self.next_free = after_sector;
        }
        let abs = self.open.unwrap();
        if let (Some(p), Some(d)) = (data_pos, data) {
            self.mirror[p as usize..p as usize + d.len()].copy_from_slice(d);
            let pad_end = (p + dlen) as usize;
            self.mirror[p as usize + d.len()..pad_end].fill(0);
            e.loc = p;
            e.data_crc = crc32c::crc32c(d);
            self.next_free = p + dlen;
            self.data_inflight.push_back((self.next_seq, false));
        }
        e.seq = self.next_seq;
        e.epoch = self.epoch;
        let at = sector_pos as usize + self.open_fill;
        encode(&mut self.mirror[at..at + esize], &e);
        self.open_fill += esize;
        let s = &mut self.sectors[(abs - self.sector_base) as usize];
        s.last_seq = e.seq;
        s.dirty = true;
        s.refs += 1;
        self.next_seq += 1;
        Some(Appended {
            seq: e.seq,
            sector: abs,
            data_loc: data_pos.unwrap_or(0),
        })
    }

    /// Sector writes to submit now: every dirty sector without a write in flight, as long as
    /// sector buffers last. The sector is copied so later appends cannot tear the write.
    pub fn take_sector_writes(&mut self, out: &mut Vec<SectorWrite>) {
        let start = self.scan_from.max(self.sector_base);
        for abs in start..self.sector_base + self.sectors.len() as u64 {
            let i = (abs - self.sector_base) as usize;
            let s = &self.sectors[i];
            if !s.dirty || s.inflight.is_some() {
                continue;
            }
            let Some(buf) = self.free_bufs.pop() else {
                return;
            };
            let pos = s.pos;
            let last = s.last_seq;
            self.bufs[buf].copy_from_slice(&self.mirror[pos as usize..(pos + self.bs) as usize]);
            let s = &mut self.sectors[i];
            s.dirty = false;
            s.inflight = Some(last);
            if self.no_same_sector_overwrites && self.open == Some(abs) {
                self.open = None;
            }
            out.push(SectorWrite { abs, pos, buf });
        }
    }

    /// Gives up the journal's I/O buffers (mirror and sector buffers) without freeing them,
    /// for a store that can no longer wait for the I/O using them. The journal is unusable
    /// afterwards.
    pub(crate) fn leak_buffers(&mut self) {
        std::mem::forget(std::mem::replace(&mut self.mirror, AlignedBuf::new(0)));
        std::mem::forget(std::mem::take(&mut self.bufs));
    }

    /// Pointer to a sector buffer for submission.
    pub fn sector_buf_ptr(&mut self, buf: usize) -> *mut u8 {
        self.bufs[buf].as_mut_ptr()
    }

    /// A sector write finished successfully.
    pub fn sector_written(&mut self, w: SectorWrite) {
        let i = (w.abs - self.sector_base) as usize;
        let s = &mut self.sectors[i];
        s.written_seq = s
            .inflight
            .take()
            .expect("sector write completion without a write in flight");
        self.free_bufs.push(w.buf);
    }

    /// The data writes of the entries `first..=last` that carry data finished.
    pub fn data_written(&mut self, first: u64, last: u64) {
        let from = self.data_inflight.partition_point(|&(s, _)| s < first);
        for e in self.data_inflight.range_mut(from..) {
            if e.0 > last {
                break;
            }
            e.1 = true;
        }
        while matches!(self.data_inflight.front(), Some(&(_, true))) {
            self.data_inflight.pop_front();
        }
    }

    /// Every entry with `seq <= watermark()` and its data has reached the device.
    pub fn watermark(&mut self) -> u64 {
        self.scan_from = self.scan_from.max(self.sector_base);
        let end = self.sector_base + self.sectors.len() as u64;
        // Closed, fully written sectors can no longer change: skip them for good.
        while self.scan_from < end && self.open != Some(self.scan_from) {
            let s = &self.sectors[(self.scan_from - self.sector_base) as usize];
            if s.written_seq < s.last_seq {
                break;
            }
            self.scan_from += 1;
        }
        let mut w = self.next_seq - 1;
        for abs in self.scan_from..end {
            let s = &self.sectors[(abs - self.sector_base) as usize];
            if s.written_seq < s.last_seq {
                w = s.written_seq;
                break;
            }
        }
        if let Some(&(seq, _)) = self.data_inflight.front() {
            w = w.min(seq - 1);
        }
        w
    }

    /// Whether the oldest sector holds nothing live, so the start can move.
    pub fn can_trim(&self) -> bool {
        self.sectors.front().is_some_and(|s| {
            s.refs == 0 && s.inflight.is_none() && !s.dirty && s.written_seq == s.last_seq
        })
    }

    /// Bytes a trim would free now.
    pub fn trimmable_bytes(&self) -> u64 {
        let n = self
            .sectors
            .iter()
            .take_while(|s| {
                s.refs == 0 && s.inflight.is_none() && !s.dirty && s.written_seq == s.last_seq
            })
            .count();
        if n == 0 {
            return 0;
        }
        let to = self.sectors.get(n).map(|s| s.pos).unwrap_or(self.next_free);
        if to >= self.used_start {
            to - self.used_start
        } else {
            (self.size - self.used_start) + (to - self.bs)
        }
    }

    /// Sectors at the front that hold nothing live: `(count, new_start, seq at new_start)`.
    /// Closes the open sector if it is among them.
    pub fn trim_target(&mut self) -> Option<(usize, u64, u64)> {
        let n = self
            .sectors
            .iter()
            .take_while(|s| {
                s.refs == 0 && s.inflight.is_none() && !s.dirty && s.written_seq == s.last_seq
            })
            .count();
        if n == 0 {
            return None;
        }
        if let Some(o) = self.open {
            if o < self.sector_base + n as u64 {
                self.open = None;
            }
        }
        let (start, seq) = match self.sectors.get(n) {
            Some(s) => (s.pos, s.first_seq),
            None => (self.next_free, self.next_seq),
        };
        Some((n, start, seq))
    }

    /// The header moving the start past `n` sectors is durable: forget them.
    pub fn trimmed(&mut self, n: usize) {
        for _ in 0..n {
            let s = self
                .sectors
                .pop_front()
                .expect("trim past the end of the journal");
            debug_assert_eq!(s.refs, 0);
            self.sector_base += 1;
        }
        // The live region starts at the first live sector (the header's start may name a
        // position that the wrap rule moves; replay applies the same rule).
        self.used_start = self
            .sectors
            .front()
            .map(|s| s.pos)
            .unwrap_or(self.next_free);
    }

    /// Positions, for diagnostics.
    pub fn debug(&self) -> String {
        format!(
            "used_start={} next_free={} open={:?}/{} sectors={:?}",
            self.used_start,
            self.next_free,
            self.open,
            self.open_fill,
            self.sectors
                .iter()
                .map(|s| (s.pos, s.refs, s.first_seq, s.last_seq, s.written_seq))
                .collect::<Vec<_>>()
        )
    }

    /// Absolute number of the oldest live sector: every sector below it is trimmed.
    pub fn sector_base(&self) -> u64 {
        self.sector_base
    }

    /// Number of sectors between the durable start and the write position.
    pub fn live_sectors(&self) -> usize {
        self.sectors.len()
    }

    /// Bytes of `len` data at journal offset `loc`, from the mirror.
    pub fn data(&self, loc: u64, len: usize) -> &[u8] {
        &self.mirror[loc as usize..loc as usize + len]
    }

    /// Journal sector size.
    pub fn block_size(&self) -> u64 {
        self.bs
    }
}
