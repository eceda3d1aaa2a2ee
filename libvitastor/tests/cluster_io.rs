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
    let mut options = ClientOptions::new();
    options.set("etcd_address", &cluster.etcd_address);
    let mut client = Client::new(&options).expect("client");
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
    wait_for(&mut client, &done, 1)[0]
        .result
        .as_ref()
        .expect("sync");
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
    wait_for(&mut client, &done, 1)[0]
        .result
        .as_ref()
        .expect("delete");
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
