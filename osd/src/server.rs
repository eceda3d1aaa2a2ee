//! The OSD's network side, first piece (issue #3): a single-threaded, poll-driven TCP server
//! that answers the handshake, PING and the secondary (OSD ↔ OSD) ops straight from the local
//! blockstore. There is no etcd and there are no PGs yet, so client ops and SEC_LOCK are
//! answered `-EPIPE` ("no PG is active on this OSD"), which makes clients refresh and retry.
//!
//! One loop round: `ppoll` over the listener and the connections; accept; read and decode
//! requests, submitting blockstore ops or answering at once; let the blockstore reap its
//! io_uring completions (`Blockstore::poll(false)`); turn finished blockstore ops into
//! replies (or the next op of a multi-op request); write replies.
//!
//! Temporary arrangement until the single shared io_uring loop of issue #3 lands: sockets are
//! waited on with `ppoll` and the blockstore has its own ring, so neither wait can wake on the
//! other's events. While the blockstore has work in progress the loop waits at most
//! [`BS_BUSY_POLL_TIMEOUT`] and then reaps the ring; when it is idle the loop blocks in
//! `ppoll` until a socket or a signal wakes it. The cost is up to that timeout of extra
//! latency per disk I/O step, which the shared ring removes.
//!
//! Shutdown (SIGTERM/SIGINT): the listener is closed and no more requests are read; ops in
//! progress finish and their replies are sent (for at most [`SHUTDOWN_GRACE`]); the
//! blockstore finishes its in-flight I/O; then [`Server::run`] returns.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use vitastor_blockstore::uring::UringEngine;
use vitastor_blockstore::{
    Blockstore, BsError, Completion, ImmediateCommit as BsImmediateCommit, OpId,
};
use vitastor_protocol::errno::{EINVAL, EPIPE};
use vitastor_protocol::handshake::{
    ImmediateCommit, ReplyFeatures, ShowConfigReplyJson, ShowConfigRequestJson,
};
use vitastor_protocol::{Frame, Reply, ReplyOp, Request, RequestOp, PROTOCOL_VERSION};

use crate::connection::{ConnError, Connection, Incoming};
use crate::secondary::{self, ReplyMsg, SecOp, Step, StoreGeometry};
use crate::shutdown::Shutdown;

/// How long `ppoll` may sleep while the blockstore has I/O in progress (see the module docs).
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
    #[error("ppoll: {0}")]
    Poll(io::Error),
    /// The blockstore failed as a whole (not one op).
    #[error("blockstore: {0}")]
    Blockstore(#[from] BsError),
}

type ConnId = u64;

/// A secondary request whose blockstore op is in progress.
struct Pending {
    conn: ConnId,
    cost: usize,
    op: SecOp,
}

/// What one entry of the poll set stands for.
#[derive(Clone, Copy)]
enum Slot {
    Listener,
    Conn(ConnId),
}

/// The server: the listener, the connection table and the blockstore. See the module docs.
pub struct Server {
    listener: Option<TcpListener>,
    bs: Blockstore<UringEngine>,
    geo: StoreGeometry,
    show_config: Vec<u8>,
    conns: HashMap<ConnId, Connection>,
    next_conn: ConnId,
    pending: HashMap<OpId, Pending>,
    completions: Vec<Completion>,
    incoming: Vec<Incoming>,
}

fn wire_commit(mode: BsImmediateCommit) -> ImmediateCommit {
    match mode {
        BsImmediateCommit::All => ImmediateCommit::All,
        BsImmediateCommit::Small => ImmediateCommit::Small,
        BsImmediateCommit::None => ImmediateCommit::None,
    }
}

impl Server {
    /// Binds `addr` and serves `bs` as OSD `osd_num`.
    pub fn bind(
        addr: SocketAddr,
        osd_num: u64,
        bs: Blockstore<UringEngine>,
    ) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(addr).map_err(ServerError::Listen)?;
        listener
            .set_nonblocking(true)
            .map_err(ServerError::Listen)?;
        let layout = bs.layout();
        let show_config = ShowConfigReplyJson {
            osd_num: Some(osd_num),
            protocol_version: PROTOCOL_VERSION,
            block_size: layout.block_size,
            bitmap_granularity: layout.bitmap_granularity,
            primary_enabled: Some(false),
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
            pending: HashMap::new(),
            completions: Vec::new(),
            incoming: Vec::new(),
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
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        let mut draining_since: Option<Instant> = None;
        loop {
            if shutdown.requested() && draining_since.is_none() {
                eprintln!(
                    "vitastor-osd: shutting down: finishing {} ops in progress",
                    self.pending.len()
                );
                self.listener = None;
                draining_since = Some(Instant::now());
            }
            if let Some(since) = draining_since {
                let flushed = self.conns.values().all(|c| !c.wants_write());
                if (self.pending.is_empty() && flushed) || since.elapsed() > SHUTDOWN_GRACE {
                    break;
                }
            }
            let draining = draining_since.is_some();
            self.build_poll_set(draining, &mut fds, &mut slots);
            let timeout = self.poll_timeout(draining);
            self.wait(&mut fds, timeout, shutdown)?;
            for (pfd, slot) in fds.iter().zip(&slots) {
                match *slot {
                    Slot::Listener if pfd.revents != 0 => self.accept(),
                    Slot::Listener => {}
                    Slot::Conn(id) => {
                        let readable =
                            pfd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0;
                        if pfd.revents & libc::POLLOUT != 0 {
                            self.flush(id);
                        }
                        if !draining && readable {
                            self.receive(id);
                        }
                    }
                }
            }
            if !draining {
                // Input staged in user space while the connection was over its limit is not
                // reported by poll; pick it up once the connection is below the limit again.
                let staged: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.has_staged_input() && !c.over_limit())
                    .map(|(id, _)| *id)
                    .collect();
                for id in staged {
                    self.receive(id);
                }
            }
            self.bs.poll(false)?;
            self.drain_completions();
            // Write replies right away rather than a poll round later.
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
        // Let the blockstore finish the I/O it started (flushes, journal trims): its buffers
        // must outlive the I/O, and a clean stop leaves less to replay.
        self.bs.wait_idle()?;
        Ok(())
    }

    fn build_poll_set(&self, draining: bool, fds: &mut Vec<libc::pollfd>, slots: &mut Vec<Slot>) {
        fds.clear();
        slots.clear();
        if let Some(l) = &self.listener {
            fds.push(libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            slots.push(Slot::Listener);
        }
        for (id, conn) in &self.conns {
            let mut events = 0;
            if !draining && !conn.over_limit() {
                events |= libc::POLLIN;
            }
            if conn.wants_write() {
                events |= libc::POLLOUT;
            }
            // Polled even with no events: POLLHUP/POLLERR are always reported.
            fds.push(libc::pollfd {
                fd: conn.fd(),
                events,
                revents: 0,
            });
            slots.push(Slot::Conn(*id));
        }
    }

    fn poll_timeout(&self, draining: bool) -> Option<Duration> {
        let staged_ready = !draining
            && self
                .conns
                .values()
                .any(|c| c.has_staged_input() && !c.over_limit());
        if staged_ready {
            Some(Duration::ZERO)
        } else if !self.bs.is_idle() {
            // Queued ops, flushes or device I/O in flight (is_idle covers all of them).
            Some(BS_BUSY_POLL_TIMEOUT)
        } else if draining {
            // Bounded so the grace period is checked even if no socket ever becomes writable.
            Some(Duration::from_millis(100))
        } else {
            None
        }
    }

    fn wait(
        &mut self,
        fds: &mut [libc::pollfd],
        timeout: Option<Duration>,
        shutdown: &Shutdown,
    ) -> Result<(), ServerError> {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as _,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd for the whole call;
        // the timespec and signal mask outlive it.
        let r = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                ts_ptr,
                shutdown.wait_mask(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                // A signal: no revents are valid; the loop checks the shutdown flag next.
                fds.iter_mut().for_each(|f| f.revents = 0);
                return Ok(());
            }
            return Err(ServerError::Poll(e));
        }
        Ok(())
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        for _ in 0..ACCEPTS_PER_ROUND {
            match listener.accept() {
                Ok((stream, _)) => match Connection::new(stream) {
                    Ok(conn) => {
                        self.conns.insert(self.next_conn, conn);
                        self.next_conn += 1;
                    }
                    Err(e) => eprintln!("vitastor-osd: cannot set up a connection: {e}"),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Per-connection failures (ECONNABORTED, EMFILE…) must not stop the server;
                // the next round tries again.
                Err(e) => {
                    eprintln!("vitastor-osd: accept: {e}");
                    return;
                }
            }
        }
    }

    fn close(&mut self, id: ConnId, why: &ConnError) {
        if self.conns.remove(&id).is_some() && !matches!(why, ConnError::Eof) {
            eprintln!("vitastor-osd: closing connection {id}: {why}");
        }
        // Its ops still in the blockstore finish; their replies are dropped on arrival.
    }

    fn flush(&mut self, id: ConnId) {
        if let Some(Err(e)) = self.conns.get_mut(&id).map(|c| c.flush()) {
            self.close(id, &e);
        }
    }

    fn receive(&mut self, id: ConnId) {
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

    fn reply(&mut self, conn: ConnId, cost: usize, msg: ReplyMsg) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue_reply(cost, msg);
        }
    }

    fn serve(&mut self, conn: ConnId, inc: Incoming) {
        let Incoming {
            frame,
            payload,
            cost,
        } = inc;
        let request = match frame {
            Frame::Request(request) => request,
            Frame::Rejected { id, opcode, error } => {
                return self.reply(conn, cost, ReplyMsg::error(id, opcode, error.errno()));
            }
            // Connection::receive never yields replies.
            Frame::Reply { .. } => return,
        };
        let geo = self.geo;
        match secondary::start(&request, &payload, &geo) {
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
            // No PG is active on this OSD yet: the client refreshes its state and retries.
            RequestOp::Read(_)
            | RequestOp::Write(_)
            | RequestOp::Sync
            | RequestOp::Delete(_)
            | RequestOp::SecLock(_) => ReplyMsg::error(id, opcode, EPIPE),
            // Admin ops whose layouts the spec leaves open; this OSD does not serve them.
            _ => ReplyMsg::error(id, opcode, EINVAL),
        }
    }

    fn handshake(&mut self, conn: ConnId, id: u64, payload: &[u8]) -> ReplyMsg {
        let opcode = vitastor_protocol::Opcode::ShowConfig.code();
        let json = match ShowConfigRequestJson::parse(payload) {
            Ok(json) => json,
            Err(e) => {
                eprintln!("vitastor-osd: connection {conn}: {e}");
                return ReplyMsg::error(id, opcode, EINVAL);
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
                let op_id = self.bs.submit(bs_op);
                self.pending.insert(op_id, Pending { conn, cost, op });
            }
        }
    }

    fn drain_completions(&mut self) {
        loop {
            self.bs.take_completions(&mut self.completions);
            if self.completions.is_empty() {
                return;
            }
            let geo = self.geo;
            let mut done = std::mem::take(&mut self.completions);
            for c in done.drain(..) {
                // Every op this server submits is in `pending`; the blockstore completes
                // nothing else.
                let Some(p) = self.pending.remove(&c.id) else {
                    continue;
                };
                let step = secondary::complete(p.op, c.result, &geo);
                self.apply(p.conn, p.cost, step);
            }
            self.completions = done;
            // Ops submitted by multi-step requests need a run to start.
            self.bs.run();
        }
    }
}
