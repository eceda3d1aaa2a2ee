//! The CLI's etcd access: one connection on a small current-thread tokio runtime, used
//! synchronously (a CLI may block).
//!
//! # What this module owns
//! - `etcd_address` → endpoints, the connection and the bound on every call (through
//!   `vitastor_etcd`, so every program accepts the same syntax and bounds calls the same
//!   way), and the prefix.
//! - Reading keys as JSON ([`Kv`]) and compare-and-set transactions ([`Etcd::txn`]), split
//!   to fit etcd's limit on operations per transaction.
//!
//! # What it must never do
//! - Wait without a bound: every call is wrapped in [`CALL_TIMEOUT`], so an unreachable or
//!   stuck etcd becomes [`CliError::EtcdTimeout`], never a hang.
//! - Interpret values: callers parse them with `vitastor_layout`.
//! - Leak `etcd_client` types: commands see only relative keys, JSON and revisions.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
use serde_json::Value;
use tokio::runtime::Runtime;
use vitastor_etcd::{txn, CallError, EtcdAddress};
use vitastor_layout::keys;

use crate::error::{CliError, Result};

/// Bound on one etcd call (connect, get, transaction). The gRPC channel connects lazily and
/// retries a refused endpoint forever, so this is what turns "etcd is down" into an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One key read from etcd.
#[derive(Debug, Clone)]
pub struct Kv {
    /// Key relative to the prefix (`config/pools`).
    pub key: String,
    /// The JSON value.
    pub value: Value,
    /// etcd `mod_revision` (for compare-and-set).
    pub mod_revision: i64,
}

/// A condition of a transaction.
#[derive(Debug, Clone)]
pub enum Check {
    /// The key's `mod_revision` equals this (0 = the key does not exist).
    ModRevision(String, i64),
}

/// A write of a transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// Put a JSON value.
    Put(String, Value),
    /// Delete a key.
    Delete(String),
    /// Delete every key under a prefix.
    DeletePrefix(String),
}

/// A connected etcd with the cluster prefix.
pub struct Etcd {
    rt: Runtime,
    client: Client,
    prefix: String,
}

impl Etcd {
    /// Connects to `address` (`host:port[/v3]`, comma-separated) under `prefix`.
    pub fn connect(address: &str, prefix: &str) -> Result<Etcd> {
        let endpoints = EtcdAddress::parse(address)
            .map_err(|e| CliError::Usage(e.to_string()))?
            .endpoints()
            .to_vec();
        let prefix =
            vitastor_etcd::normalize_prefix(prefix).map_err(|e| CliError::Usage(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Usage(format!("cannot start the etcd runtime: {e}")))?;
        let client = rt
            .block_on(vitastor_etcd::connect(&endpoints, CALL_TIMEOUT))
            .map_err(|e| call_error(format!("connecting to {address}"), e))?;
        Ok(Etcd { rt, client, prefix })
    }

    fn full(&self, key: &str) -> String {
        keys::full(&self.prefix, key)
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> Result<Kv> {
        let full = String::from_utf8_lossy(kv.key()).into_owned();
        let key = full
            .strip_prefix(&format!("{}/", self.prefix))
            .unwrap_or(&full)
            .to_string();
        let value = serde_json::from_slice(kv.value()).map_err(|e| CliError::BadValue {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        Ok(Kv {
            key,
            value,
            mod_revision: kv.mod_revision(),
        })
    }

    /// The key-value client for reads: `pg/config` of a large cluster is one key of several
    /// MiB, above gRPC's default 4 MiB reply limit.
    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(vitastor_etcd::watch::MAX_REPLY_BYTES)
    }

    /// Reads one key.
    pub fn get(&mut self, key: &str) -> Result<Option<Kv>> {
        let full = self.full(key);
        let mut kv = self.kv();
        let resp = bounded(
            &self.rt,
            format!("reading {full}"),
            kv.get(full.clone(), None),
        )?;
        resp.kvs().first().map(|kv| self.to_kv(kv)).transpose()
    }

    /// Reads every key under `prefix` (relative). A key whose value is not JSON is reported
    /// on stderr and skipped: one bad key must not hide the rest of the cluster.
    pub fn get_prefix(&mut self, prefix: &str) -> Result<Vec<Kv>> {
        let full = self.full(prefix);
        let mut kv = self.kv();
        let resp = bounded(
            &self.rt,
            format!("listing {full}"),
            kv.get(full.clone(), Some(GetOptions::new().with_prefix())),
        )?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            match self.to_kv(kv) {
                Ok(kv) => out.push(kv),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        Ok(out)
    }

    /// Runs `writes` if every check holds; returns whether it did.
    ///
    /// etcd refuses more than [`txn::DEFAULT_MAX_TXN_OPS`] writes in one transaction: the
    /// checks guard the first batch, and the writes that do not fit follow in unconditional
    /// transactions once it succeeded. Callers therefore put first the writes the checks
    /// protect, and only writes that are safe to repeat (deletes) after; if the CLI dies in
    /// between, running the command again finishes them.
    pub fn txn(&mut self, what: &str, checks: &[Check], writes: &[Write]) -> Result<bool> {
        let batch = txn::batch_len(txn::DEFAULT_MAX_TXN_OPS, 0);
        let (first, rest) = writes.split_at(writes.len().min(batch));
        if !self.txn_once(what, checks, first)? {
            return Ok(false);
        }
        for more in rest.chunks(batch) {
            self.txn_once(what, &[], more)?;
        }
        Ok(true)
    }

    fn txn_once(&mut self, what: &str, checks: &[Check], writes: &[Write]) -> Result<bool> {
        let compares: Vec<Compare> = checks
            .iter()
            .map(|c| match c {
                Check::ModRevision(k, rev) => {
                    Compare::mod_revision(self.full(k), CompareOp::Equal, *rev)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match w {
                Write::Put(k, v) => TxnOp::put(self.full(k), v.to_string(), None),
                Write::Delete(k) => TxnOp::delete(self.full(k), None),
                Write::DeletePrefix(k) => {
                    TxnOp::delete(self.full(k), Some(DeleteOptions::new().with_prefix()))
                }
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = bounded(&self.rt, what.to_string(), self.client.txn(txn))?;
        Ok(resp.succeeded())
    }
}

/// Runs one etcd call on the runtime with [`CALL_TIMEOUT`]; errors name `what` was done.
fn bounded<T>(
    rt: &Runtime,
    what: String,
    fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    rt.block_on(vitastor_etcd::bounded(CALL_TIMEOUT, "call", fut))
        .map_err(|e| call_error(what, e))
}

fn call_error(what: String, e: CallError) -> CliError {
    match e {
        CallError::Failed { source, .. } => CliError::Etcd {
            what,
            reason: vitastor_etcd::describe(&source),
        },
        CallError::Ended { reason, .. } => CliError::Etcd { what, reason },
        CallError::Timeout { after, .. } => CliError::EtcdTimeout {
            what,
            timeout: after,
        },
    }
}
