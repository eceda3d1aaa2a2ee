//! One peer connection: a non-blocking socket, the frame decoder that turns its bytes into
//! requests, the queue of replies waiting to be written, and the connection-level rules
//! (request sequencing, back-pressure).
//!
//! Reads stop while the connection pins more than [`CONN_BUFFER_LIMIT`] bytes (replies queued
//! but unsent plus requests still in the blockstore), so a peer that sends faster than it
//! reads, or than the disks keep up, is slowed down by TCP instead of growing our memory.
//! Small replies are coalesced into one buffer; read data is sent from the blockstore's own
//! buffer. Payloads are received into buffers of the owner's type: the OSD's inbound
//! connections use the blockstore's [`AlignedBuf`] (ending on a block boundary, so a
//! SEC_WRITE's data after its short bitmap is aligned too), so write data is written to disk
//! (and sent to the replicas) from the buffer it arrived in. Nothing here blocks.
//!
//! System calls are spent only where they can make progress: a socket read empty is read again
//! only after its poll reports it ([`Connection::mark_readable`]), and a socket found full is
//! written to again only after its poll reports it writable ([`Connection::mark_writable`]).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::TcpStream;
use std::ops::DerefMut;
use std::os::unix::io::AsRawFd;
use std::rc::Rc;

use vitastor_blockstore::AlignedBuf;
use vitastor_protocol::{
    encode_request, Frame, FrameDecoder, ProtocolError, Request, RequestOp, OSD_PACKET_SIZE,
};

use crate::secondary::ReplyMsg;

/// Bytes one connection may pin before we stop reading from it: unsent replies plus the
/// payloads and read lengths of its requests still in progress. 32 MiB keeps a few hundred
/// 128 KiB ops in flight per peer; a single larger op (up to 64 MiB) is still accepted,
/// because reading stops only once the limit is already exceeded.
pub const CONN_BUFFER_LIMIT: usize = 32 << 20;

/// Staging buffer for small reads: packets and small payloads arrive many per `read`, so they
/// are read in bulk and fed to the decoder; larger payloads are read straight into place.
/// The packet after a large payload is read with its end, alone into the staging buffer, and
/// the packet after that frame's large payload the same way (see [`Connection::receive`]).
const STAGE_SIZE: usize = 64 << 10;

/// Most frames taken from one connection per event-loop round, so one busy peer cannot starve
/// the others.
pub(crate) const FRAMES_PER_ROUND: usize = 128;

/// Replies smaller than this are appended to the previous queued buffer instead of starting a
/// new one, so pipelined small replies leave in one `sendmsg`.
const COALESCE_LIMIT: usize = 64 << 10;

/// Most buffers handed to one `sendmsg`.
const MAX_IOV: usize = 64;

/// Kernel send buffer asked for inbound connections ([`Connection::with_buffers`]: clients,
/// and peers' requests to this OSD). A 4 MiB read is 32 replies of 128 KiB from a few OSDs,
/// and a client with 32 of them in flight is sent far more than the kernel's autotuned buffer
/// (at most `tcp_wmem`'s 4 MiB) holds: the socket filled at about every other 4 MiB op, and
/// each time the OSD slept until its POLLOUT, a wake-up of its own. With 16 MiB it fills
/// rarely (POLLOUT polls per read-4M op 0.09–0.66 -> 0.01–0.05, 3 OSDs). The kernel holds at
/// most that much per connection beyond [`CONN_BUFFER_LIMIT`], and only while the peer does
/// not read. Outgoing peer connections ([`Connection::new`]) keep the autotuned buffer: what
/// they carry is write data paced by the replicas, and a large buffer there cut write-4M's
/// POLLOUT polls (0.26 -> 0.08 per op) while its context switches per op went up in some runs
/// and down in others.
const SEND_BUFFER: libc::c_int = 16 << 20;

/// Sets the socket's send buffer to [`SEND_BUFFER`]: beyond `net.core.wmem_max` where the
/// process may (`SO_SNDBUFFORCE`, CAP_NET_ADMIN, as an OSD run by systemd), else up to it.
fn set_send_buffer(stream: &TcpStream) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    let set = |opt: libc::c_int| {
        // SAFETY: setsockopt reads one c_int from a live local.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&SEND_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(libc::SO_SNDBUFFORCE).or_else(|_| set(libc::SO_SNDBUF))
}

/// Why a connection has to be closed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Eof,
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The byte stream cannot be followed any more.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The peer announced `check_sequencing` and skipped or repeated an id.
    #[error("request id {got} breaks the sequence (expected {expected})")]
    Sequence {
        /// The id that was due.
        expected: u64,
        /// The id that arrived.
        got: u64,
    },
}

/// A decoded frame with its payload and the bytes it pins until answered.
#[derive(Debug)]
pub struct Incoming<B = Vec<u8>> {
    /// The frame.
    pub frame: Frame,
    /// Its payload.
    pub payload: B,
    /// Bytes to release with [`Connection::queue_reply`] once it is answered.
    pub cost: usize,
}

enum Chunk {
    Bytes(Vec<u8>),
    Data(AlignedBuf),
    /// Write data sent to several replicas without a copy per replica.
    Shared(Rc<AlignedBuf>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Bytes(b) => b,
            Chunk::Data(d) => d,
            Chunk::Shared(d) => d,
        }
    }
}

/// One peer connection, receiving payloads into `B` buffers. See the module docs.
pub struct Connection<B = Vec<u8>> {
    stream: TcpStream,
    decoder: FrameDecoder<B>,
    stage: Box<[u8]>,
    stage_start: usize,
    stage_end: usize,
    out: VecDeque<Chunk>,
    /// Bytes of the head chunk already sent.
    out_sent: usize,
    out_bytes: usize,
    pinned: usize,
    /// With `check_sequencing`: the id the next request must carry.
    next_id: Option<u64>,
    /// Requests this side sent (outgoing peer connections), by id, until their replies
    /// arrive: the decoder frames a reply with the request it answers.
    outstanding: HashMap<u64, Request>,
    next_request_id: u64,
    /// The last frame's payload was read straight into place: frames of a stream of large
    /// writes are read whole into their own buffers (packet, then payload), because a staged
    /// read of the next packet would take up to [`STAGE_SIZE`] of its payload with it, to be
    /// copied out again.
    large_payloads: bool,
    /// The socket may hold bytes not read yet: set when its poll reports it readable,
    /// cleared once a read finds it empty. A multishot poll reports new data, not data left
    /// behind, so input left in the socket (the frame limit, the buffer limit) is found here.
    unread: bool,
    /// The last `sendmsg` found the socket full: nothing is sent until its poll reports it
    /// writable again ([`Connection::mark_writable`]), so no call is made only to see `EAGAIN`.
    send_blocked: bool,
    /// `read` calls made on the socket.
    reads: u64,
    /// Reads that brought bytes into the staging buffer.
    staged_reads: u64,
    /// `sendmsg` calls made on the socket.
    sends: u64,
}

/// Bytes a request pins while in progress: its payload, and the data its reply will carry.
fn request_cost(request: &Request, payload_len: usize) -> usize {
    let reply_data = match request.op {
        RequestOp::SecRead(rw) => rw.len as usize + rw.attr_len as usize,
        _ => 0,
    };
    payload_len + reply_data
}

fn zeroed_vec(len: usize) -> Vec<u8> {
    vec![0; len]
}

impl Connection {
    /// Wraps an outgoing socket, switching it to non-blocking mode; payloads arrive in `Vec`s.
    pub fn new(stream: TcpStream) -> io::Result<Connection> {
        Connection::wrap(stream, zeroed_vec, false)
    }
}

impl<B: DerefMut<Target = [u8]>> Connection<B> {
    /// Wraps an inbound socket, switching it to non-blocking mode and asking for a
    /// [`SEND_BUFFER`] send buffer; payloads arrive in buffers from `alloc(len)` (exactly
    /// `len` bytes; `alloc(0)` must not allocate).
    pub fn with_buffers(stream: TcpStream, alloc: fn(usize) -> B) -> io::Result<Connection<B>> {
        Connection::wrap(stream, alloc, true)
    }

    fn wrap(stream: TcpStream, alloc: fn(usize) -> B, big_send: bool) -> io::Result<Connection<B>> {
        stream.set_nonblocking(true)?;
        // Replies are small and latency matters more than packet count.
        stream.set_nodelay(true)?;
        if big_send {
            set_send_buffer(&stream)?;
        }
        Ok(Connection {
            stream,
            decoder: FrameDecoder::with_buffers(alloc),
            stage: vec![0u8; STAGE_SIZE].into_boxed_slice(),
            stage_start: 0,
            stage_end: 0,
            out: VecDeque::new(),
            out_sent: 0,
            out_bytes: 0,
            pinned: 0,
            next_id: None,
            outstanding: HashMap::new(),
            next_request_id: 1,
            large_payloads: false,
            unread: false,
            send_blocked: false,
            reads: 0,
            staged_reads: 0,
            sends: 0,
        })
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket, for `poll`.
    pub fn fd(&self) -> i32 {
        self.stream.as_raw_fd()
    }

    /// Over the buffering limit: do not read until replies drain.
    pub fn over_limit(&self) -> bool {
        self.out_bytes + self.pinned > CONN_BUFFER_LIMIT
    }

    /// Input already read from the socket and not yet decoded, which no `poll` will report.
    pub fn has_staged_input(&self) -> bool {
        self.stage_start < self.stage_end
    }

    /// Input that [`Connection::receive`] would take without a new poll event: staged bytes,
    /// or a socket not read empty since its poll last reported it.
    pub fn has_input(&self) -> bool {
        self.unread || self.has_staged_input()
    }

    /// The socket's poll reported it readable (or failed or hung up).
    pub fn mark_readable(&mut self) {
        self.unread = true;
    }

    /// The socket's poll reported it writable (or failed or hung up): [`Connection::flush`]
    /// sends again.
    pub fn mark_writable(&mut self) {
        self.send_blocked = false;
    }

    /// Replies wait to be written.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// Turns on `check_sequencing`: the next request must carry `handshake_id + 1`.
    pub fn start_sequencing(&mut self, handshake_id: u64) {
        self.next_id = Some(handshake_id.wrapping_add(1));
    }

    fn check_sequence(&mut self, id: u64) -> Result<(), ConnError> {
        if let Some(expected) = self.next_id {
            if id != expected {
                return Err(ConnError::Sequence { expected, got: id });
            }
            self.next_id = Some(expected.wrapping_add(1));
        }
        Ok(())
    }

    fn accept_frame(&mut self, frame: Frame, into: &mut Vec<Incoming<B>>) -> Result<(), ConnError> {
        let payload = self.decoder.take_payload();
        self.large_payloads = payload.len() >= STAGE_SIZE;
        let cost = match &frame {
            Frame::Request(request) => {
                self.check_sequence(request.id)?;
                request_cost(request, payload.len())
            }
            Frame::Rejected { id, .. } => {
                self.check_sequence(*id)?;
                0
            }
            // Only requests this side sent are looked up, so a reply answers one of them.
            Frame::Reply { .. } => 0,
        };
        self.pinned += cost;
        into.push(Incoming {
            frame,
            payload,
            cost,
        });
        Ok(())
    }

    /// Reads and decodes what the socket has, appending complete frames to `into`. Stops when
    /// the socket is empty, after [`FRAMES_PER_ROUND`] frames, or once over
    /// [`CONN_BUFFER_LIMIT`]. A staging read that returns less than it asked for has emptied
    /// the socket: the poll re-armed after this call reports what comes next, so no read is
    /// made just to see `EAGAIN`.
    pub fn receive(&mut self, into: &mut Vec<Incoming<B>>) -> Result<(), ConnError> {
        let mut taken = 0;
        let mut drained = false;
        // Replies to our own requests are always read: holding them back cannot slow the
        // peer down and could deadlock two OSDs that both stopped reading.
        while taken < FRAMES_PER_ROUND && (!self.over_limit() || !self.outstanding.is_empty()) {
            if self.has_staged_input() {
                let staged = &self.stage[self.stage_start..self.stage_end];
                let outstanding = &mut self.outstanding;
                let (used, frame) = self
                    .decoder
                    .feed(staged, &mut |id| outstanding.remove(&id))?;
                self.stage_start += used;
                if let Some(frame) = frame {
                    self.accept_frame(frame, into)?;
                    taken += 1;
                }
                continue;
            }
            if drained {
                self.unread = false;
                return Ok(());
            }
            let direct = self.large_payloads || self.decoder.wanted() >= STAGE_SIZE;
            // A large payload is read together with the packet after it, into the staging
            // buffer (one packet at most, so no payload bytes are staged and copied): a stream
            // of large writes costs one read per frame instead of two.
            let with_packet = direct && self.decoder.wanted() >= STAGE_SIZE;
            let asked;
            self.reads += 1;
            let got = if with_packet {
                let fd = self.stream.as_raw_fd();
                let buf = self.decoder.read_buf()?;
                asked = buf.len();
                let packet = &mut self.stage[..OSD_PACKET_SIZE];
                let iov = [
                    libc::iovec {
                        iov_base: buf.as_mut_ptr().cast(),
                        iov_len: asked,
                    },
                    libc::iovec {
                        iov_base: packet.as_mut_ptr().cast(),
                        iov_len: packet.len(),
                    },
                ];
                // SAFETY: both iovecs cover buffers borrowed mutably for this call, which
                // outlive it and do not overlap (the decoder's payload and the staging buffer).
                let r = unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as libc::c_int) };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            } else {
                let buf = if direct {
                    self.decoder.read_buf()?
                } else {
                    &mut self.stage[..]
                };
                asked = buf.len();
                self.stream.read(buf)
            };
            let n = match got {
                Ok(0) => return Err(ConnError::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unread = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            // Bytes past the payload are the next packet's, in the staging buffer.
            let (n, packet_bytes) = (n.min(asked), n.saturating_sub(asked));
            self.staged_reads += u64::from(!direct);
            // Only a short read into the staging buffer shows the socket empty: a payload read
            // straight into place is usually still arriving, and reading on beats a poll round.
            drained = !direct && n < asked;
            if direct {
                self.stage_start = 0;
                self.stage_end = packet_bytes;
                let outstanding = &mut self.outstanding;
                if let Some(frame) = self.decoder.advance(n, &mut |id| outstanding.remove(&id))? {
                    self.accept_frame(frame, into)?;
                    taken += 1;
                }
            } else {
                self.stage_start = 0;
                self.stage_end = n;
            }
        }
        Ok(())
    }

    /// Queues the reply to a request that pinned `cost` bytes, releasing them.
    pub fn queue_reply(&mut self, cost: usize, msg: ReplyMsg) {
        self.pinned -= cost.min(self.pinned);
        self.out_bytes += msg.wire_len();
        let small = msg.payload.len() < COALESCE_LIMIT;
        match self.out.back_mut() {
            Some(Chunk::Bytes(last)) if small && last.len() < COALESCE_LIMIT => {
                last.extend_from_slice(&msg.packet);
                last.extend_from_slice(&msg.payload);
            }
            _ => {
                let mut bytes = Vec::with_capacity(msg.packet.len() + msg.payload.len());
                bytes.extend_from_slice(&msg.packet);
                bytes.extend_from_slice(&msg.payload);
                self.out.push_back(Chunk::Bytes(bytes));
            }
        }
        if let Some(data) = msg.data.filter(|d| !d.is_empty()) {
            self.out.push_back(Chunk::Data(data));
        }
    }

    /// Sends a request (its id is assigned here and returned): the packet, `payload`, then
    /// `data`. Its reply comes out of [`Connection::receive`] as a [`Frame::Reply`].
    pub fn send_request(
        &mut self,
        mut request: Request,
        payload: &[u8],
        data: Option<Rc<AlignedBuf>>,
    ) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        request.id = id;
        let mut bytes = Vec::with_capacity(OSD_PACKET_SIZE + payload.len());
        bytes.resize(OSD_PACKET_SIZE, 0);
        let packet: &mut [u8; OSD_PACKET_SIZE] = (&mut bytes[..OSD_PACKET_SIZE])
            .try_into()
            .expect("sized above");
        encode_request(&request, packet);
        bytes.extend_from_slice(payload);
        self.out_bytes += bytes.len() + data.as_ref().map_or(0, |d| d.len());
        self.out.push_back(Chunk::Bytes(bytes));
        if let Some(data) = data.filter(|d| !d.is_empty()) {
            self.out.push_back(Chunk::Shared(data));
        }
        self.outstanding.insert(id, request);
        id
    }

    /// Requests sent and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Writes queued replies until the socket is full or the queue is empty. Once the socket
    /// was found full, nothing is tried until [`Connection::mark_writable`].
    pub fn flush(&mut self) -> Result<(), ConnError> {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOV];
        while !self.out.is_empty() && !self.send_blocked {
            let mut count = 0;
            let mut asked = 0;
            for (i, chunk) in self.out.iter().take(MAX_IOV).enumerate() {
                let bytes = &chunk.bytes()[if i == 0 { self.out_sent } else { 0 }..];
                iov[i] = libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                };
                count += 1;
                asked += bytes.len();
            }
            // SAFETY: an all-zero msghdr is valid (no address, no control data).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = count as _;
            self.sends += 1;
            // SAFETY: the first `count` iovecs point into chunks of `self.out`, which is not
            // touched until the call returns; MSG_NOSIGNAL turns a reset peer into EPIPE
            // instead of SIGPIPE.
            let r = unsafe { libc::sendmsg(self.fd(), &msg, libc::MSG_NOSIGNAL) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => self.send_blocked = true,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e.into()),
                }
                continue;
            }
            // A non-blocking stream socket takes less than offered only when its buffer is
            // full: another call now would only return EAGAIN.
            self.send_blocked = (r as usize) < asked;
            self.consume(r as usize);
        }
        Ok(())
    }

    fn consume(&mut self, mut n: usize) {
        self.out_bytes -= n;
        while n > 0 {
            let Some(head) = self.out.front() else { break };
            let left = head.bytes().len() - self.out_sent;
            if n < left {
                self.out_sent += n;
                return;
            }
            n -= left;
            self.out_sent = 0;
            self.out.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use vitastor_protocol::{Reply, ReplyOp, RwOp, RwReply};

    fn pair() -> (TcpStream, Connection) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (peer, Connection::new(accepted).unwrap())
    }

    fn write_request(id: u64, len: u32) -> Vec<u8> {
        let request = Request {
            id,
            op: RequestOp::Write(RwOp {
                inode: 1,
                offset: 0,
                len,
                ..RwOp::default()
            }),
        };
        let mut packet = [0u8; OSD_PACKET_SIZE];
        encode_request(&request, &mut packet);
        let mut bytes = packet.to_vec();
        bytes.extend(std::iter::repeat_n(id as u8, len as usize));
        bytes
    }

    /// Requests that arrived together are taken with one `read`: the short read shows the
    /// socket is empty, so no second read is made only to get `EAGAIN`.
    #[test]
    fn pipelined_requests_cost_one_read() {
        let (mut peer, mut conn) = pair();
        let bytes: Vec<u8> = (1..=3).flat_map(|id| write_request(id, 4096)).collect();
        peer.write_all(&bytes).unwrap();
        let mut into = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while into.len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "requests did not arrive"
            );
            conn.receive(&mut into).unwrap();
        }
        for (i, inc) in into.iter().enumerate() {
            assert!(matches!(inc.frame, Frame::Request(Request { id, .. }) if id == i as u64 + 1));
            assert_eq!(inc.payload, vec![i as u8 + 1; 4096]);
        }
        assert_eq!(conn.reads, 1, "reads for 3 pipelined requests");
    }

    /// Write data lands in aligned buffers, small (through the staging buffer) and large
    /// (read straight into place) alike: the store writes from them without a copy.
    #[test]
    fn payloads_arrive_in_aligned_buffers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let mut conn = Connection::with_buffers(accepted, AlignedBuf::for_receive).unwrap();
        let sizes = [4096u32, 128 << 10, 8192];
        let writer = std::thread::spawn(move || {
            for (i, len) in sizes.into_iter().enumerate() {
                peer.write_all(&write_request(i as u64 + 1, len)).unwrap();
            }
            peer
        });
        let mut into: Vec<Incoming<AlignedBuf>> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while into.len() < sizes.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "requests did not arrive"
            );
            conn.receive(&mut into).unwrap();
        }
        drop(writer.join().unwrap());
        for (i, inc) in into.iter().enumerate() {
            assert_eq!(inc.payload.len(), sizes[i] as usize);
            assert!(inc.payload.iter().all(|&b| b == i as u8 + 1), "payload {i}");
            assert_eq!(
                inc.payload.as_ptr() as usize % 4096,
                0,
                "payload {i} is aligned"
            );
        }
    }

    /// A replica's SEC_WRITE payload (the bitmap, then the data) is received so that the data
    /// is aligned: the secondary writes it to disk from there instead of copying it.
    #[test]
    fn sec_write_data_arrives_aligned() {
        use vitastor_protocol::{ObjectId, SecRwOp};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let mut conn = Connection::with_buffers(accepted, AlignedBuf::for_receive).unwrap();
        let len = 128u32 << 10;
        let request = Request {
            id: 1,
            op: RequestOp::SecWrite(SecRwOp {
                oid: ObjectId {
                    inode: 1,
                    stripe: 0,
                },
                version: 1,
                offset: 0,
                len,
                attr_len: 4,
                flags: 0,
            }),
        };
        let mut packet = [0u8; OSD_PACKET_SIZE];
        encode_request(&request, &mut packet);
        let mut bytes = packet.to_vec();
        bytes.extend_from_slice(&[0xff; 4]);
        bytes.extend(std::iter::repeat_n(0x5a, len as usize));
        let writer = std::thread::spawn(move || {
            peer.write_all(&bytes).unwrap();
            peer
        });
        let mut into: Vec<Incoming<AlignedBuf>> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while into.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "request did not arrive"
            );
            conn.receive(&mut into).unwrap();
        }
        drop(writer.join().unwrap());
        let payload = &into[0].payload;
        assert_eq!(payload.len(), 4 + len as usize);
        assert_eq!(&payload[..4], &[0xff; 4]);
        assert_eq!(payload[4..].as_ptr() as usize % 4096, 0, "data is aligned");
        assert!(payload[4..].iter().all(|&b| b == 0x5a));
    }

    /// In a stream of 128 KiB writes, once one large payload has arrived every later packet
    /// is read alone: no payload bytes are staged and copied out again.
    #[test]
    fn large_writes_are_not_staged() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let mut conn = Connection::with_buffers(accepted, AlignedBuf::for_receive).unwrap();
        const N: u64 = 4;
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            peer.write_all(&write_request(1, 128 << 10)).unwrap();
            wait.recv().unwrap();
            for id in 2..=N {
                peer.write_all(&write_request(id, 128 << 10)).unwrap();
            }
            peer
        });
        let mut into: Vec<Incoming<AlignedBuf>> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut staged_first = None;
        while into.len() < N as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "requests did not arrive"
            );
            conn.receive(&mut into).unwrap();
            if !into.is_empty() && staged_first.is_none() {
                staged_first = Some(conn.staged_reads);
                go.send(()).unwrap();
            }
        }
        drop(writer.join().unwrap());
        for (i, inc) in into.iter().enumerate() {
            assert!(inc.payload.iter().all(|&b| b == i as u8 + 1), "payload {i}");
        }
        assert_eq!(
            Some(conn.staged_reads),
            staged_first,
            "reads into the staging buffer after the first large write"
        );
    }

    /// Waits (without a time limit that decides anything) until `fd` reports `events`.
    fn wait_for(fd: i32, events: i16) {
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: poll reads and writes one pollfd, which outlives the call.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
    }

    /// A stream of large writes already in the socket costs one read per frame: each payload
    /// is read together with the packet after it (which alone lands in the staging buffer).
    #[test]
    fn a_stream_of_large_writes_costs_one_read_per_frame() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // Room for the whole stream, so that all of it is there before the first read.
        socket2::SockRef::from(&accepted)
            .set_recv_buffer_size(2 << 20)
            .unwrap();
        socket2::SockRef::from(&peer)
            .set_send_buffer_size(2 << 20)
            .unwrap();
        let mut conn = Connection::with_buffers(accepted, AlignedBuf::for_receive).unwrap();
        const N: u64 = 4;
        let bytes: Vec<u8> = (1..=N)
            .flat_map(|id| write_request(id, 128 << 10))
            .collect();
        peer.write_all(&bytes).unwrap();
        let mut into: Vec<Incoming<AlignedBuf>> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while into.len() < N as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "requests did not arrive"
            );
            conn.receive(&mut into).unwrap();
        }
        for (i, inc) in into.iter().enumerate() {
            assert!(inc.payload.iter().all(|&b| b == i as u8 + 1), "payload {i}");
        }
        // One staged read (the first packet and the start of its payload), one per payload,
        // one that finds the socket empty.
        assert!(
            conn.reads <= N + 2,
            "{} reads for {N} large writes",
            conn.reads
        );
        assert_eq!(conn.staged_reads, 1, "payload bytes staged");
    }

    /// The 32 replies of a 4 MiB read (128 KiB each) fit in an inbound socket at once, even
    /// before the client reads any: one `sendmsg`, and no POLLOUT to wait for.
    #[test]
    fn a_4m_reads_replies_leave_in_one_send() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let mut conn = Connection::with_buffers(accepted, AlignedBuf::for_receive).unwrap();
        for id in 0..32 {
            let reply = Reply {
                id,
                retval: 128 << 10,
                op: ReplyOp::Read(RwReply::default()),
            };
            let mut msg = ReplyMsg::new(&reply, Vec::new());
            msg.data = Some(AlignedBuf::for_receive(128 << 10));
            conn.queue_reply(0, msg);
        }
        conn.flush().unwrap();
        assert!(!conn.wants_write(), "4 MiB of replies left in the socket");
        assert_eq!(conn.sends, 1);
    }

    /// A socket found full is not written to again until its poll reports it writable: no
    /// `sendmsg` is made only to get `EAGAIN`, and everything arrives once it drains.
    #[test]
    fn a_full_socket_is_not_written_to_until_writable() {
        let (mut peer, mut conn) = pair();
        let len = 32 << 20;
        let mut data = AlignedBuf::for_receive(len);
        data.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i % 251) as u8);
        let data = Rc::new(data);
        let request = Request {
            id: 0,
            op: RequestOp::Ping,
        };
        conn.send_request(request, &[], Some(data.clone()));
        conn.flush().unwrap();
        assert!(conn.wants_write(), "32 MiB fit in the socket at once");
        assert_eq!(conn.sends, 1, "a partial send shows the socket full");
        conn.flush().unwrap();
        assert_eq!(conn.sends, 1, "no send before the socket is writable");
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; OSD_PACKET_SIZE + len];
            peer.read_exact(&mut got).unwrap();
            got
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while conn.wants_write() {
            assert!(std::time::Instant::now() < deadline, "never drained");
            wait_for(conn.fd(), libc::POLLOUT);
            conn.mark_writable();
            conn.flush().unwrap();
        }
        let got = reader.join().unwrap();
        assert!(
            got[OSD_PACKET_SIZE..] == data[..],
            "the data arrived intact"
        );
    }
}
