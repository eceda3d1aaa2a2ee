//! `vitastor-cli` and `vitastor-rm` against a real etcd and real OSDs (testkit's `Cluster`:
//! 3 OSDs, pool 1 `testpool`, pg_size 2, 32 PGs, pg/config written by the kit). Cargo builds
//! this package's binaries for the test; the OSD's are rebuilt by the kit when stale.
//!
//! The cluster tests share one cluster (start-up dominates the run time) and go through the
//! commands in the order an operator would.

use std::cell::RefCell;
use std::process::{Command, Output, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vitastor::{Client, ClientOptions, OpDone};
use vitastor_testkit::{Cluster, ClusterOptions};

const CLI: &str = env!("CARGO_BIN_EXE_vitastor-cli");
const RM: &str = env!("CARGO_BIN_EXE_vitastor-rm");
const OBJ: u64 = 128 << 10;

fn run(bin: &str, addr: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(["--etcd_address", addr])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
fn ok(addr: &str, args: &[&str]) -> String {
    let out = run(CLI, addr, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "vitastor-cli {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a command that must fail with status 1 and one line on stderr; returns that line.
fn fails(addr: &str, args: &[&str]) -> String {
    let out = run(CLI, addr, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "vitastor-cli {args:?} should fail: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}

fn json(addr: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let text = ok(addr, &a);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

fn image<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|i| i["name"] == name)
}

/// Finished ops tagged with their object index (completions come in any order).
type Done = Rc<RefCell<Vec<(u64, OpDone)>>>;

fn wait(client: &mut Client, done: &Done, n: usize) -> Vec<OpDone> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.borrow().len() < n {
        assert!(Instant::now() < deadline, "client ops did not finish");
        client.wait_events(Some(Duration::from_millis(50)));
    }
    let mut all: Vec<(u64, OpDone)> = done.borrow_mut().drain(..).collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// Writes a pattern into objects 0..4 of `inode`, then checks every object reads back as it.
fn write_objects(client: &mut Client, inode: u64) {
    let done: Done = Rc::default();
    for i in 0..4u64 {
        let d = done.clone();
        client.write(
            inode,
            i * OBJ,
            vec![i as u8 + 1; OBJ as usize],
            0,
            move |r| d.borrow_mut().push((i, r)),
        );
    }
    for r in wait(client, &done, 4) {
        r.result.expect("write");
    }
}

fn read_objects(client: &mut Client, inode: u64) -> Vec<Vec<u8>> {
    let done: Done = Rc::default();
    for i in 0..4u64 {
        let d = done.clone();
        client.read(inode, i * OBJ, vec![0xAA; OBJ as usize], move |r| {
            d.borrow_mut().push((i, r))
        });
    }
    let mut bufs = Vec::new();
    for r in wait(client, &done, 4) {
        r.result.expect("read");
        bufs.push(r.buf);
    }
    bufs
}

#[test]
fn commands_against_a_cluster() {
    let started = Instant::now();
    let cluster = Cluster::start(ClusterOptions::from_workspace()).expect("starting the cluster");
    let addr = cluster.etcd_address();
    let a = addr.as_str();

    // Pools.
    let refused = fails(a, &["create-pool", "p2", "-s", "4", "-n", "16"]);
    assert!(refused.contains("--force"), "{refused}");
    let created = json(
        a,
        &[
            "create-pool",
            "p2",
            "-s",
            "2",
            "-n",
            "16",
            "--failure_domain",
            "osd",
        ],
    );
    assert_eq!(created["id"], 2);
    assert!(
        fails(a, &["create-pool", "p2", "-s", "2", "-n", "16", "--force"])
            .contains("already exists")
    );
    let pools = json(a, &["ls-pools"]);
    let p2 = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p2")
        .unwrap();
    assert_eq!(
        (p2["id"].as_u64(), p2["pg_size"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(p2["pg_minsize"], 1);
    ok(a, &["modify-pool", "p2", "--pg_count", "8", "--name", "p3"]);
    let pools = json(a, &["ls-pools"]);
    let p3 = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == 2)
        .unwrap();
    assert_eq!(
        (p3["name"].as_str(), p3["pg_count"].as_u64()),
        (Some("p3"), Some(8))
    );
    assert!(ok(a, &["ls-pools"]).contains("testpool"));
    // Pool ids are unique and the default pool is ambiguous now.
    assert!(fails(a, &["create", "-s", "1G", "x"]).contains("-p POOL"));

    // Images.
    let c = json(a, &["create", "-s", "1G", "-p", "testpool", "img1"]);
    assert_eq!(
        (c["pool_id"].as_u64(), c["id"].as_u64()),
        (Some(1), Some(1))
    );
    ok(a, &["create", "-s", "512M", "-p", "p3", "other"]);
    assert!(fails(a, &["create", "-s", "1G", "-p", "testpool", "img1"]).contains("already exists"));
    assert!(fails(a, &["create", "-s", "1000", "-p", "testpool", "odd"]).contains("multiple"));
    assert!(fails(a, &["create", "-s", "1G", "-p", "nopool", "y"]).contains("pool nopool"));
    let list = json(a, &["ls"]);
    assert_eq!(image(&list, "img1").unwrap()["size"], 1u64 << 30);
    assert_eq!(image(&list, "other").unwrap()["pool_name"], "p3");
    let human = ok(a, &["ls"]);
    assert!(human.starts_with("NAME") && human.contains("img1") && human.contains("1 G"));
    let long = ok(a, &["ls", "-l", "-p", "testpool", "img*"]);
    assert!(
        long.contains("USED") && long.contains("img1") && !long.contains("other"),
        "{long}"
    );

    ok(a, &["modify", "img1", "--resize", "2G"]);
    assert!(fails(a, &["modify", "img1", "--resize", "1G"]).contains("--force"));
    ok(a, &["modify", "img1", "--rename", "img2", "--readonly"]);
    let list = json(a, &["ls"]);
    assert!(image(&list, "img1").is_none());
    let img2 = image(&list, "img2").unwrap();
    assert_eq!(
        (img2["size"].as_u64(), img2["readonly"].as_bool()),
        (Some(2 << 30), Some(true))
    );
    assert!(ok(a, &["ls"]).contains("RO"));
    ok(a, &["modify", "img2", "--readwrite"]);
    assert_eq!(image(&json(a, &["ls"]), "img2").unwrap()["readonly"], false);
    assert!(fails(a, &["modify", "nosuch", "--readonly"]).contains("image nosuch does not exist"));
    assert!(fails(a, &["rm-pool", "p3"]).contains("still has"));

    // Status and friends. OSDs restart their PGs when config/pools changes; let them settle.
    cluster.wait_active(Duration::from_secs(30)).unwrap();
    let st = json(a, &["status"]);
    assert_eq!(
        (st["osd_up"].as_u64(), st["osd_count"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(st["pg_states"]["active"], 32, "{st}");
    let human = ok(a, &["status"]);
    assert!(
        human.contains("3 / 3 up") && human.contains("32 active"),
        "{human}"
    );
    // OSDs report osd/stats every few seconds (etcd_stats_interval 5 in the kit).
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.get_prefix("osd/stats/").unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "OSDs wrote no osd/stats");
        std::thread::sleep(Duration::from_millis(200));
    }
    let df = json(a, &["df"]);
    let tp = df
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "testpool")
        .unwrap();
    assert!(tp["total"].as_u64().unwrap() > 0, "{df}");
    assert!(ok(a, &["df"]).contains("testpool"));
    let osds = json(a, &["ls-osd"]);
    assert_eq!(osds.as_array().unwrap().len(), 3);
    assert!(osds.as_array().unwrap().iter().all(|o| o["up"] == true));
    assert!(ok(a, &["ls-osd"]).contains("up"));
    let tree = ok(a, &["osd-tree"]);
    assert!(tree.contains("host") && tree.lines().filter(|l| l.contains(" osd ")).count() == 3);
    let pgs = json(a, &["pg-list", "active"]);
    assert_eq!(pgs.as_array().unwrap().len(), 32);
    assert_eq!(
        json(a, &["pg-list", "active+^active"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert!(ok(a, &["pg-list", "-p", "testpool"]).contains("active"));
    assert!(fails(a, &["pg-list", "bogus"]).contains("bogus"));
    ok(
        a,
        &[
            "modify-osd",
            "2",
            "--tags",
            "nvme,fast",
            "--reweight",
            "0.5",
            "--noout",
            "true",
        ],
    );
    let o2 = json(a, &["ls-osd"]).as_array().unwrap()[1].clone();
    assert_eq!(
        (o2["reweight"].as_f64(), o2["noout"].as_bool()),
        (Some(0.5), Some(true))
    );
    assert_eq!(o2["tags"], serde_json::json!(["nvme", "fast"]));
    assert!(fails(a, &["rm-osd", "1"]).contains("is up"));
    assert!(fails(a, &["modify-osd", "9", "--noout", "true"]).contains("OSD 9"));

    // Concurrent creates get distinct ids.
    let children: Vec<_> = (0..6)
        .map(|i| {
            Command::new(CLI)
                .args([
                    "--etcd_address",
                    a,
                    "--json",
                    "create",
                    "-s",
                    "1M",
                    "-p",
                    "testpool",
                ])
                .arg(format!("conc{i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids: Vec<u64> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert!(!ids.contains(&1), "img2 has id 1: {ids:?}");

    // Data: write through the client, then rm deletes it and the keys.
    let mut opts = ClientOptions::new();
    opts.set("etcd_address", a);
    let mut client = Client::new(&opts).unwrap();
    let inode = (1u64 << 48) | 1; // img2
    write_objects(&mut client, inode);
    assert!(read_objects(&mut client, inode)
        .iter()
        .all(|b| b.iter().any(|&x| x != 0)));
    // Shrinking to 2 objects deletes objects 2 and 3 only.
    ok(a, &["modify", "img2", "--resize", "256K", "--force"]);
    let bufs = read_objects(&mut client, inode);
    let zero = |b: &Vec<u8>| b.iter().all(|&x| x == 0);
    assert!(!zero(&bufs[0]) && !zero(&bufs[1]) && zero(&bufs[2]) && zero(&bufs[3]));
    let removed = ok(a, &["rm", "img2"]);
    assert!(removed.contains("img2 removed"), "{removed}");
    assert!(read_objects(&mut client, inode).iter().all(zero));
    assert!(image(&json(a, &["ls"]), "img2").is_none());
    assert!(cluster.get_prefix("config/inode/1/1").unwrap().is_empty());
    assert!(cluster.get_prefix("index/image/img2").unwrap().is_empty());
    assert!(fails(a, &["rm", "img2"]).contains("does not exist"));

    // vitastor-rm with --size deletes every object below it without listing (listing is
    // tested in rm_listing.rs).
    let bare = (1u64 << 48) | 100;
    write_objects(&mut client, bare);
    let out = run(
        RM,
        a,
        &[
            "--pool",
            "testpool",
            "--inode",
            "100",
            "--size",
            "1M",
            "--parallel_osds",
            "2",
            "--iodepth",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Removed 8 objects"));
    assert!(read_objects(&mut client, bare).iter().all(zero));
    ok(
        a,
        &["rm-data", "--pool", "1", "--inode", "100", "--size", "512K"],
    );

    // Pool p3 has no PGs placed (no monitor here): removing its image cannot make progress,
    // so rm gives up after --stall_timeout and keeps the keys for a later retry.
    let t = Instant::now();
    let line = fails(a, &["rm", "other", "--stall_timeout", "2"]);
    assert!(line.contains("not active"), "{line}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(image(&json(a, &["ls"]), "other").is_some());
    ok(a, &["rm-pool", "p3", "--force"]);
    assert!(json(a, &["ls-pools"])
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["id"] != 2));
    eprintln!("cluster test took {:?}", started.elapsed());
}

#[test]
fn bad_arguments_exit_1_with_one_line() {
    let addr = "127.0.0.1:1/v3";
    assert!(fails(addr, &["frobnicate"]).contains("frobnicate"));
    assert!(fails(addr, &["create", "-s", "10Q", "img"]).contains("10Q"));
    assert!(fails(
        addr,
        &["create-pool", "p", "-s", "2", "--ec", "2+1", "-n", "1"]
    )
    .contains("--ec"));
    assert!(fails(addr, &["create-pool", "p", "--ec", "2-1", "-n", "1"]).contains("N+K"));
    let out = Command::new(CLI).args(["ls"]).output().unwrap();
    if !std::path::Path::new("/etc/vitastor/vitastor.conf").exists() {
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("etcd_address"));
    }
    let out = Command::new(CLI).arg("--help").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("create-pool"));
    let out = Command::new(RM).arg("--help").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--inode"));
}

#[test]
fn unreachable_etcd_fails_within_the_timeout() {
    // A port nobody listens on: refused connections must not be retried forever.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let addr = format!("127.0.0.1:{port}/v3");
    for args in [&["status"][..], &["ls"], &["create", "-s", "1G", "x"]] {
        let t = Instant::now();
        let line = fails(&addr, args);
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{args:?} took {:?}",
            t.elapsed()
        );
        assert!(line.contains("etcd"), "{line}");
    }
    // An address that accepts nothing at all (blackholed) ends with the timeout message.
    let t = Instant::now();
    let out = run(
        RM,
        "10.255.255.1:2379/v3",
        &["--pool", "1", "--inode", "1", "--size", "1M"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcd"));
}
