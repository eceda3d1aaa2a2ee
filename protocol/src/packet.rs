//! The fixed 128-byte packet that starts every request and reply, and the
//! little-endian field access every op layout is built from.
//!
//! This module owns framing constants and the common headers. It never looks
//! past the 128 bytes it is given and never allocates.

use crate::error::ProtocolError;

/// Size of every request and reply packet; payloads (if any) follow it.
pub const OSD_PACKET_SIZE: usize = 0x80;

/// One request or reply packet as it travels on the wire.
pub type Packet = [u8; OSD_PACKET_SIZE];

/// Magic number that opens every request packet.
pub const REQUEST_MAGIC: u64 = 0x2bd7_b103_2543_4553;

/// Magic number that opens every reply packet.
pub const REPLY_MAGIC: u64 = 0xbaa6_99b8_7b43_4553;

/// Bytes taken by the request header (`magic`, `id`, `opcode`).
pub const REQUEST_HEADER_SIZE: usize = 24;

/// Bytes taken by the reply header (`magic`, `id`, `opcode`, `retval`).
pub const REPLY_HEADER_SIZE: usize = 32;

/// Wire protocol version announced in the SHOW_CONFIG reply.
pub const PROTOCOL_VERSION: u64 = 1;

/// The common header of a packet, before the opcode-specific body is looked at.
///
/// Layout: `magic u64 @0, id u64 @8, opcode u64 @16`, and for replies
/// `retval i64 @24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A packet carrying [`REQUEST_MAGIC`].
    Request {
        /// Sender-chosen id, unique per connection.
        id: u64,
        /// Raw opcode; not yet checked against the opcode table.
        opcode: u64,
    },
    /// A packet carrying [`REPLY_MAGIC`].
    Reply {
        /// Echo of the request id.
        id: u64,
        /// Echo of the request opcode; not yet checked.
        opcode: u64,
        /// `>= 0` on success, `-errno` on failure.
        retval: i64,
    },
}

impl Header {
    /// Reads the common header. Only the magic is checked: a packet with any
    /// other magic means the byte stream lost its framing.
    pub fn parse(packet: &Packet) -> Result<Header, ProtocolError> {
        let magic = get_u64(packet, 0);
        let id = get_u64(packet, 8);
        let opcode = get_u64(packet, 16);
        match magic {
            REQUEST_MAGIC => Ok(Header::Request { id, opcode }),
            REPLY_MAGIC => Ok(Header::Reply {
                id,
                opcode,
                retval: get_i64(packet, 24),
            }),
            found => Err(ProtocolError::BadMagic { found }),
        }
    }
}

fn field<const N: usize>(packet: &Packet, at: usize) -> [u8; N] {
    let mut bytes = [0u8; N];
    bytes.copy_from_slice(&packet[at..at + N]);
    bytes
}

pub(crate) fn get_u32(packet: &Packet, at: usize) -> u32 {
    u32::from_le_bytes(field(packet, at))
}

pub(crate) fn get_u64(packet: &Packet, at: usize) -> u64 {
    u64::from_le_bytes(field(packet, at))
}

pub(crate) fn get_i64(packet: &Packet, at: usize) -> i64 {
    i64::from_le_bytes(field(packet, at))
}

pub(crate) fn put_u32(packet: &mut Packet, at: usize, value: u32) {
    packet[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(packet: &mut Packet, at: usize, value: u64) {
    packet[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_i64(packet: &mut Packet, at: usize, value: i64) {
    packet[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_and_reply_headers() {
        let mut p = [0u8; OSD_PACKET_SIZE];
        put_u64(&mut p, 0, REQUEST_MAGIC);
        put_u64(&mut p, 8, 7);
        put_u64(&mut p, 16, 11);
        assert_eq!(Header::parse(&p), Ok(Header::Request { id: 7, opcode: 11 }));

        put_u64(&mut p, 0, REPLY_MAGIC);
        put_i64(&mut p, 24, -5);
        assert_eq!(
            Header::parse(&p),
            Ok(Header::Reply {
                id: 7,
                opcode: 11,
                retval: -5
            })
        );
    }

    #[test]
    fn magic_is_little_endian_on_the_wire() {
        let mut p = [0u8; OSD_PACKET_SIZE];
        put_u64(&mut p, 0, REQUEST_MAGIC);
        assert_eq!(&p[..8], &[0x53, 0x45, 0x43, 0x25, 0x03, 0xb1, 0xd7, 0x2b]);
        put_u64(&mut p, 0, REPLY_MAGIC);
        assert_eq!(&p[..8], &[0x53, 0x45, 0x43, 0x7b, 0xb8, 0x99, 0xa6, 0xba]);
    }

    #[test]
    fn rejects_unknown_magic() {
        let mut p = [0u8; OSD_PACKET_SIZE];
        put_u64(&mut p, 0, 0xdead_beef);
        let err = Header::parse(&p).unwrap_err();
        assert_eq!(err, ProtocolError::BadMagic { found: 0xdead_beef });
        assert!(err.is_fatal());
    }
}
