//! The monitor: PG placement and cluster-level decisions.
