//! An engine for tests that watch the I/O a store asks for: the simulated disks behind an
//! [`Observer`] that sees every request, submit, completion and wait on its way through.
//! It must never change the I/O: what a test measures is what the store would do anyway.

use vitastor_blockstore::io::IoReq;
use vitastor_blockstore::simdisk::SimEngine;
use vitastor_blockstore::{Blockstore, BlockstoreConfig, IoEngine};

/// What a test counts or records; every hook does nothing unless the test overrides it.
pub trait Observer {
    /// A request queued for the device.
    fn pushed(&mut self, _req: &IoReq) {}
    /// A submit.
    fn submitting(&mut self) {}
    /// Completions just reaped.
    fn reaped(&mut self, _done: &[(u64, i32)]) {}
    /// A blocking wait, with the disks' I/O in flight before it.
    fn waiting(&mut self, _in_flight: usize) {}
}

/// The simulated disks (`inner`) watched by `seen`.
pub struct Tap<O> {
    pub inner: SimEngine,
    pub seen: O,
}

/// A store on `disks` behind a [`Tap`] with `seen`; with `prompt`, every submitted I/O
/// completes by the next reap, as a fast disk's would within one wait.
pub fn open_tapped<O: Observer>(
    cfg: &BlockstoreConfig,
    disks: Vec<vitastor_blockstore::simdisk::SimDisk>,
    seen: O,
    prompt: bool,
) -> Blockstore<Tap<O>> {
    let (_, devs) = vitastor_blockstore::device_paths(cfg);
    let mut inner = SimEngine::new(disks, 7);
    if prompt {
        inner.deliver_prob = 1.0;
    }
    Blockstore::open_with(Tap { inner, seen }, devs, cfg).expect("open")
}

impl<O: Observer> IoEngine for Tap<O> {
    unsafe fn push(&mut self, req: IoReq) {
        self.seen.pushed(&req);
        // SAFETY: forwarded unchanged; our caller upholds the buffer contract.
        unsafe { self.inner.push(req) }
    }
    fn submit(&mut self) -> std::io::Result<()> {
        self.seen.submitting();
        self.inner.submit()
    }
    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        let from = out.len();
        self.inner.reap(out);
        self.seen.reaped(&out[from..]);
    }
    fn wait(&mut self) -> std::io::Result<()> {
        self.seen.waiting(self.inner.in_flight());
        self.inner.wait()
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
    vitastor_blockstore::forward_device_access!(inner);
}
