//! One NBD connection's protocol state: the fixed newstyle handshake, then request framing.
//!
//! # What this module owns
//! - The handshake: client flags, options (`NBD_OPT_GO`, `NBD_OPT_INFO`, `NBD_OPT_LIST`,
//!   `NBD_OPT_EXPORT_NAME`, `NBD_OPT_ABORT`; anything else gets `NBD_REP_ERR_UNSUP`), the one
//!   export and its name (the image name; the empty name means it too).
//! - Framing in transmission: request headers, write payloads (read straight into the
//!   request's buffer when the server asks for [`Session::payload_space`]), and oversized
//!   writes, whose payload is skipped without being stored so they can be refused with an
//!   error reply.
//!
//! # What it must never do
//! - Touch a socket or the cluster: it consumes bytes and yields [`Event`]s; the server does
//!   the I/O. That keeps every malformed-input path testable in memory.
//! - Allocate from an unchecked length: option data is capped by [`MAX_OPTION_LEN`], write
//!   payloads by [`MAX_PAYLOAD`].

use crate::bufpool::BufPool;
use crate::proto::*;

/// What the server must do after [`Session::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Send these bytes (handshake replies).
    Send(Vec<u8>),
    /// Send these bytes, then close (`NBD_OPT_ABORT`).
    SendAndClose(Vec<u8>),
    /// A transmission request; `payload` holds a write's data (empty otherwise).
    Request {
        /// The header.
        req: Request,
        /// Write data.
        payload: Vec<u8>,
    },
    /// A write too large to accept; its payload was skipped. Reply with `error`.
    Rejected {
        /// The request's cookie.
        cookie: u64,
        /// NBD error to reply with.
        error: u32,
    },
    /// The stream is unusable (bad magic, unknown client flags, oversized option, unknown
    /// export for `NBD_OPT_EXPORT_NAME`, which has no error reply): close the connection.
    Close(&'static str),
}

#[derive(Debug)]
enum State {
    ClientFlags,
    Options,
    Transmission,
    Payload {
        req: Request,
        buf: Vec<u8>,
        filled: usize,
    },
    Discard {
        cookie: u64,
        remaining: u64,
    },
    Closed,
}

/// A connection's protocol state.
#[derive(Debug)]
pub struct Session {
    desc: ExportDesc,
    state: State,
    no_zeroes: bool,
    pool: BufPool,
}

impl Session {
    /// A connection that starts with the handshake; returns the greeting to send first.
    pub fn handshake(desc: ExportDesc) -> (Session, Vec<u8>) {
        let s = Session {
            desc,
            state: State::ClientFlags,
            no_zeroes: false,
            pool: BufPool::new(),
        };
        (s, greeting())
    }

    /// A connection already in transmission (the kernel's socket, configured by ioctls).
    pub fn transmission(desc: ExportDesc) -> Session {
        Session {
            desc,
            state: State::Transmission,
            no_zeroes: true,
            pool: BufPool::new(),
        }
    }

    /// The export as announced to this connection.
    pub fn export(&self) -> &ExportDesc {
        &self.desc
    }

    /// The connection's recycled buffers: write payloads come from it, and the server takes
    /// read buffers from it and gives every data buffer back once it is done with it.
    pub fn pool(&mut self) -> &mut BufPool {
        &mut self.pool
    }

    /// True once the handshake is over (requests may follow).
    #[cfg(test)]
    pub fn in_transmission(&self) -> bool {
        matches!(
            self.state,
            State::Transmission | State::Payload { .. } | State::Discard { .. }
        )
    }

    /// Stops parsing (after `NBD_CMD_DISC` or a close): later bytes are ignored.
    pub fn close(&mut self) {
        self.state = State::Closed;
    }

    /// Consumes a prefix of `input`; returns how many bytes were used and the event they
    /// completed, if any. Call again with the rest until it returns `(0, None)`.
    pub fn step(&mut self, input: &[u8]) -> (usize, Option<Event>) {
        match &mut self.state {
            State::Closed => (0, None),
            State::ClientFlags => {
                if input.len() < 4 {
                    return (0, None);
                }
                let flags = be32(input);
                if flags & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0 {
                    self.state = State::Closed;
                    return (4, Some(Event::Close("unknown client flags")));
                }
                self.no_zeroes = flags & CLIENT_NO_ZEROES != 0;
                self.state = State::Options;
                (4, None)
            }
            State::Options => {
                if input.len() < OPTION_HEADER_LEN {
                    return (0, None);
                }
                if be64(input) != IHAVEOPT {
                    self.state = State::Closed;
                    return (OPTION_HEADER_LEN, Some(Event::Close("bad option magic")));
                }
                let option = be32(&input[8..]);
                let len = be32(&input[12..]);
                if len > MAX_OPTION_LEN {
                    self.state = State::Closed;
                    return (
                        OPTION_HEADER_LEN,
                        Some(Event::Close("option data too long")),
                    );
                }
                let total = OPTION_HEADER_LEN + len as usize;
                if input.len() < total {
                    return (0, None);
                }
                let ev = self.option(option, &input[OPTION_HEADER_LEN..total]);
                (total, Some(ev))
            }
            State::Transmission => {
                let Some(header) = input.first_chunk::<REQUEST_LEN>() else {
                    return (0, None);
                };
                let Some(req) = Request::parse(header) else {
                    self.state = State::Closed;
                    return (REQUEST_LEN, Some(Event::Close("bad request magic")));
                };
                if req.kind != CMD_WRITE || req.len == 0 {
                    let ev = Event::Request {
                        req,
                        payload: Vec::new(),
                    };
                    return (REQUEST_LEN, Some(ev));
                }
                if req.len > MAX_PAYLOAD {
                    self.state = State::Discard {
                        cookie: req.cookie,
                        remaining: req.len.into(),
                    };
                } else {
                    self.state = State::Payload {
                        req,
                        buf: self.pool.take(req.len as usize),
                        filled: 0,
                    };
                }
                (REQUEST_LEN, None)
            }
            State::Payload { buf, filled, .. } => {
                let n = (buf.len() - *filled).min(input.len());
                buf[*filled..*filled + n].copy_from_slice(&input[..n]);
                let ev = self.payload_filled(n);
                (n, ev)
            }
            State::Discard { cookie, remaining } => {
                let n = (*remaining).min(input.len() as u64);
                *remaining -= n;
                if *remaining > 0 {
                    return (n as usize, None);
                }
                let cookie = *cookie;
                self.state = State::Transmission;
                (
                    n as usize,
                    Some(Event::Rejected {
                        cookie,
                        error: EINVAL,
                    }),
                )
            }
        }
    }

    /// While a write payload is being received: its unfilled part, so the server can read
    /// the socket straight into it (saves a copy of every written byte).
    pub fn payload_space(&mut self) -> Option<&mut [u8]> {
        match &mut self.state {
            State::Payload { buf, filled, .. } => Some(&mut buf[*filled..]),
            _ => None,
        }
    }

    /// Records `n` bytes put into [`Session::payload_space`]; yields the request once the
    /// payload is complete.
    pub fn payload_filled(&mut self, n: usize) -> Option<Event> {
        let State::Payload { buf, filled, .. } = &mut self.state else {
            return None;
        };
        *filled += n;
        if *filled < buf.len() {
            return None;
        }
        match std::mem::replace(&mut self.state, State::Transmission) {
            State::Payload { req, buf, .. } => Some(Event::Request { req, payload: buf }),
            _ => unreachable!("state checked above"),
        }
    }

    fn name_matches(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.desc.name.as_bytes()
    }

    fn option(&mut self, option: u32, data: &[u8]) -> Event {
        let mut out = Vec::new();
        match option {
            OPT_EXPORT_NAME => {
                if !self.name_matches(data) {
                    self.state = State::Closed;
                    return Event::Close("unknown export name (NBD_OPT_EXPORT_NAME)");
                }
                self.state = State::Transmission;
                Event::Send(export_name_reply(&self.desc, self.no_zeroes))
            }
            OPT_ABORT => {
                option_reply(&mut out, option, REP_ACK, &[]);
                self.state = State::Closed;
                Event::SendAndClose(out)
            }
            OPT_LIST => {
                if data.is_empty() {
                    let mut d = Vec::with_capacity(4 + self.desc.name.len());
                    d.extend_from_slice(&(self.desc.name.len() as u32).to_be_bytes());
                    d.extend_from_slice(self.desc.name.as_bytes());
                    option_reply(&mut out, option, REP_SERVER, &d);
                    option_reply(&mut out, option, REP_ACK, &[]);
                } else {
                    option_reply(&mut out, option, REP_ERR_INVALID, &[]);
                }
                Event::Send(out)
            }
            OPT_INFO | OPT_GO => {
                match parse_info_request(data) {
                    None => option_reply(&mut out, option, REP_ERR_INVALID, &[]),
                    Some((name, _)) if !self.name_matches(name) => {
                        option_reply(&mut out, option, REP_ERR_UNKNOWN, &[])
                    }
                    Some((_, infos)) => {
                        option_reply(&mut out, option, REP_INFO, &info_export(&self.desc));
                        // Sent whether asked for or not: clients must know the 4 KiB minimum.
                        option_reply(&mut out, option, REP_INFO, &info_block_size(&self.desc));
                        if infos.contains(&INFO_NAME) {
                            option_reply(&mut out, option, REP_INFO, &info_name(&self.desc));
                        }
                        option_reply(&mut out, option, REP_ACK, &[]);
                        if option == OPT_GO {
                            self.state = State::Transmission;
                        }
                    }
                }
                Event::Send(out)
            }
            _ => {
                option_reply(&mut out, option, REP_ERR_UNSUP, &[]);
                Event::Send(out)
            }
        }
    }
}

/// Parses `NBD_OPT_INFO`/`NBD_OPT_GO` data: name length, name, count, info types. `None` if
/// the lengths do not add up exactly.
fn parse_info_request(data: &[u8]) -> Option<(&[u8], Vec<u16>)> {
    let name_len = be32(data.get(..4)?) as usize;
    let name = data.get(4..4usize.checked_add(name_len)?)?;
    let rest = &data[4 + name_len..];
    let count = be16(rest.get(..2)?) as usize;
    let list = &rest[2..];
    if list.len() != count * 2 {
        return None;
    }
    Some((name, list.chunks_exact(2).map(be16).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc() -> ExportDesc {
        ExportDesc {
            name: "img".into(),
            size: 1 << 20,
            flags: TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH,
            min_block: 4096,
            preferred_block: 131072,
        }
    }

    fn option(code: u32, data: &[u8]) -> Vec<u8> {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&code.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        b
    }

    fn info_data(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            d.extend_from_slice(&i.to_be_bytes());
        }
        d
    }

    /// Feeds all of `input` and collects the events.
    fn feed(s: &mut Session, mut input: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let (n, ev) = s.step(input);
            input = &input[n..];
            match ev {
                Some(e) => out.push(e),
                None if n == 0 => return out,
                None => {}
            }
        }
    }

    /// Option replies in `bytes` as (option, type, data length).
    fn replies(mut bytes: &[u8]) -> Vec<(u32, u32, usize)> {
        let mut out = Vec::new();
        while bytes.len() >= 20 {
            assert_eq!(be64(bytes), OPT_REPLY_MAGIC);
            let len = be32(&bytes[16..]) as usize;
            out.push((be32(&bytes[8..]), be32(&bytes[12..]), len));
            bytes = &bytes[20 + len..];
        }
        assert!(bytes.is_empty());
        out
    }

    fn negotiated() -> Session {
        let (mut s, _) = Session::handshake(desc());
        let mut input = 3u32.to_be_bytes().to_vec();
        input.extend(option(OPT_GO, &info_data("img", &[])));
        feed(&mut s, &input);
        assert!(s.in_transmission());
        s
    }

    #[test]
    fn go_list_info_unknown_and_unsupported() {
        let mut input = 3u32.to_be_bytes().to_vec();
        input.extend(option(OPT_LIST, &[]));
        input.extend(option(OPT_INFO, &info_data("nope", &[])));
        input.extend(option(OPT_INFO, &[0, 0, 0, 9, 1]));
        input.extend(option(8, &[])); // NBD_OPT_STRUCTURED_REPLY: not supported
        input.extend(option(OPT_INFO, &info_data("img", &[INFO_NAME])));
        input.extend(option(OPT_GO, &info_data("", &[INFO_BLOCK_SIZE])));
        let (mut s, greet) = Session::handshake(desc());
        assert_eq!(greet.len(), 18);
        let events = feed(&mut s, &input);
        let sends: Vec<Vec<(u32, u32, usize)>> = events
            .iter()
            .map(|e| match e {
                Event::Send(b) => replies(b),
                e => panic!("unexpected {e:?}"),
            })
            .collect();
        assert_eq!(
            sends,
            vec![
                vec![(OPT_LIST, REP_SERVER, 7), (OPT_LIST, REP_ACK, 0)],
                vec![(OPT_INFO, REP_ERR_UNKNOWN, 0)],
                vec![(OPT_INFO, REP_ERR_INVALID, 0)],
                vec![(8, REP_ERR_UNSUP, 0)],
                vec![
                    (OPT_INFO, REP_INFO, 12),
                    (OPT_INFO, REP_INFO, 14),
                    (OPT_INFO, REP_INFO, 5),
                    (OPT_INFO, REP_ACK, 0)
                ],
                vec![
                    (OPT_GO, REP_INFO, 12),
                    (OPT_GO, REP_INFO, 14),
                    (OPT_GO, REP_ACK, 0)
                ],
            ]
        );
        assert!(s.in_transmission());
    }

    #[test]
    fn byte_by_byte_handshake_matches() {
        let (mut s, _) = Session::handshake(desc());
        let mut input = 1u32.to_be_bytes().to_vec();
        input.extend(option(OPT_GO, &info_data("img", &[])));
        let mut buf = Vec::new();
        let mut events = Vec::new();
        for b in input {
            buf.push(b);
            let (n, ev) = s.step(&buf);
            buf.drain(..n);
            events.extend(ev);
        }
        assert_eq!(events.len(), 1);
        assert!(s.in_transmission());
    }

    #[test]
    fn export_name_and_abort() {
        let (mut s, _) = Session::handshake(desc());
        let mut input = 1u32.to_be_bytes().to_vec();
        input.extend(option(OPT_EXPORT_NAME, b"img"));
        assert_eq!(
            feed(&mut s, &input),
            vec![Event::Send(export_name_reply(&desc(), false))]
        );
        assert!(s.in_transmission());

        let (mut s, _) = Session::handshake(desc());
        let mut input = 3u32.to_be_bytes().to_vec();
        input.extend(option(OPT_EXPORT_NAME, b"other"));
        assert!(matches!(feed(&mut s, &input)[..], [Event::Close(_)]));

        let (mut s, _) = Session::handshake(desc());
        let mut input = 3u32.to_be_bytes().to_vec();
        input.extend(option(OPT_ABORT, &[]));
        assert!(matches!(feed(&mut s, &input)[..], [Event::SendAndClose(_)]));
    }

    #[test]
    fn malformed_handshakes_close() {
        for input in [
            vec![0, 0, 0, 0x80],                       // unknown client flag
            [&[0, 0, 0, 1][..], &[0xff; 16]].concat(), // bad option magic
            [
                &[0, 0, 0, 1][..],
                &IHAVEOPT.to_be_bytes(),
                &OPT_GO.to_be_bytes(),
                &u32::MAX.to_be_bytes(),
            ]
            .concat(), // huge option length: refused before any allocation
        ] {
            let (mut s, _) = Session::handshake(desc());
            assert!(
                matches!(feed(&mut s, &input)[..], [Event::Close(_)]),
                "{input:?}"
            );
        }
    }

    #[test]
    fn requests_payloads_and_oversized_writes() {
        let mut s = negotiated();
        let w = Request {
            flags: 0,
            kind: CMD_WRITE,
            cookie: 1,
            offset: 0,
            len: 8,
        };
        let r = Request {
            kind: CMD_READ,
            cookie: 2,
            len: 4096,
            ..w
        };
        let big = Request {
            cookie: 3,
            len: MAX_PAYLOAD + 1,
            ..w
        };
        let mut input = w.encode().to_vec();
        input.extend_from_slice(b"abcdefgh");
        input.extend_from_slice(&r.encode());
        input.extend_from_slice(&big.encode());
        let events = feed(&mut s, &input);
        assert_eq!(
            events,
            vec![
                Event::Request {
                    req: w,
                    payload: b"abcdefgh".to_vec()
                },
                Event::Request {
                    req: r,
                    payload: vec![]
                },
            ]
        );
        // The oversized payload is skipped in pieces, never stored.
        let chunk = vec![0u8; 1 << 20];
        let mut left = big.len as usize;
        let mut events = Vec::new();
        while left > 0 {
            let n = left.min(chunk.len());
            events.extend(feed(&mut s, &chunk[..n]));
            left -= n;
        }
        assert_eq!(
            events,
            vec![Event::Rejected {
                cookie: 3,
                error: EINVAL
            }]
        );
        // Direct payload reads.
        feed(&mut s, &w.encode());
        let space = s.payload_space().expect("payload expected");
        assert_eq!(space.len(), 8);
        space.copy_from_slice(b"12345678");
        assert_eq!(
            s.payload_filled(8),
            Some(Event::Request {
                req: w,
                payload: b"12345678".to_vec()
            })
        );
        // Garbage closes.
        assert!(matches!(feed(&mut s, &[0xAA; 28])[..], [Event::Close(_)]));
        assert_eq!(s.step(&[0; 100]), (0, None));
    }
}
