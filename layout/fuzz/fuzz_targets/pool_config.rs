//! `config/pools` from untrusted etcd bytes: `parse_pools` never panics, keeps every good
//! pool beside the errors of the bad ones, and a pool it accepts maps objects to PGs in
//! range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vitastor_layout::{parse_pools, PoolConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (pools, _errors) = parse_pools(&v);
    for (id, pool) in &pools {
        assert_eq!(PoolConfig::from_json(*id, &v[id.to_string()]).as_ref(), Ok(pool));
    }
});
