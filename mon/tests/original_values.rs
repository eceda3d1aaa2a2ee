//! The monitor reads a cluster run by the original Vitastor 3.0.x: the golden values of
//! `layout/tests/golden/original-3.0.json` (OSD numbers as strings in `pg/config` and
//! `pg/history`, `osd/stats` `time` and sizes as strings, unmodelled fields) go through the
//! master's mirror, a placement round, the down tracker and the stats aggregation.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::Value;
use vitastor_layout::parse_pg_config;
use vitastor_mon::decide::{known_osds, plan, DownTracker};
use vitastor_mon::placement::PlacementOptions;
use vitastor_mon::state::ClusterState;
use vitastor_mon::stats::aggregate;

fn golden_state() -> ClusterState {
    let text = include_str!("../../layout/tests/golden/original-3.0.json");
    let Value::Object(kvs) = serde_json::from_str(text).expect("golden file is JSON") else {
        panic!("golden file is not an object");
    };
    let mut s = ClusterState::default();
    let now = Instant::now();
    for (key, value) in kvs {
        s.apply(&key, Some(value), 1, now);
    }
    s
}

#[test]
fn placement_keeps_the_original_monitors_pgs() {
    let s = golden_state();
    assert_eq!(known_osds(&s), BTreeSet::from([1, 2, 3]));
    let (items, errors) = s.pg_items();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(items.len(), 4);
    let p = plan(&s, &BTreeSet::new(), &PlacementOptions::default());
    assert!(p.pool_errors.is_empty(), "{:?}", p.pool_errors);
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    // Whatever the round decides, every PG keeps living OSDs, and the PG with history keeps it
    // (its history names OSDs given as strings).
    if let Some(c) = &p.config {
        let (items, errors) = parse_pg_config(c);
        assert!(errors.is_empty() && items.len() == 4, "{c}");
        assert!(items
            .values()
            .all(|i| i.osd_set.iter().all(|o| (1..=3).contains(o))));
    }
    assert!(
        p.history_deletes.iter().all(|&(_, pg, _)| pg != 4),
        "PG 4 is not clean yet: {:?}",
        p.history_deletes
    );
}

#[test]
fn a_down_osd_is_dated_by_its_string_time() {
    let mut s = golden_state();
    s.apply("osd/state/2", None, 2, Instant::now());
    let mut t = DownTracker::default();
    // A new master: OSD 2 is down since its last report (time "1733530000.456"), so with
    // osd_out_time 600 it is out at 1733530600.456, not 600 s after the master started.
    t.update(&s, 1733530500.0, true);
    let (out, next) = t.out(&s, 600.0, 1733530500.0);
    assert!(out.is_empty());
    let next = next.expect("OSD 2 becomes out later");
    assert!((next - 1733530600.456).abs() < 1e-3, "{next}");
    let (out, _) = t.out(&s, 600.0, 1733530601.0);
    assert_eq!(out, BTreeSet::from([2]));
}

#[test]
fn stats_aggregate_string_sizes() {
    let s = golden_state();
    let a = aggregate(&s, &Default::default(), 1733530010.0);
    let total = a.stats["total_raw"].as_u64().unwrap_or(0);
    assert_eq!(total, 3 * (10 << 30), "{}", a.stats);
    assert_eq!(
        a.stats["op_stats"]["primary_write"]["count"].as_u64(),
        Some(20),
        "{}",
        a.stats
    );
    let raw_used = a.inodes.get(&(1, 1)).map(|v| v["raw_used"].clone());
    assert_eq!(raw_used, Some(Value::from(2 * 131072u64)));
}
