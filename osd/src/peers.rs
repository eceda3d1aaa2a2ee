//! Outgoing connections to other OSDs: non-blocking connect, the SHOW_CONFIG handshake,
//! PING keepalive with a timeout, and the requests primaries send to secondaries.
//!
//! It owns sockets and their liveness, nothing else: which op a reply belongs to is the
//! caller's business (it keys its table by `(osd, request id)`), and so is what a lost peer
//! means for PGs. A peer is dropped on any socket or protocol error, on a connect or handshake
//! that takes longer than the connect timeout, when a PING goes unanswered for the ping
//! timeout, and when a request goes unanswered for the op timeout (a peer that answers PINGs
//! but whose disk hangs); the caller then gets [`PeerEvent::Down`] and fails that peer's
//! outstanding requests. A peer dropped for a timeout is not connected again for the retry
//! interval: a stuck peer accepts TCP connections in its kernel, and reconnecting at once would
//! put it back into its PGs only to stall them again. What a tick decides for a peer is
//! [`judge`], a pure function of its clocks.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use vitastor_blockstore::AlignedBuf;
use vitastor_layout::OsdNum;
use vitastor_protocol::handshake::{RequestFeatures, ShowConfigRequestJson};
use vitastor_protocol::{Frame, Reply, Request, RequestOp, ShowConfigOp};

use crate::connection::{Connection, Incoming};

/// Liveness settings.
#[derive(Debug, Clone, Copy)]
pub struct PeerTimeouts {
    /// Connect plus handshake must finish within this.
    pub connect: Duration,
    /// How often an idle peer is pinged, and how long a PING may go unanswered.
    pub ping: Duration,
    /// How long a request may go unanswered (`osd_op_timeout`).
    pub op: Duration,
    /// How long a peer dropped for a timeout is left alone (`peer_connect_interval`).
    pub retry: Duration,
}

#[derive(Debug)]
enum State {
    Connecting,
    Handshaking(u64),
    Ready,
}

struct Peer {
    /// Unique per connection for the life of the process (the loop's poll tag).
    serial: u64,
    conn: Connection,
    state: State,
    started: Instant,
    last_ping: Instant,
    ping: Option<(u64, Instant)>,
    /// Requests sent and not answered yet: id → when sent. Entries are removed, never the
    /// table, so a warm connection allocates nothing per request.
    sent: HashMap<u64, Instant>,
}

/// Where a peer's connection is, as [`judge`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting or handshaking since the instant given.
    Connecting(Instant),
    /// Ready for requests.
    Ready,
}

/// The clocks a peer's liveness is judged by.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// The connection's phase.
    pub phase: Phase,
    /// When the last PING was sent (or the connection made).
    pub last_ping: Instant,
    /// When the PING still unanswered was sent.
    pub ping_sent: Option<Instant>,
    /// When the oldest request still unanswered was sent.
    pub oldest_request: Option<Instant>,
}

/// What a tick does with a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Fine,
    /// Send a PING.
    Ping,
    /// Drop the connection, for this reason; the peer is left alone for the retry interval.
    Drop(String),
}

/// Decides what a tick at `now` does with a peer whose clocks are `c`.
pub fn judge(c: &Clocks, now: Instant, t: &PeerTimeouts) -> Verdict {
    let since = |then: Instant| now.saturating_duration_since(then);
    match c.phase {
        Phase::Connecting(started) if since(started) > t.connect => {
            Verdict::Drop(format!("connect/handshake timed out ({:?})", t.connect))
        }
        Phase::Connecting(_) => Verdict::Fine,
        Phase::Ready => {
            if let Some(sent) = c.oldest_request.filter(|&s| since(s) > t.op) {
                return Verdict::Drop(format!(
                    "a request unanswered for {:.1} s (osd_op_timeout {:?})",
                    since(sent).as_secs_f64(),
                    t.op
                ));
            }
            match c.ping_sent {
                Some(sent) if since(sent) > t.ping => {
                    Verdict::Drop(format!("no PING reply in {:?}", t.ping))
                }
                Some(_) => Verdict::Fine,
                None if since(c.last_ping) >= t.ping / 2 => Verdict::Ping,
                None => Verdict::Fine,
            }
        }
    }
}

/// What happened to peers during [`Peers::handle`] or [`Peers::tick`].
// Events live briefly in one reused Vec; boxing replies would cost an allocation per reply.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PeerEvent {
    /// The handshake finished; requests may be sent.
    Ready(OsdNum),
    /// The peer is gone; every request sent to it is lost.
    Down(OsdNum, String),
    /// A reply to a request sent with [`Peers::send`].
    Reply {
        /// The OSD that answered.
        osd: OsdNum,
        /// The reply.
        reply: Reply,
        /// Its payload.
        payload: Vec<u8>,
    },
}

/// All outgoing peer connections. See the module docs.
pub struct Peers {
    me: OsdNum,
    next_serial: u64,
    /// Connection serial → OSD, for routing poll events.
    by_serial: HashMap<u64, OsdNum>,
    timeouts: PeerTimeouts,
    peers: HashMap<OsdNum, Peer>,
    /// Peers dropped for a timeout: not connected again before the instant given.
    held: HashMap<OsdNum, Instant>,
    incoming: Vec<Incoming>,
}

fn connect_nonblocking(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

fn socket_error(stream: &TcpStream) -> io::Result<()> {
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Peers {
    /// No peers yet; `me` is announced in handshakes.
    pub fn new(me: OsdNum, timeouts: PeerTimeouts) -> Peers {
        Peers {
            me,
            next_serial: 1,
            by_serial: HashMap::new(),
            timeouts,
            peers: HashMap::new(),
            held: HashMap::new(),
            incoming: Vec::new(),
        }
    }

    /// Starts connecting to `osd` unless a connection exists or is being made, or `osd` was
    /// dropped for a timeout less than the retry interval ago (then nothing happens and
    /// [`Peers::is_known`] stays false). A failure to even start is reported as
    /// [`PeerEvent::Down`].
    pub fn connect(&mut self, osd: OsdNum, addr: SocketAddr, out: &mut Vec<PeerEvent>) {
        if self.peers.contains_key(&osd) {
            return;
        }
        if !self.may_connect(osd, Instant::now()) {
            return;
        }
        let conn = connect_nonblocking(addr).and_then(Connection::new);
        match conn {
            Ok(conn) => {
                let now = Instant::now();
                let serial = self.next_serial;
                self.next_serial += 1;
                self.by_serial.insert(serial, osd);
                self.peers.insert(
                    osd,
                    Peer {
                        serial,
                        conn,
                        state: State::Connecting,
                        started: now,
                        last_ping: now,
                        ping: None,
                        sent: HashMap::new(),
                    },
                );
            }
            Err(e) => out.push(PeerEvent::Down(osd, format!("connect to {addr}: {e}"))),
        }
    }

    /// Whether `osd`'s retry hold, if any, is over at `now` (and forgets it then).
    fn may_connect(&mut self, osd: OsdNum, now: Instant) -> bool {
        match self.held.get(&osd) {
            Some(&until) if now < until => false,
            Some(_) => {
                self.held.remove(&osd);
                true
            }
            None => true,
        }
    }

    /// Whether requests can be sent to `osd`.
    pub fn is_ready(&self, osd: OsdNum) -> bool {
        self.peers
            .get(&osd)
            .is_some_and(|p| matches!(p.state, State::Ready))
    }

    /// Whether a connection to `osd` exists or is being made.
    pub fn is_known(&self, osd: OsdNum) -> bool {
        self.peers.contains_key(&osd)
    }

    /// Sends a request to a ready peer; returns its id, or `None` if the peer is not ready.
    pub fn send(
        &mut self,
        osd: OsdNum,
        request: Request,
        payload: &[u8],
        data: Option<Rc<AlignedBuf>>,
    ) -> Option<u64> {
        let peer = self.peers.get_mut(&osd)?;
        if !matches!(peer.state, State::Ready) {
            return None;
        }
        let id = peer.conn.send_request(request, payload, data);
        peer.sent.insert(id, Instant::now());
        Some(id)
    }

    /// Drops the connection to `osd` (e.g. it is down in etcd); reported as [`PeerEvent::Down`].
    pub fn drop_peer(&mut self, osd: OsdNum, why: &str, out: &mut Vec<PeerEvent>) {
        if let Some(peer) = self.peers.remove(&osd) {
            self.by_serial.remove(&peer.serial);
            out.push(PeerEvent::Down(osd, why.to_string()));
        }
    }

    /// Reports each peer connection to poll as `(serial, fd, whether POLLOUT is wanted)`;
    /// POLLIN always is.
    pub fn poll_set(&self, add: &mut impl FnMut(u64, i32, bool)) {
        for p in self.peers.values() {
            let wants_out = matches!(p.state, State::Connecting) || p.conn.wants_write();
            add(p.serial, p.conn.fd(), wants_out);
        }
    }

    /// Handles poll results for the connection with `serial` (ignored if it is gone).
    pub fn handle_serial(&mut self, serial: u64, revents: i16, out: &mut Vec<PeerEvent>) {
        if let Some(&osd) = self.by_serial.get(&serial) {
            self.handle(osd, revents, out);
        }
    }

    /// Whether some peer has input that no poll will report again (see
    /// [`Connection::has_input`]).
    pub fn has_input(&self) -> bool {
        self.peers.values().any(|p| p.conn.has_input())
    }

    /// Reads the peers that have input no poll will report again: what the frame limit left
    /// in a connection's staging buffer or socket.
    pub fn receive_pending(&mut self, out: &mut Vec<PeerEvent>) {
        let pending: Vec<OsdNum> = self
            .peers
            .iter()
            .filter(|(_, p)| p.conn.has_input())
            .map(|(osd, _)| *osd)
            .collect();
        for osd in pending {
            self.handle(osd, 0, out);
        }
    }

    /// Handles poll results for `osd` (or input left from earlier when `revents` is 0).
    pub fn handle(&mut self, osd: OsdNum, revents: i16, out: &mut Vec<PeerEvent>) {
        if let Err(e) = self.handle_inner(osd, revents, out) {
            self.drop_peer(osd, &e, out);
        }
    }

    fn handle_inner(
        &mut self,
        osd: OsdNum,
        revents: i16,
        out: &mut Vec<PeerEvent>,
    ) -> Result<(), String> {
        let me = self.me;
        let Some(peer) = self.peers.get_mut(&osd) else {
            return Ok(());
        };
        if revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
            peer.conn.mark_readable();
        }
        if revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
            peer.conn.mark_writable();
        }
        if matches!(peer.state, State::Connecting) {
            if revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) == 0 {
                return Ok(());
            }
            socket_error(peer.conn.stream()).map_err(|e| format!("connect: {e}"))?;
            let json = ShowConfigRequestJson {
                // The handshake's JSON is the wire edge: the number goes out bare.
                osd_num: Some(me.0),
                features: RequestFeatures::default(),
            }
            .to_json();
            let request = Request {
                id: 0,
                op: RequestOp::ShowConfig(ShowConfigOp {
                    json_len: json.len() as u64,
                }),
            };
            let id = peer.conn.send_request(request, &json, None);
            peer.state = State::Handshaking(id);
        }
        if peer.conn.wants_write() {
            peer.conn.flush().map_err(|e| e.to_string())?;
        }
        if !peer.conn.has_input() {
            return Ok(());
        }
        let mut incoming = std::mem::take(&mut self.incoming);
        let result = peer.conn.receive(&mut incoming);
        let handled = Self::take_replies(osd, peer, &mut incoming, out);
        incoming.clear();
        self.incoming = incoming;
        handled?;
        result.map_err(|e| e.to_string())?;
        // Requests queued by the replies' handlers go out in the caller's flush pass.
        Ok(())
    }

    fn take_replies(
        osd: OsdNum,
        peer: &mut Peer,
        incoming: &mut Vec<Incoming>,
        out: &mut Vec<PeerEvent>,
    ) -> Result<(), String> {
        for inc in incoming.drain(..) {
            let Frame::Reply { reply, .. } = inc.frame else {
                return Err("peer sent a request on an outgoing connection".into());
            };
            match peer.state {
                State::Handshaking(id) if reply.id == id => {
                    if reply.retval < 0 {
                        return Err(format!("handshake refused: {}", reply.retval));
                    }
                    peer.state = State::Ready;
                    out.push(PeerEvent::Ready(osd));
                }
                _ if peer.ping.is_some_and(|(id, _)| id == reply.id) => peer.ping = None,
                _ => {
                    peer.sent.remove(&reply.id);
                    out.push(PeerEvent::Reply {
                        osd,
                        reply,
                        payload: inc.payload,
                    })
                }
            }
        }
        Ok(())
    }

    /// Writes whatever is queued on every peer connection.
    pub fn flush_all(&mut self, out: &mut Vec<PeerEvent>) {
        let failed: Vec<(OsdNum, String)> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| {
                matches!(p.state, State::Ready | State::Handshaking(_)) && p.conn.wants_write()
            })
            .filter_map(|(osd, p)| p.conn.flush().err().map(|e| (*osd, e.to_string())))
            .collect();
        for (osd, e) in failed {
            self.drop_peer(osd, &e, out);
        }
    }

    /// Connect/handshake timeouts, PINGs, ping and op timeouts; call about once a second.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<PeerEvent>) {
        let mut dead = Vec::new();
        for (osd, p) in self.peers.iter_mut() {
            let clocks = Clocks {
                phase: match p.state {
                    State::Connecting | State::Handshaking(_) => Phase::Connecting(p.started),
                    State::Ready => Phase::Ready,
                },
                last_ping: p.last_ping,
                ping_sent: p.ping.map(|(_, sent)| sent),
                oldest_request: p.sent.values().min().copied(),
            };
            match judge(&clocks, now, &self.timeouts) {
                Verdict::Fine => {}
                Verdict::Ping => {
                    let id = p.conn.send_request(
                        Request {
                            id: 0,
                            op: RequestOp::Ping,
                        },
                        &[],
                        None,
                    );
                    p.ping = Some((id, now));
                    p.last_ping = now;
                }
                Verdict::Drop(why) => dead.push((*osd, why)),
            }
        }
        for (osd, _) in &dead {
            self.held.insert(*osd, now + self.timeouts.retry);
        }
        for (osd, why) in dead {
            self.drop_peer(osd, &why, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: PeerTimeouts = PeerTimeouts {
        connect: Duration::from_secs(5),
        ping: Duration::from_secs(5),
        op: Duration::from_secs(10),
        retry: Duration::from_secs(5),
    };

    fn ready(t0: Instant) -> Clocks {
        Clocks {
            phase: Phase::Ready,
            last_ping: t0,
            ping_sent: None,
            oldest_request: None,
        }
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn an_idle_peer_is_pinged_every_half_ping_timeout() {
        let t0 = Instant::now();
        assert_eq!(judge(&ready(t0), at(t0, 1), &T), Verdict::Fine);
        assert_eq!(judge(&ready(t0), at(t0, 3), &T), Verdict::Ping);
    }

    #[test]
    fn an_unanswered_ping_drops_the_peer_after_the_ping_timeout() {
        let t0 = Instant::now();
        let c = Clocks {
            ping_sent: Some(t0),
            ..ready(t0)
        };
        assert_eq!(judge(&c, at(t0, 5), &T), Verdict::Fine);
        assert!(matches!(judge(&c, at(t0, 6), &T), Verdict::Drop(w) if w.contains("PING")));
    }

    /// A peer whose disk hangs answers PINGs (they need no disk) but not requests.
    #[test]
    fn a_request_unanswered_past_the_op_timeout_drops_a_peer_that_answers_pings() {
        let t0 = Instant::now();
        let c = Clocks {
            oldest_request: Some(t0),
            last_ping: at(t0, 9),
            ..ready(t0)
        };
        assert_eq!(judge(&c, at(t0, 10), &T), Verdict::Fine);
        let v = judge(&c, at(t0, 11), &T);
        assert!(
            matches!(&v, Verdict::Drop(w) if w.contains("osd_op_timeout")),
            "{v:?}"
        );
    }

    #[test]
    fn a_slow_connect_is_dropped_after_the_connect_timeout() {
        let t0 = Instant::now();
        let c = Clocks {
            phase: Phase::Connecting(t0),
            ..ready(t0)
        };
        assert_eq!(judge(&c, at(t0, 5), &T), Verdict::Fine);
        assert!(matches!(judge(&c, at(t0, 6), &T), Verdict::Drop(_)));
        // Requests are never sent before the handshake, so no op timeout applies.
        let c = Clocks {
            oldest_request: Some(t0),
            ..c
        };
        assert_eq!(judge(&c, at(t0, 4), &T), Verdict::Fine);
    }

    /// The retry hold: a peer dropped for a timeout is not connected again at once, and is
    /// once the retry interval has passed.
    #[test]
    fn a_peer_dropped_for_a_timeout_is_held_off_for_the_retry_interval() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = PeerTimeouts {
            retry: Duration::from_secs(3600),
            ..T
        };
        let mut peers = Peers::new(OsdNum(1), t);
        let mut out = Vec::new();
        peers.connect(OsdNum(2), addr, &mut out);
        assert!(peers.is_known(OsdNum(2)));
        // Never polled: the handshake cannot finish, so the connect timeout drops it.
        let dropped = Instant::now() + T.connect + Duration::from_secs(1);
        peers.tick(dropped, &mut out);
        assert!(matches!(out.as_slice(), [PeerEvent::Down(OsdNum(2), _)]));
        assert!(!peers.is_known(OsdNum(2)));
        peers.connect(OsdNum(2), addr, &mut out);
        assert!(!peers.is_known(OsdNum(2)), "reconnected during the hold");
        assert!(!peers.may_connect(OsdNum(2), dropped + t.retry / 2));
        assert!(peers.may_connect(OsdNum(2), dropped + t.retry));
        // A peer lost to a socket error (not a timeout) is never held.
        assert!(peers.may_connect(OsdNum(3), dropped));
    }

    /// Replies beyond one round's frame limit that arrived together are all delivered without
    /// more data on the socket: the loop reads peers with input left (staged or still in the
    /// socket), which no poll reports again.
    #[test]
    fn replies_beyond_the_frame_limit_are_read_without_new_data() {
        use std::io::{Read, Write};
        use vitastor_protocol::{decode_request, encode_reply, ReplyOp, OSD_PACKET_SIZE};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peers = Peers::new(OsdNum(1), T);
        let mut out = Vec::new();
        peers.connect(OsdNum(2), listener.local_addr().unwrap(), &mut out);
        let (mut fake, _) = listener.accept().unwrap();
        let mut fd = -1;
        peers.poll_set(&mut |_, f, _| fd = f);
        let wait = |events: i16, timeout: i32| {
            let mut pfd = libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            // SAFETY: poll reads and writes one pollfd, which outlives the call.
            unsafe { libc::poll(&mut pfd, 1, timeout) };
            pfd.revents
        };
        let read_request = |fake: &mut std::net::TcpStream| {
            let mut packet = [0u8; OSD_PACKET_SIZE];
            fake.read_exact(&mut packet).unwrap();
            let request = decode_request(&packet).unwrap();
            if let RequestOp::ShowConfig(ShowConfigOp { json_len }) = request.op {
                fake.read_exact(&mut vec![0u8; json_len as usize]).unwrap();
            }
            request
        };
        let reply = |id, retval, op| {
            let mut packet = [0u8; OSD_PACKET_SIZE];
            encode_reply(&Reply { id, retval, op }, &mut packet);
            packet
        };
        // The handshake.
        let revents = wait(libc::POLLOUT, 1000);
        peers.handle(OsdNum(2), revents, &mut out);
        let hello = read_request(&mut fake);
        let json = b"{}";
        let mut bytes = reply(hello.id, json.len() as i64, ReplyOp::ShowConfig).to_vec();
        bytes.extend_from_slice(json);
        fake.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !peers.is_ready(OsdNum(2)) {
            assert!(Instant::now() < deadline, "no handshake");
            let revents = wait(libc::POLLIN, 1000);
            peers.handle(OsdNum(2), revents, &mut out);
        }
        // Twice the frame limit of requests, answered in one write.
        let n = 2 * crate::connection::FRAMES_PER_ROUND;
        for _ in 0..n {
            let request = Request {
                id: 0,
                op: RequestOp::Ping,
            };
            peers.send(OsdNum(2), request, &[], None).unwrap();
        }
        peers.flush_all(&mut out);
        let mut answers = Vec::new();
        for _ in 0..n {
            let request = read_request(&mut fake);
            answers.extend_from_slice(&reply(request.id, 0, ReplyOp::Ping));
        }
        fake.write_all(&answers).unwrap();
        out.clear();
        // The server loop's part: wait for the poll (not at all while input is left), handle
        // what fired, then the peers with input left.
        let mut replies = 0;
        while replies < n {
            assert!(
                Instant::now() < deadline,
                "{replies} of {n} replies delivered"
            );
            let timeout = if peers.has_input() { 0 } else { 1000 };
            let revents = wait(libc::POLLIN, timeout);
            if revents != 0 && !peers.has_input() {
                peers.handle(OsdNum(2), revents, &mut out);
            }
            peers.receive_pending(&mut out);
            replies += out
                .drain(..)
                .filter(|e| matches!(e, PeerEvent::Reply { .. }))
                .count();
        }
    }
}
