//! How every vitastor program reaches etcd. Today: the `etcd_address` option
//! ([`EtcdAddress`]), parsed here once for the OSD, the monitor, the client library and the
//! CLI, which used to carry a copy each.
//!
//! Each program still runs its own etcd session (lease, watches, transactions); those are
//! meant to move here next, so that timeouts and retry rules are written once.
//!
//! # What this crate must never do
//! - Interpret cluster values: that is `vitastor_layout`'s job.
//! - Accept an address it cannot serve (TLS, another API path): refusing at start-up beats
//!   a daemon retrying forever against the wrong endpoint.
#![deny(missing_docs)]

mod address;

pub use address::{AddressError, EtcdAddress};
