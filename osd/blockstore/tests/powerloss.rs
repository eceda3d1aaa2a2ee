//! Power-loss test: a concurrent random workload on simulated disks; at a random moment the
//! power goes and every unflushed or in-flight write is kept, dropped or torn per sector.
//! After each restart every durable write (acknowledged with immediate_commit, or covered by
//! a completed SYNC) must read back, and nothing may read back as garbage.

mod common;

use common::workload::{verify, Checker, Workload};
use common::*;
use rand::{Rng, SeedableRng};
use vitastor_blockstore::ImmediateCommit;

fn rounds() -> u64 {
    std::env::var("VITASTOR_POWERLOSS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

fn run(mode: ImmediateCommit, seed: u64, rounds: u64) {
    const BLOCK: u32 = 32768;
    const OBJECTS: u64 = 24;
    let mut cfg = small_cfg(BLOCK, 256 * 1024);
    cfg.immediate_commit = mode;
    let mut disks = sim_disks(&cfg, 3 << 20);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut checker = Checker::new(mode == ImmediateCommit::All);
    let mut next_id = 1;
    for round in 0..rounds {
        let mut bs = open_sim(&cfg, disks, rng.gen());
        if let Err(e) = verify(&mut bs, &mut checker, OBJECTS, BLOCK) {
            panic!("mode {mode:?} seed {seed} round {round}: {e}");
        }
        let mut w = Workload::new(OBJECTS, BLOCK, rng.gen_range(1..32), rng.gen(), next_id);
        let steps = rng.gen_range(1..400);
        w.run(&mut bs, Some(steps), &mut |e| checker.feed(&e));
        next_id = w.next_id;
        disks = bs.engine_mut().power_loss(rng.gen());
        drop(bs);
    }
}

#[test]
fn power_loss_immediate_all() {
    run(ImmediateCommit::All, 1, rounds());
}

#[test]
fn power_loss_lazy() {
    run(ImmediateCommit::None, 2, rounds());
}

#[test]
fn power_loss_small() {
    run(ImmediateCommit::Small, 3, rounds() / 2);
}
