//! An engine that misbehaves: waits that fail for a while or for good, a completion that
//! never comes. The store must never free a buffer the device may still be using (checked by
//! this binary's allocator against the I/Os in flight at each free), must keep waiting
//! through transient errors, and must report a stuck store as an error rather than panic.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

use common::*;
use vitastor_blockstore::io::{IoEngine, IoReq};
use vitastor_blockstore::simdisk::SimEngine;
use vitastor_blockstore::{device_paths, Blockstore, BsError, BsOp, FaultPlan, ObjectId};

const WATCH_SLOTS: usize = 256;
/// Start and end of the buffer of each I/O in flight (0: free slot).
static IO_START: [AtomicUsize; WATCH_SLOTS] = [const { AtomicUsize::new(0) }; WATCH_SLOTS];
static IO_END: [AtomicUsize; WATCH_SLOTS] = [const { AtomicUsize::new(0) }; WATCH_SLOTS];
static IO_TOKEN: [AtomicUsize; WATCH_SLOTS] = [const { AtomicUsize::new(0) }; WATCH_SLOTS];
/// Frees of memory that an I/O in flight was using.
static BAD_FREES: AtomicUsize = AtomicUsize::new(0);
/// The watch is global: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct WatchingAlloc;

// SAFETY: forwards to the system allocator; the extra check only reads atomics.
unsafe impl GlobalAlloc for WatchingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let (start, end) = (p as usize, p as usize + l.size());
        for i in 0..WATCH_SLOTS {
            let s = IO_START[i].load(SeqCst);
            if s != 0 && s < end && IO_END[i].load(SeqCst) > start {
                BAD_FREES.fetch_add(1, SeqCst);
            }
        }
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: WatchingAlloc = WatchingAlloc;

/// Simulated disks that publish the buffers of I/O in flight, and can lose one completion.
struct Watched {
    sim: SimEngine,
    /// Drop the completion of the next write to reach the device (it still happens).
    lose_next_write: bool,
    lost: Option<u64>,
}

impl IoEngine for Watched {
    unsafe fn push(&mut self, req: IoReq) {
        if req.len > 0 {
            let i = (0..WATCH_SLOTS)
                .find(|&i| IO_START[i].load(SeqCst) == 0)
                .expect("watch slots");
            IO_TOKEN[i].store(req.token as usize, SeqCst);
            IO_END[i].store(req.ptr as usize + req.len, SeqCst);
            IO_START[i].store(req.ptr as usize, SeqCst);
        }
        if self.lose_next_write && req.kind == vitastor_blockstore::io::IoKind::Write {
            self.lose_next_write = false;
            self.lost = Some(req.token);
        }
        unsafe { self.sim.push(req) }
    }
    fn submit(&mut self) -> io::Result<()> {
        self.sim.submit()
    }
    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        let from = out.len();
        self.sim.reap(out);
        for &(token, _) in &out[from..] {
            for i in 0..WATCH_SLOTS {
                if IO_START[i].load(SeqCst) != 0 && IO_TOKEN[i].load(SeqCst) == token as usize {
                    IO_START[i].store(0, SeqCst);
                }
            }
        }
        if let Some(t) = self.lost {
            if let Some(i) = out[from..].iter().position(|c| c.0 == t) {
                out.remove(from + i);
                self.lost = None;
            }
        }
    }
    fn wait(&mut self) -> io::Result<()> {
        self.sim.wait()
    }
    fn in_flight(&self) -> usize {
        self.sim.in_flight()
    }
    vitastor_blockstore::forward_device_access!(sim);
}

fn reset_watch() {
    for s in &IO_START {
        s.store(0, SeqCst);
    }
    BAD_FREES.store(0, SeqCst);
}

fn open_watched() -> Blockstore<Watched> {
    let cfg = small_cfg(32768, 256 * 1024);
    let (_, devs) = device_paths(&cfg);
    let engine = Watched {
        sim: SimEngine::new(sim_disks(&cfg, 4 << 20), 1),
        lose_next_write: false,
        lost: None,
    };
    Blockstore::open_with(engine, devs, &cfg).expect("open")
}

fn write(obj: u64, id: u64) -> BsOp {
    BsOp::Write {
        oid: ObjectId::new(1 << 48 | 3, obj * 32768),
        version: 0,
        offset: 0,
        data: write_buf(id, 0, 8),
        bitmap: None,
        stable: true,
    }
}

/// A store with writes and reads in flight (pushed to the engine, not completed).
fn busy_store() -> Blockstore<Watched> {
    let mut bs = open_watched();
    for i in 0..4 {
        bs.exec(write(i, i + 1)).unwrap();
    }
    bs.flush_all().unwrap();
    for i in 0..4 {
        bs.submit(write(i + 10, i + 10));
        bs.submit(BsOp::Read {
            oid: ObjectId::new(1 << 48 | 3, i * 32768),
            version: vitastor_blockstore::NEWEST,
            offset: 0,
            len: 32768,
        });
    }
    bs.run();
    assert!(bs.engine_in_flight() >= 8);
    bs
}

#[test]
fn drop_leaks_buffers_when_in_flight_io_cannot_be_waited_for() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    reset_watch();
    let mut bs = busy_store();
    bs.set_fault_plan(Some("wait:eio".parse::<FaultPlan>().unwrap()));
    drop(bs);
    assert_eq!(BAD_FREES.load(SeqCst), 0, "freed buffers of I/O in flight");
}

#[test]
fn drop_waits_through_interrupted_waits() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    reset_watch();
    let mut bs = busy_store();
    bs.set_fault_plan(Some(
        "wait:eintr:count=3;wait:ebusy:after=3,count=3"
            .parse::<FaultPlan>()
            .unwrap(),
    ));
    drop(bs);
    assert_eq!(BAD_FREES.load(SeqCst), 0, "freed buffers of I/O in flight");
    assert!(
        IO_START.iter().all(|s| s.load(SeqCst) == 0),
        "I/O left in flight"
    );
}

#[test]
fn a_lost_completion_is_an_error_not_a_panic() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    reset_watch();
    let mut bs = open_watched();
    bs.exec(write(1, 1)).unwrap();
    bs.engine_mut().lose_next_write = true;
    let e = bs.exec(write(2, 2)).unwrap_err();
    assert!(matches!(e, BsError::Stuck(_)), "{e}");
    assert_eq!(e.errno(), -libc::EIO);
    assert!(matches!(bs.wait_idle(), Err(BsError::Stuck(_))));
}
