//! Layered images (snapshots and clones) read through real OSDs: each layer holds some
//! granules, a read of the top layer returns, granule by granule, the data of the highest
//! layer holding it (zeroes where none does); writes to a read-only layer fail with
//! `-EROFS`; broken chains (unknown parent, cycle, missing pool) fail reads with a clear
//! error; a watch follows its name to a new inode (a snapshot was taken).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;
use vitastor::{Callback, Client, ClientError, ClientOptions, ImageWatch, OpDone, WatchResult};
use vitastor_testkit::cluster::{Cluster, ClusterOptions};

const OBJ: u64 = 128 << 10;
const G: u64 = 4096;
const SIZE: u64 = 4 * OBJ;
const POOL: u64 = 1 << 48;

type Slot = Rc<RefCell<Vec<OpDone>>>;

fn wait_for(client: &mut Client, done: &Slot, n: usize) -> Vec<OpDone> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.borrow().len() < n {
        assert!(Instant::now() < deadline, "ops did not finish");
        client.wait_events(Some(Duration::from_millis(50)));
    }
    done.borrow_mut().drain(..).collect()
}

fn sink(done: &Slot) -> impl FnOnce(OpDone) + 'static {
    let d = Rc::clone(done);
    move |r| d.borrow_mut().push(r)
}

fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn write(client: &mut Client, done: &Slot, inode: u64, off: u64, data: &[u8]) {
    client.write(POOL | inode, off, data.to_vec(), 0, sink(done));
    wait_for(client, done, 1)[0].result.as_ref().expect("write");
}

fn read(
    client: &mut Client,
    done: &Slot,
    inode: u64,
    off: u64,
    len: u64,
) -> Result<Vec<u8>, ClientError> {
    client.read(POOL | inode, off, vec![0xEE; len as usize], sink(done));
    let d = wait_for(client, done, 1).remove(0);
    d.result.map(|_| d.buf)
}

/// Waits until the client's view has `f` true (etcd puts arrive through the watch).
fn settle(client: &mut Client, f: impl Fn(&Client) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f(client) {
        assert!(
            Instant::now() < deadline,
            "the client never saw the etcd change"
        );
        client.wait_events(Some(Duration::from_millis(20)));
    }
}

fn inode_cfg(cluster: &Cluster, inode: u64, cfg: serde_json::Value) {
    cluster
        .put_json(&format!("config/inode/1/{inode}"), &cfg)
        .unwrap();
}

#[test]
fn layered_reads_writes_and_broken_chains() {
    let cluster = Cluster::start(ClusterOptions::from_workspace()).expect("cluster");
    inode_cfg(&cluster, 1, json!({"name":"base","size":SIZE}));
    inode_cfg(&cluster, 2, json!({"name":"mid","size":SIZE,"parent_id":1}));
    // Written as the original may write it: numbers as strings.
    inode_cfg(
        &cluster,
        3,
        json!({"name":"top","size":SIZE,"parent_pool":"1","parent_id":"2"}),
    );
    cluster
        .put_json("index/image/top", &json!({"id":3,"pool_id":1}))
        .unwrap();
    let mut options = ClientOptions::new();
    options.set("etcd_address", &cluster.etcd_address());
    let mut client = Client::new(&options).expect("client");
    let done: Slot = Rc::default();
    settle(&mut client, |c| c.view().inode(POOL | 3).is_some());

    // Expected contents, layer by layer: later writes overlay earlier ones per granule.
    let mut base = vec![0u8; SIZE as usize];
    let writes: [(u64, u64, u64, u8); 7] = [
        // (inode, offset, len, seed); object 3 stays in the base only.
        (1, 0, SIZE, 1),
        (2, G, G, 2),
        (2, OBJ, OBJ, 3),
        (2, 2 * OBJ + 16 * G, 3 * G, 4),
        (3, 2 * G, 2 * G, 5),
        (3, 2 * OBJ + 17 * G, 8 * G, 6),
        (3, OBJ + 31 * G, G, 7),
    ];
    let mut layers = vec![vec![0u8; SIZE as usize]; 4];
    for &(inode, off, len, seed) in &writes {
        let data = pattern(seed, len);
        write(&mut client, &done, inode, off, &data);
        // A layer reads what it holds over what its parents hold.
        for layer in layers.iter_mut().skip(inode as usize) {
            layer[off as usize..(off + len) as usize].copy_from_slice(&data);
        }
    }
    base.copy_from_slice(&layers[1]);
    for inode in 1..=3u64 {
        let got = read(&mut client, &done, inode, 0, SIZE).expect("read");
        assert!(
            got == layers[inode as usize],
            "layer {inode} reads wrong data"
        );
    }
    // An op slot that served a layered read then serves a write to another inode: the
    // write must go there, not to the read's layers.
    let flat = pattern(9, 2 * G);
    write(&mut client, &done, 20, 0, &flat);
    assert!(read(&mut client, &done, 20, 0, 2 * G).unwrap() == flat);
    assert!(read(&mut client, &done, 3, 0, SIZE).unwrap() == layers[3]);
    // Object 3 of `top` was empty at the last reads, so this client now asks the top for
    // its bitmap while it reads the layers below at once. Another client writes there: the
    // bitmap, not the stale guess, decides (its granules come from the top).
    let mut other = Client::new(&options).expect("second client");
    let other_done: Slot = Rc::default();
    let fresh = pattern(11, 2 * G);
    write(&mut other, &other_done, 3, 3 * OBJ + 5 * G, &fresh);
    layers[3][(3 * OBJ + 5 * G) as usize..(3 * OBJ + 7 * G) as usize].copy_from_slice(&fresh);
    for _ in 0..2 {
        assert!(read(&mut client, &done, 3, 0, SIZE).unwrap() == layers[3]);
        assert!(read(&mut client, &done, 2, 0, SIZE).unwrap() == layers[2]);
    }
    // Unaligned to objects, crossing them.
    let got = read(&mut client, &done, 3, OBJ - 2 * G, OBJ + 4 * G).unwrap();
    assert!(got[..] == layers[3][(OBJ - 2 * G) as usize..(2 * OBJ + 2 * G) as usize]);

    // A snapshot refuses writes at the client: -EROFS.
    inode_cfg(
        &cluster,
        1,
        json!({"name":"base","size":SIZE,"readonly":true}),
    );
    settle(&mut client, |c| {
        c.view().inode(POOL | 1).is_some_and(|e| e.config.readonly)
    });
    client.write(POOL | 1, 0, vec![9; G as usize], 0, sink(&done));
    let e = wait_for(&mut client, &done, 1)
        .remove(0)
        .result
        .unwrap_err();
    assert!(
        matches!(e, ClientError::ReadOnlyImage(ref n) if n == "base"),
        "{e}"
    );
    assert_eq!(e.errno(), libc::EROFS);
    assert!(read(&mut client, &done, 1, 0, SIZE).unwrap() == base);

    // Broken chains fail reads with a clear error (and never hang).
    inode_cfg(
        &cluster,
        10,
        json!({"name":"orphan","size":SIZE,"parent_id":99}),
    );
    inode_cfg(
        &cluster,
        11,
        json!({"name":"c1","size":SIZE,"parent_id":12}),
    );
    inode_cfg(
        &cluster,
        12,
        json!({"name":"c2","size":SIZE,"parent_id":11}),
    );
    inode_cfg(
        &cluster,
        13,
        json!({"name":"far","size":SIZE,"parent_pool":7,"parent_id":1}),
    );
    settle(&mut client, |c| c.view().inode(POOL | 13).is_some());
    for (inode, needle) in [(10, "does not exist"), (11, "cycle"), (13, "pool 7")] {
        let e = read(&mut client, &done, inode, 0, G).unwrap_err();
        assert!(matches!(e, ClientError::BrokenLayers(_)), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
        // Writes to the top layer need no parent.
        write(&mut client, &done, inode, 0, &[1; G as usize]);
    }

    // A snapshot of `top`: the name moves to a new inode over the old one, and a watch on
    // the name follows it.
    let watched: Rc<RefCell<Option<WatchResult>>> = Rc::default();
    let w = Rc::clone(&watched);
    client.watch_inode(
        "top",
        Callback::Boxed(Box::new(move |r| *w.borrow_mut() = Some(r))),
    );
    settle(&mut client, |_| watched.borrow().is_some());
    let watch: ImageWatch = watched.borrow_mut().take().unwrap().expect("watch");
    assert_eq!(watch.with(|i| (i.inode, i.parent_id)), (POOL | 3, POOL | 2));
    cluster
        .put_json_atomic(&[
            (
                "config/inode/1/3".into(),
                json!({"name":"top@s","size":SIZE,"parent_id":2,"readonly":true}),
            ),
            (
                "config/inode/1/4".into(),
                json!({"name":"top","size":SIZE,"parent_id":3}),
            ),
            ("index/image/top".into(), json!({"id":4,"pool_id":1})),
            ("index/image/top@s".into(), json!({"id":3,"pool_id":1})),
        ])
        .unwrap();
    settle(&mut client, |_| watch.with(|i| i.inode) == POOL | 4);
    assert_eq!(watch.with(|i| (i.parent_id, i.readonly)), (POOL | 3, false));
    assert!(read(&mut client, &done, 4, 0, SIZE).unwrap() == layers[3]);
    write(&mut client, &done, 4, 0, &[0x55; G as usize]);
    let mut expect = layers[3].clone();
    expect[..G as usize].fill(0x55);
    assert!(read(&mut client, &done, 4, 0, SIZE).unwrap() == expect);
    assert!(read(&mut client, &done, 3, 0, SIZE).unwrap() == layers[3]);
}
