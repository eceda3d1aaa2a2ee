//! Reads: where each requested byte lives (journal, redirect block, clean block or nowhere)
//! and the device reads that fetch it, plus the read epochs that keep a freed data block
//! from being reused while a read may still target it.
//!
//! A read must never wait for background work: it is served from whatever version the index
//! names now, and never queues behind the flusher, a trim or a fsync.

use super::*;

/// Read buffers handed back by the caller, kept for later reads (see
/// [`Blockstore::recycle_read`]): at most this many of each.
const READ_POOL: usize = 64;

/// Working memory of `start_read`, kept between reads so that a read allocates nothing but
/// what its reply carries (and nothing at all when the caller recycles those).
#[derive(Default)]
pub(super) struct Scratch {
    /// Per granule of the range: already resolved by a newer version.
    covered: Vec<bool>,
    /// Device reads: (device offset, buffer offset, length).
    pieces: Vec<(u64, u32, u32)>,
    buffers: Vec<AlignedBuf>,
    bitmaps: Vec<Vec<u8>>,
}

impl Scratch {
    /// A copy of `src` (zeroes of `bytes` when `None`) as a reply bitmap, recycled when one
    /// is pooled.
    fn bitmap(&mut self, src: Option<&[u8]>, bytes: usize) -> Vec<u8> {
        let mut b = self.bitmaps.pop().unwrap_or_default();
        b.clear();
        match src {
            Some(s) => b.extend_from_slice(s),
            None => b.resize(bytes, 0),
        }
        b
    }
}

impl<E: IoEngine> Blockstore<E> {
    /// Give a read's reply buffers back once the caller is done with them: later reads take
    /// them instead of allocating.
    pub fn recycle_read(&mut self, data: AlignedBuf, bitmap: Vec<u8>) {
        let sc = &mut self.read_scratch;
        if data.capacity() > 0 && sc.buffers.len() < READ_POOL {
            sc.buffers.push(data);
        }
        if bitmap.capacity() >= self.index.bitmap_bytes && sc.bitmaps.len() < READ_POOL {
            sc.bitmaps.push(bitmap);
        }
    }

    /// A zeroed buffer of `len` bytes, recycled when one fits.
    fn read_buffer(&mut self, len: usize) -> AlignedBuf {
        let want = len.div_ceil(crate::io::IO_ALIGN) * crate::io::IO_ALIGN;
        let pool = &mut self.read_scratch.buffers;
        match pool.iter().rposition(|b| b.capacity() == want) {
            Some(i) => {
                let mut b = pool.swap_remove(i);
                b.set_len(len);
                b.fill(0);
                b
            }
            None => AlignedBuf::new(len),
        }
    }

    pub(super) fn start_read(
        &mut self,
        id: OpId,
        oid: ObjectId,
        version: u64,
        offset: u32,
        len: u32,
    ) {
        let a = self.layout.disk_alignment;
        let bsz = self.layout.block_size;
        if !offset.is_multiple_of(a)
            || !len.is_multiple_of(a)
            || offset as u64 + len as u64 > bsz as u64
        {
            self.done.push(Completion {
                id,
                result: Err(BsError::Invalid(format!(
                    "read of {len} bytes at {offset}: must be aligned to {a} and inside the object"
                ))),
            });
            return;
        }
        let mut data = self.read_buffer(len as usize);
        let gran = self.layout.bitmap_granularity;
        let Some((ver, top)) = self.index.visible_version(oid, version) else {
            let bitmap = self.read_scratch.bitmap(None, self.index.bitmap_bytes);
            self.done.push(Completion {
                id,
                result: Ok(BsReply::Read {
                    version: 0,
                    bitmap,
                    data,
                }),
            });
            return;
        };
        // Reads report the external bitmap; the allocation bitmap says where bytes are.
        let (alloc_block, bitmap) = match top {
            Some(d) if d.kind == DirtyKind::Delete => (None, None),
            Some(d) => (Some(None), Some(&d.attr[..])),
            None => {
                let block = self.index.clean[&oid].block;
                (Some(Some(block)), Some(self.index.clean_attr(block)))
            }
        };
        let mut sc = std::mem::take(&mut self.read_scratch);
        let bitmap = sc.bitmap(bitmap, self.index.bitmap_bytes);
        // Resolve each granule of the range, newest version first.
        let first_g = offset / gran;
        let end = offset + len;
        let ng = if len == 0 {
            0
        } else {
            (end - 1) / gran - first_g + 1
        };
        // Granules the visible version's allocation bitmap does not have read as zeroes,
        // whatever older versions held there (a write that clears external bits drops them).
        let alloc: Option<&[u8]> = match alloc_block {
            None => None,
            Some(None) => top.map(|d| &d.bitmap[..]),
            Some(Some(block)) => Some(self.index.clean_bitmap(block)),
        };
        let covered = &mut sc.covered;
        covered.clear();
        covered.extend((0..ng).map(|gi| alloc.is_none_or(|a| !is_set(a, first_g + gi))));
        let reads = &mut sc.pieces;
        reads.clear();
        let mut terminal = false;
        for (ov, d) in self.index.dirty_desc(oid, ver) {
            if d.state == DState::InFlight || ov.version > ver {
                continue;
            }
            for gi in 0..ng {
                if covered[gi as usize] {
                    continue;
                }
                let g = first_g + gi;
                let (ps, pe) = ((g * gran).max(offset), ((g + 1) * gran).min(end));
                match d.kind {
                    DirtyKind::Small { loc } => {
                        if ps >= d.offset && pe <= d.offset + d.len {
                            let src = self
                                .journal
                                .data(loc + (ps - d.offset) as u64, (pe - ps) as usize);
                            data[(ps - offset) as usize..(pe - offset) as usize]
                                .copy_from_slice(src);
                            covered[gi as usize] = true;
                        }
                    }
                    DirtyKind::Big { block } => {
                        if is_set(&d.bitmap, g) {
                            reads.push((
                                self.layout.block_offset(block) + ps as u64,
                                ps - offset,
                                pe - ps,
                            ));
                        }
                        covered[gi as usize] = true;
                    }
                    DirtyKind::Delete => covered[gi as usize] = true,
                }
            }
            if matches!(d.kind, DirtyKind::Big { .. } | DirtyKind::Delete) {
                terminal = true;
                break;
            }
        }
        if !terminal {
            if let Some(c) = self.index.clean.get(&oid).copied() {
                let cb = self.index.clean_bitmap(c.block);
                for gi in 0..ng {
                    let g = first_g + gi;
                    if !covered[gi as usize] && is_set(cb, g) {
                        let (ps, pe) = ((g * gran).max(offset), ((g + 1) * gran).min(end));
                        reads.push((
                            self.layout.block_offset(c.block) + ps as u64,
                            ps - offset,
                            pe - ps,
                        ));
                    }
                }
            }
        }
        if reads.is_empty() {
            self.read_scratch = sc;
            self.done.push(Completion {
                id,
                result: Ok(BsReply::Read {
                    version: ver,
                    bitmap,
                    data,
                }),
            });
            return;
        }
        // Coalesce adjacent pieces into single device reads, in place.
        reads.sort_unstable_by_key(|r| r.1);
        let mut n = 0;
        for i in 0..reads.len() {
            let r = reads[i];
            if n > 0 {
                let last = &mut reads[n - 1];
                if last.0 + last.2 as u64 == r.0 && last.1 + last.2 == r.1 {
                    last.2 += r.2;
                    continue;
                }
            }
            reads[n] = r;
            n += 1;
        }
        reads.truncate(n);
        let epoch = self.read_epoch;
        match self.reads_inflight.back_mut() {
            Some((e, n)) if *e == epoch => *n += 1,
            _ => self.reads_inflight.push_back((epoch, 1)),
        }
        let pending = sc.pieces.len() as u32;
        let ptr = data.as_mut_ptr();
        let slot = self.alloc_slot(Op {
            id,
            body: Body::Read {
                pending,
                version: ver,
                bitmap,
                data,
                epoch,
                err: 0,
            },
        });
        for &(dev_off, buf_off, l) in &sc.pieces {
            // SAFETY: `data` lives in the op slot until every read of this op completes.
            unsafe {
                self.engine.push(IoReq {
                    dev: self.devs.data,
                    kind: IoKind::Read,
                    offset: dev_off,
                    ptr: ptr.add(buf_off as usize),
                    len: l as usize,
                    token: tok(T_OP, slot as u64),
                });
            }
        }
        self.read_scratch = sc;
    }

    pub(super) fn read_done(&mut self, epoch: u64) {
        for (e, n) in self.reads_inflight.iter_mut() {
            if *e == epoch {
                *n -= 1;
                break;
            }
        }
        while matches!(self.reads_inflight.front(), Some(&(_, 0))) {
            self.reads_inflight.pop_front();
        }
    }

    /// Free a data block once no read that started before now can still target it.
    pub(super) fn defer_free(&mut self, block: u64) {
        self.pending_free.push_back((self.read_epoch, block));
        self.read_epoch += 1;
    }

    pub(super) fn release_frees(&mut self) {
        let oldest = self.reads_inflight.front().map(|&(e, _)| e);
        while let Some(&(e, b)) = self.pending_free.front() {
            if oldest.is_some_and(|o| o <= e) {
                break;
            }
            self.pending_free.pop_front();
            self.alloc.free(b);
        }
    }
}
