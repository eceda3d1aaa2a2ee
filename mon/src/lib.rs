//! The monitor: PG placement, failure handling and stats aggregation.
//!
//! [`placement`] is the pure core (no etcd, no network): it turns the placement tree, the
//! pool rules and the previous `pg/config` into a new `pg/config`. Around it:
//! [`state`] mirrors the watched etcd keys, [`decide`] turns that mirror into the writes of
//! one placement round, [`stats`] aggregates OSD counters, [`daemon`] runs the etcd
//! sessions, the master election and the master loop, [`http`] serves `/metrics`, and
//! [`options`] resolves the command line, config file and `config/global`.
#![deny(missing_docs)]

pub mod daemon;
pub mod decide;
mod error;
pub mod http;
pub mod options;
pub mod placement;
pub mod state;
pub mod stats;

pub use error::MonError;
