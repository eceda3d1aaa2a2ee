//! The narrow I/O interface under the blockstore: queue reads, writes and fsyncs against a
//! small table of devices, submit them in batches, reap completions by token. The real engine
//! is io_uring ([`crate::uring::UringEngine`]); tests use an in-memory engine that can lose
//! power ([`crate::simdisk::SimEngine`]). This module never blocks on the data path.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;

/// Alignment of every buffer handed to the devices (O_DIRECT needs the logical block size;
/// 4096 covers every device we support).
pub const IO_ALIGN: usize = 4096;

/// Index of an opened device in the engine's table (data, meta and journal may share one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevId(pub u8);

/// What one queued I/O does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    /// Read `len` bytes into `ptr`.
    Read,
    /// Write `len` bytes from `ptr`.
    Write,
    /// Flush the device's completed writes to stable storage.
    Fsync,
}

/// One queued I/O. `ptr`/`len` are unused for [`IoKind::Fsync`].
#[derive(Clone, Copy, Debug)]
pub struct IoReq {
    /// Target device.
    pub dev: DevId,
    /// Operation.
    pub kind: IoKind,
    /// Byte offset on the device.
    pub offset: u64,
    /// Buffer start.
    pub ptr: *mut u8,
    /// Buffer length in bytes.
    pub len: usize,
    /// Returned with the completion.
    pub token: u64,
}

/// An I/O engine: the blockstore's only way to touch devices.
pub trait IoEngine {
    /// Queue one I/O.
    ///
    /// # Safety
    /// For reads and writes, `req.ptr .. req.ptr + req.len` must stay valid, and for reads must
    /// not be accessed by anyone else, until the completion with `req.token` has been reaped.
    unsafe fn push(&mut self, req: IoReq);
    /// Hand everything queued to the device without waiting.
    fn submit(&mut self) -> io::Result<()>;
    /// Move finished I/Os to `out` as `(token, result)`: bytes transferred, or `-errno`.
    fn reap(&mut self, out: &mut Vec<(u64, i32)>);
    /// Submit whatever is queued, then block until at least one I/O has finished (returns at
    /// once if none is pending). The blockstore relies on the submission: I/O queued by
    /// `Blockstore::poll` goes out with the next wait.
    fn wait(&mut self) -> io::Result<()>;
    /// Number of I/Os pushed but not yet reaped.
    fn in_flight(&self) -> usize;
    /// Size of a device in bytes.
    fn dev_size(&self, dev: DevId) -> u64;
    /// Blocking read used only while opening (superblock, metadata, journal replay).
    fn read_at(&mut self, dev: DevId, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Blocking write used only by `prepare` and format tools.
    fn write_at(&mut self, dev: DevId, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Blocking fsync used only by `prepare` and format tools.
    fn sync_dev(&mut self, dev: DevId) -> io::Result<()>;
}

/// The blocking device access of an [`IoEngine`] that wraps another engine in field
/// `$inner` and changes only how the data path's I/O is queued or observed: `dev_size`,
/// `read_at`, `write_at` and `sync_dev` go to the wrapped engine unchanged. Use it inside the
/// wrapper's `impl IoEngine`.
#[macro_export]
macro_rules! forward_device_access {
    ($inner:ident) => {
        fn dev_size(&self, dev: $crate::io::DevId) -> u64 {
            self.$inner.dev_size(dev)
        }
        fn read_at(
            &mut self,
            dev: $crate::io::DevId,
            offset: u64,
            buf: &mut [u8],
        ) -> ::std::io::Result<()> {
            self.$inner.read_at(dev, offset, buf)
        }
        fn write_at(
            &mut self,
            dev: $crate::io::DevId,
            offset: u64,
            buf: &[u8],
        ) -> ::std::io::Result<()> {
            self.$inner.write_at(dev, offset, buf)
        }
        fn sync_dev(&mut self, dev: $crate::io::DevId) -> ::std::io::Result<()> {
            self.$inner.sync_dev(dev)
        }
    };
}

/// A heap buffer aligned to [`IO_ALIGN`], usable for O_DIRECT. Freed buffers are kept for
/// reuse per thread (see [`AlignedBuf::for_overwrite`]), so the data path does not allocate,
/// zero and page in a fresh 128 KiB buffer for every write it receives. A buffer may also be
/// a read-only view of another one it keeps alive ([`AlignedBuf::shared`]): write data that
/// the OSD also sends to replicas is written to its own disk from the same bytes.
///
/// Not `Send`: one thread's data path owns its buffers (the view's count is an `Rc`).
pub struct AlignedBuf {
    /// The allocation: `cap` bytes, [`IO_ALIGN`]-aligned (owned unless `shared_from`).
    base: NonNull<u8>,
    /// Where the visible bytes start in the allocation.
    start: usize,
    len: usize,
    cap: usize,
    /// For a view: the buffer that owns the bytes.
    shared_from: Option<Rc<AlignedBuf>>,
}

/// Bytes of freed buffers one thread keeps for reuse: a few hundred 128 KiB writes in flight.
const SPARE_LIMIT: usize = 64 << 20;
/// Larger buffers are rare (recovery of big objects, reads of many blocks) and go back to
/// the allocator.
const SPARE_MAX_BUF: usize = 4 << 20;

/// Freed allocations of one thread by size; every one is initialised memory (zeroed when it
/// was first allocated, written since).
#[derive(Default)]
struct Spare {
    by_cap: Vec<(usize, Vec<NonNull<u8>>)>,
    bytes: usize,
}

impl Spare {
    fn take(&mut self, cap: usize) -> Option<NonNull<u8>> {
        let (_, list) = self.by_cap.iter_mut().find(|(c, _)| *c == cap)?;
        let p = list.pop()?;
        self.bytes -= cap;
        Some(p)
    }

    fn keep(&mut self, cap: usize, p: NonNull<u8>) -> bool {
        if cap > SPARE_MAX_BUF || self.bytes + cap > SPARE_LIMIT {
            return false;
        }
        match self.by_cap.iter_mut().find(|(c, _)| *c == cap) {
            Some((_, list)) => list.push(p),
            None => self.by_cap.push((cap, vec![p])),
        }
        self.bytes += cap;
        true
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        for (cap, list) in self.by_cap.drain(..) {
            let layout = Layout::from_size_align(cap, IO_ALIGN).expect("buffer layout");
            for p in list {
                // SAFETY: allocated by `allocation` with this exact layout and owned here.
                unsafe { dealloc(p.as_ptr(), layout) }
            }
        }
    }
}

thread_local! {
    static SPARE: std::cell::RefCell<Spare> = std::cell::RefCell::new(Spare::default());
}

/// An allocation of `cap` bytes (a multiple of [`IO_ALIGN`]) of initialised memory, reused
/// when this thread freed one of that size; the contents are unspecified.
fn allocation(cap: usize) -> NonNull<u8> {
    if let Some(p) = SPARE.try_with(|s| s.borrow_mut().take(cap)).ok().flatten() {
        return p;
    }
    let layout = Layout::from_size_align(cap, IO_ALIGN).expect("buffer layout");
    // SAFETY: layout has non-zero size. Zeroed so that every byte is initialised, which lets
    // a reused buffer be handed out as `&[u8]` without being cleared again.
    let raw = unsafe { alloc_zeroed(layout) };
    NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (capacity rounded up to the alignment). An empty buffer
    /// (deletions, bitmap-only reads) allocates nothing.
    pub fn new(len: usize) -> Self {
        let mut b = Self::for_overwrite(len);
        // The padding too: a reader may grow the length within the capacity.
        b.len = b.cap;
        b.fill(0);
        b.len = len;
        b
    }

    /// A buffer of `len` bytes whose contents are unspecified (old data of this process):
    /// only for a caller that overwrites every byte, like a socket read of a payload or a
    /// copy. Takes a freed buffer of the same size when there is one.
    pub fn for_overwrite(len: usize) -> Self {
        if len == 0 {
            return Self::empty();
        }
        let cap = len.div_ceil(IO_ALIGN) * IO_ALIGN;
        AlignedBuf {
            base: allocation(cap),
            start: 0,
            len,
            cap,
            shared_from: None,
        }
    }

    /// A read-only view of `buf`'s bytes that keeps it alive, for a device write of data
    /// other owners read too; no copy. Its bytes cannot be changed ([`DerefMut`] panics).
    pub fn shared(buf: &Rc<AlignedBuf>) -> Self {
        AlignedBuf {
            base: buf.base,
            start: buf.start,
            len: buf.len,
            cap: buf.cap,
            shared_from: Some(Rc::clone(buf)),
        }
    }

    /// Like [`AlignedBuf::for_overwrite`], but the `len` bytes end at an [`IO_ALIGN`]
    /// boundary instead of starting at one: a received payload whose short head (a
    /// SEC_WRITE's bitmap) precedes whole blocks of data then has that data aligned, and
    /// [`AlignedBuf::skip`] of the head leaves a buffer the device can write from.
    pub fn for_receive(len: usize) -> Self {
        let mut b = Self::for_overwrite(len);
        b.start = b.cap - len;
        b
    }

    fn empty() -> Self {
        AlignedBuf {
            base: NonNull::new(IO_ALIGN as *mut u8).expect("non-null"),
            start: 0,
            len: 0,
            cap: 0,
            shared_from: None,
        }
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> Self {
        let mut b = Self::for_overwrite(data.len());
        b.copy_from_slice(data);
        b
    }

    /// Drops the first `n` bytes from view without moving the rest.
    pub fn skip(&mut self, n: usize) {
        assert!(n <= self.len, "AlignedBuf::skip beyond the end");
        self.start += n;
        self.len -= n;
    }

    /// Whether the first byte is [`IO_ALIGN`]-aligned, as O_DIRECT needs.
    pub fn is_aligned(&self) -> bool {
        self.start.is_multiple_of(IO_ALIGN)
    }

    /// Raw pointer for I/O submission; device reads into it only on a buffer of its own
    /// (never a [`AlignedBuf::shared`] view).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: start <= cap, inside (or one past) the allocation.
        unsafe { self.base.as_ptr().add(self.start) }
    }

    /// Bytes usable from the start (the length rounded up to the alignment).
    pub fn capacity(&self) -> usize {
        self.cap - self.start
    }

    /// Shrink or grow the visible length within the allocated capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "AlignedBuf::set_len beyond capacity"
        );
        self.len = len;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap == 0 || self.shared_from.is_some() {
            return;
        }
        let (cap, base) = (self.cap, self.base);
        if SPARE
            .try_with(|s| s.borrow_mut().keep(cap, base))
            .unwrap_or(false)
        {
            return;
        }
        let layout = Layout::from_size_align(cap, IO_ALIGN).expect("buffer layout");
        // SAFETY: allocated by `allocation` with this exact layout.
        unsafe { dealloc(base.as_ptr(), layout) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the allocation holds cap >= start + len initialised bytes (zeroed when
        // allocated).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.start), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        assert!(
            self.shared_from.is_none(),
            "a shared AlignedBuf view is read-only"
        );
        // SAFETY: as in Deref, and &mut self on a buffer of its own guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(self.start), self.len) }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

/// Equal when the bytes in view are: where the buffer lives does not matter.
impl PartialEq for AlignedBuf {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl Eq for AlignedBuf {}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freed buffer is reused by the next one of its size: no allocation, zeroing and page
    /// faults per write received.
    #[test]
    fn freed_buffers_are_reused() {
        let mut a = AlignedBuf::for_overwrite(128 << 10);
        a.fill(7);
        let p = a.as_mut_ptr();
        drop(a);
        let mut b = AlignedBuf::for_overwrite(128 << 10);
        assert_eq!(b.as_mut_ptr(), p);
        drop(b);
        // `new` still promises zeroes, reused or not, up to its capacity.
        let mut c = AlignedBuf::new((128 << 10) - 100);
        assert_eq!(c.as_mut_ptr(), p);
        c.set_len(c.capacity());
        assert!(c.iter().all(|&x| x == 0));
    }

    /// A view shares the bytes (no copy) and keeps them alive after the other owner is gone.
    #[test]
    fn shared_views_do_not_copy() {
        let mut b = AlignedBuf::for_overwrite(8192);
        b.fill(9);
        let rc = Rc::new(b);
        let mut v = AlignedBuf::shared(&rc);
        assert_eq!(v.as_ptr(), rc.as_ptr());
        drop(rc);
        assert_eq!(v.len(), 8192);
        assert!(v.iter().all(|&x| x == 9));
        assert_eq!(v.as_mut_ptr() as usize % IO_ALIGN, 0);
    }

    /// A received SEC_WRITE payload (a 4-byte bitmap, then 128 KiB of data) has its data
    /// aligned once the bitmap is skipped, so the store writes it in place.
    #[test]
    fn receive_buffers_end_aligned() {
        let mut b = AlignedBuf::for_receive(4 + (128 << 10));
        assert_eq!(b.len(), 4 + (128 << 10));
        assert!(!b.is_aligned());
        b.skip(4);
        assert!(b.is_aligned());
        assert_eq!(b.as_mut_ptr() as usize % IO_ALIGN, 0);
        assert_eq!(b.len(), 128 << 10);
        assert_eq!(b.capacity(), 128 << 10);
        // Whole blocks start aligned as before.
        let mut w = AlignedBuf::for_receive(8192);
        assert!(w.is_aligned() && (w.as_mut_ptr() as usize).is_multiple_of(IO_ALIGN));
    }
}
