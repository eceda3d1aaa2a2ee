//! The client's cluster view reads the keys the original Vitastor 3.0.x writes: the golden
//! values of `layout/tests/golden/original-3.0.json` (OSD numbers as strings in `pg/config`,
//! `pg/state` and `osd/state`, unmodelled fields) fed as one etcd load.

use serde_json::Value;
use vitastor::cluster::ClusterView;
use vitastor::etcd::{EtcdEvent, EtcdKv};

fn golden_view() -> ClusterView {
    let text = include_str!("../../layout/tests/golden/original-3.0.json");
    let Value::Object(kvs) = serde_json::from_str(text).expect("golden file is JSON") else {
        panic!("golden file is not an object");
    };
    let kvs = kvs
        .into_iter()
        .map(|(key, value)| EtcdKv {
            key,
            value,
            mod_revision: 1,
        })
        .collect();
    let mut view = ClusterView::default();
    view.apply(EtcdEvent::Loaded { kvs });
    view
}

#[test]
fn every_pg_has_its_primary_and_address() {
    let view = golden_view();
    assert!(view.loaded);
    assert_eq!(view.pools[&1].pg_count, 4);
    for (pg, osd, port) in [(1, 1, 43211), (2, 2, 43212), (3, 3, 43213), (4, 1, 43211)] {
        let (primary, state) = view
            .primary(1, pg)
            .unwrap_or_else(|| panic!("PG {pg} has no usable primary"));
        assert_eq!((primary, state.port), (osd, port), "PG {pg}");
    }
}

#[test]
fn images_resolve() {
    let view = golden_view();
    let inode = view.image("testimg").expect("index/image/testimg");
    assert_eq!(inode, (1 << 48) | 1);
    let entry = view.inode(inode).expect("config/inode/1/1");
    assert_eq!(entry.config.size, 1 << 30);
}
