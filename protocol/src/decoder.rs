//! The streaming frame decoder: turns a connection's byte stream into
//! requests and replies with their payloads, for a poll-driven socket loop.
//!
//! It is a pure state machine with no I/O. The loop either asks it where the
//! next bytes should go ([`FrameDecoder::read_buf`], so a socket read lands
//! in place) and reports how many arrived ([`FrameDecoder::advance`]), or
//! hands it bytes it already read ([`FrameDecoder::feed`]). It buffers at
//! most one packet and one payload, and sizes the payload buffer only from a
//! length that has passed its limit check. After a fatal error it refuses all
//! further input: the connection must be dropped.
//!
//! Payload buffers come from the owner's allocator
//! ([`FrameDecoder::with_buffers`]), so an OSD receives write data straight
//! into the aligned buffer its store writes from, with no copy in between.

use std::ops::DerefMut;

use crate::error::ProtocolError;
use crate::packet::{Header, Packet, OSD_PACKET_SIZE};
use crate::reply::{decode_reply, Reply};
use crate::request::{decode_request, Request};

/// One complete message. Its payload, if any, is [`FrameDecoder::payload`]
/// until the decoder is given more input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A request that passed [`Request::validate`]; its payload is exactly
    /// [`Request::payload_len`] bytes.
    Request(Request),
    /// A request to answer with `-error.errno()` echoing `id` and `opcode`
    /// (see [`crate::encode_error_reply`]). Its payload has been consumed and
    /// the stream is still in sync.
    Rejected {
        /// Request id.
        id: u64,
        /// Raw request opcode, possibly unknown.
        opcode: u64,
        /// Why it was refused; never fatal.
        error: ProtocolError,
    },
    /// A reply with the request it answers, as returned by the lookup.
    Reply {
        /// The reply.
        reply: Reply,
        /// The request it answers.
        request: Request,
    },
}

// Boxing the pending frame would cost an allocation per frame on the hot path;
// one decoder per connection can afford the extra bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum State {
    Header,
    Payload(Frame),
    Failed,
}

/// Splits a byte stream into [`Frame`]s. See the module docs.
///
/// Replies are framed using the request they answer: whenever a reply packet
/// arrives, the decoder calls the caller's lookup with its id, and the
/// caller returns (and usually forgets) the outstanding request with that id.
/// `None` means the stream is broken ([`ProtocolError::UnknownReplyId`]).
///
/// `B` is the payload buffer: `Vec<u8>` by default, or any buffer type the
/// owner allocates ([`FrameDecoder::with_buffers`]).
#[derive(Debug)]
pub struct FrameDecoder<B = Vec<u8>> {
    packet: Packet,
    state: State,
    filled: usize,
    payload: B,
    payload_len: usize,
    alloc: fn(usize) -> B,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

fn zeroed_vec(len: usize) -> Vec<u8> {
    vec![0; len]
}

impl FrameDecoder {
    /// A decoder at the start of a stream, with `Vec<u8>` payloads. Allocates
    /// nothing until the first payload.
    pub fn new() -> FrameDecoder {
        FrameDecoder::with_buffers(zeroed_vec)
    }
}

impl<B: DerefMut<Target = [u8]>> FrameDecoder<B> {
    /// A decoder at the start of a stream whose payloads are received into
    /// buffers from `alloc(len)`, which must return exactly `len` bytes
    /// (`alloc(0)` must not allocate: it stands for "no payload").
    pub fn with_buffers(alloc: fn(usize) -> B) -> FrameDecoder<B> {
        FrameDecoder {
            packet: [0; OSD_PACKET_SIZE],
            state: State::Header,
            filled: 0,
            payload: alloc(0),
            payload_len: 0,
            alloc,
        }
    }

    /// Bytes still needed to finish the current packet or payload; 0 after a
    /// fatal error. A socket loop should read at least this much.
    pub fn wanted(&self) -> usize {
        match self.state {
            State::Header => OSD_PACKET_SIZE - self.filled,
            State::Payload(_) => self.payload_len - self.filled,
            State::Failed => 0,
        }
    }

    /// Whether a fatal error was seen; the connection must then be dropped.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Where the next received bytes go: exactly [`FrameDecoder::wanted`]
    /// bytes long, so a read into it never crosses a frame boundary. Report
    /// how many were written with [`FrameDecoder::advance`].
    pub fn read_buf(&mut self) -> Result<&mut [u8], ProtocolError> {
        match self.state {
            State::Header => Ok(&mut self.packet[self.filled..]),
            State::Payload(_) => Ok(&mut self.payload[self.filled..self.payload_len]),
            State::Failed => Err(ProtocolError::Poisoned),
        }
    }

    /// Records that `n` bytes were written into [`FrameDecoder::read_buf`]
    /// and returns the frame they completed, if any.
    ///
    /// # Panics
    ///
    /// If `n` exceeds [`FrameDecoder::wanted`], which is a bug in the caller,
    /// not something a peer can cause.
    pub fn advance(
        &mut self,
        n: usize,
        outstanding: &mut impl FnMut(u64) -> Option<Request>,
    ) -> Result<Option<Frame>, ProtocolError> {
        if self.is_failed() {
            return Err(ProtocolError::Poisoned);
        }
        assert!(n <= self.wanted(), "advanced past the read buffer");
        self.filled += n;
        if self.wanted() > 0 {
            return Ok(None);
        }
        self.filled = 0;
        match std::mem::replace(&mut self.state, State::Header) {
            State::Header => self.on_packet(outstanding),
            State::Payload(frame) => Ok(Some(frame)),
            State::Failed => Err(ProtocolError::Poisoned),
        }
    }

    /// Copies bytes the caller already received and returns how many were
    /// used and the frame they completed, if any. It stops right after a
    /// frame so that frame's payload can be read before the next one
    /// overwrites it; call again with the rest of `input`.
    pub fn feed(
        &mut self,
        input: &[u8],
        outstanding: &mut impl FnMut(u64) -> Option<Request>,
    ) -> Result<(usize, Option<Frame>), ProtocolError> {
        let mut used = 0;
        loop {
            let buf = self.read_buf()?;
            let n = buf.len().min(input.len() - used);
            buf[..n].copy_from_slice(&input[used..used + n]);
            used += n;
            let frame = self.advance(n, outstanding)?;
            if frame.is_some() || used == input.len() {
                return Ok((used, frame));
            }
        }
    }

    /// The payload of the frame most recently returned; empty while a frame
    /// is still being received.
    pub fn payload(&self) -> &[u8] {
        match self.state {
            State::Header => &self.payload[..self.payload_len],
            State::Payload(_) | State::Failed => &[],
        }
    }

    /// Moves the payload of the frame most recently returned out of the
    /// decoder, so it can outlive the next frame; the decoder allocates a new
    /// buffer for the next payload. Empty while a frame is still being
    /// received.
    pub fn take_payload(&mut self) -> B {
        match self.state {
            // The buffer is exactly the payload (see `on_packet`).
            State::Header if self.payload_len > 0 => {
                self.payload_len = 0;
                std::mem::replace(&mut self.payload, (self.alloc)(0))
            }
            _ => (self.alloc)(0),
        }
    }

    fn on_packet(
        &mut self,
        outstanding: &mut impl FnMut(u64) -> Option<Request>,
    ) -> Result<Option<Frame>, ProtocolError> {
        self.payload_len = 0;
        let parsed = Header::parse(&self.packet).and_then(|header| match header {
            Header::Request { id, opcode } => match decode_request(&self.packet) {
                Ok(request) => {
                    let frame = match request.validate() {
                        Ok(()) => Frame::Request(request),
                        Err(error) if !error.is_fatal() => Frame::Rejected { id, opcode, error },
                        Err(error) => return Err(error),
                    };
                    Ok((request.payload_len(), frame))
                }
                Err(error) if !error.is_fatal() => Ok((0, Frame::Rejected { id, opcode, error })),
                Err(error) => Err(error),
            },
            Header::Reply { id, .. } => {
                let reply = decode_reply(&self.packet)?;
                let request = outstanding(id).ok_or(ProtocolError::UnknownReplyId { id })?;
                Ok((
                    reply.payload_len(&request)?,
                    Frame::Reply { reply, request },
                ))
            }
        });
        let (len, frame) = match parsed {
            Ok(framed) => framed,
            Err(error) => {
                self.state = State::Failed;
                return Err(error);
            }
        };
        if len == 0 {
            return Ok(Some(frame));
        }
        if self.payload.len() != len {
            // Exactly `len`, so a taken payload needs no trimming; a fresh
            // zeroed allocation is lazily zeroed by the allocator, unlike
            // growing in place; `len` has passed its limit check.
            self.payload = (self.alloc)(len);
        }
        self.payload_len = len;
        self.state = State::Payload(frame);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::EINVAL;
    use crate::limits::*;
    use crate::object::OBJ_VER_ID_SIZE;
    use crate::opcode::Opcode;
    use crate::packet::put_u64;
    use crate::reply::{encode_reply, ReplyOp};
    use crate::request::{encode_request, RequestOp, RwOp, SecStabOp};
    use crate::samples;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// The most payload any frame of this kind may announce.
    fn max_payload(frame: &Frame) -> usize {
        let request_max = |opcode| match opcode {
            Opcode::SecWrite | Opcode::SecWriteStable => OSD_RW_MAX + MAX_ATTR_LEN,
            Opcode::SecStabilize | Opcode::SecRollback | Opcode::SecReadBmp => {
                MAX_OBJ_VER_LIST_BYTES
            }
            Opcode::Write => OSD_RW_MAX,
            Opcode::ShowConfig => MAX_SHOW_CONFIG_JSON,
            _ => 0,
        };
        let max = match frame {
            Frame::Request(request) => request_max(request.opcode()),
            Frame::Rejected { opcode, .. } => Opcode::try_from(*opcode).map_or(0, request_max),
            Frame::Reply { reply, .. } => match reply.opcode() {
                Opcode::Read => OSD_RW_MAX + MAX_READ_BITMAP_LEN,
                Opcode::SecRead => OSD_RW_MAX + MAX_ATTR_LEN,
                Opcode::SecList => MAX_SEC_LIST_ENTRIES * OBJ_VER_ID_SIZE as u64,
                Opcode::SecReadBmp => MAX_READ_BMP_REPLY_BYTES,
                Opcode::ShowConfig => MAX_SHOW_CONFIG_JSON,
                _ => 0,
            },
        };
        max as usize
    }

    /// One encoded message, the frame it must decode to, and its payload.
    type Message = (Vec<u8>, Frame, Vec<u8>);

    /// A request of every opcode, each with its payload.
    fn request_messages(first_id: u64) -> Vec<Message> {
        Opcode::ALL
            .into_iter()
            .enumerate()
            .map(|(i, opcode)| {
                let request = samples::request(opcode, first_id + i as u64);
                let mut p = [0u8; OSD_PACKET_SIZE];
                encode_request(&request, &mut p);
                let payload = samples::pattern(request.payload_len());
                let bytes = [&p[..], &payload].concat();
                (bytes, Frame::Request(request), payload)
            })
            .collect()
    }

    /// A reply to every request of `request_messages(first_id)`, with its
    /// payload, and the table of requests they answer.
    fn reply_messages(first_id: u64) -> (Vec<Message>, HashMap<u64, Request>) {
        let mut outstanding = HashMap::new();
        let messages = Opcode::ALL
            .into_iter()
            .enumerate()
            .map(|(i, opcode)| {
                let request = samples::request(opcode, first_id + i as u64);
                let (reply, len) = samples::reply(&request);
                let mut p = [0u8; OSD_PACKET_SIZE];
                encode_reply(&reply, &mut p);
                let payload = samples::pattern(len + 3)[3..].to_vec();
                let bytes = [&p[..], &payload].concat();
                outstanding.insert(request.id, request);
                (bytes, Frame::Reply { reply, request }, payload)
            })
            .collect();
        (messages, outstanding)
    }

    fn stream_of(messages: &[Message]) -> Vec<u8> {
        messages
            .iter()
            .flat_map(|(bytes, _, _)| bytes.iter().copied())
            .collect()
    }

    fn frames_of(messages: &[Message]) -> Vec<(Frame, Vec<u8>)> {
        messages
            .iter()
            .map(|(_, frame, payload)| (frame.clone(), payload.clone()))
            .collect()
    }

    /// Feeds `stream` in chunks of `chunk` bytes and collects every frame
    /// with its payload, stopping at the first error.
    fn feed_all(
        decoder: &mut FrameDecoder,
        stream: &[u8],
        chunk: usize,
        outstanding: &mut impl FnMut(u64) -> Option<Request>,
    ) -> (Vec<(Frame, Vec<u8>)>, Option<ProtocolError>) {
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            let mut rest = piece;
            while !rest.is_empty() {
                match decoder.feed(rest, outstanding) {
                    Ok((used, frame)) => {
                        rest = &rest[used..];
                        if let Some(frame) = frame {
                            frames.push((frame, decoder.payload().to_vec()));
                        }
                    }
                    Err(error) => return (frames, Some(error)),
                }
            }
        }
        (frames, None)
    }

    #[test]
    fn decodes_every_request_in_any_chunking() {
        let messages = request_messages(1);
        let stream = stream_of(&messages);
        for chunk in [1, 7, 128, 129, 4096, stream.len()] {
            let mut decoder = FrameDecoder::new();
            let (frames, error) = feed_all(&mut decoder, &stream, chunk, &mut |_| None);
            assert_eq!(error, None, "chunk {chunk}");
            assert_eq!(frames, frames_of(&messages), "chunk {chunk}");
            assert_eq!(decoder.wanted(), OSD_PACKET_SIZE);
        }
    }

    #[test]
    fn decodes_every_reply_through_read_buf() {
        let (messages, mut outstanding) = reply_messages(100);
        let stream = stream_of(&messages);
        let mut lookup = |id| outstanding.remove(&id);
        let mut decoder = FrameDecoder::new();
        let mut input = &stream[..];
        let mut got = Vec::new();
        while !input.is_empty() {
            // Short reads, as a non-blocking socket would give.
            let buf = decoder.read_buf().unwrap();
            let n = buf.len().min(input.len()).min(1000);
            buf[..n].copy_from_slice(&input[..n]);
            input = &input[n..];
            if let Some(frame) = decoder.advance(n, &mut lookup).unwrap() {
                got.push((frame, decoder.take_payload()));
            }
        }
        assert_eq!(got, frames_of(&messages));
        assert!(outstanding.is_empty(), "every reply consumed its request");
    }

    #[test]
    fn interleaved_requests_and_replies() {
        let requests = request_messages(1);
        let (replies, outstanding) = reply_messages(500);
        let mixed: Vec<Message> = requests
            .into_iter()
            .zip(replies)
            .flat_map(|(q, r)| [q, r])
            .collect();
        let stream = stream_of(&mixed);
        let mut decoder = FrameDecoder::new();
        let mut lookup = |id| outstanding.get(&id).copied();
        let (frames, error) = feed_all(&mut decoder, &stream, 333, &mut lookup);
        assert_eq!(error, None);
        assert_eq!(frames, frames_of(&mixed));
    }

    #[test]
    fn non_fatal_errors_keep_the_stream_in_sync() {
        let mut stream = Vec::new();
        let mut p = [0u8; OSD_PACKET_SIZE];
        // Unknown opcode: taken to have no payload.
        encode_request(&samples::request(Opcode::Ping, 1), &mut p);
        put_u64(&mut p, 16, 42);
        stream.extend_from_slice(&p);
        // Misaligned list: its 30 bytes are still consumed.
        let bad_list = Request {
            id: 2,
            op: RequestOp::SecStabilize(SecStabOp { len: 30, flags: 0 }),
        };
        encode_request(&bad_list, &mut p);
        stream.extend_from_slice(&p);
        stream.extend_from_slice(&[0xee; 30]);
        // Oversized READ: no payload, answered with -EINVAL.
        let big_read = Request {
            id: 3,
            op: RequestOp::Read(RwOp {
                len: (OSD_RW_MAX + 1) as u32,
                ..RwOp::default()
            }),
        };
        encode_request(&big_read, &mut p);
        stream.extend_from_slice(&p);
        let ping = samples::request(Opcode::Ping, 4);
        encode_request(&ping, &mut p);
        stream.extend_from_slice(&p);

        let mut decoder = FrameDecoder::new();
        let (frames, error) = feed_all(&mut decoder, &stream, 50, &mut |_| None);
        assert_eq!(error, None);
        let frames: Vec<Frame> = frames.into_iter().map(|(f, _)| f).collect();
        assert_eq!(frames.len(), 4);
        assert_eq!(
            frames[0],
            Frame::Rejected {
                id: 1,
                opcode: 42,
                error: ProtocolError::UnknownOpcode { opcode: 42 }
            }
        );
        assert_eq!(
            frames[1],
            Frame::Rejected {
                id: 2,
                opcode: 5,
                error: ProtocolError::MisalignedList { len: 30 }
            }
        );
        match &frames[2] {
            Frame::Rejected {
                id: 3,
                opcode: 11,
                error,
            } => {
                assert!(matches!(
                    error,
                    ProtocolError::FieldOutOfRange { field: "len", .. }
                ));
                assert_eq!(error.errno(), EINVAL);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(frames[3], Frame::Request(ping));
    }

    #[test]
    fn fatal_errors_poison_the_decoder() {
        let mut decoder = FrameDecoder::new();
        let err = decoder.feed(&[0x55; 200], &mut |_| None).unwrap_err();
        assert!(matches!(err, ProtocolError::BadMagic { .. }));
        assert!(decoder.is_failed());
        assert_eq!(decoder.wanted(), 0);
        assert_eq!(
            decoder.feed(&[0; 10], &mut |_| None),
            Err(ProtocolError::Poisoned)
        );
        assert_eq!(decoder.read_buf().unwrap_err(), ProtocolError::Poisoned);
        assert_eq!(
            decoder.advance(0, &mut |_| None),
            Err(ProtocolError::Poisoned)
        );
        assert!(decoder.payload().is_empty());
        assert!(decoder.take_payload().is_empty());
    }

    #[test]
    fn oversized_write_fails_before_allocating() {
        let mut decoder = FrameDecoder::new();
        let write = Request {
            id: 1,
            op: RequestOp::Write(RwOp {
                len: u32::MAX,
                ..RwOp::default()
            }),
        };
        let mut p = [0u8; OSD_PACKET_SIZE];
        encode_request(&write, &mut p);
        let err = decoder.feed(&p, &mut |_| None).unwrap_err();
        assert!(err.is_fatal());
        assert_eq!(decoder.payload.capacity(), 0);
    }

    #[test]
    fn replies_need_an_outstanding_request() {
        let (messages, _) = reply_messages(1);
        let mut decoder = FrameDecoder::new();
        let err = decoder
            .feed(&stream_of(&messages), &mut |_| None)
            .unwrap_err();
        assert!(matches!(err, ProtocolError::UnknownReplyId { .. }));
        assert!(decoder.is_failed());
    }

    #[test]
    fn payload_is_only_visible_between_frames() {
        let write = samples::request(Opcode::Write, 1);
        let mut p = [0u8; OSD_PACKET_SIZE];
        encode_request(&write, &mut p);
        let mut decoder = FrameDecoder::new();
        assert_eq!(decoder.feed(&p, &mut |_| None), Ok((OSD_PACKET_SIZE, None)));
        assert_eq!(decoder.wanted(), 8192);
        assert!(decoder.payload().is_empty());
        assert!(decoder.take_payload().is_empty());
        let data = samples::pattern(8192);
        assert_eq!(
            decoder.feed(&data, &mut |_| None),
            Ok((8192, Some(Frame::Request(write))))
        );
        assert_eq!(decoder.payload(), &data[..]);
        assert_eq!(decoder.take_payload(), data);
        assert!(decoder.payload().is_empty());
    }

    /// A payload buffer of the owner's own type, as an OSD's aligned buffers.
    #[derive(Debug)]
    struct Owned(Vec<u8>);

    impl std::ops::Deref for Owned {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            &self.0
        }
    }

    impl std::ops::DerefMut for Owned {
        fn deref_mut(&mut self) -> &mut [u8] {
            &mut self.0
        }
    }

    #[test]
    fn payloads_land_in_the_owners_buffers() {
        let messages = request_messages(1);
        let mut decoder = FrameDecoder::with_buffers(|len| Owned(vec![0; len]));
        let mut got = Vec::new();
        for piece in stream_of(&messages).chunks(1000) {
            let mut rest = piece;
            while !rest.is_empty() {
                let (used, frame) = decoder.feed(rest, &mut |_| None).unwrap();
                rest = &rest[used..];
                if let Some(frame) = frame {
                    let payload: Owned = decoder.take_payload();
                    assert!(decoder.take_payload().is_empty(), "taken once");
                    got.push((frame, payload.0));
                }
            }
        }
        assert_eq!(got, frames_of(&messages));
    }

    #[test]
    #[should_panic(expected = "advanced past the read buffer")]
    fn advancing_too_far_is_a_caller_bug() {
        let mut decoder = FrameDecoder::new();
        let _ = decoder.advance(OSD_PACKET_SIZE + 1, &mut |_| None);
    }

    /// Outstanding requests for the property tests: any id answers to a
    /// sample request whose opcode is picked by the id.
    fn any_outstanding(id: u64) -> Option<Request> {
        let opcode = Opcode::ALL[(id % Opcode::ALL.len() as u64) as usize];
        Some(samples::request(opcode, id))
    }

    /// Feeds `stream` and checks the invariants every input must keep.
    fn check_invariants(stream: &[u8], chunk: usize) {
        let mut decoder = FrameDecoder::new();
        let mut lookup = any_outstanding;
        let mut rest = stream;
        while !rest.is_empty() {
            let step = &rest[..rest.len().min(chunk.max(1))];
            match decoder.feed(step, &mut lookup) {
                Ok((used, frame)) => {
                    assert!(used > 0 && used <= step.len());
                    rest = &rest[used..];
                    if let Some(frame) = frame {
                        let len = decoder.payload().len();
                        assert!(len <= max_payload(&frame), "{frame:?} with {len} bytes");
                        match &frame {
                            Frame::Request(request) => {
                                assert_eq!(len, request.payload_len());
                                request.validate().unwrap();
                            }
                            Frame::Rejected { error, .. } => assert!(!error.is_fatal()),
                            Frame::Reply { reply, request } => {
                                assert_eq!(Ok(len), reply.payload_len(request));
                            }
                        }
                    }
                    assert!(decoder.wanted() <= OSD_PACKET_SIZE.max(max_wanted()));
                }
                Err(error) => {
                    assert!(error.is_fatal());
                    assert!(decoder.is_failed());
                    assert_eq!(
                        decoder.feed(rest, &mut lookup),
                        Err(ProtocolError::Poisoned)
                    );
                    return;
                }
            }
        }
    }

    fn max_wanted() -> usize {
        (MAX_SEC_LIST_ENTRIES * OBJ_VER_ID_SIZE as u64) as usize
    }

    /// Requests and replies that `any_outstanding` frames correctly: reply
    /// ids start at a multiple of the opcode count, so each id picks the
    /// opcode of the request it answers.
    fn valid_messages() -> Vec<Message> {
        let mut messages = request_messages(1);
        messages.extend(reply_messages(19 * 1000).0);
        messages
    }

    #[test]
    fn the_unmutated_stream_decodes_fully() {
        let messages = valid_messages();
        let mut decoder = FrameDecoder::new();
        let (frames, error) = feed_all(
            &mut decoder,
            &stream_of(&messages),
            100,
            &mut any_outstanding,
        );
        assert_eq!(error, None);
        assert_eq!(frames, frames_of(&messages));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            chunk in 1usize..300,
        ) {
            check_invariants(&bytes, chunk);
        }

        #[test]
        fn random_bytes_after_a_valid_header_never_panic(
            opcode in 0u64..22,
            id in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 104),
            reply in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..300,
        ) {
            let mut p = [0u8; OSD_PACKET_SIZE];
            put_u64(&mut p, 0, if reply { crate::REPLY_MAGIC } else { crate::REQUEST_MAGIC });
            put_u64(&mut p, 8, id);
            put_u64(&mut p, 16, opcode);
            p[24..].copy_from_slice(&body);
            let mut stream = p.to_vec();
            stream.extend_from_slice(&tail);
            check_invariants(&stream, chunk);
        }

        #[test]
        fn mutated_valid_streams_never_panic(
            mutations in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
            chunk in 1usize..5000,
        ) {
            let mut stream = stream_of(&valid_messages());
            for (at, byte) in mutations {
                let i = at.index(stream.len());
                stream[i] = byte;
            }
            check_invariants(&stream, chunk);
        }

        #[test]
        fn decoded_requests_reencode_to_themselves(
            opcode in 1u64..20,
            id in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 104),
        ) {
            let mut p = [0u8; OSD_PACKET_SIZE];
            put_u64(&mut p, 0, crate::REQUEST_MAGIC);
            put_u64(&mut p, 8, id);
            put_u64(&mut p, 16, opcode);
            p[24..].copy_from_slice(&body);
            if let Ok(request) = crate::decode_request(&p) {
                let mut again = [0u8; OSD_PACKET_SIZE];
                encode_request(&request, &mut again);
                prop_assert_eq!(crate::decode_request(&again), Ok(request));
            }
        }

        #[test]
        fn decoded_replies_reencode_to_themselves(
            opcode in 1u64..20,
            id in any::<u64>(),
            retval in any::<i64>(),
            body in proptest::collection::vec(any::<u8>(), 96),
        ) {
            let mut p = [0u8; OSD_PACKET_SIZE];
            put_u64(&mut p, 0, crate::REPLY_MAGIC);
            put_u64(&mut p, 8, id);
            put_u64(&mut p, 16, opcode);
            crate::packet::put_i64(&mut p, 24, retval);
            p[32..].copy_from_slice(&body);
            let reply = crate::decode_reply(&p).unwrap();
            let mut again = [0u8; OSD_PACKET_SIZE];
            encode_reply(&reply, &mut again);
            prop_assert_eq!(crate::decode_reply(&again), Ok(reply));
            prop_assert_eq!(reply.op == ReplyOp::empty(reply.opcode()), again[32..].iter().all(|&b| b == 0));
        }
    }
}
