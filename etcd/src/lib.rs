//! How every vitastor program reaches etcd: the `etcd_address` and `etcd_prefix` options
//! ([`EtcdAddress`], [`normalize_prefix`]), connecting ([`connect`]) and the timeout around
//! every call ([`bounded`], [`CallError`]), written once for the OSD, the monitor, the client
//! library and the CLI, which used to carry a copy each.
//!
//! Each program still runs its own etcd session (lease, watches, transactions) on top of
//! these; those are meant to move here next.
//!
//! # What this crate must never do
//! - Interpret cluster values: that is `vitastor_layout`'s job.
//! - Wait on etcd without a bound.
//! - Accept an address it cannot serve (TLS, another API path): refusing at start-up beats
//!   a daemon retrying forever against the wrong endpoint.
#![deny(missing_docs)]

mod address;
mod call;
mod prefix;

pub use address::{AddressError, EtcdAddress};
pub use call::{bounded, connect, describe, CallError};
pub use prefix::{normalize_prefix, PrefixError};
