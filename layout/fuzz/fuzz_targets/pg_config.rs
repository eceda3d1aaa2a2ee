//! `pg/config` from untrusted etcd bytes: `parse_pg_config` never panics and every item it
//! keeps survives a serde round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vitastor_layout::{parse_pg_config, PgConfigItem};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (items, _errors) = parse_pg_config(&v);
    for item in items.values() {
        let json = serde_json::to_value(item).expect("serializing a PG config item");
        let back: PgConfigItem = serde_json::from_value(json).expect("its own JSON parses");
        assert_eq!(&back, item);
    }
});
