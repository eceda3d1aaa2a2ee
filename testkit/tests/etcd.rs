//! The etcd launcher against the real `/usr/bin/etcd` (no mocks): start,
//! data through etcdctl, restart, crash, parallel servers, cleanup, failures.

use std::net::TcpListener;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use vitastor_testkit::{EtcdOptions, EtcdServer, TestkitError};

/// `/proc/<pid>` exists while the process exists, zombies included, so its
/// absence proves the process was both ended and reaped.
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn get(etcd: &EtcdServer, key: &str) -> String {
    etcd.etcdctl(&["get", "--print-value-only", key])
        .unwrap()
        .trim()
        .to_string()
}

fn put(etcd: &EtcdServer, key: &str, value: &str) {
    assert_eq!(etcd.etcdctl(&["put", key, value]).unwrap().trim(), "OK");
}

#[test]
fn start_put_get() {
    let etcd = EtcdServer::start(EtcdOptions::default()).unwrap();
    let port = etcd.client_port();
    assert_eq!(etcd.client_url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(etcd.etcd_address(), format!("127.0.0.1:{port}/v3"));
    assert_ne!(port, etcd.peer_port());
    assert!(etcd.is_healthy());
    assert!(etcd.data_dir().join("member").is_dir());
    assert!(etcd.log_path().is_file());

    let global = r#"{"immediate_commit":"all","block_size":131072}"#;
    put(&etcd, "/vitastor/config/global", global);
    assert_eq!(get(&etcd, "/vitastor/config/global"), global);
    assert_eq!(get(&etcd, "/vitastor/absent"), "");

    match etcd.etcdctl(&["no-such-command"]) {
        Err(TestkitError::Etcdctl { stderr, .. }) => {
            assert!(stderr.contains("unknown command"), "{stderr}")
        }
        other => panic!("expected an etcdctl error, got {other:?}"),
    }
}

#[test]
fn restart_keeps_data_and_address() {
    let mut etcd = EtcdServer::start(EtcdOptions::default()).unwrap();
    let address = etcd.etcd_address();
    put(
        &etcd,
        "/vitastor/config/pools",
        r#"{"1":{"name":"testpool"}}"#,
    );
    let first_pid = etcd.pid().unwrap();

    // Graceful restart.
    etcd.restart().unwrap();
    assert!(!process_exists(first_pid));
    assert_ne!(etcd.pid(), Some(first_pid));
    assert_eq!(etcd.etcd_address(), address);
    assert_eq!(
        get(&etcd, "/vitastor/config/pools"),
        r#"{"1":{"name":"testpool"}}"#
    );

    // Crash (SIGKILL), then restart: an acknowledged put survives, because
    // etcd fsyncs its WAL before answering.
    put(&etcd, "/vitastor/pg/config", "{}");
    let crashed_pid = etcd.pid().unwrap();
    etcd.kill().unwrap();
    assert!(!process_exists(crashed_pid));
    assert!(!etcd.is_running());
    assert!(!etcd.is_healthy());
    assert_eq!(etcd.pid(), None);
    etcd.restart().unwrap();
    assert_eq!(etcd.etcd_address(), address);
    assert_eq!(get(&etcd, "/vitastor/pg/config"), "{}");

    // stop and kill are idempotent, and a stopped server restarts.
    etcd.stop().unwrap();
    etcd.stop().unwrap();
    etcd.kill().unwrap();
    assert!(!etcd.is_running());
    etcd.restart().unwrap();
    assert!(etcd.is_running());
    assert_eq!(get(&etcd, "/vitastor/pg/config"), "{}");

    let log = std::fs::read_to_string(etcd.log_path()).unwrap();
    assert_eq!(log.matches("==== vitastor-testkit: starting").count(), 4);
}

#[test]
fn kill_then_start_another_on_fresh_ports() {
    let mut first = EtcdServer::start(EtcdOptions::default()).unwrap();
    put(&first, "k", "first");
    let first_pid = first.pid().unwrap();
    first.kill().unwrap();
    assert!(!process_exists(first_pid));

    let second = EtcdServer::start(EtcdOptions::default()).unwrap();
    assert!(second.is_healthy());
    assert_ne!(second.dir(), first.dir());
    assert_eq!(get(&second, "k"), "", "a new server starts empty");
}

#[test]
fn two_servers_at_once() {
    // Started from helper threads that end before the servers are used: etcd
    // must not be tied to the lifetime of the thread that asked for it.
    let starters: Vec<_> = ["alpha", "beta"]
        .into_iter()
        .map(|name| {
            thread::spawn(move || {
                EtcdServer::start(EtcdOptions {
                    name: name.to_string(),
                    ..EtcdOptions::default()
                })
                .unwrap()
            })
        })
        .collect();
    let mut servers: Vec<EtcdServer> = starters.into_iter().map(|t| t.join().unwrap()).collect();
    // Give a wrongly tied process time to receive its death signal.
    thread::sleep(Duration::from_millis(200));

    let (a, b) = (&servers[0], &servers[1]);
    let ports = [
        a.client_port(),
        a.peer_port(),
        b.client_port(),
        b.peer_port(),
    ];
    for (i, p) in ports.iter().enumerate() {
        assert!(!ports[i + 1..].contains(p), "ports overlap: {ports:?}");
    }
    put(a, "who", "alpha");
    put(b, "who", "beta");
    assert_eq!(get(a, "who"), "alpha");
    assert_eq!(get(b, "who"), "beta");
    for server in &mut servers {
        assert!(server.is_running());
    }
}

#[test]
fn drop_cleans_up() {
    let etcd = EtcdServer::start(EtcdOptions::default()).unwrap();
    let pid = etcd.pid().unwrap();
    let dir = etcd.dir().to_path_buf();
    assert!(process_exists(pid));
    drop(etcd);
    assert!(!process_exists(pid), "etcd pid {pid} survived drop");
    assert!(!dir.exists(), "temp dir {} survived drop", dir.display());
}

#[test]
fn caller_dir_is_kept_and_reused_with_fixed_port() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("etcd");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = EtcdOptions {
        dir: Some(dir.clone()),
        client_port: Some(port),
        ..EtcdOptions::default()
    };

    let etcd = EtcdServer::start(opts.clone()).unwrap();
    assert_eq!(etcd.client_port(), port);
    put(&etcd, "kept", "yes");
    let pid = etcd.pid().unwrap();
    drop(etcd);
    assert!(!process_exists(pid));
    assert!(
        dir.join("data").is_dir(),
        "a caller's directory is never removed"
    );

    // The same directory and port in a new server: the data is still there.
    let again = EtcdServer::start(opts).unwrap();
    assert_eq!(again.client_port(), port);
    assert_eq!(get(&again, "kept"), "yes");
}

#[test]
fn busy_fixed_port_is_a_clear_error() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let err = EtcdServer::start(EtcdOptions {
        client_port: Some(port),
        ..EtcdOptions::default()
    })
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
}

#[test]
fn missing_binary_is_a_clear_error() {
    let started = Instant::now();
    let err = EtcdServer::start(EtcdOptions {
        etcd_binary: "/nonexistent/etcd".into(),
        ..EtcdOptions::default()
    })
    .unwrap_err();
    assert!(matches!(err, TestkitError::Spawn { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("/nonexistent/etcd"), "{message}");
    assert!(message.contains("make setup"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn etcd_failure_reports_its_log() {
    let err = EtcdServer::start(EtcdOptions {
        extra_args: vec!["--no-such-flag".to_string()],
        ..EtcdOptions::default()
    })
    .unwrap_err();
    match &err {
        TestkitError::Exited { tail, .. } => assert!(tail.contains("no-such-flag"), "{tail}"),
        other => panic!("expected Exited, got {other:?}"),
    }
}

#[test]
fn invalid_name_is_rejected() {
    let err = EtcdServer::start(EtcdOptions {
        name: "a=b".to_string(),
        ..EtcdOptions::default()
    })
    .unwrap_err();
    assert!(matches!(err, TestkitError::InvalidOptions(_)), "{err:?}");
}
