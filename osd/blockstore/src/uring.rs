//! io_uring engine over real files and block devices: O_DIRECT, an exclusive `flock` per device
//! (unless disabled), one ring for every device of the OSD. It never spawns threads; the OSD
//! drives it from its single data-path loop.
//!
//! The ring is set up for one thread ([`RingFlags`]): the thread that opens the engine is the
//! only one that may submit to it or wait on it (the kernel refuses others with `EEXIST`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::error::{BsError, BsResult};
use crate::io::{DevId, IoEngine, IoKind, IoReq};

/// Ring size; the blockstore keeps at most this many I/Os queued before it submits.
pub const RING_ENTRIES: u32 = 512;

/// Completion tag bit of socket polls (never set on device I/O tokens).
pub const POLL_TOKEN: u64 = 1 << 63;
/// Completion tag of poll removals, which carry nothing worth reporting.
const POLL_REMOVE_TOKEN: u64 = u64::MAX;

/// Setup flags of the ring, each a kernel feature that is refused (`EINVAL`) where missing.
///
/// - `coop_taskrun` (with `IORING_SETUP_TASKRUN_FLAG`): a completion does not interrupt the
///   thread (an inter-processor interrupt and a trip through the kernel) to be posted; it is
///   posted at the thread's next system call, and a flag in the ring tells the crate's
///   submit to enter for it. The OSD's loop makes a system call per turn anyway, and sleeps
///   only in its wait, which posts everything pending.
/// - `single_issuer`: only the thread that created the ring submits, so the kernel skips
///   locking for other submitters.
///
/// `IORING_SETUP_DEFER_TASKRUN` is not used: in the OSD's benchmarks (3 OSDs, interleaved
/// runs) it made more `io_uring_enter` calls and context switches per op than these two
/// flags: write-4M 73 and 58 against 40 and 40 (no flag: 50 and 50), read-4M 2.9 and 2.5
/// against 1.3 and 2.3 (no flag: 1.8 and 2.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingFlags {
    /// `IORING_SETUP_COOP_TASKRUN` and `IORING_SETUP_TASKRUN_FLAG`.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SINGLE_ISSUER`.
    pub single_issuer: bool,
}

impl RingFlags {
    /// No setup flag: what every io_uring kernel accepts.
    pub const PLAIN: RingFlags = RingFlags {
        coop_taskrun: false,
        single_issuer: false,
    };
}

/// The setups [`UringEngine::open`] tries, best first: each refused one falls back to the
/// next (kernels before 6.0 lack `single_issuer`, before 5.19 `coop_taskrun`).
pub const RING_SETUPS: [RingFlags; 3] = [
    RingFlags {
        coop_taskrun: true,
        single_issuer: true,
    },
    RingFlags {
        coop_taskrun: true,
        single_issuer: false,
    },
    RingFlags::PLAIN,
];

/// Creates a ring of `entries` with `flags`.
pub fn build_ring(entries: u32, flags: RingFlags) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    if flags.coop_taskrun {
        builder.setup_coop_taskrun().setup_taskrun_flag();
    }
    if flags.single_issuer {
        builder.setup_single_issuer();
    }
    builder.build(entries)
}

/// Builds a ring with the first of `setups` that `build` does not refuse. Only a refusal of
/// the flags (`EINVAL`) moves on to the next; any other error (no memory, io_uring disabled)
/// is returned.
pub fn first_accepted(
    setups: &[RingFlags],
    mut build: impl FnMut(RingFlags) -> io::Result<IoUring>,
) -> io::Result<(IoUring, RingFlags)> {
    let mut refused = io::Error::from_raw_os_error(libc::EINVAL);
    for &flags in setups {
        match build(flags) {
            Ok(ring) => return Ok((ring, flags)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("io_uring_setup refused {flags:?}; trying the next setup");
                refused = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(refused)
}

/// How devices are opened.
#[derive(Clone, Copy, Debug)]
pub struct OpenFlags {
    /// Take an exclusive advisory lock on each device (two OSDs on one disk corrupt it).
    pub lock: bool,
    /// Use O_DIRECT; files on file systems without O_DIRECT support (tmpfs) fall back to
    /// buffered I/O with a warning.
    pub direct: bool,
    /// Open read-only (inspection tools).
    pub readonly: bool,
}

impl Default for OpenFlags {
    fn default() -> Self {
        OpenFlags {
            lock: true,
            direct: true,
            readonly: false,
        }
    }
}

/// A socket poll's completion, as [`UringEngine::take_polls`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollEvent {
    /// The token the poll was armed with.
    pub token: u64,
    /// `revents`, or `-errno` if the poll failed.
    pub result: i32,
    /// The poll stays armed (a multishot poll that was not terminated): more events follow
    /// without arming it again.
    pub more: bool,
}

struct Device {
    file: File,
    path: PathBuf,
    size: u64,
}

/// io_uring-backed [`IoEngine`]. Used only by the thread that opened it (see the module docs).
pub struct UringEngine {
    ring: IoUring,
    ring_flags: RingFlags,
    devs: Vec<Device>,
    in_flight: usize,
    queued: usize,
    polls: Vec<PollEvent>,
    /// `io_uring_enter` calls made so far: each one that submits disk I/O is a device kick
    /// (a VM exit under virtio), so the OSD loop aims at one per turn.
    enters: u64,
}

fn device_size(file: &File, path: &Path) -> BsResult<u64> {
    let meta = file
        .metadata()
        .map_err(|e| BsError::io(format!("stat {}", path.display()), e))?;
    use std::os::unix::fs::FileTypeExt;
    if meta.file_type().is_block_device() {
        let mut size: u64 = 0;
        // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
        const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
        // SAFETY: ioctl writes one u64 into `size`, which outlives the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
        if r < 0 {
            return Err(BsError::io(
                format!("BLKGETSIZE64 {}", path.display()),
                io::Error::last_os_error(),
            ));
        }
        Ok(size)
    } else {
        Ok(meta.len())
    }
}

fn open_device(path: &Path, flags: OpenFlags) -> BsResult<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(!flags.readonly);
    if flags.direct {
        opts.custom_flags(libc::O_DIRECT);
        match opts.open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(
                    "{}: O_DIRECT not supported here, using buffered I/O",
                    path.display()
                );
                opts.custom_flags(0);
            }
            Err(e) => return Err(BsError::io(format!("open {}", path.display()), e)),
        }
    }
    opts.open(path)
        .map_err(|e| BsError::io(format!("open {}", path.display()), e))
}

/// How long to wait for a lock held by a process that just died: the kernel releases the
/// files of its io_uring asynchronously, so a restart right after `kill -9` can find the lock
/// still held for a moment.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn lock_device(file: &File, path: &Path, shared: bool) -> BsResult<()> {
    let op = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    let start = std::time::Instant::now();
    loop {
        // SAFETY: flock on a valid open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) || start.elapsed() > LOCK_WAIT {
            return Err(BsError::io(
                format!(
                    "lock {} (is another OSD using it? set disable_device_lock to share a device)",
                    path.display()
                ),
                err,
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

impl UringEngine {
    /// Arms a one-shot poll of `fd` for `events` (POLLIN…) on this ring. Its completion is
    /// not a device I/O: [`IoEngine::reap`] keeps it aside for [`UringEngine::take_polls`],
    /// tagged with `token` (which must be below [`POLL_TOKEN`]). This lets one loop wait for
    /// sockets and disk I/O together in [`UringEngine::wait_for`].
    pub fn poll_add(&mut self, fd: RawFd, events: u32, token: u64) {
        self.push_poll(fd, events, token, false);
    }

    /// Arms a multishot poll, like [`UringEngine::poll_add`] but reporting every readiness
    /// (each wake-up of `fd` that finds one of `events`) until cancelled: one submission per
    /// connection instead of one per readiness. Its events carry `more`; one without it
    /// ended the poll (cancelled, or stopped by the kernel, e.g. on a completion queue
    /// overflow), and the caller arms it again if it still wants it.
    pub fn poll_add_multi(&mut self, fd: RawFd, events: u32, token: u64) {
        self.push_poll(fd, events, token, true);
    }

    fn push_poll(&mut self, fd: RawFd, events: u32, token: u64, multi: bool) {
        debug_assert!(token < POLL_TOKEN);
        let sqe = opcode::PollAdd::new(types::Fd(fd), events)
            .multi(multi)
            .build()
            .user_data(POLL_TOKEN | token);
        self.push_sqe(sqe);
    }

    /// Cancels the poll armed with `token`; its completion (if it comes) is dropped.
    pub fn poll_remove(&mut self, token: u64) {
        let sqe = opcode::PollRemove::new(POLL_TOKEN | token)
            .build()
            .user_data(POLL_REMOVE_TOKEN);
        self.push_sqe(sqe);
    }

    /// Moves the poll events reaped since the last call to `out`.
    pub fn take_polls(&mut self, out: &mut Vec<PollEvent>) {
        out.append(&mut self.polls);
    }

    /// The setup flags the kernel accepted for this engine's ring.
    pub fn ring_flags(&self) -> RingFlags {
        self.ring_flags
    }

    /// How many `io_uring_enter` calls this engine has made.
    pub fn enters(&self) -> u64 {
        self.enters
    }

    /// Submits what is queued and waits until at least one completion (device I/O or poll)
    /// is ready or `timeout` passes. (Signals are best read from a polled signalfd: the
    /// io-uring crate passes glibc's sigset size, which the kernel refuses.)
    pub fn wait_for(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let ts = timeout.map(|t| {
            types::Timespec::new()
                .sec(t.as_secs())
                .nsec(t.subsec_nanos())
        });
        let mut args = types::SubmitArgs::new();
        if let Some(ts) = ts.as_ref() {
            args = args.timespec(ts);
        }
        self.enters += 1;
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            // EBUSY/EAGAIN: the kernel wants completions reaped first; the caller reaps
            // and comes back, and what stays in the submission queue goes with that wait.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::ETIME) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
        self.queued = 0;
        Ok(())
    }

    fn push_sqe(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: poll SQEs reference no memory.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                break;
            }
            self.enters += 1;
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EAGAIN) {
                    panic!("io_uring submit failed: {e}");
                }
                self.enters += 1;
                self.ring.submit_and_wait(1).ok();
            }
            self.queued = 0;
        }
        self.queued += 1;
    }

    /// Open each path once; `DevId(i)` names `paths[i]`. The ring gets the best of
    /// [`RING_SETUPS`] this kernel accepts.
    pub fn open(paths: &[PathBuf], flags: OpenFlags) -> BsResult<Self> {
        Self::open_with_setups(paths, flags, &RING_SETUPS)
    }

    /// [`UringEngine::open`] with the ring's setups to try, best first.
    pub fn open_with_setups(
        paths: &[PathBuf],
        flags: OpenFlags,
        setups: &[RingFlags],
    ) -> BsResult<Self> {
        let mut devs = Vec::with_capacity(paths.len());
        for path in paths {
            let file = open_device(path, flags)?;
            if flags.lock {
                lock_device(&file, path, flags.readonly)?;
            }
            let size = device_size(&file, path)?;
            devs.push(Device {
                file,
                path: path.clone(),
                size,
            });
        }
        let (ring, ring_flags) = first_accepted(setups, |f| build_ring(RING_ENTRIES, f))
            .map_err(|e| BsError::io("io_uring_setup", e))?;
        Ok(UringEngine {
            ring,
            ring_flags,
            devs,
            in_flight: 0,
            queued: 0,
            polls: Vec::new(),
            enters: 0,
        })
    }

    /// Path of a device, for messages.
    pub fn path(&self, dev: DevId) -> &Path {
        &self.devs[dev.0 as usize].path
    }

    fn sqe(&self, req: &IoReq) -> squeue::Entry {
        let fd = types::Fd(self.devs[req.dev.0 as usize].file.as_raw_fd());
        let e = match req.kind {
            IoKind::Read => opcode::Read::new(fd, req.ptr, req.len as u32)
                .offset(req.offset)
                .build(),
            IoKind::Write => opcode::Write::new(fd, req.ptr, req.len as u32)
                .offset(req.offset)
                .build(),
            IoKind::Fsync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        e.user_data(req.token)
    }
}

impl IoEngine for UringEngine {
    unsafe fn push(&mut self, req: IoReq) {
        let sqe = self.sqe(&req);
        loop {
            // SAFETY: the caller guarantees the buffer outlives the I/O (trait contract).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                break;
            }
            // Submission queue full: hand what we have to the kernel and retry.
            self.enters += 1;
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EAGAIN) {
                    panic!("io_uring submit failed: {e}");
                }
                self.enters += 1;
                self.ring.submit_and_wait(1).ok();
            }
            self.queued = 0;
        }
        self.queued += 1;
        self.in_flight += 1;
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.queued > 0 {
            self.enters += 1;
            self.ring.submit()?;
            self.queued = 0;
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        for cqe in self.ring.completion() {
            let token = cqe.user_data();
            if token == POLL_REMOVE_TOKEN {
                continue;
            }
            if token & POLL_TOKEN != 0 {
                self.polls.push(PollEvent {
                    token: token & !POLL_TOKEN,
                    result: cqe.result(),
                    more: cqueue::more(cqe.flags()),
                });
                continue;
            }
            self.in_flight -= 1;
            out.push((token, cqe.result()));
        }
    }

    fn wait(&mut self) -> io::Result<()> {
        if self.in_flight == 0 {
            return Ok(());
        }
        loop {
            self.enters += 1;
            match self.ring.submit_and_wait(1) {
                Ok(_) => {
                    self.queued = 0;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn dev_size(&self, dev: DevId) -> u64 {
        self.devs[dev.0 as usize].size
    }

    fn read_at(&mut self, dev: DevId, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.devs[dev.0 as usize].file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, dev: DevId, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.devs[dev.0 as usize].file.write_all_at(buf, offset)
    }

    fn sync_dev(&mut self, dev: DevId) -> io::Result<()> {
        self.devs[dev.0 as usize].file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(len: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev");
        File::create(&path).unwrap().set_len(len).unwrap();
        (dir, path)
    }

    /// A write, its read back and a socket poll, through the waits the blockstore and the
    /// OSD use: completions must arrive whatever the setup.
    fn round_trip(engine: &mut UringEngine) {
        let data = crate::io::AlignedBuf::from_slice(&[0x5a; 4096]);
        let mut back = crate::io::AlignedBuf::new(4096);
        let mut reaped = Vec::new();
        // SAFETY: both buffers outlive the I/O, which is reaped before they are dropped.
        unsafe {
            engine.push(IoReq {
                dev: DevId(0),
                kind: IoKind::Write,
                offset: 8192,
                ptr: data.as_ptr() as *mut u8,
                len: 4096,
                token: 1,
            });
        }
        engine.submit().unwrap();
        while reaped.is_empty() {
            engine.wait().unwrap();
            engine.reap(&mut reaped);
        }
        assert_eq!(reaped, vec![(1, 4096)]);
        reaped.clear();
        // SAFETY: as above.
        unsafe {
            engine.push(IoReq {
                dev: DevId(0),
                kind: IoKind::Read,
                offset: 8192,
                ptr: back.as_mut_ptr(),
                len: 4096,
                token: 2,
            });
        }
        while reaped.is_empty() {
            engine.wait_for(Some(Duration::from_secs(5))).unwrap();
            engine.reap(&mut reaped);
        }
        assert_eq!(reaped, vec![(2, 4096)]);
        assert_eq!(&back[..], &data[..]);

        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        engine.poll_add(a.as_raw_fd(), libc::POLLIN as u32, 9);
        std::io::Write::write_all(&mut b, b"x").unwrap();
        let mut polls = Vec::new();
        while polls.is_empty() {
            engine.wait_for(Some(Duration::from_secs(5))).unwrap();
            engine.reap(&mut reaped);
            engine.take_polls(&mut polls);
        }
        assert_eq!(polls[0].token, 9);
        assert!(polls[0].result & libc::POLLIN as i32 != 0);
    }

    fn refused(_: RingFlags) -> io::Result<IoUring> {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// A kernel that refuses every setup flag (before 5.19) gets a plain ring, which works.
    #[test]
    fn a_refused_setup_falls_back_to_the_next() {
        let mut tried = Vec::new();
        let (_ring, flags) = first_accepted(&RING_SETUPS, |f| {
            tried.push(f);
            if f == RingFlags::PLAIN {
                build_ring(8, f)
            } else {
                refused(f)
            }
        })
        .unwrap();
        assert_eq!(flags, RingFlags::PLAIN);
        assert_eq!(tried, RING_SETUPS);

        let (_dir, path) = temp_file(1 << 20);
        let open = OpenFlags {
            lock: false,
            ..OpenFlags::default()
        };
        let mut engine = UringEngine::open_with_setups(&[path], open, &[flags]).unwrap();
        assert_eq!(engine.ring_flags(), RingFlags::PLAIN);
        round_trip(&mut engine);
    }

    #[test]
    fn only_refusals_fail_with_the_refusal_and_other_errors_stop_at_once() {
        let err = first_accepted(&RING_SETUPS, refused)
            .err()
            .expect("refused");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        let mut tries = 0;
        let err = first_accepted(&RING_SETUPS, |_| {
            tries += 1;
            Err(io::Error::from_raw_os_error(libc::ENOMEM))
        })
        .err()
        .expect("no memory");
        assert_eq!((err.raw_os_error(), tries), (Some(libc::ENOMEM), 1));
    }

    #[test]
    fn every_accepted_setup_completes_io_and_polls() {
        for setup in RING_SETUPS {
            if build_ring(8, setup).is_err() {
                continue;
            }
            let (_dir, path) = temp_file(1 << 20);
            let flags = OpenFlags {
                lock: false,
                ..OpenFlags::default()
            };
            let mut engine = UringEngine::open_with_setups(&[path], flags, &[setup]).unwrap();
            assert_eq!(engine.ring_flags(), setup);
            round_trip(&mut engine);
        }
    }
}
