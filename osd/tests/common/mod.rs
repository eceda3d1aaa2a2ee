//! What the OSD's multi-process tests share: clusters of this build's binaries, the blocks
//! the replicated tests write and their check of every replica. Cluster operations any
//! crate's tests may want live in `vitastor_testkit`, not here.
#![allow(dead_code)] // each test file uses part of it

use std::path::PathBuf;

use serde_json::Value;
use vitastor_testkit::{Cluster, ClusterOptions, TestClient};

/// Image 1 of pool 1 as the OSD protocol names it.
pub const INODE: u64 = (1 << 48) | 1;
/// One object of a replicated pool.
pub const OBJ: u64 = 128 << 10;

/// Options for a cluster of this build's `vitastor-osd` and the binaries beside it, kept
/// under `VITASTOR_TEST_DIR` as `name-…` when that is set.
pub fn options(name: &str) -> ClusterOptions {
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_vitastor-osd"))
        .parent()
        .expect("target/<profile>")
        .to_path_buf();
    let mut o = ClusterOptions::new(bin_dir);
    o.keep_dir_from_env(name);
    o
}

/// A rep2 pool that keeps serving on one replica (`pg_minsize` 1), on `osds` OSDs of 256 MiB.
pub fn rep2_options(name: &str, osds: usize, pg_count: u32) -> ClusterOptions {
    let mut o = options(name);
    o.osds = osds;
    o.pg_size = 2;
    o.pg_minsize = Some(1);
    o.pg_count = pg_count;
    o.osd_size = 256 << 20;
    o
}

/// A 4 KiB block that differs per object `o` (below 256) and per `salt`.
pub fn block(o: u64, salt: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (o as u8).wrapping_mul(13) ^ (i as u8).wrapping_mul(31) ^ salt.wrapping_mul(101))
        .collect()
}

/// Writes `block(o, 1)` to each object `o` of `0..objects`, one new object per write so that
/// an acknowledged block is never overwritten by a failed one; returns the acknowledged and
/// the failed objects. Every failure must be one of `errors`; with `stop`, the writes end at
/// the first.
pub fn write_new_objects(
    c: &mut TestClient,
    objects: u64,
    errors: &[i64],
    stop: bool,
) -> (Vec<u64>, Vec<u64>) {
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for o in 0..objects {
        match c.write(INODE, o * OBJ, &block(o, 1)) {
            Ok(_) => acked.push(o),
            Err(e) => {
                assert!(errors.contains(&e), "write {o}: unexpected error {e}");
                failed.push(o);
                if stop {
                    break;
                }
            }
        }
    }
    (acked, failed)
}

/// Starts the stopped OSD `osd` with `plan` as its hidden `inject_faults` option (the
/// blockstore's device faults), or without faults for `None`.
pub fn start_with_faults(cl: &mut Cluster, osd: u64, plan: Option<&str>) {
    cl.set_osd_option(osd, "inject_faults", plan.map(Value::from))
        .expect("OSD config");
    cl.start_osd(osd)
        .unwrap_or_else(|e| panic!("OSD {osd} restarts: {e:?}"));
}

/// Every OSD of `osds` holds `want` at the start of object `o`.
pub fn assert_replicas(c: &mut TestClient, osds: &[u64], o: u64, want: &[u8]) {
    for &osd in osds {
        let (version, data) = c.read_replica(osd, INODE, o * OBJ).expect("replica read");
        assert!(version > 0, "object {o} missing on osd.{osd}");
        assert!(
            data[..want.len()] == *want,
            "object {o} differs on osd.{osd}"
        );
    }
}

/// `len` bytes that differ per 512-byte sector, per byte and per `seed`: a torn or misplaced
/// sector or a block of another write shows up in a compare.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i / 512) as u8 ^ (i as u8).wrapping_mul(13) ^ seed.wrapping_mul(71))
        .collect()
}
