//! `vitastor-cli` reads a cluster whose keys the original Vitastor 3.0.x wrote: the golden
//! values of `layout/tests/golden/original-3.0.json` (OSD numbers as strings in `pg/config`,
//! numeric strings in stats, unmodelled fields) put into a real etcd, then every read-only
//! command, in JSON and as tables.

use std::process::{Command, Stdio};

use serde_json::Value;
use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

const CLI: &str = env!("CARGO_BIN_EXE_vitastor-cli");

fn load_golden(etcd: &EtcdServer) {
    let text = include_str!("../../layout/tests/golden/original-3.0.json");
    let Value::Object(kvs) = serde_json::from_str(text).expect("golden file is JSON") else {
        panic!("golden file is not an object");
    };
    for (key, value) in kvs {
        etcd.etcdctl(&["put", &format!("/vitastor/{key}"), &value.to_string()])
            .expect("etcdctl put");
    }
}

fn cli(addr: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(CLI)
        .args(["--etcd_address", addr])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running vitastor-cli");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "vitastor-cli {args:?}: {stderr}{stdout}"
    );
    (stdout, stderr)
}

fn json(addr: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (out, err) = cli(addr, &a);
    assert!(
        !err.contains("warning"),
        "vitastor-cli {args:?} warned: {err}"
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn every_read_command_understands_the_original_format() {
    let etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    load_golden(&etcd);
    let addr = etcd.etcd_address();

    let pgs = json(&addr, &["pg-list"]);
    let pgs = pgs.as_array().expect("pg-list is a list");
    assert_eq!(pgs.len(), 4, "{pgs:?}");
    let pg1 = pgs.iter().find(|p| p["pg_num"] == 1).expect("PG 1");
    assert_eq!(pg1["osd_set"], serde_json::json!([1, 2]), "{pg1}");
    assert_eq!(pg1["target_primary"], 1, "{pg1}");
    assert_eq!(pg1["primary"], 1, "{pg1}");

    let osds = json(&addr, &["ls-osd"]).to_string();
    assert!(osds.contains("\"host1\""), "{osds}");
    let status = json(&addr, &["status"]);
    assert_eq!(status["osd_up"], 3, "{status}");
    let images = json(&addr, &["ls"]);
    assert_eq!(images[0]["name"], "testimg", "{images}");
    assert_eq!(images[0]["size"], 1u64 << 30, "{images}");
    let pools = json(&addr, &["ls-pools"]).to_string();
    assert!(pools.contains("testpool"), "{pools}");
    json(&addr, &["osd-tree"]);
    json(&addr, &["df"]);
    for cmd in [
        "status", "df", "ls", "ls-pools", "pg-list", "osd-tree", "ls-osd",
    ] {
        let (_, err) = cli(&addr, &[cmd]);
        assert!(!err.contains("warning"), "{cmd} warned: {err}");
    }
}
