//! The OSD's cluster view reads the keys the original Vitastor 3.0.x writes: the golden
//! values of `layout/tests/golden/original-3.0.json` (OSD numbers as strings in `pg/config`,
//! `pg/history` and `osd/state`, unmodelled fields) fed as one etcd load.

use std::collections::BTreeSet;

use serde_json::Value;
use vitastor_layout::{OsdNum, PgId};
use vitastor_osd::cluster::{Changes, ClusterView};
use vitastor_osd::etcd::EtcdEvent;

#[test]
fn pgs_peers_and_osds_of_an_original_cluster() {
    let text = include_str!("../../layout/tests/golden/original-3.0.json");
    let Value::Object(kvs) = serde_json::from_str(text).expect("golden file is JSON") else {
        panic!("golden file is not an object");
    };
    let mut view = ClusterView::default();
    let mut changes = Changes::default();
    view.apply(
        &EtcdEvent::InitialLoad {
            kvs: kvs.into_iter().collect(),
        },
        &mut changes,
    );
    assert_eq!(view.pools.len(), 1);
    assert_eq!(view.pg_config.len(), 4);
    assert_eq!(view.pg_config[&PgId::new(1, 3)].osd_set, vec![3, 1]);
    assert_eq!(view.pg_config[&PgId::new(1, 3)].primary, 3);
    assert_eq!(
        view.osds.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3].map(OsdNum)
    );
    assert_eq!(view.osds[&OsdNum(3)].port, 43213);
    // PG 4 moved from {1,2} to {1,3}: its history names OSD 2 as a string.
    assert_eq!(
        view.pg_peers(PgId::new(1, 4)),
        BTreeSet::from([1, 2, 3].map(OsdNum))
    );
    assert_eq!(view.pg_state.len(), 4);
}
