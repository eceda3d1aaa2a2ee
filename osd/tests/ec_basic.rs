//! EC and XOR pools served by real `vitastor-osd` processes over real etcd (issue #13), in
//! small: 3 OSDs, pool 1 as XOR 2+1 or EC 2+1; whole-object, partial, part-crossing and
//! overwriting writes, a delete, reads of all of it, then every part read straight from the
//! OSD of its position and compared with a fresh encode of the logical data; then the sets
//! rotate (every part moves): the parts are rebuilt on their new positions and gone from
//! the old ones.

mod common;

use std::time::Duration;

use common::{pattern, INODE};
use vitastor_osd::ec::codec::Codec;
use vitastor_protocol::{obj_ver_ids, RequestOp, SecListOp};
use vitastor_testkit::{Cluster, TestClient};

const PART: u64 = 128 << 10;
const K: usize = 2;
const OBJ: u64 = PART * K as u64;
const OBJECTS: u64 = 4;
const WAIT: Duration = Duration::from_secs(60);

fn cluster(scheme: &str, commit: &str) -> Cluster {
    let mut o = common::options(&format!("ec-basic-{scheme}"));
    o.osds = 3;
    o.pg_size = 3;
    o.scheme = scheme.into();
    o.parity_chunks = 1;
    o.pg_minsize = Some(K);
    o.pg_count = 2;
    o.immediate_commit = commit.into();
    o.osd_size = 256 << 20;
    Cluster::start(o).expect("cluster starts")
}

/// Writes `data` at image `offset` through the cluster and into the model.
fn write(c: &mut TestClient, model: &mut [u8], offset: u64, data: &[u8]) {
    c.write(INODE, offset, data)
        .unwrap_or_else(|e| panic!("write at {offset}: {e}"));
    model[offset as usize..offset as usize + data.len()].copy_from_slice(data);
}

fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter().zip(want).position(|(a, b)| a != b)
}

/// Every object reads back as `model` holds it (`when` says at which point of the test).
fn check_reads(c: &mut TestClient, scheme: &str, model: &[u8], when: &str) {
    for o in 0..OBJECTS {
        let got = c.read(INODE, o * OBJ, OBJ as u32).expect("read");
        let want = &model[(o * OBJ) as usize..((o + 1) * OBJ) as usize];
        assert_eq!(
            first_difference(&got, want),
            None,
            "{scheme}: object {o} {when}"
        );
    }
}

fn codec(scheme: &str) -> Codec {
    match scheme {
        "xor" => Codec::xor(K),
        _ => Codec::reed_solomon(K, 1),
    }
    .expect("a 2+1 code")
}

/// The part stripes OSD `osd` stores for PG `pg` of pool 1 (deleted ones excluded).
fn stored_parts(c: &mut TestClient, osd: u64, pg: u32) -> Vec<u64> {
    let op = RequestOp::SecList(SecListOp {
        list_pg: pg,
        pg_count: 2,
        pg_stripe_size: OBJ,
        min_inode: INODE,
        max_inode: INODE,
        ..Default::default()
    });
    let (reply, payload) = c.call(osd, op, &[], &[]).expect("listing");
    assert!(reply.retval >= 0, "listing osd.{osd}: {}", reply.retval);
    obj_ver_ids(&payload)
        .expect("a listing")
        .map(|e| e.oid.stripe)
        .collect()
}

/// Every part of every object on the OSD of its position in `sets` equals a fresh encode
/// of `model`; with `old`, the OSDs that held a part before and no longer do lack it.
fn check_parts(
    c: &mut TestClient,
    scheme: &str,
    model: &[u8],
    sets: &[Vec<u64>],
    old: Option<&[Vec<u64>]>,
) {
    let codec = codec(scheme);
    for o in 0..OBJECTS {
        let start = o * OBJ;
        let pg = (c.pg_of(start) - 1) as usize;
        let set = &sets[pg];
        let mut parts: Vec<Vec<u8>> = (0..K)
            .map(|j| {
                let at = (start + j as u64 * PART) as usize;
                model[at..at + PART as usize].to_vec()
            })
            .collect();
        parts.push(vec![0u8; PART as usize]);
        let mut refs: Vec<&mut [u8]> = parts.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode(&mut refs).expect("encode");
        for (i, want) in parts.iter().enumerate() {
            let (version, got) = c
                .read_replica(set[i], INODE, start + i as u64)
                .expect("part read");
            // A deleted object's parts may be purged already.
            let deleted = model[start as usize..(start + OBJ) as usize]
                .iter()
                .all(|&b| b == 0);
            assert!(
                version > 0 || deleted,
                "{scheme}: object {o} part {i} exists on osd.{}",
                set[i]
            );
            assert_eq!(
                first_difference(&got, want),
                None,
                "{scheme}: object {o} part {i} on osd.{} is the encode of the data",
                set[i]
            );
            if let Some(old) = old {
                let was = old[pg][i];
                assert!(
                    deleted || stored_parts(c, set[i], pg as u32 + 1).contains(&(start + i as u64)),
                    "{scheme}: object {o} part {i} is listed on osd.{}",
                    set[i]
                );
                if was != set[i] {
                    assert!(
                        !stored_parts(c, was, pg as u32 + 1).contains(&(start + i as u64)),
                        "{scheme}: object {o} part {i} left osd.{was}"
                    );
                }
            }
        }
    }
}

fn run(scheme: &str, commit: &str) {
    let cl = cluster(scheme, commit);
    cl.wait_active(WAIT).expect("every PG goes active");
    let mut c = TestClient::new(&cl);
    let mut model = vec![0u8; (OBJ * OBJECTS) as usize];
    // Object 0: whole; object 1: pieces in both parts and across the part edge, then
    // overwritten in part; object 2: written, then deleted; object 3: one granule.
    write(&mut c, &mut model, 0, &pattern(OBJ as usize, 1));
    write(&mut c, &mut model, OBJ + 8192, &pattern(4096, 2));
    write(&mut c, &mut model, OBJ + PART - 4096, &pattern(8192, 3));
    write(&mut c, &mut model, OBJ + PART + 65536, &pattern(16384, 4));
    write(&mut c, &mut model, OBJ + 4096, &pattern(12288, 5));
    write(
        &mut c,
        &mut model,
        2 * OBJ + 4096,
        &pattern(PART as usize, 6),
    );
    c.delete(INODE, 2 * OBJ).expect("delete");
    model[2 * OBJ as usize..3 * OBJ as usize].fill(0);
    write(&mut c, &mut model, 3 * OBJ + PART, &pattern(4096, 7));
    write(&mut c, &mut model, 20480, &pattern(8192, 8));
    c.sync_all().expect("sync");
    check_reads(&mut c, scheme, &model, "reads back as written");
    let small = c.read(INODE, OBJ + PART - 4096, 8192).expect("read");
    assert_eq!(
        small,
        model[(OBJ + PART - 4096) as usize..(OBJ + PART + 4096) as usize]
    );
    let sets = cl.default_sets();
    check_parts(&mut c, scheme, &model, &sets, None);
    // Every set rotates by one: each part moves to another OSD (and each PG's primary).
    let rotated: Vec<Vec<u64>> = sets
        .iter()
        .map(|s| s.iter().map(|&o| o % 3 + 1).collect())
        .collect();
    cl.write_pg_config(&rotated).expect("pg/config");
    cl.wait_primaries(&rotated, WAIT)
        .expect("primaries move to the new sets");
    cl.wait_clean(WAIT).expect("clean on the new sets");
    check_parts(&mut c, scheme, &model, &rotated, Some(&sets));
    check_reads(&mut c, scheme, &model, "after the move");
}

#[test]
fn xor_2_1_write_read_delete_and_parts() {
    run("xor", "all");
}

#[test]
fn ec_2_1_write_read_delete_and_parts_with_lazy_sync() {
    run("ec", "none");
}
