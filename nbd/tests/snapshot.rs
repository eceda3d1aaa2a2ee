//! `vitastor-nbd serve` of an image that gets snapshotted while served: the export follows
//! its name to the new top layer (its writes stopped failing with -EROFS once the old inode
//! became the read-only snapshot), and the snapshot keeps the data from before.

mod common;

use std::cell::RefCell;
use std::fs;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use vitastor::{Client, ClientOptions, OpDone};
use vitastor_testkit::{artifacts, require_tools};

fn read(client: &mut Client, inode: u64, len: u64) -> Vec<u8> {
    let out: Rc<RefCell<Option<OpDone>>> = Rc::default();
    let o = Rc::clone(&out);
    client.read(inode, 0, vec![0; len as usize], move |d| {
        *o.borrow_mut() = Some(d)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.borrow().is_none() {
        assert!(Instant::now() < deadline, "read did not finish");
        client.wait_events(Some(Duration::from_millis(20)));
    }
    let d = out.borrow_mut().take().unwrap();
    d.result.expect("read");
    d.buf
}

#[test]
fn served_image_follows_a_snapshot() {
    if !require_tools(&["nbdcopy"]) {
        return;
    }
    let dir = scratch("snap");
    let size = 4 * MIB;
    let serve = Serve::start(dir.path(), "nbd-snap", size);
    let a = pattern(size as usize, 7);
    let src = dir.path().join("src.bin");
    fs::write(&src, &a).unwrap();
    run_ok(60, "nbdcopy", &[src.to_str().unwrap(), &serve.uri()]);
    let out = Command::new(artifacts::fresh_path("vitastor-cli"))
        .args([
            "--etcd_address",
            &cluster().etcd_address(),
            "snap-create",
            "nbd-snap@s",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut opts = ClientOptions::new();
    opts.set("etcd_address", &cluster().etcd_address());
    let mut client = Client::new(&opts).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (snap, top) = loop {
        let v = client.view();
        if let (Some(s), Some(t)) = (v.image("nbd-snap@s"), v.image("nbd-snap")) {
            if s != t {
                break (s, t);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the client never saw the snapshot"
        );
        client.wait_events(Some(Duration::from_millis(20)));
    };
    // The server sees the snapshot within an etcd round; until then its writes may still
    // land in the old inode (acknowledged after snap-create returned: allowed there). Once
    // it follows, a write changes the new top layer and leaves the snapshot as it is.
    for seed in 8.. {
        let before = read(&mut client, snap, size);
        let data = pattern(size as usize, seed);
        fs::write(&src, &data).unwrap();
        let copy = run(60, "nbdcopy", &[src.to_str().unwrap(), &serve.uri()]);
        assert!(
            copy.status.success(),
            "nbdcopy after the snapshot failed: {copy:?}"
        );
        if read(&mut client, snap, size) == before {
            assert!(read(&mut client, top, size) == data);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes kept landing in the snapshot"
        );
    }
}
