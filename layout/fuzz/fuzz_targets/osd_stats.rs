//! `osd/stats` from untrusted etcd bytes. It has no typed view in the layout crate: readers
//! (the monitor) take its fields with the `tolerant` accessors, which are fuzzed here on the
//! fields they read and on every field the value has. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vitastor_layout::tolerant;

const FIELDS: &[&str] = &["size", "free", "time", "blockstore_ready", "host", "op_stats"];

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let own: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for field in FIELDS.iter().copied().chain(own.iter().map(String::as_str)) {
        let _ = tolerant::u64_field(&v, field);
        let _ = tolerant::f64_field(&v, field);
        let _ = tolerant::u64_of(&v[field]);
        let _ = tolerant::f64_of(&v[field]);
        let _ = tolerant::bool_of(&v[field]);
    }
});
