//! Redirect writes on a device whose data needs no fsync (`disable_data_fsync`, a drive with
//! power-loss protection): the data goes first and one journal entry after it, which counts at
//! once. A power cut at every point of a sequence of redirect and journaled writes of one
//! object (simulated disk with power-loss protection: completed writes stay, writes in flight
//! are kept, dropped or torn) must leave the object at one of its versions, no older than the
//! newest acknowledged one, with no data block leaked; and a later write of the object waits
//! for the redirect write's entry, so the object's records stay in version order.

mod common;

use common::*;
use vitastor_blockstore::simdisk::{SimDisk, SimEngine};
use vitastor_blockstore::{Blockstore, BlockstoreConfig, BsReply, ImmediateCommit, ObjectId};

const BLOCK: u32 = 32768;
const GRANULES: u32 = BLOCK / GRAN;

fn obj() -> ObjectId {
    ObjectId::new(1 << 48 | 1, 0)
}

fn other() -> ObjectId {
    ObjectId::new(1 << 48 | 1, BLOCK as u64)
}

fn cfg() -> BlockstoreConfig {
    let mut c = small_cfg(BLOCK, 256 * 1024);
    c.immediate_commit = ImmediateCommit::All;
    c.disable_data_fsync = true;
    c
}

/// The writes after the first version: write id, first granule, granules.
const STEPS: [(u64, u32, u32); 4] = [(2, 0, GRANULES), (3, 0, 1), (4, 0, GRANULES), (5, 2, 1)];

/// Write id of each granule once versions `1..=n` are applied.
fn expected(n: usize) -> Vec<u64> {
    let mut g = vec![1; GRANULES as usize];
    for &(id, first, count) in &STEPS[..n - 1] {
        for x in first..first + count {
            g[x as usize] = id;
        }
    }
    g
}

fn granules(data: &[u8]) -> Vec<Option<u64>> {
    (0..GRANULES)
        .map(|g| decode_pattern(&data[(g * GRAN) as usize..((g + 1) * GRAN) as usize], g))
        .collect()
}

/// Disks holding version 1 of `obj()`, flushed, and a store on them with `plp`.
fn base() -> Vec<SimDisk> {
    let c = cfg();
    let mut bs = open_sim(&c, sim_disks(&c, 8 << 20), 1);
    bs.exec(stable_write(obj(), 1, 0, GRANULES)).unwrap();
    bs.flush_all().unwrap();
    bs.engine_mut().power_loss_none()
}

fn open_plp(disks: Vec<SimDisk>, seed: u64, deliver_prob: f64) -> Blockstore<SimEngine> {
    let mut bs = open_sim(&cfg(), disks, seed);
    bs.engine_mut().plp = true;
    bs.engine_mut().deliver_prob = deliver_prob;
    bs
}

/// Submit every step at once, run `cut` loop turns, cut the power. Returns the number of
/// writes acknowledged by then, whether all were, and the disks after the cut.
fn run_until(base: &[SimDisk], seed: u64, cut: usize) -> (usize, bool, Vec<SimDisk>, u64) {
    let mut bs = open_plp(base.to_vec(), seed, 0.5);
    let ids: Vec<u64> = STEPS
        .iter()
        .map(|&(id, first, count)| bs.submit(stable_write(obj(), id, first, count)))
        .collect();
    // Another object's redirect write in between: it must not wait for ours.
    bs.submit(stable_write(other(), 9, 0, GRANULES));
    bs.run();
    let mut acked = vec![false; ids.len()];
    let mut out = Vec::new();
    for _ in 0..cut {
        bs.poll(false).unwrap();
        bs.run();
        bs.take_completions(&mut out);
        for c in out.drain(..) {
            if let Some(i) = ids.iter().position(|&x| x == c.id) {
                match c.result {
                    Ok(BsReply::Written { version, .. }) => {
                        assert_eq!(version, i as u64 + 2, "versions in submission order")
                    }
                    other => panic!("step {i}: {other:?}"),
                }
                acked[i] = true;
            }
        }
    }
    // Acknowledgements come in order for one object: a later write waits for the earlier.
    let n = acked.iter().take_while(|&&a| a).count();
    assert!(acked[n..].iter().all(|&a| !a), "acknowledged out of order");
    let all = n == ids.len() && bs.is_idle();
    let waits = bs.stats().big_entry_waits;
    let disks = bs.engine_mut().power_loss(seed ^ cut as u64);
    (n, all, disks, waits)
}

#[test]
fn a_power_cut_at_every_point_leaves_a_whole_version() {
    let base = base();
    let mut seen = std::collections::BTreeSet::new();
    let mut waits = 0;
    for seed in 0..16 {
        for cut in 0.. {
            let (acked, all, disks, w) = run_until(&base, seed, cut);
            waits = waits.max(w);
            let mut bs = open_sim(&cfg(), disks, seed);
            let (version, data) = read_all(&mut bs, obj());
            let got = granules(&data);
            let v = version as usize;
            assert!(
                v > acked && v <= STEPS.len() + 1,
                "seed {seed} cut {cut}: read version {v}, {acked} writes acknowledged"
            );
            let want: Vec<Option<u64>> = expected(v).into_iter().map(Some).collect();
            assert_eq!(got, want, "seed {seed} cut {cut}: version {v}");
            seen.insert(v);
            // Whatever was lost left no block behind: one block per object once flushed.
            bs.flush_all().unwrap();
            let objects = if read_all(&mut bs, other()).0 == 0 {
                1
            } else {
                2
            };
            assert_eq!(
                bs.used_blocks(),
                objects,
                "seed {seed} cut {cut}: leaked blocks"
            );
            if all {
                break;
            }
        }
    }
    assert_eq!(
        seen.len(),
        STEPS.len() + 1,
        "every version is the outcome of some cut: {seen:?}"
    );
    assert!(
        waits > 0,
        "the small write never waited for the redirect write's entry"
    );
}

/// One device write for the data and one journal sector per redirect write, where the pending
/// entry and its commit record took two sectors besides the data.
#[test]
fn a_redirect_write_is_its_data_and_one_entry() {
    for (no_fsync, writes_per_op) in [(true, 2), (false, 3)] {
        let mut c = cfg();
        c.disable_data_fsync = no_fsync;
        // No flush rounds among the writes counted.
        c.flusher_batch = 64;
        let mut bs = open_sim(&c, sim_disks(&c, 8 << 20), 1);
        bs.engine_mut().deliver_prob = 1.0;
        let before = count_writes(&mut bs);
        for i in 0..8u64 {
            let oid = ObjectId::new(1 << 48 | 1, i * BLOCK as u64);
            bs.exec(stable_write(oid, 10 + i, 0, GRANULES)).unwrap();
        }
        let writes = count_writes(&mut bs) - before;
        assert_eq!(
            writes,
            8 * writes_per_op,
            "disable_data_fsync={no_fsync}: device writes for 8 redirect writes"
        );
        for i in 0..8u64 {
            let oid = ObjectId::new(1 << 48 | 1, i * BLOCK as u64);
            let (_, data) = read_all(&mut bs, oid);
            assert!(granules(&data).iter().all(|&g| g == Some(10 + i)));
        }
    }
}

fn count_writes(bs: &mut Blockstore<SimEngine>) -> u64 {
    bs.engine_mut().writes_completed()
}

/// Journals of both forms replay: redirect writes made with data fsyncs (pending entry and
/// commit record) and without them, to the same objects, across restarts that switch.
#[test]
fn journals_with_both_forms_replay() {
    let mut disks = sim_disks(&cfg(), 8 << 20);
    let mut id = 100;
    for round in 0..6u64 {
        let mut c = cfg();
        c.disable_data_fsync = round % 2 == 0;
        let mut bs = open_sim(&c, disks, round);
        for i in 0..4u64 {
            let oid = ObjectId::new(1 << 48 | 1, i * BLOCK as u64);
            if round > 0 {
                let (_, data) = read_all(&mut bs, oid);
                assert!(
                    granules(&data).iter().all(|&g| g == Some(id - 4 + i)),
                    "round {round} object {i}"
                );
            }
            bs.exec(stable_write(oid, id + i, 0, GRANULES)).unwrap();
        }
        bs.wait_idle().unwrap();
        id += 4;
        disks = bs.engine_mut().power_loss_none();
    }
    let mut bs = open_sim(&cfg(), disks, 9);
    let (v, _) = read_all(&mut bs, ObjectId::new(1 << 48 | 1, 0));
    assert_eq!(v, 6);
}
