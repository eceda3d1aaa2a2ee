//! OSD connections: connecting, the SHOW_CONFIG handshake, the send queue and the receive
//! state machine, and dropping a connection.
//!
//! # What this module owns
//! - Non-blocking connect and the handshake with `check_sequencing` (request ids then
//!   increase by exactly one per connection, assigned in [`Client::enqueue`]).
//! - The send queue: requests queued by `dispatch` leave together, one `sendmsg` per
//!   connection per call ([`Client::flush_queued`]), straight from the op buffers; a send
//!   the socket takes only in part waits for EPOLLOUT rather than meeting `EAGAIN` ([`send`]).
//! - The receive side ([`receive`], a state machine over one connection, unit-tested on a
//!   socket pair): headers and small payloads through a per-connection buffer, large read
//!   data straight into the op's buffer. A large reply's bitmap, data and what follows it
//!   come in one `readv` (the bytes after the data land in the receive buffer), so a stream
//!   of large replies costs one call per reply. While large reads are outstanding the buffer
//!   never reads past the next reply's header, so their data is never copied. A short read
//!   ends the batch, since the socket is then empty and epoll reports what comes next.
//! - The op timeout's probe and give-up (the decisions are `reply_wait`'s), and [`IoCounts`].
//!
//! # What it must never do
//! - Block: every socket is non-blocking.
//! - Size a buffer from an unchecked field: payload lengths come from `Reply::payload_len`.
//! - Copy a large read's data: it goes from the socket to the op's buffer only.
//! - Lose a part when a connection goes: its outstanding parts wait for the PG's primary of
//!   the moment (SYNC parts restart after the replays).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use rustc_hash::FxHashMap;
use vitastor_protocol::handshake::{RequestFeatures, ShowConfigRequestJson};
use vitastor_protocol::{
    decode_reply, encode_request, Reply, ReplyOp, Request, RequestOp, ShowConfigOp, OSD_PACKET_SIZE,
};

use super::reply_wait::{Action, ReplyWait};
use super::{
    Client, Conn, ConnState, Op, OpKind, Outstanding, PartState, Pending, Recv, SendData, SendItem,
    Target, TOKEN_CONN_BASE,
};
use crate::sys::{self, copy_to_iov, extend_sub_iov, sub_iov, Io, IoVec};

/// Receive buffer per connection: holds many 128-byte replies per `read`, and small read
/// payloads, so a busy connection costs one syscall per batch rather than per reply.
const RECV_BUF: usize = 64 << 10;
/// Payloads at least this long are read straight into the op's buffer instead of through
/// the receive buffer (saves a copy; below it the extra syscall costs more than the copy).
const DIRECT_READ_MIN: usize = 16 << 10;
/// Most send-queue entries gathered into one `sendmsg`.
const SEND_BATCH: usize = 64;

/// The client's own system calls and copies since it was created, counted where they are
/// made, so a regression in the data path shows as a number rather than as noise in a
/// latency figure. Subtract two readings to get what happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    /// `epoll_wait` calls.
    pub waits: u64,
    /// `sendmsg` calls to OSDs.
    pub sends: u64,
    /// `read`/`readv` calls on OSD sockets.
    pub receives: u64,
    /// Bytes of read data copied from the receive buffer into op buffers (the rest landed
    /// there directly).
    pub copied: u64,
}

impl std::ops::Sub for IoCounts {
    type Output = IoCounts;

    fn sub(self, earlier: IoCounts) -> IoCounts {
        IoCounts {
            waits: self.waits - earlier.waits,
            sends: self.sends - earlier.sends,
            receives: self.receives - earlier.receives,
            copied: self.copied - earlier.copied,
        }
    }
}

impl Client {
    /// The connection to `osd` if it is ready; otherwise starts connecting (unless the OSD
    /// is down or failed recently) and returns `None`.
    pub(super) fn ready_conn(&mut self, osd: u64) -> Option<usize> {
        if let Some(&idx) = self.by_osd.get(&osd) {
            let ready = matches!(
                self.conns[idx].as_ref().map(|c| &c.state),
                Some(ConnState::Ready(_))
            );
            return ready.then_some(idx);
        }
        if self
            .down_until
            .get(&osd)
            .is_some_and(|t| Instant::now() < *t)
        {
            return None;
        }
        self.down_until.remove(&osd);
        let state = self.view.osd(osd)?;
        let Some(ip) = state
            .addresses
            .iter()
            .find_map(|a| a.parse::<IpAddr>().ok())
        else {
            crate::log(format_args!(
                "OSD {osd} has no usable address: {:?}",
                state.addresses
            ));
            self.mark_down(osd);
            return None;
        };
        let port = state.port;
        let fd = match sys::connect(ip, port) {
            Ok(fd) => fd,
            Err(e) => {
                crate::log(format_args!("connecting to OSD {osd} at {ip}:{port}: {e}"));
                self.mark_down(osd);
                return None;
            }
        };
        let idx = self.free_conns.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self
            .epoll
            .add(fd.as_raw_fd(), idx as u64 + TOKEN_CONN_BASE, true)
        {
            crate::log(format_args!("watching the socket of OSD {osd}: {e}"));
            self.free_conns.push(idx);
            self.mark_down(osd);
            return None;
        }
        self.conns[idx] = Some(Conn::new(osd, fd));
        self.by_osd.insert(osd, idx);
        None
    }

    pub(super) fn mark_down(&mut self, osd: u64) {
        self.down_until
            .insert(osd, Instant::now() + self.settings.retry_interval);
    }

    /// Appends a request with the connection's next id (ids are consecutive, as
    /// `check_sequencing` requires).
    pub(super) fn enqueue(
        &mut self,
        conn_idx: usize,
        op: RequestOp,
        data: SendData,
        target: Target,
    ) {
        if let Some(conn) = self.conns[conn_idx].as_mut() {
            conn.push_request(op, data, target);
        }
    }

    pub(super) fn conn_event(&mut self, idx: usize, flags: u32, pending: &mut Pending) {
        let error = flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
        let connecting = matches!(
            self.conns[idx].as_ref().map(|c| &c.state),
            Some(ConnState::Connecting)
        );
        if connecting {
            if flags & libc::EPOLLOUT as u32 == 0 && !error {
                return;
            }
            let Some(conn) = self.conns[idx].as_mut() else {
                return;
            };
            if let Err(e) = sys::socket_error(conn.fd.as_raw_fd()) {
                return self.drop_conn(idx, &format!("connect failed: {e}"), pending);
            }
            conn.state = ConnState::Handshaking;
            let json = ShowConfigRequestJson {
                osd_num: None,
                features: RequestFeatures {
                    check_sequencing: true,
                },
            }
            .to_json();
            let op = RequestOp::ShowConfig(ShowConfigOp {
                json_len: json.len() as u64,
            });
            self.enqueue(idx, op, SendData::Json(json), Target::Handshake);
            self.flush(idx);
            return;
        }
        if flags & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0 || error {
            self.read_conn(idx, pending);
        }
        if flags & libc::EPOLLOUT as u32 != 0 {
            if let Some(conn) = self.conns[idx].as_mut() {
                conn.send_blocked = false;
                self.flush(idx);
            }
        }
    }

    pub(super) fn check_connect_timeouts(&mut self, pending: &mut Pending) {
        let timeout = self.settings.connect_timeout;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let slow = !matches!(c.state, ConnState::Ready(_)) && c.since.elapsed() > timeout;
                slow.then_some(i)
            })
            .collect();
        for idx in expired {
            self.drop_conn(idx, "connect/handshake timed out", pending);
        }
    }

    /// Probes silent OSDs and drops those that did not answer the probe either (see
    /// `reply_wait`); the dropped connections' parts go to the PG's primary of the moment.
    pub(super) fn check_op_timeouts(&mut self, pending: &mut Pending) {
        let (now, timeout) = (Instant::now(), self.settings.op_timeout);
        for idx in 0..self.conns.len() {
            let Some(conn) = self.conns[idx].as_mut() else {
                continue;
            };
            if !matches!(conn.state, ConnState::Ready(_)) {
                continue;
            }
            match conn.wait.check(now, timeout) {
                Action::Wait => {}
                Action::Probe => {
                    self.enqueue(idx, RequestOp::Ping, SendData::None, Target::Ping);
                    if let Some(conn) = self.conns[idx].as_mut() {
                        conn.wait.probed(now);
                    }
                    self.flush(idx);
                }
                Action::GiveUp { silent } => {
                    let reason = format!(
                        "no reply for {:.1} s (client_op_timeout {} s), PING unanswered",
                        silent.as_secs_f64(),
                        timeout.as_secs()
                    );
                    self.drop_conn(idx, &reason, pending);
                }
            }
        }
    }

    /// Sends what [`Client::dispatch`] queued, one batch per connection. A failed send drops
    /// its connection, whose parts may be dispatched again elsewhere: repeat until none is
    /// left.
    pub(super) fn flush_queued(&mut self) {
        while let Some(conn_idx) = self.to_flush.pop() {
            self.flush(conn_idx);
        }
    }

    pub(super) fn flush(&mut self, conn_idx: usize) {
        let Client {
            conns,
            ops,
            iov_scratch,
            epoll,
            counts,
            ..
        } = self;
        let Some(conn) = conns[conn_idx].as_mut() else {
            return;
        };
        if matches!(conn.state, ConnState::Connecting) {
            return;
        }
        let failed = send(conn, ops, iov_scratch, counts).err();
        let want = !conn.send_q.is_empty() && failed.is_none();
        if want != conn.want_write {
            let token = conn_idx as u64 + TOKEN_CONN_BASE;
            if epoll.modify(conn.fd.as_raw_fd(), token, want).is_ok() {
                conn.want_write = want;
            } else {
                // No EPOLLOUT will come: the next flush sends (and asks) again.
                conn.send_blocked = false;
            }
        }
        if let Some(e) = failed {
            let mut pending = Pending::default();
            self.drop_conn(conn_idx, &format!("send failed: {e}"), &mut pending);
        }
    }

    pub(super) fn read_conn(&mut self, idx: usize, pending: &mut Pending) {
        if let Some(conn) = self.conns[idx].as_mut() {
            conn.drained = false;
        }
        let mut heard = false;
        loop {
            match self.read_step(idx) {
                Ok(true) => heard = true,
                Ok(false) => break,
                Err(reason) => return self.drop_conn(idx, &reason, pending),
            }
        }
        // Any bytes count as a sign of life, even part of a long payload; one clock read per
        // batch, not per reply.
        if let (true, Some(conn)) = (heard, self.conns[idx].as_mut()) {
            let busy = !conn.outstanding.is_empty() || matches!(conn.recv, Recv::Payload { .. });
            conn.wait.heard(Instant::now(), busy);
        }
    }

    /// One step of the receive state machine; Ok(false) when it must wait for the socket.
    pub(super) fn read_step(&mut self, idx: usize) -> Result<bool, String> {
        let Client {
            conns,
            ops,
            iov_scratch,
            counts,
            ..
        } = self;
        let Some(conn) = conns[idx].as_mut() else {
            return Ok(false);
        };
        match receive(conn, ops, iov_scratch, counts)? {
            Step::Wait => Ok(false),
            Step::Progress => Ok(true),
            Step::Reply(out, reply) => {
                self.on_reply(idx, out, reply)?;
                Ok(true)
            }
        }
    }

    pub(super) fn drop_conn(&mut self, idx: usize, reason: &str, pending: &mut Pending) {
        let Some(conn) = self.conns[idx].take() else {
            return;
        };
        crate::log(format_args!("OSD {}: {reason}; will retry", conn.osd));
        self.free_conns.push(idx);
        self.by_osd.remove(&conn.osd);
        self.mark_down(conn.osd);
        self.lose_unsynced(conn.osd);
        let mut lost: Vec<Outstanding> = conn.outstanding.into_values().collect();
        if let Recv::Payload { out, .. } = conn.recv {
            lost.push(out);
        }
        // Closing the fd (dropping `conn`) also removes it from epoll.
        for out in lost {
            let Target::Part { op, part } = out.target else {
                continue;
            };
            if self.ops[op].kind == OpKind::Sync {
                self.ops[op].restart = true;
                self.part_done(op, part);
            } else {
                self.ops[op].parts[part].state = PartState::Waiting;
                self.waiting.push((op, part));
            }
        }
        pending.view_changed = true;
    }
}

impl Conn {
    /// A connection being set up to `osd` over `fd` (connect started).
    fn new(osd: u64, fd: OwnedFd) -> Conn {
        Conn {
            osd,
            fd,
            state: ConnState::Connecting,
            since: Instant::now(),
            next_id: 1,
            outstanding: FxHashMap::default(),
            send_q: VecDeque::new(),
            send_off: 0,
            send_blocked: false,
            want_write: true,
            recv: Recv::Header,
            rbuf: vec![0; RECV_BUF].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            payload: Vec::new(),
            drained: false,
            big_reads: 0,
            wait: ReplyWait::default(),
        }
    }

    /// Queues a request with the connection's next id (ids are consecutive, as
    /// `check_sequencing` requires) and expects its reply.
    fn push_request(&mut self, op: RequestOp, data: SendData, target: Target) {
        let request = Request {
            id: self.next_id,
            op,
        };
        self.next_id += 1;
        if is_direct_read(&request) {
            self.big_reads += 1;
        }
        let mut packet = [0u8; OSD_PACKET_SIZE];
        encode_request(&request, &mut packet);
        self.send_q.push_back(SendItem { packet, data });
        self.outstanding
            .insert(request.id, Outstanding { request, target });
        self.wait.requested(Instant::now);
    }
}

/// Sends what `conn` has queued, as far as the socket takes it, straight from the op
/// buffers (`segs` is scratch). A send that goes out only in part found the socket full:
/// nothing more is sent, not even new requests, until EPOLLOUT (which the caller asks for
/// while anything is queued) says there is room, since sending at once would only get
/// `EAGAIN`.
fn send(
    conn: &mut Conn,
    ops: &[Op],
    segs: &mut Vec<IoVec>,
    counts: &mut IoCounts,
) -> std::io::Result<()> {
    while !conn.send_q.is_empty() && !conn.send_blocked {
        segs.clear();
        let mut skip = conn.send_off;
        for item in conn.send_q.iter().take(SEND_BATCH) {
            if skip < OSD_PACKET_SIZE {
                segs.push(IoVec {
                    iov_base: item.packet[skip..].as_ptr().cast_mut().cast(),
                    iov_len: OSD_PACKET_SIZE - skip,
                });
                skip = 0;
            } else {
                skip -= OSD_PACKET_SIZE;
            }
            match &item.data {
                SendData::None => {}
                SendData::Json(j) => segs.push(IoVec {
                    iov_base: j[skip..].as_ptr().cast_mut().cast(),
                    iov_len: j.len() - skip,
                }),
                SendData::Op { op, off, len } => {
                    extend_sub_iov(&ops[*op].iov, off + skip as u64, len - skip as u64, segs);
                }
            }
            skip = 0;
        }
        let offered = sys::iov_bytes(segs);
        counts.sends += 1;
        match sys::writev(conn.fd.as_raw_fd(), segs)? {
            Io::Done(sent) => {
                let mut n = sent;
                while n > 0 {
                    let Some(front) = conn.send_q.front() else {
                        break;
                    };
                    let left = OSD_PACKET_SIZE + front.data_len() - conn.send_off;
                    if n >= left {
                        n -= left;
                        conn.send_off = 0;
                        conn.send_q.pop_front();
                    } else {
                        conn.send_off += n;
                        n = 0;
                    }
                }
                conn.send_blocked = sent < offered;
            }
            Io::WouldBlock | Io::Closed => conn.send_blocked = true,
        }
    }
    Ok(())
}

/// A read whose data is received straight into the op's buffer.
fn is_direct_read(request: &Request) -> bool {
    matches!(request.op, RequestOp::Read(rw) if rw.len as usize >= DIRECT_READ_MIN)
}

/// What one step of the receive state machine did.
// Returned by value per step and consumed at once: boxing the reply would cost an
// allocation per reply for no memory gain.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Nothing can be read now: the socket is empty, or the last receive showed it empty.
    Wait,
    /// Bytes moved or a header was taken: step again.
    Progress,
    /// A reply is complete: its data is in the op's buffer, its bitmap or JSON in
    /// `Conn::payload`.
    Reply(Outstanding, Reply),
}

/// Reads up to `limit` more bytes into the receive buffer (as many as fit when `limit` is
/// `None`).
fn fill(conn: &mut Conn, limit: Option<usize>, counts: &mut IoCounts) -> Result<Step, String> {
    if conn.drained {
        return Ok(Step::Wait);
    }
    if conn.rstart == conn.rend {
        conn.rstart = 0;
        conn.rend = 0;
    } else if conn.rstart > 0 && conn.rbuf.len() - conn.rend < OSD_PACKET_SIZE {
        conn.rbuf.copy_within(conn.rstart..conn.rend, 0);
        conn.rend -= conn.rstart;
        conn.rstart = 0;
    }
    let room = conn.rbuf.len() - conn.rend;
    let end = conn.rend + limit.map_or(room, |l| l.min(room));
    let want = end - conn.rend;
    counts.receives += 1;
    match sys::read(conn.fd.as_raw_fd(), &mut conn.rbuf[conn.rend..end]) {
        Ok(Io::Done(n)) => {
            conn.rend += n;
            conn.drained = n < want;
            Ok(Step::Progress)
        }
        Ok(Io::WouldBlock) => Ok(Step::Wait),
        Ok(Io::Closed) => Err("connection closed by the OSD".into()),
        Err(e) => Err(format!("receive failed: {e}")),
    }
}

/// How far the receive buffer may read past the current reply's end: while large reads are
/// outstanding, one packet (the next reply may be one of them, whose data must not land in
/// the buffer), otherwise as far as it has room.
fn read_ahead(conn: &Conn) -> Option<usize> {
    (conn.big_reads > 0).then_some(OSD_PACKET_SIZE)
}

/// The rest of a large read reply in one `readv`: `bitmap_left` bytes of bitmap into
/// `Conn::payload`, the data into `segs` (the op's buffer, the caller's slice of it) and,
/// behind them, what follows into the empty receive buffer, as much as [`read_ahead`]
/// allows. A stream of large replies thus costs one call per reply, each taking the next
/// reply's header with it. Returns the bitmap and data bytes received.
fn receive_direct(
    conn: &mut Conn,
    bitmap_left: usize,
    segs: &mut Vec<IoVec>,
    counts: &mut IoCounts,
) -> Result<(Step, usize, usize), String> {
    if conn.drained {
        return Ok((Step::Wait, 0, 0));
    }
    let data_left: usize = segs.iter().map(|v| v.iov_len).sum();
    let have = conn.payload.len();
    conn.payload.resize(have + bitmap_left, 0);
    if bitmap_left > 0 {
        segs.insert(
            0,
            IoVec {
                iov_base: conn.payload[have..].as_mut_ptr().cast(),
                iov_len: bitmap_left,
            },
        );
    }
    conn.rstart = 0;
    conn.rend = 0;
    let ahead = read_ahead(conn).unwrap_or(conn.rbuf.len());
    segs.push(IoVec {
        iov_base: conn.rbuf.as_mut_ptr().cast(),
        iov_len: ahead,
    });
    let asked = sys::iov_bytes(segs);
    counts.receives += 1;
    let got = sys::readv(conn.fd.as_raw_fd(), segs);
    let n = match got {
        Ok(Io::Done(n)) => n,
        _ => 0,
    };
    let bits = n.min(bitmap_left);
    conn.payload.truncate(have + bits);
    let data = (n - bits).min(data_left);
    conn.rend = n - bits - data;
    conn.drained = n < asked;
    match got {
        Ok(Io::Done(_)) => Ok((Step::Progress, bits, data)),
        Ok(Io::WouldBlock) => Ok((Step::Wait, 0, 0)),
        Ok(Io::Closed) => Err("connection closed by the OSD".into()),
        Err(e) => Err(format!("receive failed: {e}")),
    }
}

/// Where in the op's buffer the next `data_left` bytes of `part`'s data go.
fn data_at(op: &Op, part: usize, data_left: usize) -> u64 {
    let p = op.parts[part];
    p.op_offset + (p.len as usize - data_left) as u64
}

/// One step of the receive state machine of `conn`, whose parts' buffers are in `ops`.
fn receive(
    conn: &mut Conn,
    ops: &[Op],
    iov_scratch: &mut Vec<IoVec>,
    counts: &mut IoCounts,
) -> Result<Step, String> {
    let avail = conn.rend - conn.rstart;
    match &mut conn.recv {
        Recv::Header => {
            if avail < OSD_PACKET_SIZE {
                // No further than this header while large reads are outstanding.
                let limit = read_ahead(conn).map(|_| OSD_PACKET_SIZE - avail);
                return fill(conn, limit, counts);
            }
            let mut packet = [0u8; OSD_PACKET_SIZE];
            packet.copy_from_slice(&conn.rbuf[conn.rstart..conn.rstart + OSD_PACKET_SIZE]);
            conn.rstart += OSD_PACKET_SIZE;
            let reply = decode_reply(&packet).map_err(|e| format!("bad reply: {e}"))?;
            let out = conn
                .outstanding
                .remove(&reply.id)
                .ok_or_else(|| format!("reply id {} matches no request", reply.id))?;
            let direct = is_direct_read(&out.request);
            if direct {
                conn.big_reads -= 1;
            }
            let len = match reply.payload_len(&out.request) {
                Ok(len) => len,
                Err(e) => {
                    // Put it back so the drop retries the part.
                    conn.outstanding.insert(reply.id, out);
                    return Err(format!("bad reply: {e}"));
                }
            };
            let bitmap_left = match reply.op {
                ReplyOp::Read(r) if reply.retval >= 0 => r.bitmap_len as usize,
                ReplyOp::ShowConfig | ReplyOp::SecList(_) => len,
                _ => 0,
            };
            conn.payload.clear();
            conn.payload.reserve(bitmap_left);
            conn.recv = Recv::Payload {
                out,
                reply,
                bitmap_left,
                data_left: len - bitmap_left,
                direct,
            };
            Ok(Step::Progress)
        }
        Recv::Payload {
            out,
            reply,
            bitmap_left,
            data_left,
            direct,
        } => {
            if *bitmap_left == 0 && *data_left == 0 {
                let (out, reply) = (*out, *reply);
                conn.recv = Recv::Header;
                return Ok(Step::Reply(out, reply));
            }
            let target = match out.target {
                Target::Part { op, part } => Some((&ops[op], part)),
                _ => None,
            };
            if avail > 0 {
                // What the receive buffer already holds: the bitmap (or JSON), then data.
                if *bitmap_left > 0 {
                    let n = avail.min(*bitmap_left);
                    conn.payload
                        .extend_from_slice(&conn.rbuf[conn.rstart..conn.rstart + n]);
                    conn.rstart += n;
                    *bitmap_left -= n;
                    return Ok(Step::Progress);
                }
                let Some((op, part)) = target else {
                    return Err("handshake reply with data".into());
                };
                let n = avail.min(*data_left);
                counts.copied += n as u64;
                copy_to_iov(
                    &op.iov,
                    data_at(op, part, *data_left),
                    &conn.rbuf[conn.rstart..conn.rstart + n],
                    iov_scratch,
                );
                conn.rstart += n;
                *data_left -= n;
                return Ok(Step::Progress);
            }
            match target {
                // A large read's data, its tail included, always goes straight to the op:
                // reading it through the buffer would copy it.
                Some((op, part)) if *direct && *data_left > 0 => {
                    let at = data_at(op, part, *data_left);
                    sub_iov(&op.iov, at, *data_left as u64, iov_scratch);
                    let bits = *bitmap_left;
                    let (step, got_bits, got_data) =
                        receive_direct(conn, bits, iov_scratch, counts)?;
                    if let Recv::Payload {
                        bitmap_left,
                        data_left,
                        ..
                    } = &mut conn.recv
                    {
                        *bitmap_left -= got_bits;
                        *data_left -= got_data;
                    }
                    Ok(step)
                }
                _ => {
                    // A small payload comes through the buffer, with what follows it.
                    let rest = *bitmap_left + *data_left;
                    let limit = read_ahead(conn).map(|ahead| rest + ahead);
                    fill(conn, limit, counts)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use vitastor_protocol::{encode_reply, RwOp, RwReply};

    use super::super::Part;
    use super::*;

    /// A reply the test's OSD sends: a read of `len` bytes with a `bitmap`-byte bitmap, or a
    /// write's acknowledgement.
    #[derive(Clone, Copy)]
    enum Sent {
        Read { len: usize, bitmap: usize },
        Write,
    }

    /// An op of one part over all of `buf` (which must outlive the op's I/O).
    fn one_part_op(kind: OpKind, buf: &mut [u8]) -> Op {
        Op {
            active: true,
            kind,
            len: buf.len() as u64,
            iov: vec![IoVec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            }],
            parts: vec![Part {
                len: buf.len() as u32,
                ..Part::default()
            }],
            ..Op::default()
        }
    }

    fn data_byte(reply: usize, at: usize) -> u8 {
        (reply * 31 + at * 7 + at / 251) as u8
    }

    fn bitmap_byte(reply: usize, at: usize) -> u8 {
        0xb0 ^ (reply * 5 + at) as u8
    }

    /// A connection on one end of a socket pair, with one op per reply of `script` waiting
    /// for it; the test plays the OSD on the other end.
    struct Rig {
        conn: Conn,
        ops: Vec<Op>,
        // The ops' iovecs point into these.
        bufs: Vec<Vec<u8>>,
        osd: UnixStream,
        counts: IoCounts,
        scratch: Vec<IoVec>,
        got: Vec<(Outstanding, Reply, Vec<u8>)>,
    }

    impl Rig {
        fn new(script: &[Sent]) -> Rig {
            let (ours, osd) = UnixStream::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            // The whole stream fits in the socket before the first receive.
            socket2::SockRef::from(&osd)
                .set_send_buffer_size(1 << 20)
                .unwrap();
            let mut conn = Conn::new(1, ours.into());
            let (mut ops, mut bufs) = (Vec::new(), Vec::new());
            for (i, s) in script.iter().enumerate() {
                let (kind, len, op) = match *s {
                    Sent::Read { len, .. } => (OpKind::Read, len, RequestOp::Read as fn(_) -> _),
                    Sent::Write => (OpKind::Write, 4096, RequestOp::Write as fn(_) -> _),
                };
                let mut buf = vec![0u8; len];
                ops.push(one_part_op(kind, &mut buf));
                bufs.push(buf);
                let rw = RwOp {
                    inode: 1,
                    offset: (i as u64) << 17,
                    len: len as u32,
                    flags: 0,
                    meta_revision: 0,
                    version: 0,
                };
                conn.push_request(op(rw), SendData::None, Target::Part { op: i, part: 0 });
            }
            Rig {
                conn,
                ops,
                bufs,
                osd,
                counts: IoCounts::default(),
                scratch: Vec::new(),
                got: Vec::new(),
            }
        }

        /// What the OSD sends for `script`, in order (request ids 1, 2, ...).
        fn stream(script: &[Sent]) -> Vec<u8> {
            let mut out = Vec::new();
            for (i, s) in script.iter().enumerate() {
                let (op, retval, bitmap, len) = match *s {
                    Sent::Read { len, bitmap } => {
                        let body = RwReply {
                            bitmap_len: bitmap as u32,
                            version: 1,
                        };
                        (ReplyOp::Read(body), len, bitmap, len)
                    }
                    Sent::Write => (ReplyOp::Write(RwReply::default()), 4096, 0, 0),
                };
                let reply = Reply {
                    id: i as u64 + 1,
                    retval: retval as i64,
                    op,
                };
                let mut packet = [0u8; OSD_PACKET_SIZE];
                encode_reply(&reply, &mut packet);
                out.extend_from_slice(&packet);
                out.extend((0..bitmap).map(|at| bitmap_byte(i, at)));
                out.extend((0..len).map(|at| data_byte(i, at)));
            }
            out
        }

        /// What the client does on one readiness event: receive until the socket is empty.
        fn event(&mut self) {
            self.conn.drained = false;
            loop {
                match receive(
                    &mut self.conn,
                    &self.ops,
                    &mut self.scratch,
                    &mut self.counts,
                ) {
                    Ok(Step::Wait) => return,
                    Ok(Step::Progress) => {}
                    Ok(Step::Reply(out, reply)) => {
                        self.got.push((out, reply, self.conn.payload.clone()))
                    }
                    Err(e) => panic!("receive: {e}"),
                }
            }
        }

        /// Every reply arrived whole, in order, its data in its op's buffer and its bitmap
        /// in the connection's payload.
        fn check(&self, script: &[Sent], what: &str) {
            assert_eq!(self.got.len(), script.len(), "{what}: replies");
            for (i, ((out, reply, payload), s)) in self.got.iter().zip(script).enumerate() {
                assert_eq!(reply.id, i as u64 + 1, "{what}: reply order");
                assert!(matches!(out.target, Target::Part { op, .. } if op == i));
                if let Sent::Read { len, bitmap } = *s {
                    let bits: Vec<u8> = (0..bitmap).map(|at| bitmap_byte(i, at)).collect();
                    assert_eq!(payload, &bits, "{what}: bitmap of reply {i}");
                    let bad = (0..len).find(|&at| self.bufs[i][at] != data_byte(i, at));
                    assert_eq!(bad, None, "{what}: data of reply {i}");
                }
            }
            assert!(matches!(self.conn.recv, Recv::Header), "{what}");
            assert_eq!(self.conn.big_reads, 0, "{what}");
        }
    }

    /// A send that the socket takes only in part leaves the rest, and what is queued after it,
    /// for EPOLLOUT: the socket is full, so sending again at once would only get `EAGAIN`.
    /// Everything still arrives, in order, straight from the op's buffer.
    #[test]
    fn a_full_socket_is_not_sent_to_again() {
        let (ours, mut osd) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        osd.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&ours)
            .set_send_buffer_size(64 << 10)
            .unwrap();
        let mut conn = Conn::new(1, ours.into());
        const LEN: usize = 1 << 20;
        let mut data: Vec<u8> = (0..LEN).map(|at| data_byte(1, at)).collect();
        let ops = vec![one_part_op(OpKind::Write, &mut data)];
        for (off, len) in [(0, LEN - 4096), (LEN - 4096, 4096)] {
            let rw = RwOp {
                inode: 1,
                offset: off as u64,
                len: len as u32,
                flags: 0,
                meta_revision: 0,
                version: 0,
            };
            let data = SendData::Op {
                op: 0,
                off: off as u64,
                len: len as u64,
            };
            conn.push_request(RequestOp::Write(rw), data, Target::Part { op: 0, part: 0 });
        }
        let mut expected = Vec::new();
        for item in &conn.send_q {
            expected.extend_from_slice(&item.packet);
            if let SendData::Op { off, len, .. } = item.data {
                expected.extend_from_slice(&data[off as usize..(off + len) as usize]);
            }
        }
        let (mut counts, mut segs, mut got) = (IoCounts::default(), Vec::new(), Vec::new());
        let mut rounds = 0;
        while !conn.send_q.is_empty() {
            rounds += 1;
            assert!(rounds < 10_000, "the queue does not drain");
            send(&mut conn, &ops, &mut segs, &mut counts).unwrap();
            assert_eq!(counts.sends, rounds, "sendmsg calls in {rounds} rounds");
            // New requests wait for EPOLLOUT too.
            send(&mut conn, &ops, &mut segs, &mut counts).unwrap();
            assert_eq!(counts.sends, rounds, "a send into a socket found full");
            conn.send_blocked = false; // What EPOLLOUT does.
                                       // The OSD takes what arrived, so the socket has room again.
            let mut buf = vec![0u8; 256 << 10];
            loop {
                match std::io::Read::read(&mut osd, &mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert!(rounds > 1, "the socket never filled");
        assert!(got == expected, "the stream differs");
    }

    /// Large replies already in the socket cost one receive each: a large read's bitmap and
    /// data land in place and the packet after it in the receive buffer, in one `readv`; the
    /// last one also takes the small replies behind it, and that short read ends the batch.
    /// Nothing of the large data passes through the receive buffer.
    #[test]
    fn large_read_replies_cost_one_receive_each() {
        const BIG: usize = 4;
        let mut script = vec![
            Sent::Read {
                len: 64 << 10,
                bitmap: 4,
            };
            BIG
        ];
        script.extend([
            Sent::Write,
            Sent::Read {
                len: 512,
                bitmap: 4,
            },
            Sent::Write,
        ]);
        let mut rig = Rig::new(&script);
        rig.osd.write_all(&Rig::stream(&script)).unwrap();
        rig.event();
        rig.check(&script, "one event");
        assert_eq!(rig.counts.copied, 512, "{:?}", rig.counts);
        // One receive for the first header, one per large reply.
        assert!(
            rig.counts.receives <= BIG as u64 + 1,
            "{} receives for {} replies ({BIG} large)",
            rig.counts.receives,
            script.len()
        );
    }

    /// Any split of a stream of large and small replies into two arrivals gives the same
    /// replies, and the large ones' data never passes through the receive buffer (the small
    /// read's data is the only copy).
    #[test]
    fn replies_split_at_any_byte_arrive_whole() {
        let script = [
            Sent::Read {
                len: DIRECT_READ_MIN,
                bitmap: 4,
            },
            Sent::Read {
                len: 4096,
                bitmap: 4,
            },
            Sent::Write,
            Sent::Read {
                len: DIRECT_READ_MIN + 4096,
                bitmap: 8,
            },
            Sent::Write,
            Sent::Write,
        ];
        let stream = Rig::stream(&script);
        for at in 1..stream.len() {
            let mut rig = Rig::new(&script);
            rig.osd.write_all(&stream[..at]).unwrap();
            rig.event();
            rig.osd.write_all(&stream[at..]).unwrap();
            rig.event();
            let what = format!("split at byte {at}");
            rig.check(&script, &what);
            assert_eq!(rig.counts.copied, 4096, "{what}: {:?}", rig.counts);
        }
    }
}
