//! End-to-end I/O through real OSDs started by testkit's `devcluster`.
//!
//! `devcluster` and the OSD binaries it runs come from this workspace's target directory,
//! rebuilt first when missing or stale (testkit's `artifacts`); the pool the cluster creates
//! is taken to be pool 1 with the default 128 KiB objects.

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use vitastor::{Client, ClientError, ClientOptions, OpDone};
use vitastor_testkit::{artifacts, process};

const INODE: u64 = (1 << 48) | 1;
const OBJ: u64 = 128 << 10;
/// Bounds `devcluster up`/`down`, which bound their own waits well below this.
const DEVCLUSTER_TIMEOUT: Duration = Duration::from_secs(180);

/// `devcluster`, with the binaries it starts (from its own directory) fresh too.
fn devcluster() -> PathBuf {
    for bin in ["vitastor-osd", "vitastor-disk"] {
        artifacts::fresh_path(bin);
    }
    artifacts::fresh_path("devcluster")
}

/// Stops the cluster even when an assertion fails.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    etcd_address: String,
}

impl Cluster {
    fn up(bin: PathBuf, immediate_commit: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let out = process::output_within(
            Command::new(&bin)
                .args(["up", "--dir"])
                .arg(dir.path())
                .args([
                    "--osds",
                    "3",
                    "--pg-size",
                    "2",
                    // The OSD files are reserved in full (vitastor-disk prepare --size);
                    // these tests write a few MiB.
                    "--osd-size",
                    "1073741824",
                    "--immediate-commit",
                    immediate_commit,
                ])
                .stdin(Stdio::null()),
            DEVCLUSTER_TIMEOUT,
        )
        .expect("devcluster up");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "devcluster up failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let etcd_address = stdout
            .lines()
            .find_map(|l| l.strip_prefix("etcd_address="))
            .expect("devcluster printed no etcd_address=")
            .trim()
            .to_string();
        Cluster {
            bin,
            dir,
            etcd_address,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = process::output_within(
            Command::new(&self.bin)
                .args(["down", "--dir"])
                .arg(self.dir.path())
                .stdin(Stdio::null()),
            DEVCLUSTER_TIMEOUT,
        );
    }
}

type Slot = Rc<RefCell<Vec<OpDone>>>;

fn wait_for(client: &mut Client, done: &Slot, n: usize) -> Vec<OpDone> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.borrow().len() < n {
        assert!(Instant::now() < deadline, "ops did not finish");
        client.wait_events(Some(Duration::from_millis(100)));
    }
    done.borrow_mut().drain(..).collect()
}

/// Waits for the one op in flight, which must succeed (`what` says which failed).
fn wait_ok(client: &mut Client, done: &Slot, what: &str) {
    wait_for(client, done, 1)[0].result.as_ref().expect(what);
}

/// A client of `cluster` on this thread.
fn client_of(cluster: &Cluster) -> Client {
    let mut options = ClientOptions::new();
    options.set("etcd_address", &cluster.etcd_address);
    Client::new(&options).expect("client")
}

fn sink(done: &Slot) -> impl FnOnce(OpDone) + 'static {
    let d = Rc::clone(done);
    move |r| d.borrow_mut().push(r)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(31).wrapping_add(seed * 7919) % 251) as u8)
        .collect()
}

fn run(immediate_commit: &str) {
    let cluster = Cluster::up(devcluster(), immediate_commit);
    let mut client = client_of(&cluster);
    let done: Slot = Rc::default();

    // Writes across object and PG boundaries, in parallel.
    let ranges = [
        (0, 4096),
        (OBJ - 8192, 16384),
        (3 * OBJ + 4096, 2 * OBJ),
        (17 * OBJ, 5 * OBJ),
    ];
    for (i, &(off, len)) in ranges.iter().enumerate() {
        client.write(INODE, off, pattern(i as u64, len as usize), 0, sink(&done));
    }
    for d in wait_for(&mut client, &done, ranges.len()) {
        d.result.expect("write");
    }
    client.sync(sink(&done));
    wait_ok(&mut client, &done, "sync");
    for (i, &(off, len)) in ranges.iter().enumerate() {
        client.read(INODE, off, vec![0; len as usize], sink(&done));
        let d = wait_for(&mut client, &done, 1).remove(0);
        assert_eq!(d.result.as_ref().ok(), Some(&len));
        assert!(
            d.buf == pattern(i as u64, len as usize),
            "data of range {i} differs"
        );
    }

    // Unaligned requests are refused at once.
    client.write(INODE, 100, vec![0; 4096], 0, sink(&done));
    let d = wait_for(&mut client, &done, 1).remove(0);
    assert!(matches!(d.result, Err(ClientError::InvalidRequest(_))));

    // Delete whole objects, then they read back as zeroes.
    client.delete(INODE, 17 * OBJ, 2 * OBJ, 0, sink(&done));
    wait_ok(&mut client, &done, "delete");
    client.read(INODE, 17 * OBJ, vec![1; OBJ as usize], sink(&done));
    let d = wait_for(&mut client, &done, 1).remove(0);
    d.result.expect("read after delete");
    assert!(d.buf.iter().all(|&b| b == 0));
}

#[test]
fn io_with_immediate_commit_all() {
    run("all");
}

#[test]
fn io_with_immediate_commit_none() {
    run("none");
}

/// The client's own system calls per op, as it counts them ([`Client::io_counts`]): a 4 KiB
/// op at depth 1 costs one wait, one send and one receive; the 32 parts of a 4 MiB write
/// leave in one `sendmsg` per OSD connection (more only when a socket buffer fills), not one
/// per part; a 4 MiB read receives each object's data straight into the caller's buffer.
#[test]
fn syscalls_per_op() {
    let cluster = Cluster::up(devcluster(), "all");
    let mut client = client_of(&cluster);
    let done: Slot = Rc::default();
    const BIG: u64 = 4 << 20;
    // Connects to every OSD: 32 objects over all PGs.
    client.write(INODE, 0, pattern(1, BIG as usize), 0, sink(&done));
    wait_ok(&mut client, &done, "first write");

    const N: u64 = 100;
    let before = client.io_counts();
    for i in 0..N {
        client.write(INODE, i * 4096, pattern(i, 4096), 0, sink(&done));
        wait_ok(&mut client, &done, "4k write");
        client.read(INODE, i * 4096, vec![0; 4096], sink(&done));
        let d = wait_for(&mut client, &done, 1).remove(0);
        assert!(d.buf == pattern(i, 4096), "4k read {i} differs");
    }
    let small = client.io_counts() - before;
    let per_op = |n: u64| n as f64 / (2 * N) as f64;
    eprintln!("4 KiB ops at depth 1, per op: {small:?}");
    // A stray extra call (a reply split by the network) is allowed for; two per op is not.
    assert!(per_op(small.waits) <= 1.2, "epoll waits per op: {small:?}");
    assert!(per_op(small.sends) <= 1.2, "sends per op: {small:?}");
    assert!(per_op(small.receives) <= 1.2, "receives per op: {small:?}");

    let before = client.io_counts();
    client.write(INODE, BIG, pattern(2, BIG as usize), 0, sink(&done));
    wait_ok(&mut client, &done, "4M write");
    let big = client.io_counts() - before;
    eprintln!("one 4 MiB write: {big:?}");
    assert!(
        big.sends < 16,
        "a 4 MiB write took {} sendmsg calls",
        big.sends
    );

    let before = client.io_counts();
    client.read(INODE, BIG, vec![0; BIG as usize], sink(&done));
    let d = wait_for(&mut client, &done, 1).remove(0);
    assert!(d.buf == pattern(2, BIG as usize), "4M read differs");
    let big = client.io_counts() - before;
    eprintln!("one 4 MiB read: {big:?}");
    assert_eq!(
        big.copied, 0,
        "read data copied through the receive buffer: {big:?}"
    );
}

/// With `immediate_commit none`, a SYNC after a 4 KiB write is one request to the one OSD
/// that took the write, and nothing else goes out; a SYNC with nothing unsynced sends
/// nothing at all.
#[test]
fn sync_sends_one_request_per_osd_with_unsynced_writes() {
    let cluster = Cluster::up(devcluster(), "none");
    let mut client = client_of(&cluster);
    let done: Slot = Rc::default();
    for i in 0..20u64 {
        client.write(INODE, i * 4096, pattern(i, 4096), 0, sink(&done));
        wait_ok(&mut client, &done, "write");
        let before = client.io_counts();
        client.sync(sink(&done));
        wait_ok(&mut client, &done, "sync");
        let sync = client.io_counts() - before;
        assert_eq!(sync.sends, 1, "SYNC {i} after one write: {sync:?}");
    }
    let before = client.io_counts();
    client.sync(sink(&done));
    wait_ok(&mut client, &done, "empty sync");
    assert_eq!(
        (client.io_counts() - before).sends,
        0,
        "SYNC with nothing unsynced"
    );
}
