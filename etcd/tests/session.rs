//! The lease, load/watch and transaction helpers against Debian's etcd.

use std::time::Duration;

use etcd_client::Client;
use vitastor_etcd::watch::{self, Range, Watch};
use vitastor_etcd::{txn, CallError, Lease};
use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

const T: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client(etcd: &EtcdServer) -> Client {
    vitastor_etcd::connect(&[etcd.client_url()], T)
        .await
        .unwrap()
}

#[test]
fn lease_bound_keys_live_with_the_lease_and_vanish_on_revoke() {
    let etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    runtime().block_on(async {
        let mut c = client(&etcd).await;
        let lease = Lease::grant(&mut c, Duration::from_secs(10), T)
            .await
            .unwrap();
        assert!(lease.expires() > tokio::time::Instant::now() + Duration::from_secs(5));
        let key = "/p/osd/state/1".to_string();
        let claimed = c
            .txn(txn::create(key.clone(), "1".into(), lease.id()))
            .await
            .unwrap();
        assert!(claimed.succeeded());
        // Taken already: a second create fails, a put under our lease succeeds.
        let again = c
            .txn(txn::create(key.clone(), "2".into(), 0))
            .await
            .unwrap();
        assert!(!again.succeeded());
        let ours = c
            .txn(txn::put_if_lease(key.clone(), "3".into(), lease.id()))
            .await
            .unwrap();
        assert!(ours.succeeded());
        let theirs = c
            .txn(txn::put_if_lease(key.clone(), "4".into(), lease.id() + 1))
            .await
            .unwrap();
        assert!(!theirs.succeeded());

        // A new connection takes the same lease up again.
        let mut c2 = client(&etcd).await;
        let mut resumed = Lease::resume(&mut c2, lease.id(), T)
            .await
            .unwrap()
            .expect("alive");
        assert!(resumed.keep_alive().await.unwrap());
        let got = c.get(key.clone(), None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"3");
        assert_eq!(got.kvs()[0].lease(), lease.id());

        let id = lease.id();
        lease.revoke(&mut c).await.unwrap();
        assert!(c.get(key, None).await.unwrap().kvs().is_empty());
        assert!(
            !resumed.keep_alive().await.unwrap(),
            "revoked lease still alive"
        );
        assert!(Lease::resume(&mut c2, id, T).await.unwrap().is_none());
    });
}

#[test]
fn load_then_watch_misses_nothing_and_a_compacted_watch_is_an_error() {
    let etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    runtime().block_on(async {
        let mut c = client(&etcd).await;
        c.put("/p/config/global", "{}", None).await.unwrap();
        c.put("/p/osd/state/1", "up", None).await.unwrap();
        c.put("/p/osd/stats/1", "x", None).await.unwrap();
        c.put("/px/config/global", "other cluster", None)
            .await
            .unwrap();
        const RANGES: &[Range] = &[Range::key("config/global"), Range::prefix("osd/state/")];
        let snap = watch::load(&mut c, T, "/p", RANGES).await.unwrap();
        let keys: Vec<&str> = snap.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["config/global", "osd/state/1"]);

        // A change made right after the load arrives on the watch.
        c.put("/p/osd/state/2", "up", None).await.unwrap();
        c.delete("/p/osd/state/1", None).await.unwrap();
        let mut w = Watch::start(&mut c, T, "/p", "", true, snap.revision + 1)
            .await
            .unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.extend(w.next().await.unwrap());
        }
        assert_eq!(seen[0].key, "osd/state/2");
        assert_eq!(seen[0].value.as_deref(), Some(&b"up"[..]));
        assert_eq!(seen[1].key, "osd/state/1");
        assert_eq!(seen[1].value, None);
        w.cancel(T).await.unwrap();

        // History compacted past the revision: etcd cancels the watch, the caller reloads.
        let now = c
            .put("/p/x", "1", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        c.compact(now, None).await.unwrap();
        let mut stale = Watch::start(&mut c, T, "/p", "", true, snap.revision + 1)
            .await
            .unwrap();
        let e = tokio::time::timeout(T, stale.next())
            .await
            .expect("no answer")
            .unwrap_err();
        assert!(matches!(e, CallError::Ended { call: "watch", .. }), "{e}");
        assert!(e.to_string().contains("compact revision"), "{e}");
    });
}

#[test]
fn batches_of_batch_len_writes_fit_etcds_default_limit() {
    let etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    runtime().block_on(async {
        let mut c = client(&etcd).await;
        let n = txn::batch_len(txn::DEFAULT_MAX_TXN_OPS, 1);
        let guard =
            etcd_client::Compare::create_revision("/p/guard", etcd_client::CompareOp::Equal, 0);
        let full = |len: usize| {
            let compares: Vec<_> = (0..len)
                .map(|i| {
                    etcd_client::Compare::create_revision(
                        format!("/p/k{i}"),
                        etcd_client::CompareOp::Equal,
                        0,
                    )
                })
                .chain([guard.clone()])
                .collect();
            let ops: Vec<_> = (0..len)
                .map(|i| etcd_client::TxnOp::put(format!("/p/k{i}"), "v", None))
                .collect();
            etcd_client::Txn::new().when(compares).and_then(ops)
        };
        assert!(c.txn(full(n)).await.unwrap().succeeded());
        let e = c.txn(full(n + 1)).await.unwrap_err();
        assert!(
            vitastor_etcd::describe(&e).contains("too many operations"),
            "{e}"
        );
    });
}
