//! Commands whose writes exceed one etcd transaction (etcd's default `--max-txn-ops`, 128)
//! against Debian's etcd.

use std::process::{Command, Stdio};

use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

const CLI: &str = env!("CARGO_BIN_EXE_vitastor-cli");

#[test]
fn removing_forty_osds_writes_more_than_one_transaction_holds() {
    let etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    let osds: Vec<String> = (1..=40).map(|n| n.to_string()).collect();
    let mut tree = serde_json::Map::new();
    for n in &osds {
        etcd.etcdctl(&[
            "put",
            &format!("/vitastor/config/osd/{n}"),
            r#"{"reweight":1}"#,
        ])
        .unwrap();
        etcd.etcdctl(&["put", &format!("/vitastor/osd/stats/{n}"), r#"{"size":1}"#])
            .unwrap();
        tree.insert(n.clone(), serde_json::json!({"parent": "host1"}));
    }
    tree.insert("host1".into(), serde_json::json!({"level": "host"}));
    let tree = serde_json::Value::Object(tree).to_string();
    etcd.etcdctl(&["put", "/vitastor/config/node_placement", &tree])
        .unwrap();

    let out = Command::new(CLI)
        .args(["--etcd_address", &etcd.etcd_address(), "rm-osd", "--force"])
        .args(&osds)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rm-osd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = etcd
        .etcdctl(&["get", "--prefix", "--keys-only", "/vitastor/"])
        .unwrap();
    let left: Vec<&str> = left.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(left, ["/vitastor/config/node_placement"]);
    let tree = etcd
        .etcdctl(&[
            "get",
            "--print-value-only",
            "/vitastor/config/node_placement",
        ])
        .unwrap();
    let tree: serde_json::Value = serde_json::from_str(tree.trim()).unwrap();
    assert_eq!(tree, serde_json::json!({"host1": {"level": "host"}}));
}
