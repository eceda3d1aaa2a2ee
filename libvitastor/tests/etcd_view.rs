//! The client against a real etcd: initial load, watch updates, image lookup, bad JSON.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use vitastor::{Callback, Client, ClientError, ClientOptions, WatchResult};
use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

fn wait_until(client: &mut Client, what: &str, mut cond: impl FnMut(&Client) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond(client) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        client.wait_events(Some(Duration::from_millis(50)));
    }
}

fn watch(client: &mut Client, name: &str) -> WatchResult {
    let slot: Rc<RefCell<Option<WatchResult>>> = Rc::default();
    let s = Rc::clone(&slot);
    client.watch_inode(
        name,
        Callback::Boxed(Box::new(move |r| *s.borrow_mut() = Some(r))),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        client.wait_events(Some(Duration::from_millis(50)));
        if let Some(r) = slot.borrow_mut().take() {
            return r;
        }
        assert!(Instant::now() < deadline, "watch of {name} never completed");
    }
}

#[test]
fn view_follows_etcd_and_survives_bad_values() {
    let etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    let put = |k: &str, v: &str| {
        etcd.etcdctl(&["put", &format!("/vitastor/{k}"), v])
            .expect("etcdctl put");
    };
    put(
        "config/pools",
        r#"{"1":{"name":"p","pg_size":2,"pg_minsize":1,"pg_count":2,"immediate_commit":"none"}}"#,
    );
    put("config/global", r#"{"client_max_dirty_ops": 5}"#);
    put(
        "pg/state/1/1",
        r#"{"primary":1,"state":["active"],"peers":[1]}"#,
    );
    put(
        "osd/state/1",
        r#"{"state":"up","addresses":["127.0.0.1"],"port":1}"#,
    );
    put(
        "config/inode/1/3",
        r#"{"name":"img","size":1048576,"meta":{"a":1}}"#,
    );
    put("index/image/img", r#"{"id":3,"pool_id":1}"#);
    put("pg/state/1/2", "{not json");

    let mut options = ClientOptions::new();
    options
        .set("etcd_address", &etcd.etcd_address())
        .set("config_path", "/nonexistent-is-not-read-when-unset")
        .set("client_max_dirty_bytes", "65536");
    // An explicit config_path must exist.
    assert!(matches!(
        Client::new(&options),
        Err(ClientError::ConfigFile { .. })
    ));
    let mut options = ClientOptions::new();
    options
        .set("etcd_address", &etcd.etcd_address())
        .set("client_max_dirty_bytes", "65536");
    let mut client = Client::new(&options).expect("client");
    wait_until(&mut client, "the first load", Client::is_ready);
    assert_eq!(client.view().primary(1, 1).map(|(o, _)| o), Some(1));
    assert_eq!(client.view().primary(1, 2), None, "bad JSON is ignored");
    assert_eq!(client.settings().max_dirty_ops, 5, "from config/global");
    assert_eq!(client.settings().max_dirty_bytes, 65536, "explicit option");
    assert_eq!(client.pool_info(1 << 48).map(|p| p.0), Some(128 << 10));

    let w = watch(&mut client, "img").expect("image exists");
    let info = w.info();
    assert_eq!(
        (info.inode, info.size, info.readonly),
        ((1 << 48) | 3, 1048576, false)
    );
    assert_eq!(info.meta.as_ref().unwrap().to_str().unwrap(), r#"{"a":1}"#);
    assert!(info.mod_revision > 0);
    assert!(matches!(
        watch(&mut client, "nope"),
        Err(ClientError::NoSuchImage(_))
    ));

    // Watched changes arrive: resize, a PG moving, an OSD going away, garbage in pools.
    put(
        "config/inode/1/3",
        r#"{"name":"img","size":2097152,"readonly":true}"#,
    );
    wait_until(&mut client, "the resize", |_| w.with(|i| i.size) == 2097152);
    assert!(w.with(|i| i.readonly));
    put("pg/state/1/2", r#"{"primary":1,"state":["active"]}"#);
    wait_until(&mut client, "PG 2 active", |c| {
        c.view().primary(1, 2).is_some()
    });
    etcd.etcdctl(&["del", "/vitastor/osd/state/1"]).unwrap();
    wait_until(&mut client, "OSD 1 down", |c| {
        c.view().primary(1, 1).is_none()
    });
    put("config/pools", "garbage");
    wait_until(&mut client, "pools dropped", |c| c.view().pools.is_empty());
    put(
        "config/pools",
        r#"{"1":{"name":"p","pg_size":2,"pg_minsize":1,"pg_count":2}}"#,
    );
    wait_until(&mut client, "pools back", |c| c.view().pools.len() == 1);

    // A write to a read-only image opened by name is refused before any I/O.
    let result: Rc<RefCell<Option<Result<u64, ClientError>>>> = Rc::default();
    let r = Rc::clone(&result);
    client.write((1 << 48) | 3, 0, vec![0; 4096], 0, move |d| {
        *r.borrow_mut() = Some(d.result)
    });
    wait_until(&mut client, "the refused write", |_| {
        result.borrow().is_some()
    });
    assert!(matches!(
        result.borrow_mut().take(),
        Some(Err(ClientError::ReadOnlyImage(_)))
    ));
    client.close_watch(&w);
}

#[test]
fn etcd_restart_is_survived() {
    let mut etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    etcd.etcdctl(&[
        "put",
        "/vitastor/config/pools",
        r#"{"1":{"name":"p","pg_size":1,"pg_minsize":1,"pg_count":1}}"#,
    ])
    .unwrap();
    let mut options = ClientOptions::new();
    options.set("etcd_address", &etcd.etcd_address());
    let mut client = Client::new(&options).expect("client");
    wait_until(&mut client, "the first load", Client::is_ready);
    etcd.restart().expect("etcd restart");
    etcd.etcdctl(&[
        "put",
        "/vitastor/osd/state/9",
        r#"{"state":"up","addresses":["127.0.0.1"],"port":9}"#,
    ])
    .unwrap();
    wait_until(&mut client, "the reconnect", |c| c.view().osd(9).is_some());
    assert_eq!(client.view().pools.len(), 1);
}
