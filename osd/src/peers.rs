//! Outgoing connections to other OSDs: non-blocking connect, the SHOW_CONFIG handshake,
//! PING keepalive with a timeout, and the requests primaries send to secondaries.
//!
//! It owns sockets and their liveness, nothing else: which op a reply belongs to is the
//! caller's business (it keys its table by `(osd, request id)`), and so is what a lost peer
//! means for PGs. A peer is dropped on any socket or protocol error, on a connect or handshake
//! that takes longer than the connect timeout, and when a PING goes unanswered for the ping
//! timeout; the caller then gets [`PeerEvent::Down`] and fails that peer's outstanding requests.

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
            incoming: Vec::new(),
        }
    }

    /// Starts connecting to `osd` unless a connection exists or is being made. A failure to
    /// even start is reported as [`PeerEvent::Down`].
    pub fn connect(&mut self, osd: OsdNum, addr: SocketAddr, out: &mut Vec<PeerEvent>) {
        if self.peers.contains_key(&osd) {
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
                    },
                );
            }
            Err(e) => out.push(PeerEvent::Down(osd, format!("connect to {addr}: {e}"))),
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
        Some(peer.conn.send_request(request, payload, data))
    }

    /// Drops the connection to `osd` (e.g. it is down in etcd); reported as [`PeerEvent::Down`].
    pub fn drop_peer(&mut self, osd: OsdNum, why: &str, out: &mut Vec<PeerEvent>) {
        if let Some(peer) = self.peers.remove(&osd) {
            self.by_serial.remove(&peer.serial);
            out.push(PeerEvent::Down(osd, why.to_string()));
        }
    }

    /// Reports each peer connection to poll as `(serial, fd, events)`.
    pub fn poll_set(&self, add: &mut impl FnMut(u64, i32, i16)) {
        for p in self.peers.values() {
            let mut events = libc::POLLIN;
            if matches!(p.state, State::Connecting) || p.conn.wants_write() {
                events |= libc::POLLOUT;
            }
            add(p.serial, p.conn.fd(), events);
        }
    }

    /// Handles poll results for the connection with `serial` (ignored if it is gone).
    pub fn handle_serial(&mut self, serial: u64, revents: i16, out: &mut Vec<PeerEvent>) {
        if let Some(&osd) = self.by_serial.get(&serial) {
            self.handle(osd, revents, out);
        }
    }

    /// Whether some peer has input staged that poll will not report.
    pub fn has_staged_input(&self) -> bool {
        self.peers.values().any(|p| p.conn.has_staged_input())
    }

    /// Handles poll results for `osd` (or staged input when `revents` is 0).
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
        if revents & libc::POLLOUT != 0 || peer.conn.wants_write() {
            peer.conn.flush().map_err(|e| e.to_string())?;
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
                _ => out.push(PeerEvent::Reply {
                    osd,
                    reply,
                    payload: inc.payload,
                }),
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

    /// Connect/handshake timeouts, PINGs and ping timeouts; call about once a second.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<PeerEvent>) {
        let mut dead = Vec::new();
        for (osd, p) in self.peers.iter_mut() {
            match p.state {
                State::Connecting | State::Handshaking(_) => {
                    if now.duration_since(p.started) > self.timeouts.connect {
                        dead.push((*osd, "connect/handshake timed out".to_string()));
                    }
                }
                State::Ready => match p.ping {
                    Some((_, sent)) if now.duration_since(sent) > self.timeouts.ping => {
                        dead.push((*osd, format!("no PING reply in {:?}", self.timeouts.ping)))
                    }
                    Some(_) => {}
                    None if now.duration_since(p.last_ping) >= self.timeouts.ping / 2 => {
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
                    None => {}
                },
            }
        }
        for (osd, why) in dead {
            self.drop_peer(osd, &why, out);
        }
    }
}
