//! The monitor: PG placement and cluster-level decisions.
//!
//! [`placement`] is the pure core (no etcd, no network): it turns the placement
//! tree, the pool rules and the previous `pg/config` into a new `pg/config`.
#![deny(missing_docs)]

pub mod placement;
