//! Options every command shares (`--etcd_address`, `--etcd_prefix`, `--config_path`,
//! `--json`) and how they merge with the config file.
//!
//! # What this module owns
//! - Precedence: command line > config file (`--config_path`, else
//!   `/etc/vitastor/vitastor.conf` or `$VITASTOR_CONFIG_PATH` when it exists, found by
//!   `vitastor_etcd::config_file`) > built-in default.
//! - Connecting to etcd and building client-library options from the same values, so data
//!   removal talks to the same cluster as the metadata commands.
//!
//! # What it must never do
//! - Read `config/global` from etcd: nothing the CLI does depends on it.

use std::path::PathBuf;

use clap::Args;
use vitastor::ClientOptions;
use vitastor_layout::keys::DEFAULT_PREFIX;

use crate::error::{CliError, Result};
use crate::etcd::Etcd;

/// Connection options, accepted before or after the command name.
#[derive(Debug, Clone, Args)]
#[command(rename_all = "snake_case")]
pub struct Common {
    /// etcd endpoints: HOST:PORT[/v3], several separated by commas.
    #[arg(long, global = true, value_name = "ADDR")]
    pub etcd_address: Option<String>,
    /// Prefix of the cluster's keys in etcd (default /vitastor).
    #[arg(long, global = true, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// JSON config file (default /etc/vitastor/vitastor.conf if present).
    #[arg(long, global = true, value_name = "PATH")]
    pub config_path: Option<PathBuf>,
}

/// The effective connection settings.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// etcd endpoints as given.
    pub etcd_address: String,
    /// Key prefix without a trailing slash.
    pub etcd_prefix: String,
    /// The config file given explicitly (passed on to the client library).
    pub config_path: Option<PathBuf>,
}

impl Common {
    /// Merges the command line with the config file.
    pub fn resolve(&self) -> Result<Resolved> {
        let found = vitastor_etcd::config_file::cluster_address(
            self.etcd_address.clone(),
            self.etcd_prefix.clone(),
            self.config_path.as_deref(),
        )
        .map_err(|e| CliError::ConfigFile {
            path: e.path,
            reason: e.reason,
        })?;
        let etcd_address = found
            .etcd_address
            .filter(|a| !a.trim().is_empty())
            .ok_or(CliError::NoEtcdAddress)?;
        let etcd_prefix = found
            .etcd_prefix
            .unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        Ok(Resolved {
            etcd_address,
            etcd_prefix: vitastor_etcd::normalize_prefix(&etcd_prefix)
                .map_err(|e| CliError::Usage(e.to_string()))?,
            config_path: self.config_path.clone(),
        })
    }
}

impl Resolved {
    /// Connects to etcd.
    pub fn etcd(&self) -> Result<Etcd> {
        Etcd::connect(&self.etcd_address, &self.etcd_prefix)
    }

    /// Client-library options naming the same cluster.
    pub fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions::new();
        o.set("etcd_address", &self.etcd_address)
            .set("etcd_prefix", &self.etcd_prefix);
        if let Some(p) = &self.config_path {
            o.set("config_path", &p.to_string_lossy());
        }
        o
    }
}
