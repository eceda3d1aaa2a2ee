//! `pg/history` from untrusted etcd bytes: never a panic; what parses survives a serde round
//! trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vitastor_layout::PgHistory;

const KEY: &str = "/vitastor/pg/history/1/1";

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(history) = PgHistory::from_json(KEY, &v) {
        let json = serde_json::to_value(&history).expect("serializing a PG history");
        assert_eq!(PgHistory::from_json(KEY, &json), Ok(history));
    }
});
