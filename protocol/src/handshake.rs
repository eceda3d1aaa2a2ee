//! The JSON carried by SHOW_CONFIG, the handshake that opens every
//! connection, and the client's compatibility check on the OSD's answer.
//!
//! Owns only the fields the spec names; unknown fields are ignored so newer
//! peers keep working. Parsing works on a payload the frame decoder already
//! bounded by [`crate::limits::MAX_SHOW_CONFIG_JSON`].
//!
//! The reply's JSON travels with a terminating NUL byte, counted in `retval`:
//! the original Vitastor sends it so and its clients read the payload as a C
//! string (a reply without the NUL makes them fail with "unexpected trailing").
//! Payloads are read the same way in both directions: the JSON ends at the first
//! NUL, or at the end of the payload when there is none.

use serde::{Deserialize, Serialize};

use crate::packet::PROTOCOL_VERSION;

/// Features a connecting peer announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RequestFeatures {
    /// The sender numbers its requests consecutively from the handshake id
    /// + 1; the OSD drops the connection on a gap.
    #[serde(default)]
    pub check_sequencing: bool,
}

/// The JSON that follows a SHOW_CONFIG request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShowConfigRequestJson {
    /// The sender's OSD number; only present when the sender is an OSD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osd_num: Option<u64>,
    /// Announced features.
    #[serde(default)]
    pub features: RequestFeatures,
}

/// When an OSD's writes become durable without an explicit sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImmediateCommit {
    /// Every write needs a sync.
    None,
    /// Small (journaled) writes are durable at once.
    Small,
    /// Every write is durable at once; SYNC is a no-op.
    All,
}

/// Features an OSD announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplyFeatures {
    /// The OSD supports SEC_LOCK PG locks.
    #[serde(default)]
    pub pg_locks: bool,
}

/// The JSON that follows a SHOW_CONFIG reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowConfigReplyJson {
    /// The answering OSD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osd_num: Option<u64>,
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u64,
    /// Object size of the OSD's blockstore.
    pub block_size: u32,
    /// Bytes per allocation-bitmap bit.
    pub bitmap_granularity: u32,
    /// The OSD serves client (primary) ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_enabled: Option<bool>,
    /// The OSD has a blockstore and serves secondary ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blockstore_enabled: Option<bool>,
    /// The OSD refuses writes with `-EROFS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    /// The OSD's commit mode.
    pub immediate_commit: ImmediateCommit,
    /// PG lease timeout, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_timeout: Option<u64>,
    /// Announced features.
    #[serde(default)]
    pub features: ReplyFeatures,
}

/// What a client expects of every OSD serving the pool it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolExpectation {
    /// The pool's block size.
    pub block_size: u32,
    /// The pool's bitmap granularity.
    pub bitmap_granularity: u32,
    /// The pool's commit mode.
    pub immediate_commit: ImmediateCommit,
}

/// Why a handshake cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The JSON is malformed or lacks a required field.
    #[error("bad SHOW_CONFIG JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The OSD speaks another protocol version.
    #[error("OSD speaks protocol version {peer}, this client speaks {ours}")]
    ProtocolVersion {
        /// The OSD's version.
        peer: u64,
        /// Ours.
        ours: u64,
    },
    /// The OSD's block size differs from the pool's.
    #[error("OSD block_size {peer} differs from the pool's {pool}")]
    BlockSize {
        /// The OSD's value.
        peer: u32,
        /// The pool's value.
        pool: u32,
    },
    /// The OSD's bitmap granularity differs from the pool's.
    #[error("OSD bitmap_granularity {peer} differs from the pool's {pool}")]
    BitmapGranularity {
        /// The OSD's value.
        peer: u32,
        /// The pool's value.
        pool: u32,
    },
    /// The OSD's commit mode differs from the pool's.
    #[error("OSD immediate_commit {peer:?} differs from the pool's {pool:?}")]
    ImmediateCommit {
        /// The OSD's value.
        peer: ImmediateCommit,
        /// The pool's value.
        pool: ImmediateCommit,
    },
}

impl ShowConfigRequestJson {
    /// Parses a SHOW_CONFIG request payload (NUL-terminated or not).
    pub fn parse(payload: &[u8]) -> Result<ShowConfigRequestJson, HandshakeError> {
        Ok(serde_json::from_slice(json_part(payload))?)
    }

    /// The payload to send after the SHOW_CONFIG packet.
    pub fn to_json(&self) -> Vec<u8> {
        json_bytes(self)
    }
}

impl ShowConfigReplyJson {
    /// Parses a SHOW_CONFIG reply payload (NUL-terminated or not).
    pub fn parse(payload: &[u8]) -> Result<ShowConfigReplyJson, HandshakeError> {
        Ok(serde_json::from_slice(json_part(payload))?)
    }

    /// The payload to send after the SHOW_CONFIG reply packet: the JSON and its
    /// terminating NUL byte; the reply's `retval` is this payload's length.
    pub fn to_json(&self) -> Vec<u8> {
        let mut payload = json_bytes(self);
        payload.push(0);
        payload
    }

    /// Refuses an OSD whose protocol version, block size, bitmap granularity
    /// or commit mode does not match what the client uses.
    pub fn check(&self, pool: &PoolExpectation) -> Result<(), HandshakeError> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(HandshakeError::ProtocolVersion {
                peer: self.protocol_version,
                ours: PROTOCOL_VERSION,
            });
        }
        if self.block_size != pool.block_size {
            return Err(HandshakeError::BlockSize {
                peer: self.block_size,
                pool: pool.block_size,
            });
        }
        if self.bitmap_granularity != pool.bitmap_granularity {
            return Err(HandshakeError::BitmapGranularity {
                peer: self.bitmap_granularity,
                pool: pool.bitmap_granularity,
            });
        }
        if self.immediate_commit != pool.immediate_commit {
            return Err(HandshakeError::ImmediateCommit {
                peer: self.immediate_commit,
                pool: pool.immediate_commit,
            });
        }
        Ok(())
    }
}

/// The JSON of a handshake payload: up to the first NUL byte, if any.
fn json_part(payload: &[u8]) -> &[u8] {
    payload
        .iter()
        .position(|&b| b == 0)
        .map_or(payload, |end| &payload[..end])
}

fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Only derived impls over numbers, bools, options and unit enums reach
    // here, and serde_json cannot fail on those.
    serde_json::to_vec(value).expect("handshake JSON types always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_REPLY: &str = r#"{"osd_num":1,"protocol_version":1,"block_size":131072,"bitmap_granularity":4096,
        "primary_enabled":true,"blockstore_enabled":true,"readonly":false,
        "immediate_commit":"all","lease_timeout":7,"features":{"pg_locks":true}}"#;

    fn pool() -> PoolExpectation {
        PoolExpectation {
            block_size: 131072,
            bitmap_granularity: 4096,
            immediate_commit: ImmediateCommit::All,
        }
    }

    #[test]
    fn parses_the_spec_example_reply() {
        let reply = ShowConfigReplyJson::parse(SPEC_REPLY.as_bytes()).unwrap();
        assert_eq!(reply.osd_num, Some(1));
        assert_eq!(reply.block_size, 131072);
        assert_eq!(reply.immediate_commit, ImmediateCommit::All);
        assert_eq!(reply.lease_timeout, Some(7));
        assert!(reply.features.pg_locks);
        reply.check(&pool()).unwrap();
        let again = ShowConfigReplyJson::parse(&reply.to_json()).unwrap();
        assert_eq!(again, reply);
    }

    #[test]
    fn parses_the_spec_example_request() {
        let req = ShowConfigRequestJson::parse(
            br#"{"osd_num": 5, "features": {"check_sequencing": true}}"#,
        )
        .unwrap();
        assert_eq!(req.osd_num, Some(5));
        assert!(req.features.check_sequencing);
        let client = ShowConfigRequestJson::default();
        assert_eq!(
            client.to_json(),
            br#"{"features":{"check_sequencing":false}}"#
        );
    }

    #[test]
    fn ignores_unknown_fields() {
        let reply = ShowConfigReplyJson::parse(
            br#"{"protocol_version":1,"block_size":131072,"bitmap_granularity":4096,
                "immediate_commit":"small","something_new":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(reply.immediate_commit, ImmediateCommit::Small);
        assert_eq!(reply.osd_num, None);
    }

    #[test]
    fn refuses_mismatches() {
        let base = ShowConfigReplyJson::parse(SPEC_REPLY.as_bytes()).unwrap();
        let cases = [
            ShowConfigReplyJson {
                protocol_version: 2,
                ..base
            },
            ShowConfigReplyJson {
                block_size: 1 << 20,
                ..base
            },
            ShowConfigReplyJson {
                bitmap_granularity: 512,
                ..base
            },
            ShowConfigReplyJson {
                immediate_commit: ImmediateCommit::None,
                ..base
            },
        ];
        let messages: Vec<String> = cases
            .iter()
            .map(|c| c.check(&pool()).unwrap_err().to_string())
            .collect();
        assert_eq!(
            messages,
            [
                "OSD speaks protocol version 2, this client speaks 1",
                "OSD block_size 1048576 differs from the pool's 131072",
                "OSD bitmap_granularity 512 differs from the pool's 4096",
                "OSD immediate_commit None differs from the pool's All",
            ]
        );
    }

    #[test]
    fn reply_payload_is_nul_terminated_json() {
        let reply = ShowConfigReplyJson::parse(SPEC_REPLY.as_bytes()).unwrap();
        let payload = reply.to_json();
        let (nul, json) = payload.split_last().unwrap();
        assert_eq!(*nul, 0);
        assert!(!json.contains(&0));
        let plain: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(plain["block_size"], 131072);
    }

    #[test]
    fn replies_with_and_without_nul_parse_alike() {
        let with_nul = [SPEC_REPLY.as_bytes(), &b"\0"[..]].concat();
        let without = ShowConfigReplyJson::parse(SPEC_REPLY.as_bytes()).unwrap();
        assert_eq!(ShowConfigReplyJson::parse(&with_nul).unwrap(), without);
        // A C string ends at its NUL whatever follows.
        let padded = [SPEC_REPLY.as_bytes(), &b"\0garbage\0"[..]].concat();
        assert_eq!(ShowConfigReplyJson::parse(&padded).unwrap(), without);
        let req = br#"{"osd_num":5}"#;
        let req_nul = [&req[..], &b"\0"[..]].concat();
        assert_eq!(
            ShowConfigRequestJson::parse(&req_nul).unwrap(),
            ShowConfigRequestJson::parse(req).unwrap()
        );
        assert!(ShowConfigReplyJson::parse(b"\0").is_err());
    }

    #[test]
    fn missing_required_field_is_an_error() {
        let err = ShowConfigReplyJson::parse(br#"{"block_size":131072}"#).unwrap_err();
        assert!(matches!(err, HandshakeError::Json(_)));
        assert!(ShowConfigReplyJson::parse(b"not json").is_err());
    }
}
