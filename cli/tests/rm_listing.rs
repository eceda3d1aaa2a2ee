//! `vitastor-rm` and `vitastor-cli rm-data`/`rm` find an inode's objects by listing them on
//! the OSDs (the original's way), on a real cluster (testkit's `Cluster`: 3 OSDs, pool 1
//! `testpool`, pg_size 2, 32 PGs): an inode with no `config/inode` key needs no `--size`,
//! and objects past an image's size are removed too.

use std::cell::RefCell;
use std::process::{Command, Output, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vitastor::{Client, ClientOptions, OpDone};
use vitastor_testkit::{Cluster, ClusterOptions};

const CLI: &str = env!("CARGO_BIN_EXE_vitastor-cli");
const RM: &str = env!("CARGO_BIN_EXE_vitastor-rm");
const POOL: u64 = 1 << 48;
/// One bitmap granule: the smallest write, enough to create an object.
const GRANULE: usize = 4096;

fn run(bin: &str, addr: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(["--etcd_address", addr])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"))
}

fn ok(bin: &str, addr: &str, args: &[&str]) -> String {
    let out = run(bin, addr, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs one op per offset and waits for all of them.
fn each(
    client: &mut Client,
    offsets: &[u64],
    mut start: impl FnMut(&mut Client, u64, Box<dyn FnOnce(OpDone)>),
) -> Vec<OpDone> {
    let done: Rc<RefCell<Vec<(usize, OpDone)>>> = Rc::default();
    for (i, &offset) in offsets.iter().enumerate() {
        let d = done.clone();
        start(
            client,
            offset,
            Box::new(move |r| d.borrow_mut().push((i, r))),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.borrow().len() < offsets.len() {
        assert!(Instant::now() < deadline, "client ops did not finish");
        client.wait_events(Some(Duration::from_millis(50)));
    }
    let mut all: Vec<(usize, OpDone)> = done.borrow_mut().drain(..).collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

fn write(client: &mut Client, inode: u64, offsets: &[u64]) {
    for r in each(client, offsets, |c, off, cb| {
        c.write(inode, off, vec![0x5A; GRANULE], 0, cb)
    }) {
        r.result.expect("write");
    }
}

/// Whether each offset still holds the written pattern (else it reads as zeros).
fn present(client: &mut Client, inode: u64, offsets: &[u64]) -> Vec<bool> {
    each(client, offsets, |c, off, cb| {
        c.read(inode, off, vec![0xAA; GRANULE], cb)
    })
    .into_iter()
    .map(|r| {
        r.result.expect("read");
        assert!(r.buf.iter().all(|&b| b == 0x5A) || r.buf.iter().all(|&b| b == 0));
        r.buf[0] == 0x5A
    })
    .collect()
}

#[test]
fn removal_lists_objects_on_the_osds() {
    let cluster = Cluster::start(ClusterOptions::from_workspace()).expect("starting the cluster");
    let addr = cluster.etcd_address();
    let a = addr.as_str();
    let mut opts = ClientOptions::new();
    opts.set("etcd_address", a);
    let mut client = Client::new(&opts).unwrap();

    // The seed's flow: data written by inode number, no config/inode key, objects spread
    // over many PGs, some far out.
    let bare = POOL | 100;
    let neighbour = POOL | 101;
    let offsets = [0, 128 << 10, 5 * (128 << 10), 1 << 30, 1 << 40];
    write(&mut client, bare, &offsets);
    write(&mut client, neighbour, &offsets[..2]);
    let out = ok(
        RM,
        a,
        &[
            "--pool",
            "1",
            "--inode",
            "100",
            "--parallel_osds",
            "16",
            "--iodepth",
            "32",
        ],
    );
    assert!(out.contains("Removed 5 objects"), "{out}");
    assert_eq!(present(&mut client, bare, &offsets), [false; 5]);
    assert_eq!(present(&mut client, neighbour, &offsets[..2]), [true; 2]);
    // Nothing left: a second run lists nothing and succeeds.
    let out = ok(RM, a, &["--pool", "testpool", "--inode", "100"]);
    assert!(out.contains("Removed 0 objects"), "{out}");

    // rm-data keeps what lies below --min_offset (the object holding it stays whole).
    let partial = POOL | 102;
    let offsets = [0, 128 << 10, 2 << 20];
    write(&mut client, partial, &offsets);
    let out = ok(
        CLI,
        a,
        &[
            "rm-data",
            "--pool",
            "1",
            "--inode",
            "102",
            "--min_offset",
            "4K",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["objects_removed"], 2, "{v}");
    assert_eq!(
        present(&mut client, partial, &offsets),
        [true, false, false]
    );

    // rm of an image also removes objects past its size.
    let created: Value = serde_json::from_str(&ok(
        CLI,
        a,
        &["create", "-s", "256K", "-p", "testpool", "small", "--json"],
    ))
    .unwrap();
    let image = POOL | created["id"].as_u64().unwrap();
    let offsets = [0, 10 << 20, 3 << 30];
    write(&mut client, image, &offsets);
    ok(CLI, a, &["rm", "small"]);
    assert_eq!(present(&mut client, image, &offsets), [false; 3]);
    assert_eq!(present(&mut client, neighbour, &[0, 128 << 10]), [true; 2]);
}
