//! A version number given twice (`immediate_commit` none), with real etcd and real
//! `vitastor-osd` processes: a write of version `v` that reached one OSD only (unstable),
//! that OSD gone before anything stabilized it, the PG going on without it and giving the
//! next write of the object version `v` again, with other data (SYNCed). When the OSD
//! comes back, its `v` must not count as the object's current version: every replica
//! (replicated) and every part (XOR 2+1) must read as the acknowledged write.
//!
//! The torn write is made by hand: a SEC_WRITE of version `v` sent straight to that OSD,
//! as a primary that died after this one sub-op would have left it.

mod common;

use std::time::Duration;

use common::{pattern, INODE};
use vitastor_osd::ec::codec::Codec;
use vitastor_protocol::{ObjectId, ReplyOp, RequestOp, SecRwOp};
use vitastor_testkit::{Cluster, TestClient};

const WAIT: Duration = Duration::from_secs(60);
const PART: u64 = 128 << 10;

fn cluster(name: &str, scheme: &str, parity: usize) -> Cluster {
    let mut o = common::options(name);
    o.osds = 3;
    o.pg_size = 3;
    o.scheme = scheme.into();
    o.parity_chunks = parity;
    o.pg_minsize = Some(2);
    o.pg_count = 1;
    o.immediate_commit = "none".into();
    o.osd_size = 256 << 20;
    Cluster::start(o).expect("cluster starts")
}

/// An unstable SEC_WRITE of `data` as version `version` of `stripe`, straight to `osd`.
fn torn_write(c: &mut TestClient, osd: u64, stripe: u64, version: u64, data: &[u8]) {
    let op = RequestOp::SecWrite(SecRwOp {
        oid: ObjectId {
            inode: INODE,
            stripe,
        },
        version,
        offset: 0,
        len: data.len() as u32,
        attr_len: 0,
        flags: 0,
    });
    let (reply, _) = c.call(osd, op, &[], data).expect("SEC_WRITE");
    assert!(
        matches!(reply.op, ReplyOp::SecWrite(r) if r.version == version) && reply.retval >= 0,
        "torn write on osd.{osd}: {reply:?}"
    );
}

/// Leaves version `v + 1` of the object at `offset` torn on `osd` (`stripe`: the object or
/// its part there), takes `osd` down, writes `data` at `offset` through the cluster
/// (checking it gets `v + 1` again) and SYNCs it, brings `osd` back and waits for the PG to
/// be clean.
fn reuse_a_version(cl: &mut Cluster, osd: u64, offset: u64, stripe: u64, v: u64, data: &[u8]) {
    let mut c = TestClient::new(cl);
    // 4 KiB: a small write's journal entry carries its data and outlives a crash without
    // a SYNC (a whole-object write needs its commit record, which only a SYNC writes).
    torn_write(&mut c, osd, stripe, v + 1, &pattern(4096, 99));
    cl.kill_osd(osd);
    let sets = cl.default_sets();
    cl.set_primaries(&sets, &[osd]).expect("pg/config");
    cl.wait_pgs(WAIT, "active without the OSD", |s| {
        s.iter().any(|n| n == "active") && s.iter().any(|n| n == "degraded")
    })
    .expect("the PG goes on without the OSD");
    let mut c = TestClient::new(cl);
    let again = c.write(INODE, offset, data).expect("write without the OSD");
    assert_eq!(again, v + 1, "the PG gives the torn write's version again");
    c.sync_all().expect("sync");
    cl.start_osd(osd).expect("the OSD comes back");
    cl.set_primaries(&sets, &[]).expect("pg/config");
    cl.wait_primaries(&sets, WAIT)
        .expect("the first OSD of the set leads again");
    cl.wait_clean(WAIT).expect("clean with the OSD back");
}

/// Rep3 (set [1, 2, 3], osd.1 leads): the torn write of `v + 1` reached only `osd`.
fn replicated(name: &str, osd: u64) {
    let mut cl = cluster(name, "replicated", 0);
    cl.wait_active(WAIT).expect("active");
    let mut c = TestClient::new(&cl);
    let v = c.write(INODE, 0, &pattern(4096, 1)).expect("first write");
    c.sync_all().expect("sync");
    let new = pattern(4096, 2);
    reuse_a_version(&mut cl, osd, 0, 0, v, &new);
    let mut c = TestClient::new(&cl);
    assert_eq!(c.read(INODE, 0, 4096).expect("read"), new);
    for osd in 1..=3 {
        let (version, data) = c.read_replica(osd, INODE, 0).expect("replica read");
        assert_eq!(version, v + 1, "osd.{osd}'s version");
        assert!(data[..4096] == new[..], "osd.{osd} holds the SYNCed write");
    }
}

#[test]
fn replicated_a_torn_version_given_again_is_replaced_on_its_osd() {
    replicated("reused-version-rep", 3);
}

/// The OSD that kept the torn write leads the PG again when it is back: it rolls its own
/// copy back and recovers the object from the others.
#[test]
fn replicated_a_torn_version_given_again_is_replaced_on_the_returning_primary() {
    replicated("reused-version-rep-primary", 1);
}

#[test]
fn xor_a_torn_part_of_a_version_given_again_is_rebuilt() {
    let k = 2;
    let obj = PART * k as u64;
    let mut cl = cluster("reused-version-xor", "xor", 1);
    cl.wait_active(WAIT).expect("active");
    let mut c = TestClient::new(&cl);
    let v = c
        .write(INODE, 0, &pattern(obj as usize, 1))
        .expect("first write");
    c.sync_all().expect("sync");
    // The parity part on osd.3 (position 2) got v + 1; the data parts did not.
    let new = pattern(obj as usize, 2);
    reuse_a_version(&mut cl, 3, 0, 2, v, &new);
    let mut c = TestClient::new(&cl);
    assert_eq!(c.read(INODE, 0, obj as u32).expect("read"), new);
    let mut parts: Vec<Vec<u8>> = new.chunks(PART as usize).map(<[u8]>::to_vec).collect();
    parts.push(vec![0u8; PART as usize]);
    let mut refs: Vec<&mut [u8]> = parts.iter_mut().map(Vec::as_mut_slice).collect();
    Codec::xor(k)
        .expect("xor")
        .encode(&mut refs)
        .expect("encode");
    let set = &cl.default_sets()[0];
    for (i, want) in parts.iter().enumerate() {
        let (version, got) = c.read_replica(set[i], INODE, i as u64).expect("part read");
        assert_eq!(version, v + 1, "part {i} on osd.{}", set[i]);
        assert!(
            got == *want,
            "part {i} on osd.{} is the encode of the SYNCed write",
            set[i]
        );
    }
}
