//! The blockstore's record of every device I/O between the moment it is queued and its final
//! completion, wrapped around whichever [`IoEngine`] runs underneath (io_uring or the
//! simulated disks), so that both behave the same:
//!
//! - a short transfer (`0 <= res < len`) is never reported as success: the remainder is
//!   resubmitted, and after [`MAX_SHORT_RESUBMITS`] resubmissions the I/O fails with EIO;
//! - an optional [`FaultPlan`] fails, shortens or delays chosen I/Os and fails waits; a
//!   delayed I/O is held here (counted in flight) until its time, then handed to the engine
//!   on the next submit or wait.
//!
//! The fault layer is always compiled in and inert unless a plan is set: the OSD binary the
//! multi-process tests start is the release binary, and the cost of an unset plan is one
//! `Option` check per I/O. The table of in-flight I/Os is needed for the short-transfer retry
//! anyway; its slots are reused, so the data path allocates nothing once warm.
//!
//! This module never interprets tokens: the blockstore's token comes back unchanged with the
//! final result.

use std::io;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::fault::{Fault, FaultPlan, Region, Target};
use crate::io::{DevId, IoEngine, IoKind, IoReq, IO_ALIGN};
use crate::layout::Layout;

/// Resubmissions of one I/O's remainder before it fails with EIO. Real devices return short
/// transfers rarely and make progress when they do (a signal, a partial page-cache copy on a
/// buffered file); one that keeps doing it is broken, and an unbounded retry would hide that.
pub(crate) const MAX_SHORT_RESUBMITS: u32 = 8;

struct Slot {
    /// What is left to transfer, with the blockstore's own token.
    req: IoReq,
    /// Bytes transferred by earlier completions of this I/O.
    done: usize,
    resubmits: u32,
    /// The error an injected fault makes this I/O report (0: none).
    forced: i32,
}

/// An [`IoEngine`] whose every I/O is tracked to its final completion (see the module doc).
pub(crate) struct Tracked<E> {
    inner: E,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// `(device, region, start, end)` of each area, to aim faults at one of them.
    regions: Vec<(DevId, Region, u64, u64)>,
    plan: Option<FaultPlan>,
    scratch: Vec<(u64, i32)>,
    /// I/Os a `delay` fault holds back: when each may go, and its slot.
    held: Vec<(Instant, usize)>,
}

impl<E: IoEngine> Tracked<E> {
    pub(crate) fn new(inner: E, layout: &Layout, devs: crate::Devices) -> Self {
        let regions = [
            (devs.data, Region::Data, layout.data),
            (devs.meta, Region::Meta, layout.meta),
            (devs.journal, Region::Journal, layout.journal),
        ]
        .into_iter()
        .map(|(d, r, a)| (d, r, a.offset, a.offset + a.size))
        .collect();
        Tracked {
            inner,
            slots: Vec::new(),
            free: Vec::new(),
            regions,
            plan: None,
            scratch: Vec::new(),
            held: Vec::new(),
        }
    }

    pub(crate) fn inner_mut(&mut self) -> &mut E {
        &mut self.inner
    }

    pub(crate) fn set_plan(&mut self, plan: Option<FaultPlan>) {
        self.plan = plan;
    }

    pub(crate) fn plan(&self) -> Option<&FaultPlan> {
        self.plan.as_ref()
    }

    /// The areas an I/O touches, as a set of [`Region::bit`]s.
    fn areas(&self, req: &IoReq) -> u8 {
        self.regions
            .iter()
            .filter(|&&(dev, _, start, end)| {
                dev == req.dev && (req.kind == IoKind::Fsync || (start..end).contains(&req.offset))
            })
            .fold(0, |set, &(_, r, _, _)| set | r.bit())
    }

    /// Counts one I/O against the plan and returns the fault to inject, if any.
    fn decide(&mut self, req: &IoReq) -> Option<Fault> {
        self.plan.as_ref()?;
        let areas = self.areas(req);
        let target = match req.kind {
            IoKind::Read => Target::Read,
            IoKind::Write => Target::Write,
            IoKind::Fsync => Target::Fsync,
        };
        let fault = self.plan.as_mut()?.decide(target, areas)?;
        tracing::warn!(
            "injected fault {fault:?} on {:?} of {} bytes at {} on device {}",
            req.kind,
            req.len,
            req.offset,
            req.dev.0
        );
        Some(fault)
    }

    /// Hands `slot`'s remaining transfer to the engine, as the plan (if any) allows.
    ///
    /// # Safety
    /// The slot's buffer must stay valid until its final completion (the [`IoEngine::push`]
    /// contract, which the blockstore gave for the whole I/O).
    unsafe fn issue(&mut self, slot: usize) {
        let s = self.slots[slot]
            .as_ref()
            .expect("issuing an empty I/O slot");
        let mut req = IoReq {
            token: slot as u64,
            ..s.req
        };
        match self.decide(&req) {
            None => {}
            Some(Fault::Delay(ms)) => {
                let due = Instant::now() + Duration::from_millis(u64::from(ms));
                self.held.push((due, slot));
                return;
            }
            Some(Fault::Short) => req.len = req.len / 2 / IO_ALIGN * IO_ALIGN,
            // A failed I/O transfers nothing. It still goes through the engine, as an empty
            // read, so that its completion arrives (and wakes a waiting ring) like any other.
            Some(f) => {
                self.slots[slot].as_mut().expect("slot").forced = f.errno();
                req.kind = IoKind::Read;
                req.ptr = NonNull::<u8>::dangling().as_ptr();
                req.len = 0;
            }
        }
        // SAFETY: the caller keeps the buffer valid; an empty read touches no memory.
        unsafe { self.inner.push(req) };
    }

    /// Hands the engine every held I/O whose time has come by `now`.
    fn release_held(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 > now {
                i += 1;
                continue;
            }
            let (_, slot) = self.held.swap_remove(i);
            let s = self.slots[slot].as_ref().expect("a held I/O's slot");
            let req = IoReq {
                token: slot as u64,
                ..s.req
            };
            // SAFETY: the blockstore keeps the buffer until this I/O's final completion,
            // which cannot have come: the engine never saw it.
            unsafe { self.inner.push(req) };
        }
    }
}

impl<E: IoEngine> IoEngine for Tracked<E> {
    unsafe fn push(&mut self, req: IoReq) {
        let s = Slot {
            req,
            done: 0,
            resubmits: 0,
            forced: 0,
        };
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(s);
                i
            }
            None => {
                self.slots.push(Some(s));
                self.slots.len() - 1
            }
        };
        // SAFETY: forwarded from our caller.
        unsafe { self.issue(slot) };
    }

    fn submit(&mut self) -> io::Result<()> {
        if !self.held.is_empty() {
            self.release_held(Instant::now());
        }
        self.inner.submit()
    }

    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        let mut reaped = std::mem::take(&mut self.scratch);
        self.inner.reap(&mut reaped);
        for &(inner_token, res) in &reaped {
            let slot = inner_token as usize;
            let s = self.slots[slot]
                .as_mut()
                .expect("completion of an unknown I/O");
            let result = if s.forced != 0 {
                Some(s.forced)
            } else if res < 0 || s.req.kind == IoKind::Fsync {
                Some(res)
            } else if res as usize >= s.req.len {
                Some((s.done + res as usize) as i32)
            } else if s.resubmits >= MAX_SHORT_RESUBMITS {
                tracing::error!(
                    "{:?} of {} bytes at {} on device {} still short after {} resubmissions",
                    s.req.kind,
                    s.req.len,
                    s.req.offset,
                    s.req.dev.0,
                    s.resubmits
                );
                Some(-libc::EIO)
            } else {
                let n = res as usize;
                s.done += n;
                s.resubmits += 1;
                s.req.offset += n as u64;
                // SAFETY: `n` is less than the remaining length, so this stays inside the
                // buffer the blockstore handed in.
                s.req.ptr = unsafe { s.req.ptr.add(n) };
                s.req.len -= n;
                None
            };
            match result {
                Some(r) => {
                    let token = s.req.token;
                    self.slots[slot] = None;
                    self.free.push(slot);
                    out.push((token, r));
                }
                // SAFETY: the blockstore keeps the buffer until this I/O's final completion,
                // which has not been delivered yet.
                None => unsafe { self.issue(slot) },
            }
        }
        reaped.clear();
        self.scratch = reaped;
    }

    fn wait(&mut self) -> io::Result<()> {
        if let Some(plan) = self.plan.as_mut() {
            if let Some(f) = plan.decide(Target::Wait, 0) {
                tracing::warn!("injected fault {f:?} on wait");
                return Err(io::Error::from_raw_os_error(-f.errno()));
            }
        }
        if !self.held.is_empty() {
            // Nothing the engine runs can wake the wait: sleep until a held I/O may go.
            if self.inner.in_flight() == 0 {
                if let Some(due) = self.held.iter().map(|&(due, _)| due).min() {
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
            }
            self.release_held(Instant::now());
        }
        self.inner.wait()
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.held.len()
    }

    crate::forward_device_access!(inner);
}
