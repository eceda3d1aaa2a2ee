//! Stats aggregation: per-OSD counters in, cluster, pool and image aggregates out.
//!
//! # What OSDs write (the monitor's input)
//! Counters are cumulative since the OSD started; a counter that goes down is taken as a
//! restart (the new value is the delta). Missing fields count as 0; entries that are not
//! objects are skipped.
//! - `osd/stats/<osd>` (not leased, rewritten every few seconds):
//!   `{"time":<unix secs>,"size":<bytes>,"free":<bytes>,"host":"<name>",
//!     "blockstore_ready":true,"data_block_size":N,"bitmap_granularity":N,
//!     "immediate_commit":"all","version":"<v>",
//!     "op_stats":{"<op>":{"count":N,"usec":N,"bytes":N},...},
//!     "subop_stats":{"<op>":{"count":N,"usec":N,"bytes":N},...},
//!     "recovery_stats":{"degraded":{"count":N,"bytes":N},"misplaced":{"count":N,"bytes":N}}}`.
//!   `<op>` names are the original's (`primary_read`, `primary_write`, `primary_sync`,
//!   `primary_delete`, `read`, `write`, `write_stable`, `sync`, `stabilize`, …) but any name
//!   is summed; the original's OSDs add `lat`/`bps`/`iops`, which are ignored (rates come
//!   from successive counters), and write `time` as a string: every number is read through
//!   `vitastor_layout::tolerant`. `size` is also the placement weight, `time` also dates a
//!   down OSD's last sign of life.
//! - `osd/inodestats/<osd>`: what this OSD served as primary, per image:
//!   `{"<pool>":{"<inode>":{"read":{"count":N,"usec":N,"bytes":N},"write":{...},"delete":{...}}}}`
//!   (`<inode>` without the pool bits). Keyed by OSD, not by pool as a line of
//!   `etcd-layout.md` says: every primary of a pool serves that pool's images, and a key
//!   with several writers would lose counters.
//! - `osd/space/<osd>`: raw bytes this OSD stores per image: `{"<pool>":{"<inode>":<bytes>}}`.
//!
//! # What the monitor writes (every `mon_stats_interval`)
//! A rate is `{"iops","bps","lat"}` (ops/s, bytes/s, µs per op over the last interval),
//! merged into the counter it derives from: `{"count","usec","bytes","iops","bps","lat"}`.
//! - `stats`: `{"time","osd_count","osd_up","total_raw","free_raw","op_stats":{..},
//!   "subop_stats":{..},"recovery_stats":{..}}` — counters summed over all OSDs, rates over
//!   up OSDs.
//! - `pool/stats/<pool>`: `{"time","name","scheme","pg_size","parity_chunks","pg_minsize",
//!   "pg_count","total_raw","free_raw","used_raw","raw_to_usable" (k/(k+m) for EC/XOR),
//!   "pg_states":{"active":N,...},
//!   "read":{..},"write":{..},"delete":{..}}`; for a pool the monitor cannot place:
//!   `{"time","error":"<why>"}`.
//! - `inode/stats/<pool>/<inode>`: `{"raw_used","read":{..},"write":{..},"delete":{..}}`.
//!
//! # What this module must never do
//! - Touch etcd or the clock: time comes in as arguments, so aggregation is a pure function.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{json, Map, Value};
use vitastor_layout::{parse_pools, tolerant, OsdState, PgState};

use crate::state::ClusterState;

/// Counter groups of `osd/stats`.
const OSD_GROUPS: [&str; 3] = ["op_stats", "subop_stats", "recovery_stats"];
/// Per-image operations of `osd/inodestats`.
const INODE_OPS: [&str; 3] = ["read", "write", "delete"];
/// Shortest interval between two snapshots that yields a rate: a faster rewrite (same
/// report seen twice) would divide by ~0.
const MIN_RATE_INTERVAL_SECS: f64 = 0.001;

/// One cumulative counter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counter {
    /// Operations.
    pub count: u64,
    /// Total time, µs.
    pub usec: u64,
    /// Total bytes.
    pub bytes: u64,
}

impl Counter {
    fn from_json(v: &Value) -> Option<Counter> {
        let f = |k: &str| tolerant::u64_field(v, k).unwrap_or(0);
        v.is_object().then(|| Counter {
            count: f("count"),
            usec: f("usec"),
            bytes: f("bytes"),
        })
    }

    fn add(&mut self, o: &Counter) {
        self.count = self.count.saturating_add(o.count);
        self.usec = self.usec.saturating_add(o.usec);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

/// A rate derived from two snapshots of a [`Counter`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    /// Operations per second.
    pub iops: f64,
    /// Bytes per second.
    pub bps: f64,
    /// Average latency, µs per operation (0 without operations).
    pub lat: f64,
}

impl Rate {
    fn between(prev: &Counter, cur: &Counter, secs: f64) -> Rate {
        // A counter that went down means the OSD restarted: everything since is new.
        let d = |a: u64, b: u64| if b >= a { b - a } else { b } as f64;
        let (dc, du, db) = (
            d(prev.count, cur.count),
            d(prev.usec, cur.usec),
            d(prev.bytes, cur.bytes),
        );
        Rate {
            iops: dc / secs,
            bps: db / secs,
            lat: if dc > 0.0 { du / dc } else { 0.0 },
        }
    }

    fn add(&mut self, o: &Rate) {
        // Latency of a sum: weighted by operations.
        let ops = self.iops + o.iops;
        self.lat = if ops > 0.0 {
            (self.lat * self.iops + o.lat * o.iops) / ops
        } else {
            0.0
        };
        self.iops = ops;
        self.bps += o.bps;
    }
}

#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    counters: BTreeMap<String, Counter>,
    rates: BTreeMap<String, Rate>,
}

/// Rates per OSD, from the arrival times of successive reports (the monitor's clock, so OSD
/// clock skew does not matter).
#[derive(Debug, Clone, Default)]
pub struct Rates {
    osd: BTreeMap<u64, Snapshot>,
    inodes: BTreeMap<u64, Snapshot>,
}

impl Rates {
    /// A new `osd/stats/<osd>` value arrived at `now`.
    pub fn observe_osd(&mut self, osd: u64, v: &Value, now: Instant) {
        observe(&mut self.osd, osd, flatten_osd(v), now);
    }

    /// A new `osd/inodestats/<osd>` value arrived at `now`.
    pub fn observe_inodes(&mut self, osd: u64, v: &Value, now: Instant) {
        observe(&mut self.inodes, osd, flatten_inodes(v), now);
    }
}

fn observe(
    map: &mut BTreeMap<u64, Snapshot>,
    osd: u64,
    counters: BTreeMap<String, Counter>,
    now: Instant,
) {
    let rates = match map.get(&osd) {
        Some(prev) => {
            let secs = now.saturating_duration_since(prev.at).as_secs_f64();
            if secs < MIN_RATE_INTERVAL_SECS {
                return;
            }
            counters
                .iter()
                .map(|(k, c)| {
                    let p = prev.counters.get(k).copied().unwrap_or_default();
                    (k.clone(), Rate::between(&p, c, secs))
                })
                .collect()
        }
        None => BTreeMap::new(),
    };
    map.insert(
        osd,
        Snapshot {
            at: now,
            counters,
            rates,
        },
    );
}

/// `osd/stats` counters as `group/op`.
fn flatten_osd(v: &Value) -> BTreeMap<String, Counter> {
    let mut out = BTreeMap::new();
    for g in OSD_GROUPS {
        for (op, c) in v.get(g).and_then(Value::as_object).into_iter().flatten() {
            if let Some(c) = Counter::from_json(c) {
                out.insert(format!("{g}/{op}"), c);
            }
        }
    }
    out
}

/// `osd/inodestats` counters as `pool/inode/op`.
fn flatten_inodes(v: &Value) -> BTreeMap<String, Counter> {
    let mut out = BTreeMap::new();
    for (pool, inodes) in v.as_object().into_iter().flatten() {
        for (inode, ops) in inodes.as_object().into_iter().flatten() {
            for op in INODE_OPS {
                if let Some(c) = ops.get(op).and_then(Counter::from_json) {
                    out.insert(format!("{pool}/{inode}/{op}"), c);
                }
            }
        }
    }
    out
}

/// What one aggregation produced.
#[derive(Debug, Clone, Default)]
pub struct Aggregates {
    /// Value of `stats`.
    pub stats: Value,
    /// Values of `pool/stats/<pool>`.
    pub pools: BTreeMap<u32, Value>,
    /// Values of `inode/stats/<pool>/<inode>`.
    pub inodes: BTreeMap<(u32, u64), Value>,
    /// Prometheus text exposition of the same numbers.
    pub metrics: String,
}

#[derive(Default)]
struct Sum {
    counter: Counter,
    rate: Rate,
}

impl Sum {
    fn json(&self) -> Value {
        json!({
            "count": self.counter.count, "usec": self.counter.usec, "bytes": self.counter.bytes,
            "iops": round2(self.rate.iops), "bps": round2(self.rate.bps), "lat": round2(self.rate.lat),
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Sums `name → counter` over snapshots; rates only over OSDs in `up`.
fn sum_snapshots<'a>(
    snaps: impl Iterator<Item = (&'a u64, &'a Snapshot)>,
    up: &BTreeSet<u64>,
) -> BTreeMap<String, Sum> {
    let mut out: BTreeMap<String, Sum> = BTreeMap::new();
    for (osd, s) in snaps {
        for (k, c) in &s.counters {
            let e = out.entry(k.clone()).or_default();
            e.counter.add(c);
            if up.contains(osd) {
                if let Some(r) = s.rates.get(k) {
                    e.rate.add(r);
                }
            }
        }
    }
    out
}

/// Computes every aggregate. `pool_errors` are the pools placement skipped, with the reason;
/// `now_unix` stamps the values.
pub fn aggregate(
    state: &ClusterState,
    pool_errors: &BTreeMap<u32, String>,
    now_unix: f64,
) -> Aggregates {
    let mut m = Metrics::default();
    let up: BTreeSet<u64> = state
        .osd_state
        .iter()
        .filter(|(n, v)| OsdState::from_json(&format!("osd/state/{n}"), v).is_ok_and(|s| s.is_up()))
        .map(|(n, _)| *n)
        .collect();
    let num = |v: &Value, k: &str| tolerant::u64_field(v, k).unwrap_or(0);

    // Cluster.
    let osds: BTreeSet<u64> = state
        .osd_stats
        .keys()
        .chain(state.osd_state.keys())
        .copied()
        .collect();
    let (mut total_raw, mut free_raw) = (0u64, 0u64);
    for &n in &osds {
        let stats = state.osd_stats.get(&n).cloned().unwrap_or(Value::Null);
        let host = stats
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let labels = format!("osd=\"{n}\",host=\"{}\"", esc(&host));
        m.add(
            "vitastor_osd_up",
            &labels,
            f64::from(u8::from(up.contains(&n))),
        );
        m.add(
            "vitastor_osd_size_bytes",
            &labels,
            num(&stats, "size") as f64,
        );
        m.add(
            "vitastor_osd_free_bytes",
            &labels,
            num(&stats, "free") as f64,
        );
        total_raw += num(&stats, "size");
        if up.contains(&n) {
            free_raw += num(&stats, "free");
        }
        if let Some(s) = state.rates.osd.get(&n) {
            for (k, c) in &s.counters {
                let (group, op) = k.split_once('/').unwrap_or(("", k));
                let l = format!("osd=\"{n}\",group=\"{group}\",op=\"{}\"", esc(op));
                m.add("vitastor_osd_ops_total", &l, c.count as f64);
                m.add("vitastor_osd_op_usec_total", &l, c.usec as f64);
                m.add("vitastor_osd_op_bytes_total", &l, c.bytes as f64);
            }
        }
    }
    let osd_sums = sum_snapshots(state.rates.osd.iter(), &up);
    let mut stats = Map::new();
    stats.insert("time".into(), json!(now_unix));
    stats.insert("osd_count".into(), json!(osds.len()));
    stats.insert("osd_up".into(), json!(up.len()));
    stats.insert("total_raw".into(), json!(total_raw));
    stats.insert("free_raw".into(), json!(free_raw));
    for g in OSD_GROUPS {
        let mut group = Map::new();
        for (k, s) in &osd_sums {
            if let Some(op) = k.strip_prefix(g).and_then(|r| r.strip_prefix('/')) {
                group.insert(op.to_owned(), s.json());
            }
        }
        stats.insert(g.into(), Value::Object(group));
    }

    // Images.
    let inode_sums = sum_snapshots(state.rates.inodes.iter(), &up);
    let mut space: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    for v in state.osd_space.values() {
        for (pool, inodes) in v.as_object().into_iter().flatten() {
            let Ok(pool) = pool.parse::<u32>() else {
                continue;
            };
            for (inode, bytes) in inodes.as_object().into_iter().flatten() {
                if let (Ok(inode), Some(b)) = (inode.parse::<u64>(), tolerant::u64_of(bytes)) {
                    *space.entry((pool, inode)).or_default() += b;
                }
            }
        }
    }
    let mut per_inode: BTreeMap<(u32, u64), BTreeMap<&str, &Sum>> = BTreeMap::new();
    for (k, s) in &inode_sums {
        let mut parts = k.splitn(3, '/');
        let (Some(pool), Some(inode), Some(op)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if let (Ok(pool), Ok(inode)) = (pool.parse::<u32>(), inode.parse::<u64>()) {
            per_inode.entry((pool, inode)).or_default().insert(op, s);
        }
    }
    let mut inodes = BTreeMap::new();
    let mut pool_io: BTreeMap<u32, BTreeMap<&str, Sum>> = BTreeMap::new();
    let all_inodes: BTreeSet<(u32, u64)> = per_inode.keys().chain(space.keys()).copied().collect();
    for key @ (pool, inode) in all_inodes {
        let raw_used = space.get(&key).copied().unwrap_or(0);
        let name = state
            .inode_config
            .get(&key)
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let labels = format!("pool=\"{pool}\",inode=\"{inode}\",name=\"{}\"", esc(name));
        m.add("vitastor_image_raw_used_bytes", &labels, raw_used as f64);
        let mut v = Map::new();
        v.insert("raw_used".into(), json!(raw_used));
        for op in INODE_OPS {
            let empty = Sum::default();
            let s = per_inode
                .get(&key)
                .and_then(|o| o.get(op))
                .copied()
                .unwrap_or(&empty);
            v.insert(op.into(), s.json());
            let l = format!("{labels},op=\"{op}\"");
            m.add("vitastor_image_ops_total", &l, s.counter.count as f64);
            m.add("vitastor_image_op_usec_total", &l, s.counter.usec as f64);
            m.add("vitastor_image_op_bytes_total", &l, s.counter.bytes as f64);
            m.add("vitastor_image_iops", &l, s.rate.iops);
            m.add("vitastor_image_bps", &l, s.rate.bps);
            let p = pool_io.entry(pool).or_default().entry(op).or_default();
            p.counter.add(&s.counter);
            p.rate.add(&s.rate);
        }
        inodes.insert(key, Value::Object(v));
    }

    // Pools.
    let (valid, _) = parse_pools(&state.pools);
    let (pgs, _) = state.pg_items();
    let mut pools = BTreeMap::new();
    for (&id, err) in pool_errors {
        pools.insert(id, json!({"time": now_unix, "error": err}));
        m.add("vitastor_pool_error", &format!("pool=\"{id}\""), 1.0);
    }
    for (&id, p) in valid.iter().filter(|(id, _)| !pool_errors.contains_key(id)) {
        let mut members = BTreeSet::new();
        let mut pg_states: BTreeMap<String, u64> = BTreeMap::new();
        for ((_, pg), item) in pgs.range((id, 0)..=(id, u32::MAX)) {
            members.extend(item.osd_set.iter().copied().filter(|&o| o != 0));
            let st = state
                .pg_state
                .get(&(id, *pg))
                .and_then(|v| PgState::from_json("pg/state", v).ok())
                .map_or_else(|| "offline".to_owned(), |s| s.state.join("+"));
            *pg_states.entry(st).or_default() += 1;
        }
        let size_of = |o: &u64, k| state.osd_stats.get(o).map_or(0, |s| num(s, k));
        let total: u64 = members.iter().map(|o| size_of(o, "size")).sum();
        let free: u64 = members
            .iter()
            .filter(|o| up.contains(o))
            .map(|o| size_of(o, "free"))
            .sum();
        let used: u64 = space
            .iter()
            .filter(|((pl, _), _)| *pl == id)
            .map(|(_, b)| b)
            .sum();
        let raw_to_usable = f64::from(p.data_chunks()) / f64::from(p.pg_size);
        let labels = format!("pool=\"{id}\",name=\"{}\"", esc(&p.name));
        m.add("vitastor_pool_pg_count", &labels, f64::from(p.pg_count));
        m.add("vitastor_pool_total_raw_bytes", &labels, total as f64);
        m.add("vitastor_pool_free_raw_bytes", &labels, free as f64);
        m.add("vitastor_pool_used_raw_bytes", &labels, used as f64);
        for (st, n) in &pg_states {
            m.add(
                "vitastor_pool_pgs",
                &format!("{labels},state=\"{}\"", esc(st)),
                *n as f64,
            );
        }
        let mut v = json!({
            "time": now_unix, "name": p.name, "scheme": format!("{:?}", p.scheme).to_lowercase(),
            "pg_size": p.pg_size, "parity_chunks": p.parity_chunks, "pg_minsize": p.pg_minsize,
            "pg_count": p.pg_count,
            "total_raw": total, "free_raw": free, "used_raw": used,
            "raw_to_usable": raw_to_usable, "pg_states": pg_states,
        });
        for op in INODE_OPS {
            let empty = Sum::default();
            let s = pool_io.get(&id).and_then(|o| o.get(op)).unwrap_or(&empty);
            v[op] = s.json();
            let l = format!("{labels},op=\"{op}\"");
            m.add("vitastor_pool_ops_total", &l, s.counter.count as f64);
            m.add("vitastor_pool_op_bytes_total", &l, s.counter.bytes as f64);
            m.add("vitastor_pool_iops", &l, s.rate.iops);
            m.add("vitastor_pool_bps", &l, s.rate.bps);
        }
        pools.insert(id, v);
    }
    Aggregates {
        stats: Value::Object(stats),
        pools,
        inodes,
        metrics: m.render(),
    }
}

/// Prometheus text exposition (format 0.0.4), families in a fixed order.
#[derive(Default)]
struct Metrics {
    samples: BTreeMap<&'static str, Vec<(String, f64)>>,
}

/// `(name, type, help)` of every family the monitor exports.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "vitastor_osd_up",
        "gauge",
        "1 while the OSD holds its osd/state lease",
    ),
    ("vitastor_osd_size_bytes", "gauge", "OSD data capacity"),
    ("vitastor_osd_free_bytes", "gauge", "OSD free space"),
    (
        "vitastor_osd_ops_total",
        "counter",
        "Operations by OSD, group and op",
    ),
    (
        "vitastor_osd_op_usec_total",
        "counter",
        "Time spent in operations, microseconds",
    ),
    (
        "vitastor_osd_op_bytes_total",
        "counter",
        "Bytes moved by operations",
    ),
    (
        "vitastor_pool_error",
        "gauge",
        "1 when the monitor cannot place the pool (see pool/stats)",
    ),
    ("vitastor_pool_pg_count", "gauge", "PGs of the pool"),
    ("vitastor_pool_pgs", "gauge", "PGs of the pool by state"),
    (
        "vitastor_pool_total_raw_bytes",
        "gauge",
        "Capacity of the OSDs the pool uses",
    ),
    (
        "vitastor_pool_free_raw_bytes",
        "gauge",
        "Free space of the up OSDs the pool uses",
    ),
    (
        "vitastor_pool_used_raw_bytes",
        "gauge",
        "Raw bytes stored by the pool's images",
    ),
    (
        "vitastor_pool_ops_total",
        "counter",
        "Client operations on the pool's images",
    ),
    (
        "vitastor_pool_op_bytes_total",
        "counter",
        "Client bytes on the pool's images",
    ),
    (
        "vitastor_pool_iops",
        "gauge",
        "Client operations per second",
    ),
    ("vitastor_pool_bps", "gauge", "Client bytes per second"),
    (
        "vitastor_image_raw_used_bytes",
        "gauge",
        "Raw bytes stored by the image",
    ),
    (
        "vitastor_image_ops_total",
        "counter",
        "Client operations on the image",
    ),
    (
        "vitastor_image_op_usec_total",
        "counter",
        "Time spent in client operations, microseconds",
    ),
    (
        "vitastor_image_op_bytes_total",
        "counter",
        "Client bytes on the image",
    ),
    (
        "vitastor_image_iops",
        "gauge",
        "Client operations per second on the image",
    ),
    (
        "vitastor_image_bps",
        "gauge",
        "Client bytes per second on the image",
    ),
];

impl Metrics {
    fn add(&mut self, name: &'static str, labels: &str, v: f64) {
        self.samples
            .entry(name)
            .or_default()
            .push((labels.to_owned(), v));
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            let Some(samples) = self.samples.get(name) else {
                continue;
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        out
    }
}

/// Escapes a Prometheus label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn osd_stats(writes: u64) -> Value {
        json!({"time": 1.0, "size": 1000, "free": 400, "host": "h1",
               "op_stats": {"primary_write": {"count": writes, "usec": writes * 10, "bytes": writes * 4096}},
               "subop_stats": {}, "recovery_stats": {"degraded": {"count": 1, "bytes": 2}}})
    }

    #[test]
    fn rates_from_deltas_and_restarts() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.observe_osd(1, &osd_stats(100), t0);
        r.observe_osd(1, &osd_stats(300), t0 + Duration::from_secs(2));
        let rate = r.osd[&1].rates["op_stats/primary_write"];
        assert_eq!((rate.iops, rate.bps, rate.lat), (100.0, 409600.0, 10.0));
        // Restart: counters start again from 0.
        r.observe_osd(1, &osd_stats(50), t0 + Duration::from_secs(3));
        assert_eq!(r.osd[&1].rates["op_stats/primary_write"].iops, 50.0);
    }

    #[test]
    fn aggregates_and_metrics() {
        let t0 = Instant::now();
        let mut s = ClusterState::default();
        s.apply(
            "osd/state/1",
            Some(json!({"state":"up","addresses":["127.0.0.1"],"port":1})),
            1,
            t0,
        );
        s.apply("osd/stats/1", Some(osd_stats(10)), 1, t0);
        s.apply(
            "config/pools",
            Some(json!({"1":{"name":"p","pg_size":1,"pg_minsize":1,"pg_count":1}})),
            1,
            t0,
        );
        s.apply(
            "pg/config",
            Some(json!({"items":{"1":{"1":{"osd_set":[1],"primary":1}}}})),
            1,
            t0,
        );
        s.apply("config/inode/1/5", Some(json!({"name":"img"})), 1, t0);
        let ino = |n: u64| json!({"1":{"5":{"write":{"count":n,"usec":n,"bytes":n*512}}}});
        s.apply("osd/inodestats/1", Some(ino(1)), 1, t0);
        s.apply(
            "osd/inodestats/1",
            Some(ino(11)),
            2,
            t0 + Duration::from_secs(1),
        );
        s.apply("osd/space/1", Some(json!({"1":{"5":8192}})), 1, t0);
        let errors = BTreeMap::from([(2, "pool 2: bad".to_owned())]);
        let a = aggregate(&s, &errors, 5.0);
        assert_eq!(a.stats["osd_up"], 1);
        assert_eq!(a.stats["op_stats"]["primary_write"]["count"], 10);
        assert_eq!(a.stats["recovery_stats"]["degraded"]["bytes"], 2);
        let i = &a.inodes[&(1, 5)];
        assert_eq!(i["raw_used"], 8192);
        assert_eq!(i["write"]["count"], 11);
        assert_eq!(i["write"]["iops"], 10.0);
        assert_eq!(a.pools[&1]["used_raw"], 8192);
        assert_eq!(a.pools[&1]["total_raw"], 1000);
        assert_eq!(a.pools[&1]["pg_states"]["offline"], 1);
        assert_eq!(a.pools[&1]["write"]["bytes"], 11 * 512);
        assert_eq!(a.pools[&2]["error"], "pool 2: bad");
        assert!(
            a.metrics
                .contains("vitastor_osd_up{osd=\"1\",host=\"h1\"} 1\n"),
            "{}",
            a.metrics
        );
        assert!(a.metrics.contains(
            "vitastor_image_ops_total{pool=\"1\",inode=\"5\",name=\"img\",op=\"write\"} 11\n"
        ));
        assert!(a.metrics.contains("vitastor_pool_error{pool=\"2\"} 1\n"));
    }
}
