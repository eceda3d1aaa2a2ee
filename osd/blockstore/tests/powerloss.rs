//! Power-loss test: a concurrent random workload on simulated disks; at a random moment the
//! power goes and every unflushed or in-flight write is kept, dropped or torn per sector.
//! After each restart every durable write (acknowledged with immediate_commit, or covered by
//! a completed SYNC) must read back, and nothing may read back as garbage. Runtime options
//! (in-memory metadata, same-sector overwrites, flusher counts) change at every restart;
//! geometry variants cover separate devices and 512-byte sectors, and drives with power-loss
//! protection (only writes in flight are lost) with and without data fsyncs.

mod common;

use common::workload::{verify, Checker, Workload};
use common::*;
use rand::{Rng, SeedableRng};
use vitastor_blockstore::ImmediateCommit;

fn rounds() -> u64 {
    std::env::var("VITASTOR_POWERLOSS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn run(mode: ImmediateCommit, seed: u64, rounds: u64) {
    let mut cfg = small_cfg(32768, 256 * 1024);
    cfg.immediate_commit = mode;
    run_cfg(cfg, seed, rounds);
}

/// Runtime options may change between restarts; each round draws them anew.
fn run_cfg(cfg: vitastor_blockstore::BlockstoreConfig, seed: u64, rounds: u64) {
    run_disks(cfg, seed, rounds, false)
}

/// `plp`: the simulated disks have power-loss protection, and data fsyncs are turned off in
/// about half of the rounds (journals then mix both forms of redirect writes).
fn run_disks(mut cfg: vitastor_blockstore::BlockstoreConfig, seed: u64, rounds: u64, plp: bool) {
    let block = cfg.block_size.unwrap();
    const OBJECTS: u64 = 24;
    let mode = cfg.immediate_commit;
    let mut disks = sim_disks(&cfg, 3 << 20);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut checker = Checker::new(mode == ImmediateCommit::All);
    let mut next_id = 1;
    for round in 0..rounds {
        cfg.inmemory_metadata = rng.gen_bool(0.5);
        cfg.journal_no_same_sector_overwrites = rng.gen_bool(0.3);
        cfg.flusher_count = rng.gen_range(1..8);
        cfg.flusher_batch = rng.gen_range(1..40);
        if plp {
            cfg.disable_data_fsync = rng.gen_bool(0.5);
        }
        let mut bs = open_sim(&cfg, disks, rng.gen());
        bs.engine_mut().plp = plp;
        if let Err(e) = verify(&mut bs, &mut checker, OBJECTS, block) {
            panic!("mode {mode:?} seed {seed} round {round}: {e}");
        }
        let mut w = Workload::new(OBJECTS, block, rng.gen_range(1..32), rng.gen(), next_id);
        let steps = rng.gen_range(1..400);
        w.run(&mut bs, Some(steps), &mut |e| checker.feed(&e));
        next_id = w.next_id;
        // Every few rounds, also a clean shutdown: what a restart replays must equal what the
        // running store shows.
        if round % 4 == 3 {
            bs.wait_idle().unwrap();
            bs.exec(vitastor_blockstore::BsOp::Sync).unwrap();
            bs.wait_idle().unwrap();
            let clean = bs.engine_mut().power_loss_none();
            let mut live = Vec::new();
            for obj in 0..OBJECTS {
                live.push(read_all(&mut bs, common::workload::oid(obj, block)));
            }
            let mut re = open_sim(&cfg, clean, 1);
            for obj in 0..OBJECTS {
                let o = common::workload::oid(obj, block);
                let got = read_all(&mut re, o);
                if got.1 != live[obj as usize].1 {
                    let g: Vec<Option<u64>> = (0..block / GRAN)
                        .map(|g| {
                            decode_pattern(
                                &got.1[(g * GRAN) as usize..((g + 1) * GRAN) as usize],
                                g,
                            )
                        })
                        .collect();
                    let l: Vec<Option<u64>> = (0..block / GRAN)
                        .map(|g| {
                            decode_pattern(
                                &live[obj as usize].1
                                    [(g * GRAN) as usize..((g + 1) * GRAN) as usize],
                                g,
                            )
                        })
                        .collect();
                    panic!("round {round} obj {obj}: live v{} {l:?} vs reopened v{} {g:?}\n live: {}\n reopened: {}", live[obj as usize].0, got.0, bs.debug_object(o), re.debug_object(o));
                }
            }
        }
        disks = bs.engine_mut().power_loss(rng.gen());
        drop(bs);
    }
}

#[test]
fn power_loss_immediate_all() {
    run(ImmediateCommit::All, 1, rounds());
}

/// A drive with power-loss protection, mostly run the way the seed runs it
/// (`disable_data_fsync`): redirect writes journal one entry after their data.
#[test]
fn power_loss_protected_drive_immediate_all() {
    let mut cfg = small_cfg(32768, 256 * 1024);
    cfg.immediate_commit = ImmediateCommit::All;
    run_disks(cfg, 6, rounds(), true);
}

#[test]
fn power_loss_protected_drive_lazy() {
    let mut cfg = small_cfg(32768, 256 * 1024);
    cfg.immediate_commit = ImmediateCommit::None;
    run_disks(cfg, 7, rounds() / 2, true);
}

#[test]
fn power_loss_lazy() {
    run(ImmediateCommit::None, 2, rounds());
}

#[test]
fn power_loss_small() {
    run(ImmediateCommit::Small, 3, rounds() / 2);
}

#[test]
fn power_loss_separate_devices() {
    let mut cfg = small_cfg(32768, 256 * 1024);
    cfg.meta_device = Some("/sim/meta".into());
    cfg.journal_device = Some("/sim/journal".into());
    cfg.immediate_commit = ImmediateCommit::All;
    run_cfg(cfg, 4, rounds() / 2);
}

#[test]
fn power_loss_512_byte_sectors() {
    let mut cfg = small_cfg(32768, 1 << 20);
    cfg.disk_alignment = Some(512);
    cfg.journal_block_size = Some(512);
    cfg.meta_block_size = Some(512);
    cfg.immediate_commit = ImmediateCommit::None;
    run_cfg(cfg, 5, rounds() / 2);
}
