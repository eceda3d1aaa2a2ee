//! Placement properties: uniformity against a straw2 baseline, failure domains,
//! movement on growth and shrinkage, tags and roots, infeasible pools.
//!
//! Run with `--nocapture` to see the side-by-side uniformity numbers.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use vitastor_mon::placement::*;

const TIB: u64 = 1 << 40;

/// Hosts named `h0`, `h1`…, OSDs numbered from 1 in host order.
fn cluster(hosts: &[Vec<u64>]) -> Vec<OsdInfo> {
    let mut osds = Vec::new();
    for (h, sizes) in hosts.iter().enumerate() {
        for &s in sizes {
            osds.push(OsdInfo::new(
                OsdNum(osds.len() as u64 + 1),
                format!("h{h}"),
                s * TIB,
            ));
        }
    }
    osds
}

/// Hosts of 4–12 OSDs with sizes of 1, 2, 4 or 8 TiB.
fn mixed_cluster(osds: usize, seed: u64) -> Vec<Vec<u64>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut hosts = Vec::new();
    let mut left = osds;
    while left > 0 {
        let n = rng.gen_range(4..=12).min(left);
        hosts.push((0..n).map(|_| [1, 2, 4, 8][rng.gen_range(0..4)]).collect());
        left -= n;
    }
    hosts
}

fn tree(osds: Vec<OsdInfo>) -> PlacementTree {
    PlacementTree::new(osds, &Value::Null, &Value::Null).unwrap()
}

fn place(t: &PlacementTree, rules: &PoolRules, prev: Option<&PoolPgConfig>) -> PoolPlacement {
    place_pool(t, rules, prev, &PlacementOptions::default()).unwrap()
}

/// Slots per OSD.
fn loads(cfg: &PoolPgConfig) -> std::collections::BTreeMap<OsdNum, u32> {
    let mut l = std::collections::BTreeMap::new();
    for pg in cfg.pgs.values() {
        for &o in pg.osd_set.iter().filter(|o| !o.is_none()) {
            *l.entry(o).or_default() += 1;
        }
    }
    l
}

#[test]
fn placement_beats_straw2_side_by_side() {
    let cases: Vec<(&str, Vec<Vec<u64>>, u32)> = vec![
        ("homogeneous 8×4", vec![vec![1; 4]; 8], 1024),
        ("homogeneous 3×4", vec![vec![1; 4]; 3], 256),
        ("heterogeneous 60", mixed_cluster(60, 1), 1024),
        ("heterogeneous 100", mixed_cluster(100, 2), 4096),
    ];
    println!(
        "{:<18} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "cluster", "PGs", "LP %", "bound %", "LP min", "LP max", "straw2 %"
    );
    for (name, hosts, pgs) in cases {
        let t = tree(cluster(&hosts));
        let rules = PoolRules::replicated(PoolId(1), 3, 2, pgs);
        let lp = place(&t, &rules, None);
        let layout = PoolLayout::new(&t, &rules).unwrap();
        let u = layout.evaluate(&lp.config).uniformity;
        let straw2 = layout.evaluate(&straw2_placement(&layout)).uniformity;
        println!(
            "{name:<18} {pgs:>5} {:>9.2} {:>9.2} {:>9.3} {:>9.3} {:>9.2}",
            u.efficiency * 100.0,
            u.integer_bound * 100.0,
            u.min_ratio,
            u.max_ratio,
            straw2.efficiency * 100.0
        );
        assert_eq!(u, lp.report.uniformity);
        assert!(
            u.efficiency >= u.integer_bound - 1e-9,
            "{name}: below the integer bound"
        );
        assert!(u.efficiency >= 0.97, "{name}: {u:?}");
        // Whole slots only cost rounding: no OSD is two slots off its share.
        assert!(u.min_ratio >= 0.95, "{name}: {u:?}");
        for (o, l) in loads(&lp.config) {
            let target = layout.target(o).unwrap();
            assert!(
                (f64::from(l) - target).abs() < 2.0,
                "{name}: OSD {o} has {l} slots for {target:.2}"
            );
        }
        assert!(
            u.efficiency > straw2.efficiency + 0.05,
            "{name}: LP {u:?} vs straw2 {straw2:?}"
        );
    }
}

#[test]
fn adding_one_osd_moves_about_one_over_n_plus_one() {
    for (name, hosts, pgs) in [
        ("homogeneous 6×4", vec![vec![1u64; 4]; 6], 1024u32),
        ("heterogeneous 40", mixed_cluster(40, 7), 2048),
    ] {
        let osds = cluster(&hosts);
        let n = osds.len();
        let rules = PoolRules::replicated(PoolId(1), 3, 2, pgs);
        let before = place(&tree(osds.clone()), &rules, None);
        let mut grown = osds;
        let new = OsdNum(n as u64 + 1);
        grown.push(OsdInfo::new(new, "h0", hosts[0][0] * TIB));
        let t = tree(grown);
        let after = place(&t, &rules, Some(&before.config));
        let layout = PoolLayout::new(&t, &rules).unwrap();
        let ideal = layout.target(new).unwrap();
        let total = f64::from(pgs * 3);
        let moved = after.report.slots_moved as f64;
        println!(
            "{name}: +1 OSD moved {moved} slots = {:.2}% of data (1/(N+1) = {:.2}%, new OSD share {:.2}%), {} PGs changed",
            moved / total * 100.0,
            100.0 / (n + 1) as f64,
            ideal / total * 100.0,
            after.report.pgs_changed
        );
        println!("  {}", after.report);
        // The new OSD's share is the minimum. LP placements use few distinct sets,
        // so some old OSDs only share PGs with the new OSD's host and hand their
        // excess over through a relay (two slot moves): up to ~1.3× the minimum.
        assert!(
            moved >= ideal.floor() - 1.0 && moved <= ideal * 1.4 + 2.0,
            "{name}: moved {moved}, ideal {ideal:.1}"
        );
        let got = f64::from(loads(&after.config)[&new]);
        assert!(
            (got - ideal).abs() < 1.0 + 1e-9,
            "{name}: new OSD has {got} of {ideal:.1}"
        );
        assert!(after.report.uniformity.efficiency >= after.report.uniformity.integer_bound - 0.01);
        assert_eq!(layout.evaluate(&after.config).invalid_pgs, 0);
    }
}

#[test]
fn removing_an_osd_moves_only_its_data() {
    let hosts = mixed_cluster(30, 3);
    let mut osds = cluster(&hosts);
    let rules = PoolRules::replicated(PoolId(1), 3, 2, 1024);
    let before = place(&tree(osds.clone()), &rules, None);
    let victim = OsdNum(5);
    let held = loads(&before.config)[&victim] as f64;
    osds[4].out = true;
    osds[4].up = false;
    let t = tree(osds);
    let after = place(&t, &rules, Some(&before.config));
    let moved = after.report.slots_moved as f64;
    println!("-1 OSD: it held {held} slots, {moved} slots moved");
    assert!(!loads(&after.config).contains_key(&victim));
    assert!(
        moved >= held && moved <= held * 1.25 + 2.0,
        "moved {moved}, held {held}"
    );
    assert!(after.report.uniformity.efficiency >= 0.95);
}

#[test]
fn tags_root_and_rack_failure_domain_are_honoured() {
    let mut osds = cluster(&vec![vec![1, 1, 2]; 6]);
    for o in osds.iter_mut().filter(|o| o.num.0 % 3 != 0) {
        o.tags.push("nvme".into());
    }
    let placement = json!({
        "r1":{"level":"rack","parent":"dc1"},"r2":{"level":"rack","parent":"dc1"},"r3":{"level":"rack"},
        "dc1":{"level":"datacenter"},
        "h0":{"parent":"r1"},"h1":{"parent":"r1"},"h2":{"parent":"r2"},"h3":{"parent":"r2"},
        "h4":{"parent":"r3"},"h5":{"parent":"r3"}
    });
    let t = PlacementTree::new(osds, &placement, &json!({"datacenter":10,"rack":20})).unwrap();
    let rules = PoolRules::from_json(
        PoolId(4),
        &json!({"pg_size":2,"pg_minsize":1,"pg_count":64,"failure_domain":"rack","root_node":"dc1","osd_tags":["nvme"]}),
    )
    .unwrap();
    let p = place(&t, &rules, None);
    let layout = PoolLayout::new(&t, &rules).unwrap();
    let allowed: BTreeSet<OsdNum> = layout.eligible_osds().iter().copied().collect();
    // dc1 holds hosts h0–h3 (OSDs 1–12); nvme excludes every third OSD.
    let expected: BTreeSet<OsdNum> = (1..=12).filter(|n| n % 3 != 0).map(OsdNum).collect();
    assert_eq!(allowed, expected);
    for pg in p.config.pgs.values() {
        let racks: HashSet<&str> = pg
            .osd_set
            .iter()
            .map(|&o| layout.failure_domain(o).unwrap())
            .collect();
        assert_eq!(racks, HashSet::from(["r1", "r2"]), "{pg:?}");
    }
    assert!(loads(&p.config).keys().all(|o| expected.contains(o)));
}

#[test]
fn weights_follow_reweight_and_out_state() {
    let mut osds = cluster(&vec![vec![1, 1]; 4]);
    osds[0].reweight = 0.5;
    osds[1].out = true;
    osds[2].out = true;
    osds[2].noout = true;
    osds[2].up = false;
    let t = tree(osds);
    let rules = PoolRules::replicated(PoolId(1), 2, 1, 480);
    let p = place(&t, &rules, None);
    let l = loads(&p.config);
    assert!(!l.contains_key(&OsdNum(2)), "out OSDs leave the placement");
    assert!(l[&OsdNum(3)] > 0, "noout keeps a down OSD in the placement");
    // OSD 1 at half weight gets half the share of OSD 4.
    let layout = PoolLayout::new(&t, &rules).unwrap();
    assert!(
        (layout.target(OsdNum(1)).unwrap() * 2.0 - layout.target(OsdNum(4)).unwrap()).abs() < 1e-9
    );
    assert!(p.config.pgs.values().all(|pg| pg.primary != OsdNum(3)));
}

#[test]
fn infeasible_pools_are_reported() {
    let t = tree(cluster(&[vec![1, 1], vec![1, 1], vec![1]]));
    let opts = PlacementOptions::default();
    let mut rules = PoolRules::replicated(PoolId(9), 3, 2, 32);
    rules.root_node = Some("nowhere".into());
    assert_eq!(
        place_pool(&t, &rules, None, &opts).unwrap_err(),
        PlacementError::RootNotFound {
            pool: 9,
            root: "nowhere".into()
        }
    );
    rules.root_node = None;
    rules.osd_tags = vec!["hdd".into()];
    assert!(matches!(
        place_pool(&t, &rules, None, &opts),
        Err(PlacementError::Infeasible { found: 0, .. })
    ));
    rules.osd_tags.clear();
    rules.pg_size = 4;
    rules.pg_minsize = 4;
    let err = place_pool(&t, &rules, None, &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pool 9: needs 4 failure domains of level \"host\" with eligible OSDs, found 3"
    );
    rules.failure_domain = "osd".into();
    assert_eq!(
        place_pool(&t, &rules, None, &opts)
            .unwrap()
            .report
            .effective_size,
        4
    );
}

/// `max_osd_combinations` bounds the LP's candidate sets (see the candidates
/// unit tests); first placements are striped by failure domain and consider no
/// combinations at all, so a small bound costs them nothing.
#[test]
fn first_placement_needs_no_combinations() {
    let t = tree(cluster(&mixed_cluster(80, 5)));
    let mut rules = PoolRules::replicated(PoolId(1), 3, 2, 512);
    rules.max_osd_combinations = 100;
    let p = place(&t, &rules, None);
    assert_eq!(p.report.method, PlacementMethod::Striped);
    assert_eq!(p.report.combinations_considered, 0);
    let layout = PoolLayout::new(&t, &rules).unwrap();
    let eval = layout.evaluate(&p.config);
    assert_eq!((eval.invalid_pgs, eval.missing_slots), (0, 0));
    assert_eq!(eval.uniformity.efficiency, eval.uniformity.integer_bound);
}

/// A random cluster: racks of hosts of OSDs, some tagged, some down or out.
#[derive(Debug, Clone)]
struct Case {
    hosts: Vec<Vec<(u64, bool, bool, bool)>>,
    racks: usize,
    pg_size: usize,
    pg_minsize: usize,
    pg_count: u32,
    failure_domain: &'static str,
    tagged: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let osd = (
        prop::sample::select(vec![1u64, 2, 4, 8]),
        any::<bool>(),
        prop::bool::weighted(0.15),
        any::<bool>(),
    );
    (
        prop::collection::vec(prop::collection::vec(osd, 1..6), 1..9),
        1usize..4,
        1usize..5,
        1u32..160,
        prop::sample::select(vec!["host", "osd", "rack"]),
        prop::bool::weighted(0.3),
    )
        .prop_flat_map(|(hosts, racks, pg_size, pg_count, fd, tagged)| {
            (1..=pg_size).prop_map(move |pg_minsize| Case {
                hosts: hosts.clone(),
                racks,
                pg_size,
                pg_minsize,
                pg_count,
                failure_domain: fd,
                tagged,
            })
        })
}

fn build(c: &Case) -> (PlacementTree, PoolRules) {
    let mut osds = Vec::new();
    let mut placement = serde_json::Map::new();
    for r in 0..c.racks {
        placement.insert(format!("r{r}"), json!({"level":"rack"}));
    }
    for (h, list) in c.hosts.iter().enumerate() {
        placement.insert(
            format!("h{h}"),
            json!({"level":"host","parent":format!("r{}", h % c.racks)}),
        );
        for &(size, tag, out, up) in list {
            let mut o = OsdInfo::new(OsdNum(osds.len() as u64 + 1), format!("h{h}"), size * TIB);
            o.out = out;
            o.up = up;
            if tag {
                o.tags.push("ssd".into());
            }
            osds.push(o);
        }
    }
    let t = PlacementTree::new(osds, &Value::Object(placement), &json!({"rack":50})).unwrap();
    let mut rules = PoolRules::replicated(PoolId(2), c.pg_size, c.pg_minsize, c.pg_count);
    rules.failure_domain = c.failure_domain.into();
    if c.tagged {
        rules.osd_tags = vec!["ssd".into()];
    }
    (t, rules)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Integration tests have no lib.rs beside them for the default file
        // location; keep the committed seeds next to this file instead.
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Valid, complete, deterministic and stable on re-run; infeasible exactly
    /// when there are fewer failure domains than pg_minsize.
    #[test]
    fn placements_respect_failure_domains(c in case()) {
        let (t, rules) = build(&c);
        let eligible: Vec<&OsdInfo> = t.osds().iter()
            .filter(|o| o.in_placement() && (!c.tagged || o.tags.iter().any(|t| t == "ssd")))
            .collect();
        let domains: HashSet<String> = eligible.iter().map(|o| {
            let h: usize = o.host[1..].parse().unwrap();
            match c.failure_domain {
                "host" => o.host.clone(),
                "rack" => format!("r{}", h % c.racks),
                _ => o.num.to_string(),
            }
        }).collect();
        match place_pool(&t, &rules, None, &PlacementOptions::default()) {
            Err(e) => {
                prop_assert!(domains.len() < c.pg_minsize, "{e}");
                prop_assert!(matches!(e, PlacementError::Infeasible { .. }), "{}", e);
            }
            Ok(p) => {
                prop_assert!(domains.len() >= c.pg_minsize);
                let layout = PoolLayout::new(&t, &rules).unwrap();
                let k = c.pg_size.min(domains.len());
                prop_assert_eq!(p.report.effective_size, k);
                let eval = layout.evaluate(&p.config);
                prop_assert_eq!(eval.invalid_pgs, 0);
                prop_assert_eq!(eval.missing_slots, c.pg_count as usize * (c.pg_size - k));
                for pg in p.config.pgs.values() {
                    let up: Vec<OsdNum> = pg.osd_set.iter().copied()
                        .filter(|o| t.osds().iter().any(|x| x.num == *o && x.up)).collect();
                    if up.is_empty() {
                        prop_assert_eq!(pg.primary, OsdNum::NONE);
                    } else {
                        prop_assert!(up.contains(&pg.primary));
                    }
                }
                let same = place_pool(&t, &rules, None, &PlacementOptions::default()).unwrap();
                prop_assert_eq!(&same.config, &p.config);
                let rerun = place_pool(&t, &rules, Some(&p.config), &PlacementOptions::default()).unwrap();
                prop_assert_eq!(rerun.report.method, PlacementMethod::Unchanged);
                prop_assert_eq!(&rerun.config, &p.config);
            }
        }
    }
}

/// One cluster change for the movement properties.
#[derive(Debug, Clone, Copy)]
enum Change {
    AddOsd(u64),
    RemoveOsd(usize),
    AddHost,
    RemoveHost(usize),
    Reweight(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        prop::sample::select(vec![1u64, 2, 4, 8]).prop_map(Change::AddOsd),
        any::<usize>().prop_map(Change::RemoveOsd),
        Just(Change::AddHost),
        any::<usize>().prop_map(Change::RemoveHost),
        any::<usize>().prop_map(Change::Reweight),
    ]
}

fn apply(hosts: &[Vec<u64>], c: Change) -> Vec<OsdInfo> {
    let mut osds = cluster(hosts);
    let n = osds.len();
    match c {
        Change::AddOsd(size) => osds.push(OsdInfo::new(OsdNum(n as u64 + 1), "h0", size * TIB)),
        Change::RemoveOsd(i) => osds[i % n].out = true,
        Change::AddHost => {
            for (j, s) in [2u64, 4, 1].into_iter().enumerate() {
                let h = format!("h{}", hosts.len());
                osds.push(OsdInfo::new(OsdNum((n + j) as u64 + 1), h, s * TIB));
            }
        }
        Change::RemoveHost(h) => {
            let h = format!("h{}", h % hosts.len());
            osds.iter_mut()
                .filter(|o| o.host == h)
                .for_each(|o| o.out = true);
        }
        Change::Reweight(i) => osds[i % n].reweight = 0.5,
    }
    osds
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Replicated and EC pools: valid sets, loads within the reported bound,
    /// and after a cluster change every PG keeps `pg_minsize` of its old
    /// members (or all of them that are still usable, if fewer; a PG that
    /// lost nothing may always move one copy), so a PG never has to recover
    /// more copies at once than it can while staying writable.
    #[test]
    fn changes_keep_minsize_members(
        hosts in prop::collection::vec(prop::collection::vec(prop::sample::select(vec![1u64, 2, 4, 8]), 1..6), 3..10),
        pg_size in 2usize..5,
        minsize_back in 0usize..3,
        ec in any::<bool>(),
        pg_count in 8u32..300,
        c in change(),
    ) {
        let pg_minsize = pg_size.saturating_sub(minsize_back).max(1);
        let pool = if ec {
            json!({"scheme":"ec","pg_size":pg_size,"parity_chunks":1,"pg_minsize":pg_minsize.max(pg_size - 1),"pg_count":pg_count})
        } else {
            json!({"pg_size":pg_size,"pg_minsize":pg_minsize,"pg_count":pg_count})
        };
        let rules = PoolRules::from_json(PoolId(1), &pool).unwrap();
        let t = tree(cluster(&hosts));
        let Ok(before) = place_pool(&t, &rules, None, &PlacementOptions::default()) else {
            return Ok(());
        };
        let t2 = tree(apply(&hosts, c));
        let Ok(after) = place_pool(&t2, &rules, Some(&before.config), &PlacementOptions::default()) else {
            return Ok(());
        };
        let layout = PoolLayout::new(&t2, &rules).unwrap();
        let eval = layout.evaluate(&after.config);
        prop_assert_eq!(eval.invalid_pgs, 0);
        prop_assert_eq!(eval.missing_slots, pg_count as usize * (pg_size - layout.effective_size()));
        prop_assert_eq!(eval.uniformity, after.report.uniformity);
        for (o, l) in loads(&after.config) {
            let t = layout.target(o).unwrap();
            prop_assert!(f64::from(l) <= t * after.report.uniformity.max_ratio * (1.0 + 1e-9));
        }
        for (pg, p) in &after.config.pgs {
            let old = &before.config.pgs[pg].osd_set;
            let usable: Vec<OsdNum> = old.iter().copied().filter(|o| layout.target(*o).is_some()).collect();
            let kept = usable.iter().filter(|o| p.osd_set.contains(o)).count();
            // A PG that lost nothing may move one copy even below pg_minsize
            // (with pg_minsize = pg_size nothing could rebalance otherwise).
            let mut required = usable.len().min(rules.pg_minsize);
            if usable.len() == layout.effective_size() {
                required = required.min(usable.len() - 1);
            }
            prop_assert!(
                kept >= required,
                "pg {}: {:?} -> {:?}, kept {} of {} usable ({})", pg, old, p.osd_set, kept, usable.len(), after.report
            );
        }
    }
}
