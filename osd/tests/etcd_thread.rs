//! The etcd side thread against a real etcd (testkit): state key with a lease, watch events
//! and the wake fd, bad values, shutdown revoking the lease, lease loss and reconnect, and
//! start-up while etcd is not there yet.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vitastor_layout::OsdNum;
use vitastor_osd::etcd::{
    osd_state_json, EtcdAddress, EtcdCommand, EtcdConfig, EtcdEvent, EtcdThread,
};
use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

const STATE_KEY: &str = "/vitastor/osd/state/1";
/// Short timings so failures show up within seconds: keepalive every 0.5 s, 3 s lease.
const INTERVAL: Duration = Duration::from_millis(500);
const TTL: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

fn config(address: &str) -> EtcdConfig {
    let state = osd_state_json(&["127.0.0.1".to_string()], 43211, "node1", true, true);
    let mut cfg = EtcdConfig::new(EtcdAddress::parse(address).unwrap(), OsdNum(1), state);
    cfg.report_interval = INTERVAL;
    cfg.lease_ttl = Some(TTL);
    cfg.call_timeout = CALL_TIMEOUT;
    cfg
}

/// Whether `fd` becomes readable within `timeout`.
fn readable(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, live for the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n == 1 && pfd.revents & libc::POLLIN != 0
}

/// The test's side of the data path: events drained through the wake fd, kept in order.
struct Inbox<'a> {
    thread: &'a EtcdThread,
    pending: VecDeque<EtcdEvent>,
}

impl<'a> Inbox<'a> {
    fn new(thread: &'a EtcdThread) -> Inbox<'a> {
        Inbox {
            thread,
            pending: VecDeque::new(),
        }
    }

    /// Waits (through the wake fd only) for an event matching `want`; earlier events are
    /// skipped, later ones stay queued.
    fn wait_for(&mut self, timeout: Duration, want: impl Fn(&EtcdEvent) -> bool) -> EtcdEvent {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(e) = self.pending.pop_front() {
                if want(&e) {
                    return e;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no matching event within {timeout:?}");
            if readable(self.thread.wake_fd(), left) {
                self.pending.extend(self.thread.drain());
            }
        }
    }
}

/// `(value, lease)` of `key`, or `None` if it is absent.
fn get(etcd: &EtcdServer, key: &str) -> Option<(Value, i64)> {
    let out = etcd.etcdctl(&["get", key, "-w", "json"]).unwrap();
    let reply: Value = serde_json::from_str(&out).unwrap();
    let kv = reply.get("kvs")?.get(0)?;
    let value = kv["value"].as_str().unwrap();
    let value = base64_decode(value);
    Some((
        serde_json::from_slice(&value).unwrap(),
        kv.get("lease").and_then(Value::as_i64).unwrap_or(0),
    ))
}

/// etcdctl's JSON output has base64 values; a test-only decoder keeps deps down.
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn state_watch_bad_value_and_shutdown() {
    let etcd = EtcdServer::start(EtcdOptions::default()).unwrap();
    etcd.etcdctl(&[
        "put",
        "/vitastor/config/global",
        r#"{"immediate_commit":"all"}"#,
    ])
    .unwrap();
    etcd.etcdctl(&["put", "/vitastor/osd/stats/1", "{}"])
        .unwrap();
    etcd.etcdctl(&["put", "/vitastor/config/osd/5", "not json"])
        .unwrap();
    let t = EtcdThread::spawn(config(&etcd.etcd_address())).unwrap();
    let mut inbox = Inbox::new(&t);
    inbox.wait_for(Duration::from_secs(5), |e| *e == EtcdEvent::Connected);
    let bad = inbox.wait_for(Duration::from_secs(1), |_| true);
    assert!(matches!(bad, EtcdEvent::BadValue { key, .. } if key == "config/osd/5"));
    let EtcdEvent::InitialLoad { kvs } = inbox.wait_for(Duration::from_secs(1), |e| {
        matches!(e, EtcdEvent::InitialLoad { .. })
    }) else {
        unreachable!()
    };
    // Only watched keys: config/global and our own state, not osd/stats.
    let keys: Vec<&str> = kvs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["config/global", "osd/state/1"]);
    assert_eq!(kvs[0].1, json!({"immediate_commit":"all"}));

    let (state, lease) = get(&etcd, STATE_KEY).expect("state key");
    assert_eq!(state["state"], "up");
    assert_eq!(state["port"], 43211);
    assert_ne!(lease, 0, "state key must be bound to a lease");

    let pools = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":256}}"#;
    etcd.etcdctl(&["put", "/vitastor/osd/stats/1", "{}"])
        .unwrap();
    etcd.etcdctl(&["put", "/vitastor/config/pools", pools])
        .unwrap();
    assert!(
        readable(t.wake_fd(), Duration::from_secs(5)),
        "wake fd stayed quiet"
    );
    let event = inbox.wait_for(
        Duration::from_secs(5),
        |e| !matches!(e, EtcdEvent::KeyChanged { key, .. } if key == "osd/state/1"),
    );
    assert_eq!(
        event,
        EtcdEvent::KeyChanged {
            key: "config/pools".to_string(),
            value: Some(serde_json::from_str(pools).unwrap()),
        }
    );

    etcd.etcdctl(&["put", "/vitastor/pg/config", "{not json"])
        .unwrap();
    let event = inbox.wait_for(Duration::from_secs(5), |e| {
        matches!(e, EtcdEvent::BadValue { .. })
    });
    assert!(matches!(event, EtcdEvent::BadValue { key, .. } if key == "pg/config"));

    etcd.etcdctl(&["del", "/vitastor/config/pools"]).unwrap();
    let event = inbox.wait_for(Duration::from_secs(5), |e| {
        matches!(e, EtcdEvent::KeyChanged { value: None, .. })
    });
    assert_eq!(
        event,
        EtcdEvent::KeyChanged {
            key: "config/pools".to_string(),
            value: None
        }
    );
    let new_state = osd_state_json(&["10.0.0.1".to_string()], 43212, "node1", false, true);
    t.send(EtcdCommand::PutState(new_state.clone()));
    assert!(wait_until(Duration::from_secs(5), || get(&etcd, STATE_KEY)
        .is_some_and(|(v, l)| v == new_state && l == lease)));

    // Drained and nothing new: the fd is quiet again.
    t.drain();
    drop(inbox);
    assert!(!readable(t.wake_fd(), Duration::from_millis(100)));

    let started = Instant::now();
    drop(t);
    assert!(
        get(&etcd, STATE_KEY).is_none(),
        "lease not revoked on shutdown"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn lease_lost_when_etcd_dies_and_reconnect() {
    let mut etcd = EtcdServer::start(EtcdOptions::default()).unwrap();
    let t = EtcdThread::spawn(config(&etcd.etcd_address())).unwrap();
    let mut inbox = Inbox::new(&t);
    inbox.wait_for(Duration::from_secs(5), |e| *e == EtcdEvent::Connected);
    let (_, first_lease) = get(&etcd, STATE_KEY).expect("state key");

    etcd.kill().unwrap();
    let killed = Instant::now();
    inbox.wait_for(TTL + 2 * CALL_TIMEOUT + Duration::from_secs(2), |e| {
        *e == EtcdEvent::LeaseLost
    });
    assert!(
        killed.elapsed() >= TTL - INTERVAL,
        "lease reported lost too early: {:?}",
        killed.elapsed()
    );

    etcd.restart().unwrap();
    inbox.wait_for(Duration::from_secs(10), |e| *e == EtcdEvent::Connected);
    let (state, lease) = get(&etcd, STATE_KEY).expect("state key after reconnect");
    assert_eq!(state["state"], "up");
    assert_ne!(lease, 0);
    assert_ne!(lease, first_lease, "a lost lease must not be reused");
}

#[test]
fn retries_until_etcd_appears() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = EtcdThread::spawn(config(&format!("http://127.0.0.1:{port}/v3"))).unwrap();
    thread::sleep(Duration::from_millis(1500));
    assert!(
        !t.drain().contains(&EtcdEvent::Connected),
        "connected to nothing"
    );

    let etcd = EtcdServer::start(EtcdOptions {
        client_port: Some(port),
        ..EtcdOptions::default()
    })
    .unwrap();
    Inbox::new(&t).wait_for(Duration::from_secs(10), |e| *e == EtcdEvent::Connected);
    assert!(wait_until(Duration::from_secs(2), || get(&etcd, STATE_KEY).is_some()));
}
