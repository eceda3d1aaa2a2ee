//! Options every command shares (`--etcd_address`, `--etcd_prefix`, `--config_path`,
//! `--json`) and how they merge with the config file.
//!
//! # What this module owns
//! - Precedence: command line > config file (`--config_path`, else
//!   `/etc/vitastor/vitastor.conf` when it exists) > built-in default.
//! - Connecting to etcd and building client-library options from the same values, so data
//!   removal talks to the same cluster as the metadata commands.
//!
//! # What it must never do
//! - Read `config/global` from etcd: nothing the CLI does depends on it.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Map, Value};
use vitastor::options::DEFAULT_CONFIG_PATH;
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
        let file = match &self.config_path {
            Some(p) => read_config(p)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read_config(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => Map::new(),
        };
        let from_file = match file.get("etcd_address") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => Some(
                list.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => None,
        };
        let etcd_address = self
            .etcd_address
            .clone()
            .or(from_file)
            .filter(|a| !a.trim().is_empty())
            .ok_or(CliError::NoEtcdAddress)?;
        let etcd_prefix = self
            .etcd_prefix
            .clone()
            .or_else(|| {
                file.get("etcd_prefix")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
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

fn read_config(path: &Path) -> Result<Map<String, Value>> {
    let bad = |reason: String| CliError::ConfigFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    match serde_json::from_slice(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("not a JSON object".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}
