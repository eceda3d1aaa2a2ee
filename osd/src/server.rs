//! The OSD's event loop: one thread, poll-driven, serving clients (primary ops on the PGs
//! this OSD leads), peers (secondary ops from the local blockstore), its own outgoing peer
//! connections, and the etcd side thread's events.
//!
//! One io_uring for everything: the blockstore's ring carries the disk I/O and also the polls
//! of the listener, the inbound connections, the outgoing peer connections and the etcd
//! eventfd, so one `io_uring_enter` waits for all of them (with the shutdown signals
//! unblocked only inside that wait). A socket's input has a multishot poll, armed once for
//! the connection's life: its events mark the connection readable, and the loop reads every
//! connection with input (so input left in a socket by the per-round limits is read later
//! without a poll event); POLLOUT is a one-shot poll armed only while a socket is full. One loop round: wait; check the etcd lease's deadline
//! (see [`crate::pg_lifecycle::LeaseWatch`]); reap disk completions and fired polls;
//! accept; read and decode; start or continue ops; route every finished sub-op (blockstore
//! op or peer reply) to its owner; once a second run timers (peer pings and connect
//! timeouts, retries of PGs that could not claim or peer, statistics); check the deadline
//! again; write replies and requests; re-arm the polls that fired. Only when the blockstore
//! has queued work but no I/O in flight (work that progresses without a completion) does the
//! wait time out after at most [`BS_BUSY_POLL_TIMEOUT`].
//!
//! Shutdown (SIGTERM/SIGINT): the listener is closed and no more requests are read; ops in
//! progress finish and their replies are sent (for at most [`SHUTDOWN_GRACE`]); the
//! blockstore finishes its in-flight I/O; dropping the etcd thread revokes the lease, so the
//! OSD and its PGs show down at once.
//!
//! A device write or fsync failing (the store turns read-only) stops the OSD at once: no
//! result reached after the failure is delivered (so nothing the store could not write is
//! acknowledged, and the ops in progress get no error either: their clients and primaries
//! see the connection close and retry on the PG's next primary, as after a crash), the
//! blockstore finishes its in-flight I/O, the lease is revoked so that the PGs move, and
//! [`Server::run`] returns [`ServerError::DeviceFailed`]. ENOSPC
//! from the device (a thin-provisioned one out of space) is the exception: the OSD stays up
//! and every op gets a clean per-op error, since moving its PGs would only fill the next
//! OSD's share of the same pool.
//!
//! Every `slow_log_interval` the loop counts the ops in progress for longer than that (as a
//! primary, and as a secondary on the local store), logs them and reports the counts in
//! `osd/stats` (an appearance or disappearance of slow ops is reported at the next tick).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::io::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use vitastor_blockstore::uring::{PollEvent, UringEngine};
use vitastor_blockstore::{
    AlignedBuf, Blockstore, BsError, BsOp, BsReply, BsResult, Completion,
    ImmediateCommit as BsImmediateCommit, ObjectId, OpId,
};
use vitastor_layout::{OsdNum, PgId};
use vitastor_protocol::errno::Errno;
use vitastor_protocol::handshake::{
    ImmediateCommit, ReplyFeatures, ShowConfigReplyJson, ShowConfigRequestJson,
};
use vitastor_protocol::{Frame, Reply, ReplyOp, Request, RequestOp, PROTOCOL_VERSION};

use crate::backoff::RecoveryBackoff;
use crate::cluster::ClusterView;
use crate::connection::{ConnError, Connection, Incoming};
use crate::etcd::EtcdThread;
use crate::peers::{PeerEvent, PeerTimeouts, Peers};
use crate::pg::Pg;
use crate::primary::{ClientRef, POp};
use crate::secondary::{self, ReplyMsg, SecOp, Step, StoreGeometry};
use crate::shutdown::Shutdown;

/// How long the loop may sleep while the blockstore has queued work and no I/O in flight.
pub const BS_BUSY_POLL_TIMEOUT: Duration = Duration::from_millis(1);

/// How long a shutdown waits for replies of ops in progress to reach their peers; a peer that
/// stopped reading must not keep the OSD alive forever.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Most connections accepted per loop round, so a connection storm cannot starve the peers
/// already connected.
const ACCEPTS_PER_ROUND: usize = 64;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket failed.
    #[error("listen: {0}")]
    Listen(io::Error),
    /// Waiting for events failed.
    #[error("waiting for events: {0}")]
    Poll(io::Error),
    /// The blockstore failed as a whole (not one op).
    #[error("blockstore: {0}")]
    Blockstore(#[from] BsError),
    /// A device write or fsync failed with this errno: the OSD stopped serving.
    #[error(
        "device error ({}) on a write or fsync: the store cannot promise durability, the OSD stopped serving",
        io::Error::from_raw_os_error(*.0)
    )]
    DeviceFailed(i32),
}

/// Inbound connection id.
pub type ConnId = u64;

/// A secondary request whose blockstore op is in progress.
pub(crate) struct Pending {
    conn: ConnId,
    cost: usize,
    op: SecOp,
    start: Instant,
}

/// Who waits for a sub-op (a blockstore op or a request to a peer).
pub(crate) enum Owner {
    /// A secondary request from a peer (blockstore ops only).
    Secondary(Pending),
    /// Sub-op `tag` of the primary op in slot `idx`, whose serial is `serial` (a result
    /// for an op that has finished and whose slot was reused is dropped).
    Op {
        /// Slot.
        idx: usize,
        /// The op's serial number.
        serial: u64,
        /// The sub-op within the op.
        tag: u32,
    },
    /// Peering: the listing of `osd` for PG `pg`, peering round `epoch`.
    List(PgId, OsdNum, u64),
    /// Peering: syncing or stabilizing what the listing found unstable on `osd`, for PG
    /// `pg`, round `epoch`.
    Stab(PgId, OsdNum, u64),
}

/// A request sent to a peer, for `subop_stats`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    name: &'static str,
    start: std::time::Instant,
    bytes: u64,
}

/// The result of a sub-op.
#[derive(Debug)]
pub enum SubRes {
    /// From the local blockstore.
    Bs(BsResult<BsReply>),
    /// From a peer: the reply and its payload, or the error (a failed reply, a lost peer).
    Net(Result<(Reply, Vec<u8>), Errno>),
}

impl SubRes {
    /// The errno of a failure.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SubRes::Bs(Err(e)) => Some(secondary::bs_errno(e)),
            SubRes::Net(Err(e)) => Some(*e),
            _ => None,
        }
    }
}

// Ring poll tags: kind in the top bits, a generation below it, the fd's owner id below that.
const KIND_MASK: u64 = 7 << 60;
const KIND_LISTENER: u64 = 1 << 60;
const KIND_ETCD: u64 = 2 << 60;
const KIND_PEER: u64 = 3 << 60;
const KIND_CONN: u64 = 4 << 60;
const KIND_SIGNAL: u64 = 5 << 60;
const KIND_PEER_OUT: u64 = 6 << 60;
const KIND_CONN_OUT: u64 = 7 << 60;
const GEN_SHIFT: u32 = 48;
const GEN_MAX: u16 = 0xfff;
const GEN_MASK: u64 = (GEN_MAX as u64) << GEN_SHIFT;
const ID_MASK: u64 = (1 << GEN_SHIFT) - 1;

fn gen_bits(gen: u16) -> u64 {
    (gen as u64) << GEN_SHIFT
}

/// Settings of the daemon beyond the blockstore's.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This OSD's number.
    pub osd_num: OsdNum,
    /// Peer liveness.
    pub peer_timeouts: PeerTimeouts,
    /// Objects recovered at once.
    pub recovery_queue_depth: usize,
    /// How often `osd/stats` is written.
    pub stats_interval: Duration,
    /// Ops in progress for longer are slow; also how often they are counted and logged.
    pub slow_log_interval: Duration,
    /// `--debug_ec_crash` (tests only): where an EC write aborts the process.
    pub debug_ec_crash: Option<crate::debug_crash::EcCrash>,
}

/// The server. See the module docs.
pub struct Server {
    listener: Option<TcpListener>,
    pub(crate) bs: Blockstore<UringEngine>,
    geo: StoreGeometry,
    show_config: Vec<u8>,
    conns: HashMap<ConnId, Connection<AlignedBuf>>,
    next_conn: ConnId,
    bs_owner: HashMap<OpId, Owner>,
    /// Requests sent to peers, by (peer, request id): who waits, and what and when was sent
    /// (for `subop_stats`).
    net_owner: HashMap<(OsdNum, u64), (Owner, Sent)>,
    completions: Vec<Completion>,
    incoming: Vec<Incoming<AlignedBuf>>,
    pub(crate) cfg: ServerConfig,
    pub(crate) osd_num: OsdNum,
    pub(crate) etcd: Option<EtcdThread>,
    pub(crate) cluster: ClusterView,
    pub(crate) peers: Peers,
    pub(crate) peer_events: Vec<PeerEvent>,
    pub(crate) pgs: BTreeMap<PgId, Pg>,
    pub(crate) ops: Vec<Option<POp>>,
    /// Serial number of the op in each slot of `ops`.
    op_serials: Vec<u64>,
    /// When the op in each slot of `ops` started (for slow-op counting).
    op_started: Vec<Instant>,
    /// When slow ops were last counted.
    last_slow_check: Instant,
    next_serial: u64,
    free_ops: Vec<usize>,
    pub(crate) read_pgs: HashMap<usize, PgId>,
    pub(crate) recovering: HashSet<(PgId, ObjectId)>,
    /// Objects whose recovery failed, and when they may be tried again.
    pub(crate) backoff: RecoveryBackoff,
    /// A SYNC op is running; later SYNCs wait in `sync_queue`.
    pub(crate) sync_running: bool,
    pub(crate) sync_queue: std::collections::VecDeque<ClientRef>,
    /// A recovery finished: look for more work once the current events are handled
    /// (never from inside the op that finished, which could recurse without bound).
    pub(crate) recovery_kick: bool,
    /// An EC write queued stabilizes in this loop turn: the turn's end sends them
    /// ([`Server::flush_ec_stabilizes`]); turns without any skip the scan of the op table.
    pub(crate) ec_stabilizes_queued: bool,
    /// The last peering round started on this server, by any PG: rounds are numbered
    /// server-wide so that a PG dropped and created again never reuses an earlier
    /// incarnation's numbers, whose sub-ops may still answer.
    pub(crate) peering_epoch: u64,
    pub(crate) stats: crate::stats::OsdStats,
    /// Sub-op results to deliver outside the call that produced them.
    deferred: Vec<(Owner, SubRes)>,
    /// Whether the etcd lease is held, by etcd's word and this thread's clock: no PG is
    /// served without it.
    pub(crate) lease: crate::pg_lifecycle::LeaseWatch,
    pub(crate) last_stats: Instant,
    /// Ring polls armed: key → (generation, events).
    armed: HashMap<u64, (u16, i16)>,
    next_gen: u16,
    wanted: Vec<WantedPoll>,
    seen: HashSet<u64>,
    fired: Vec<PollEvent>,
}

/// A poll the loop wants armed.
#[derive(Clone, Copy)]
struct WantedPoll {
    key: u64,
    fd: i32,
    events: i16,
    /// Multishot: armed once for as long as it is wanted (a socket's input, which is wanted
    /// for the connection's life); one-shot polls are for what is wanted now and then
    /// (POLLOUT while a socket is full, accepts, etcd, signals).
    multi: bool,
}

fn wire_commit(mode: BsImmediateCommit) -> ImmediateCommit {
    match mode {
        BsImmediateCommit::All => ImmediateCommit::All,
        BsImmediateCommit::Small => ImmediateCommit::Small,
        BsImmediateCommit::None => ImmediateCommit::None,
    }
}

impl Server {
    /// Binds `addr` and serves `bs` as OSD `cfg.osd_num`; without `etcd` it only serves
    /// secondary ops (no PG can be led without etcd).
    pub fn bind(
        addr: SocketAddr,
        cfg: ServerConfig,
        bs: Blockstore<UringEngine>,
        etcd: Option<EtcdThread>,
    ) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(addr).map_err(ServerError::Listen)?;
        Server::with_listener(listener, cfg, bs, etcd)
    }

    /// Serves on an already bound listener (its port is known before etcd hears of it).
    pub fn with_listener(
        listener: TcpListener,
        cfg: ServerConfig,
        bs: Blockstore<UringEngine>,
        etcd: Option<EtcdThread>,
    ) -> Result<Server, ServerError> {
        let osd_num = cfg.osd_num;
        listener
            .set_nonblocking(true)
            .map_err(ServerError::Listen)?;
        let layout = bs.layout();
        let show_config = ShowConfigReplyJson {
            // SHOW_CONFIG's JSON is the wire edge: the number goes out bare.
            osd_num: Some(osd_num.0),
            protocol_version: PROTOCOL_VERSION,
            block_size: layout.block_size,
            bitmap_granularity: layout.bitmap_granularity,
            primary_enabled: Some(etcd.is_some()),
            blockstore_enabled: Some(true),
            readonly: Some(false),
            immediate_commit: wire_commit(bs.config().immediate_commit),
            lease_timeout: None,
            features: ReplyFeatures::default(),
        }
        .to_json();
        let geo = StoreGeometry {
            bitmap_bytes: layout.bitmap_bytes(),
        };
        Ok(Server {
            listener: Some(listener),
            bs,
            geo,
            show_config,
            conns: HashMap::new(),
            next_conn: 0,
            bs_owner: HashMap::new(),
            net_owner: HashMap::new(),
            completions: Vec::new(),
            incoming: Vec::new(),
            peers: Peers::new(osd_num, cfg.peer_timeouts),
            cfg,
            osd_num,
            etcd,
            cluster: ClusterView::default(),
            peer_events: Vec::new(),
            pgs: BTreeMap::new(),
            ops: Vec::new(),
            op_serials: Vec::new(),
            op_started: Vec::new(),
            last_slow_check: Instant::now(),
            next_serial: 0,
            free_ops: Vec::new(),
            read_pgs: HashMap::new(),
            recovering: HashSet::new(),
            backoff: RecoveryBackoff::default(),
            sync_running: false,
            sync_queue: Default::default(),
            recovery_kick: false,
            ec_stabilizes_queued: false,
            peering_epoch: 0,
            stats: Default::default(),
            deferred: Vec::new(),
            lease: Default::default(),
            last_stats: Instant::now(),
            armed: HashMap::new(),
            next_gen: 0,
            wanted: Vec::new(),
            seen: HashSet::new(),
            fired: Vec::new(),
        })
    }

    /// The address the listener is bound to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "listener closed",
            )),
        }
    }

    /// Serves until `shutdown` is requested and the ops in progress are finished.
    pub fn run(&mut self, shutdown: &Shutdown) -> Result<(), ServerError> {
        let mut draining_since: Option<Instant> = None;
        let mut last_tick = Instant::now();
        let mut device_failed = None;
        loop {
            if let Some(res) = self.device_failed() {
                tracing::error!(
                    "device error ({}) on a write or fsync: stopping at once; the lease is revoked so that other OSDs take this OSD's PGs, and the {} ops in progress are left to their clients' retries",
                    io::Error::from_raw_os_error(-res),
                    self.bs_owner.len() + self.ops.iter().flatten().count()
                );
                device_failed = Some(-res);
                break;
            }
            if shutdown.requested() && draining_since.is_none() {
                tracing::info!(
                    "shutting down: finishing {} ops in progress",
                    self.bs_owner.len() + self.ops.iter().flatten().count()
                );
                self.listener = None;
                draining_since = Some(Instant::now());
            }
            if let Some(since) = draining_since {
                let flushed = self.conns.values().all(|c| !c.wants_write());
                let busy = !self.bs_owner.is_empty() || self.ops.iter().any(Option::is_some);
                if (!busy && flushed) || since.elapsed() > SHUTDOWN_GRACE {
                    break;
                }
            }
            let draining = draining_since.is_some();
            self.arm_polls(draining, shutdown);
            let to_tick = Duration::from_secs(1).saturating_sub(last_tick.elapsed());
            let timeout = self
                .poll_timeout(draining)
                .map_or(to_tick, |t| t.min(to_tick));
            self.bs
                .engine_mut()
                .wait_for(Some(timeout))
                .map_err(ServerError::Poll)?;
            // Before anything that arrived during the wait is read: a process stopped past
            // its lease must not act on requests that waited in its sockets meanwhile.
            self.check_lease();
            // Reaps disk completions and keeps the fired socket polls aside.
            self.bs.poll(false)?;
            let mut fired = std::mem::take(&mut self.fired);
            self.bs.engine_mut().take_polls(&mut fired);
            for ev in &fired {
                let key = ev.token & !GEN_MASK;
                let gen = ((ev.token & GEN_MASK) >> GEN_SHIFT) as u16;
                match self.armed.get(&key) {
                    // A poll that ended is armed again by the next `arm_polls` if still wanted.
                    Some(&(g, _)) if g == gen => {
                        if !ev.more {
                            self.armed.remove(&key);
                        }
                    }
                    // A poll replaced or cancelled since it was armed.
                    _ => continue,
                }
                // A failed poll (the fd went away) is handled like an error on it.
                let revents = if ev.result < 0 {
                    libc::POLLERR
                } else {
                    ev.result as i16
                };
                if key == KIND_SIGNAL {
                    shutdown.take_signals();
                } else {
                    self.on_poll(key, revents);
                }
            }
            fired.clear();
            self.fired = fired;
            if !draining {
                // Connections whose polls fired, and input left behind by an earlier round
                // (staged, or still in the socket after the frame or buffer limit), which no
                // poll reports again.
                let ready: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.has_input() && !c.over_limit())
                    .map(|(id, _)| *id)
                    .collect();
                for id in ready {
                    self.receive(id);
                }
            }
            let mut events = std::mem::take(&mut self.peer_events);
            self.peers.receive_pending(&mut events);
            self.peer_events = events;
            self.process_peer_events();
            self.drain_completions();
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                let mut events = std::mem::take(&mut self.peer_events);
                self.peers.tick(last_tick, &mut events);
                self.peer_events = events;
                self.process_peer_events();
                self.tick();
                if last_tick.duration_since(self.last_slow_check) >= self.cfg.slow_log_interval {
                    self.last_slow_check = last_tick;
                    self.count_slow_ops(last_tick);
                }
            }
            self.end_turn();
        }
        // Let the blockstore finish the I/O it started (flushes, journal trims): its buffers
        // must outlive the I/O, and a clean stop leaves less to replay.
        let idle = self.bs.wait_idle();
        // Revokes the lease: the OSD and its PGs show down at once.
        self.etcd = None;
        if let Some(errno) = device_failed {
            return Err(ServerError::DeviceFailed(errno));
        }
        idle?;
        Ok(())
    }

    /// The end of a loop turn: the blockstore advanced and the messages written. The disk I/O
    /// and poll changes the turn queued stay in the ring for the next wait, which submits
    /// them in the same `io_uring_enter` (each enter that submits disk I/O is a device kick).
    pub(crate) fn end_turn(&mut self) {
        // Again right before the sub-ops queued in this turn leave.
        self.check_lease();
        self.bs.advance();
        // Ops that finish inside `advance` (a SYNC with nothing left to flush, a read served
        // from memory) complete without any I/O to wake the next wait: take them now,
        // or their replies would wait for the next tick.
        self.drain_completions();
        self.flush_ec_stabilizes();
        // Write replies and requests right away rather than a poll round later.
        self.flush_all();
        let mut events = std::mem::take(&mut self.peer_events);
        self.peers.flush_all(&mut events);
        self.peer_events = events;
        self.process_peer_events();
    }

    /// The errno (negative) of a device failure that stops the OSD, if one happened.
    fn device_failed(&self) -> Option<i32> {
        self.bs.device_failure().filter(|&e| e != -libc::ENOSPC)
    }

    /// Counts, logs and records the ops in progress for longer than `slow_log_interval`.
    fn count_slow_ops(&mut self, now: Instant) {
        let limit = self.cfg.slow_log_interval;
        let primary = crate::stats::count_slow(
            self.ops
                .iter()
                .zip(&self.op_started)
                .filter(|(op, _)| op.is_some())
                .map(|(_, &t)| t),
            now,
            limit,
        );
        let secondary = crate::stats::count_slow(
            self.bs_owner.values().filter_map(|o| match o {
                Owner::Secondary(p) => Some(p.start),
                _ => None,
            }),
            now,
            limit,
        );
        for (kind, slow) in [("primary", primary), ("secondary", secondary)] {
            if let Some(oldest) = slow.oldest {
                tracing::warn!(
                    "{} slow {kind} ops (in progress for more than {limit:?}), the oldest for {:.1} s",
                    slow.count,
                    now.saturating_duration_since(oldest).as_secs_f64()
                );
            }
        }
        let counts = crate::stats::SlowOps {
            primary: primary.count,
            secondary: secondary.count,
        };
        if self.stats.set_slow_ops(counts) {
            // Slow ops appearing or going away is news for `vitastor-cli status`: report at
            // the next tick instead of waiting out the stats interval.
            self.last_stats = now.checked_sub(self.cfg.stats_interval).unwrap_or(now);
        }
    }

    /// Handles peer events, deferred sub-op results and recovery kicks until none are left
    /// (handling one may produce more).
    pub(crate) fn process_peer_events(&mut self) {
        while !self.peer_events.is_empty() || !self.deferred.is_empty() || self.recovery_kick {
            for ev in std::mem::take(&mut self.peer_events) {
                match ev {
                    PeerEvent::Reply {
                        osd,
                        reply,
                        payload,
                        ..
                    } => {
                        let Some((owner, sent)) = self.net_owner.remove(&(osd, reply.id)) else {
                            continue;
                        };
                        // As the original: sub-ops this OSD sent, counted when answered.
                        self.stats.subop(sent.name, sent.start, sent.bytes);
                        let res = if reply.retval < 0 {
                            let e = Errno::from_retval(reply.retval).unwrap_or(Errno::EIO);
                            SubRes::Net(Err(e))
                        } else {
                            SubRes::Net(Ok((reply, payload)))
                        };
                        self.deliver(owner, res);
                    }
                    PeerEvent::Ready(osd) => self.on_peer_ready(osd),
                    PeerEvent::Down(osd, why) => {
                        tracing::warn!("peer {osd} lost: {why}");
                        let lost: Vec<(OsdNum, u64)> = self
                            .net_owner
                            .keys()
                            .filter(|(o, _)| *o == osd)
                            .copied()
                            .collect();
                        for k in lost {
                            if let Some((owner, _)) = self.net_owner.remove(&k) {
                                self.deliver(owner, SubRes::Net(Err(Errno::EPIPE)));
                            }
                        }
                        self.on_peer_down(osd);
                    }
                }
            }
            for (owner, res) in std::mem::take(&mut self.deferred) {
                self.deliver(owner, res);
            }
            if std::mem::take(&mut self.recovery_kick) {
                self.kick_recovery();
            }
        }
    }

    /// Routes a finished sub-op to whoever waits for it.
    pub(crate) fn deliver(&mut self, owner: Owner, res: SubRes) {
        match owner {
            Owner::Secondary(p) => {
                let SubRes::Bs(result) = res else { return };
                // As the original: every op this OSD executed, a peer's included.
                self.stats.op(p.op.stat_name(), p.start, p.op.data_bytes());
                let geo = self.geo;
                let step = secondary::complete(p.op, result, &geo);
                self.apply(p.conn, p.cost, step);
            }
            Owner::Op { idx, serial, tag } => {
                if self.op_serials.get(idx) == Some(&serial) {
                    self.on_sub(idx, tag, res);
                }
            }
            Owner::List(key, osd, epoch) => self.on_listing(key, osd, epoch, res),
            Owner::Stab(key, osd, epoch) => self.on_peering_stabilized(key, osd, epoch, res),
        }
    }

    /// Submits a blockstore op for `owner`.
    pub(crate) fn submit_local(&mut self, owner: Owner, op: BsOp) {
        let id = self.bs.submit(op);
        self.bs_owner.insert(id, owner);
    }

    /// Sends a request to peer `osd` for `owner`; if the peer is not connected the owner
    /// gets `-EPIPE` (delivered from the loop, never from inside this call).
    pub(crate) fn submit_remote(
        &mut self,
        owner: Owner,
        osd: OsdNum,
        request: Request,
        payload: Vec<u8>,
        data: Option<Rc<AlignedBuf>>,
    ) {
        let sent = Sent {
            name: request.op.opcode().stat_name(),
            start: std::time::Instant::now(),
            bytes: data.as_ref().map_or(0, |d| d.len() as u64),
        };
        match self.peers.send(osd, request, &payload, data) {
            Some(id) => {
                self.net_owner.insert((osd, id), (owner, sent));
            }
            None => self.deferred.push((owner, SubRes::Net(Err(Errno::EPIPE)))),
        }
    }

    /// Sub-op `tag` of primary op `idx` on the local blockstore.
    pub(crate) fn sub_local(&mut self, idx: usize, tag: u32, op: BsOp) {
        let serial = self.op_serials[idx];
        self.submit_local(Owner::Op { idx, serial, tag }, op);
    }

    /// Sub-op `tag` of primary op `idx` on peer `osd`.
    pub(crate) fn sub_remote(
        &mut self,
        idx: usize,
        tag: u32,
        osd: OsdNum,
        request: Request,
        payload: Vec<u8>,
        data: Option<Rc<AlignedBuf>>,
    ) {
        let serial = self.op_serials[idx];
        self.submit_remote(Owner::Op { idx, serial, tag }, osd, request, payload, data);
    }

    /// Stores a new primary op; returns its index.
    pub(crate) fn insert_op(&mut self, op: POp) -> usize {
        self.next_serial += 1;
        match self.free_ops.pop() {
            Some(i) => {
                self.ops[i] = Some(op);
                self.op_serials[i] = self.next_serial;
                self.op_started[i] = Instant::now();
                i
            }
            None => {
                self.ops.push(Some(op));
                self.op_serials.push(self.next_serial);
                self.op_started.push(Instant::now());
                self.ops.len() - 1
            }
        }
    }

    /// Takes op `idx` out of its slot to run a step; the step either puts it back (it waits
    /// for sub-ops) or drops it (finished), and [`Server::release_if_done`] then frees the slot.
    pub(crate) fn take_op(&mut self, idx: usize) -> Option<POp> {
        self.ops.get_mut(idx)?.take()
    }

    /// Frees slot `idx` if the step that took its op did not put it back. Called once per
    /// step that took the op (an empty slot makes the step return early without calling it),
    /// so a slot is never freed twice.
    pub(crate) fn release_if_done(&mut self, idx: usize) {
        if self.ops.get(idx).is_some_and(Option::is_none) {
            debug_assert!(!self.free_ops.contains(&idx), "op slot {idx} freed twice");
            self.free_ops.push(idx);
        }
    }

    /// The object size of the local store.
    pub(crate) fn geo_block_size(&self) -> u32 {
        self.bs.layout().block_size
    }

    fn on_etcd(&mut self) {
        let Some(etcd) = &self.etcd else { return };
        let events = etcd.drain();
        self.on_etcd_events(events);
    }

    /// The polls the loop wants armed.
    fn wanted_polls(&self, draining: bool, out: &mut Vec<WantedPoll>) {
        out.clear();
        let once = |key, fd, events| WantedPoll {
            key,
            fd,
            events,
            multi: false,
        };
        if let Some(l) = &self.listener {
            out.push(once(KIND_LISTENER, l.as_raw_fd(), libc::POLLIN));
        }
        if let Some(etcd) = &self.etcd {
            out.push(once(KIND_ETCD, etcd.wake_fd(), libc::POLLIN));
        }
        self.peers.poll_set(&mut |serial, fd, wants_out| {
            out.push(WantedPoll {
                key: KIND_PEER | serial,
                fd,
                events: libc::POLLIN,
                multi: true,
            });
            if wants_out {
                out.push(once(KIND_PEER_OUT | serial, fd, libc::POLLOUT));
            }
        });
        for (id, conn) in &self.conns {
            // Armed also while the connection is over its limit: an event then only marks
            // the input, which waits in the socket (and slows the peer down) until read.
            // POLLHUP/POLLERR are reported to either poll.
            if !draining {
                out.push(WantedPoll {
                    key: KIND_CONN | id,
                    fd: conn.fd(),
                    events: libc::POLLIN,
                    multi: true,
                });
            }
            if conn.wants_write() {
                out.push(once(KIND_CONN_OUT | id, conn.fd(), libc::POLLOUT));
            }
        }
    }

    /// Arms a ring poll for every wanted fd that has none (or one for other events) and
    /// cancels the polls of fds no longer wanted. Each armed poll carries a generation, so a
    /// completion of a replaced or cancelled poll is recognised and ignored.
    fn arm_polls(&mut self, draining: bool, shutdown: &Shutdown) {
        let mut wanted = std::mem::take(&mut self.wanted);
        self.wanted_polls(draining, &mut wanted);
        wanted.push(WantedPoll {
            key: KIND_SIGNAL,
            fd: shutdown.fd(),
            events: libc::POLLIN,
            multi: false,
        });
        self.seen.clear();
        for w in &wanted {
            self.seen.insert(w.key);
            match self.armed.get(&w.key) {
                Some(&(_, armed)) if armed == w.events => continue,
                Some(&(gen, _)) => self.bs.engine_mut().poll_remove(w.key | gen_bits(gen)),
                None => {}
            }
            self.next_gen = self.next_gen.wrapping_add(1) & GEN_MAX;
            let gen = self.next_gen;
            self.armed.insert(w.key, (gen, w.events));
            let (token, events) = (w.key | gen_bits(gen), w.events as u16 as u32);
            let engine = self.bs.engine_mut();
            if w.multi {
                engine.poll_add_multi(w.fd, events, token);
            } else {
                engine.poll_add(w.fd, events, token);
            }
        }
        let stale: Vec<(u64, u16)> = self
            .armed
            .iter()
            .filter(|(k, _)| !self.seen.contains(k))
            .map(|(k, &(g, _))| (*k, g))
            .collect();
        for (key, gen) in stale {
            self.armed.remove(&key);
            self.bs.engine_mut().poll_remove(key | gen_bits(gen));
        }
        self.wanted = wanted;
    }

    fn on_poll(&mut self, key: u64, revents: i16) {
        match key & KIND_MASK {
            KIND_LISTENER => self.accept(),
            KIND_ETCD => self.on_etcd(),
            KIND_PEER | KIND_PEER_OUT => {
                let mut events = std::mem::take(&mut self.peer_events);
                self.peers
                    .handle_serial(key & ID_MASK, revents, &mut events);
                self.peer_events = events;
            }
            KIND_CONN_OUT => {
                let id = key & ID_MASK;
                if let Some(c) = self.conns.get_mut(&id) {
                    c.mark_writable();
                }
                self.flush(id);
            }
            _ => {
                // Read by the loop's pass over connections with input, after every poll.
                if let Some(c) = self.conns.get_mut(&(key & ID_MASK)) {
                    c.mark_readable();
                }
            }
        }
    }

    fn poll_timeout(&self, draining: bool) -> Option<Duration> {
        let input_ready = !draining
            && self
                .conns
                .values()
                .any(|c| c.has_input() && !c.over_limit());
        if input_ready || self.peers.has_input() || !self.deferred.is_empty() || self.recovery_kick
        {
            Some(Duration::ZERO)
        } else if !self.bs.is_idle() && self.bs.engine_in_flight() == 0 {
            // Queued work that advances without a completion to wake us.
            Some(BS_BUSY_POLL_TIMEOUT)
        } else if draining {
            // Bounded so the grace period is checked even if no socket ever becomes writable.
            Some(Duration::from_millis(100))
        } else {
            None
        }
    }

    pub(crate) fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        for _ in 0..ACCEPTS_PER_ROUND {
            match listener.accept() {
                Ok((stream, _)) => {
                    match Connection::with_buffers(stream, AlignedBuf::for_receive) {
                        Ok(conn) => {
                            self.conns.insert(self.next_conn, conn);
                            self.next_conn += 1;
                        }
                        Err(e) => tracing::warn!("cannot set up a connection: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Per-connection failures (ECONNABORTED, EMFILE…) must not stop the server;
                // the next round tries again.
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn close(&mut self, id: ConnId, why: &ConnError) {
        if self.conns.remove(&id).is_some() && !matches!(why, ConnError::Eof) {
            tracing::warn!("closing connection {id}: {why}");
        }
        // Its ops still in the blockstore finish; their replies are dropped on arrival.
    }

    /// Writes what every connection has queued, as far as its socket takes it.
    pub(crate) fn flush_all(&mut self) {
        let writers: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.wants_write())
            .map(|(id, _)| *id)
            .collect();
        for id in writers {
            self.flush(id);
        }
    }

    fn flush(&mut self, id: ConnId) {
        if let Some(Err(e)) = self.conns.get_mut(&id).map(|c| c.flush()) {
            self.close(id, &e);
        }
    }

    pub(crate) fn receive(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut incoming = std::mem::take(&mut self.incoming);
        let result = conn.receive(&mut incoming);
        // Frames decoded before an error are still answered only if the connection survives;
        // after a fatal error nothing more is sent on it.
        match result {
            Ok(()) => {
                for inc in incoming.drain(..) {
                    self.serve(id, inc);
                }
            }
            Err(e) => {
                incoming.clear();
                self.close(id, &e);
            }
        }
        self.incoming = incoming;
    }

    /// Queues a reply on an inbound connection (dropped if the connection is gone).
    pub(crate) fn reply(&mut self, conn: ConnId, cost: usize, msg: ReplyMsg) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue_reply(cost, msg);
        }
    }

    fn serve(&mut self, conn: ConnId, inc: Incoming<AlignedBuf>) {
        let Incoming {
            frame,
            mut payload,
            cost,
        } = inc;
        let request = match frame {
            Frame::Request(request) => request,
            Frame::Rejected { id, opcode, error } => {
                return self.reply(
                    conn,
                    cost,
                    ReplyMsg::error(id, opcode, secondary::protocol_errno(&error)),
                );
            }
            // Connection::receive never yields replies.
            Frame::Reply { .. } => return,
        };
        let geo = self.geo;
        if let RequestOp::Read(_) | RequestOp::Write(_) | RequestOp::Sync | RequestOp::Delete(_) =
            request.op
        {
            let client = ClientRef {
                conn,
                id: request.id,
                opcode: request.opcode().code(),
                cost,
                start: Instant::now(),
            };
            return self.serve_client(client, &request, payload);
        }
        if let RequestOp::SecList(list) = &request.op {
            if list.flags & vitastor_protocol::OSD_LIST_PRIMARY != 0 {
                let client = ClientRef {
                    conn,
                    id: request.id,
                    opcode: request.opcode().code(),
                    cost,
                    start: Instant::now(),
                };
                if self.start_pg_list(client, list) {
                    return;
                }
            }
        }
        match secondary::start(&request, &mut payload, &geo) {
            Some(step) => self.apply(conn, cost, step),
            None => {
                let msg = self.serve_other(conn, &request, &payload);
                self.reply(conn, cost, msg);
            }
        }
    }

    /// Requests that are not secondary ops.
    fn serve_other(&mut self, conn: ConnId, request: &Request, payload: &[u8]) -> ReplyMsg {
        let (id, opcode) = (request.id, request.opcode().code());
        match request.op {
            RequestOp::ShowConfig(_) => self.handshake(conn, id, payload),
            RequestOp::Ping => ReplyMsg::new(
                &Reply {
                    id,
                    retval: 0,
                    op: ReplyOp::Ping,
                },
                Vec::new(),
            ),
            // PG locks between OSDs are not used: pg/state in etcd decides the primary.
            RequestOp::SecLock(_) => ReplyMsg::error(id, opcode, Errno::EPIPE),
            // Admin ops whose layouts the spec leaves open; this OSD does not serve them.
            _ => ReplyMsg::error(id, opcode, Errno::EINVAL),
        }
    }

    fn handshake(&mut self, conn: ConnId, id: u64, payload: &[u8]) -> ReplyMsg {
        let opcode = vitastor_protocol::Opcode::ShowConfig.code();
        let json = match ShowConfigRequestJson::parse(payload) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!("connection {conn}: {e}");
                return ReplyMsg::error(id, opcode, Errno::EINVAL);
            }
        };
        if json.features.check_sequencing {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.start_sequencing(id);
            }
        }
        let payload = self.show_config.clone();
        ReplyMsg::new(
            &Reply {
                id,
                retval: payload.len() as i64,
                op: ReplyOp::ShowConfig,
            },
            payload,
        )
    }

    fn apply(&mut self, conn: ConnId, cost: usize, step: Step) {
        match step {
            Step::Reply(msg) => self.reply(conn, cost, msg),
            Step::Submit(op, bs_op) => {
                let start = Instant::now();
                self.submit_local(
                    Owner::Secondary(Pending {
                        conn,
                        cost,
                        op,
                        start,
                    }),
                    bs_op,
                );
            }
        }
    }

    pub(crate) fn drain_completions(&mut self) {
        // After a device failure no result goes out: `run` stops at its next turn.
        if self.device_failed().is_some() {
            return;
        }
        loop {
            self.bs.take_completions(&mut self.completions);
            if self.completions.is_empty() {
                return;
            }
            let mut done = std::mem::take(&mut self.completions);
            for c in done.drain(..) {
                // Every op submitted goes through `submit_local`, so it has an owner.
                let Some(owner) = self.bs_owner.remove(&c.id) else {
                    continue;
                };
                self.deliver(owner, SubRes::Bs(c.result));
            }
            self.completions = done;
            self.process_peer_events();
            // Ops submitted by multi-step requests need an advance to start; their I/O goes
            // with the loop's next wait.
            self.bs.advance();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use crate::testing::{Bench, Setup};

    /// A turn that queued a client write's disk I/O and a socket poll enters the kernel once:
    /// the wait submits both (each enter that submits disk I/O is a device kick).
    #[test]
    fn a_turn_with_disk_io_and_polls_enters_the_ring_once() {
        let mut b = Bench::new(Setup::default());
        let (sock, _other) = UnixStream::pair().expect("socket pair");
        let id = b.write(0, &[7u8; 4096]);
        let s = &mut b.server;
        let before = s.bs.engine_mut().enters();
        s.bs.engine_mut()
            .poll_add(sock.as_raw_fd(), libc::POLLIN as u32, 0x5eed);
        s.end_turn();
        assert!(
            s.bs.engine_in_flight() > 0,
            "the turn queued the write's I/O"
        );
        assert_eq!(
            s.bs.engine_mut().enters(),
            before,
            "the turn itself never enters"
        );
        s.bs.engine_mut()
            .wait_for(Some(Duration::from_millis(2)))
            .expect("wait");
        assert_eq!(s.bs.engine_mut().enters(), before + 1);
        s.bs.engine_mut().poll_remove(0x5eed);
        let (reply, _) = b.reply(id, |_| 0);
        assert_eq!(reply.retval, 4096);
    }

    /// A multishot poll reports each readiness of its socket without being armed again (its
    /// events carry `more`), and ends with an event without `more` once removed.
    #[test]
    fn a_multishot_poll_reports_every_readiness_until_removed() {
        use std::io::{Read, Write};
        use vitastor_blockstore::io::IoEngine;
        use vitastor_blockstore::uring::{OpenFlags, UringEngine};
        let mut engine = UringEngine::open(&[], OpenFlags::default()).expect("ring");
        let (mut a, mut b) = UnixStream::pair().expect("socket pair");
        b.set_nonblocking(true).expect("non-blocking");
        engine.poll_add_multi(b.as_raw_fd(), libc::POLLIN as u32, 7);
        let mut polls = Vec::new();
        let wait_for_events = |engine: &mut UringEngine, polls: &mut Vec<_>, n: usize| {
            for _ in 0..1000 {
                if polls.len() >= n {
                    return;
                }
                engine
                    .wait_for(Some(Duration::from_millis(100)))
                    .expect("wait");
                engine.reap(&mut Vec::new());
                engine.take_polls(polls);
            }
            panic!("{} of {n} poll events", polls.len());
        };
        for round in 1..=3u8 {
            a.write_all(&[round]).expect("write");
            wait_for_events(&mut engine, &mut polls, round as usize);
            let mut byte = [0u8; 1];
            b.read_exact(&mut byte).expect("read");
            assert_eq!(byte[0], round);
        }
        for ev in &polls {
            assert_eq!(ev.token, 7);
            assert!(ev.more, "the poll stays armed: {ev:?}");
            assert!(
                ev.result > 0 && ev.result as i16 & libc::POLLIN != 0,
                "{ev:?}"
            );
        }
        engine.poll_remove(7);
        wait_for_events(&mut engine, &mut polls, 4);
        assert_eq!(polls.len(), 4);
        assert_eq!(polls[3].token, 7);
        assert!(!polls[3].more, "the removed poll ended: {:?}", polls[3]);
    }
}
