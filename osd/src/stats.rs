//! Counters the OSD reports to etcd for the monitor (format in `vitastor_mon::stats`):
//! `osd/stats/<osd>` (op, sub-op and recovery counters, size, free, and the store geometry
//! the original Vitastor's tools read), `osd/inodestats/<osd>` (what this OSD served as
//! primary, per image) and `osd/space/<osd>` (raw bytes stored per image). Counters are
//! cumulative since the OSD started.
//!
//! `op_stats` and `subop_stats` are keyed by the original's op names
//! ([`Opcode::stat_name`]: `primary_write`, `write_stable`, `sec_read_bmp`…) and list every
//! op, zeros included, as the original does: its tools index them by name. As in the
//! original, `op_stats` counts every op this OSD executed (clients' and peers'), and
//! `subop_stats` the requests it sent to peers, counted when answered.
//!
//! `blockstore_stats` carries the local store's own counters that are not ops: so far
//! `big_entry_waits`, the writes that waited for an earlier whole-object write of the same
//! object to journal its entry (with `disable_data_fsync`), a cost the op times hide.
//!
//! `slow_ops_primary` and `slow_ops_secondary` are gauges, not counters: the ops in progress
//! for longer than `slow_log_interval` when they were last counted (client and recovery ops
//! this OSD leads, and peers' ops on its store). `vitastor-cli status` warns about them.
//!
//! It only counts and formats: recording is a few additions on the hot path, and the JSON
//! is built once per report interval. It never talks to etcd itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use vitastor_protocol::Opcode;

/// One cumulative counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Operations.
    pub count: u64,
    /// Total time in microseconds.
    pub usec: u64,
    /// Bytes moved.
    pub bytes: u64,
}

impl Counter {
    fn add(&mut self, start: Instant, bytes: u64) {
        self.count += 1;
        self.usec += start.elapsed().as_micros() as u64;
        self.bytes += bytes;
    }

    fn to_json(self) -> Value {
        json!({"count": self.count, "usec": self.usec, "bytes": self.bytes})
    }
}

/// What `osd/stats` says besides the counters.
#[derive(Debug, Clone, Copy)]
pub struct StoreReport<'a> {
    /// Unix time of the report, seconds.
    pub time: f64,
    /// Data capacity of the store, bytes.
    pub size: u64,
    /// Free data space, bytes.
    pub free: u64,
    /// Host name (the default failure domain).
    pub host: &'a str,
    /// Object size of the store.
    pub data_block_size: u32,
    /// Allocation-bitmap granularity of the store.
    pub bitmap_granularity: u32,
    /// The store's commit mode (`all`, `small`, `none`).
    pub immediate_commit: &'a str,
    /// The store's `Stats::big_entry_waits` (cumulative).
    pub big_entry_waits: u64,
}

/// Ops in progress for longer than `slow_log_interval`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowOps {
    /// Ops this OSD leads (clients' and recovery).
    pub primary: u64,
    /// Peers' ops on the local store.
    pub secondary: u64,
}

/// How many of some ops in progress are slow, and since when the oldest one runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slow {
    /// Ops started more than the limit ago.
    pub count: u64,
    /// The start of the oldest of them.
    pub oldest: Option<Instant>,
}

/// Counts the ops, given by their starts, that have run for more than `limit` at `now`.
pub fn count_slow(starts: impl Iterator<Item = Instant>, now: Instant, limit: Duration) -> Slow {
    starts
        .filter(|&t| now.saturating_duration_since(t) > limit)
        .fold(Slow::default(), |s, t| Slow {
            count: s.count + 1,
            oldest: Some(s.oldest.map_or(t, |o| o.min(t))),
        })
}

/// Kinds of per-image primary ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeOp {
    /// READ.
    Read,
    /// WRITE.
    Write,
    /// DELETE.
    Delete,
}

/// All counters of one OSD.
#[derive(Debug, Default)]
pub struct OsdStats {
    ops: BTreeMap<&'static str, Counter>,
    subops: BTreeMap<&'static str, Counter>,
    inodes: BTreeMap<(u32, u64), [Counter; 3]>,
    /// Degraded objects recovered and their bytes.
    pub recovered_degraded: Counter,
    /// Misplaced objects moved and their bytes.
    pub recovered_misplaced: Counter,
    slow: SlowOps,
}

impl OsdStats {
    /// A finished op this OSD executed, a client's (`primary_read`, …) or a peer's
    /// (`write_stable`, `sec_read_bmp`, …), that started at `start`.
    pub fn op(&mut self, name: &'static str, start: Instant, bytes: u64) {
        self.ops.entry(name).or_default().add(start, bytes);
    }

    /// A sub-op this OSD sent to a peer (`write_stable`, `sync`, …), answered now.
    pub fn subop(&mut self, name: &'static str, start: Instant, bytes: u64) {
        self.subops.entry(name).or_default().add(start, bytes);
    }

    /// A finished client op on image `inode` (with pool bits).
    pub fn inode(&mut self, inode: u64, op: InodeOp, start: Instant, bytes: u64) {
        let key = (
            vitastor_layout::pool_of(inode),
            vitastor_layout::inode_no_pool(inode),
        );
        self.inodes.entry(key).or_default()[op as usize].add(start, bytes);
    }

    /// A recovered object.
    pub fn recovered(&mut self, misplaced: bool, start: Instant, bytes: u64) {
        let c = if misplaced {
            &mut self.recovered_misplaced
        } else {
            &mut self.recovered_degraded
        };
        c.add(start, bytes);
    }

    /// Records the slow ops just counted; true when slow ops appeared or went away.
    pub fn set_slow_ops(&mut self, slow: SlowOps) -> bool {
        let was = self.slow != SlowOps::default();
        self.slow = slow;
        was != (slow != SlowOps::default())
    }

    /// `osd/stats/<osd>`. Only a started store reports, so `blockstore_ready` is always true.
    pub fn osd_json(&self, store: &StoreReport) -> Value {
        let group = |m: &BTreeMap<&'static str, Counter>| -> Value {
            let zeros = Opcode::ALL
                .iter()
                .map(|op| (op.stat_name(), Counter::default()));
            let mut all: BTreeMap<&str, Counter> = zeros.collect();
            all.extend(m.iter().map(|(k, c)| (*k, *c)));
            Value::Object(
                all.into_iter()
                    .map(|(k, c)| (k.to_string(), c.to_json()))
                    .collect(),
            )
        };
        json!({
            "time": store.time,
            "blockstore_ready": true,
            "size": store.size,
            "free": store.free,
            "data_block_size": store.data_block_size,
            "bitmap_granularity": store.bitmap_granularity,
            "immediate_commit": store.immediate_commit,
            "host": store.host,
            "version": env!("CARGO_PKG_VERSION"),
            "op_stats": group(&self.ops),
            "subop_stats": group(&self.subops),
            "recovery_stats": {
                "degraded": self.recovered_degraded.to_json(),
                "misplaced": self.recovered_misplaced.to_json(),
            },
            "slow_ops_primary": self.slow.primary,
            "slow_ops_secondary": self.slow.secondary,
            "blockstore_stats": {"big_entry_waits": store.big_entry_waits},
        })
    }

    /// `osd/inodestats/<osd>`.
    pub fn inode_json(&self) -> Value {
        let mut pools: Map<String, Value> = Map::new();
        for (&(pool, inode), c) in &self.inodes {
            let entry = pools
                .entry(pool.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert(
                    inode.to_string(),
                    json!({"read": c[0].to_json(), "write": c[1].to_json(), "delete": c[2].to_json()}),
                );
            }
        }
        Value::Object(pools)
    }
}

/// `osd/space/<osd>` from `(inode with pool bits, bytes)` pairs.
pub fn space_json(usage: impl IntoIterator<Item = (u64, u64)>) -> Value {
    let mut pools: BTreeMap<u32, BTreeMap<u64, u64>> = BTreeMap::new();
    for (inode, bytes) in usage {
        *pools
            .entry(vitastor_layout::pool_of(inode))
            .or_default()
            .entry(vitastor_layout::inode_no_pool(inode))
            .or_default() += bytes;
    }
    Value::Object(
        pools
            .into_iter()
            .map(|(p, m)| {
                let inner: Map<String, Value> = m
                    .into_iter()
                    .map(|(i, b)| (i.to_string(), json!(b)))
                    .collect();
                (p.to_string(), Value::Object(inner))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> StoreReport<'static> {
        StoreReport {
            time: 1.5,
            size: 100,
            free: 50,
            host: "h",
            data_block_size: 131072,
            bitmap_granularity: 4096,
            immediate_commit: "all",
            big_entry_waits: 0,
        }
    }

    #[test]
    fn exports_the_stores_big_entry_waits() {
        let s = OsdStats::default();
        assert_eq!(
            s.osd_json(&store())["blockstore_stats"]["big_entry_waits"],
            0
        );
        let v = s.osd_json(&StoreReport {
            big_entry_waits: 7,
            ..store()
        });
        assert_eq!(v["blockstore_stats"]["big_entry_waits"], 7);
    }

    #[test]
    fn formats() {
        let mut s = OsdStats::default();
        let t = Instant::now();
        s.op("primary_write", t, 4096);
        s.subop("write", t, 4096);
        s.inode((1 << 48) | 5, InodeOp::Write, t, 4096);
        let v = s.osd_json(&store());
        assert_eq!(v["op_stats"]["primary_write"]["bytes"], 4096);
        assert_eq!(v["subop_stats"]["write"]["count"], 1);
        assert_eq!(s.inode_json()["1"]["5"]["write"]["bytes"], 4096);
        let sp = space_json([((1 << 48) | 5, 10), ((1 << 48) | 5, 5), ((2 << 48) | 1, 7)]);
        assert_eq!(sp, json!({"1":{"5":15},"2":{"1":7}}));
    }

    #[test]
    fn counts_only_ops_older_than_the_limit() {
        let now = Instant::now();
        let ago = |s: u64| now - Duration::from_secs(s);
        let slow = count_slow(
            [ago(1), ago(11), ago(30), ago(10)].into_iter(),
            now,
            Duration::from_secs(10),
        );
        assert_eq!(
            slow,
            Slow {
                count: 2,
                oldest: Some(ago(30))
            }
        );
        assert_eq!(
            count_slow(std::iter::empty(), now, Duration::from_secs(10)),
            Slow::default()
        );
    }

    #[test]
    fn slow_ops_are_reported_and_their_coming_and_going_is_news() {
        let mut s = OsdStats::default();
        assert_eq!(s.osd_json(&store())["slow_ops_primary"], 0);
        assert!(s.set_slow_ops(SlowOps {
            primary: 2,
            secondary: 0
        }));
        assert!(
            !s.set_slow_ops(SlowOps {
                primary: 3,
                secondary: 1
            }),
            "still slow: no news"
        );
        let v = s.osd_json(&store());
        assert_eq!(
            (
                v["slow_ops_primary"].as_u64(),
                v["slow_ops_secondary"].as_u64()
            ),
            (Some(3), Some(1))
        );
        assert!(s.set_slow_ops(SlowOps::default()));
        assert!(!s.set_slow_ops(SlowOps::default()));
    }

    /// The fields and op names the original Vitastor's monitor, CLI and dashboards read.
    #[test]
    fn carries_what_the_originals_tools_read() {
        let mut s = OsdStats::default();
        s.op(Opcode::Read.stat_name(), Instant::now(), 4096);
        let v = s.osd_json(&store());
        for field in [
            "time",
            "blockstore_ready",
            "size",
            "free",
            "data_block_size",
            "bitmap_granularity",
            "immediate_commit",
            "host",
            "version",
        ] {
            assert!(!v[field].is_null(), "{field} missing in {v}");
        }
        assert_eq!(v["blockstore_ready"], true);
        assert_eq!(v["data_block_size"], 131072);
        assert_eq!(v["immediate_commit"], "all");
        for group in ["op_stats", "subop_stats"] {
            for name in [
                "primary_read",
                "primary_write",
                "primary_sync",
                "primary_delete",
                "read",
                "write",
                "write_stable",
                "sync",
                "stabilize",
                "rollback",
                "delete",
                "list",
                "ping",
                "sec_read_bmp",
            ] {
                assert!(v[group][name]["count"].is_u64(), "{group}.{name} in {v}");
            }
        }
        assert_eq!(v["op_stats"]["primary_read"]["count"], 1);
        assert_eq!(v["recovery_stats"]["misplaced"]["usec"], 0);
    }
}
