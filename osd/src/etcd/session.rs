//! The async side of the thread: one etcd session after another, with backoff in between.
//!
//! A session is: connect, get a lease (the old one if it is still alive), put the state key,
//! load the watched keys in one transaction, watch from the next revision, then loop over
//! keepalive ticks, watch messages and commands. Any failure ends the session; the next one
//! starts from scratch after a backoff, so there is no half-broken client to reason about.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, Instant};
use vitastor_etcd::CallError;

use vitastor_layout::keys::pg_state;

use super::event::{decode, EventSink};
use super::thread::EtcdConfig;
use super::{EtcdCommand, EtcdError, EtcdEvent};

/// Keys under the prefix that the OSD loads and watches: `(key, is_prefix)`.
pub const WATCHED_KEYS: &[(&str, bool)] = &[
    ("config/global", false),
    ("config/pools", false),
    ("config/osd/", true),
    ("pg/config", false),
    ("pg/history/", true),
    ("osd/state/", true),
    ("pg/state/", true),
];

/// First wait after a failed session; doubled after each failure up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between attempts: keeps a returning etcd noticed within a couple of seconds
/// without hammering a dead endpoint.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Whether `key` (relative to the prefix) is one of [`WATCHED_KEYS`].
pub(super) fn is_watched(key: &str) -> bool {
    WATCHED_KEYS.iter().any(|&(watched, is_prefix)| {
        if is_prefix {
            key.starts_with(watched)
        } else {
            key == watched
        }
    })
}

/// The lease this OSD holds, as far as the side thread can tell.
#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    /// When etcd drops it if no keepalive gets through: the time the last successful
    /// keepalive was *sent* plus the TTL etcd granted, so never later than etcd's own view.
    expires: Instant,
}

/// What [`Runner::load`] read: values, bad values as events, revision.
type Loaded = (Vec<(String, Value)>, Vec<EtcdEvent>, i64);

/// Why a session ended without an error.
enum Ended {
    Shutdown,
}

pub(super) struct Runner {
    cfg: EtcdConfig,
    events: EventSink,
    commands: UnboundedReceiver<EtcdCommand>,
    lease: Option<Lease>,
    /// Set when a session reached [`EtcdEvent::Connected`], to reset the backoff.
    connected: bool,
}

/// Runs `fut` with the per-call bound; every etcd request goes through this.
async fn call<T>(
    timeout: Duration,
    name: &'static str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    Ok(vitastor_etcd::bounded(timeout, name, fut).await?)
}

impl Runner {
    pub(super) fn new(
        cfg: EtcdConfig,
        events: EventSink,
        commands: UnboundedReceiver<EtcdCommand>,
    ) -> Runner {
        Runner {
            cfg,
            events,
            commands,
            lease: None,
            connected: false,
        }
    }

    /// Runs sessions until a shutdown command (or the data path dropping its handle).
    pub(super) async fn run(mut self) {
        let mut backoff = INITIAL_BACKOFF;
        loop {
            self.connected = false;
            match self.session().await {
                Ok(Ended::Shutdown) => return,
                Err(e) => eprintln!("vitastor-osd: etcd session ended: {e}"),
            }
            if self.connected {
                backoff = INITIAL_BACKOFF;
            }
            if !self.wait_before_retry(backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Sleeps `backoff` while still taking commands and reporting the lease's expiry on time.
    /// Returns false on shutdown: the lease cannot be revoked without etcd, it just expires.
    async fn wait_before_retry(&mut self, backoff: Duration) -> bool {
        let retry_at = Instant::now() + backoff;
        loop {
            let now = Instant::now();
            if let Some(lease) = self.lease {
                if now >= lease.expires {
                    self.lease = None;
                    self.events.send(EtcdEvent::LeaseLost);
                }
            }
            if now >= retry_at {
                return true;
            }
            let wake = self.lease.map_or(retry_at, |l| l.expires.min(retry_at));
            tokio::select! {
                _ = sleep_until(wake) => {}
                cmd = self.commands.recv() => match cmd {
                    Some(EtcdCommand::PutState(state)) => self.cfg.state = state,
                    Some(EtcdCommand::Shutdown) | None => return false,
                    // Without etcd nothing can be claimed: the PG waits for the next
                    // session, which reloads everything and makes the data path retry.
                    Some(EtcdCommand::ClaimPg { pool, pg, .. }) => {
                        self.events.send(EtcdEvent::PgClaimed { pool, pg, granted: false })
                    }
                    Some(EtcdCommand::PutPgState { pool, pg, .. }) => {
                        self.events.send(EtcdEvent::PgLost { pool, pg })
                    }
                    Some(_) => {}
                },
            }
        }
    }

    fn key(&self, rel: &str) -> String {
        format!("{}/{rel}", self.cfg.prefix)
    }

    /// The key relative to the prefix, or `None` for keys outside it.
    fn relative(&self, key: &[u8]) -> Option<String> {
        let key = String::from_utf8_lossy(key);
        let rel = key.strip_prefix(&self.cfg.prefix)?.strip_prefix('/')?;
        Some(rel.to_string())
    }

    async fn session(&mut self) -> Result<Ended, EtcdError> {
        let t = self.cfg.call_timeout;
        let mut client = vitastor_etcd::connect(self.cfg.address.endpoints(), t).await?;
        let (lease_id, mut keeper, mut keepalives) = self.open_lease(&mut client).await?;
        self.put_state(&mut client, lease_id).await?;
        let (kvs, bad_values, revision) = self.load(&mut client).await?;
        // One watch over the whole prefix, filtered here: simpler than six watches, at the
        // cost of also receiving keys the OSD ignores (stats of other OSDs, PG states).
        let (_watcher, mut watch) = call(
            t,
            "watch",
            client.watch(
                self.key(""),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            ),
        )
        .await?;
        self.events.send(EtcdEvent::Connected);
        for bad in bad_values {
            self.events.send(bad);
        }
        self.events.send(EtcdEvent::InitialLoad { kvs });
        self.connected = true;

        let mut tick = tokio::time::interval(self.cfg.report_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The lease was just refreshed (granted or kept alive); skip the immediate tick.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let ttl = self.keep_alive(&mut keeper, &mut keepalives).await?;
                    if ttl.is_none() {
                        self.lease = None;
                        self.events.send(EtcdEvent::LeaseLost);
                        return Err(EtcdError::LeaseExpired(lease_id));
                    }
                }
                // The stream is long-lived, so it has no per-call bound; a dead etcd is
                // caught by the keepalive above, which is bounded.
                msg = watch.message() => {
                    let msg = msg.map_err(|source| CallError::failed("watch", source))?;
                    let Some(msg) = msg else {
                        return Err(EtcdError::Protocol {
                            call: "watch",
                            reason: "stream ended".to_string(),
                        });
                    };
                    if msg.canceled() {
                        return Err(EtcdError::Protocol {
                            call: "watch",
                            reason: format!(
                                "cancelled ({}, compact revision {})",
                                msg.cancel_reason(),
                                msg.compact_revision()
                            ),
                        });
                    }
                    for event in msg.events() {
                        let Some(kv) = event.kv() else { continue };
                        let Some(key) = self.relative(kv.key()).filter(|k| is_watched(k)) else {
                            continue;
                        };
                        let event = match event.event_type() {
                            EventType::Delete => EtcdEvent::KeyChanged { key, value: None },
                            EventType::Put => match decode(key, kv.value()) {
                                Ok((key, value)) => EtcdEvent::KeyChanged {
                                    key,
                                    value: Some(value),
                                },
                                Err(bad) => bad,
                            },
                        };
                        self.events.send(event);
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(EtcdCommand::PutState(state)) => {
                        self.cfg.state = state;
                        self.put_state(&mut client, lease_id).await?;
                    }
                    Some(EtcdCommand::ClaimPg { pool, pg, state }) => {
                        let granted = self.claim_pg(&mut client, lease_id, pool, pg, &state).await?;
                        self.events.send(EtcdEvent::PgClaimed { pool, pg, granted });
                    }
                    Some(EtcdCommand::PutPgState { pool, pg, state }) => {
                        if !self.put_if_ours(&mut client, lease_id, &pg_state(pool, pg), &state).await? {
                            self.events.send(EtcdEvent::PgLost { pool, pg });
                        }
                    }
                    Some(EtcdCommand::ReleasePg { pool, pg }) => {
                        let key = self.key(&pg_state(pool, pg));
                        let txn = Txn::new()
                            .when([Compare::lease(key.clone(), CompareOp::Equal, lease_id)])
                            .and_then([TxnOp::delete(key, None)]);
                        call(t, "release pg", client.txn(txn)).await?;
                    }
                    Some(EtcdCommand::DeleteIfUnchanged { key, value }) => {
                        let key = self.key(&key);
                        let txn = Txn::new()
                            .when([Compare::value(key.clone(), CompareOp::Equal, value.to_string())])
                            .and_then([TxnOp::delete(key, None)]);
                        call(t, "delete if unchanged", client.txn(txn)).await?;
                    }
                    Some(EtcdCommand::Put { key, value }) => {
                        call(t, "put", client.put(self.key(&key), value.to_string(), None)).await?;
                    }
                    Some(EtcdCommand::Shutdown) | None => {
                        // Best effort: if etcd does not answer, the lease expires by itself.
                        if let Err(e) = call(t, "lease revoke", client.lease_revoke(lease_id)).await {
                            eprintln!("vitastor-osd: etcd shutdown: {e}");
                        }
                        self.lease = None;
                        return Ok(Ended::Shutdown);
                    }
                },
            }
        }
    }

    /// Reuses the previous lease if etcd still has it (so a short etcd outage does not mark
    /// the OSD down), else reports [`EtcdEvent::LeaseLost`] for it and grants a new one.
    async fn open_lease(
        &mut self,
        client: &mut Client,
    ) -> Result<(i64, LeaseKeeper, LeaseKeepAliveStream), EtcdError> {
        let t = self.cfg.call_timeout;
        if let Some(old) = self.lease {
            if Instant::now() < old.expires {
                let (mut keeper, mut stream) =
                    call(t, "lease keepalive", client.lease_keep_alive(old.id)).await?;
                if self.keep_alive(&mut keeper, &mut stream).await?.is_some() {
                    return Ok((old.id, keeper, stream));
                }
            }
            self.lease = None;
            self.events.send(EtcdEvent::LeaseLost);
        }
        let ttl_secs = self.cfg.lease_ttl().as_secs().max(1);
        let sent = Instant::now();
        let granted = call(t, "lease grant", client.lease_grant(ttl_secs as i64, None)).await?;
        self.lease = Some(Lease {
            id: granted.id(),
            expires: sent + Duration::from_secs(granted.ttl().max(0) as u64),
        });
        let (keeper, stream) =
            call(t, "lease keepalive", client.lease_keep_alive(granted.id())).await?;
        Ok((granted.id(), keeper, stream))
    }

    /// One keepalive round trip. `Some(ttl)` if the lease lives on (and its expiry is
    /// moved), `None` if etcd says it is gone.
    async fn keep_alive(
        &mut self,
        keeper: &mut LeaseKeeper,
        stream: &mut LeaseKeepAliveStream,
    ) -> Result<Option<i64>, EtcdError> {
        let t = self.cfg.call_timeout;
        let sent = Instant::now();
        call(t, "lease keepalive", keeper.keep_alive()).await?;
        let reply = call(t, "lease keepalive", stream.message())
            .await?
            .ok_or_else(|| EtcdError::Protocol {
                call: "lease keepalive",
                reason: "stream ended".to_string(),
            })?;
        if reply.ttl() <= 0 {
            return Ok(None);
        }
        self.lease = Some(Lease {
            id: reply.id(),
            expires: sent + Duration::from_secs(reply.ttl() as u64),
        });
        Ok(Some(reply.ttl()))
    }

    /// Puts `pg/state/<pool>/<pg>` under our lease if it is absent, or else if it is already
    /// ours. Two transactions, each atomic: nobody else can slip in between, because the
    /// second only succeeds on a key bound to our own lease.
    async fn claim_pg(
        &mut self,
        client: &mut Client,
        lease_id: i64,
        pool: u32,
        pg: u32,
        state: &Value,
    ) -> Result<bool, EtcdError> {
        let key = self.key(&pg_state(pool, pg));
        let put = TxnOp::put(
            key.clone(),
            state.to_string(),
            Some(PutOptions::new().with_lease(lease_id)),
        );
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put]);
        let reply = call(self.cfg.call_timeout, "claim pg", client.txn(txn)).await?;
        if reply.succeeded() {
            return Ok(true);
        }
        self.put_if_ours(client, lease_id, &pg_state(pool, pg), state)
            .await
    }

    /// Puts a leased key only if it exists under our lease.
    async fn put_if_ours(
        &mut self,
        client: &mut Client,
        lease_id: i64,
        rel: &str,
        value: &Value,
    ) -> Result<bool, EtcdError> {
        let key = self.key(rel);
        let put = TxnOp::put(
            key.clone(),
            value.to_string(),
            Some(PutOptions::new().with_lease(lease_id)),
        );
        let txn = Txn::new()
            .when([Compare::lease(key, CompareOp::Equal, lease_id)])
            .and_then([put]);
        let reply = call(self.cfg.call_timeout, "put pg state", client.txn(txn)).await?;
        Ok(reply.succeeded())
    }

    async fn put_state(&mut self, client: &mut Client, lease_id: i64) -> Result<(), EtcdError> {
        let key = self.key(&format!("osd/state/{}", self.cfg.osd_num));
        let value = self.cfg.state.to_string();
        let options = PutOptions::new().with_lease(lease_id);
        call(
            self.cfg.call_timeout,
            "put osd state",
            client.put(key, value, Some(options)),
        )
        .await?;
        Ok(())
    }

    /// Reads all watched keys in one transaction, so they come from one revision and the
    /// watch can start right after it. Returns the good values, a [`EtcdEvent::BadValue`]
    /// for each value that is not JSON, and the revision.
    async fn load(&mut self, client: &mut Client) -> Result<Loaded, EtcdError> {
        let gets: Vec<TxnOp> = WATCHED_KEYS
            .iter()
            .map(|&(key, is_prefix)| {
                let options = is_prefix.then(|| GetOptions::new().with_prefix());
                TxnOp::get(self.key(key), options)
            })
            .collect();
        let reply = call(
            self.cfg.call_timeout,
            "load",
            client.txn(Txn::new().and_then(gets)),
        )
        .await?;
        let revision = reply
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| EtcdError::Protocol {
                call: "load",
                reason: "reply without a header".to_string(),
            })?;
        let (mut kvs, mut bad_values) = (Vec::new(), Vec::new());
        for op in reply.op_responses() {
            let TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                let Some(key) = self.relative(kv.key()) else {
                    continue;
                };
                match decode(key, kv.value()) {
                    Ok(pair) => kvs.push(pair),
                    Err(bad) => bad_values.push(bad),
                }
            }
        }
        Ok((kvs, bad_values, revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_key_filter() {
        for key in [
            "config/global",
            "config/pools",
            "config/osd/3",
            "pg/config",
            "pg/history/1/2",
            "osd/state/7",
        ] {
            assert!(is_watched(key), "{key}");
        }
        for key in ["config/globalx", "osd/stats/1", "config/inode/1/2"] {
            assert!(!is_watched(key), "{key}");
        }
    }
}
