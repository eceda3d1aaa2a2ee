//! `vitastor-mon` against a real etcd (testkit). The tests write what OSDs would write
//! (`osd/state` under leases, `osd/stats`, `pg/state`) and check what the monitor does.
//!
//! Timings use short options (`--etcd_mon_ttl 3`, `--mon_change_timeout 200`, …); every
//! wait is a generous deadline on a condition, never a fixed sleep that decides the result.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions};
use serde_json::{json, Value};
use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

mod common;
use common::{get, key, wait_within, Mon, PREFIX};

/// Upper bound of every wait: far above what a healthy run needs.
const WAIT: Duration = Duration::from_secs(20);

fn etcd() -> EtcdServer {
    EtcdServer::start(EtcdOptions::default()).unwrap()
}

async fn client(etcd: &EtcdServer) -> Client {
    Client::connect([etcd.client_url()], None).await.unwrap()
}

async fn put(c: &mut Client, k: &str, v: impl ToString) {
    c.put(key(k), v.to_string(), None).await.unwrap();
}

async fn put_leased(c: &mut Client, k: &str, v: &Value, lease: i64) {
    c.put(
        key(k),
        v.to_string(),
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
}

async fn get_prefix(c: &mut Client, k: &str) -> BTreeMap<String, Value> {
    let r = c
        .get(key(k), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    r.kvs()
        .iter()
        .map(|kv| {
            let k = String::from_utf8_lossy(kv.key())
                .trim_start_matches(&format!("{PREFIX}/"))
                .to_owned();
            (k, serde_json::from_slice(kv.value()).unwrap_or(Value::Null))
        })
        .collect()
}

/// Polls `check` until it returns `Some` or [`WAIT`] passes.
async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_within(what, WAIT, check).await
}

/// The OSD sets of pool `pool` in `pg/config`: pg → (set, primary, pause).
fn pool_pgs(cfg: &Value, pool: u32) -> BTreeMap<u32, (Vec<u64>, u64, bool)> {
    cfg["items"][pool.to_string()]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(pg, v)| {
            let set = v["osd_set"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_u64().unwrap())
                .collect();
            (
                pg.parse().unwrap(),
                (
                    set,
                    v["primary"].as_u64().unwrap(),
                    v["pause"].as_bool().unwrap_or(false),
                ),
            )
        })
        .collect()
}

/// Waits until `pg/config` holds `pgs` PGs of pool `pool`; returns that `pg/config`.
async fn wait_placed(c: &Client, what: &str, pool: u32, pgs: usize) -> Value {
    wait_for(what, || {
        let mut c = c.clone();
        async move {
            get(&mut c, "pg/config")
                .await
                .filter(|v| pool_pgs(v, pool).len() == pgs)
        }
    })
    .await
}

/// Starts OSD `n` on `host`: a leased `osd/state` and a 1 GiB `osd/stats`. Returns the lease.
async fn osd_up(c: &mut Client, n: u64, host: &str) -> i64 {
    let lease = c.lease_grant(60, None).await.unwrap().id();
    let state = json!({"state":"up","addresses":["127.0.0.1"],"port":20000 + n,"host":host,
                       "primary_enabled":true,"blockstore_enabled":true});
    put_leased(c, &format!("osd/state/{n}"), &state, lease).await;
    put(
        c,
        &format!("osd/stats/{n}"),
        json!({"time": 1.0e9, "size": 1u64 << 30, "free": 1u64 << 29, "host": host}),
    )
    .await;
    lease
}

/// OSDs 1..=2*hosts, two per host `h1`, `h2`, …; returns their leases.
async fn cluster(c: &mut Client, hosts: u64) -> BTreeMap<u64, i64> {
    let mut leases = BTreeMap::new();
    for n in 1..=hosts * 2 {
        leases.insert(n, osd_up(c, n, &format!("h{}", n.div_ceil(2))).await);
    }
    leases
}

/// A fresh etcd, a temporary directory for monitor logs, a client, and OSDs 1..=2*hosts
/// (see [`cluster`]) with their leases.
async fn setup(hosts: u64) -> (EtcdServer, tempfile::TempDir, Client, BTreeMap<u64, i64>) {
    let etcd = etcd();
    let dir = tempfile::tempdir().unwrap();
    let mut c = client(&etcd).await;
    let leases = cluster(&mut c, hosts).await;
    (etcd, dir, c, leases)
}

/// `config/pools` with pool 1 `p`: rep2, pg_minsize 1, `pg_count` PGs.
fn pool_p(pg_count: u32) -> Value {
    json!({"1":{"name":"p","pg_size":2,"pg_minsize":1,"pg_count":pg_count}})
}

fn host_of(osd: u64) -> u64 {
    osd.div_ceil(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_down_out_and_back() {
    let (etcd, dir, mut c, leases) = setup(3).await;
    put(&mut c, "config/pools", json!({"1":{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":24,"failure_domain":"host"}})).await;
    let _mon = Mon::quick(&etcd, &dir, "mon", &["--osd_out_time", "4"]);

    let cfg = wait_placed(&c, "pg/config", 1, 24).await;
    let pgs = pool_pgs(&cfg, 1);
    let mut load: BTreeMap<u64, usize> = BTreeMap::new();
    for (set, primary, pause) in pgs.values() {
        assert_eq!(set.len(), 2);
        assert_ne!(
            host_of(set[0]),
            host_of(set[1]),
            "failure domain violated: {set:?}"
        );
        assert!(set.contains(primary) && !pause);
        for o in set {
            *load.entry(*o).or_default() += 1;
        }
    }
    // 48 slots over 6 equal OSDs.
    assert_eq!(load.len(), 6);
    assert!(load.values().all(|&l| l == 8), "not uniform: {load:?}");
    let master = get(&mut c, "mon/master").await.unwrap();
    assert!(
        master["id"].as_i64().is_some() && master["ip"].is_array(),
        "{master}"
    );

    // OSD 1 goes down: it loses its primaries at once but keeps its slots until it is out.
    c.lease_revoke(leases[&1]).await.unwrap();
    let cfg = wait_for("primaries moved off OSD 1", || {
        let mut c = c.clone();
        async move {
            let v = get(&mut c, "pg/config").await?;
            pool_pgs(&v, 1)
                .values()
                .all(|(_, p, _)| *p != 1)
                .then_some(v)
        }
    })
    .await;
    assert!(
        pool_pgs(&cfg, 1).values().any(|(s, _, _)| s.contains(&1)),
        "OSD 1 was taken out too early"
    );

    // After osd_out_time it is out: its PGs are re-placed, with history.
    let cfg = wait_for("OSD 1 out", || {
        let mut c = c.clone();
        async move {
            let v = get(&mut c, "pg/config").await?;
            pool_pgs(&v, 1)
                .values()
                .all(|(s, _, _)| !s.contains(&1))
                .then_some(v)
        }
    })
    .await;
    for (set, _, _) in pool_pgs(&cfg, 1).values() {
        assert_ne!(host_of(set[0]), host_of(set[1]), "{set:?}");
    }
    let history = get_prefix(&mut c, "pg/history/1/").await;
    let moved: Vec<&Value> = history
        .values()
        .filter(|h| h["all_peers"].as_array().unwrap().contains(&json!(1)))
        .collect();
    assert_eq!(
        moved.len(),
        8,
        "history of the PGs that left OSD 1: {history:?}"
    );
    for h in moved {
        assert!(h["osd_sets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_array().unwrap().contains(&json!(1))));
    }

    // Back up: placed again.
    osd_up(&mut c, 1, "h1").await;
    wait_for("OSD 1 placed again", || {
        let mut c = c.clone();
        async move {
            let v = get(&mut c, "pg/config").await?;
            pool_pgs(&v, 1)
                .values()
                .any(|(s, _, _)| s.contains(&1))
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_monitors_one_master_and_takeover() {
    let (etcd, dir, mut c, _) = setup(3).await;
    put(&mut c, "config/pools", pool_p(8)).await;
    let mut a = Mon::quick(&etcd, &dir, "a", &[]);
    wait_for("a is master", || {
        let log = a.log();
        async move { log.contains("became master").then_some(()) }
    })
    .await;
    let first = get(&mut c, "mon/master").await.unwrap();
    let mut b = Mon::quick(&etcd, &dir, "b", &[]);
    wait_for("b stands by", || {
        let log = b.log();
        async move { log.contains("standing by").then_some(()) }
    })
    .await;
    wait_placed(&c, "pg/config", 1, 8).await;
    assert!(!b.log().contains("became master"));
    assert_eq!(get(&mut c, "mon/master").await.unwrap(), first);

    // kill -9 the master: b takes over once the lease (3 s) expires.
    let killed = Instant::now();
    a.kill();
    wait_for("b takes over", || {
        let log = b.log();
        async move { log.contains("became master").then_some(()) }
    })
    .await;
    // How long the takeover took is a figure to read, not a pass/fail bound (a loaded
    // machine stretches it); `wait_for`'s deadline is the only limit.
    eprintln!(
        "takeover after kill -9 of the master: {:?}",
        killed.elapsed()
    );
    let second = get(&mut c, "mon/master").await.unwrap();
    assert_ne!(second["id"], first["id"]);

    // And keeps managing: a new pool gets placed.
    put(
        &mut c,
        "config/pools",
        json!({"1":{"name":"p","pg_size":2,"pg_minsize":1,"pg_count":8},
                                      "2":{"name":"q","pg_size":3,"pg_minsize":2,"pg_count":4}}),
    )
    .await;
    wait_placed(&c, "pool 2 placed by b", 2, 4).await;
    assert!(b.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_skipped() {
    let (etcd, dir, mut c, _) = setup(3).await;
    // Garbage everywhere the monitor looks.
    put(&mut c, "config/osd/2", "{not json").await;
    put(&mut c, "config/osd/3", json!({"reweight": "heavy"})).await;
    put(&mut c, "osd/state/99", "garbage").await;
    put(&mut c, "osd/stats/4", json!({"size": "big", "op_stats": 5})).await;
    put(&mut c, "config/node_placement", "[1,2").await;
    put(&mut c, "pg/state/1/1", "??").await;
    put(&mut c, "pg/history/1/x", "!").await;
    put(
        &mut c,
        "config/global",
        json!({"osd_out_time": "soon", "placement_levels": 7}),
    )
    .await;
    put(&mut c, "config/global", json!({"osd_out_time": "soon"})).await;
    put(
        &mut c,
        "config/pools",
        json!({
            "1": {"name":"good","pg_size":2,"pg_minsize":1,"pg_count":8},
            "2": {"name":"raid","scheme":"raid5","pg_size":2,"pg_minsize":1,"pg_count":8},
            "3": {"name":"small","pg_size":2,"pg_minsize":3,"pg_count":8},
            "4": {"name":"wide","pg_size":4,"pg_minsize":4,"pg_count":8},
            "five": {"name":"x"}
        }),
    )
    .await;
    let mut mon = Mon::quick(&etcd, &dir, "mon", &[]);
    let cfg = wait_placed(&c, "good pool placed", 1, 8).await;
    assert_eq!(cfg["items"].as_object().unwrap().len(), 1, "{cfg}");
    for (pool, word) in [(2, "raid5"), (3, "pg_minsize"), (4, "failure domains")] {
        let st = wait_for("pool error note", || {
            let mut c = c.clone();
            async move {
                get(&mut c, &format!("pool/stats/{pool}"))
                    .await
                    .filter(|v| v.get("error").is_some())
            }
        })
        .await;
        assert!(
            st["error"].as_str().unwrap().contains(word),
            "pool {pool}: {st}"
        );
    }
    let log = mon.log();
    assert!(
        log.contains("pool 2 skipped") && log.contains("raid5"),
        "{log}"
    );
    // A pool list that is not even an object changes nothing.
    put(&mut c, "config/pools", "[]").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&mut c, "pg/config").await.unwrap(), cfg);
    assert!(mon.alive());
    // Fixing pool 2 places it.
    put(
        &mut c,
        "config/pools",
        json!({
            "1": {"name":"good","pg_size":2,"pg_minsize":1,"pg_count":8},
            "2": {"name":"raid","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8}
        }),
    )
    .await;
    wait_placed(&c, "pool 2 placed", 2, 8).await;
    wait_for("pool 2 stats without error", || {
        let mut c = c.clone();
        async move {
            get(&mut c, "pool/stats/2")
                .await
                .filter(|v| v.get("error").is_none())
        }
    })
    .await;
    assert!(mon.alive());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_metrics() {
    let (etcd, dir, mut c, _) = setup(1).await;
    put(
        &mut c,
        "config/pools",
        json!({"1":{"name":"p","pg_size":2,"pg_minsize":1,"pg_count":4,"failure_domain":"osd"}}),
    )
    .await;
    put(
        &mut c,
        "config/inode/1/5",
        json!({"name":"img","size":1u64 << 30}),
    )
    .await;
    let osd_stats = |n: u64, writes: u64| {
        json!({"time": 1.0e9, "size": 1u64 << 30, "free": 1u64 << 29, "host": "h1",
               "op_stats": {"primary_write": {"count": writes, "usec": writes * 100, "bytes": writes * 4096}},
               "subop_stats": {"write": {"count": writes * 2, "usec": 7, "bytes": 9}},
               "recovery_stats": {"degraded": {"count": n, "bytes": n * 10}, "misplaced": {"count": 0, "bytes": 0}}})
    };
    let inodes = |w: u64| {
        json!({"1": {"5": {"read": {"count": 1, "usec": 2, "bytes": 4096},
                                             "write": {"count": w, "usec": w * 50, "bytes": w * 4096},
                                             "delete": {"count": 0, "usec": 0, "bytes": 0}}}})
    };
    for n in [1, 2] {
        put(&mut c, &format!("osd/stats/{n}"), osd_stats(n, 10)).await;
        put(&mut c, &format!("osd/inodestats/{n}"), inodes(10)).await;
        put(
            &mut c,
            &format!("osd/space/{n}"),
            json!({"1": {"5": 1u64 << 20}}),
        )
        .await;
    }
    let port = free_port();
    let _mon = Mon::quick(
        &etcd,
        &dir,
        "mon",
        &[
            "--prometheus_port",
            &port.to_string(),
            "--prometheus_address",
            "127.0.0.1",
        ],
    );
    let st = wait_for("inode stats", || {
        let mut c = c.clone();
        async move { get(&mut c, "inode/stats/1/5").await }
    })
    .await;
    assert_eq!(st["raw_used"], 2u64 << 20, "{st}");
    assert_eq!(st["write"]["count"], 20);
    assert_eq!(st["read"]["bytes"], 8192);
    // Counters move: rates appear.
    for n in [1, 2] {
        put(&mut c, &format!("osd/inodestats/{n}"), inodes(1010)).await;
        put(&mut c, &format!("osd/stats/{n}"), osd_stats(n, 1010)).await;
    }
    let st = wait_for("inode write rate", || {
        let mut c = c.clone();
        async move {
            get(&mut c, "inode/stats/1/5")
                .await
                .filter(|v| v["write"]["iops"].as_f64() > Some(0.0))
        }
    })
    .await;
    assert_eq!(st["write"]["count"], 2020);
    assert_eq!(st["write"]["lat"], 50.0);
    let cluster_stats = wait_for("cluster stats", || {
        let mut c = c.clone();
        async move {
            get(&mut c, "stats")
                .await
                .filter(|v| v["op_stats"]["primary_write"]["iops"].as_f64() > Some(0.0))
        }
    })
    .await;
    assert_eq!(cluster_stats["op_stats"]["primary_write"]["count"], 2020);
    assert_eq!(cluster_stats["op_stats"]["primary_write"]["lat"], 100.0);
    assert_eq!(cluster_stats["recovery_stats"]["degraded"]["bytes"], 30);
    assert_eq!(cluster_stats["osd_up"], 2);
    let pool = get(&mut c, "pool/stats/1").await.unwrap();
    assert_eq!(pool["used_raw"], 2u64 << 20, "{pool}");
    assert_eq!(pool["total_raw"], 2u64 << 30);
    assert_eq!(pool["write"]["count"], 2020);
    assert_eq!(pool["raw_to_usable"], 0.5);

    let metrics = http_get(port, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for line in [
        "vitastor_mon_master 1",
        "vitastor_osd_up{osd=\"1\",host=\"h1\"} 1",
        "vitastor_osd_size_bytes{osd=\"2\",host=\"h1\"} 1073741824",
        "vitastor_osd_ops_total{osd=\"1\",group=\"op_stats\",op=\"primary_write\"} 1010",
        "vitastor_pool_used_raw_bytes{pool=\"1\",name=\"p\"} 2097152",
        "vitastor_image_ops_total{pool=\"1\",inode=\"5\",name=\"img\",op=\"write\"} 2020",
    ] {
        assert!(
            metrics.contains(&format!("{line}\n")),
            "missing {line:?} in\n{metrics}"
        );
    }
    assert!(http_get(port, "/other").starts_with("HTTP/1.1 404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_pg_count_change() {
    let (etcd, dir, mut c, _) = setup(3).await;
    put(&mut c, "config/pools", pool_p(4)).await;
    let _mon = Mon::quick(&etcd, &dir, "mon", &[]);
    let cfg = wait_placed(&c, "pg/config", 1, 4).await;
    let old = pool_pgs(&cfg, 1);
    // Primaries run the PGs (leased pg/state, as OSDs do).
    let pg_lease = c.lease_grant(60, None).await.unwrap().id();
    for (pg, (set, primary, _)) in &old {
        put_leased(
            &mut c,
            &format!("pg/state/1/{pg}"),
            &json!({"primary":primary,"state":["active"],"peers":set}),
            pg_lease,
        )
        .await;
    }
    put(&mut c, "config/pools", pool_p(128)).await;
    wait_for("PGs paused", || {
        let mut c = c.clone();
        async move {
            let v = get(&mut c, "pg/config").await?;
            let pgs = pool_pgs(&v, 1);
            (pgs.len() == 4 && pgs.values().all(|(_, _, pause)| *pause)).then_some(())
        }
    })
    .await;
    // The primaries stop their PGs.
    c.lease_revoke(pg_lease).await.unwrap();
    let cfg = wait_placed(&c, "128 PGs", 1, 128).await;
    let new = pool_pgs(&cfg, 1);
    assert!(new.values().all(|(s, _, pause)| !pause && s.len() == 2));
    let history = get_prefix(&mut c, "pg/history/1/").await;
    // New PG j holds objects of old PG ((j - 1) % 4) + 1: its history names that old set.
    assert_eq!(history.len(), 128);
    for j in 1..=128u32 {
        let h = &history[&format!("pg/history/1/{j}")];
        let sets: BTreeSet<Vec<u64>> = h["osd_sets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o.as_u64().unwrap())
                    .collect()
            })
            .collect();
        let from = &old[&((j - 1) % 4 + 1)].0;
        assert!(sets.contains(from), "PG {j}: {h} lacks {from:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposed_master_stops_and_campaigns_again() {
    let (etcd, dir, mut c, _) = setup(3).await;
    put(&mut c, "config/pools", pool_p(8)).await;
    let mut mon = Mon::quick(&etcd, &dir, "mon", &[]);
    wait_placed(&c, "pg/config", 1, 8).await;
    // Someone else holds mon/master now (as after a lease loss and a takeover).
    let other = c.lease_grant(60, None).await.unwrap().id();
    c.delete(key("mon/master"), None).await.unwrap();
    put_leased(&mut c, "mon/master", &json!({"ip":[],"id":other}), other).await;
    wait_for("the monitor notices", || {
        let log = mon.log();
        async move { log.contains("no longer held by this monitor").then_some(()) }
    })
    .await;
    // It may not write any more: a pool change stays unplaced while the other holds the key.
    let before = get(&mut c, "pg/config").await.unwrap();
    put(
        &mut c,
        "config/pools",
        json!({"1":{"name":"p","pg_size":2,"pg_minsize":1,"pg_count":8},
                                      "2":{"name":"q","pg_size":2,"pg_minsize":1,"pg_count":4}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&mut c, "pg/config").await.unwrap(), before);
    // The other master goes away: it takes over again and places pool 2.
    c.lease_revoke(other).await.unwrap();
    wait_placed(&c, "pool 2 placed", 2, 4).await;
    assert_eq!(mon.log().matches("became master").count(), 2);
    assert!(mon.alive());
}
