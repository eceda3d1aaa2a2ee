//! Space and I/O stats of an EC 2+1 pool end to end (issue #13), with real etcd, a real
//! monitor and three real `vitastor-osd` processes: after whole-object writes and one
//! partial write that touches both data parts, then a SYNC,
//! - `osd/stats` of the OSDs count one `primary_write` per client write (not per part), and
//!   their `subop_stats` the part writes the primaries sent to peers, which the peers'
//!   `op_stats` count as executed;
//! - `inode/stats/1/<inode>` (the monitor's aggregate) shows the client's logical write
//!   count and bytes, and `raw_used` = the bytes of every part on every OSD, which is the
//!   logical space × (k+m)/k, as the original reports it;
//! - `pool/stats/1` has the same `used_raw`, `raw_to_usable` = k/(k+m) and the capacity of
//!   the three OSDs.
//!
//! Waits are deadlines on the reported values; no timing decides a result.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::INODE;
use serde_json::Value;
use vitastor_testkit::{Cluster, TestClient};

const PART: u64 = 128 << 10;
const K: u64 = 2;
const M: u64 = 1;
const OBJ: u64 = PART * K;
/// Objects written whole, one client WRITE each.
const WHOLE: u64 = 3;
/// The partial write: the last 4 KiB of part 0 and the first 4 KiB of part 1 of the next
/// object, so every part of that object exists too.
const PARTIAL_AT: u64 = WHOLE * OBJ + PART - 4096;
const PARTIAL_LEN: u64 = 8192;
const WAIT: Duration = Duration::from_secs(45);

fn cluster() -> Cluster {
    let mut o = common::options("ec-stats");
    o.osds = 3;
    o.pg_size = 3;
    o.scheme = "ec".into();
    o.parity_chunks = M as usize;
    o.pg_minsize = Some(K as usize);
    o.pg_count = 2;
    o.immediate_commit = "all".into();
    o.osd_size = 256 << 20;
    o.monitors = 1;
    Cluster::start(o).expect("cluster starts")
}

fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i / 512) as u8 ^ (i as u8).wrapping_mul(13) ^ seed.wrapping_mul(71))
        .collect()
}

/// `group.op.field` summed over every OSD's `osd/stats`.
fn osd_sum(osd_stats: &[(String, Value)], group: &str, ops: &[&str], field: &str) -> u64 {
    osd_stats
        .iter()
        .flat_map(|(_, v)| ops.iter().map(move |op| &v[group][op][field]))
        .map(|x| x.as_u64().unwrap_or(0))
        .sum()
}

/// Polls etcd until `check` of the values under `prefix` returns `Ok`; panics with the last
/// complaint and the values at the deadline.
fn wait_for(cl: &Cluster, prefix: &str, check: impl Fn(&[(String, Value)]) -> Result<(), String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let kvs = cl.get_prefix(prefix).expect("etcd get");
        let why = match check(&kvs) {
            Ok(()) => return,
            Err(why) => why,
        };
        assert!(
            Instant::now() < deadline,
            "{prefix}: {why}\n{}",
            kvs.iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn expect(what: &str, got: u64, want: u64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is {got}, want {want}"))
    }
}

#[test]
fn ec_2_1_stats_count_client_ops_and_every_part() {
    let cl = cluster();
    let mut c = TestClient::new(&cl);
    for o in 0..WHOLE {
        c.write(INODE, o * OBJ, &pattern(OBJ, o as u8))
            .unwrap_or_else(|e| panic!("write of object {o}: {e}"));
    }
    c.write(INODE, PARTIAL_AT, &pattern(PARTIAL_LEN, 9))
        .expect("partial write");
    c.sync_all().expect("sync");

    let writes = WHOLE + 1;
    let logical_bytes = WHOLE * OBJ + PARTIAL_LEN;
    // Every write touched both data parts, so each object has all k+m parts, each a whole
    // block on its OSD; the primary writes one of them itself and sends the others.
    let objects = WHOLE + 1;
    let raw = objects * (K + M) * PART;
    let sent_parts = writes * (K + M - 1);

    wait_for(&cl, "osd/stats/", |s| {
        expect("OSDs reporting", s.len() as u64, 3)?;
        expect(
            "primary_write count",
            osd_sum(s, "op_stats", &["primary_write"], "count"),
            writes,
        )?;
        expect(
            "primary_write bytes",
            osd_sum(s, "op_stats", &["primary_write"], "bytes"),
            logical_bytes,
        )?;
        let part_ops = ["write", "write_stable"];
        expect(
            "part writes sent (subop_stats)",
            osd_sum(s, "subop_stats", &part_ops, "count"),
            sent_parts,
        )?;
        expect(
            "part writes executed for peers (op_stats)",
            osd_sum(s, "op_stats", &part_ops, "count"),
            sent_parts,
        )?;
        expect(
            "part bytes executed for peers",
            osd_sum(s, "op_stats", &part_ops, "bytes"),
            osd_sum(s, "subop_stats", &part_ops, "bytes"),
        )
    });

    let inode_no = INODE & ((1 << 48) - 1);
    wait_for(&cl, &format!("inode/stats/1/{inode_no}"), |s| {
        let v = &s.first().ok_or("no inode/stats yet")?.1;
        let num = |path: &[&str]| path.iter().fold(v, |v, k| &v[k]).as_u64().unwrap_or(0);
        expect("write count", num(&["write", "count"]), writes)?;
        expect("write bytes", num(&["write", "bytes"]), logical_bytes)?;
        expect("raw_used", num(&["raw_used"]), raw)?;
        expect(
            "raw_used as logical space × (k+m)/k",
            num(&["raw_used"]),
            objects * OBJ * (K + M) / K,
        )
    });

    let osd_sizes: u64 = cl
        .get_prefix("osd/stats/")
        .expect("etcd get")
        .iter()
        .map(|(_, v)| v["size"].as_u64().unwrap_or(0))
        .sum();
    wait_for(&cl, "pool/stats/1", |s| {
        let v = &s.first().ok_or("no pool/stats yet")?.1;
        let num = |k: &str| v[k].as_u64().unwrap_or(0);
        expect("used_raw", num("used_raw"), raw)?;
        expect("total_raw (the OSDs' sizes)", num("total_raw"), osd_sizes)?;
        let free = num("free_raw");
        if free == 0 || free + raw > num("total_raw") {
            return Err(format!("free_raw {free} with {raw} used"));
        }
        let ratio = v["raw_to_usable"].as_f64().unwrap_or(0.0);
        if (ratio - K as f64 / (K + M) as f64).abs() > 1e-9 {
            return Err(format!("raw_to_usable {ratio}"));
        }
        expect("write count", num_at(v, "write", "count"), writes)?;
        expect("write bytes", num_at(v, "write", "bytes"), logical_bytes)
    });
}

fn num_at(v: &Value, a: &str, b: &str) -> u64 {
    v[a][b].as_u64().unwrap_or(0)
}
