//! How every vitastor program reaches etcd, written once for the OSD, the monitor, the
//! client library and the CLI, which used to carry a copy each: the `etcd_address` and
//! `etcd_prefix` options ([`EtcdAddress`], [`normalize_prefix`]) and the common config file
//! that supplies them when a command line does not ([`config_file`]), connecting ([`connect`]),
//! the timeout around every call ([`bounded`], [`CallError`]), the lease ([`Lease`]), loading
//! keys at one revision and watching them from the next ([`watch`]), the common transactions
//! and etcd's limit on their size ([`txn`]), and the wait between sessions ([`Backoff`]).
//!
//! What a program does with events, and when a session ends, stays with the program.
//!
//! # What this crate must never do
//! - Interpret cluster values: that is `vitastor_layout`'s job.
//! - Wait on etcd without a bound.
//! - Accept an address it cannot serve (TLS, another API path): refusing at start-up beats
//!   a daemon retrying forever against the wrong endpoint.
#![deny(missing_docs)]

mod address;
mod backoff;
mod call;
pub mod config_file;
mod lease;
mod prefix;
pub mod txn;
pub mod watch;

pub use address::{AddressError, EtcdAddress};
pub use backoff::{Backoff, INITIAL_BACKOFF, MAX_BACKOFF};
pub use call::{bounded, connect, describe, CallError};
pub use lease::Lease;
pub use prefix::{normalize_prefix, PrefixError};
