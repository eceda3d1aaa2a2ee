//! Snapshots and clones end to end: `vitastor-cli` commands on a real etcd and real OSDs
//! (testkit's `Cluster`), data written and checked through the client library and through
//! fio with the engine (`-verify`), one cluster for the whole story.

use std::cell::RefCell;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vitastor::{Client, ClientOptions, OpDone};
use vitastor_testkit::{artifacts, require_tools, Cluster, ClusterOptions};

const CLI: &str = env!("CARGO_BIN_EXE_vitastor-cli");
const FIO: &str = "/usr/bin/fio";
const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;
const FIO_TIMEOUT: Duration = Duration::from_secs(120);

fn run(addr: &str, args: &[&str]) -> Output {
    Command::new(CLI)
        .args(["--etcd_address", addr])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running vitastor-cli: {e}"))
}

fn ok(addr: &str, args: &[&str]) -> String {
    let out = run(addr, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "vitastor-cli {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn fails(addr: &str, args: &[&str]) -> String {
    let out = run(addr, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "vitastor-cli {args:?} should fail: {stderr}"
    );
    stderr
}

fn ls(addr: &str) -> Vec<Value> {
    let text = ok(addr, &["ls", "--json"]);
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn layer(addr: &str, name: &str) -> Value {
    ls(addr)
        .into_iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no image {name}"))
}

fn inode(addr: &str, name: &str) -> u64 {
    layer(addr, name)["inode"].as_u64().unwrap()
}

struct Io {
    client: Client,
    done: Rc<RefCell<Vec<OpDone>>>,
}

impl Io {
    fn new(addr: &str) -> Io {
        let mut o = ClientOptions::new();
        o.set("etcd_address", addr);
        let mut client = Client::new(&o).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client.is_ready() {
            assert!(Instant::now() < deadline, "client not ready");
            client.wait_events(Some(Duration::from_millis(50)));
        }
        Io {
            client,
            done: Rc::default(),
        }
    }

    fn wait(&mut self) -> OpDone {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.done.borrow().is_empty() {
            assert!(Instant::now() < deadline, "op did not finish");
            self.client.wait_events(Some(Duration::from_millis(20)));
        }
        self.done.borrow_mut().remove(0)
    }

    /// Waits until the client's view of etcd has caught up with the CLI's change.
    fn settle(&mut self, inode: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.client.view().inode(inode).is_none() {
            assert!(
                Instant::now() < deadline,
                "client never saw inode {inode:#x}"
            );
            self.client.wait_events(Some(Duration::from_millis(20)));
        }
    }

    fn write(&mut self, inode: u64, off: u64, data: Vec<u8>) {
        let d = Rc::clone(&self.done);
        self.client
            .write(inode, off, data, 0, move |r| d.borrow_mut().push(r));
        self.wait().result.expect("write");
    }

    fn read(&mut self, inode: u64, off: u64, len: u64) -> Vec<u8> {
        let d = Rc::clone(&self.done);
        self.client
            .read(inode, off, vec![0xEE; len as usize], move |r| {
                d.borrow_mut().push(r)
            });
        let r = self.wait();
        r.result.expect("read");
        r.buf
    }
}

fn fill(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i / 4096) as u8 ^ seed ^ (i as u8))
        .collect()
}

fn engine() -> PathBuf {
    artifacts::fresh_path("libvitastor.so");
    artifacts::fresh_path("libfio_vitastor.so")
}

/// fio on image `image` with the engine; returns the child and its output directory.
fn fio_start(addr: &str, args: &[&str]) -> (Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(FIO)
        .arg("-thread")
        .arg(format!("-ioengine={}", engine().display()))
        .arg(format!("-etcd={addr}"))
        .args(["-name=test", "-direct=1", "-output-format=json"])
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.path().join("out")).unwrap())
        .stderr(fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .expect("running fio");
    (child, dir)
}

fn fio_wait(mut child: Child, dir: &tempfile::TempDir, what: &str) {
    let deadline = Instant::now() + FIO_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            // Our own child, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            panic!("fio ({what}) ran too long");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let out = fs::read_to_string(dir.path().join("out")).unwrap_or_default();
    let err = fs::read_to_string(dir.path().join("err")).unwrap_or_default();
    // With -status-interval the output is several JSON documents; the last is the report.
    let report: Option<Value> = out.find('{').and_then(|s| {
        serde_json::Deserializer::from_str(&out[s..])
            .into_iter::<Value>()
            .map_while(Result::ok)
            .last()
    });
    let job_errors = report
        .as_ref()
        .and_then(|r| r["jobs"].as_array().cloned())
        .map(|jobs| jobs.iter().all(|j| j["error"] == 0));
    assert!(
        status.success() && job_errors == Some(true),
        "fio ({what}) failed: {status}\n{out}\n{err}"
    );
}

fn fio(addr: &str, what: &str, args: &[&str]) {
    let (child, dir) = fio_start(addr, args);
    fio_wait(child, &dir, what);
}

/// fio's written bytes so far, from its periodic status (`-status-interval=1`).
fn fio_written(dir: &tempfile::TempDir) -> u64 {
    let out = fs::read_to_string(dir.path().join("out")).unwrap_or_default();
    let Some(start) = out.find('{') else {
        return 0;
    };
    serde_json::Deserializer::from_str(&out[start..])
        .into_iter::<Value>()
        .map_while(Result::ok)
        .last()
        .and_then(|d| d["jobs"][0]["write"]["io_bytes"].as_u64())
        .unwrap_or(0)
}

fn wait_written(child: &mut Child, dir: &tempfile::TempDir, bytes: u64) {
    let deadline = Instant::now() + FIO_TIMEOUT;
    while fio_written(dir) < bytes {
        assert!(child.try_wait().unwrap().is_none(), "fio exited early");
        assert!(Instant::now() < deadline, "fio wrote too little");
        thread::sleep(Duration::from_millis(50));
    }
}

fn pattern_args(image: &str, rw: &str, pattern: &str, offset: u64, size: u64) -> Vec<String> {
    vec![
        format!("-image={image}"),
        format!("-rw={rw}"),
        "-bs=64k".into(),
        "-iodepth=8".into(),
        format!("-offset={offset}"),
        format!("-size={size}"),
        "-verify=pattern".into(),
        format!("-verify_pattern={pattern}"),
        // Verify blocks by their pattern only: a read-only run has no written-block log.
        "-verify_only=0".into(),
    ]
}

fn fio_pattern(addr: &str, image: &str, rw: &str, pattern: &str, offset: u64, size: u64) {
    let args = pattern_args(image, rw, pattern, offset, size);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    fio(addr, &format!("{rw} {pattern} on {image}"), &refs);
}

#[test]
fn snapshots_and_clones() {
    if !require_tools(&[FIO]) {
        return;
    }
    engine();
    let mut opts = ClusterOptions::from_workspace();
    opts.osd_size = 512 * MIB;
    let cluster = Cluster::start(opts).expect("cluster");
    let addr = cluster.etcd_address();
    let a = addr.as_str();

    // Write an image, snapshot it, overwrite half: the snapshot keeps the old bytes.
    ok(a, &["create", "-s", "16M", "img"]);
    fio_pattern(a, "img", "write", "0x11", 0, SIZE);
    let out = ok(a, &["snap-create", "img@s1"]);
    assert!(out.contains("img@s1"), "{out}");
    let snap = layer(a, "img@s1");
    assert_eq!(snap["readonly"], true);
    assert_eq!(layer(a, "img")["parent_name"], "img@s1");
    fio_pattern(a, "img", "write", "0x22", 0, SIZE / 2);
    fio_pattern(a, "img@s1", "read", "0x11", 0, SIZE);
    fio_pattern(a, "img", "read", "0x22", 0, SIZE / 2);
    fio_pattern(a, "img", "read", "0x11", SIZE / 2, SIZE / 2);
    fails(a, &["snap-create", "img@s1"]);

    // A chain of 5 snapshots, each over a distinct pattern.
    let mut io = Io::new(a);
    ok(a, &["create", "-s", "16M", "chain"]);
    let mut expect: Vec<(String, Vec<u8>)> = Vec::new();
    let mut cur = vec![0u8; SIZE as usize];
    for k in 1..=5u64 {
        let ino = inode(a, "chain");
        io.settle(ino);
        // Granule-sized pieces at different offsets, crossing objects.
        let (off, len) = (k * 3 * MIB / 2 + 4096 * k, MIB + 8192);
        let data = fill(k as u8, len);
        io.write(ino, off, data.clone());
        cur[off as usize..(off + len) as usize].copy_from_slice(&data);
        let name = format!("chain@c{k}");
        ok(a, &["snap-create", &name]);
        expect.push((name, cur.clone()));
    }
    expect.push(("chain".into(), cur.clone()));
    let check_all = |io: &mut Io, expect: &[(String, Vec<u8>)]| {
        for (name, data) in expect {
            let ino = inode(a, name);
            io.settle(ino);
            assert!(
                io.read(ino, 0, SIZE) == *data,
                "layer {name} reads wrong data"
            );
        }
    };
    check_all(&mut io, &expect);
    let tree = ok(a, &["ls", "--tree"]);
    assert!(
        tree.contains("chain@c1") && tree.contains("└── chain"),
        "{tree}"
    );

    // Deleting a middle snapshot merges it into its child; every layer reads the same.
    let out = ok(a, &["rm", "chain@c3"]);
    assert!(out.contains("removed"), "{out}");
    expect.retain(|(n, _)| n != "chain@c3");
    assert_eq!(layer(a, "chain@c4")["parent_name"], "chain@c2");
    check_all(&mut io, &expect);
    // merge-data by hand: c4 takes c2's and c1's data; nothing reads differently.
    ok(a, &["merge-data", "chain@c1", "chain@c4"]);
    check_all(&mut io, &expect);

    // A middle snapshot with much data under a small read-only child: the child's data
    // moves down instead, and the snapshot's inode takes the child's name. Every layer
    // reads the same, the writable top's inode included.
    ok(a, &["create", "-s", "16M", "inv"]);
    let mut cur = vec![0u8; SIZE as usize];
    let mut inv_expect: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, off, len, seed) in [
        ("inv@big", 0, 4 * MIB, 0x31u8),
        ("inv@small", 4096, 8192, 0x32),
    ] {
        let ino = inode(a, "inv");
        io.settle(ino);
        let data = fill(seed, len);
        io.write(ino, off, data.clone());
        cur[off as usize..(off + len) as usize].copy_from_slice(&data);
        ok(a, &["snap-create", name]);
        inv_expect.push((name.to_string(), cur.clone()));
    }
    let top = inode(a, "inv");
    io.settle(top);
    io.write(top, 3 * MIB, vec![0x33; 4096]);
    cur[3 * MIB as usize..3 * MIB as usize + 4096].fill(0x33);
    inv_expect.push(("inv".into(), cur.clone()));
    check_all(&mut io, &inv_expect);
    let big = inode(a, "inv@big");
    ok(a, &["rm", "inv@big"]);
    inv_expect.retain(|(n, _)| n != "inv@big");
    assert!(ls(a).iter().all(|i| i["name"] != "inv@big"));
    assert_eq!(
        inode(a, "inv@small"),
        big,
        "inv@small moved down onto inv@big's inode"
    );
    assert_eq!(layer(a, "inv@small")["readonly"], true);
    assert_eq!(layer(a, "inv")["parent_name"], "inv@small");
    assert_eq!(inode(a, "inv"), top);
    check_all(&mut io, &inv_expect);
    // The writable top is small too, but may be open: the snapshot's data moves up into it
    // and it keeps its inode.
    ok(a, &["rm", "inv@small"]);
    inv_expect.retain(|(n, _)| n != "inv@small");
    assert_eq!(inode(a, "inv"), top);
    assert!(layer(a, "inv")["parent_name"].is_null());
    check_all(&mut io, &inv_expect);

    // Clones of one snapshot diverge independently; the parent is unchanged.
    fails(a, &["create", "--parent", "img", "bad"]); // writable parent
    let e = fails(a, &["create", "--parent", "nosuch@x", "bad"]);
    assert!(e.contains("does not exist"), "{e}");
    ok(a, &["create", "--parent", "img@s1", "c1"]);
    ok(a, &["create", "--parent", "img@s1", "c2"]);
    assert_eq!(layer(a, "c1")["size"], SIZE);
    let (c1, c2, s1) = (inode(a, "c1"), inode(a, "c2"), inode(a, "img@s1"));
    io.settle(c2);
    io.write(c1, 4096, vec![0xC1; 8192]);
    io.write(c2, 8192, vec![0xC2; 8192]);
    let base = vec![0x11u8; SIZE as usize];
    assert!(io.read(s1, 0, SIZE) == base);
    let mut e1 = base.clone();
    e1[4096..12288].fill(0xC1);
    let mut e2 = base.clone();
    e2[8192..16384].fill(0xC2);
    assert!(io.read(c1, 0, SIZE) == e1);
    assert!(io.read(c2, 0, SIZE) == e2);
    let e = fails(a, &["rm", "img@s1"]);
    assert!(
        e.contains("img") && e.contains("c1") && e.contains("c2"),
        "{e}"
    );

    // Flatten while fio writes and verifies the clone; then its parents can go.
    ok(a, &["create", "-s", "16M", "gold"]);
    fio_pattern(a, "gold", "write", "0x33", 0, SIZE);
    ok(a, &["snap-create", "gold@g"]);
    ok(a, &["create", "--parent", "gold@g", "vm"]);
    let (mut child, dir) = fio_start(
        a,
        &[
            "-image=vm",
            "-rw=randwrite",
            "-bs=4k",
            "-iodepth=4",
            "-size=8M",
            "-rate_iops=400",
            "-verify=crc32c",
            "-status-interval=1",
        ],
    );
    wait_written(&mut child, &dir, 256 << 10);
    let out = ok(a, &["flatten", "vm", "--json"]);
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["result"], "flattened", "{out}");
    assert!(out.contains("\"progress\""), "{out}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "fio finished before flatten: proves nothing"
    );
    fio_wait(child, &dir, "randwrite verify during flatten");
    assert_eq!(layer(a, "vm")["parent_name"], Value::Null);
    // Re-running finds nothing to copy.
    let again: Value =
        serde_json::from_str(ok(a, &["flatten", "vm", "--json"]).lines().last().unwrap()).unwrap();
    assert_eq!(again["result"], "has no parent");
    let vm = inode(a, "vm");
    let before = io.read(vm, 0, SIZE);
    ok(a, &["rm", "gold"]);
    ok(a, &["rm", "gold@g"]);
    assert!(
        io.read(vm, 0, SIZE) == before,
        "vm changed when its old parents went"
    );
    // The second half was never written by fio: it is the parent's, copied.
    assert!(before[(SIZE / 2) as usize..].iter().all(|&b| b == 0x33));

    // A snapshot taken while fio writes through the engine: fio sees no error and its
    // verify reads every block back through the layers; the snapshot holds a prefix of
    // fio's sequential writes (those acknowledged before snap-create returned).
    ok(a, &["create", "-s", "16M", "live"]);
    let (mut child, dir) = fio_start(
        a,
        &[
            "-image=live",
            "-rw=write",
            "-bs=4k",
            "-iodepth=1",
            "-size=8M",
            "-rate_iops=500",
            "-verify=crc32c",
            "-status-interval=1",
        ],
    );
    wait_written(&mut child, &dir, 512 << 10);
    ok(a, &["snap-create", "live@now"]);
    assert!(
        child.try_wait().unwrap().is_none(),
        "fio finished before the snapshot"
    );
    fio_wait(child, &dir, "write during snap-create");
    let (live, now) = (inode(a, "live"), inode(a, "live@now"));
    io.settle(now);
    let top = io.read(live, 0, 8 * MIB);
    let snap = io.read(now, 0, 8 * MIB);
    let blocks: Vec<bool> = snap
        .chunks(4096)
        .map(|b| b.iter().any(|&x| x != 0))
        .collect();
    let prefix = blocks.iter().take_while(|&&b| b).count();
    assert!(
        prefix * 4096 >= 512 << 10,
        "snapshot lacks acknowledged writes"
    );
    assert!(
        blocks[prefix..].iter().all(|&b| !b),
        "snapshot is not a point in time"
    );
    assert!(snap[..prefix * 4096] == top[..prefix * 4096]);

    // modify on layers.
    ok(a, &["modify", "c2", "--rename", "c2b"]);
    assert_eq!(layer(a, "c2b")["parent_name"], "img@s1");
    ok(a, &["modify", "img@s1", "--readwrite"]);
    assert_eq!(layer(a, "img@s1")["readonly"], false);
    ok(a, &["modify", "img@s1", "--readonly"]);
    ok(a, &["modify", "chain@c5", "--rename", "chain@last"]);
    assert_eq!(layer(a, "chain")["parent_name"], "chain@last");
    fails(a, &["modify", "chain@last", "--rename", "x@y@z"]);

    // Bad input: a cycle written by hand, a parent in a missing pool: clear errors.
    cluster
        .put_json(
            "config/inode/1/900",
            &json!({"name":"cy1","size":SIZE,"parent_id":901}),
        )
        .unwrap();
    cluster
        .put_json(
            "config/inode/1/901",
            &json!({"name":"cy2","size":SIZE,"parent_id":900}),
        )
        .unwrap();
    cluster
        .put_json("index/image/cy1", &json!({"id":900,"pool_id":1}))
        .unwrap();
    cluster
        .put_json(
            "config/inode/1/902",
            &json!({"name":"far","size":SIZE,"parent_pool":9,"parent_id":1}),
        )
        .unwrap();
    cluster
        .put_json("index/image/far", &json!({"id":902,"pool_id":1}))
        .unwrap();
    let e = fails(a, &["flatten", "cy1"]);
    assert!(e.contains("cycle"), "{e}");
    let e = fails(a, &["flatten", "far"]);
    assert!(e.contains("pool 9") && e.contains("does not exist"), "{e}");
    // fio on them fails at once with the reason, never hangs.
    for image in ["cy1", "far"] {
        let (child, dir) = fio_start(
            a,
            &[&format!("-image={image}"), "-rw=read", "-bs=4k", "-size=4k"],
        );
        let deadline = Instant::now() + FIO_TIMEOUT;
        let mut child = child;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "fio hung on {image}");
            thread::sleep(Duration::from_millis(50));
        }
        let err = fs::read_to_string(dir.path().join("err")).unwrap_or_default();
        let out = fs::read_to_string(dir.path().join("out")).unwrap_or_default();
        assert!(
            err.contains("layers") || err.contains("Input/output error"),
            "fio on {image}: {out}\n{err}"
        );
    }
    // ls survives all of it.
    let tree = ok(a, &["ls", "--tree"]);
    assert!(tree.contains("far [parent missing]"), "{tree}");
}
