//! The async side of the thread: one etcd session after another, with backoff in between.
//!
//! A session is: connect, get a lease (the old one if it is still alive), put the state key,
//! load the watched keys in one transaction, watch from the next revision, then loop over
//! keepalive ticks, watch messages and commands (the lease, load, watch and transactions
//! are `vitastor_etcd`'s; what the events mean is the OSD's). Any failure ends the session; the next one
//! starts from scratch after a backoff, so there is no half-broken client to reason about.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, Instant};
use vitastor_etcd::watch::{self, Range, Watch};
use vitastor_etcd::{txn, Backoff, Lease};

use vitastor_layout::keys::pg_state;

use super::event::{decode, EventSink};
use super::thread::EtcdConfig;
use super::{EtcdCommand, EtcdError, EtcdEvent};

/// Keys under the prefix that the OSD loads and watches.
pub const WATCHED_KEYS: &[Range] = &[
    Range::key("config/global"),
    Range::key("config/pools"),
    Range::prefix("config/osd/"),
    Range::key("pg/config"),
    Range::prefix("pg/history/"),
    Range::prefix("osd/state/"),
    Range::prefix("pg/state/"),
];

/// Whether `key` (relative to the prefix) is one of [`WATCHED_KEYS`].
pub(super) fn is_watched(key: &str) -> bool {
    watch::watched(WATCHED_KEYS, key)
}

/// The lease this OSD holds, as far as the side thread can tell between sessions.
#[derive(Debug, Clone, Copy)]
struct Held {
    id: i64,
    /// See [`Lease::expires`].
    expires: Instant,
}

/// Why a session ended without an error.
enum Ended {
    Shutdown,
}

pub(super) struct Runner {
    cfg: EtcdConfig,
    events: EventSink,
    commands: UnboundedReceiver<EtcdCommand>,
    held: Option<Held>,
    /// Set when a session reached [`EtcdEvent::Connected`], to reset the backoff.
    connected: bool,
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
            held: None,
            connected: false,
        }
    }

    /// Runs sessions until a shutdown command (or the data path dropping its handle).
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::default();
        loop {
            self.connected = false;
            match self.session().await {
                Ok(Ended::Shutdown) => return,
                Err(e) => eprintln!("vitastor-osd: etcd session ended: {e}"),
            }
            if self.connected {
                backoff.reset();
            }
            if !self.wait_before_retry(backoff.next_wait()).await {
                return;
            }
        }
    }

    /// Sleeps `backoff` while still taking commands and reporting the lease's expiry on time.
    /// Returns false on shutdown: the lease cannot be revoked without etcd, it just expires.
    async fn wait_before_retry(&mut self, backoff: std::time::Duration) -> bool {
        let retry_at = Instant::now() + backoff;
        loop {
            let now = Instant::now();
            if let Some(held) = self.held {
                if now >= held.expires {
                    self.held = None;
                    self.events.send(EtcdEvent::LeaseLost);
                }
            }
            if now >= retry_at {
                return true;
            }
            let wake = self.held.map_or(retry_at, |l| l.expires.min(retry_at));
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

    /// Remembers the lease's expiry for the time between sessions and tells the data path.
    fn hold(&mut self, lease: &Lease) {
        self.held = Some(Held {
            id: lease.id(),
            expires: lease.expires(),
        });
        self.events.send(EtcdEvent::LeaseRenewed {
            expires: lease.expires().into_std(),
        });
    }

    async fn session(&mut self) -> Result<Ended, EtcdError> {
        let t = self.cfg.call_timeout;
        let mut client = vitastor_etcd::connect(self.cfg.address.endpoints(), t).await?;
        let mut lease = self.open_lease(&mut client).await?;
        let lease_id = lease.id();
        self.put_state(&mut client, &lease).await?;
        let snapshot = watch::load(&mut client, t, &self.cfg.prefix, WATCHED_KEYS).await?;
        // One watch over the whole prefix, filtered here: simpler than seven watches, at the
        // cost of also receiving keys the OSD ignores (stats of other OSDs).
        let mut changes = Watch::start(
            &mut client,
            t,
            &self.cfg.prefix,
            "",
            true,
            snapshot.revision + 1,
        )
        .await?;
        self.events.send(EtcdEvent::Connected);
        let mut kvs = Vec::with_capacity(snapshot.kvs.len());
        for kv in snapshot.kvs {
            match decode(kv.key, kv.value.as_deref().unwrap_or_default()) {
                Ok(pair) => kvs.push(pair),
                Err(bad) => self.events.send(bad),
            }
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
                    if !lease.keep_alive().await? {
                        self.held = None;
                        self.events.send(EtcdEvent::LeaseLost);
                        return Err(EtcdError::LeaseExpired(lease_id));
                    }
                    self.hold(&lease);
                }
                kvs = changes.next() => {
                    for kv in kvs? {
                        if !is_watched(&kv.key) {
                            continue;
                        }
                        let event = match kv.value {
                            None => EtcdEvent::KeyChanged { key: kv.key, value: None },
                            Some(value) => match decode(kv.key, &value) {
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
                        self.put_state(&mut client, &lease).await?;
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
                        let release = txn::delete_if_lease(self.key(&pg_state(pool, pg)), lease_id);
                        vitastor_etcd::bounded(t, "release pg", client.txn(release)).await?;
                    }
                    Some(EtcdCommand::DeleteIfUnchanged { key, value }) => {
                        let key = self.key(&key);
                        let delete = Txn::new()
                            .when([Compare::value(key.clone(), CompareOp::Equal, value.to_string())])
                            .and_then([TxnOp::delete(key, None)]);
                        vitastor_etcd::bounded(t, "delete if unchanged", client.txn(delete)).await?;
                    }
                    Some(EtcdCommand::Put { key, value }) => {
                        let put = client.put(self.key(&key), value.to_string(), None);
                        vitastor_etcd::bounded(t, "put", put).await?;
                    }
                    Some(EtcdCommand::Shutdown) | None => {
                        // Best effort: if etcd does not answer, the lease expires by itself.
                        if let Err(e) = lease.revoke(&mut client).await {
                            eprintln!("vitastor-osd: etcd shutdown: {e}");
                        }
                        self.held = None;
                        return Ok(Ended::Shutdown);
                    }
                },
            }
        }
    }

    /// Takes the previous lease up again if etcd still has it (so a short etcd outage does
    /// not mark the OSD down), else reports [`EtcdEvent::LeaseLost`] for it and grants a new
    /// one.
    async fn open_lease(&mut self, client: &mut Client) -> Result<Lease, EtcdError> {
        let t = self.cfg.call_timeout;
        if let Some(old) = self.held {
            if Instant::now() < old.expires {
                if let Some(lease) = Lease::resume(client, old.id, t).await? {
                    self.hold(&lease);
                    return Ok(lease);
                }
            }
            self.held = None;
            self.events.send(EtcdEvent::LeaseLost);
        }
        let lease = Lease::grant(client, self.cfg.lease_ttl(), t).await?;
        self.hold(&lease);
        Ok(lease)
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
        let claim = txn::create(self.key(&pg_state(pool, pg)), state.to_string(), lease_id);
        let reply =
            vitastor_etcd::bounded(self.cfg.call_timeout, "claim pg", client.txn(claim)).await?;
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
        let put = txn::put_if_lease(self.key(rel), value.to_string(), lease_id);
        let reply =
            vitastor_etcd::bounded(self.cfg.call_timeout, "put pg state", client.txn(put)).await?;
        Ok(reply.succeeded())
    }

    async fn put_state(&mut self, client: &mut Client, lease: &Lease) -> Result<(), EtcdError> {
        // The etcd key is an edge: the number goes in bare.
        let key = self.key(&format!("osd/state/{}", self.cfg.osd_num.0));
        let put = client.put(key, self.cfg.state.to_string(), Some(lease.put_options()));
        vitastor_etcd::bounded(self.cfg.call_timeout, "put osd state", put).await?;
        Ok(())
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
