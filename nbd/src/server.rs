//! The serving loop: NBD sockets and the cluster client on one thread, driven by poll(2).
//!
//! # What this module owns
//! - The loop: one `poll` over the signalfd, the client's poll fd, the listening socket and
//!   every connection; then socket I/O, [`Client::handle_events`] and the completions, until
//!   nothing is left to do without waiting.
//! - Connections: non-blocking reads (write payloads straight into their buffers; a short
//!   read means the socket is drained, so no read is spent on `EAGAIN`), replies queued
//!   (header inline, read data in the buffer the cluster filled) and written with one
//!   `writev` per loop turn in completion order (none while the socket is known full),
//!   back-pressure (a connection is not read while it has [`MAX_INFLIGHT`] requests or
//!   [`MAX_INFLIGHT_BYTES`] in flight). Data buffers come from, and go back to, the
//!   connection's [`vitastor_nbd::bufpool::BufPool`]; the send buffer is [`SEND_BUFFER`],
//!   so a large read reply goes out in one call instead of one per default-sized socket
//!   buffer.
//! - Requests in flight: each NBD request is one entry counting its cluster ops; FUA adds a
//!   SYNC after the write; FLUSH is a SYNC (the client syncs every write completed before
//!   it, on any connection, so `NBD_FLAG_CAN_MULTI_CONN` holds); TRIM/WRITE_ZEROES delete
//!   whole objects, [`DELETE_CHUNK`] at a time, and write zeroes over partial ones.
//! - Shutdown: on SIGTERM/SIGINT stop accepting and reading, finish what is in flight, write
//!   the replies, sync, exit.
//!
//! # What it must never do
//! - Block: every socket is non-blocking and the only wait is the `poll` call.
//! - Panic on client input: malformed requests get error replies or a closed connection
//!   (see [`crate::session`] and [`crate::plan`]).
//! - Fail a request because the cluster is restarting: the client retries those by itself.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vitastor::{Client, ClientError, ImageWatch, OpDone};

use vitastor_nbd::bufpool::IDLE_POOLED_BYTES;

use crate::plan::{plan, Geometry, Plan, Range};
use crate::proto::*;
use crate::session::{Event, Session};
use crate::sys;

/// Requests read from one connection and not yet answered before the server stops reading
/// it: above the kernel's and fio's usual 128, below anything that could exhaust memory.
pub const MAX_INFLIGHT: usize = 256;
/// Payload bytes (write data, read lengths) in flight per connection before the server stops
/// reading it; bounds memory at a few of these per client.
pub const MAX_INFLIGHT_BYTES: usize = 256 << 20;
/// Reply bytes queued on a connection before the server stops reading it (the client is not
/// reading its replies fast enough).
pub const MAX_QUEUED_OUT: usize = 64 << 20;
/// Whole-object range deleted per client op for TRIM/WRITE_ZEROES: the client keeps one part
/// per object, so a huge discard goes in steps of this size instead of all at once.
pub const DELETE_CHUNK: u64 = 1 << 30;
/// Receive buffer per connection: many headers per read, and small write payloads.
const INBUF: usize = 256 << 10;
/// Most slices (reply headers and data) gathered into one writev.
const WRITEV_MAX: usize = 256;
/// Socket send buffer asked for: a 4 MiB read reply fits whole (the default, ~208 KiB, made
/// such a reply take twenty writes and as many wake-ups of both sides).
const SEND_BUFFER: usize = 4 << 20;
/// Connections served at once; more are refused (closed at accept).
const MAX_CONNS: usize = 128;
/// How long shutdown waits for in-flight requests and unread replies before dropping the
/// remaining connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The image being served.
#[derive(Debug, Clone)]
pub struct Export {
    /// Export (image) name.
    pub name: String,
    /// Inode number with pool bits.
    pub inode: u64,
    /// Size, alignment, object size, read-only.
    pub geometry: Geometry,
    /// The image's watch when exported by name: after a snapshot the name is a new inode
    /// over the old one (now read-only), and I/O follows it.
    pub watch: Option<ImageWatch>,
}

impl Export {
    /// The inode I/O goes to now.
    pub fn current_inode(&self) -> u64 {
        self.watch
            .as_ref()
            .map_or(self.inode, |w| w.with(|i| i.inode))
    }

    /// Transmission flags for this export.
    pub fn flags(&self) -> u16 {
        let mut f = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_CAN_MULTI_CONN;
        if self.geometry.readonly {
            f |= TFLAG_READ_ONLY;
        } else {
            f |= TFLAG_SEND_FUA | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES;
        }
        f
    }

    /// What a connection is told.
    pub fn desc(&self) -> ExportDesc {
        ExportDesc {
            name: self.name.clone(),
            size: self.geometry.size,
            flags: self.flags(),
            min_block: self.geometry.granularity as u32,
            preferred_block: self.geometry.object as u32,
        }
    }
}

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// Unix socket; the path is removed on exit.
    Unix(UnixListener, PathBuf),
    /// TCP.
    Tcp(TcpListener),
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Unix(l, _) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                // Replies are small and latency matters; Nagle would delay them.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A connected socket.
#[derive(Debug)]
pub enum Stream {
    /// Unix socket (also the kernel's socketpair).
    Unix(UnixStream),
    /// TCP.
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }

    /// Non-blocking, with the larger send buffer (a smaller one only costs speed).
    fn prepare(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(true)?,
            Stream::Tcp(s) => s.set_nonblocking(true)?,
        }
        if let Err(e) = sys::set_send_buffer(self.fd(), SEND_BUFFER) {
            debug!("SO_SNDBUF: {e}");
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tcp(s) => s.write_vectored(bufs),
        }
    }
}

/// Bytes waiting for the socket: a reply header (inline) and its data, or a handshake
/// message (data only).
struct Out {
    head: [u8; REPLY_LEN],
    head_len: usize,
    data: Vec<u8>,
}

impl Out {
    fn len(&self) -> usize {
        self.head_len + self.data.len()
    }
}

struct Conn {
    stream: Stream,
    session: Session,
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    out: VecDeque<Out>,
    /// Bytes of `out[0]` already written.
    out_off: usize,
    out_bytes: usize,
    /// The last write did not take everything: wait for POLLOUT before writing again.
    out_blocked: bool,
    inflight: usize,
    inflight_bytes: usize,
    /// Still parsing requests (false after DISC, EOF, a fatal framing error or shutdown).
    reading: bool,
    /// Drop at once (socket error).
    dead: bool,
}

impl Conn {
    fn new(stream: Stream, session: Session) -> Conn {
        Conn {
            stream,
            session,
            inbuf: vec![0; INBUF],
            in_start: 0,
            in_end: 0,
            out: VecDeque::new(),
            out_off: 0,
            out_bytes: 0,
            out_blocked: false,
            inflight: 0,
            inflight_bytes: 0,
            reading: true,
            dead: false,
        }
    }

    fn can_read(&self) -> bool {
        self.reading
            && !self.dead
            && self.inflight < MAX_INFLIGHT
            && self.inflight_bytes < MAX_INFLIGHT_BYTES
            && self.out_bytes < MAX_QUEUED_OUT
    }

    /// Finished: nothing more to read, answer or write.
    fn finished(&self) -> bool {
        self.dead || (!self.reading && self.inflight == 0 && self.out.is_empty())
    }

    fn queue(&mut self, bytes: Vec<u8>) {
        self.push_out(Out {
            head: [0; REPLY_LEN],
            head_len: 0,
            data: bytes,
        });
    }

    fn queue_reply(&mut self, cookie: u64, error: u32, data: Vec<u8>) {
        self.push_out(Out {
            head: simple_reply(cookie, error),
            head_len: REPLY_LEN,
            data,
        });
    }

    fn push_out(&mut self, out: Out) {
        if out.len() > 0 {
            self.out_bytes += out.len();
            self.out.push_back(out);
        }
    }

    /// Writes queued replies until the socket is full.
    fn flush(&mut self) {
        while !self.out.is_empty() && !self.dead && !self.out_blocked {
            let mut slices = [IoSlice::new(&[]); WRITEV_MAX];
            let mut count = 0;
            let mut offered = 0;
            let mut skip = self.out_off;
            'gather: for o in &self.out {
                for part in [&o.head[..o.head_len], &o.data[..]] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    if count == WRITEV_MAX {
                        break 'gather;
                    }
                    slices[count] = IoSlice::new(&part[skip..]);
                    offered += part.len() - skip;
                    skip = 0;
                    count += 1;
                }
            }
            match self.stream.write_vectored(&slices[..count]) {
                Ok(mut n) => {
                    // A short write on a non-blocking stream: the send buffer is full.
                    self.out_blocked = n < offered;
                    self.out_bytes -= n;
                    while n > 0 {
                        let left = self.out[0].len() - self.out_off;
                        if n >= left {
                            n -= left;
                            let done = self.out.pop_front().expect("written bytes were queued");
                            self.session.pool().give(done.data);
                            self.out_off = 0;
                        } else {
                            self.out_off += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.out_blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("connection write failed: {e}");
                    self.dead = true;
                }
            }
        }
    }

    /// Reads and frames as much as allowed; returns the events with their byte charge. A
    /// read that returns less than it asked for has drained the socket: framing goes on,
    /// reading waits for the next poll.
    fn read_events(&mut self, events: &mut Vec<Event>) {
        let mut drained = false;
        while self.can_read() {
            let buffered = self.in_end - self.in_start;
            if buffered == 0 {
                if drained {
                    return;
                }
                if let Some(space) = self.session.payload_space() {
                    let want = space.len();
                    match self.stream.read(space) {
                        Ok(0) => self.eof(),
                        Ok(n) => {
                            drained = n < want;
                            if let Some(ev) = self.session.payload_filled(n) {
                                self.take(ev, events);
                            }
                        }
                        Err(e) => {
                            if self.read_error(e) {
                                return;
                            }
                        }
                    }
                    continue;
                }
            }
            // Frame what is buffered.
            loop {
                if !self.can_read() {
                    return;
                }
                let (n, ev) = self.session.step(&self.inbuf[self.in_start..self.in_end]);
                self.in_start += n;
                match ev {
                    Some(ev) => self.take(ev, events),
                    None if n == 0 => break,
                    None => {}
                }
            }
            if !self.reading {
                return;
            }
            if self.in_start == self.in_end {
                self.in_start = 0;
                self.in_end = 0;
            } else if self.in_start > 0 {
                self.inbuf.copy_within(self.in_start..self.in_end, 0);
                self.in_end -= self.in_start;
                self.in_start = 0;
            }
            if self.in_end == self.inbuf.len() {
                // A partial message can never fill the buffer: options are capped below
                // it and payloads are read into their own buffers.
                self.reading = false;
                self.dead = true;
                return;
            }
            if drained {
                return;
            }
            let want = self.inbuf.len() - self.in_end;
            match self.stream.read(&mut self.inbuf[self.in_end..]) {
                Ok(0) => self.eof(),
                Ok(n) => {
                    self.in_end += n;
                    drained = n < want;
                }
                Err(e) => {
                    if self.read_error(e) {
                        return;
                    }
                }
            }
        }
    }

    /// Accounts for an event and hands it on.
    fn take(&mut self, ev: Event, events: &mut Vec<Event>) {
        match &ev {
            Event::Request { req, payload } => {
                self.inflight += 1;
                self.inflight_bytes += charge(req, payload);
            }
            Event::Rejected { .. } => self.inflight += 1,
            Event::Close(why) => {
                debug!("closing connection: {why}");
                self.reading = false;
            }
            Event::SendAndClose(_) => self.reading = false,
            Event::Send(_) => {}
        }
        events.push(ev);
    }

    fn eof(&mut self) {
        self.reading = false;
        self.session.close();
    }

    /// True when reading must stop for now.
    fn read_error(&mut self, e: io::Error) -> bool {
        match e.kind() {
            io::ErrorKind::WouldBlock => true,
            io::ErrorKind::Interrupted => false,
            _ => {
                debug!("connection read failed: {e}");
                self.dead = true;
                self.reading = false;
                true
            }
        }
    }
}

/// Bytes a request holds while in flight (its payload or its read buffer).
fn charge(req: &Request, payload: &[u8]) -> usize {
    if req.kind == CMD_READ && req.len <= MAX_PAYLOAD {
        req.len as usize
    } else {
        payload.len()
    }
}

/// One NBD request being served.
struct Pending {
    conn: u64,
    cookie: u64,
    charge: usize,
    /// Cluster ops still running.
    left: u32,
    /// First NBD error seen.
    error: u32,
    fua: bool,
    synced: bool,
    /// For reads: where the requested bytes are in the read buffer.
    read: Option<(u64, u64)>,
    data: Vec<u8>,
    /// Whole-object range still to delete after the current delete op.
    deletes: Option<Range>,
}

/// A finished client op: the request entry and the result.
type Done = (usize, OpDone);

/// How the loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve a listening socket until SIGTERM/SIGINT.
    Listen,
    /// Serve the kernel's socket until it closes (device disconnected) or a signal.
    Kernel,
}

/// The server: client, export, sockets and requests in flight.
pub struct Server {
    client: Client,
    export: Export,
    listener: Option<Listener>,
    signals: OwnedFd,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    pending: Vec<Option<Pending>>,
    free: Vec<usize>,
    done: Rc<RefCell<Vec<Done>>>,
    mode: Mode,
    shutdown_at: Option<Instant>,
    /// The loop's poll set and the connection of each entry after the fixed ones, kept
    /// between turns so a turn allocates nothing.
    pollfds: Vec<libc::pollfd>,
    poll_ids: Vec<u64>,
    events: Vec<Event>,
}

impl Server {
    /// A server for `export` over `client`.
    pub fn new(client: Client, export: Export, signals: OwnedFd, mode: Mode) -> Server {
        Server {
            client,
            export,
            listener: None,
            signals,
            conns: HashMap::new(),
            next_conn: 1,
            pending: Vec::new(),
            free: Vec::new(),
            done: Rc::new(RefCell::new(Vec::new())),
            mode,
            shutdown_at: None,
            pollfds: Vec::new(),
            poll_ids: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Serves new connections from `listener`.
    pub fn set_listener(&mut self, listener: Listener) {
        self.listener = Some(listener);
    }

    /// Adds a connection already in transmission (the kernel's socket).
    pub fn add_transmission_conn(&mut self, stream: Stream) -> io::Result<()> {
        stream.prepare()?;
        let session = Session::transmission(self.export.desc());
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(id, Conn::new(stream, session));
        Ok(())
    }

    /// Runs until the mode's end condition, then syncs. Returns whether a signal ended it.
    pub fn run(&mut self) -> io::Result<bool> {
        let mut signalled = false;
        // Whether the client's fd was readable: its events are handled only then (one
        // `epoll_wait` per wake-up that has any, none for a wake-up by a socket alone).
        let mut client_ready = true;
        loop {
            self.progress(client_ready);
            let done_serving = match self.mode {
                Mode::Listen => self.shutdown_at.is_some(),
                Mode::Kernel => true,
            };
            if done_serving && self.conns.is_empty() && self.free.len() == self.pending.len() {
                break;
            }
            if self
                .shutdown_at
                .is_some_and(|t| t.elapsed() > SHUTDOWN_GRACE)
            {
                warn!("shutdown: dropping connections still busy after {SHUTDOWN_GRACE:?}");
                self.conns.clear();
                if self.free.len() == self.pending.len() {
                    break;
                }
            }
            let mut fds = std::mem::take(&mut self.pollfds);
            let mut ids = std::mem::take(&mut self.poll_ids);
            fds.clear();
            ids.clear();
            fds.push(pollfd(self.signals.as_raw_fd(), libc::POLLIN));
            fds.push(pollfd(self.client.poll_fd(), libc::POLLIN));
            if let Some(l) = &self.listener {
                fds.push(pollfd(l.fd(), libc::POLLIN));
            }
            for (&id, c) in &self.conns {
                let mut ev = 0;
                if c.can_read() {
                    ev |= libc::POLLIN;
                }
                if !c.out.is_empty() {
                    ev |= libc::POLLOUT;
                }
                ids.push(id);
                fds.push(pollfd(c.stream.fd(), ev));
            }
            // Wake up now and then during shutdown to enforce the grace period.
            let timeout = if self.shutdown_at.is_some() { 1000 } else { -1 };
            sys::poll(&mut fds, timeout)?;
            client_ready = fds[1].revents != 0;
            if fds[0].revents != 0 {
                while let Some(sig) = sys::read_signal(&self.signals) {
                    info!("signal {sig}: finishing requests in flight, then exiting");
                    signalled = true;
                    self.begin_shutdown();
                }
            }
            let base = if self.listener.is_some() {
                if fds[2].revents != 0 {
                    self.accept();
                }
                3
            } else {
                2
            };
            for (i, &id) in ids.iter().enumerate() {
                let rev = fds[base + i].revents;
                if rev == 0 {
                    continue;
                }
                if let Some(c) = self.conns.get_mut(&id) {
                    if rev & (libc::POLLERR | libc::POLLNVAL) != 0 {
                        c.dead = true;
                    }
                    if rev & libc::POLLOUT != 0 {
                        c.out_blocked = false;
                        c.flush();
                    }
                }
                if rev & (libc::POLLIN | libc::POLLHUP) != 0 {
                    self.read_conn(id);
                }
            }
            self.pollfds = fds;
            self.poll_ids = ids;
        }
        self.final_sync();
        Ok(signalled)
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_at.is_none() {
            self.shutdown_at = Some(Instant::now());
        }
        self.listener = None;
        for c in self.conns.values_mut() {
            c.reading = false;
            c.session.close();
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(l) = &self.listener else { return };
            match l.accept() {
                Ok(stream) => {
                    if self.conns.len() >= MAX_CONNS {
                        warn!("refusing a connection: {MAX_CONNS} already open");
                        continue;
                    }
                    if let Err(e) = stream.prepare() {
                        warn!("new connection: {e}");
                        continue;
                    }
                    let (session, greeting) = Session::handshake(self.export.desc());
                    let mut conn = Conn::new(stream, session);
                    conn.queue(greeting);
                    conn.flush();
                    let id = self.next_conn;
                    self.next_conn += 1;
                    debug!("connection {id} accepted");
                    self.conns.insert(id, conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn read_conn(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let mut events = std::mem::take(&mut self.events);
        c.read_events(&mut events);
        for ev in events.drain(..) {
            self.event(id, ev);
        }
        self.events = events;
    }

    /// The client's events (when its fd was readable) and the completions until nothing is
    /// left without waiting; then replies are written and finished connections closed.
    /// Submitting sends at once, so after the first round only completions that ops
    /// finished without the network (refused at submission) remain to be run.
    fn progress(&mut self, client_ready: bool) {
        if client_ready {
            self.client.handle_events();
        } else {
            self.client.run_completions();
        }
        loop {
            let batch = std::mem::take(&mut *self.done.borrow_mut());
            if batch.is_empty() {
                break;
            }
            for (idx, d) in batch {
                self.op_done(idx, d);
            }
            // Connections held back by the in-flight limits may go on with what they have
            // buffered (new socket data is picked up by the next poll).
            let ids: Vec<u64> = self.conns.keys().copied().collect();
            for id in ids {
                if self
                    .conns
                    .get(&id)
                    .is_some_and(|c| c.can_read() && c.in_end > c.in_start)
                {
                    self.read_conn(id);
                }
            }
            self.client.run_completions();
        }
        self.conns.retain(|id, c| {
            c.flush();
            if c.inflight == 0 && c.out.is_empty() {
                c.session.pool().trim(IDLE_POOLED_BYTES);
            }
            let keep = !c.finished();
            if !keep {
                debug!("connection {id} closed");
            }
            keep
        });
    }

    fn event(&mut self, id: u64, ev: Event) {
        match ev {
            Event::Send(bytes) | Event::SendAndClose(bytes) => self.queue_on(id, bytes),
            Event::Close(_) => {}
            Event::Rejected { cookie, error } => self.reply(id, cookie, error, 0, Vec::new()),
            Event::Request { req, payload } => self.request(id, req, payload),
        }
    }

    fn queue_on(&mut self, id: u64, bytes: Vec<u8>) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.queue(bytes);
        }
    }

    /// Queues a reply and releases the request's share of the connection's budget.
    fn reply(&mut self, id: u64, cookie: u64, error: u32, charge: usize, data: Vec<u8>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.inflight -= 1;
        c.inflight_bytes -= charge;
        if error == 0 {
            c.queue_reply(cookie, error, data);
        } else {
            c.session.pool().give(data);
            c.queue_reply(cookie, error, Vec::new());
        }
    }

    /// Gives a data buffer back to its connection's pool (dropped if the connection is gone).
    fn recycle(&mut self, id: u64, buf: Vec<u8>) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.session.pool().give(buf);
        }
    }

    fn request(&mut self, id: u64, req: Request, payload: Vec<u8>) {
        let charge = charge(&req, &payload);
        let mut geometry = self.export.geometry;
        if let Some(c) = self.conns.get(&id) {
            // The size this connection was told, even if the image was resized since.
            geometry.size = c.session.export().size;
        }
        let fua = req.flags & CMD_FLAG_FUA != 0;
        let inode = self.export.current_inode();
        match plan(&req, &geometry) {
            Plan::Reply(error) => self.reply(id, req.cookie, error, charge, Vec::new()),
            Plan::Disconnect => {
                // DISC has no reply; the requests before it still get theirs.
                if let Some(c) = self.conns.get_mut(&id) {
                    c.inflight -= 1;
                    c.reading = false;
                    c.session.close();
                }
            }
            Plan::Flush => {
                let idx = self.start(id, req.cookie, charge, false);
                let cb = self.callback(idx);
                self.client.sync(cb);
            }
            Plan::Read { cover, skip, len } => {
                let idx = self.start(id, req.cookie, charge, false);
                self.slot(idx).read = Some((skip, len));
                let cb = self.callback(idx);
                let buf = match self.conns.get_mut(&id) {
                    Some(c) => c.session.pool().take(cover.len as usize),
                    None => vec![0; cover.len as usize],
                };
                self.client.read(inode, cover.offset, buf, cb);
            }
            Plan::Write(offset) => {
                let idx = self.start(id, req.cookie, charge, fua);
                let cb = self.callback(idx);
                self.client.write(inode, offset, payload, 0, cb);
            }
            Plan::Zero(zp) => {
                let idx = self.start(id, req.cookie, charge, fua);
                self.slot(idx).left = 0;
                for piece in [zp.head, zp.tail].into_iter().flatten() {
                    self.slot(idx).left += 1;
                    let cb = self.callback(idx);
                    self.client
                        .write(inode, piece.offset, vec![0; piece.len as usize], 0, cb);
                }
                if let Some(whole) = zp.whole {
                    self.slot(idx).left += 1;
                    self.next_delete(idx, whole);
                }
            }
        }
    }

    /// Deletes the first [`DELETE_CHUNK`] of `range`; the rest waits for it.
    fn next_delete(&mut self, idx: usize, range: Range) {
        let len = range.len.min(DELETE_CHUNK);
        let rest = Range {
            offset: range.offset + len,
            len: range.len - len,
        };
        self.slot(idx).deletes = (rest.len > 0).then_some(rest);
        let cb = self.callback(idx);
        self.client
            .delete(self.export.current_inode(), range.offset, len, 0, cb);
    }

    fn start(&mut self, conn: u64, cookie: u64, charge: usize, fua: bool) -> usize {
        let p = Pending {
            conn,
            cookie,
            charge,
            left: 1,
            error: 0,
            fua,
            synced: false,
            read: None,
            data: Vec::new(),
            deletes: None,
        };
        match self.free.pop() {
            Some(i) => {
                self.pending[i] = Some(p);
                i
            }
            None => {
                self.pending.push(Some(p));
                self.pending.len() - 1
            }
        }
    }

    fn slot(&mut self, idx: usize) -> &mut Pending {
        self.pending[idx].as_mut().expect("live request entry")
    }

    fn callback(&self, idx: usize) -> impl FnOnce(OpDone) + 'static {
        let done = Rc::clone(&self.done);
        move |d| done.borrow_mut().push((idx, d))
    }

    fn op_done(&mut self, idx: usize, d: OpDone) {
        let p = self.slot(idx);
        p.left -= 1;
        let spent = match d.result {
            Err(e) => {
                if p.error == 0 {
                    p.error = nbd_errno(&e);
                }
                warn!("request {:#x} failed: {e}", p.cookie);
                p.deletes = None;
                d.buf
            }
            Ok(_) if p.read.is_some() => {
                p.data = d.buf;
                Vec::new()
            }
            // A write's payload (or zeroes): the cluster has it, the buffer is free.
            Ok(_) => d.buf,
        };
        let conn = p.conn;
        self.recycle(conn, spent);
        let p = self.slot(idx);
        if let Some(rest) = p.deletes {
            p.left += 1;
            return self.next_delete(idx, rest);
        }
        if p.left > 0 {
            return;
        }
        if p.fua && !p.synced && p.error == 0 {
            p.synced = true;
            p.left = 1;
            let cb = self.callback(idx);
            return self.client.sync(cb);
        }
        let p = self.pending[idx].take().expect("live request entry");
        self.free.push(idx);
        let mut data = p.data;
        if let Some((skip, len)) = p.read {
            // An unaligned read: the requested bytes are moved to the front in place.
            let (skip, len) = (skip as usize, len as usize);
            if p.error == 0 && skip > 0 {
                data.copy_within(skip..skip + len, 0);
            }
            data.truncate(len);
        }
        self.reply(p.conn, p.cookie, p.error, p.charge, data);
    }

    /// Makes the writes acknowledged so far durable before exiting (with a commit mode
    /// other than `all` the client still holds them for replay).
    fn final_sync(&mut self) {
        let finished = Rc::new(RefCell::new(None));
        let f = Rc::clone(&finished);
        self.client.sync(move |d| *f.borrow_mut() = Some(d.result));
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while finished.borrow().is_none() && Instant::now() < deadline {
            self.client.wait_events(Some(Duration::from_millis(100)));
        }
        let result = finished.borrow_mut().take();
        match result {
            Some(Ok(_)) => info!("final sync done"),
            Some(Err(e)) => warn!("final sync failed: {e}"),
            None => warn!("final sync did not finish within {SHUTDOWN_GRACE:?}"),
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// The NBD error for a failed client op.
fn nbd_errno(e: &ClientError) -> u32 {
    match e.errno() {
        libc::EROFS | libc::EPERM => EPERM,
        libc::ENOSPC => ENOSPC,
        libc::EINVAL => EINVAL,
        libc::ECANCELED => ESHUTDOWN,
        _ => EIO,
    }
}
