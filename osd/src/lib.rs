//! The OSD daemon and operator tools over the blockstore.
//!
//! The daemon: [`server`] (listener, connection table, the single-threaded event loop on
//! the blockstore's io_uring) over [`connection`] (per-connection framing, reply queue,
//! back-pressure). Peers' SEC_* requests go to [`secondary`] (a pure request ↔ blockstore-op
//! state machine). Clients' READ/WRITE/DELETE/SYNC and whole-PG listings on the PGs this
//! OSD leads go to [`primary`], whose ops fan out to the local store and to [`peers`];
//! every decision is pure and unit-tested without sockets: a READ's source in [`op_read`],
//! the steps of a WRITE, a DELETE, a SYNC and a recovery in the state machines
//! [`op_write`], [`op_delete`], [`op_sync`] and [`op_recover`] (their shared lock-time check
//! in [`op_gate`], the per-object recovery plan in [`recovery`]), a listing's merge in
//! [`op_list`], what a fan-out left behind in [`fanout`]; `primary.rs` only carries their
//! actions out. [`peering`] carries out a PG's lifecycle, decided by the state machine
//! [`pg_lifecycle`] (claiming the primary role through etcd, draining, stopping), and each
//! peering round, decided by the state machine [`peering_round`] (connections, listings,
//! stabilization, the object map of [`pg`]), then schedules recovery; failed attempts wait in [`backoff`].
//! EC/XOR pools: [`primary_ec`] carries out the pure core of [`ec`] (part reads and rebuilds,
//! read-modify-write, torn-stripe settling at peering, part recovery), and the hidden
//! `--debug_ec_crash` test hook is [`debug_crash`]. [`etcd`]
//! is the side thread (lease, state report, statistics, watches) feeding [`cluster`], the
//! parsed view of etcd. The `vitastor-osd` binary starts it all with [`options`] and stops
//! through [`shutdown`]; [`stats`] feeds `osd/stats`. `vitastor-disk` is [`disk_tool`].

pub mod backoff;
pub mod cluster;
pub mod connection;
pub mod debug_crash;
pub mod disk_tool;
pub mod ec;
pub mod etcd;
pub mod fanout;
pub mod op_delete;
pub mod op_gate;
pub mod op_list;
pub mod op_read;
pub mod op_recover;
pub mod op_sync;
pub mod op_write;
pub mod options;
pub mod peering;
pub mod peering_round;
pub mod peers;
pub mod pg;
pub mod pg_lifecycle;
pub mod primary;
pub mod primary_ec;
pub mod recovery;
pub mod secondary;
pub mod server;
pub mod shutdown;
pub mod stats;
#[cfg(test)]
mod testing;
