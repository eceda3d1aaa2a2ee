//! `osd/state` from untrusted etcd bytes: never a panic; what parses is written back by
//! `to_json` as a value that parses to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vitastor_layout::OsdState;

const KEY: &str = "/vitastor/osd/state/1";

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(state) = OsdState::from_json(KEY, &v) {
        let _ = state.is_up();
        assert_eq!(OsdState::from_json(KEY, &state.to_json()), Ok(state));
    }
});
