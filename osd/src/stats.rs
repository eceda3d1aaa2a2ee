//! Counters the OSD reports to etcd for the monitor (format in `vitastor_mon::stats`):
//! `osd/stats/<osd>` (op, sub-op and recovery counters, size, free), `osd/inodestats/<osd>`
//! (what this OSD served as primary, per image) and `osd/space/<osd>` (raw bytes stored per
//! image). Counters are cumulative since the OSD started.
//!
//! It only counts and formats: recording is a few additions on the hot path, and the JSON
//! is built once per report interval. It never talks to etcd itself.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Map, Value};

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
}

impl OsdStats {
    /// A finished client op (`primary_read`, …) that started at `start`.
    pub fn op(&mut self, name: &'static str, start: Instant, bytes: u64) {
        self.ops.entry(name).or_default().add(start, bytes);
    }

    /// A finished secondary op (`read`, `write`, `sync`, …).
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

    /// `osd/stats/<osd>`.
    pub fn osd_json(&self, time: f64, size: u64, free: u64, host: &str) -> Value {
        let group = |m: &BTreeMap<&'static str, Counter>| -> Value {
            Value::Object(
                m.iter()
                    .map(|(k, c)| (k.to_string(), c.to_json()))
                    .collect(),
            )
        };
        json!({
            "time": time,
            "size": size,
            "free": free,
            "host": host,
            "op_stats": group(&self.ops),
            "subop_stats": group(&self.subops),
            "recovery_stats": {
                "degraded": {"count": self.recovered_degraded.count, "bytes": self.recovered_degraded.bytes},
                "misplaced": {"count": self.recovered_misplaced.count, "bytes": self.recovered_misplaced.bytes},
            },
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

    #[test]
    fn formats() {
        let mut s = OsdStats::default();
        let t = Instant::now();
        s.op("primary_write", t, 4096);
        s.subop("write", t, 4096);
        s.inode((1 << 48) | 5, InodeOp::Write, t, 4096);
        let v = s.osd_json(1.5, 100, 50, "h");
        assert_eq!(v["op_stats"]["primary_write"]["bytes"], 4096);
        assert_eq!(v["subop_stats"]["write"]["count"], 1);
        assert_eq!(s.inode_json()["1"]["5"]["write"]["bytes"], 4096);
        let sp = space_json([((1 << 48) | 5, 10), ((1 << 48) | 5, 5), ((2 << 48) | 1, 7)]);
        assert_eq!(sp, json!({"1":{"5":15},"2":{"1":7}}));
    }
}
