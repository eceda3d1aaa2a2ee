//! The monitor process: etcd sessions, master election, the master loop.
//!
//! # What this module owns
//! - Sessions: connect, grant a lease of `etcd_mon_ttl`, keep it alive every third of the
//!   TTL; any failure ends the session and a new one starts after a backoff, so there is no
//!   half-broken client to reason about.
//! - Election: `mon/master` = `{"ip":[...],"id":<lease id>}` put under the lease by a
//!   transaction that requires the key to be absent (`create_revision == 0`). The others
//!   watch the key and campaign again when it is deleted (lease expired or revoked), and at
//!   least once per TTL in case a watch event is missed.
//! - The master loop: load every watched key in one transaction, watch the prefix from the
//!   next revision, run a placement round ([`crate::decide`]) on a blocking thread after
//!   changes settle (`mon_change_timeout`) or when an OSD's out timer fires, and aggregate
//!   stats ([`crate::stats`]) every `mon_stats_interval`.
//! - Writing: every transaction carries `mon/master` lease == ours, so a deposed master
//!   cannot write; placement writes also carry `pg/config` mod_revision == the one the round
//!   read, and each `pg/history` write the key's mod_revision. Transactions hold at most
//!   [`vitastor_etcd::txn::DEFAULT_MAX_TXN_OPS`] operations; when a plan needs
//!   more, history is written before `pg/config` and deleted after it, so a crash in between
//!   leaves extra history (harmless: more peers to check), never missing history.
//!   `pg/config` is one key and always one put: a transaction etcd refuses for its size
//!   (`--max-request-bytes`) is reported with the flag to raise and waits for the next
//!   change, keeping the session (another master would be refused the same way).
//!
//! # What it must never do
//! - Panic or exit on an etcd error or a bad value: errors end the session, values are
//!   reported and skipped.
//! - Write without the lease guard, or wait on etcd without a bound (every call goes
//!   through [`call`]; the watch stream is long-lived, a dead etcd is caught by keepalives).
//!
//! The lease, the load and watch, the election's create transaction and the batch size are
//! `vitastor_etcd`'s; the election, the guards and what the keys mean are the monitor's.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{ToSocketAddrs, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{interval, sleep, sleep_until, Instant, Interval, MissedTickBehavior};
use tracing::{debug, error, info, warn};
use vitastor_etcd::watch::{self as etcd_watch, Kv, Range, Watch};
use vitastor_etcd::{txn, Backoff, Lease};
use vitastor_layout::keys;

use crate::decide::{self, DownTracker, Plan};
use crate::http::MetricsText;
use crate::options::{MonOptions, Tunables};
use crate::placement::PlacementOptions;
use crate::state::{decode, is_watched, ClusterState, Relevance, WATCHED_KEYS};
use crate::stats;
use crate::MonError;

/// Writes per placement transaction: each adds at most one compare (its key's revision)
/// and one operation; the transaction also carries the `pg/config` and lease guards.
const PLAN_BATCH: usize = txn::batch_len(txn::DEFAULT_MAX_TXN_OPS, 2);
/// Writes per stats transaction: one operation each, plus the lease guard.
const STATS_BATCH: usize = txn::batch_len(txn::DEFAULT_MAX_TXN_OPS, 1);
/// A session that lasted this long was healthy: the next failure starts a fresh backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);
/// Metrics text of a monitor that is not master (the master serves the cluster's numbers).
const NOT_MASTER_METRICS: &str =
    "# HELP vitastor_mon_master 1 on the master monitor\n# TYPE vitastor_mon_master gauge\nvitastor_mon_master 0\n";

/// Runs `fut` with the per-call bound; every etcd request goes through this.
async fn call<T>(
    timeout: Duration,
    name: &'static str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, MonError> {
    Ok(vitastor_etcd::bounded(timeout, name, fut).await?)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs sessions until `shutdown` turns true (then the lease is revoked, so another monitor
/// takes over at once).
pub async fn run(opts: MonOptions, metrics: MetricsText, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    loop {
        set_metrics(&metrics, NOT_MASTER_METRICS.to_owned());
        let started = Instant::now();
        match session(&opts, &metrics, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => warn!("etcd session ended: {e}"),
        }
        set_metrics(&metrics, NOT_MASTER_METRICS.to_owned());
        if started.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        tokio::select! {
            _ = sleep(backoff.next_wait()) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn set_metrics(metrics: &MetricsText, text: String) {
    if let Ok(mut m) = metrics.lock() {
        *m = text;
    }
}

/// The IP this host uses to reach the first etcd endpoint (a connected UDP socket sends
/// nothing; the kernel just picks the route).
fn local_ips(endpoints: &[String]) -> Vec<String> {
    let first = endpoints
        .first()
        .map(|e| e.trim_start_matches("http://").to_owned());
    let ip = first.and_then(|hp| {
        let addr = hp.to_socket_addrs().ok()?.next()?;
        let bind = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let s = UdpSocket::bind(bind).ok()?;
        s.connect(addr).ok()?;
        Some(s.local_addr().ok()?.ip().to_string())
    });
    ip.into_iter().collect()
}

/// One connected session: the client and the lease.
struct Session {
    client: Client,
    prefix: String,
    timeout: Duration,
    lease: Lease,
    ka_tick: Interval,
}

async fn session(
    opts: &MonOptions,
    metrics: &MetricsText,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), MonError> {
    let t = opts.call_timeout;
    let mut client = vitastor_etcd::connect(&opts.endpoints, t).await?;
    let global_key = keys::full(&opts.prefix, keys::CONFIG_GLOBAL);
    let got = call(t, "get config/global", client.get(global_key, None)).await?;
    let global = got
        .kvs()
        .first()
        .map_or(Value::Null, |kv| decode(keys::CONFIG_GLOBAL, kv.value()).0);
    let (tunables, notes) = Tunables::resolve(&opts.overrides, &global);
    for n in notes {
        warn!("{n}");
    }
    let lease = Lease::grant(&mut client, tunables.mon_ttl, t).await?;
    let mut ka_tick = interval(tunables.mon_ttl / 3);
    ka_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ka_tick.tick().await;
    let mut s = Session {
        client,
        prefix: opts.prefix.clone(),
        timeout: t,
        lease,
        ka_tick,
    };
    let result = s.lead(opts, tunables, metrics, shutdown).await;
    if result.is_err() {
        // Best effort: a session that failed while master (a cancelled watch, say) must not
        // leave its key to block the next campaign, ours or another monitor's, for a TTL.
        let _ = s.lease.revoke(&mut s.client).await;
    }
    result
}

impl Session {
    /// Campaigns until master (or shutdown), then runs the master loop.
    async fn lead(
        &mut self,
        opts: &MonOptions,
        tunables: Tunables,
        metrics: &MetricsText,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), MonError> {
        let me = json!({"ip": local_ips(&opts.endpoints), "id": self.lease.id()});
        let mut logged_holder = None;
        loop {
            match self.campaign(&me).await? {
                None => break,
                Some((holder, rev)) => {
                    if logged_holder.as_ref() != Some(&holder) {
                        info!("standing by: mon/master is held by {holder}");
                        logged_holder = Some(holder);
                    }
                    if self
                        .wait_for_vacancy(rev, tunables.mon_ttl, shutdown)
                        .await?
                    {
                        return self.resign().await;
                    }
                }
            }
        }
        info!("became master (lease {:x})", self.lease.id());
        let mut master = Master::new(self, opts.clone(), tunables, metrics.clone());
        master.run(shutdown).await
    }

    fn key(&self, rel: &str) -> String {
        keys::full(&self.prefix, rel)
    }

    /// One keepalive round trip; an expired lease ends the session.
    async fn keep_alive(&mut self) -> Result<(), MonError> {
        if !self.lease.keep_alive().await? {
            return Err(MonError::LeaseExpired(self.lease.id()));
        }
        Ok(())
    }

    /// Best effort: lets another monitor take over now instead of after the TTL.
    async fn resign(&mut self) -> Result<(), MonError> {
        if let Err(e) = self.lease.revoke(&mut self.client).await {
            warn!("shutdown: {e}");
        }
        info!("stopped");
        Ok(())
    }

    /// Tries to take `mon/master`. `None`: we are master; else the holder's value and the
    /// revision to watch from.
    async fn campaign(&mut self, me: &Value) -> Result<Option<(String, i64)>, MonError> {
        let key = self.key(keys::MON_MASTER);
        let txn = txn::create(key.clone(), me.to_string(), self.lease.id())
            .or_else([TxnOp::get(key, None)]);
        let reply = call(self.timeout, "campaign", self.client.txn(txn)).await?;
        if reply.succeeded() {
            return Ok(None);
        }
        let rev = reply.header().map_or(0, |h| h.revision());
        let holder = reply
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Some((holder, rev)))
    }

    /// Waits until `mon/master` is deleted (or one TTL passes), keeping our lease alive.
    /// Returns true on shutdown.
    async fn wait_for_vacancy(
        &mut self,
        rev: i64,
        ttl: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, MonError> {
        let mut master = Watch::start(
            &mut self.client,
            self.timeout,
            &self.prefix,
            keys::MON_MASTER,
            false,
            rev + 1,
        )
        .await?;
        let recheck = Instant::now() + ttl;
        let result = loop {
            tokio::select! {
                _ = self.ka_tick.tick() => self.keep_alive().await?,
                kvs = master.next() => {
                    if kvs?.iter().any(|kv| kv.value.is_none()) {
                        break false;
                    }
                }
                _ = sleep_until(recheck) => break false,
                _ = shutdown.changed() => break true,
            }
        };
        // Dropping the stream would also end the watch; cancel politely when etcd answers.
        let _ = master.cancel(self.timeout).await;
        Ok(result)
    }
}

/// Remembers which messages were logged last time, so a bad value is reported when it
/// appears, not on every round.
#[derive(Default)]
struct Dedup(BTreeSet<String>);

impl Dedup {
    fn fresh(&mut self, now: impl IntoIterator<Item = String>) -> Vec<String> {
        let now: BTreeSet<String> = now.into_iter().collect();
        let fresh = now.difference(&self.0).cloned().collect();
        self.0 = now;
        fresh
    }
}

/// One step of a plan's writes: guards, operations, and the same changes for the mirror.
#[derive(Default)]
struct Chunk {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    local: Vec<(String, Option<Value>)>,
    /// Bytes of keys and values written, for the "too large" report.
    bytes: usize,
}

/// Whether etcd refused a request for its size: etcd's own check answers "request is too
/// large", gRPC's receive limit (`--max-request-bytes` plus 512 KiB) "larger than max".
fn is_too_large(e: &vitastor_etcd::CallError) -> Option<String> {
    let vitastor_etcd::CallError::Failed { source, .. } = e else {
        return None;
    };
    let detail = vitastor_etcd::describe(source);
    (detail.contains("request is too large") || detail.contains("larger than max"))
        .then_some(detail)
}

struct Master<'a> {
    s: &'a mut Session,
    opts: MonOptions,
    tunables: Tunables,
    metrics: MetricsText,
    state: ClusterState,
    down: DownTracker,
    pool_errors: BTreeMap<u32, String>,
    /// Notes about `config/global` values, about the last round, and pool errors: each
    /// logged when it first appears.
    global_notes: Dedup,
    notes: Dedup,
    errors_logged: Dedup,
    /// Stats keys this master (or the previous one) wrote, to delete the stale ones.
    stats_keys: BTreeSet<String>,
    round_at: Option<Instant>,
    out_wake: Option<Instant>,
}

impl<'a> Master<'a> {
    fn new(
        s: &'a mut Session,
        opts: MonOptions,
        tunables: Tunables,
        metrics: MetricsText,
    ) -> Master<'a> {
        Master {
            s,
            opts,
            tunables,
            metrics,
            state: ClusterState::default(),
            down: DownTracker::default(),
            pool_errors: BTreeMap::new(),
            global_notes: Dedup::default(),
            notes: Dedup::default(),
            errors_logged: Dedup::default(),
            stats_keys: BTreeSet::new(),
            round_at: None,
            out_wake: None,
        }
    }

    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), MonError> {
        let rev = self.load().await?;
        // The watch covers the whole prefix (one stream instead of thirteen), filtered in
        // `on_event`.
        let mut changes = Watch::start(
            &mut self.s.client,
            self.s.timeout,
            &self.s.prefix,
            "",
            true,
            rev + 1,
        )
        .await?;
        self.down.update(&self.state, unix_now(), true);
        self.round_at = Some(Instant::now());
        let mut stats_tick = interval(self.tunables.stats_interval);
        stats_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let wake = match (self.round_at, self.out_wake) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = self.s.ka_tick.tick() => self.s.keep_alive().await?,
                kvs = changes.next() => {
                    for kv in kvs? {
                        self.on_event(kv);
                    }
                }
                _ = sleep_until(wake.unwrap_or(far)), if wake.is_some() => {
                    self.round_at = None;
                    self.out_wake = None;
                    self.round().await?;
                }
                _ = stats_tick.tick() => self.stats().await?,
                _ = shutdown.changed() => return self.s.resign().await,
            }
        }
    }

    /// Reads every watched key (and the names of existing aggregates) at one revision.
    async fn load(&mut self) -> Result<i64, MonError> {
        let mut ranges: Vec<Range> = WATCHED_KEYS
            .iter()
            .map(|&(key, prefix)| Range {
                key,
                prefix,
                keys_only: false,
            })
            .collect();
        for key in [keys::POOL_STATS_PREFIX, keys::INODE_STATS_PREFIX] {
            ranges.push(Range {
                key,
                prefix: true,
                keys_only: true,
            });
        }
        let snapshot =
            etcd_watch::load(&mut self.s.client, self.s.timeout, &self.s.prefix, &ranges).await?;
        let now = Instant::now().into_std();
        for kv in snapshot.kvs {
            if kv.key.starts_with(keys::POOL_STATS_PREFIX)
                || kv.key.starts_with(keys::INODE_STATS_PREFIX)
            {
                self.stats_keys.insert(kv.key);
                continue;
            }
            let (value, note) = decode(&kv.key, kv.value.as_deref().unwrap_or_default());
            if let Some(n) = note {
                warn!("{n}");
            }
            self.state.apply(&kv.key, Some(value), kv.mod_revision, now);
        }
        let rev = snapshot.revision;
        self.retune();
        Ok(rev)
    }

    fn on_event(&mut self, kv: Kv) {
        // Most of the prefix, such as the aggregates this master writes, is not ours to read.
        if !is_watched(&kv.key) {
            return;
        }
        let (key, rev) = (kv.key, kv.mod_revision);
        let value = match kv.value {
            None => None,
            Some(value) => {
                let (v, note) = decode(&key, &value);
                if let Some(n) = note {
                    warn!("{n}");
                }
                Some(v)
            }
        };
        let relevance = self
            .state
            .apply(&key, value, rev, Instant::now().into_std());
        if key == keys::CONFIG_GLOBAL {
            self.retune();
        }
        if relevance == Relevance::Placement && self.round_at.is_none() {
            // Not pushed back by later changes: a steady trickle must not starve placement.
            self.round_at = Some(Instant::now() + self.tunables.change_timeout);
        }
    }

    /// Applies `config/global` to the tunables the running master can change (the lease
    /// TTL and the stats period stay until the next session).
    fn retune(&mut self) {
        let (t, notes) = Tunables::resolve(&self.opts.overrides, &self.state.global);
        for n in self.global_notes.fresh(notes) {
            warn!("{n}");
        }
        self.tunables.osd_out_time = t.osd_out_time;
        self.tunables.change_timeout = t.change_timeout;
    }

    async fn round(&mut self) -> Result<(), MonError> {
        let now = unix_now();
        self.down.update(&self.state, now, false);
        let (out, next) = self
            .down
            .out(&self.state, self.tunables.osd_out_time.as_secs_f64(), now);
        // A little after the deadline, so the round sees the OSD as out.
        self.out_wake =
            next.map(|at| Instant::now() + Duration::from_secs_f64((at - now).max(0.0) + 0.05));
        let state = self.state.clone();
        let out_list = out.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            decide::plan(&state, &out_list, &PlacementOptions::default())
        });
        // The LP may take seconds: keep the lease alive meanwhile.
        let plan = loop {
            tokio::select! {
                r = &mut task => break r.map_err(|e| MonError::Task(e.to_string()))?,
                _ = self.s.ka_tick.tick() => self.s.keep_alive().await?,
            }
        };
        let mut notes = plan.notes.clone();
        notes.extend(plan.paused.iter().map(|p| {
            format!("pool {p}: PG count changes; PGs paused until every PG of the pool is offline")
        }));
        notes.extend(
            out.iter()
                .map(|o| format!("osd {o} is out (down longer than osd_out_time)")),
        );
        for n in self.notes.fresh(notes) {
            warn!("{n}");
        }
        for e in self.errors_logged.fresh(
            plan.pool_errors
                .iter()
                .map(|(p, e)| format!("pool {p} skipped: {e}")),
        ) {
            warn!("{e}");
        }
        self.pool_errors = plan.pool_errors.clone();
        if plan.is_empty() {
            return Ok(());
        }
        let written = match self.write_plan(&plan).await {
            Err(e @ MonError::RequestTooLarge { .. }) => {
                // The same plan would be refused again: wait for a change (or an operator).
                error!("placement not written: {e}");
                return Ok(());
            }
            other => other?,
        };
        if written {
            for r in &plan.reports {
                info!("{r}");
            }
            if plan.config.is_some() {
                info!(
                    "pg/config updated ({} history writes, {} history deletes)",
                    plan.history_puts.len(),
                    plan.history_deletes.len()
                );
            }
            if plan.last_clean.is_some() {
                info!("every PG is clean: history/last_clean_pgs updated");
            }
        } else {
            debug!("placement write lost a race (pg/config or pg/history changed); retrying");
            self.round_at = Some(Instant::now() + self.tunables.change_timeout);
        }
        Ok(())
    }

    /// Writes a plan in chunks (see the module docs). False if a guard failed.
    async fn write_plan(&mut self, plan: &Plan) -> Result<bool, MonError> {
        // `(key, new value or None to delete, mod_revision the key must still have)`, in
        // the order they must reach etcd.
        let mut items: Vec<(String, Option<Value>, Option<i64>)> = Vec::new();
        for h in &plan.history_puts {
            let value = serde_json::to_value(&h.value).unwrap_or(Value::Null);
            items.push((
                keys::pg_history(h.pool, h.pg),
                Some(value),
                Some(h.expect_rev),
            ));
        }
        if let Some(c) = &plan.config {
            items.push((keys::PG_CONFIG.to_owned(), Some(c.clone()), None));
        }
        if let Some(c) = &plan.last_clean {
            items.push((keys::LAST_CLEAN_PGS.to_owned(), Some(c.clone()), None));
        }
        for &(pool, pg, rev) in &plan.history_deletes {
            items.push((keys::pg_history(pool, pg), None, Some(rev)));
        }
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let mut chunk = Chunk::default();
            for (key, value, rev) in items.by_ref().take(PLAN_BATCH) {
                let full = self.s.key(&key);
                if let Some(rev) = rev {
                    chunk
                        .compares
                        .push(Compare::mod_revision(full.clone(), CompareOp::Equal, rev));
                }
                chunk.bytes += full.len();
                chunk.ops.push(match &value {
                    Some(v) => {
                        let v = v.to_string();
                        chunk.bytes += v.len();
                        TxnOp::put(full, v, None)
                    }
                    None => TxnOp::delete(full, None),
                });
                chunk.local.push((key, value));
            }
            // Read per chunk: an earlier chunk may have moved pg/config's revision.
            let cfg_guard = Compare::mod_revision(
                self.s.key(keys::PG_CONFIG),
                CompareOp::Equal,
                self.state.pg_config_rev,
            );
            chunk.compares.push(cfg_guard);
            if !self.commit(chunk, "write placement").await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One guarded transaction; on success the mirror gets the same changes at once (the
    /// watch echoes them later), so the next round does not work from stale revisions.
    /// False when a guard other than the lease failed; [`MonError::NotMaster`] when
    /// `mon/master` is no longer ours.
    async fn commit(&mut self, mut chunk: Chunk, what: &'static str) -> Result<bool, MonError> {
        chunk.compares.push(Compare::lease(
            self.s.key(keys::MON_MASTER),
            CompareOp::Equal,
            self.s.lease.id(),
        ));
        let master = self.s.key(keys::MON_MASTER);
        let txn = Txn::new()
            .when(chunk.compares)
            .and_then(chunk.ops)
            .or_else([TxnOp::get(master, None)]);
        let reply = match vitastor_etcd::bounded(self.s.timeout, what, self.s.client.txn(txn)).await
        {
            Ok(reply) => reply,
            Err(e) => {
                return Err(match is_too_large(&e) {
                    Some(detail) => MonError::RequestTooLarge {
                        what,
                        bytes: chunk.bytes,
                        suggest: (chunk.bytes * 2).div_ceil(1 << 20) << 20,
                        detail,
                    },
                    None => e.into(),
                })
            }
        };
        if !reply.succeeded() {
            // Tell a lost race (retry) from a lost mastership (stop at once).
            let ours = reply.op_responses().into_iter().any(|op| match op {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.lease() == self.s.lease.id()),
                _ => false,
            });
            return if ours {
                Ok(false)
            } else {
                Err(MonError::NotMaster)
            };
        }
        let rev = reply.header().map_or(0, |h| h.revision());
        let now = Instant::now().into_std();
        for (key, value) in chunk.local {
            self.state.apply(&key, value, rev, now);
        }
        Ok(true)
    }

    /// Aggregates stats, writes them and publishes the metrics text.
    async fn stats(&mut self) -> Result<(), MonError> {
        let agg = stats::aggregate(&self.state, &self.pool_errors, unix_now());
        let mut writes: Vec<(String, Option<String>)> =
            vec![(keys::STATS.to_owned(), Some(agg.stats.to_string()))];
        let mut fresh = BTreeSet::new();
        for (pool, v) in &agg.pools {
            fresh.insert(keys::pool_stats(*pool));
            writes.push((keys::pool_stats(*pool), Some(v.to_string())));
        }
        for ((pool, inode), v) in &agg.inodes {
            fresh.insert(keys::inode_stats(*pool, *inode));
            writes.push((keys::inode_stats(*pool, *inode), Some(v.to_string())));
        }
        for stale in self.stats_keys.difference(&fresh) {
            writes.push((stale.clone(), None));
        }
        for batch in writes.chunks(STATS_BATCH) {
            let chunk = Chunk {
                ops: batch
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => TxnOp::put(self.s.key(k), v.clone(), None),
                        None => TxnOp::delete(self.s.key(k), None),
                    })
                    .collect(),
                bytes: batch
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
                    .sum(),
                ..Chunk::default()
            };
            // Stats carry only the lease guard, which `commit` turns into an error.
            self.commit(chunk, "write stats").await?;
        }
        self.stats_keys = fresh;
        set_metrics(
            &self.metrics,
            format!(
                "# HELP vitastor_mon_master 1 on the master monitor\n# TYPE vitastor_mon_master gauge\nvitastor_mon_master 1\n{}",
                agg.metrics
            ),
        );
        Ok(())
    }
}
