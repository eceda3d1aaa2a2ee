//! bsbench: the blockstore under the six standard storage benchmarks (see the README's
//! "Understanding Storage Performance"), through the real io_uring engine on a file, so that
//! `scripts/bench-blockstore.sh` can set each result beside fio on a raw file of the same size.
//!
//! Tests (names shared with the script):
//! - `write_sync_4k_t1q1`: 4 KiB random write, then a SYNC, one at a time (fio -fsync=1);
//!   immediate_commit none, every fsync on. Latency covers the write and its sync.
//! - `read_4k_t1q1`: 4 KiB random read, one at a time.
//! - `randwrite_4k_q128`: 4 KiB random writes, 128 in flight, no SYNC.
//! - `randread_4k_q128`: 4 KiB random reads, 128 in flight.
//! - `write_128k_q32`: whole-object (128 KiB) sequential writes, 32 in flight.
//! - `write_128k_t1q1`: whole-object sequential writes one at a time, as an OSD that gets one
//!   object write per loop turn issues them (the device writes of one redirect write, without
//!   the sharing of journal sectors that writes started together get).
//! - `write_4m`: 4 MiB sequential writes, each 32 whole-object writes in flight together.
//! - `read_4k_t1q1_flushing`: `read_4k_t1q1` with immediate_commit none right after a backlog
//!   of whole-object writes (a quarter of the working set, then a SYNC) that the flusher has
//!   not moved yet, as on an OSD just after a client wrote an image: the reads run while the
//!   flusher drains, and must not wait for it.
//!
//! The write tests without SYNC run with immediate_commit all and the fsyncs disabled, the
//! configuration the original prescribes for drives with power-loss protection (and what the
//! raw fio jobs, which never fsync, measure); `--keep_fsync` keeps the fsyncs on instead.
//!
//! Besides IOPS and latency it reports, per operation, the device writes (write
//! amplification), the fsyncs and the `io_uring_enter` calls, counted by a thin wrapper around
//! the io_uring engine; the heap allocations (a counting global allocator); and, for reads,
//! how many background writes and fsyncs were in flight when each read went to the device
//! (what a read may queue behind), so that a regression in any of them shows in the table.
//!
//! Before the tests every object of the working set is written once and flushed, so reads hit
//! real data and small writes take the journaled path, as on a long-running OSD. Each test
//! starts from a reopened, fully flushed store.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use vitastor_blockstore::io::{IoKind, IoReq};
use vitastor_blockstore::uring::{OpenFlags, UringEngine};
use vitastor_blockstore::{
    device_paths, AlignedBuf, Blockstore, BlockstoreConfig, BsOp, BsReply, Completion,
    ImmediateCommit, IoEngine, ObjectId, OpId, NEWEST,
};

/// Inode of the benchmark image (pool 1, inode 1), as a client would address it.
const INODE: u64 = 1 << 48 | 1;
/// Size of the small random I/O.
const SMALL_IO: u32 = 4096;
/// Whole-object writes that make up one 4 MiB write.
const OBJECTS_PER_4M: usize = 32;
/// Share of the data area the working set takes: redirect writes need free blocks while the
/// flusher catches up, as on a real OSD that is never filled to the brim.
const WORKING_SET_PERCENT: u64 = 75;
/// Rounds of polling with nothing in flight after which the store is declared stuck.
const STUCK_ROUNDS: u32 = 10_000;
/// Share of the working set the flushing-read test writes (and leaves unflushed) first.
const BACKLOG_PERCENT: u64 = 25;

/// The system allocator, counting allocations (per-operation heap churn is a regression).
struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[derive(Parser, Debug)]
#[command(about = "Benchmark the blockstore through io_uring on a file")]
struct Args {
    /// File to hold the store (created if missing, overwritten; keep it off tmpfs)
    #[arg(long, value_name = "PATH")]
    file: PathBuf,
    /// Size of the file
    #[arg(long, value_name = "SIZE", default_value = "2G", value_parser = size)]
    size: u64,
    /// Journal size
    #[arg(long = "journal_size", value_name = "SIZE", default_value = "32M", value_parser = size)]
    journal_size: u64,
    /// Seconds per test
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    runtime: f64,
    /// Run only these tests (comma-separated names)
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    tests: Vec<String>,
    /// Write the results as JSON to this file
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Keep the fsyncs on in the tests without SYNC (drives without power-loss protection)
    #[arg(long = "keep_fsync")]
    keep_fsync: bool,
    /// Do not write the whole file before preparing (fio writes its file out too; holes make
    /// the first writes pay for block allocation in the file system)
    #[arg(long)]
    sparse: bool,
}

/// What one test does.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// Random small write followed by a SYNC.
    WriteSync,
    /// Random small writes.
    RandWrite,
    /// Random small reads.
    RandRead,
    /// Sequential whole-object writes, `group` objects per logical operation.
    SeqWrite { group: usize },
}

struct Test {
    name: &'static str,
    pattern: Pattern,
    /// Logical operations in flight.
    depth: usize,
    /// Durability mode the test runs with.
    commit: ImmediateCommit,
    /// Leave a backlog of unflushed whole-object writes before measuring.
    backlog: bool,
}

const TESTS: [Test; 8] = [
    Test {
        name: "write_sync_4k_t1q1",
        pattern: Pattern::WriteSync,
        depth: 1,
        commit: ImmediateCommit::None,
        backlog: false,
    },
    Test {
        name: "read_4k_t1q1",
        pattern: Pattern::RandRead,
        depth: 1,
        commit: ImmediateCommit::All,
        backlog: false,
    },
    Test {
        name: "randwrite_4k_q128",
        pattern: Pattern::RandWrite,
        depth: 128,
        commit: ImmediateCommit::All,
        backlog: false,
    },
    Test {
        name: "randread_4k_q128",
        pattern: Pattern::RandRead,
        depth: 128,
        commit: ImmediateCommit::All,
        backlog: false,
    },
    Test {
        name: "write_128k_q32",
        pattern: Pattern::SeqWrite { group: 1 },
        depth: 32,
        commit: ImmediateCommit::All,
        backlog: false,
    },
    Test {
        name: "write_128k_t1q1",
        pattern: Pattern::SeqWrite { group: 1 },
        depth: 1,
        commit: ImmediateCommit::All,
        backlog: false,
    },
    Test {
        name: "write_4m",
        pattern: Pattern::SeqWrite {
            group: OBJECTS_PER_4M,
        },
        depth: 1,
        commit: ImmediateCommit::All,
        backlog: false,
    },
    Test {
        name: "read_4k_t1q1_flushing",
        pattern: Pattern::RandRead,
        depth: 1,
        commit: ImmediateCommit::None,
        backlog: true,
    },
];

/// Latency histogram with 64 linear sub-buckets per power of two of nanoseconds (at most
/// 1/64 relative error). Fixed size, so recording never allocates.
struct Hist {
    buckets: Vec<u64>,
    count: u64,
    sum_ns: u128,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

impl Hist {
    fn new() -> Self {
        Hist {
            buckets: vec![0; ((64 - SUB_BITS + 1) * SUB as u32) as usize],
            count: 0,
            sum_ns: 0,
        }
    }

    fn index(ns: u64) -> usize {
        if ns < SUB {
            return ns as usize;
        }
        let msb = 63 - ns.leading_zeros();
        let shift = msb - SUB_BITS;
        (((shift + 1) as u64) * SUB + ((ns >> shift) & (SUB - 1))) as usize
    }

    /// Middle of bucket `i`, in nanoseconds.
    fn value(i: usize) -> f64 {
        let (group, sub) = (i as u64 / SUB, i as u64 % SUB);
        if group == 0 {
            return sub as f64;
        }
        let width = 1u64 << (group - 1);
        ((SUB + sub) * width) as f64 + width as f64 / 2.0
    }

    fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.buckets[Self::index(ns)] += 1;
        self.count += 1;
        self.sum_ns += ns as u128;
    }

    fn mean_us(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.sum_ns as f64 / self.count as f64 / 1000.0
    }

    fn percentile_us(&self, p: f64) -> f64 {
        let target = ((self.count as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Self::value(i) / 1000.0;
            }
        }
        0.0
    }
}

/// One logical operation in flight: `pending` blockstore ops of stage `stage`.
#[derive(Clone, Copy)]
struct Slot {
    start: Instant,
    stage: u32,
    pending: u32,
}

/// Generates the blockstore ops of each stage of a logical operation.
struct OpGen {
    pattern: Pattern,
    rng: SmallRng,
    objects: u64,
    block_size: u32,
    next_object: u64,
    /// Write payload source; each op copies from it into a pooled buffer.
    template: AlignedBuf,
    /// Buffers the blockstore handed back with completed writes, reused by later writes.
    pool: Vec<AlignedBuf>,
}

impl OpGen {
    fn oid(&self, n: u64) -> ObjectId {
        ObjectId::new(INODE, n * self.block_size as u64)
    }

    fn random_small(&mut self) -> (ObjectId, u32) {
        let obj = self.rng.gen_range(0..self.objects);
        let off = self.rng.gen_range(0..self.block_size / SMALL_IO) * SMALL_IO;
        (self.oid(obj), off)
    }

    fn write(&mut self, oid: ObjectId, offset: u32, len: u32) -> BsOp {
        let mut data = match self.pool.iter().position(|b| b.len() == len as usize) {
            Some(i) => self.pool.swap_remove(i),
            None => AlignedBuf::new(len as usize),
        };
        data.copy_from_slice(&self.template[..len as usize]);
        BsOp::Write {
            oid,
            version: 0,
            offset,
            data,
            bitmap: None,
            stable: true,
        }
    }

    /// Push the ops of `stage` (none: the logical operation is complete).
    fn stage(&mut self, stage: u32, out: &mut Vec<BsOp>) {
        match (self.pattern, stage) {
            (Pattern::WriteSync | Pattern::RandWrite, 0) => {
                let (oid, off) = self.random_small();
                out.push(self.write(oid, off, SMALL_IO));
            }
            (Pattern::WriteSync, 1) => out.push(BsOp::Sync),
            (Pattern::RandRead, 0) => {
                let (oid, offset) = self.random_small();
                out.push(BsOp::Read {
                    oid,
                    version: NEWEST,
                    offset,
                    len: SMALL_IO,
                });
            }
            (Pattern::SeqWrite { group }, 0) => {
                for _ in 0..group {
                    let oid = self.oid(self.next_object);
                    self.next_object = (self.next_object + 1) % self.objects;
                    out.push(self.write(oid, 0, self.block_size));
                }
            }
            _ => {}
        }
    }

    /// Bytes moved by one logical operation.
    fn bytes_per_op(&self) -> u64 {
        match self.pattern {
            Pattern::WriteSync | Pattern::RandWrite | Pattern::RandRead => SMALL_IO as u64,
            Pattern::SeqWrite { group } => group as u64 * self.block_size as u64,
        }
    }
}

/// Device I/O issued through the engine's queue (the blocking open-time calls excluded).
#[derive(Clone, Copy, Debug, Default)]
struct IoCounts {
    reads: u64,
    writes: u64,
    fsyncs: u64,
    write_bytes: u64,
    /// `io_uring_enter` calls: submits with something queued, and waits.
    enters: u64,
    /// Writes and fsyncs in flight when each read was queued, summed over the reads.
    bg_at_read: u64,
}

impl IoCounts {
    fn since(self, start: IoCounts) -> IoCounts {
        IoCounts {
            reads: self.reads - start.reads,
            writes: self.writes - start.writes,
            fsyncs: self.fsyncs - start.fsyncs,
            write_bytes: self.write_bytes - start.write_bytes,
            enters: self.enters - start.enters,
            bg_at_read: self.bg_at_read - start.bg_at_read,
        }
    }
}

/// The io_uring engine, counting what the blockstore asks of the devices.
struct Counting {
    inner: UringEngine,
    counts: IoCounts,
    /// Requests pushed since the last `io_uring_enter`.
    queued: usize,
    /// Tokens of the writes and fsyncs in flight (a token may be in flight more than once).
    bg: HashMap<u64, u32>,
    bg_count: u64,
}

impl IoEngine for Counting {
    unsafe fn push(&mut self, req: IoReq) {
        match req.kind {
            IoKind::Read => {
                self.counts.reads += 1;
                self.counts.bg_at_read += self.bg_count;
            }
            IoKind::Write => {
                self.counts.writes += 1;
                self.counts.write_bytes += req.len as u64;
            }
            IoKind::Fsync => self.counts.fsyncs += 1,
        }
        if req.kind != IoKind::Read {
            *self.bg.entry(req.token).or_default() += 1;
            self.bg_count += 1;
        }
        self.queued += 1;
        // SAFETY: forwarded unchanged; our caller upholds the buffer contract.
        unsafe { self.inner.push(req) }
    }
    fn submit(&mut self) -> std::io::Result<()> {
        // The engine enters the kernel only with something queued.
        if self.queued > 0 {
            self.counts.enters += 1;
            self.queued = 0;
        }
        self.inner.submit()
    }
    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        let from = out.len();
        self.inner.reap(out);
        for &(token, _) in &out[from..] {
            if let Some(n) = self.bg.get_mut(&token) {
                *n -= 1;
                self.bg_count -= 1;
                if *n == 0 {
                    self.bg.remove(&token);
                }
            }
        }
    }
    fn wait(&mut self) -> std::io::Result<()> {
        // The engine returns at once with nothing in flight; otherwise it submits and waits
        // in one call.
        if self.inner.in_flight() > 0 {
            self.counts.enters += 1;
            self.queued = 0;
        }
        self.inner.wait()
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
    vitastor_blockstore::forward_device_access!(inner);
}

struct Measured {
    ops: u64,
    seconds: f64,
    hist: Hist,
    io: IoCounts,
    allocs: u64,
}

type Store = Blockstore<Counting>;

/// Submit the ops of `slot`'s current stage, remembering which slot owns each.
fn submit_stage(
    bs: &mut Store,
    gen: &mut OpGen,
    ops: &mut Vec<BsOp>,
    owner: &mut HashMap<OpId, usize>,
    s: usize,
    slot: &mut Slot,
) {
    gen.stage(slot.stage, ops);
    slot.pending = ops.len() as u32;
    for op in ops.drain(..) {
        owner.insert(bs.submit(op), s);
    }
}

/// Keep `depth` logical operations in flight until `runtime` has passed, then drain. Only
/// operations that complete within the runtime count. Buffers and maps are sized up front so
/// that the loop itself does not allocate (the write payloads aside: the store takes them).
fn drive(
    bs: &mut Store,
    gen: &mut OpGen,
    depth: usize,
    runtime: Duration,
) -> Result<Measured, String> {
    let mut owner: HashMap<OpId, usize> = HashMap::with_capacity(depth * OBJECTS_PER_4M * 2);
    let mut ops: Vec<BsOp> = Vec::with_capacity(OBJECTS_PER_4M);
    let mut done: Vec<Completion> = Vec::with_capacity(depth * OBJECTS_PER_4M);
    let mut hist = Hist::new();
    let begin = Instant::now();
    let deadline = begin + runtime;
    let io_start = bs.engine_mut().counts;
    let allocs_start = ALLOCS.load(Ordering::Relaxed);
    let mut io_end = None;
    let mut allocs_end = None;
    let mut slots = vec![
        Slot {
            start: begin,
            stage: 0,
            pending: 0
        };
        depth
    ];
    for (s, slot) in slots.iter_mut().enumerate() {
        submit_stage(bs, gen, &mut ops, &mut owner, s, slot);
    }
    bs.run();
    let mut running = depth;
    let mut idle_rounds = 0;
    while running > 0 {
        bs.poll(true).map_err(|e| format!("poll: {e}"))?;
        bs.take_completions(&mut done);
        if done.is_empty() {
            idle_rounds = if bs.engine_mut().in_flight() == 0 {
                idle_rounds + 1
            } else {
                0
            };
            if idle_rounds > STUCK_ROUNDS {
                return Err(format!(
                    "the blockstore stopped making progress: {}",
                    bs.debug_state()
                ));
            }
            continue;
        }
        idle_rounds = 0;
        let now = Instant::now();
        if now >= deadline && io_end.is_none() {
            io_end = Some(bs.engine_mut().counts);
            allocs_end = Some(ALLOCS.load(Ordering::Relaxed));
        }
        for c in done.drain(..) {
            let s = owner
                .remove(&c.id)
                .ok_or_else(|| format!("completion for unknown op {}", c.id))?;
            match c.result.map_err(|e| format!("operation failed: {e}"))? {
                BsReply::Written {
                    data: Some(buf), ..
                } => gen.pool.push(buf),
                // As an OSD does once the reply is sent.
                BsReply::Read { data, bitmap, .. } => bs.recycle_read(data, bitmap),
                _ => {}
            }
            let slot = &mut slots[s];
            slot.pending -= 1;
            if slot.pending > 0 {
                continue;
            }
            slot.stage += 1;
            submit_stage(bs, gen, &mut ops, &mut owner, s, slot);
            if slot.pending > 0 {
                continue;
            }
            if now <= deadline {
                hist.record(now - slot.start);
            }
            if now < deadline {
                *slot = Slot {
                    start: now,
                    stage: 0,
                    pending: 0,
                };
                submit_stage(bs, gen, &mut ops, &mut owner, s, slot);
            } else {
                running -= 1;
            }
        }
        // The next blocking poll submits what this queues and waits, in one io_uring_enter.
        bs.advance();
    }
    let io = io_end.unwrap_or(bs.engine_mut().counts).since(io_start);
    let allocs = allocs_end.unwrap_or_else(|| ALLOCS.load(Ordering::Relaxed)) - allocs_start;
    Ok(Measured {
        ops: hist.count,
        seconds: runtime.as_secs_f64(),
        hist,
        io,
        allocs,
    })
}

/// Sizes in the grammar every vitastor program takes (`2G`, `32MiB`, `0x1000`).
fn size(s: &str) -> Result<u64, String> {
    vitastor_layout::parse_size(s).map_err(|e| e.to_string())
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("bsbench: {msg}");
    std::process::exit(1)
}

/// Write the whole file once, like fio lays out its file, unless it is already fully
/// allocated at the right size.
fn lay_out(path: &Path, size: u64, sparse: bool) -> std::io::Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let meta = f.metadata()?;
    if sparse || (meta.len() == size && meta.blocks() * 512 >= size) {
        return f.set_len(size);
    }
    f.set_len(size)?;
    eprintln!(
        "bsbench: writing out {} ({} MiB)",
        path.display(),
        size >> 20
    );
    let chunk = vec![0u8; 4 << 20];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], off)?;
        off += n as u64;
    }
    f.sync_all()
}

fn store_config(args: &Args, commit: ImmediateCommit) -> BlockstoreConfig {
    let mut c = BlockstoreConfig::new(&args.file);
    c.journal_size = Some(args.journal_size);
    c.immediate_commit = commit;
    let no_fsync = commit == ImmediateCommit::All && !args.keep_fsync;
    c.disable_data_fsync = no_fsync;
    c.disable_meta_fsync = no_fsync;
    c.disable_journal_fsync = no_fsync;
    c
}

fn open(args: &Args, commit: ImmediateCommit) -> Store {
    let cfg = store_config(args, commit);
    let (paths, devs) = device_paths(&cfg);
    let flags = OpenFlags {
        lock: !cfg.disable_device_lock,
        direct: cfg.direct_io,
        readonly: false,
    };
    UringEngine::open(&paths, flags)
        .and_then(|inner| {
            Blockstore::open_with(
                Counting {
                    inner,
                    counts: IoCounts::default(),
                    queued: 0,
                    bg: HashMap::new(),
                    bg_count: 0,
                },
                devs,
                &cfg,
            )
        })
        .unwrap_or_else(|e| die(format!("open {}: {e}", args.file.display())))
}

fn main() {
    let args = Args::parse();
    for t in &args.tests {
        if !TESTS.iter().any(|x| x.name == t) {
            let names: Vec<&str> = TESTS.iter().map(|x| x.name).collect();
            die(format!(
                "unknown test {t:?}; tests are {}",
                names.join(", ")
            ));
        }
    }
    if !(args.runtime > 0.0 && args.runtime.is_finite()) {
        die("--runtime must be a positive number of seconds");
    }
    let runtime = Duration::from_secs_f64(args.runtime);
    lay_out(&args.file, args.size, args.sparse)
        .unwrap_or_else(|e| die(format!("create {}: {e}", args.file.display())));
    let layout =
        vitastor_blockstore::prepare::prepare(&store_config(&args, ImmediateCommit::All), true)
            .unwrap_or_else(|e| die(format!("prepare {}: {e}", args.file.display())));
    // Block 0 of the data area holds the superblock copy.
    let objects = (layout.data_blocks() - 1) * WORKING_SET_PERCENT / 100;
    let mut template = AlignedBuf::new(layout.block_size as usize);
    let mut rng = SmallRng::seed_from_u64(0x5EED);
    rng.fill_bytes(&mut template);
    let mut gen = OpGen {
        pattern: Pattern::SeqWrite { group: 1 },
        rng,
        objects,
        block_size: layout.block_size,
        next_object: 0,
        template,
        pool: Vec::new(),
    };

    eprintln!(
        "bsbench: filling {objects} objects of {} KiB",
        layout.block_size >> 10
    );
    {
        let mut bs = open(&args, ImmediateCommit::All);
        let t = Instant::now();
        fill(&mut bs, &mut gen, objects).unwrap_or_else(|e| die(format!("fill: {e}")));
        bs.flush_all()
            .unwrap_or_else(|e| die(format!("flush: {e}")));
        eprintln!("bsbench: filled in {:.1} s", t.elapsed().as_secs_f64());
    }

    let mut results = serde_json::Map::new();
    println!(
        "{:<22} {:>10} {:>11} {:>11} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "test",
        "IOPS",
        "lat_us",
        "p99_us",
        "MiB/s",
        "wr/op",
        "KiBwr/op",
        "fsync/op",
        "enter/op",
        "alloc/op",
        "bg/read"
    );
    for test in TESTS
        .iter()
        .filter(|t| args.tests.is_empty() || args.tests.iter().any(|n| n == t.name))
    {
        let mut bs = open(&args, test.commit);
        gen.next_object = 0;
        if test.backlog {
            gen.pattern = Pattern::SeqWrite { group: 1 };
            backlog(&mut bs, &mut gen, objects * BACKLOG_PERCENT / 100)
                .unwrap_or_else(|e| die(format!("{}: backlog: {e}", test.name)));
        }
        gen.pattern = test.pattern;
        let m = drive(&mut bs, &mut gen, test.depth, runtime)
            .unwrap_or_else(|e| die(format!("{}: {e}", test.name)));
        // The next test starts from a clean journal.
        bs.flush_all()
            .unwrap_or_else(|e| die(format!("{}: flush: {e}", test.name)));
        drop(bs);
        let iops = m.ops as f64 / m.seconds;
        let mibps = iops * gen.bytes_per_op() as f64 / (1 << 20) as f64;
        let (mean, p99) = (m.hist.mean_us(), m.hist.percentile_us(99.0));
        let per_op = |n: u64| {
            if m.ops == 0 {
                0.0
            } else {
                n as f64 / m.ops as f64
            }
        };
        let (wr, kib, fsyncs, enters, allocs) = (
            per_op(m.io.writes),
            per_op(m.io.write_bytes) / 1024.0,
            per_op(m.io.fsyncs),
            per_op(m.io.enters),
            per_op(m.allocs),
        );
        let bg_per_read = if m.io.reads == 0 {
            0.0
        } else {
            m.io.bg_at_read as f64 / m.io.reads as f64
        };
        println!(
            "{:<22} {:>10.0} {:>11.1} {:>11.1} {:>10.1} {:>9.2} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            test.name, iops, mean, p99, mibps, wr, kib, fsyncs, enters, allocs, bg_per_read
        );
        std::io::stdout().flush().ok();
        results.insert(
            test.name.to_string(),
            json!({
                "iops": iops, "lat_mean_us": mean, "lat_p99_us": p99, "mib_per_s": mibps, "ops": m.ops,
                "seconds": m.seconds, "depth": test.depth, "bytes_per_op": gen.bytes_per_op(),
                "immediate_commit": test.commit.as_str(),
                "fsync": test.commit != ImmediateCommit::All || args.keep_fsync,
                "device_writes_per_op": wr, "device_write_kib_per_op": kib, "fsyncs_per_op": fsyncs,
                "uring_enters_per_op": enters, "allocs_per_op": allocs,
                "device_reads_per_op": per_op(m.io.reads), "bg_io_in_flight_per_read": bg_per_read,
            }),
        );
    }
    if let Some(path) = &args.json {
        let v = json!({
            "file": args.file.display().to_string(),
            "size": args.size,
            "journal_size": args.journal_size,
            "block_size": layout.block_size,
            "objects": objects,
            "runtime": args.runtime,
            "tests": Value::Object(results),
        });
        let write = File::create(path).and_then(|mut f| writeln!(f, "{v:#}"));
        write.unwrap_or_else(|e| die(format!("write {}: {e}", path.display())));
    }
}

/// Write objects `0..count` with whole-object writes and SYNC them, leaving the flusher
/// their whole backlog (nothing waits for it here).
fn backlog(bs: &mut Store, gen: &mut OpGen, count: u64) -> Result<(), String> {
    fill(bs, gen, count)?;
    bs.exec(BsOp::Sync).map_err(|e| format!("sync: {e}"))?;
    Ok(())
}

/// Write objects `0..count` once with whole-object writes, 32 in flight.
fn fill(bs: &mut Store, gen: &mut OpGen, count: u64) -> Result<(), String> {
    const FILL_DEPTH: u64 = 32;
    let (mut submitted, mut completed) = (0u64, 0u64);
    let mut done = Vec::new();
    let mut ops = Vec::new();
    while completed < count {
        while submitted - completed < FILL_DEPTH && submitted < count {
            gen.stage(0, &mut ops);
            for op in ops.drain(..) {
                bs.submit(op);
            }
            submitted += 1;
        }
        bs.run();
        bs.poll(true).map_err(|e| e.to_string())?;
        bs.take_completions(&mut done);
        for c in done.drain(..) {
            c.result.map_err(|e| format!("write failed: {e}"))?;
            completed += 1;
        }
    }
    Ok(())
}
