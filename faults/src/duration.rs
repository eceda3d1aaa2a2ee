//! How long a scenario injects faults: `VITASTOR_FAULT_SECS` (the long form of
//! `make test-faults`), 30 s by default (the subset inside `make test`).

use std::time::Duration;

/// Default fault time of one scenario when `VITASTOR_FAULT_SECS` is not set.
pub const DEFAULT_SECS: u64 = 30;

/// The fault time of one scenario.
pub fn fault_time() -> Duration {
    Duration::from_secs(
        std::env::var("VITASTOR_FAULT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_SECS),
    )
}

/// The fault time of the OSD kill loops: `VITASTOR_KILL_LOOP_SECS`, else [`fault_time`].
/// Issue #16 asks for 10-minute kill loops inside a 30-minute `make test-faults`, which the
/// other scenarios' time then has to leave room for.
pub fn kill_loop_time() -> Duration {
    std::env::var("VITASTOR_KILL_LOOP_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or_else(fault_time, Duration::from_secs)
}

/// Inputs per parser in the random-input loops: `VITASTOR_FUZZ_INPUTS`, else `default`.
pub fn fuzz_inputs(default: u64) -> u64 {
    std::env::var("VITASTOR_FUZZ_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
