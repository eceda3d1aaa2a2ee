//! Reading a set of keys at one revision and following them from the next: the initial load
//! is one read-only transaction, the watch starts at its revision + 1, so no change falls
//! between the two. Keys are handed out relative to the prefix, values as raw bytes: what
//! they mean is the caller's business (`vitastor_layout`).
//!
//! A watch etcd cancels (compacted past our revision, or any other reason) or a stream that
//! ends is an error: the caller starts a new session, which loads everything again. That is
//! the only resync there is, so there is no partial state to reason about.

use etcd_client::{
    Client, EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream, Watcher,
};

use crate::call::{bounded, CallError};

/// One range of keys to load, relative to the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The key, or the key prefix.
    pub key: &'static str,
    /// Every key starting with [`Self::key`].
    pub prefix: bool,
    /// Only the keys, without values (to learn which keys exist).
    pub keys_only: bool,
}

impl Range {
    /// One key.
    pub const fn key(key: &'static str) -> Range {
        Range {
            key,
            prefix: false,
            keys_only: false,
        }
    }

    /// Every key under a prefix.
    pub const fn prefix(key: &'static str) -> Range {
        Range {
            key,
            prefix: true,
            keys_only: false,
        }
    }

    /// Whether `rel` (relative to the cluster prefix) is in this range.
    pub fn contains(&self, rel: &str) -> bool {
        if self.prefix {
            rel.starts_with(self.key)
        } else {
            rel == self.key
        }
    }
}

/// Whether `rel` is in any of `ranges`.
pub fn watched(ranges: &[Range], rel: &str) -> bool {
    ranges.iter().any(|r| r.contains(rel))
}

/// `key` relative to `prefix` (`/vitastor/config/pools` → `config/pools`); `None` outside it.
pub fn relative(prefix: &str, key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?;
    Some(key.strip_prefix(prefix)?.strip_prefix('/')?.to_owned())
}

/// One key as read or as changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// Relative to the prefix.
    pub key: String,
    /// The raw value; `None` for a deleted key.
    pub value: Option<Vec<u8>>,
    /// Revision of the put or of the deletion.
    pub mod_revision: i64,
    /// The lease the key is bound to (0: none).
    pub lease: i64,
}

/// The keys of [`load`] and the revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every key found, in the order of the ranges.
    pub kvs: Vec<Kv>,
    /// Watch from `revision + 1` to miss nothing.
    pub revision: i64,
}

/// Largest reply `load` and `Watch` accept. gRPC's default (4 MiB) is less than the state
/// of a cluster of ~5,000 OSDs read at once, or a `pg/config` of ~65,000 PGs in one event;
/// etcd itself sends replies of any size.
pub const MAX_REPLY_BYTES: usize = 256 << 20;

/// Reads `ranges` under `prefix` in one transaction, so they come from one revision.
pub async fn load(
    client: &mut Client,
    timeout: std::time::Duration,
    prefix: &str,
    ranges: &[Range],
) -> Result<Snapshot, CallError> {
    let gets: Vec<TxnOp> = ranges
        .iter()
        .map(|r| {
            let mut options = GetOptions::new();
            if r.prefix {
                options = options.with_prefix();
            }
            if r.keys_only {
                options = options.with_keys_only();
            }
            TxnOp::get(format!("{prefix}/{}", r.key), Some(options))
        })
        .collect();
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(MAX_REPLY_BYTES);
    let reply = bounded(timeout, "load", kv.txn(Txn::new().and_then(gets))).await?;
    let revision = reply
        .header()
        .map(|h| h.revision())
        .ok_or(CallError::Ended {
            call: "load",
            reason: "reply without a header".to_string(),
        })?;
    let mut kvs = Vec::new();
    for op in reply.op_responses() {
        let TxnOpResponse::Get(get) = op else {
            continue;
        };
        for kv in get.kvs() {
            let Some(key) = relative(prefix, kv.key()) else {
                continue;
            };
            kvs.push(Kv {
                key,
                value: Some(kv.value().to_vec()),
                mod_revision: kv.mod_revision(),
                lease: kv.lease(),
            });
        }
    }
    Ok(Snapshot { kvs, revision })
}

/// A watch on every key under a prefix (one stream, filtered by the caller: simpler than a
/// watch per range).
pub struct Watch {
    watcher: Watcher,
    stream: WatchStream,
    prefix: String,
}

impl Watch {
    /// Watches `prefix/key` (every key under it if `with_prefix`) from `revision`.
    pub async fn start(
        client: &mut Client,
        timeout: std::time::Duration,
        prefix: &str,
        key: &str,
        with_prefix: bool,
        revision: i64,
    ) -> Result<Watch, CallError> {
        let mut options = WatchOptions::new().with_start_revision(revision);
        if with_prefix {
            options = options.with_prefix();
        }
        let mut watch = client
            .watch_client()
            .max_decoding_message_size(MAX_REPLY_BYTES);
        let (watcher, stream) = bounded(
            timeout,
            "watch",
            watch.watch(format!("{prefix}/{key}"), Some(options)),
        )
        .await?;
        Ok(Watch {
            watcher,
            stream,
            prefix: prefix.to_owned(),
        })
    }

    /// The changes of the next message. The stream is long-lived, so this has no bound of
    /// its own: a dead etcd is noticed by the caller's bounded keepalives or calls.
    pub async fn next(&mut self) -> Result<Vec<Kv>, CallError> {
        let msg = self
            .stream
            .message()
            .await
            .map_err(|source| CallError::failed("watch", source))?
            .ok_or(CallError::Ended {
                call: "watch",
                reason: "stream ended".to_string(),
            })?;
        if msg.canceled() {
            return Err(CallError::Ended {
                call: "watch",
                reason: format!(
                    "cancelled ({}, compact revision {})",
                    msg.cancel_reason(),
                    msg.compact_revision()
                ),
            });
        }
        Ok(msg
            .events()
            .iter()
            .filter_map(|e| {
                let kv = e.kv()?;
                Some(Kv {
                    key: relative(&self.prefix, kv.key())?,
                    value: (e.event_type() == EventType::Put).then(|| kv.value().to_vec()),
                    mod_revision: kv.mod_revision(),
                    lease: kv.lease(),
                })
            })
            .collect())
    }

    /// Cancels the watch on the server (dropping it would too, less politely).
    pub async fn cancel(mut self, timeout: std::time::Duration) -> Result<(), CallError> {
        bounded(timeout, "watch cancel", self.watcher.cancel()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGES: &[Range] = &[Range::key("config/global"), Range::prefix("osd/state/")];

    #[test]
    fn ranges_match_keys_and_prefixes() {
        assert!(watched(RANGES, "config/global"));
        assert!(watched(RANGES, "osd/state/7"));
        assert!(!watched(RANGES, "config/globalx"));
        assert!(!watched(RANGES, "osd/stats/7"));
    }

    #[test]
    fn keys_outside_the_prefix_are_not_ours() {
        assert_eq!(
            relative("/vitastor", b"/vitastor/pg/config").as_deref(),
            Some("pg/config")
        );
        assert_eq!(relative("/vitastor", b"/vitastorx/pg/config"), None);
        assert_eq!(relative("", b"/pg/config").as_deref(), Some("pg/config"));
        assert_eq!(relative("/vitastor", b"/vitastor/\xff"), None);
    }
}
