//! Every layout type reads the values the original Vitastor 3.0.x writes
//! (`tests/golden/original-3.0.json`): OSD numbers as strings in `pg/config`, `pg/history` and
//! `history/last_clean_pgs`, numeric strings elsewhere, and fields this project does not model.
//! The same file feeds the readers of the client library, the CLI, the monitor and the OSD.

use serde_json::{Map, Value};
use vitastor_layout::{
    keys, parse_pg_config, parse_pools, tolerant, ImageIndex, InodeConfig, OsdConfig, OsdState,
    PgHistory, PgState, PgStateName,
};

fn golden() -> Map<String, Value> {
    let text = include_str!("golden/original-3.0.json");
    match serde_json::from_str(text).expect("golden file is JSON") {
        Value::Object(m) => m,
        other => panic!("golden file is not an object: {other}"),
    }
}

#[test]
fn pg_config_with_string_osd_numbers() {
    let g = golden();
    for key in [keys::PG_CONFIG, keys::LAST_CLEAN_PGS] {
        let (items, errors) = parse_pg_config(&g[key]);
        assert!(errors.is_empty(), "{key}: {errors:?}");
        assert_eq!(items.len(), 4, "{key}");
        assert_eq!(items[&(1, 1)].osd_set, vec![1, 2], "{key}");
        assert_eq!(items[&(1, 1)].primary, 1, "{key}");
        assert_eq!(items[&(1, 3)].primary, 3, "{key}");
        assert!(!items[&(1, 2)].pause, "{key}");
    }
}

#[test]
fn pg_state_and_history() {
    let g = golden();
    for pg in 1..=4u32 {
        let key = keys::pg_state(1, pg);
        let s = PgState::from_json(&key, &g[&key]).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.is_active(), "{key}");
    }
    let s = PgState::from_json("pg/state/1/3", &g["pg/state/1/3"]).unwrap();
    assert_eq!((s.primary, s.peers), (3, vec![3, 1]));
    let s = PgState::from_json("pg/state/1/4", &g["pg/state/1/4"]).unwrap();
    assert!(s.has(PgStateName::HasMisplaced));
    let key = keys::pg_history(1, 4);
    let h = PgHistory::from_json(&key, &g[&key]).unwrap();
    assert_eq!(h.osd_sets, vec![vec![1, 2]]);
    assert_eq!(h.all_peers, vec![1, 2, 3]);
    assert_eq!(h.epoch, 7);
}

#[test]
fn osd_state_and_config() {
    let g = golden();
    for (osd, port) in [(1, 43211), (2, 43212), (3, 43213)] {
        let key = keys::osd_state(osd);
        let s = OsdState::from_json(&key, &g[&key]).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            s.is_up() && s.primary_enabled && s.blockstore_enabled,
            "{key}"
        );
        assert_eq!(
            (s.port, s.host.as_str(), s.version.as_str()),
            (port, "host1", "3.0.8")
        );
    }
    let c = OsdConfig::from_json("config/osd/1", &g["config/osd/1"]).unwrap();
    assert_eq!(
        (c.reweight, c.tags, c.noout),
        (1.0, vec!["nvme".to_string()], false)
    );
    let c = OsdConfig::from_json("config/osd/2", &g["config/osd/2"]).unwrap();
    assert_eq!((c.reweight, c.noout), (0.5, false));
}

#[test]
fn pools_images_and_stats() {
    let g = golden();
    let (pools, errors) = parse_pools(&g[keys::CONFIG_POOLS]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        (pools[&1].name.as_str(), pools[&1].pg_count),
        ("testpool", 4)
    );
    let i = InodeConfig::from_json("config/inode/1/1", &g["config/inode/1/1"]).unwrap();
    assert_eq!((i.name.as_str(), i.size), ("testimg", 1 << 30));
    let idx = ImageIndex::from_json("index/image/testimg", &g["index/image/testimg"]).unwrap();
    assert_eq!(idx, ImageIndex { id: 1, pool_id: 1 });
    assert_eq!(tolerant::u64_of(&g["index/maxid/1"]), Some(1));
    for osd in 1..=3 {
        let st = &g[&keys::osd_stats(osd)];
        assert_eq!(tolerant::u64_field(st, "size"), Some(10 << 30), "osd {osd}");
        assert!(
            tolerant::f64_field(st, "time").is_some_and(|t| t > 1.7e9),
            "osd {osd}"
        );
    }
}

#[test]
fn what_we_write_reads_back_unchanged() {
    let g = golden();
    let s = OsdState::from_json("osd/state/1", &g["osd/state/1"]).unwrap();
    assert_eq!(OsdState::from_json("k", &s.to_json()).unwrap(), s);
    let written = s.to_json();
    assert_eq!(written["port"], 43211, "ports are written as numbers");
    let p = PgState::from_json("pg/state/1/3", &g["pg/state/1/3"]).unwrap();
    assert_eq!(p.to_json()["peers"], serde_json::json!([3, 1]));
}
