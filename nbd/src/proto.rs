//! NBD wire format: constants, the request header, and byte encoders for every message the
//! server sends (fixed newstyle handshake, simple replies).
//!
//! # What this module owns
//! - The numbers of the NBD protocol document (magics, options, reply types, flags, command
//!   types, errors) and the big-endian layout of each message.
//! - The limits the server advertises and enforces ([`MAX_PAYLOAD`], [`MAX_OPTION_LEN`]).
//!
//! # What it must never do
//! - I/O of any kind: it only turns values into bytes and bytes into values, so the
//!   handshake and framing can be tested without sockets.
//! - Trust a length from the wire: callers check lengths against the limits here before
//!   sizing anything.

/// "NBDMAGIC": first 8 bytes of the greeting.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": second 8 bytes of the greeting, and the prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flags (server → client).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// The server may omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags (client → server).
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
/// The client does not want the 124 zero bytes.
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// Option codes.
pub const OPT_EXPORT_NAME: u32 = 1;
/// Ends the negotiation without transmission.
pub const OPT_ABORT: u32 = 2;
/// Lists the exports.
pub const OPT_LIST: u32 = 3;
/// Describes an export without entering transmission.
pub const OPT_INFO: u32 = 6;
/// Describes an export and enters transmission.
pub const OPT_GO: u32 = 7;

/// Option reply types.
pub const REP_ACK: u32 = 1;
/// One export name (reply to `NBD_OPT_LIST`).
pub const REP_SERVER: u32 = 2;
/// One piece of export information (reply to `NBD_OPT_INFO`/`NBD_OPT_GO`).
pub const REP_INFO: u32 = 3;
/// The option is not supported.
pub const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
/// The option's data is malformed.
pub const REP_ERR_INVALID: u32 = (1 << 31) | 3;
/// No export of that name.
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) | 6;

/// Information types in `NBD_REP_INFO`.
pub const INFO_EXPORT: u16 = 0;
/// The export's name.
pub const INFO_NAME: u16 = 1;
/// Minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
/// The export refuses writes.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// `NBD_CMD_FLUSH` is supported.
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// `NBD_CMD_FLAG_FUA` is supported.
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
/// `NBD_CMD_TRIM` is supported.
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
/// `NBD_CMD_WRITE_ZEROES` is supported.
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// A FLUSH on one connection covers writes completed on every connection.
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Command types.
pub const CMD_READ: u16 = 0;
/// Write the payload that follows the header.
pub const CMD_WRITE: u16 = 1;
/// Disconnect after the commands in flight.
pub const CMD_DISC: u16 = 2;
/// Make completed writes durable.
pub const CMD_FLUSH: u16 = 3;
/// Discard a range.
pub const CMD_TRIM: u16 = 4;
/// Zero a range.
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flag: the write must be durable before the reply.
pub const CMD_FLAG_FUA: u16 = 1 << 0;

/// NBD error values (Linux numbering, as the protocol defines them).
pub const EPERM: u32 = 1;
/// I/O error.
pub const EIO: u32 = 5;
/// Invalid request (bad range for a read, misaligned write, unknown command).
pub const EINVAL: u32 = 22;
/// A write-type command reaches past the end of the export.
pub const ENOSPC: u32 = 28;
/// The server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// Largest READ/WRITE payload the server accepts (and advertises as the maximum block size):
/// every request buffer is at most this big, whatever the length field says.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Largest option data accepted during the handshake; export names are at most 4096 bytes,
/// so anything bigger is malformed and ends the connection.
pub const MAX_OPTION_LEN: u32 = 64 << 10;
/// Length of a request header.
pub const REQUEST_LEN: usize = 28;
/// Length of an option header (magic, option, length).
pub const OPTION_HEADER_LEN: usize = 16;
/// Length of a simple reply header.
pub const REPLY_LEN: usize = 16;

/// A transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// `NBD_CMD_FLAG_*`.
    pub flags: u16,
    /// `NBD_CMD_*`.
    pub kind: u16,
    /// Opaque value echoed in the reply.
    pub cookie: u64,
    /// Byte offset in the export.
    pub offset: u64,
    /// Byte length (payload length for writes).
    pub len: u32,
}

impl Request {
    /// Parses a header; `None` when the magic is wrong (the stream is out of sync and the
    /// connection must be closed).
    pub fn parse(b: &[u8; REQUEST_LEN]) -> Option<Request> {
        if be32(&b[0..4]) != REQUEST_MAGIC {
            return None;
        }
        Some(Request {
            flags: be16(&b[4..6]),
            kind: be16(&b[6..8]),
            cookie: be64(&b[8..16]),
            offset: be64(&b[16..24]),
            len: be32(&b[24..28]),
        })
    }

    /// Encodes a header (tests play the client).
    #[cfg(test)]
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// What a server announces about its one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportDesc {
    /// Export name (the image name).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// Minimum block size: the pool's bitmap granularity.
    pub min_block: u32,
    /// Preferred block size: the pool's object size.
    pub preferred_block: u32,
}

/// Big-endian u16 from the first two bytes.
pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Big-endian u32 from the first four bytes.
pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Big-endian u64 from the first eight bytes.
pub fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The server's greeting.
pub fn greeting() -> Vec<u8> {
    let mut b = Vec::with_capacity(18);
    b.extend_from_slice(&NBD_MAGIC.to_be_bytes());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// Appends one option reply.
pub fn option_reply(out: &mut Vec<u8>, option: u32, reply: u32, data: &[u8]) {
    out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    // Data is always small here (names are capped by MAX_OPTION_LEN).
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub fn info_export(desc: &ExportDesc) -> Vec<u8> {
    let mut d = Vec::with_capacity(12);
    d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    d.extend_from_slice(&desc.size.to_be_bytes());
    d.extend_from_slice(&desc.flags.to_be_bytes());
    d
}

/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred, maximum.
pub fn info_block_size(desc: &ExportDesc) -> Vec<u8> {
    let mut d = Vec::with_capacity(14);
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    d.extend_from_slice(&desc.min_block.to_be_bytes());
    d.extend_from_slice(&desc.preferred_block.to_be_bytes());
    d.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
    d
}

/// `NBD_INFO_NAME`.
pub fn info_name(desc: &ExportDesc) -> Vec<u8> {
    let mut d = Vec::with_capacity(2 + desc.name.len());
    d.extend_from_slice(&INFO_NAME.to_be_bytes());
    d.extend_from_slice(desc.name.as_bytes());
    d
}

/// Reply to `NBD_OPT_EXPORT_NAME`: size, flags, and 124 zeroes unless the client asked for
/// none.
pub fn export_name_reply(desc: &ExportDesc, no_zeroes: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(134);
    b.extend_from_slice(&desc.size.to_be_bytes());
    b.extend_from_slice(&desc.flags.to_be_bytes());
    if !no_zeroes {
        b.extend_from_slice(&[0u8; 124]);
    }
    b
}

/// A simple reply header (data, for a successful read, follows separately); a fixed array
/// so a reply costs no allocation.
pub fn simple_reply(cookie: u64, error: u32) -> [u8; REPLY_LEN] {
    let mut b = [0u8; REPLY_LEN];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..].copy_from_slice(&cookie.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_bad_magic() {
        let r = Request {
            flags: CMD_FLAG_FUA,
            kind: CMD_WRITE,
            cookie: 0x1122_3344_5566_7788,
            offset: 1 << 40,
            len: 4096,
        };
        let mut b = r.encode();
        assert_eq!(Request::parse(&b), Some(r));
        b[0] ^= 1;
        assert_eq!(Request::parse(&b), None);
    }

    #[test]
    fn fixed_layouts() {
        assert_eq!(&greeting()[..8], b"NBDMAGIC");
        assert_eq!(&greeting()[8..16], b"IHAVEOPT");
        assert_eq!(greeting().len(), 18);
        let reply = simple_reply(7, EIO);
        assert_eq!(reply.len(), 16);
        assert_eq!(be32(&reply[4..]), EIO);
        assert_eq!(be64(&reply[8..]), 7);
        let desc = ExportDesc {
            name: "img".into(),
            size: 1 << 30,
            flags: TFLAG_HAS_FLAGS,
            min_block: 4096,
            preferred_block: 128 << 10,
        };
        assert_eq!(export_name_reply(&desc, false).len(), 134);
        assert_eq!(export_name_reply(&desc, true).len(), 10);
        assert_eq!(info_export(&desc).len(), 12);
        assert_eq!(info_block_size(&desc).len(), 14);
        let mut out = Vec::new();
        option_reply(&mut out, OPT_GO, REP_ACK, &[]);
        assert_eq!(out.len(), 20);
        assert_eq!(be64(&out), OPT_REPLY_MAGIC);
    }
}
