//! The OSD daemon (issue #3) and operator tools over the blockstore.
//!
//! The daemon so far: [`server`] (listener, connection table, event loop) over
//! [`connection`] (per-connection framing, reply queue, back-pressure) and [`secondary`]
//! (SEC_* requests ↔ blockstore ops), started by the `vitastor-osd` binary with
//! [`options`] and stopped through [`shutdown`]. [`etcd`] is the etcd side thread (lease,
//! state report, config watch), not wired into the server loop yet.

pub mod backoff;
pub mod cluster;
pub mod connection;
pub mod disk_tool;
pub mod etcd;
pub mod options;
pub mod peering;
pub mod peers;
pub mod pg;
pub mod primary;
pub mod secondary;
pub mod server;
pub mod shutdown;
pub mod stats;
#[cfg(test)]
mod testing;
