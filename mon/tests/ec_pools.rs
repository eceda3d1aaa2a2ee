//! `vitastor-mon` with EC and XOR pools on a real etcd (testkit): valid ones are placed with
//! one OSD per part from distinct failure domains and get `pool/stats` with their usable
//! fraction; impossible ones (more parts than failure domains, parity_chunks >= pg_size, an
//! unknown scheme, XOR with two parity chunks) get a clear `error` in `pool/stats` while the
//! monitor keeps running and placing the others.
//!
//! Waits are deadlines on conditions, never sleeps that decide the result.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use serde_json::{json, Value};
use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

mod common;
use common::{get, key, Mon};

/// Upper bound of every wait: far above what a healthy run needs.
const WAIT: Duration = Duration::from_secs(20);

async fn put(c: &mut Client, k: &str, v: &Value, lease: Option<i64>) {
    let opts = lease.map(|l| PutOptions::new().with_lease(l));
    c.put(key(k), v.to_string(), opts).await.unwrap();
}

/// Polls `k` until `check` accepts its value or [`WAIT`] passes.
async fn wait_key(c: &mut Client, k: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = get(c, k).await.filter(|v| check(v)) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {k}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_pools_are_placed_by_part_or_refused_with_a_reason() {
    let etcd = EtcdServer::start(EtcdOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut c = etcd_client::Client::connect([etcd.client_url()], None)
        .await
        .unwrap();
    // Six OSDs, two per host on three hosts.
    for n in 1..=6u64 {
        let host = format!("h{}", n.div_ceil(2));
        let lease = c.lease_grant(60, None).await.unwrap().id();
        let state = json!({"state":"up","addresses":["127.0.0.1"],"port":20000 + n,"host":host,
                           "primary_enabled":true,"blockstore_enabled":true});
        put(&mut c, &format!("osd/state/{n}"), &state, Some(lease)).await;
        let stats = json!({"time": 1.0e9, "size": 3u64 << 30, "free": 3u64 << 30, "host": host});
        put(&mut c, &format!("osd/stats/{n}"), &stats, None).await;
    }
    let pools = json!({
        "1": {"name":"ec21","scheme":"ec","pg_size":3,"parity_chunks":1,"pg_minsize":2,"pg_count":8},
        "2": {"name":"ec42host","scheme":"jerasure","pg_size":6,"parity_chunks":2,"pg_minsize":5,"pg_count":8},
        "3": {"name":"allparity","scheme":"ec","pg_size":3,"parity_chunks":3,"pg_minsize":3,"pg_count":8},
        "4": {"name":"rs","scheme":"reed-solomon","pg_size":3,"parity_chunks":1,"pg_minsize":2,"pg_count":8},
        "5": {"name":"xor2","scheme":"xor","pg_size":4,"parity_chunks":2,"pg_minsize":3,"pg_count":8},
        "6": {"name":"ec42osd","scheme":"jerasure","pg_size":6,"parity_chunks":2,"pg_minsize":5,"pg_count":8,
              "failure_domain":"osd"},
        "7": {"name":"xor21","scheme":"xor","pg_size":3,"pg_minsize":2,"pg_count":8},
    });
    put(&mut c, "config/pools", &pools, None).await;
    let mut mon = Mon::quick(&etcd, &dir, "mon", &[]);

    let cfg = wait_key(&mut c, "pg/config", |v| {
        ["1", "6", "7"]
            .iter()
            .all(|p| v["items"][p].as_object().is_some_and(|m| m.len() == 8))
    })
    .await;
    let host = |o: u64| o.div_ceil(2);
    for (pool, size, by_host) in [("1", 3, true), ("6", 6, false), ("7", 3, true)] {
        for (pg, item) in cfg["items"][pool].as_object().unwrap() {
            let set: Vec<u64> = item["osd_set"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_u64().unwrap())
                .collect();
            assert_eq!(set.len(), size, "pool {pool} pg {pg}: {item}");
            assert!(set.iter().all(|&o| o != 0), "pool {pool} pg {pg}: {item}");
            let domains: BTreeSet<u64> = set
                .iter()
                .map(|&o| if by_host { host(o) } else { o })
                .collect();
            assert_eq!(
                domains.len(),
                size,
                "pool {pool} pg {pg}: one part per domain"
            );
        }
    }
    for bad in ["2", "3", "4", "5"] {
        assert!(cfg["items"].get(bad).is_none(), "pool {bad} placed: {cfg}");
    }

    for (pool, words) in [
        ("2", &["needs 5 failure domains", "found 3"][..]),
        ("3", &["parity_chunks", "not in 1..pg_size"][..]),
        ("4", &["unknown scheme", "reed-solomon"][..]),
        ("5", &["xor", "1 parity chunk"][..]),
    ] {
        let st = wait_key(&mut c, &format!("pool/stats/{pool}"), |v| {
            v.get("error").is_some()
        })
        .await;
        let e = st["error"].as_str().unwrap();
        assert!(words.iter().all(|w| e.contains(w)), "pool {pool}: {e}");
    }

    let st = wait_key(&mut c, "pool/stats/1", |v| v.get("total_raw").is_some()).await;
    assert_eq!(
        (&st["scheme"], &st["pg_size"], &st["parity_chunks"]),
        (&json!("ec"), &json!(3), &json!(1)),
        "{st}"
    );
    let usable = st["raw_to_usable"].as_f64().unwrap();
    assert!((usable - 2.0 / 3.0).abs() < 1e-9, "{st}");
    let st = wait_key(&mut c, "pool/stats/6", |v| v.get("total_raw").is_some()).await;
    assert_eq!(st["total_raw"], 6 * (3u64 << 30), "{st}");
    assert!((st["raw_to_usable"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-9);
    let st = wait_key(&mut c, "pool/stats/7", |v| v.get("total_raw").is_some()).await;
    assert_eq!(
        (&st["scheme"], &st["parity_chunks"]),
        (&json!("xor"), &json!(1))
    );

    // A few more stats rounds with the bad pools still there: the monitor stays up.
    let first = get(&mut c, "pool/stats/2").await.unwrap()["time"].clone();
    wait_key(&mut c, "pool/stats/2", |v| {
        v["time"] != first && v.get("error").is_some()
    })
    .await;
    assert!(mon.alive(), "the monitor must not exit on bad pools");
}
