//! The narrow I/O interface under the blockstore: queue reads, writes and fsyncs against a
//! small table of devices, submit them in batches, reap completions by token. The real engine
//! is io_uring ([`crate::uring::UringEngine`]); tests use an in-memory engine that can lose
//! power ([`crate::simdisk::SimEngine`]). This module never blocks on the data path.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

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

/// A zero-initialised heap buffer aligned to [`IO_ALIGN`], usable for O_DIRECT.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (capacity rounded up to the alignment). An empty buffer
    /// (deletions, bitmap-only reads) allocates nothing.
    pub fn new(len: usize) -> Self {
        if len == 0 {
            let ptr = NonNull::new(IO_ALIGN as *mut u8).expect("non-null");
            return AlignedBuf {
                ptr,
                len: 0,
                cap: 0,
            };
        }
        let cap = len.div_ceil(IO_ALIGN) * IO_ALIGN;
        let layout = Layout::from_size_align(cap, IO_ALIGN).expect("buffer layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len, cap }
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> Self {
        let mut b = Self::new(data.len());
        b.copy_from_slice(data);
        b
    }

    /// Raw pointer for I/O submission.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes allocated (the length rounded up to the alignment).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Shrink or grow the visible length within the allocated capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "AlignedBuf::set_len beyond capacity");
        self.len = len;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap == 0 {
            return;
        }
        let layout = Layout::from_size_align(self.cap, IO_ALIGN).expect("buffer layout");
        // SAFETY: allocated in `new` with this exact layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for cap >= len initialised (zeroed) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in Deref, and &mut self guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}
