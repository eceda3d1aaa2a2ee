//! Erasure-coded and XOR pools end to end (issue #13), with real etcd, real `vitastor-osd`
//! processes and fio through our engine (`libfio_vitastor.so`): `-verify=crc32c` at depth 1
//! and 32 (randwrite, randrw, 4 MiB sequential) on XOR 2+1 (`immediate_commit` none: parity
//! must stay whole across the client's SYNC), EC 2+1 and EC 4+2; after a SYNC every part on
//! every OSD checked against a fresh encode of the data parts (the osd crate's own
//! [`Codec`]); up to `m` OSDs SIGKILLed under fio verify, then back to clean; a primary
//! aborted between its part writes and the stabilize (the hidden `--debug_ec_crash`
//! option) leaving no stripe that mixes versions; impossible pools refused with a reason in
//! `pool/stats` while the OSDs keep running.
//!
//! Part naming as in the spec: a logical object covers `128 KiB × k` image bytes and part
//! `i` is the object `{inode, stripe: object start + i}` on the `i`-th OSD of the PG's set.
//! Waits are deadlines on conditions; no timing decides a result. fio runs are bounded by
//! size, not time.

mod common;

use std::fs;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vitastor_osd::ec::codec::Codec;
use vitastor_testkit::{artifacts, require_tools, Cluster, TestClient};

const FIO: &str = "/usr/bin/fio";
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// One part: the pool's block_size.
const PART: u64 = 128 * KIB;
/// Upper bound of every wait on the cluster; a healthy run needs a fraction of it.
const WAIT: Duration = Duration::from_secs(90);
/// Upper bound of one fio run (the slowest here writes 16 MiB at depth 1).
const FIO_TIMEOUT: Duration = Duration::from_secs(180);

/// Image (inode) `n` of pool 1 as the OSD protocol names it.
fn inode(n: u64) -> u64 {
    (1 << 48) | n
}

/// The pool's shape.
#[derive(Debug, Clone, Copy)]
struct Shape {
    scheme: &'static str,
    k: usize,
    m: usize,
}

const XOR_2_1: Shape = Shape {
    scheme: "xor",
    k: 2,
    m: 1,
};
const EC_2_1: Shape = Shape {
    scheme: "ec",
    k: 2,
    m: 1,
};
const EC_4_2: Shape = Shape {
    scheme: "ec",
    k: 4,
    m: 2,
};

impl Shape {
    /// `ec-<scheme>-<k>-<m>`, for the cluster's directory.
    fn name(&self) -> String {
        format!("ec-{}-{}-{}", self.scheme, self.k, self.m)
    }

    fn codec(&self) -> Codec {
        match self.scheme {
            "xor" => Codec::xor(self.k),
            _ => Codec::reed_solomon(self.k, self.m),
        }
        .expect("a valid code")
    }
}

/// A cluster of `k + m` OSDs whose pool 1 has `shape`, `pg_minsize` = k (so up to `m` OSDs
/// may be down while PGs serve), one PG set per rotation of the OSDs, primary first.
fn ec_cluster(shape: Shape, commit: &str, pg_count: u32) -> Cluster {
    let mut o = common::options(&shape.name());
    o.osds = shape.k + shape.m;
    o.pg_size = shape.k + shape.m;
    o.scheme = shape.scheme.into();
    o.parity_chunks = shape.m;
    o.pg_minsize = Some(shape.k);
    o.pg_count = pg_count;
    o.immediate_commit = commit.into();
    o.osd_size = 256 * MIB;
    Cluster::start(o).expect("cluster starts")
}

// ---- fio through the engine ----

/// A fio process on pool 1 of a cluster; killed (our own child, by its handle) if a failed
/// assertion leaves it running.
struct Fio {
    child: Child,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

/// The complete JSON documents fio printed (one per `-status-interval`, then the report).
fn json_documents(stdout: &str) -> Vec<Value> {
    let Some(start) = stdout.find('{') else {
        return Vec::new();
    };
    serde_json::Deserializer::from_str(&stdout[start..])
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

fn bytes_of(job: &Value, dir: &str) -> u64 {
    job[dir]["io_bytes"].as_u64().unwrap_or(0)
}

impl Fio {
    fn start(cl: &Cluster, args: &[String]) -> Fio {
        artifacts::fresh_path("libvitastor.so");
        let engine = artifacts::fresh_path("libfio_vitastor.so");
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new(FIO)
            .arg("-thread")
            .arg(format!("-ioengine={}", engine.display()))
            .arg(format!("-etcd={}", cl.etcd_address()))
            .args(["-name=ec", "-direct=1", "-output-format=json", "-pool=1"])
            .args(args)
            .stdin(Stdio::null())
            // fio leaves verify state files in its working directory.
            .current_dir(dir.path())
            .stdout(fs::File::create(dir.path().join("out")).expect("stdout file"))
            .stderr(fs::File::create(dir.path().join("err")).expect("stderr file"))
            .spawn()
            .expect("running fio");
        Fio {
            child,
            dir,
            args: args.to_vec(),
        }
    }

    fn output(&self) -> (String, String) {
        (
            fs::read_to_string(self.dir.path().join("out")).unwrap_or_default(),
            fs::read_to_string(self.dir.path().join("err")).unwrap_or_default(),
        )
    }

    /// Waits (fio must run with `-status-interval=1`) until fio reports `bytes` written and
    /// is still writing, so that what the test does next happens in the middle of its writes.
    fn wait_mid_write(&mut self, bytes: u64, total: u64) {
        let deadline = Instant::now() + FIO_TIMEOUT;
        loop {
            let written = json_documents(&self.output().0)
                .last()
                .map(|doc| bytes_of(&doc["jobs"][0], "write"))
                .unwrap_or(0);
            let running = self.child.try_wait().expect("waiting for fio").is_none();
            assert!(
                running && written < total,
                "fio {:?} finished its writes ({written} of {total} bytes) before the test \
                 could act in their middle:\n{}",
                self.args,
                self.output().1
            );
            if written >= bytes {
                return;
            }
            assert!(Instant::now() < deadline, "fio {:?} is stuck", self.args);
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the end; returns the one job's report, which must show no error, and the
    /// byte counts `check` asks for.
    fn finish(mut self, check: Bytes) -> Value {
        let deadline = Instant::now() + FIO_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for fio") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "fio {:?} ran longer than {FIO_TIMEOUT:?}:\n{}",
                self.args,
                self.output().1
            );
            thread::sleep(Duration::from_millis(50));
        };
        let (out, err) = self.output();
        let fail = |what: &str| -> ! {
            panic!(
                "fio {:?}: {what}; exit {status}\n--- stdout\n{out}\n--- stderr\n{err}",
                self.args
            )
        };
        if !status.success() {
            fail("fio failed");
        }
        let Some(report) = json_documents(&out).pop() else {
            fail("no JSON report")
        };
        let job = report["jobs"][0].clone();
        if job["error"] != 0 {
            fail("the job reported an error");
        }
        let (written, read) = (bytes_of(&job, "write"), bytes_of(&job, "read"));
        match check {
            Bytes::WrittenAndVerified(n) if written != n || read < n => {
                fail(&format!("expected {n} bytes written and verified"))
            }
            Bytes::SomeWritten if written == 0 => fail("nothing written"),
            Bytes::Verified(n) if read < n => fail(&format!("expected {n} bytes verified")),
            _ => job,
        }
    }
}

/// What a finished fio run must have done besides finishing without error.
enum Bytes {
    /// Written exactly this many bytes and read (verified) at least as many.
    WrittenAndVerified(u64),
    /// A mixed job: wrote something (its verify covers what it wrote).
    SomeWritten,
    /// A `-verify_only` pass: read and verified (at least) this many bytes.
    Verified(u64),
}

impl Drop for Fio {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

// ---- the stored parts ----

/// Reads every part of every object of `inode(n)`'s first `bytes` from the OSD that holds it
/// (SEC_READ, newest version) and checks: each object's parts are all at one version (or
/// all absent), the parity parts equal a fresh encode of the data parts, and the data parts
/// are what a client READ of the logical object returns.
fn check_parts(cl: &Cluster, shape: Shape, n: u64, bytes: u64) {
    let codec = shape.codec();
    let sets = cl.default_sets();
    let mut c = TestClient::new(cl);
    let obj = cl.object_size();
    for start in (0..bytes).step_by(obj as usize) {
        let set = &sets[c.pg_of(start) as usize - 1];
        let mut versions = Vec::new();
        let mut parts = Vec::new();
        for (i, &osd) in set.iter().enumerate() {
            let (version, data) = c
                .read_replica(osd, inode(n), start + i as u64)
                .unwrap_or_else(|e| panic!("SEC_READ of part {i} from osd.{osd}: {e}"));
            assert_eq!(
                data.len() as u64,
                PART,
                "part {i} of {start:#x} on osd.{osd}"
            );
            versions.push(version);
            parts.push(data);
        }
        let what = format!(
            "{} {}+{} inode {n} object at {start:#x} (parts on {set:?}, versions {versions:?})",
            shape.scheme, shape.k, shape.m
        );
        assert!(
            versions.iter().all(|&v| v == versions[0]),
            "{what}: parts at different versions"
        );
        let mut fresh = parts.clone();
        let mut refs: Vec<&mut [u8]> = fresh.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode(&mut refs).expect("encode");
        for p in shape.k..shape.k + shape.m {
            if parts[p] != fresh[p] {
                panic!(
                    "{what}: parity part {p} differs from a fresh encode in granules {}",
                    granule_diff(&parts, &fresh[p], p)
                );
            }
        }
        let logical = c
            .read(inode(n), start, obj as u32)
            .unwrap_or_else(|e| panic!("{what}: client READ: {e}"));
        if let Some(at) = (logical.iter())
            .zip(parts[..shape.k].iter().flatten())
            .position(|(a, b)| a != b)
        {
            panic!("{what}: the client READ and the data parts differ at byte {at}");
        }
    }
}

/// The 4 KiB granules where stored part `p` differs from `fresh`, each with which parts
/// hold only zeroes there (`z` = stored parity, `Z` = fresh parity, digits = data parts).
fn granule_diff(parts: &[Vec<u8>], fresh: &[u8], p: usize) -> String {
    let g = 4096;
    let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
    let mut out = Vec::new();
    for i in 0..parts[p].len() / g {
        let r = i * g..(i + 1) * g;
        if parts[p][r.clone()] != fresh[r.clone()] {
            let mut z = String::new();
            if zero(&parts[p][r.clone()]) {
                z.push('z');
            }
            if zero(&fresh[r.clone()]) {
                z.push('Z');
            }
            for (d, part) in parts.iter().enumerate().take(p) {
                if zero(&part[r.clone()]) {
                    z.push_str(&d.to_string());
                }
            }
            out.push(format!("{i}[{z}]"));
        }
    }
    out.join(" ")
}

// ---- the scenarios ----

/// Every fio job of the issue on its own image (so every part written stays checkable),
/// then every part of every image against a fresh encode; then `victims` (at most m OSDs)
/// SIGKILLed while fio writes and verifies, every image verified again while they are down
/// (degraded reads), the victims brought back, clean, and every part checked again.
fn fio_matrix_kill_and_recover(shape: Shape, commit: &str, victims: &[u64]) {
    if !require_tools(&[FIO]) {
        return;
    }
    assert!(victims.len() <= shape.m);
    let mut cl = ec_cluster(shape, commit, 8);
    // With lazy commit, fio's closing fsync is the client's SYNC that stabilizes parity.
    let end_fsync = if commit == "none" {
        "-end_fsync=1"
    } else {
        "-end_fsync=0"
    };
    // (image, bytes, fio arguments; None for a mixed job, which a -verify_only pass cannot
    // replay)
    let mut images: Vec<(u64, u64, Option<Vec<String>>)> = Vec::new();
    for (n, (rw, bs, depth, size)) in [
        ("randwrite", "4k", 1, 2 * MIB),
        ("randwrite", "4k", 32, 4 * MIB),
        ("randrw", "4k", 1, 2 * MIB),
        ("randrw", "4k", 32, 4 * MIB),
        ("write", "4M", 1, 16 * MIB),
        ("write", "4M", 32, 16 * MIB),
    ]
    .into_iter()
    .enumerate()
    {
        let n = n as u64 + 1;
        let job = args(&[
            &format!("-inode={n}"),
            &format!("-size={size}"),
            &format!("-bs={bs}"),
            &format!("-iodepth={depth}"),
            &format!("-rw={rw}"),
            "-verify=crc32c",
            end_fsync,
        ]);
        let mixed = rw == "randrw";
        Fio::start(&cl, &job).finish(if mixed {
            Bytes::SomeWritten
        } else {
            Bytes::WrittenAndVerified(size)
        });
        images.push((n, size, (!mixed).then_some(job)));
    }
    TestClient::new(&cl).sync_all().expect("SYNC");
    for (n, size, _) in &images {
        check_parts(&cl, shape, *n, *size);
    }

    // Up to m OSDs SIGKILLed while fio writes; its verify pass then reads degraded stripes.
    let n = images.len() as u64 + 1;
    let total = 12 * MIB;
    let job = args(&[
        &format!("-inode={n}"),
        &format!("-size={total}"),
        "-bs=4k",
        "-iodepth=16",
        "-rw=randwrite",
        "-rate=3m",
        "-status-interval=1",
        "-verify=crc32c",
        end_fsync,
    ]);
    let mut run = Fio::start(&cl, &job);
    run.wait_mid_write(MIB, total);
    for &osd in victims {
        cl.kill_osd(osd);
    }
    cl.set_primaries(&cl.default_sets(), victims)
        .expect("writing pg/config");
    run.finish(Bytes::WrittenAndVerified(total));
    images.push((n, total, Some(job)));
    // Every image read back and verified by a new client while the victims are down.
    for (_, size, job) in &images {
        if let Some(job) = job {
            let mut job = job.clone();
            job.push("-verify_only".into());
            Fio::start(&cl, &job).finish(Bytes::Verified(*size));
        }
    }
    for &osd in victims {
        cl.start_osd(osd).expect("OSD back");
    }
    cl.set_primaries(&cl.default_sets(), &[])
        .expect("writing pg/config");
    cl.wait_primaries(&cl.default_sets(), WAIT)
        .expect("primaries move back");
    cl.wait_clean(WAIT).expect("recovery to clean");
    TestClient::new(&cl).sync_all().expect("SYNC");
    for (n, size, _) in &images {
        check_parts(&cl, shape, *n, *size);
    }
}

#[test]
fn xor_2_1_fio_verify_parts_and_one_osd_killed() {
    fio_matrix_kill_and_recover(XOR_2_1, "none", &[2]);
}

#[test]
fn ec_2_1_fio_verify_parts_and_one_osd_killed() {
    fio_matrix_kill_and_recover(EC_2_1, "all", &[2]);
}

#[test]
fn ec_4_2_fio_verify_parts_and_two_osds_killed() {
    fio_matrix_kill_and_recover(EC_4_2, "all", &[2, 5]);
}

/// Bytes of image `inode(1)` that depend on their offset and a generation.
fn pattern(offset: u64, len: u64, generation: u8) -> Vec<u8> {
    (offset..offset + len)
        .map(|b| (b / 4096) as u8 ^ (b as u8).wrapping_mul(31) ^ generation.wrapping_mul(101))
        .collect()
}

/// The primary aborted between its part writes and the stabilize (`--debug_ec_crash`, every
/// point) of a write crossing both data parts of a 2+1 stripe: after the restart the stripe
/// reads either all old or all new data, acknowledged writes before it read new, a stripe
/// after it reads old, and every part again equals a fresh encode. At `after_reply` the
/// client heard the write (every position took it) before the stabilize: it reads new.
#[test]
fn torn_stripe_reads_all_old_or_all_new() {
    let mut cl = ec_cluster(EC_2_1, "all", 3);
    let obj = cl.object_size();
    // Its end in part 0 and its start in part 1: a read-modify-write of both and the parity.
    let (at, len) = (96 * KIB, 64 * KIB);
    let mut last = 0;
    for (round, point) in ["after_first_part_write", "before_stabilize", "after_reply"]
        .into_iter()
        .enumerate()
    {
        // PG 1's set is [1, 2, 3], so osd.1 leads it; object o is in PG o % 3 + 1.
        let starts: Vec<u64> = (0..4u64)
            .map(|i| (round as u64 * 4 + i) * 3 * obj)
            .collect();
        last = last.max(starts[3] + obj);
        let mut c = TestClient::new(&cl);
        for &s in &starts {
            c.write(inode(1), s, &pattern(s, obj, 1)).expect("old data");
        }

        // osd.1 again, set to abort at `point` of the third EC write it leads.
        cl.stop_osd(1);
        let plain = cl.opts.osd_args.clone();
        cl.opts
            .osd_args
            .extend(["--debug_ec_crash".into(), format!("{point}:3")]);
        cl.start_osd(1).expect("osd.1 with the crash point");
        cl.opts.osd_args = plain;
        cl.wait_active(WAIT).expect("active");
        let mut c = TestClient::new(&cl);
        for &s in &starts[..2] {
            c.write(inode(1), s + at, &pattern(s + at, len, 2))
                .unwrap_or_else(|e| panic!("write {s:#x} before the crash: {e}"));
        }
        c.retry_for = Duration::from_secs(3);
        let torn = starts[2];
        let res = c.write(inode(1), torn + at, &pattern(torn + at, len, 2));
        let acknowledged = point == "after_reply";
        assert_eq!(
            res.is_ok(),
            acknowledged,
            "osd.1 at {point} of its third EC write: {res:?}"
        );
        cl.wait_osds_running(2, WAIT)
            .unwrap_or_else(|e| panic!("osd.1 still runs after {point}: {e:?}"));
        cl.kill_osd(1);
        cl.start_osd(1).expect("osd.1 restarted");
        cl.wait_active(WAIT).expect("active after the restart");

        let mut c = TestClient::new(&cl);
        let read = |c: &mut TestClient, s: u64| {
            c.read(inode(1), s, obj as u32)
                .unwrap_or_else(|e| panic!("read {s:#x} after {point}: {e}"))
        };
        let old_and_new = |s: u64| {
            let mut v = pattern(s, obj, 1);
            v[at as usize..(at + len) as usize].copy_from_slice(&pattern(s + at, len, 2));
            v
        };
        for &s in &starts[..2] {
            assert!(
                read(&mut c, s) == old_and_new(s),
                "acknowledged write {s:#x} lost"
            );
        }
        let got = read(&mut c, torn);
        let (old, new) = (pattern(torn, obj, 1), old_and_new(torn));
        assert!(
            got == new || (got == old && !acknowledged),
            "{point}: the torn stripe mixes versions or lost an acknowledged write: bytes differing from old {}, from new {}",
            got.iter().zip(&old).filter(|(a, b)| a != b).count(),
            got.iter().zip(&new).filter(|(a, b)| a != b).count(),
        );
        assert!(
            read(&mut c, starts[3]) == pattern(starts[3], obj, 1),
            "{point}: a stripe never rewritten changed"
        );
        cl.wait_clean(WAIT).expect("clean after the restart");
        check_parts(&cl, EC_2_1, 1, last);
    }
}

/// `pool/stats/<id>`, when there.
fn pool_stats(cl: &Cluster, id: &str) -> Option<Value> {
    let key = format!("pool/stats/{id}");
    cl.get_prefix(&key)
        .expect("pool/stats")
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Waits until `pool/stats/<id>` satisfies `ok`; returns it.
fn wait_pool_stats(cl: &Cluster, id: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = pool_stats(cl, id).filter(|v| ok(v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "pool/stats/{id}: {:?}",
            pool_stats(cl, id)
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A monitor and 3 OSDs serving an EC 2+1 pool; pools that cannot work are added beside it
/// (more parts than OSDs, parity_chunks >= pg_size, an unknown scheme): each gets its reason
/// in `pool/stats`, no PG of theirs is served, every OSD keeps running and pool 1 keeps
/// serving I/O.
#[test]
fn impossible_pools_get_a_reason_and_the_osds_keep_running() {
    let mut o = common::options(&EC_2_1.name());
    o.osds = 3;
    o.pg_size = 3;
    o.scheme = "ec".into();
    o.parity_chunks = 1;
    o.pg_minsize = Some(2);
    o.pg_count = 8;
    o.osd_size = 256 * MIB;
    o.monitors = 1;
    let mut cl = Cluster::start(o).expect("cluster starts");
    let mut pools = cl
        .get_prefix("config/pools")
        .expect("config/pools")
        .into_iter()
        .find(|(k, _)| k == "config/pools")
        .expect("pool 1 is there")
        .1;
    let bad = [
        (
            "2",
            json!({"name":"toowide","scheme":"ec","pg_size":6,"parity_chunks":2,"pg_minsize":4,
                   "pg_count":8,"failure_domain":"osd"}),
            "failure domains",
        ),
        (
            "3",
            json!({"name":"allparity","scheme":"ec","pg_size":3,"parity_chunks":3,"pg_minsize":3,
                   "pg_count":8,"failure_domain":"osd"}),
            "parity_chunks",
        ),
        (
            "4",
            json!({"name":"rs","scheme":"reed-solomon","pg_size":3,"parity_chunks":1,
                   "pg_minsize":2,"pg_count":8,"failure_domain":"osd"}),
            "unknown scheme",
        ),
    ];
    for (id, pool, _) in &bad {
        pools[*id] = pool.clone();
    }
    cl.put_json("config/pools", &pools)
        .expect("adding the pools");

    for (id, _, words) in &bad {
        let v = wait_pool_stats(&cl, id, |v| v.get("error").is_some());
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(words), "pool {id}: reason {e:?} lacks {words:?}");
    }
    // Two more stats rounds with the bad pools in place: the OSDs have seen them by then.
    for _ in 0..2 {
        let time = pool_stats(&cl, "2").expect("pool/stats/2")["time"].clone();
        wait_pool_stats(&cl, "2", |v| v["time"] != time);
    }
    assert_eq!(cl.osds_running(), 3, "an OSD exited on an impossible pool");
    for (id, _, _) in &bad {
        let served = cl.get_prefix(&format!("pg/state/{id}/")).expect("pg/state");
        assert!(served.is_empty(), "pool {id} is served: {served:?}");
    }
    let pool1 = pool_stats(&cl, "1");
    assert!(
        pool1.as_ref().is_some_and(|v| v.get("error").is_none()),
        "pool 1: {pool1:?}"
    );
    let mut c = TestClient::new(&cl);
    let obj = cl.object_size();
    for s in (0..8).map(|o| o * obj) {
        c.write(inode(1), s + 4096, &pattern(s + 4096, 8192, 3))
            .expect("pool 1 still takes writes");
    }
    for s in (0..8).map(|o| o * obj) {
        let got = c.read(inode(1), s + 4096, 8192).expect("pool 1 reads");
        assert!(
            got == pattern(s + 4096, 8192, 3),
            "object {s:#x} reads wrong"
        );
    }
    cl.wait_clean(WAIT).expect("pool 1 clean");
}
