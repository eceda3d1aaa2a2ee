//! OSD connections: connecting, the SHOW_CONFIG handshake, the send queue and the receive
//! state machine, and dropping a connection.
//!
//! # What this module owns
//! - Non-blocking connect and the handshake with `check_sequencing` (request ids then
//!   increase by exactly one per connection, assigned in [`Client::enqueue`]).
//! - The send queue: requests queued by `dispatch` leave together, one `sendmsg` per
//!   connection per call ([`Client::flush_queued`]), straight from the op buffers.
//! - The receive side: headers and small payloads through a per-connection buffer, large
//!   read data straight into the op's buffer (headers are received alone while large reads
//!   are outstanding, so their data is never copied); a short read ends the batch, since the
//!   socket is then empty and epoll reports what comes next.
//! - The op timeout's probe and give-up (the decisions are `reply_wait`'s), and [`IoCounts`].
//!
//! # What it must never do
//! - Block: every socket is non-blocking.
//! - Size a buffer from an unchecked field: payload lengths come from `Reply::payload_len`.
//! - Lose a part when a connection goes: its outstanding parts wait for the PG's primary of
//!   the moment (SYNC parts restart after the replays).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use rustc_hash::FxHashMap;
use vitastor_protocol::handshake::{RequestFeatures, ShowConfigRequestJson};
use vitastor_protocol::{
    decode_reply, encode_request, ReplyOp, Request, RequestOp, ShowConfigOp, OSD_PACKET_SIZE,
};

use super::reply_wait::{Action, ReplyWait};
use super::{
    Client, Conn, ConnState, OpKind, Outstanding, PartState, Pending, Recv, SendData, SendItem,
    Target, TOKEN_CONN_BASE,
};
use crate::sys::{self, copy_to_iov, sub_iov, Io, IoVec};

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
        self.conns[idx] = Some(Conn {
            osd,
            fd,
            state: ConnState::Connecting,
            since: Instant::now(),
            next_id: 1,
            outstanding: FxHashMap::default(),
            send_q: VecDeque::new(),
            send_off: 0,
            want_write: true,
            recv: Recv::Header,
            rbuf: vec![0; RECV_BUF].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            payload: Vec::new(),
            drained: false,
            big_reads: 0,
            wait: ReplyWait::default(),
        });
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
        let Some(conn) = self.conns[conn_idx].as_mut() else {
            return;
        };
        let request = Request {
            id: conn.next_id,
            op,
        };
        conn.next_id += 1;
        if matches!(op, RequestOp::Read(rw) if rw.len as usize >= DIRECT_READ_MIN) {
            conn.big_reads += 1;
        }
        let mut packet = [0u8; OSD_PACKET_SIZE];
        encode_request(&request, &mut packet);
        conn.send_q.push_back(SendItem { packet, data });
        conn.outstanding
            .insert(request.id, Outstanding { request, target });
        conn.wait.requested(Instant::now);
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
        if flags & libc::EPOLLOUT as u32 != 0 && self.conns[idx].is_some() {
            self.flush(idx);
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
        let mut failed = None;
        let mut segs: Vec<IoVec> = Vec::new();
        while !conn.send_q.is_empty() {
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
                        sub_iov(
                            &ops[*op].iov,
                            off + skip as u64,
                            len - skip as u64,
                            iov_scratch,
                        );
                        segs.extend_from_slice(iov_scratch);
                    }
                }
                skip = 0;
            }
            counts.sends += 1;
            match sys::writev(conn.fd.as_raw_fd(), &segs) {
                Ok(Io::Done(mut n)) => {
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
                }
                Ok(Io::WouldBlock) | Ok(Io::Closed) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let want = !conn.send_q.is_empty() && failed.is_none();
        if want != conn.want_write {
            conn.want_write = want;
            // A failure here leaves the socket watched for reads only; the next flush retries.
            let _ = epoll.modify(conn.fd.as_raw_fd(), conn_idx as u64 + TOKEN_CONN_BASE, want);
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

    /// Reads more bytes into the receive buffer; false when nothing is available now. While
    /// large reads are outstanding it reads no further than the current header.
    pub(super) fn fill(conn: &mut Conn, counts: &mut IoCounts) -> Result<bool, String> {
        if conn.drained {
            return Ok(false);
        }
        if conn.rstart == conn.rend {
            conn.rstart = 0;
            conn.rend = 0;
        } else if conn.rstart > 0 && conn.rbuf.len() - conn.rend < OSD_PACKET_SIZE {
            conn.rbuf.copy_within(conn.rstart..conn.rend, 0);
            conn.rend -= conn.rstart;
            conn.rstart = 0;
        }
        let end = if conn.big_reads > 0 && matches!(conn.recv, Recv::Header) {
            conn.rstart + OSD_PACKET_SIZE
        } else {
            conn.rbuf.len()
        };
        let want = end - conn.rend;
        counts.receives += 1;
        match sys::read(conn.fd.as_raw_fd(), &mut conn.rbuf[conn.rend..end]) {
            Ok(Io::Done(n)) => {
                conn.rend += n;
                conn.drained = n < want;
                Ok(true)
            }
            Ok(Io::WouldBlock) => Ok(false),
            Ok(Io::Closed) => Err("connection closed by the OSD".into()),
            Err(e) => Err(format!("receive failed: {e}")),
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
        match &mut conn.recv {
            Recv::Header => {
                if conn.rend - conn.rstart < OSD_PACKET_SIZE {
                    return Self::fill(conn, counts);
                }
                let mut packet = [0u8; OSD_PACKET_SIZE];
                packet.copy_from_slice(&conn.rbuf[conn.rstart..conn.rstart + OSD_PACKET_SIZE]);
                conn.rstart += OSD_PACKET_SIZE;
                let reply = decode_reply(&packet).map_err(|e| format!("bad reply: {e}"))?;
                let out = conn
                    .outstanding
                    .remove(&reply.id)
                    .ok_or_else(|| format!("reply id {} matches no request", reply.id))?;
                if matches!(out.request.op, RequestOp::Read(rw) if rw.len as usize >= DIRECT_READ_MIN)
                {
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
                };
                Ok(true)
            }
            Recv::Payload {
                out,
                reply,
                bitmap_left,
                data_left,
            } => {
                if *bitmap_left > 0 {
                    let avail = conn.rend - conn.rstart;
                    let big = match out.target {
                        Target::Part { op, part } => {
                            ops[op].parts[part].len as usize >= DIRECT_READ_MIN
                        }
                        _ => false,
                    };
                    if avail == 0 && *data_left > 0 && big {
                        // The bitmap and the data in one call, the data into the op.
                        let Target::Part { op, part } = out.target else {
                            return Err("handshake reply with data".into());
                        };
                        if conn.drained {
                            return Ok(false);
                        }
                        let p = ops[op].parts[part];
                        let at = p.op_offset + (p.len as usize - *data_left) as u64;
                        sub_iov(&ops[op].iov, at, *data_left as u64, iov_scratch);
                        let have = conn.payload.len();
                        conn.payload.resize(have + *bitmap_left, 0);
                        iov_scratch.insert(
                            0,
                            IoVec {
                                iov_base: conn.payload[have..].as_mut_ptr().cast(),
                                iov_len: *bitmap_left,
                            },
                        );
                        counts.receives += 1;
                        let got = sys::readv(conn.fd.as_raw_fd(), iov_scratch);
                        let n = match got {
                            Ok(Io::Done(n)) => n,
                            _ => 0,
                        };
                        let bits = n.min(*bitmap_left);
                        conn.payload.truncate(have + bits);
                        *bitmap_left -= bits;
                        *data_left -= n - bits;
                        conn.drained = n < iov_scratch.iter().map(|v| v.iov_len).sum();
                        return match got {
                            Ok(Io::Done(_)) => Ok(true),
                            Ok(Io::WouldBlock) => Ok(false),
                            Ok(Io::Closed) => Err("connection closed by the OSD".into()),
                            Err(e) => Err(format!("receive failed: {e}")),
                        };
                    }
                    if avail == 0 {
                        return Self::fill(conn, counts);
                    }
                    let n = avail.min(*bitmap_left);
                    conn.payload
                        .extend_from_slice(&conn.rbuf[conn.rstart..conn.rstart + n]);
                    conn.rstart += n;
                    *bitmap_left -= n;
                    return Ok(true);
                }
                if *data_left > 0 {
                    let Target::Part { op, part } = out.target else {
                        return Err("handshake reply with data".into());
                    };
                    let p = ops[op].parts[part];
                    let total = p.len as usize;
                    let at = p.op_offset + (total - *data_left) as u64;
                    let avail = conn.rend - conn.rstart;
                    if avail > 0 {
                        let n = avail.min(*data_left);
                        counts.copied += n as u64;
                        copy_to_iov(
                            &ops[op].iov,
                            at,
                            &conn.rbuf[conn.rstart..conn.rstart + n],
                            iov_scratch,
                        );
                        conn.rstart += n;
                        *data_left -= n;
                        return Ok(true);
                    }
                    // A large part's data always goes straight to the op, its tail included:
                    // reading a tail through the buffer would pull the next reply's data in.
                    if total < DIRECT_READ_MIN {
                        return Self::fill(conn, counts);
                    }
                    if conn.drained {
                        return Ok(false);
                    }
                    sub_iov(&ops[op].iov, at, *data_left as u64, iov_scratch);
                    counts.receives += 1;
                    return match sys::readv(conn.fd.as_raw_fd(), iov_scratch) {
                        Ok(Io::Done(n)) => {
                            conn.drained = n < *data_left;
                            *data_left -= n;
                            Ok(true)
                        }
                        Ok(Io::WouldBlock) => Ok(false),
                        Ok(Io::Closed) => Err("connection closed by the OSD".into()),
                        Err(e) => Err(format!("receive failed: {e}")),
                    };
                }
                let (out, reply) = (*out, *reply);
                conn.recv = Recv::Header;
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
