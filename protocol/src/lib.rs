//! The OSD wire protocol (client ↔ OSD, OSD ↔ OSD), compatible with the
//! original Vitastor.
//!
//! Every message is a 128-byte little-endian packet ([`packet`]) optionally
//! followed by a payload whose length the packet determines. This crate owns
//! the byte layouts ([`request`], [`reply`], [`object`]), the limits that
//! bound every length ([`limits`]), the errors and what a connection must do
//! about each ([`error`]), the streaming decoder a socket loop drives
//! ([`decoder`]) and the SHOW_CONFIG handshake JSON ([`handshake`]).
//!
//! It does no I/O, and never sizes a buffer from a length it has not checked.
//!
//! A receive loop, in short:
//!
//! ```
//! use vitastor_protocol::*;
//!
//! // The client side sends a PING...
//! let ping = Request { id: 1, op: RequestOp::Ping };
//! let mut wire = [0u8; OSD_PACKET_SIZE];
//! encode_request(&ping, &mut wire);
//!
//! // ...the OSD side decodes it and answers.
//! let mut osd = FrameDecoder::new();
//! let (used, frame) = osd.feed(&wire, &mut |_| None).unwrap();
//! assert_eq!(used, OSD_PACKET_SIZE);
//! assert_eq!(frame, Some(Frame::Request(ping)));
//! let pong = Reply { id: 1, retval: 0, op: ReplyOp::Ping };
//! encode_reply(&pong, &mut wire);
//!
//! // The client matches the reply to its outstanding request by id.
//! let mut client = FrameDecoder::new();
//! let (_, frame) = client.feed(&wire, &mut |id| (id == 1).then_some(ping)).unwrap();
//! assert_eq!(frame, Some(Frame::Reply { reply: pong, request: ping }));
//! ```
#![deny(missing_docs)]

pub mod decoder;
pub mod errno;
pub mod error;
pub mod handshake;
pub mod limits;
pub mod object;
pub mod opcode;
pub mod packet;
pub mod reply;
pub mod request;

#[cfg(test)]
mod samples;

pub use decoder::{Frame, FrameDecoder};
pub use error::ProtocolError;
pub use limits::*;
pub use object::{
    encode_obj_ver_ids, inode_no_pool, obj_ver_ids, pool_of, ObjVerId, ObjectId, OBJ_VER_ID_SIZE,
};
pub use opcode::*;
pub use packet::{
    Header, Packet, OSD_PACKET_SIZE, PROTOCOL_VERSION, REPLY_HEADER_SIZE, REPLY_MAGIC,
    REQUEST_HEADER_SIZE, REQUEST_MAGIC,
};
pub use reply::{
    decode_reply, encode_error_reply, encode_reply, DeleteReply, OpaqueReplyBody, Reply, ReplyOp,
    RwReply, SecDeleteReply, SecListReply, SecLockReply, SecRwReply, LEFT_ON_DEAD_MAX,
};
pub use request::{
    decode_request, encode_request, OpaqueRequestBody, Request, RequestOp, RwOp, SecDeleteOp,
    SecListOp, SecLockOp, SecReadBmpOp, SecRwOp, SecStabOp, SecSyncOp, ShowConfigOp,
};
