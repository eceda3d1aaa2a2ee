//! `vitastor-cli` and `vitastor-rm`: administration of a Vitastor cluster through etcd, and
//! removal of image data through the client library.
//!
//! Module map:
//! - [`cli`] — the command lines and the process edge (exit status, one-line errors).
//! - [`options`] — shared options, the config file, size parsing.
//! - [`etcd`] — the bounded, blocking etcd connection (the only user of `etcd_client`).
//! - [`state`] — typed reads shared by the commands (pools, images).
//! - [`images`], [`pools`], [`osds`], [`status`] — the commands.
//! - [`layers`] — snapshots, clones, flatten, merge (layer metadata).
//! - [`copy`] — copying the granules a layer lacks from the layers below it.
//! - [`remove`] — deleting an inode's objects with the client library.
//! - [`format`] — tables and human sizes.
//!
//! # What this crate must never do
//! - Hang: every etcd call is bounded ([`etcd::CALL_TIMEOUT`]) and the client library must
//!   load the cluster within a bound before data removal starts.
//! - Panic on what it reads from etcd: bad values are errors or warnings naming the key.
//! - Write a layout value the other programs would reject: pools, images and OSD settings
//!   are validated with `vitastor_layout` before they are written.

pub mod cli;
pub mod copy;
pub mod error;
pub mod etcd;
pub mod format;
pub mod images;
pub mod layers;
pub mod options;
pub mod osds;
pub mod pools;
pub mod remove;
pub mod state;
pub mod status;

pub use error::CliError;
