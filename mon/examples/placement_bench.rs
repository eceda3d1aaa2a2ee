//! Placement benchmark: solve time and uniformity of the LP placement against a
//! straw2-like consistent-hashing baseline, and data moved when one OSD is added.
//!
//! Run: `cargo run --release -p vitastor-mon --example placement_bench`
//! (add `-- quick` to skip the largest cases).
//!
//! Clusters: hosts of 4–12 OSDs (3 hosts of 4 for the 12-OSD case), OSD sizes
//! drawn from 1, 2, 4 and 8 TiB, replicated pools of size 3, failure domain host.
//! Columns: solve time of the first placement; its uniformity
//! ([`efficiency`](vitastor_mon::placement::Uniformity::efficiency): the usable fraction of the ideal pool capacity,
//! min over OSDs of ideal share / actual share); the best uniformity whole slots
//! allow ([`integer_bound`](vitastor_mon::placement::Uniformity::integer_bound)); the straw2 baseline's uniformity;
//! distinct OSD sets in use; then, after adding one 2 TiB OSD to the first host,
//! slots moved, the new OSD's ideal share (the least that must move), their
//! ratio and the re-placement time.

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vitastor_mon::placement::{
    place_pool, straw2_placement, OsdInfo, OsdNum, PlacementOptions, PlacementTree, PoolId,
    PoolLayout, PoolRules,
};

const TIB: u64 = 1 << 40;

fn cluster(osds: usize, rng: &mut SmallRng) -> Vec<OsdInfo> {
    let mut out = Vec::with_capacity(osds);
    let mut host = 0;
    while out.len() < osds {
        let per_host = if osds <= 12 { 4 } else { rng.gen_range(4..=12) };
        for _ in 0..per_host.min(osds - out.len()) {
            let size = [1, 2, 4, 8][rng.gen_range(0..4)] * TIB;
            out.push(OsdInfo::new(
                OsdNum(out.len() as u64 + 1),
                format!("host{host}"),
                size,
            ));
        }
        host += 1;
    }
    out
}

fn tree(osds: Vec<OsdInfo>) -> PlacementTree {
    PlacementTree::new(osds, &serde_json::Value::Null, &serde_json::Value::Null)
        .expect("generated trees are valid")
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let mut cases = vec![(12, 256), (12, 1024), (100, 256), (100, 1024), (100, 4096)];
    if !quick {
        cases.extend([(1000, 1024), (1000, 4096)]);
    }
    let opts = PlacementOptions::default();
    println!(
        "{:>5} {:>5} {:>5} | {:>7} {:>8} {:>8} {:>8} {:>6} {:>6} | {:>8} {:>6} {:>6} {:>7}",
        "OSDs",
        "hosts",
        "PGs",
        "time s",
        "LP %",
        "int.bnd%",
        "straw2 %",
        "sets",
        "method",
        "+1 OSD",
        "ideal",
        "ratio",
        "time s"
    );
    for (n, pgs) in cases {
        let mut rng = SmallRng::seed_from_u64(n as u64 * 7919 + pgs as u64);
        let osds = cluster(n, &mut rng);
        let hosts = osds
            .iter()
            .map(|o| o.host.clone())
            .collect::<std::collections::HashSet<_>>()
            .len();
        let rules = PoolRules::replicated(PoolId(1), 3, 2, pgs);
        let t = tree(osds.clone());

        let started = Instant::now();
        let placed = place_pool(&t, &rules, None, &opts).expect("feasible");
        let time = started.elapsed();
        let layout = PoolLayout::new(&t, &rules).expect("feasible");
        let straw2 = layout.evaluate(&straw2_placement(&layout)).uniformity;
        let lp = placed.report.uniformity;

        // One more OSD, of median size, in the first host.
        let mut grown = osds;
        grown.push(OsdInfo::new(OsdNum(n as u64 + 1), "host0", 2 * TIB));
        let gt = tree(grown);
        let started = Instant::now();
        let again = place_pool(&gt, &rules, Some(&placed.config), &opts).expect("feasible");
        let add_time = started.elapsed();
        let ideal = PoolLayout::new(&gt, &rules)
            .expect("feasible")
            .target(OsdNum(n as u64 + 1))
            .unwrap_or(0.0);
        println!(
            "{:>5} {:>5} {:>5} | {:>7.3} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>6} | {:>8} {:>6.1} {:>6.2} {:>7.3}",
            n,
            hosts,
            pgs,
            time.as_secs_f64(),
            lp.efficiency * 100.0,
            lp.integer_bound * 100.0,
            straw2.efficiency * 100.0,
            placed.report.distinct_sets,
            format!("{:?}", placed.report.method).chars().take(6).collect::<String>(),
            again.report.slots_moved,
            ideal,
            again.report.slots_moved as f64 / ideal,
            add_time.as_secs_f64(),
        );
        eprintln!("  initial: {}\n  +1 OSD:  {}", placed.report, again.report);
    }
}
