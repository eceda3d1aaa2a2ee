//! Placement benchmark: first placements (time, uniformity, memory) beside a
//! straw2-like consistent-hashing baseline, then data moved by cluster changes.
//!
//! Run: `cargo run --release -p vitastor-mon --example placement_bench`
//! (`-- quick` skips the 10,000-OSD case; `-- runs N` times each first
//! placement N times, default 3, and prints the median).
//!
//! Clusters: hosts of 4–12 OSDs (3 hosts of 4 for the 12-OSD case, 6–14 for
//! 10,000 OSDs, so about 1000 hosts), every other OSD tagged `ssd`, OSD sizes
//! drawn from 1, 2, 4 and 8 TiB, failure domain host. Uniformity is
//! [`efficiency`](vitastor_mon::placement::Uniformity::efficiency): the usable
//! fraction of the ideal pool capacity (min over OSDs of ideal share / actual
//! share); the integer bound is the best any whole-number loads allow.
//!
//! "peak MiB" is the process's peak resident memory so far (VmHWM), so each
//! row's figure bounds that row's own use.
//!
//! Movement: slots whose OSD changed (for EC the part number counts). The ideal
//! is the share that must move, Σ over OSDs of max(0, new share − old share):
//! for +1 OSD the new OSD's share, for −1 OSD the removed OSD's share, for a
//! reweight to 0.5 what that OSD gives up. "must" is the least any placement
//! at the new integer bound moves: slots above ⌊share / bound⌋ on each OSD
//! (whole slots: it can exceed the ideal when shares are a few slots). The
//! ratios divide by the larger of the two. straw2 is placed from scratch on
//! both clusters (it has no state) and compared slot by slot.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use vitastor_mon::placement::{
    place_pool, straw2_placement, OsdInfo, OsdNum, PlacementOptions, PlacementTree, PoolId,
    PoolLayout, PoolPgConfig, PoolPlacement, PoolRules,
};

const TIB: u64 = 1 << 40;

fn cluster(osds: usize, rng: &mut SmallRng) -> Vec<OsdInfo> {
    let mut out = Vec::with_capacity(osds);
    let mut host = 0;
    while out.len() < osds {
        let per_host = match osds {
            ..=12 => 4,
            13..=9999 => rng.gen_range(4..=12),
            _ => rng.gen_range(6..=14),
        };
        for _ in 0..per_host.min(osds - out.len()) {
            let size = [1, 2, 4, 8][rng.gen_range(0..4)] * TIB;
            let mut o = OsdInfo::new(OsdNum(out.len() as u64 + 1), format!("host{host}"), size);
            if out.len() % 2 == 0 {
                o.tags.push("ssd".into());
            }
            out.push(o);
        }
        host += 1;
    }
    out
}

fn hosts(osds: &[OsdInfo]) -> usize {
    osds.iter().map(|o| &o.host).collect::<HashSet<_>>().len()
}

/// Hosts are spread over four racks, three of them under datacenter `dc1`, so pools can use
/// `root_node` and rack failure domains.
fn tree(osds: Vec<OsdInfo>) -> PlacementTree {
    let mut nodes = serde_json::Map::new();
    nodes.insert("dc1".into(), json!({"level":"datacenter"}));
    for r in 0..4 {
        let parent = if r < 3 { json!("dc1") } else { Value::Null };
        nodes.insert(format!("rack{r}"), json!({"level":"rack","parent":parent}));
    }
    for h in osds.iter().map(|o| o.host.clone()).collect::<HashSet<_>>() {
        let n: usize = h[4..].parse().expect("generated host names");
        nodes.insert(h, json!({"level":"host","parent":format!("rack{}", n % 4)}));
    }
    PlacementTree::new(
        osds,
        &Value::Object(nodes),
        &json!({"datacenter":10,"rack":50}),
    )
    .expect("generated trees are valid")
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn method(p: &PoolPlacement) -> String {
    format!("{:?}", p.report.method)
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Slots of `b` that `a` did not hold (same slot for EC, anywhere in the PG otherwise).
fn moved(a: &PoolPgConfig, b: &PoolPgConfig, ordered: bool) -> usize {
    b.pgs
        .iter()
        .map(|(pg, p)| {
            let old = &a.pgs[pg].osd_set;
            p.osd_set
                .iter()
                .enumerate()
                .filter(|&(j, o)| {
                    !o.is_none()
                        && if ordered {
                            old.get(j) != Some(o)
                        } else {
                            !old.contains(o)
                        }
                })
                .count()
        })
        .sum()
}

/// Slots that must leave OSDs holding more than the new integer bound allows.
fn must_move(before: &PoolPgConfig, new: &PoolLayout, bound: f64) -> u64 {
    let mut load = std::collections::HashMap::<OsdNum, u64>::new();
    for pg in before.pgs.values() {
        for o in pg.osd_set.iter().filter(|o| !o.is_none()) {
            *load.entry(*o).or_default() += 1;
        }
    }
    load.iter()
        .map(|(&o, &l)| {
            let cap = new
                .target(o)
                .map_or(0, |t| (t / bound * (1.0 + 1e-9)).floor() as u64);
            l.saturating_sub(cap)
        })
        .sum()
}

/// Σ max(0, new share − old share) over every OSD of either layout.
fn ideal_movement(old: &PoolLayout, new: &PoolLayout) -> f64 {
    let mut all: Vec<OsdNum> = old.eligible_osds().to_vec();
    all.extend_from_slice(new.eligible_osds());
    all.sort_unstable();
    all.dedup();
    all.iter()
        .map(|&o| (new.target(o).unwrap_or(0.0) - old.target(o).unwrap_or(0.0)).max(0.0))
        .sum()
}

fn first_placements(quick: bool, runs: usize) {
    let mut cases = vec![
        (12, 256),
        (100, 1024),
        (100, 4096),
        (1000, 1024),
        (1000, 4096),
    ];
    if !quick {
        cases.push((10000, 65536));
    }
    println!("First placement, replicated size 3 (median of {runs} runs):");
    println!(
        "{:>6} {:>5} {:>6} | {:>8} {:>7} {:>8} {:>8} {:>6} {:>8} {:>9}",
        "OSDs",
        "hosts",
        "PGs",
        "time s",
        "eff %",
        "int.bnd%",
        "straw2 %",
        "sets",
        "method",
        "peak MiB"
    );
    let opts = PlacementOptions::default();
    for (n, pgs) in cases {
        let mut rng = SmallRng::seed_from_u64(n as u64 * 7919 + pgs as u64);
        let osds = cluster(n, &mut rng);
        let h = hosts(&osds);
        let t = tree(osds);
        let rules = PoolRules::replicated(PoolId(1), 3, 2, pgs);
        let mut times = Vec::new();
        let mut placed = None;
        for _ in 0..runs {
            let started = Instant::now();
            placed = Some(place_pool(&t, &rules, None, &opts).expect("feasible"));
            times.push(started.elapsed());
        }
        let placed = placed.expect("at least one run");
        let layout = PoolLayout::new(&t, &rules).expect("feasible");
        let straw2 = layout.evaluate(&straw2_placement(&layout)).uniformity;
        let u = placed.report.uniformity;
        println!(
            "{:>6} {:>5} {:>6} | {:>8.3} {:>7.2} {:>8.2} {:>8.2} {:>6} {:>8} {:>9.0}",
            n,
            h,
            pgs,
            median(times).as_secs_f64(),
            u.efficiency * 100.0,
            u.integer_bound * 100.0,
            straw2.efficiency * 100.0,
            placed.report.distinct_sets,
            method(&placed),
            peak_rss_mib().unwrap_or(f64::NAN),
        );
        eprintln!("  {}", placed.report);
    }
}

/// One cluster change applied to the OSD list.
type Change = fn(&mut Vec<OsdInfo>);

fn changes() -> Vec<(&'static str, Change)> {
    vec![
        ("+1 OSD", |o| {
            let n = o.len() as u64 + 1;
            o.push(OsdInfo::new(OsdNum(n), "host0", 2 * TIB));
        }),
        ("-1 OSD", |o| {
            o[4].out = true;
            o[4].up = false;
        }),
        ("+1 host", |o| {
            let host = format!("host{}", hosts(o));
            for s in [1, 2, 4, 8, 2, 4, 1, 8] {
                let n = o.len() as u64 + 1;
                o.push(OsdInfo::new(OsdNum(n), host.clone(), s * TIB));
            }
        }),
        ("-1 host", |o| {
            for x in o.iter_mut().filter(|x| x.host == "host1") {
                x.out = true;
                x.up = false;
            }
        }),
        ("reweight 0.5", |o| o[9].reweight = 0.5),
    ]
}

fn movement(n: usize, pgs: u32, pool: &str, rules: &PoolRules) {
    let mut rng = SmallRng::seed_from_u64(n as u64 * 7919 + u64::from(pgs));
    let osds = cluster(n, &mut rng);
    let h = hosts(&osds);
    let opts = PlacementOptions::default();
    let t = tree(osds.clone());
    let before = place_pool(&t, rules, None, &opts).expect("feasible");
    let old_layout = PoolLayout::new(&t, rules).expect("feasible");
    let straw_before = straw2_placement(&old_layout);
    let ordered = rules.ordered_slots();
    println!("\nData movement, {n} OSDs / {h} hosts / {pgs} PGs, {pool}:");
    println!(
        "{:>13} | {:>7} {:>8} {:>6} {:>6} | {:>8} {:>6} | {:>7} {:>8} {:>12} {:>7}",
        "change",
        "moved",
        "ideal",
        "must",
        "ratio",
        "straw2",
        "ratio",
        "eff %",
        "int.bnd%",
        "method",
        "time s"
    );
    for (name, change) in changes() {
        let mut changed = osds.clone();
        change(&mut changed);
        let t2 = tree(changed);
        let started = Instant::now();
        let after = place_pool(&t2, rules, Some(&before.config), &opts).expect("feasible");
        let time = started.elapsed();
        let new_layout = PoolLayout::new(&t2, rules).expect("feasible");
        let ideal = ideal_movement(&old_layout, &new_layout);
        let u = after.report.uniformity;
        let must = must_move(&before.config, &new_layout, u.integer_bound);
        let least = ideal.max(must as f64);
        let straw_moved = moved(&straw_before, &straw2_placement(&new_layout), ordered);
        println!(
            "{:>13} | {:>7} {:>8.1} {:>6} {:>6.2} | {:>8} {:>6.2} | {:>7.2} {:>8.2} {:>12} {:>7.3}",
            name,
            after.report.slots_moved,
            ideal,
            must,
            after.report.slots_moved as f64 / least,
            straw_moved,
            straw_moved as f64 / least,
            u.efficiency * 100.0,
            u.integer_bound * 100.0,
            method(&after),
            time.as_secs_f64(),
        );
        eprintln!("  {name}: {}", after.report);
    }
}

/// Pool rule changes on a large cluster: every PG changes, so this measures
/// the incremental path's cost (greedy refill, refinement) at full scale.
fn rule_changes(n: usize, pgs: u32) {
    let mut rng = SmallRng::seed_from_u64(n as u64 * 7919 + u64::from(pgs));
    let t = tree(cluster(n, &mut rng));
    let opts = PlacementOptions::default();
    println!("\nPool rule changes, {n} OSDs / {pgs} PGs:");
    println!(
        "{:>24} | {:>7} {:>7} {:>8} {:>12} {:>7}",
        "change", "moved", "eff %", "int.bnd%", "method", "time s"
    );
    let mut osd_domain = PoolRules::replicated(PoolId(1), 3, 2, pgs);
    osd_domain.failure_domain = "osd".into();
    let host_domain = PoolRules::replicated(PoolId(1), 3, 2, pgs);
    let size4 = PoolRules::replicated(PoolId(1), 4, 2, pgs);
    let before = place_pool(&t, &osd_domain, None, &opts).expect("feasible");
    let mut prev = before.config;
    for (name, rules) in [
        ("failure domain osd→host", &host_domain),
        ("pg_size 3→4", &size4),
    ] {
        let started = Instant::now();
        let after = place_pool(&t, rules, Some(&prev), &opts).expect("feasible");
        let time = started.elapsed();
        let u = after.report.uniformity;
        println!(
            "{:>24} | {:>7} {:>7.2} {:>8.2} {:>12} {:>7.3}",
            name,
            after.report.slots_moved,
            u.efficiency * 100.0,
            u.integer_bound * 100.0,
            method(&after),
            time.as_secs_f64(),
        );
        eprintln!("  {name}: {}", after.report);
        prev = after.config;
    }
}

/// Several pools on one cluster: each placed on its own, and the load they add
/// up to on every OSD against the sum of their shares.
fn shared_cluster() {
    let mut rng = SmallRng::seed_from_u64(42);
    let osds = cluster(1000, &mut rng);
    let t = tree(osds);
    let opts = PlacementOptions::default();
    let pools = [
        (
            "replicated 3, 4096 PGs",
            json!({"pg_size":3,"pg_minsize":2,"pg_count":4096}),
        ),
        (
            "EC 4+2, 2048 PGs",
            json!({"scheme":"ec","pg_size":6,"parity_chunks":2,"pg_minsize":5,"pg_count":2048}),
        ),
        (
            "ssd-tagged, size 2, 1024 PGs",
            json!({"pg_size":2,"pg_minsize":1,"pg_count":1024,"osd_tags":"ssd"}),
        ),
        (
            "root dc1, rack domain, 256 PGs",
            json!({"pg_size":2,"pg_minsize":1,"pg_count":256,"root_node":"dc1","failure_domain":"rack"}),
        ),
    ];
    println!("\nSeveral pools sharing 1000 OSDs:");
    println!(
        "{:>32} | {:>7} {:>7} {:>8} {:>8} {:>8}",
        "pool", "time s", "eff %", "int.bnd%", "straw2 %", "method"
    );
    let mut load = std::collections::HashMap::<OsdNum, f64>::new();
    let mut share = std::collections::HashMap::<OsdNum, f64>::new();
    for (i, (name, pool)) in pools.iter().enumerate() {
        let rules = PoolRules::from_json(PoolId(i as u32 + 1), pool).expect("valid pool");
        let started = Instant::now();
        let p = place_pool(&t, &rules, None, &opts).expect("feasible");
        let time = started.elapsed();
        let layout = PoolLayout::new(&t, &rules).expect("feasible");
        let straw2 = layout.evaluate(&straw2_placement(&layout)).uniformity;
        for pg in p.config.pgs.values() {
            for o in pg.osd_set.iter().filter(|o| !o.is_none()) {
                *load.entry(*o).or_default() += 1.0;
            }
        }
        for &o in layout.eligible_osds() {
            *share.entry(o).or_default() += layout.target(o).unwrap_or(0.0);
        }
        let u = p.report.uniformity;
        println!(
            "{:>32} | {:>7.3} {:>7.2} {:>8.2} {:>8.2} {:>8}",
            name,
            time.as_secs_f64(),
            u.efficiency * 100.0,
            u.integer_bound * 100.0,
            straw2.efficiency * 100.0,
            method(&p),
        );
        eprintln!("  {}", p.report);
    }
    let worst = share
        .iter()
        .map(|(o, s)| load.get(o).copied().unwrap_or(0.0) / s)
        .fold(0.0f64, f64::max);
    println!(
        "{:>32} | {:>7} {:>7.2}",
        "all pools together",
        "",
        100.0 / worst
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    let runs = args
        .iter()
        .position(|a| a == "runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(3usize)
        .max(1);
    first_placements(quick, runs);
    let replicated = PoolRules::replicated(PoolId(1), 3, 2, 4096);
    movement(1000, 4096, "replicated size 3", &replicated);
    let ec = PoolRules::from_json(
        PoolId(1),
        &json!({"scheme":"ec","pg_size":6,"parity_chunks":2,"pg_minsize":5,"pg_count":4096}),
    )
    .expect("valid pool");
    movement(1000, 4096, "EC 4+2", &ec);
    if !quick {
        let big = PoolRules::replicated(PoolId(1), 3, 2, 65536);
        movement(10000, 65536, "replicated size 3", &big);
        rule_changes(10000, 65536);
    }
    shared_cluster();
}
