//! The fault-injection suite's shared parts: fio under fault ([`fio`]), a VM checksumming
//! its disk under fault ([`vm`], its console read by [`guest_console`]), the figures each
//! scenario prints ([`figures`]), how long scenarios run ([`duration`]), what every
//! scenario does the same way ([`scenario`]), and for network partitions the namespaces
//! and cuts ([`netns`]) and the check that no two OSDs lead one PG at once ([`primaries`]).
//!
//! The scenarios themselves are the tests in `faults/tests/`. They kill only processes they
//! started (testkit's handles, by PID) and print figures; timings are never pass/fail — only
//! verify errors and lost acknowledged writes are.

pub mod duration;
pub mod figures;
pub mod fio;
pub mod guest_console;
pub mod netns;
pub mod primaries;
pub mod scenario;
pub mod vm;
