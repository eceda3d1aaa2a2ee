//! `config/inode` and `index/image` from untrusted etcd bytes: never a panic (the parent
//! reference included); what parses is written back by `to_json` as a value that parses to
//! the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vitastor_layout::{ImageIndex, InodeConfig};

const KEY: &str = "/vitastor/config/inode/1/1";

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(config) = InodeConfig::from_json(KEY, &v) {
        let _ = config.parent(1);
        assert_eq!(InodeConfig::from_json(KEY, &config.to_json()), Ok(config));
    }
    let _ = ImageIndex::from_json("/vitastor/index/image/img", &v);
});
