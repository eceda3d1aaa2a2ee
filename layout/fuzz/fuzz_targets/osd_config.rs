//! `config/osd` from untrusted etcd bytes (reweight, tags, noout): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vitastor_layout::OsdConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = OsdConfig::from_json("/vitastor/config/osd/1", &v);
});
