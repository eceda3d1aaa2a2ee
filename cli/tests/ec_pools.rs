//! EC and XOR pools through `vitastor-cli` on a real etcd (no OSD processes: their
//! `osd/state` and `osd/stats` keys are written as an OSD would): every create-pool form,
//! the clear refusals (more chunks than failure domains, parity_chunks >= pg_size, unknown
//! scheme), the raw `config/pools` JSON form, `ls-pools` scheme text and `df`'s usable space.

use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

const CLI: &str = env!("CARGO_BIN_EXE_vitastor-cli");
const OSD_SIZE: u64 = 30 << 30;

fn run(addr: &str, args: &[&str]) -> Output {
    Command::new(CLI)
        .args(["--etcd_address", addr])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running vitastor-cli")
}

fn ok(addr: &str, args: &[&str]) -> String {
    let out = run(addr, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "vitastor-cli {args:?}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The one-line error of a refused command.
fn fails(addr: &str, args: &[&str]) -> String {
    let out = run(addr, args);
    assert!(!out.status.success(), "vitastor-cli {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_of(addr: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = ok(addr, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn pool<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pool {name} in {list}"))
}

/// Three OSDs on three hosts, as their daemons would report them.
fn three_osds(etcd: &EtcdServer) {
    for o in 1..=3 {
        let state = json!({"state":"up","addresses":["127.0.0.1"],"port":20000 + o,
            "host":format!("host{o}"),"primary_enabled":true,"blockstore_enabled":true});
        let stats = json!({"time":"1","size":OSD_SIZE,"free":OSD_SIZE,"host":format!("host{o}")});
        etcd.etcdctl(&[
            "put",
            &format!("/vitastor/osd/state/{o}"),
            &state.to_string(),
        ])
        .unwrap();
        etcd.etcdctl(&[
            "put",
            &format!("/vitastor/osd/stats/{o}"),
            &stats.to_string(),
        ])
        .unwrap();
    }
}

#[test]
fn ec_and_xor_pools_are_created_checked_listed_and_sized() {
    let etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    three_osds(&etcd);
    let a = &etcd.etcd_address();

    // The forms that fit three hosts.
    let out = ok(a, &["create-pool", "ec21", "--ec", "2+1", "-n", "4"]);
    assert!(out.contains("EC 2+1"), "{out}");
    ok(
        a,
        &[
            "create-pool",
            "x21",
            "-s",
            "3",
            "--scheme",
            "xor",
            "-n",
            "4",
        ],
    );
    ok(
        a,
        &[
            "create-pool",
            "x21b",
            "--ec",
            "2+1",
            "--scheme",
            "xor",
            "-n",
            "4",
        ],
    );
    ok(
        a,
        &[
            "create-pool",
            "j12",
            "-s",
            "3",
            "--scheme",
            "jerasure",
            "--parity_chunks",
            "2",
            "-n",
            "4",
        ],
    );
    let pools = json_of(a, &["ls-pools"]);
    let ec21 = pool(&pools, "ec21");
    assert_eq!(
        (
            &ec21["scheme"],
            &ec21["pg_size"],
            &ec21["parity_chunks"],
            &ec21["pg_minsize"]
        ),
        (&json!("ec"), &json!(3), &json!(1), &json!(2)),
        "{ec21}"
    );
    let x21 = pool(&pools, "x21");
    assert_eq!(
        (&x21["scheme"], &x21["parity_chunks"]),
        (&json!("xor"), &json!(1))
    );
    assert_eq!(pool(&pools, "x21b")["scheme"], "xor");
    let j12 = pool(&pools, "j12");
    assert_eq!(
        (&j12["scheme"], &j12["pg_minsize"]),
        (&json!("jerasure"), &json!(2))
    );
    let table = ok(a, &["ls-pools"]);
    for text in ["EC 2+1", "XOR 2+1", "EC 1+2"] {
        assert!(table.contains(text), "{text} missing in\n{table}");
    }

    // More chunks than failure domains: refused with what it needs and what there is.
    let e = fails(a, &["create-pool", "ec42", "--ec", "4+2", "-n", "4"]);
    assert!(
        e.contains("4+2") && e.contains("6 different hosts") && e.contains("has 3"),
        "{e}"
    );
    let e = fails(
        a,
        &[
            "create-pool",
            "ec42",
            "--ec",
            "2+2",
            "-n",
            "4",
            "--failure_domain",
            "osd",
        ],
    );
    assert!(e.contains("4 different osds") && e.contains("has 3"), "{e}");
    ok(
        a,
        &["create-pool", "ec42", "--ec", "4+2", "-n", "4", "--force"],
    );

    // Impossible shapes and unknown schemes: a clear usage error, nothing written.
    let refused = [
        (
            "-s 3 --scheme ec --parity_chunks 3",
            "parity_chunks (3) must be less than pg_size (3)",
        ),
        ("-s 3 --scheme raid5", "unknown --scheme \"raid5\""),
        (
            "-s 4 --scheme xor --parity_chunks 2",
            "exactly 1 parity chunk",
        ),
        ("-s 3 --scheme ec", "--parity_chunks"),
        ("-s 3 --parity_chunks 1", "xor and ec pools only"),
        ("--ec 2+1 --scheme xor --parity_chunks 2", "contradicts"),
    ];
    for (options, reason) in refused {
        let mut args = vec!["create-pool", "bad", "-n", "4"];
        args.extend(options.split(' '));
        let e = fails(a, &args);
        assert!(e.contains(reason), "{args:?}: {e}");
    }
    assert!(json_of(a, &["ls-pools"])
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["name"] != "bad"));

    // df: raw space of the PGs' OSDs, usable = raw × k/(k+m).
    let items: serde_json::Map<String, Value> = (1..=4)
        .map(|pg| (pg.to_string(), json!({"osd_set":[1,2,3],"primary":1})))
        .collect();
    let ec21_id = ec21["id"].to_string();
    let pg_config = json!({"items": {ec21_id.clone(): items}});
    etcd.etcdctl(&["put", "/vitastor/pg/config", &pg_config.to_string()])
        .unwrap();
    let space = json!({ec21_id: {"1": 3u64 << 30}});
    etcd.etcdctl(&["put", "/vitastor/osd/space/1", &space.to_string()])
        .unwrap();
    let df = json_of(a, &["df"]);
    let row = pool(&df, "ec21");
    assert_eq!(row["scheme"], "EC 2+1", "{row}");
    assert_eq!(row["total_raw"], 3 * OSD_SIZE, "{row}");
    assert_eq!(row["total"], 2 * OSD_SIZE, "{row}");
    assert_eq!(row["used"], 2u64 << 30, "{row}");
    assert_eq!(row["available"], 2 * OSD_SIZE, "{row}");
    let table = ok(a, &["df"]);
    assert!(
        table.contains("EC 2+1") && table.contains("60 G"),
        "{table}"
    );
}

#[test]
fn the_raw_json_form_is_read_and_bad_entries_are_named() {
    let etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    three_osds(&etcd);
    let a = &etcd.etcd_address();
    let pools = json!({
        "2": {"name":"ecpool","scheme":"jerasure","pg_size":4,"parity_chunks":2,"pg_minsize":2,
              "pg_count":256,"failure_domain":"host"},
        "3": {"name":"toomuch","scheme":"ec","pg_size":3,"parity_chunks":3,"pg_minsize":3,"pg_count":8},
        "4": {"name":"raid","scheme":"raid5","pg_size":3,"pg_minsize":2,"pg_count":8},
    });
    etcd.etcdctl(&["put", "/vitastor/config/pools", &pools.to_string()])
        .unwrap();
    let out = run(a, &["ls-pools"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        table.contains("ecpool") && table.contains("EC 2+2"),
        "{table}"
    );
    assert!(
        !table.contains("toomuch") && !table.contains("raid"),
        "{table}"
    );
    assert!(
        warnings.contains("pool 3") && warnings.contains("parity_chunks"),
        "{warnings}"
    );
    assert!(
        warnings.contains("pool 4") && warnings.contains("unknown scheme"),
        "{warnings}"
    );
    // A new pool goes above every id present, valid or not.
    ok(a, &["create-pool", "x", "--ec", "2+1", "-n", "2"]);
    assert_eq!(pool(&json_of(a, &["ls-pools"]), "x")["id"], 5);
}
