//! The Vitastor client library (`libvitastor`): reads and writes images stored in a
//! vitastor-rs (or original Vitastor) cluster, for QEMU, fio, NBD and the CLI.
//!
//! The client is single-threaded and poll-driven. It runs on the caller's thread: the caller
//! polls [`Client::poll_fd`] in its own loop (or calls [`Client::wait_events`]) and calls
//! [`Client::handle_events`]; callbacks run from there. A side thread ([`etcd`]) only reads
//! etcd and hands events over through an eventfd.
//!
//! Module map:
//! - [`options`] — option sources and precedence, effective settings.
//! - [`etcd`] — the etcd side thread (load + watch, reconnect with backoff).
//! - [`cluster`] — the cluster view built from etcd events (pure).
//! - [`mapping`] — splitting ranges into per-object parts (pure).
//! - `layers` — layered (snapshot/clone) images: the parent chain and what a layer lacks (pure).
//! - [`client`] — ops, retries, connections, unsynced-write replay, watches.
//! - `sys` — the Linux calls (epoll, timerfd, sockets, iovecs) and their `unsafe`.
//! - [`capi`] — the C ABI of `vitastor_c.h`, the only place errors become `-errno`.
//!
//! # What this crate must never do
//! - Panic, abort or exit on cluster trouble: unreachable etcd or OSDs, bad values and bad
//!   replies are logged and retried; only the caller's own mistakes fail an op at once.
//! - Block the caller's thread outside [`Client::wait_events`] and the C ABI's explicit
//!   `*_wait_*` functions.

pub mod client;
pub mod cluster;
pub mod error;
pub mod etcd;
mod layers;
pub mod mapping;
pub mod options;

pub mod capi;
mod sys;

pub use client::{Callback, Client, ImageInfo, ImageWatch, IoCounts, OpDone, WatchResult};
pub use error::ClientError;
pub use options::{ClientOptions, Settings};

/// Writes one diagnostic line to stderr. The library has no logger of its own: the programs
/// embedding it (QEMU, fio) show stderr to the operator.
pub(crate) fn log(args: std::fmt::Arguments<'_>) {
    eprintln!("vitastor-client: {args}");
}
