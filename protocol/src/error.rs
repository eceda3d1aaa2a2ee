//! Protocol errors, split by what the connection must do about them.
//!
//! Non-fatal errors leave the byte stream in sync: the receiver answers the
//! request with `-EINVAL` and reads on. Fatal errors mean the framing can no
//! longer be trusted (or following it would cost unbounded memory): the
//! connection must be dropped.

use crate::errno::{EINVAL, EPIPE};
use crate::opcode::Opcode;

/// Everything that can be wrong with bytes received from a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The packet does not start with the request or reply magic, so the
    /// stream lost its framing. Fatal.
    #[error("bad packet magic {found:#018x}")]
    BadMagic {
        /// The magic that was found.
        found: u64,
    },
    /// A length field that decides how many payload bytes follow is above its
    /// limit. Following it would mean buffering (or skipping) an unbounded
    /// amount of data, so this is fatal rather than answered with `-EINVAL`.
    #[error("{opcode}: {field} = {len} exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Op whose packet carried the field.
        opcode: Opcode,
        /// Name of the field, as in the spec.
        field: &'static str,
        /// Value of the field (in bytes, or entries for SEC_LIST).
        len: u64,
        /// The limit it broke.
        max: u64,
    },
    /// A reply names an opcode this implementation does not know, so its
    /// payload length is unknown. Fatal.
    #[error("reply with unknown opcode {opcode}")]
    UnknownReplyOpcode {
        /// The raw opcode.
        opcode: u64,
    },
    /// A reply answers no outstanding request: the stream is broken. Fatal.
    #[error("reply id {id} matches no outstanding request")]
    UnknownReplyId {
        /// The unmatched id.
        id: u64,
    },
    /// A reply's opcode is not the echo of its request's opcode. Fatal.
    #[error("reply {id} has opcode {received} but the request was {sent}")]
    ReplyOpcodeMismatch {
        /// Request id.
        id: u64,
        /// Opcode of the request that was sent.
        sent: Opcode,
        /// Opcode the reply carried.
        received: u64,
    },
    /// A successful READ or SEC_READ reply announces a data length other than
    /// the one requested; the receiver's buffer was sized for the request.
    /// Fatal.
    #[error("{opcode} reply carries {retval} data bytes, {requested} were requested")]
    ReadLengthMismatch {
        /// READ or SEC_READ.
        opcode: Opcode,
        /// Length requested.
        requested: u64,
        /// Length the reply announced.
        retval: i64,
    },
    /// An error reply announces a bitmap; error replies carry no payload, so
    /// the two sides would disagree on framing. Fatal.
    #[error("{opcode} error reply ({retval}) announces a {len}-byte bitmap")]
    PayloadOnErrorReply {
        /// Op of the reply.
        opcode: Opcode,
        /// The (negative) retval.
        retval: i64,
        /// The announced bitmap length.
        len: u64,
    },
    /// The stream decoder already hit a fatal error and refuses more input.
    #[error("connection already failed with a fatal protocol error")]
    Poisoned,
    /// A request names an opcode this implementation does not know. Such a
    /// request is taken to have no payload, as in the original
    /// implementation, so the stream stays in sync. Not fatal.
    #[error("unknown opcode {opcode}")]
    UnknownOpcode {
        /// The raw opcode.
        opcode: u64,
    },
    /// A field that does not frame any payload is out of range (for example
    /// a READ longer than `OSD_RW_MAX`). Not fatal.
    #[error("{opcode}: {field} = {value} exceeds the limit of {max}")]
    FieldOutOfRange {
        /// Op whose packet carried the field.
        opcode: Opcode,
        /// Name of the field, as in the spec.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The limit it broke.
        max: u64,
    },
    /// An `obj_ver_id[]` length is not a multiple of 24 bytes. The length
    /// still frames the payload, so this is not fatal.
    #[error("obj_ver_id list of {len} bytes is not a multiple of 24")]
    MisalignedList {
        /// The list length in bytes.
        len: u64,
    },
    /// SEC_LOCK `flags` is neither lock (1) nor unlock (2). Not fatal.
    #[error("SEC_LOCK flags {flags} is neither lock (1) nor unlock (2)")]
    BadLockFlags {
        /// The flags received.
        flags: u64,
    },
}

impl ProtocolError {
    /// Whether the connection must be dropped. When false, the stream is
    /// still in sync and the request should be answered with `-errno()`.
    pub fn is_fatal(&self) -> bool {
        match self {
            ProtocolError::BadMagic { .. }
            | ProtocolError::PayloadTooLarge { .. }
            | ProtocolError::UnknownReplyOpcode { .. }
            | ProtocolError::UnknownReplyId { .. }
            | ProtocolError::ReplyOpcodeMismatch { .. }
            | ProtocolError::ReadLengthMismatch { .. }
            | ProtocolError::PayloadOnErrorReply { .. }
            | ProtocolError::Poisoned => true,
            ProtocolError::UnknownOpcode { .. }
            | ProtocolError::FieldOutOfRange { .. }
            | ProtocolError::MisalignedList { .. }
            | ProtocolError::BadLockFlags { .. } => false,
        }
    }

    /// The positive errno for this error: `EINVAL` for a non-fatal error (the
    /// reply's `retval` is its negation), `EPIPE` for a fatal one, which is
    /// what the ops still outstanding on the dropped connection fail with so
    /// that clients refresh their state and retry.
    pub fn errno(&self) -> i32 {
        if self.is_fatal() {
            EPIPE
        } else {
            EINVAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_errors_map_to_epipe_and_others_to_einval() {
        let fatal = ProtocolError::BadMagic { found: 1 };
        assert!(fatal.is_fatal());
        assert_eq!(fatal.errno(), EPIPE);
        let soft = ProtocolError::UnknownOpcode { opcode: 77 };
        assert!(!soft.is_fatal());
        assert_eq!(soft.errno(), EINVAL);
    }

    #[test]
    fn messages_name_the_field() {
        let e = ProtocolError::PayloadTooLarge {
            opcode: Opcode::Write,
            field: "len",
            len: 1 << 30,
            max: 64 << 20,
        };
        assert_eq!(
            e.to_string(),
            "write: len = 1073741824 exceeds the limit of 67108864 bytes"
        );
    }
}
