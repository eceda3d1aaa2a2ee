//! A large cluster on a real etcd: 10,000 fake OSDs (hosts of 10) and one pool of 65,536
//! PGs. `pg/config` stays one key (4.28 MB here), so etcd needs `--max-request-bytes`
//! above it (see the README's monitor section); the placement and then a re-placement
//! after OSDs go out must both commit, `pg/history` in several transactions.
//!
//! Waits are generous deadlines on conditions, never fixed sleeps that decide the result.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp};
use serde_json::{json, Value};
use vitastor_etcd::watch::MAX_REPLY_BYTES;
use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

mod common;
use common::{key, wait_within, Mon};

const OSDS: u64 = 10_000;
const OSDS_PER_HOST: u64 = 10;
const PGS: usize = 65_536;
/// OSDs taken down (and out) after the first placement: one whole host and one more OSD.
const GONE: [u64; 11] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15];
/// Upper bound of every wait: far above what a healthy run needs.
const WAIT: Duration = Duration::from_secs(90);
/// Room for a 65,536-PG `pg/config` (and the large reads the monitor makes) in one request.
/// Timings for 10,000 OSDs: a longer lease and stats interval, OSDs out after 1 s down.
const MON_ARGS: [&str; 8] = [
    "--etcd_mon_ttl",
    "10",
    "--mon_change_timeout",
    "500",
    "--mon_stats_interval",
    "5",
    "--osd_out_time",
    "1",
];
const MAX_REQUEST_BYTES: &str = "--max-request-bytes=10485760";

fn host_of(osd: u64) -> u64 {
    osd.div_ceil(OSDS_PER_HOST)
}

/// Writes `osd/state` (under `lease`) and `osd/stats` of every OSD, 64 OSDs a transaction.
async fn fake_osds(c: &mut Client, lease: i64) {
    let osds: Vec<u64> = (1..=OSDS).collect();
    for batch in osds.chunks(64) {
        let mut ops = Vec::new();
        for &n in batch {
            let host = format!("h{}", host_of(n));
            let state = json!({"state":"up","addresses":["127.0.0.1"],"port":20000 + n % 40000,
                               "host":host,"primary_enabled":true,"blockstore_enabled":true});
            ops.push(TxnOp::put(
                key(&format!("osd/state/{n}")),
                state.to_string(),
                Some(PutOptions::new().with_lease(lease)),
            ));
            let stats =
                json!({"time": 1.0e9, "size": 1u64 << 40, "free": 1u64 << 39, "host": host});
            ops.push(TxnOp::put(
                key(&format!("osd/stats/{n}")),
                stats.to_string(),
                None,
            ));
        }
        c.txn(Txn::new().and_then(ops)).await.unwrap();
    }
}

/// `pg/config` of pool 1 as pg → OSD set, if the key exists and parses.
async fn pool_sets(c: &mut Client) -> Option<Vec<Vec<u64>>> {
    let mut kv = c.kv_client().max_decoding_message_size(MAX_REPLY_BYTES);
    let r = kv.get(key("pg/config"), None).await.ok()?;
    let v: Value = serde_json::from_slice(r.kvs().first()?.value()).ok()?;
    let items = v["items"]["1"].as_object()?;
    let mut sets = Vec::with_capacity(items.len());
    for (_, pg) in items {
        sets.push(
            pg["osd_set"]
                .as_array()?
                .iter()
                .map(|o| o.as_u64().unwrap_or(0))
                .collect(),
        );
    }
    Some(sets)
}

async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_within(what, WAIT, check).await
}

fn check_sets(sets: &[Vec<u64>]) {
    for set in sets {
        assert_eq!(set.len(), 3, "{set:?}");
        let hosts: BTreeSet<u64> = set.iter().map(|&o| host_of(o)).collect();
        assert_eq!(hosts.len(), 3, "failure domain violated: {set:?}");
    }
}

/// The fake OSDs (under a lease that outlives the test) and the one big pool, before any
/// monitor runs; a client of `etcd` and a directory for the monitor's log.
async fn fake_cluster(etcd: &EtcdServer) -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::connect([etcd.client_url()], None).await.unwrap();
    let all = c.lease_grant(600, None).await.unwrap().id();
    fake_osds(&mut c, all).await;
    let pools = json!({"1":{"name":"big","scheme":"replicated","pg_size":3,"pg_minsize":2,
                            "pg_count":PGS,"failure_domain":"host"}});
    c.put(key("config/pools"), pools.to_string(), None)
        .await
        .unwrap();
    (c, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_of_65536_pgs_on_10000_osds_commits() {
    let etcd = EtcdServer::start(EtcdOptions {
        extra_args: vec![MAX_REQUEST_BYTES.to_owned()],
        ..EtcdOptions::default()
    })
    .unwrap();
    let (mut c, dir) = fake_cluster(&etcd).await;
    let _mon = Mon::start(&etcd, &dir, "mon", &MON_ARGS);

    let sets = wait_for("pg/config with every PG", || {
        let mut c = c.clone();
        async move { pool_sets(&mut c).await.filter(|s| s.len() == PGS) }
    })
    .await;
    check_sets(&sets);
    let used: BTreeSet<u64> = sets.iter().flatten().copied().collect();
    assert!(used.len() > 9_000, "only {} OSDs hold PGs", used.len());
    let moved = sets
        .iter()
        .filter(|s| s.iter().any(|o| GONE.contains(o)))
        .count();
    assert!(moved > 126, "too few PGs on the OSDs to take out: {moved}");

    // The OSDs lose their state keys (down), then go out after osd_out_time.
    let ops: Vec<TxnOp> = GONE
        .iter()
        .map(|n| TxnOp::delete(key(&format!("osd/state/{n}")), None))
        .collect();
    c.txn(Txn::new().and_then(ops)).await.unwrap();
    let sets = wait_for("PGs moved off the OSDs that went out", || {
        let mut c = c.clone();
        async move {
            pool_sets(&mut c)
                .await
                .filter(|s| s.len() == PGS && s.iter().flatten().all(|o| !GONE.contains(o)))
        }
    })
    .await;
    check_sets(&sets);
    // Every PG that left them has history naming its old set: more keys than one
    // transaction can hold, so they were written in batches.
    let history = c
        .get(key("pg/history/1/"), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let with_gone = history
        .kvs()
        .iter()
        .filter(|kv| {
            let h: Value = serde_json::from_slice(kv.value()).unwrap();
            h["all_peers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|o| GONE.contains(&o.as_u64().unwrap_or(0))))
        })
        .count();
    assert_eq!(with_gone, moved, "history of the PGs that moved");
}

/// With etcd's default `--max-request-bytes` (1.5 MiB) the 65,536-PG `pg/config` cannot be
/// written: the monitor says so, naming the flag, and stays master instead of restarting
/// its session over and over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_pg_config_is_reported_once_with_the_flag() {
    let etcd = EtcdServer::start(EtcdOptions::default()).unwrap();
    let (mut c, dir) = fake_cluster(&etcd).await;
    let mon = Mon::start(&etcd, &dir, "mon", &MON_ARGS);

    let line = wait_for("the monitor's report", || {
        let log = mon.log();
        async move {
            log.lines()
                .find(|l| l.contains("placement not written"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(line.contains("--max-request-bytes="), "{line}");
    assert!(line.contains("pg/config"), "{line}");
    // Had the error ended the session, it would restart within a backoff (0.5 s at
    // first) and take mastership again; this pause only gives it the chance.
    let master = c.get(key("mon/master"), None).await.unwrap();
    let rev = master.kvs()[0].create_revision();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let master = c.get(key("mon/master"), None).await.unwrap();
    assert_eq!(
        master.kvs()[0].create_revision(),
        rev,
        "the monitor lost or re-took mastership"
    );
    assert_eq!(
        mon.log().matches("became master").count(),
        1,
        "{}",
        mon.log()
    );
    assert!(c
        .get(key("pg/config"), None)
        .await
        .unwrap()
        .kvs()
        .is_empty());
}
