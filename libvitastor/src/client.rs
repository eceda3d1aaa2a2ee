//! The client: the API, the op table, dispatch of parts and the poll loop that drives them.
//! The other concerns live in submodules, each saying what it owns: OSD connections and
//! their I/O (`conn_io`), what a reply means for its part (`replies`), unsynced writes,
//! SYNC and replay (`unsynced`), the op timeout's decisions (`reply_wait`), layered reads
//! (`layered_read`) and image watches (`watches`).
//!
//! # What this module owns
//! - The op table: every submitted op lives in a reusable slot until its callback is queued.
//!   An op is split into parts ([`crate::mapping::split`]), one per object; each part goes to
//!   the current primary of its PG and is retried — forever — whenever the cluster says it
//!   cannot be served now (PG not active, OSD down, connection lost, `-EPIPE`, or the OSD
//!   silent past `client_op_timeout`, see `reply_wait`). Other OSD errors fail the op.
//! - Dispatch: every part of an op is queued on its connection before any is sent, so a
//!   large op leaves in one `sendmsg` per OSD.
//! - The poll loop: one `epoll_wait` per wake-up, whose events are the ones handled.
//! - Ordering: ops start in submission order; a SYNC waits for the writes before it and holds
//!   the ops after it; nothing new starts while unsynced writes are being replayed.
//! - Writes and deletes go to the op's inode only, and never to a read-only layer
//!   (`-EROFS`); the "ready" state (first etcd load).
//!
//! # What it must never do
//! - Call a user callback while it holds itself borrowed: completions are queued and run by
//!   [`Client::run_completions`] (or by the C ABI) after the work is done, so a callback may
//!   submit new ops.
//! - Block: every socket is non-blocking; only [`Client::wait_events`] sleeps, in epoll.
//! - Panic or give up on cluster trouble: bad replies drop the connection and the parts are
//!   retried; bad etcd values are logged and ignored.
//! - Size a buffer from an unchecked field: reply payload lengths come from
//!   `Reply::payload_len`, which checks them against the request and the protocol limits.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::CString;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use vitastor_layout::{pool_of, ImmediateCommit, PoolConfig};
use vitastor_protocol::handshake::{
    ImmediateCommit as WireCommit, PoolExpectation, ShowConfigReplyJson,
};
use vitastor_protocol::{
    Reply, Request, RequestOp, RwOp, SecListOp, OSD_LIST_PRIMARY, OSD_PACKET_SIZE,
};

use crate::cluster::ClusterView;
use crate::error::ClientError;
use crate::etcd::{EtcdAddress, EtcdWatcher};
use crate::layers::resolve_chain;
use crate::mapping::{check_range, split};
use crate::options::{ClientOptions, Resolved, Settings};
use crate::sys::{self, Epoll, IoVec, Timer};

mod conn_io;
mod layered_read;
mod replies;
mod reply_wait;
mod unsynced;
mod watches;

pub use conn_io::IoCounts;

use reply_wait::ReplyWait;

/// epoll token of the etcd wake-up fd.
const TOKEN_ETCD: u64 = 0;
/// epoll token of the retry timer.
const TOKEN_TIMER: u64 = 1;
/// epoll tokens of connections start here (token = slot + this).
const TOKEN_CONN_BASE: u64 = 2;
/// Events taken from epoll per call.
const EPOLL_BATCH: usize = 64;

/// What an op finished with.
#[derive(Debug)]
pub struct OpDone {
    /// Bytes read or written (the op length), 0 for sync/delete, or the error.
    pub result: Result<u64, ClientError>,
    /// For reads: the version of the (last) object read.
    pub version: u64,
    /// The buffer the op was given by the Rust API (read data or written data), else empty.
    pub buf: Vec<u8>,
    /// For bitmap reads: one bit per `bitmap_granularity` of the range, LSB first.
    pub bitmap: Vec<u8>,
    /// For listings: offsets of the objects found, sorted, each once.
    pub objects: Vec<u64>,
}

/// A completion callback. `Plain` is a function pointer with two words of context, so the C
/// ABI completes ops without allocating.
pub enum Callback<T> {
    /// A boxed closure.
    Boxed(Box<dyn FnOnce(T)>),
    /// `f(a, b, result)`.
    Plain {
        /// The function.
        f: fn(usize, usize, T),
        /// First context word.
        a: usize,
        /// Second context word.
        b: usize,
    },
}

impl<T> Callback<T> {
    fn call(self, value: T) {
        match self {
            Callback::Boxed(f) => f(value),
            Callback::Plain { f, a, b } => f(a, b, value),
        }
    }
}

/// A watched image's metadata, kept current by the client as etcd changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// Image name.
    pub name: String,
    /// Inode number with pool bits.
    pub inode: u64,
    /// Size in bytes.
    pub size: u64,
    /// Parent inode with pool bits, 0 when none.
    pub parent_id: u64,
    /// Snapshots refuse writes.
    pub readonly: bool,
    /// The `meta` field of the image's JSON, as JSON text, if any.
    pub meta: Option<CString>,
    /// etcd `mod_revision` of the image's config key.
    pub mod_revision: u64,
    /// The pool's block size (0 if the pool is unknown).
    pub block_size: u32,
    /// The pool's bitmap granularity (0 if the pool is unknown).
    pub bitmap_granularity: u32,
    /// The pool's commit mode, when the pool or `config/global` sets one.
    pub immediate_commit: Option<ImmediateCommit>,
}

/// A handle on a watched image. Dropping it does not stop the watch; pass it to
/// [`Client::close_watch`].
#[derive(Debug, Clone)]
pub struct ImageWatch {
    id: u64,
    info: Rc<RefCell<ImageInfo>>,
}

impl ImageWatch {
    /// The image's current metadata.
    pub fn info(&self) -> ImageInfo {
        self.info.borrow().clone()
    }

    /// Reads one field without cloning the rest.
    pub fn with<R>(&self, f: impl FnOnce(&ImageInfo) -> R) -> R {
        f(&self.info.borrow())
    }
}

/// Result of [`Client::watch_inode`].
pub type WatchResult = Result<ImageWatch, ClientError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum OpKind {
    #[default]
    Read,
    ReadBitmap,
    Write,
    Delete,
    Sync,
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartState {
    Waiting,
    Sent,
    Done,
}

#[derive(Debug, Clone, Copy)]
struct Part {
    pool: u32,
    pg: u32,
    offset: u64,
    len: u32,
    op_offset: u64,
    /// Where it was sent (or, for a sync part or a direct listing, where it must go).
    osd: u64,
    /// A listing sent to `osd` itself rather than to the PG's primary.
    direct: bool,
    /// Which layer of a layered read (index into `Op::layers`, 0 = the image itself).
    layer: u16,
    /// A layered read's speculative pair (see `layered_read`): this part reads only the
    /// bitmap (the top layer) or reads the parent at once; `NO_PAIR` otherwise.
    pair: u32,
    /// The pair's first answer: which granules of the range the answering layer holds.
    held: u64,
    state: PartState,
}

/// `Part::pair` of a part without a speculative partner.
const NO_PAIR: u32 = u32::MAX;

impl Default for Part {
    /// A part of the image itself, not sent yet, without a speculative partner.
    fn default() -> Part {
        Part {
            pool: 0,
            pg: 0,
            offset: 0,
            len: 0,
            op_offset: 0,
            osd: 0,
            direct: false,
            layer: 0,
            pair: NO_PAIR,
            held: 0,
            state: PartState::Waiting,
        }
    }
}

/// One op slot; fields keep their capacity across reuse.
#[derive(Default)]
struct Op {
    active: bool,
    kind: OpKind,
    inode: u64,
    offset: u64,
    len: u64,
    version: u64,
    iov: Vec<IoVec>,
    owned: Vec<u8>,
    /// Copy of the written data, shared with the dirty entries (non-`all` commit modes).
    copy: Option<Rc<Vec<u8>>>,
    parts: Vec<Part>,
    /// Reads: the inode's layers, top first (one entry for an image without parents).
    layers: Vec<u64>,
    /// Writes and deletes: the read-only check was done at submission.
    readonly_checked: bool,
    done_parts: usize,
    error: Option<ClientError>,
    version_out: u64,
    bitmap: Vec<u8>,
    /// List: the PG to list, and the object offsets found so far.
    list_pg: u32,
    listed: Vec<u64>,
    callback: Option<Callback<OpDone>>,
    /// Sync: an OSD lost its unsynced writes meanwhile; start again after the replays.
    restart: bool,
    /// Replay of this dirty entry (internal op, no callback).
    replay_of: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirtyState {
    Acked,
    NeedsReplay,
    Replaying,
}

/// An acknowledged write or delete not yet covered by a SYNC.
struct Dirty {
    pool: u32,
    pg: u32,
    osd: u64,
    inode: u64,
    offset: u64,
    len: u32,
    /// `None` for a delete.
    data: Option<(Rc<Vec<u8>>, u64)>,
    state: DirtyState,
}

enum ConnState {
    Connecting,
    Handshaking,
    Ready(ShowConfigReplyJson),
}

#[derive(Clone, Copy)]
enum Target {
    Handshake,
    /// The op timeout's probe: any answer proves the OSD alive.
    Ping,
    Part {
        op: usize,
        part: usize,
    },
}

#[derive(Clone, Copy)]
struct Outstanding {
    request: Request,
    target: Target,
}

struct SendItem {
    packet: [u8; OSD_PACKET_SIZE],
    /// Data after the packet: `(op, offset in op buffer, len)`, or the handshake JSON.
    data: SendData,
}

enum SendData {
    None,
    Json(Vec<u8>),
    Op { op: usize, off: u64, len: u64 },
}

impl SendItem {
    fn data_len(&self) -> usize {
        match &self.data {
            SendData::None => 0,
            SendData::Json(j) => j.len(),
            SendData::Op { len, .. } => *len as usize,
        }
    }
}

/// Where the receive side is inside the current reply.
// One per connection, replaced on every reply: boxing the large variant would cost an
// allocation per reply for no memory gain.
#[allow(clippy::large_enum_variant)]
enum Recv {
    Header,
    Payload {
        out: Outstanding,
        reply: Reply,
        bitmap_left: usize,
        data_left: usize,
        /// A large read: its data goes straight into the op's buffer.
        direct: bool,
    },
}

struct Conn {
    osd: u64,
    fd: OwnedFd,
    state: ConnState,
    since: Instant,
    next_id: u64,
    outstanding: FxHashMap<u64, Outstanding>,
    send_q: VecDeque<SendItem>,
    /// Bytes of the front send item already written.
    send_off: usize,
    /// The last send found the socket full: nothing more is sent until EPOLLOUT.
    send_blocked: bool,
    want_write: bool,
    recv: Recv,
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    /// Bitmap or handshake JSON of the reply being received.
    payload: Vec<u8>,
    /// The last receive returned less than it asked for: the socket is empty until epoll
    /// says otherwise, so asking again would only get `EAGAIN`.
    drained: bool,
    /// Outstanding reads of at least [`DIRECT_READ_MIN`] bytes whose reply header has not
    /// come yet: while there are any, the receive buffer reads no further than the next
    /// header, so that their data is never pulled into it and copied, but lands in the op's
    /// buffer.
    big_reads: usize,
    /// The op timeout's silence clock.
    wait: ReplyWait,
}

/// What [`Client::work`] found to re-evaluate.
#[derive(Default)]
struct Pending {
    view_changed: bool,
    tick: bool,
}

/// The Vitastor client. Single-threaded and poll-driven: nothing happens unless the owner
/// calls [`Client::handle_events`] (after [`Client::poll_fd`] becomes readable) or
/// [`Client::wait_events`].
pub struct Client {
    resolved: Resolved,
    settings: Settings,
    view: ClusterView,
    etcd: EtcdWatcher,
    epoll: Epoll,
    timer: Timer,
    /// When the armed timer fires, if armed.
    timer_at: Option<Instant>,
    ops: Vec<Op>,
    free_ops: Vec<usize>,
    queue: VecDeque<usize>,
    waiting: Vec<(usize, usize)>,
    conns: Vec<Option<Conn>>,
    free_conns: Vec<usize>,
    by_osd: FxHashMap<u64, usize>,
    down_until: FxHashMap<u64, Instant>,
    dirty: BTreeMap<u64, Dirty>,
    next_dirty: u64,
    dirty_bytes: u64,
    replays_running: usize,
    inflight_writes: usize,
    sync_running: bool,
    syncs_queued: usize,
    /// A replay failed for good: the next SYNC reports it.
    lost_write: Option<ClientError>,
    watches: FxHashMap<u64, Rc<RefCell<ImageInfo>>>,
    /// Writes to read-only layers are allowed (tools that merge layers).
    readonly_writes: bool,
    /// Objects `(inode, object start)` of layered images whose top layer held nothing at
    /// the last read: their next reads ask the top for its bitmap and read the parent at
    /// once (one round trip instead of two). A hint only: the bitmaps decide.
    empty_top: FxHashSet<(u64, u64)>,
    pending_watches: Vec<(String, Callback<WatchResult>)>,
    next_watch: u64,
    ready_waiters: Vec<Callback<OpDone>>,
    completions: VecDeque<Completion>,
    /// Connections with requests queued since their last flush: sent together once the
    /// current call's dispatching is done, so the parts of one op (or of one batch of
    /// events) leave in one `sendmsg` per connection.
    to_flush: Vec<usize>,
    counts: IoCounts,
    iov_scratch: Vec<IoVec>,
    events: Vec<libc::epoll_event>,
}

enum Completion {
    Op(Callback<OpDone>, OpDone),
    Watch(Callback<WatchResult>, WatchResult),
}

/// What to submit.
pub(crate) struct OpRequest<'a> {
    kind: OpKind,
    inode: u64,
    offset: u64,
    len: u64,
    version: u64,
    iov: &'a [IoVec],
    owned: Vec<u8>,
    list_pg: u32,
}

fn wire_commit(c: ImmediateCommit) -> WireCommit {
    match c {
        ImmediateCommit::All => WireCommit::All,
        ImmediateCommit::Small => WireCommit::Small,
        ImmediateCommit::None => WireCommit::None,
    }
}

impl Client {
    /// Creates a client and starts watching etcd. Ops may be submitted at once; they start
    /// when the cluster state has been loaded ([`Client::is_ready`]).
    pub fn new(options: &ClientOptions) -> Result<Client, ClientError> {
        let resolved = options.resolve()?;
        let address =
            EtcdAddress::parse(&resolved.etcd_address).map_err(|e| ClientError::BadOption {
                name: "etcd_address".into(),
                reason: format!("{:?}: {}", e.value, e.reason),
            })?;
        let settings = resolved.settings_with_global(&serde_json::Value::Null);
        let epoll = Epoll::new().map_err(ClientError::io("creating the client's epoll fd"))?;
        let timer = Timer::new().map_err(ClientError::io("creating the client's timer"))?;
        let etcd = EtcdWatcher::spawn(address, resolved.prefix.clone())?;
        epoll
            .add(etcd.wake_fd(), TOKEN_ETCD, false)
            .map_err(ClientError::io("watching the etcd wake-up fd"))?;
        epoll
            .add(timer.raw(), TOKEN_TIMER, false)
            .map_err(ClientError::io("watching the client's timer"))?;
        Ok(Client {
            resolved,
            settings,
            view: ClusterView::default(),
            etcd,
            epoll,
            timer,
            timer_at: None,
            ops: Vec::new(),
            free_ops: Vec::new(),
            queue: VecDeque::new(),
            waiting: Vec::new(),
            conns: Vec::new(),
            free_conns: Vec::new(),
            by_osd: FxHashMap::default(),
            down_until: FxHashMap::default(),
            dirty: BTreeMap::new(),
            next_dirty: 0,
            dirty_bytes: 0,
            replays_running: 0,
            inflight_writes: 0,
            sync_running: false,
            syncs_queued: 0,
            lost_write: None,
            watches: FxHashMap::default(),
            readonly_writes: false,
            empty_top: FxHashSet::default(),
            pending_watches: Vec::new(),
            next_watch: 1,
            ready_waiters: Vec::new(),
            completions: VecDeque::new(),
            to_flush: Vec::new(),
            counts: IoCounts::default(),
            iov_scratch: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_BATCH],
        })
    }

    /// The fd to poll for readability; then call [`Client::handle_events`].
    pub fn poll_fd(&self) -> RawFd {
        self.epoll.raw()
    }

    /// True once the cluster state has been loaded from etcd.
    pub fn is_ready(&self) -> bool {
        self.view.loaded
    }

    /// The effective settings.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// The cluster view (pools, PG states, OSDs, images) as last loaded.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// Bytes of acknowledged writes not yet synced.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes
    }

    /// The system calls and copies made so far (see [`IoCounts`]).
    pub fn io_counts(&self) -> IoCounts {
        self.counts
    }

    /// Does all non-blocking work that is ready, then runs the callbacks of finished ops.
    pub fn handle_events(&mut self) {
        self.work();
        self.run_completions();
    }

    /// Waits up to `timeout` (`None` = until something happens) for events, then handles
    /// them like [`Client::handle_events`].
    pub fn wait_events(&mut self, timeout: Option<Duration>) {
        self.wait_events_no_run(timeout);
        self.run_completions();
    }

    /// [`Client::wait_events`] without running the callbacks.
    pub(crate) fn wait_events_no_run(&mut self, timeout: Option<Duration>) {
        if self.completions.is_empty() {
            self.work_after(timeout);
        } else {
            self.work();
        }
    }

    /// Runs the callbacks of finished ops and watches.
    pub fn run_completions(&mut self) {
        while let Some(c) = self.pop_completion() {
            c();
        }
    }

    /// Takes one finished callback, bound to its result, without running it: the C ABI runs
    /// it after releasing its borrow of the client.
    pub(crate) fn pop_completion(&mut self) -> Option<impl FnOnce()> {
        let c = self.completions.pop_front()?;
        Some(move || match c {
            Completion::Op(cb, done) => cb.call(done),
            Completion::Watch(cb, result) => cb.call(result),
        })
    }

    /// Calls `cb` once the cluster state is loaded (at once if it already is).
    pub fn on_ready(&mut self, cb: Callback<OpDone>) {
        if self.view.loaded {
            self.completions.push_back(Completion::Op(cb, ok_done(0)));
        } else {
            self.ready_waiters.push(cb);
        }
    }

    /// Reads `buf.len()` bytes at `offset` of `inode` into `buf`; the callback gets the
    /// buffer back and the version of the object read.
    pub fn read(
        &mut self,
        inode: u64,
        offset: u64,
        mut buf: Vec<u8>,
        cb: impl FnOnce(OpDone) + 'static,
    ) {
        let iov = [vec_iov(&mut buf)];
        let len = buf.len() as u64;
        self.submit(
            OpRequest {
                iov: &iov,
                owned: buf,
                ..OpRequest::new(OpKind::Read, inode, offset, len, 0)
            },
            Callback::Boxed(Box::new(cb)),
        );
    }

    /// Writes `data` at `offset` of `inode`. `check_version` != 0 makes it a
    /// compare-and-set (fails with `-EINTR` unless the object is at `check_version - 1`).
    pub fn write(
        &mut self,
        inode: u64,
        offset: u64,
        mut data: Vec<u8>,
        check_version: u64,
        cb: impl FnOnce(OpDone) + 'static,
    ) {
        let iov = [vec_iov(&mut data)];
        let len = data.len() as u64;
        self.submit(
            OpRequest {
                iov: &iov,
                owned: data,
                ..OpRequest::new(OpKind::Write, inode, offset, len, check_version)
            },
            Callback::Boxed(Box::new(cb)),
        );
    }

    /// Deletes the objects covering `[offset, offset + len)`.
    pub fn delete(
        &mut self,
        inode: u64,
        offset: u64,
        len: u64,
        check_version: u64,
        cb: impl FnOnce(OpDone) + 'static,
    ) {
        self.submit(
            OpRequest::new(OpKind::Delete, inode, offset, len, check_version),
            Callback::Boxed(Box::new(cb)),
        );
    }

    /// Reads the allocation bitmap of `[offset, offset + len)`: one bit per
    /// `bitmap_granularity`, in [`OpDone::bitmap`]. Parent layers are not merged.
    pub fn read_bitmap(
        &mut self,
        inode: u64,
        offset: u64,
        len: u64,
        cb: impl FnOnce(OpDone) + 'static,
    ) {
        self.submit(
            OpRequest::new(OpKind::ReadBitmap, inode, offset, len, 0),
            Callback::Boxed(Box::new(cb)),
        );
    }

    /// Makes every write completed before it durable.
    pub fn sync(&mut self, cb: impl FnOnce(OpDone) + 'static) {
        self.submit(
            OpRequest::new(OpKind::Sync, 0, 0, 0, 0),
            Callback::Boxed(Box::new(cb)),
        );
    }

    /// Lists the objects of `inode` (with pool bits) in PG `pg` of its pool: SEC_LIST to the
    /// PG's primary, which answers for the whole PG when it marks its reply
    /// `OSD_LIST_PRIMARY`; otherwise (it listed only its own store) every OSD the PG's state
    /// names as a peer is listed too. Waits, like I/O, while the PG is not active. The
    /// callback gets the objects' offsets in [`OpDone::objects`].
    pub fn list_objects(&mut self, inode: u64, pg: u32, cb: impl FnOnce(OpDone) + 'static) {
        let mut req = OpRequest::new(OpKind::List, inode, 0, 0, 0);
        req.list_pg = pg;
        self.submit(req, Callback::Boxed(Box::new(cb)));
    }

    /// Looks up an image by name; the callback gets a handle whose metadata stays current,
    /// or [`ClientError::NoSuchImage`].
    pub fn watch_inode(&mut self, name: &str, cb: Callback<WatchResult>) {
        if self.view.loaded {
            let result = self.open_watch(name);
            self.completions.push_back(Completion::Watch(cb, result));
        } else {
            self.pending_watches.push((name.to_string(), cb));
        }
    }

    /// Stops keeping a watch current; its handle keeps the last metadata.
    pub fn close_watch(&mut self, watch: &ImageWatch) {
        self.watches.remove(&watch.id);
    }

    /// Lets this client write to read-only layers (snapshots). Only for tools that move
    /// data between layers without changing what any layer reads (merging a snapshot into
    /// its child snapshot); every other writer must get `-EROFS`.
    pub fn allow_readonly_writes(&mut self, allow: bool) {
        self.readonly_writes = allow;
    }

    /// Block size, bitmap granularity and commit mode (when known) of the pool of `inode`.
    pub fn pool_info(&self, inode: u64) -> Option<(u32, u32, Option<ImmediateCommit>)> {
        let pool = self.view.pools.get(&pool_of(inode))?;
        Some((
            pool.block_size,
            pool.bitmap_granularity,
            pool.immediate_commit
                .or(self.settings.default_immediate_commit),
        ))
    }

    // ---- submission ----

    /// Queues an op; it starts when the ops before it allow (see the module docs).
    pub(crate) fn submit(&mut self, req: OpRequest<'_>, cb: Callback<OpDone>) {
        let idx = self.take_op_slot(req.kind);
        let op = &mut self.ops[idx];
        op.inode = req.inode;
        op.offset = req.offset;
        op.len = req.len;
        op.version = req.version;
        op.iov.clear();
        op.iov.extend_from_slice(req.iov);
        op.owned = req.owned;
        op.list_pg = req.list_pg;
        op.listed.clear();
        op.callback = Some(cb);
        // Read-only is judged when the op is submitted, not when it starts: a write queued
        // (behind a SYNC) when a snapshot turns its inode read-only was submitted before the
        // snapshot and lands in it, rather than failing with -EROFS in the middle of a VM's
        // I/O. Its data stays visible through the new top layer, which lacks those granules.
        let write = matches!(req.kind, OpKind::Write | OpKind::Delete);
        op.readonly_checked = write && self.view.loaded;
        if op.readonly_checked {
            if let Some(e) = self.readonly_check(req.inode) {
                return self.fail_now(idx, e);
            }
        }
        if req.kind == OpKind::Sync {
            self.syncs_queued += 1;
        }
        self.queue.push_back(idx);
        self.start_queued();
    }

    fn can_start(&self, idx: usize) -> bool {
        if !self.view.loaded || self.sync_running || self.replaying() {
            return false;
        }
        self.ops[idx].kind != OpKind::Sync || self.inflight_writes == 0
    }

    fn start_queued(&mut self) {
        while let Some(&idx) = self.queue.front() {
            if !self.can_start(idx) {
                break;
            }
            self.queue.pop_front();
            self.start_op(idx);
        }
        self.flush_queued();
    }

    fn start_op(&mut self, idx: usize) {
        let kind = self.ops[idx].kind;
        if kind == OpKind::Sync {
            self.syncs_queued -= 1;
            return self.start_sync(idx);
        }
        let (inode, offset, len) = {
            let op = &self.ops[idx];
            (op.inode, op.offset, op.len)
        };
        let pool = match self.view.pools.get(&pool_of(inode)) {
            Some(p) => p.clone(),
            None => {
                return self.fail_now(
                    idx,
                    ClientError::InvalidRequest(format!(
                        "inode {inode:#x}: pool {} does not exist",
                        pool_of(inode)
                    )),
                )
            }
        };
        if kind == OpKind::List {
            return self.start_list(idx, &pool);
        }
        if let Some(reason) = check_range(&pool, offset, len) {
            return self.fail_now(idx, ClientError::InvalidRequest(reason));
        }
        if matches!(kind, OpKind::Write | OpKind::Delete) {
            if let Some(e) = self.image_write_check(idx) {
                return self.fail_now(idx, e);
            }
        }
        let iov_total: u64 = self.ops[idx].iov.iter().map(|v| v.iov_len as u64).sum();
        if matches!(kind, OpKind::Read | OpKind::Write) && iov_total < len {
            return self.fail_now(
                idx,
                ClientError::InvalidRequest(format!("buffers hold {iov_total} bytes, op is {len}")),
            );
        }
        if len == 0 && kind != OpKind::ReadBitmap {
            return self.finish_op(idx);
        }
        if kind == OpKind::Read {
            let mut layers = std::mem::take(&mut self.ops[idx].layers);
            let chain = resolve_chain(&self.view, inode, &mut layers);
            self.ops[idx].layers = layers;
            if let Err(e) = chain {
                return self.fail_now(idx, e);
            }
        }
        let all = pool
            .immediate_commit
            .or(self.settings.default_immediate_commit)
            == Some(ImmediateCommit::All);
        if kind == OpKind::Write && !all {
            // Keep a copy for replay: the caller may reuse its buffer after the callback,
            // long before the data is synced.
            let data = sys::gather(&self.ops[idx].iov, 0, len, &mut self.iov_scratch);
            let copy = Rc::new(data);
            let op = &mut self.ops[idx];
            op.iov.clear();
            op.iov.push(IoVec {
                iov_base: copy.as_ptr().cast_mut().cast(),
                iov_len: copy.len(),
            });
            op.copy = Some(copy);
        }
        if kind == OpKind::ReadBitmap {
            let bits = (len / u64::from(pool.bitmap_granularity)) as usize;
            let op = &mut self.ops[idx];
            op.bitmap.clear();
            op.bitmap.resize(bits.div_ceil(8), 0);
        }
        if matches!(kind, OpKind::Write | OpKind::Delete) {
            self.inflight_writes += 1;
        }
        let op = &mut self.ops[idx];
        op.parts.clear();
        split(&pool, offset, len, |p| {
            op.parts.push(Part {
                pool: pool.id,
                pg: p.pg,
                offset: p.offset,
                len: p.len,
                op_offset: p.op_offset,
                ..Part::default()
            })
        });
        match kind {
            OpKind::Read if self.ops[idx].layers.len() > 1 => self.pair_empty_top(idx, &pool),
            OpKind::Write | OpKind::Delete if !self.empty_top.is_empty() => {
                for p in &self.ops[idx].parts {
                    self.empty_top.remove(&(inode, pool.object_start(p.offset)));
                }
            }
            _ => {}
        }
        for part in 0..self.ops[idx].parts.len() {
            self.dispatch(idx, part);
        }
    }

    /// Writes must not touch a read-only layer (snapshot), and writes to an image opened by
    /// name must stay inside it.
    fn image_write_check(&self, idx: usize) -> Option<ClientError> {
        let Op {
            inode,
            offset,
            len,
            readonly_checked,
            ..
        } = self.ops[idx];
        if !readonly_checked {
            if let Some(e) = self.readonly_check(inode) {
                return Some(e);
            }
        }
        for info in self.watches.values() {
            let info = info.borrow();
            if info.inode != inode {
                continue;
            }
            if offset + len > info.size {
                return Some(ClientError::InvalidRequest(format!(
                    "range {offset}+{len} ends past the end of image {} ({} bytes)",
                    info.name, info.size
                )));
            }
        }
        None
    }

    /// `-EROFS` for a write to a read-only layer (a snapshot), by its metadata or by a watch.
    fn readonly_check(&self, inode: u64) -> Option<ClientError> {
        if self.readonly_writes {
            return None;
        }
        if let Some(entry) = self.view.inode(inode).filter(|e| e.config.readonly) {
            return Some(ClientError::ReadOnlyImage(entry.config.name.clone()));
        }
        self.watches.values().find_map(|info| {
            let info = info.borrow();
            (info.inode == inode && info.readonly)
                .then(|| ClientError::ReadOnlyImage(info.name.clone()))
        })
    }

    fn start_list(&mut self, idx: usize, pool: &PoolConfig) {
        let pg = self.ops[idx].list_pg;
        if pg == 0 || pg > pool.pg_count {
            return self.fail_now(
                idx,
                ClientError::InvalidRequest(format!(
                    "pool {} has PGs 1..={}, not {pg}",
                    pool.id, pool.pg_count
                )),
            );
        }
        let op = &mut self.ops[idx];
        op.parts.clear();
        op.parts.push(Part {
            pool: pool.id,
            pg,
            ..Part::default()
        });
        self.dispatch(idx, 0);
    }

    /// The primary listed only its own store: list every other peer of the PG too.
    fn list_peers_too(&mut self, idx: usize, part: Part, answered: u64) {
        let peers: Vec<u64> = self
            .view
            .pg_state(part.pool, part.pg)
            .map(|s| {
                s.peers
                    .iter()
                    .copied()
                    .filter(|&o| o != 0 && o != answered)
                    .collect()
            })
            .unwrap_or_default();
        for osd in peers {
            let op = &mut self.ops[idx];
            op.parts.push(Part {
                osd,
                direct: true,
                state: PartState::Waiting,
                ..part
            });
            let n = op.parts.len() - 1;
            self.dispatch(idx, n);
        }
    }

    fn fail_now(&mut self, idx: usize, e: ClientError) {
        self.ops[idx].error = Some(e);
        self.ops[idx].parts.clear();
        self.finish_op(idx);
    }

    // ---- dispatch ----

    /// Sends a part to its OSD now, or parks it until the cluster state changes.
    fn dispatch(&mut self, idx: usize, part_idx: usize) {
        let op = &self.ops[idx];
        let part = op.parts[part_idx];
        let kind = op.kind;
        let osd = if kind == OpKind::Sync {
            if !self
                .dirty
                .values()
                .any(|d| d.osd == part.osd && d.state == DirtyState::Acked)
            {
                // Its writes were handed to replay: they must be synced on their new OSDs.
                self.ops[idx].restart = true;
                return self.part_done(idx, part_idx);
            }
            Some(part.osd)
        } else if part.direct {
            self.view.osd(part.osd).map(|_| part.osd)
        } else {
            self.view.primary(part.pool, part.pg).map(|(osd, _)| osd)
        };
        let Some(conn_idx) = osd.and_then(|osd| self.ready_conn(osd)) else {
            self.ops[idx].parts[part_idx].state = PartState::Waiting;
            self.waiting.push((idx, part_idx));
            return;
        };
        let osd = osd.unwrap_or_default();
        if kind != OpKind::Sync {
            if let Err(e) = self.check_compat(conn_idx, part.pool) {
                let op = &mut self.ops[idx];
                op.error.get_or_insert(e);
                return self.part_done(idx, part_idx);
            }
        }
        let list = (kind == OpKind::List)
            .then(|| self.view.pools.get(&part.pool))
            .flatten()
            .map(|pool| SecListOp {
                list_pg: part.pg,
                pg_count: pool.pg_count,
                pg_stripe_size: pool.effective_stripe_size(),
                min_inode: self.ops[idx].inode,
                max_inode: self.ops[idx].inode,
                flags: if part.direct { 0 } else { OSD_LIST_PRIMARY },
                ..SecListOp::default()
            });
        let op = &mut self.ops[idx];
        op.parts[part_idx].osd = osd;
        op.parts[part_idx].state = PartState::Sent;
        let rw = RwOp {
            // Only a layered read's lower parts go elsewhere than the op's inode.
            inode: if part.layer == 0 {
                op.inode
            } else {
                op.layers[usize::from(part.layer)]
            },
            offset: part.offset,
            len: part.len,
            flags: 0,
            meta_revision: 0,
            version: op.version,
        };
        let (request_op, data) = match kind {
            // The top half of a speculative pair asks for the bitmap only.
            OpKind::Read if part.pair != NO_PAIR && part.layer == 0 => {
                (RequestOp::Read(RwOp { len: 0, ..rw }), SendData::None)
            }
            OpKind::Read => (RequestOp::Read(rw), SendData::None),
            OpKind::ReadBitmap => (RequestOp::Read(RwOp { len: 0, ..rw }), SendData::None),
            OpKind::Write => (
                RequestOp::Write(rw),
                SendData::Op {
                    op: idx,
                    off: part.op_offset,
                    len: part.len.into(),
                },
            ),
            OpKind::Delete => (RequestOp::Delete(rw), SendData::None),
            OpKind::Sync => (RequestOp::Sync, SendData::None),
            OpKind::List => match list {
                Some(list) => (RequestOp::SecList(list), SendData::None),
                None => {
                    op.error.get_or_insert(ClientError::InvalidRequest(format!(
                        "pool {} does not exist",
                        part.pool
                    )));
                    return self.part_done(idx, part_idx);
                }
            },
        };
        self.enqueue(
            conn_idx,
            request_op,
            data,
            Target::Part {
                op: idx,
                part: part_idx,
            },
        );
        if !self.to_flush.contains(&conn_idx) {
            self.to_flush.push(conn_idx);
        }
    }

    fn check_compat(&self, conn_idx: usize, pool_id: u32) -> Result<(), ClientError> {
        let Some(conn) = self.conns[conn_idx].as_ref() else {
            return Ok(());
        };
        let (ConnState::Ready(cfg), Some(pool)) = (&conn.state, self.view.pools.get(&pool_id))
        else {
            return Ok(());
        };
        let expect = PoolExpectation {
            block_size: pool.block_size,
            bitmap_granularity: pool.bitmap_granularity,
            immediate_commit: pool
                .immediate_commit
                .or(self.settings.default_immediate_commit)
                .map_or(cfg.immediate_commit, wire_commit),
        };
        cfg.check(&expect).map_err(|e| ClientError::Incompatible {
            osd: conn.osd,
            pool: pool_id,
            reason: e.to_string(),
        })
    }

    // ---- the poll loop ----

    /// Non-blocking work: etcd events, socket I/O, retries. Completions are only queued.
    pub(crate) fn work(&mut self) {
        self.work_after(Some(Duration::ZERO));
    }

    /// [`Client::work`] after waiting up to `timeout` for the first events: the wait's
    /// events are the ones handled, so a wake-up costs one `epoll_wait`, not a wait and
    /// then a poll.
    fn work_after(&mut self, timeout: Option<Duration>) {
        let mut pending = Pending::default();
        let mut timeout = timeout;
        loop {
            // The first wait may sleep; the rest only take what is left.
            let n = self
                .epoll
                .wait(&mut self.events, timeout.replace(Duration::ZERO));
            self.counts.waits += 1;
            for i in 0..n {
                let ev = self.events[i];
                let (token, flags) = (ev.u64, ev.events);
                match token {
                    TOKEN_ETCD => {
                        for event in self.etcd.drain() {
                            let changed = self.view.apply(event);
                            if changed.global {
                                self.settings =
                                    self.resolved.settings_with_global(&self.view.global);
                            }
                            pending.view_changed |= changed.any;
                        }
                    }
                    TOKEN_TIMER => {
                        self.timer.clear();
                        self.timer_at = None;
                        pending.tick = true;
                    }
                    t => {
                        let idx = (t - TOKEN_CONN_BASE) as usize;
                        if self.conns.get(idx).is_some_and(Option::is_some) {
                            self.conn_event(idx, flags, &mut pending);
                        }
                    }
                }
            }
            if n < self.events.len() {
                break;
            }
        }
        if pending.tick {
            self.check_connect_timeouts(&mut pending);
            self.check_op_timeouts(&mut pending);
        }
        if pending.view_changed || pending.tick {
            self.reevaluate();
        }
        self.start_queued();
        self.arm_timer();
    }

    /// Arms the timer for the next retry (when something waits for one) or op-timeout
    /// check, unless it already fires sooner.
    fn arm_timer(&mut self) {
        let now = Instant::now();
        let retry = !self.waiting.is_empty()
            || !self.down_until.is_empty()
            || self
                .conns
                .iter()
                .flatten()
                .any(|c| !matches!(c.state, ConnState::Ready(_)));
        let timeout = self.settings.op_timeout;
        let op_check = self
            .conns
            .iter()
            .flatten()
            .filter(|c| matches!(c.state, ConnState::Ready(_)))
            .filter_map(|c| c.wait.next_check(timeout))
            .min();
        let at = match (retry.then(|| now + self.settings.retry_interval), op_check) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return,
            },
        };
        if self.timer_at.map_or(true, |armed| at < armed) {
            self.timer.arm(at.saturating_duration_since(now));
            self.timer_at = Some(at);
        }
    }

    /// After the cluster changed or the retry timer fired: replays, parked parts, watches.
    fn reevaluate(&mut self) {
        let now = Instant::now();
        self.down_until.retain(|_, t| *t > now);
        // Unsynced writes whose PG moved to another primary must be written there again.
        for d in self.dirty.values_mut() {
            if d.state == DirtyState::Acked {
                if let Some((primary, _)) = self.view.primary(d.pool, d.pg) {
                    if primary != d.osd {
                        d.state = DirtyState::NeedsReplay;
                    }
                }
            }
        }
        self.start_replays();
        let waiting = std::mem::take(&mut self.waiting);
        for (op, part) in waiting {
            if self.ops[op].active
                && self.ops[op].parts.get(part).map(|p| p.state) == Some(PartState::Waiting)
            {
                self.dispatch(op, part);
            }
        }
        self.refresh_watches();
        if self.view.loaded {
            for cb in std::mem::take(&mut self.ready_waiters) {
                self.completions.push_back(Completion::Op(cb, ok_done(0)));
            }
        }
    }

    // ---- completion ----

    fn part_done(&mut self, idx: usize, part: usize) {
        let op = &mut self.ops[idx];
        if op.parts[part].state == PartState::Done {
            return;
        }
        op.parts[part].state = PartState::Done;
        op.done_parts += 1;
        if op.done_parts == op.parts.len() {
            self.finish_op(idx);
        }
    }

    fn finish_op(&mut self, idx: usize) {
        let op = &mut self.ops[idx];
        let kind = op.kind;
        let error = op.error.take();
        if kind == OpKind::Sync {
            // Only one sync runs at a time, and a finished one no longer holds the queue.
            self.sync_running = false;
        }
        if kind == OpKind::Sync && op.restart && error.is_none() {
            // Try again after the replays, ahead of everything submitted after it.
            op.restart = false;
            op.done_parts = 0;
            op.parts.clear();
            self.syncs_queued += 1;
            self.queue.push_front(idx);
            self.start_queued();
            return;
        }
        if kind == OpKind::Sync && error.is_none() {
            let synced: FxHashSet<u64> = op.parts.iter().map(|p| p.osd).collect();
            let mut freed = 0;
            self.dirty.retain(|_, d| {
                let keep = !(d.state == DirtyState::Acked && synced.contains(&d.osd));
                if !keep {
                    freed += u64::from(d.len);
                }
                keep
            });
            self.dirty_bytes -= freed;
        }
        let op = &mut self.ops[idx];
        let replay_of = op.replay_of.take();
        if let Some(key) = replay_of {
            self.replays_running -= 1;
            if let Some(e) = error {
                // The OSD refused the replayed data for good: it is lost.
                crate::log(format_args!("replaying an unsynced write failed: {e}"));
                if let Some(d) = self.dirty.remove(&key) {
                    self.dirty_bytes -= u64::from(d.len);
                }
                self.lost_write.get_or_insert(e);
            }
            self.free_op(idx);
            self.start_queued();
            return;
        }
        let mut error = error;
        if kind == OpKind::Sync && error.is_none() {
            error = self.lost_write.take();
        }
        if matches!(kind, OpKind::Write | OpKind::Delete) && !op.parts.is_empty() {
            self.inflight_writes -= 1;
        }
        let op = &mut self.ops[idx];
        let len = match kind {
            OpKind::Read | OpKind::Write => op.len,
            _ => 0,
        };
        let mut objects = std::mem::take(&mut op.listed);
        objects.sort_unstable();
        objects.dedup();
        let done = OpDone {
            result: error.map_or(Ok(len), Err),
            version: op.version_out,
            buf: std::mem::take(&mut op.owned),
            bitmap: std::mem::take(&mut op.bitmap),
            objects,
        };
        if let Some(cb) = op.callback.take() {
            self.completions.push_back(Completion::Op(cb, done));
        }
        self.free_op(idx);
        if matches!(kind, OpKind::Write | OpKind::Delete) {
            self.maybe_auto_sync();
        }
        self.start_queued();
    }

    /// A free op slot (reused, or a new one), active as an op of `kind`.
    fn take_op_slot(&mut self, kind: OpKind) -> usize {
        let idx = self.free_ops.pop().unwrap_or_else(|| {
            self.ops.push(Op::default());
            self.ops.len() - 1
        });
        let op = &mut self.ops[idx];
        op.active = true;
        op.kind = kind;
        idx
    }

    fn free_op(&mut self, idx: usize) {
        let op = &mut self.ops[idx];
        op.active = false;
        op.copy = None;
        op.parts.clear();
        op.done_parts = 0;
        op.version_out = 0;
        op.restart = false;
        op.iov.clear();
        op.layers.clear();
        self.free_ops.push(idx);
    }
}

impl Drop for Client {
    /// Ops still running fail with [`ClientError::Cancelled`], so every callback runs
    /// exactly once.
    fn drop(&mut self) {
        for op in &mut self.ops {
            if let Some(cb) = op.callback.take() {
                let done = OpDone {
                    result: Err(ClientError::Cancelled),
                    version: 0,
                    buf: std::mem::take(&mut op.owned),
                    bitmap: Vec::new(),
                    objects: Vec::new(),
                };
                self.completions.push_back(Completion::Op(cb, done));
            }
        }
        for (_, cb) in std::mem::take(&mut self.pending_watches) {
            self.completions
                .push_back(Completion::Watch(cb, Err(ClientError::Cancelled)));
        }
        for cb in std::mem::take(&mut self.ready_waiters) {
            self.completions.push_back(Completion::Op(
                cb,
                OpDone {
                    result: Err(ClientError::Cancelled),
                    version: 0,
                    buf: Vec::new(),
                    bitmap: Vec::new(),
                    objects: Vec::new(),
                },
            ));
        }
        self.run_completions();
    }
}

impl<'a> OpRequest<'a> {
    fn new(kind: OpKind, inode: u64, offset: u64, len: u64, version: u64) -> OpRequest<'a> {
        OpRequest {
            kind,
            inode,
            offset,
            len,
            version,
            iov: &[],
            owned: Vec::new(),
            list_pg: 0,
        }
    }

    /// A read into caller memory.
    pub(crate) fn read(inode: u64, offset: u64, len: u64, iov: &'a [IoVec]) -> OpRequest<'a> {
        OpRequest {
            iov,
            ..OpRequest::new(OpKind::Read, inode, offset, len, 0)
        }
    }

    /// A write from caller memory.
    pub(crate) fn write(
        inode: u64,
        offset: u64,
        len: u64,
        version: u64,
        iov: &'a [IoVec],
    ) -> OpRequest<'a> {
        OpRequest {
            iov,
            ..OpRequest::new(OpKind::Write, inode, offset, len, version)
        }
    }

    /// A delete.
    pub(crate) fn delete(inode: u64, offset: u64, len: u64, version: u64) -> OpRequest<'a> {
        OpRequest::new(OpKind::Delete, inode, offset, len, version)
    }

    /// A bitmap read.
    pub(crate) fn read_bitmap(inode: u64, offset: u64, len: u64) -> OpRequest<'a> {
        OpRequest::new(OpKind::ReadBitmap, inode, offset, len, 0)
    }

    /// A sync.
    pub(crate) fn sync() -> OpRequest<'a> {
        OpRequest::new(OpKind::Sync, 0, 0, 0, 0)
    }
}

fn ok_done(len: u64) -> OpDone {
    OpDone {
        result: Ok(len),
        version: 0,
        buf: Vec::new(),
        bitmap: Vec::new(),
        objects: Vec::new(),
    }
}

fn vec_iov(buf: &mut Vec<u8>) -> IoVec {
    IoVec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }
}
