//! Client options: where each value comes from and what it means.
//!
//! # What this module owns
//! - The precedence of option sources: an explicit option (C ABI key/value pairs, Rust
//!   [`ClientOptions::set`]) beats the config file (`config_path`, default
//!   `/etc/vitastor/vitastor.conf` or `$VITASTOR_CONFIG_PATH` when it exists), which beats
//!   `config/global` in etcd, which beats the built-in default.
//! - The typed, effective settings ([`Settings`]) recomputed whenever `config/global` changes.
//!
//! # What it must never do
//! - Fail on `config/global`: a bad value there is logged and the default is used, because
//!   the operator may fix etcd at any time and the client must keep serving.
//! - Read etcd or the network: it only merges values it is given.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};
use vitastor_layout::ImmediateCommit;

use crate::error::ClientError;

/// Default config file, read only when it exists and neither `config_path` nor
/// `VITASTOR_CONFIG_PATH` names another (`vitastor_etcd::config_file`).
pub use vitastor_etcd::config_file::DEFAULT_CONFIG_PATH;
/// Default `client_max_dirty_bytes`: unsynced data kept for replay before the client syncs
/// on its own (32 MiB, as in the original client).
pub const DEFAULT_MAX_DIRTY_BYTES: u64 = 32 << 20;
/// Default `client_max_dirty_ops`: unsynced writes kept before the client syncs on its own.
pub const DEFAULT_MAX_DIRTY_OPS: u64 = 1024;
/// Default `client_retry_interval` (ms): the pause before a part that hit `-EPIPE` or an
/// unreachable OSD is tried again when no cluster event arrives sooner.
pub const DEFAULT_RETRY_INTERVAL_MS: u64 = 50;
/// Default `peer_connect_timeout` (s): a TCP connect plus handshake that takes longer is
/// abandoned and retried.
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 5;
/// Default `client_op_timeout` (s): an OSD that leaves requests unanswered and says nothing
/// for this long is sent a PING; if the PING is not answered within it either, the
/// connection is dropped and its requests go again to the PG's primary of the moment.
pub const DEFAULT_OP_TIMEOUT_S: u64 = 5;

/// Options as given (explicit values and the config file), before etcd is known.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    explicit: Map<String, Value>,
}

impl ClientOptions {
    /// No options: everything from the config file, etcd and defaults.
    pub fn new() -> ClientOptions {
        ClientOptions::default()
    }

    /// Sets one option by name (`etcd_address`, `client_max_dirty_bytes`, …). Values are
    /// strings as on a command line; numbers and booleans are recognised when read.
    pub fn set(&mut self, name: &str, value: &str) -> &mut ClientOptions {
        // QEMU's filename syntax calls it etcd_host.
        let name = if name == "etcd_host" {
            "etcd_address"
        } else {
            name
        };
        self.explicit
            .insert(name.to_string(), Value::String(value.to_string()));
        self
    }

    /// Builds options from key/value pairs as the C ABI passes them.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> ClientOptions {
        let mut o = ClientOptions::new();
        for (k, v) in pairs {
            o.set(k, v);
        }
        o
    }

    /// Merges the config file under the explicit options.
    pub(crate) fn resolve(&self) -> Result<Resolved, ClientError> {
        let path = self.explicit.get("config_path").and_then(Value::as_str);
        let file = vitastor_etcd::config_file::read_config(path.map(Path::new)).map_err(|e| {
            ClientError::ConfigFile {
                path: e.path,
                reason: e.reason,
            }
        })?;
        let mut local = file;
        for (k, v) in &self.explicit {
            local.insert(k.clone(), v.clone());
        }
        let etcd_address = match local.get("etcd_address") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            _ => {
                return Err(ClientError::BadOption {
                    name: "etcd_address".into(),
                    reason: "not given (option, config file)".into(),
                })
            }
        };
        let prefix = match local.get("etcd_prefix").and_then(Value::as_str) {
            Some(p) => vitastor_etcd::normalize_prefix(p).map_err(|e| ClientError::BadOption {
                name: "etcd_prefix".into(),
                reason: e.to_string(),
            })?,
            None => vitastor_layout::keys::DEFAULT_PREFIX.to_string(),
        };
        let resolved = Resolved {
            local,
            etcd_address,
            prefix,
        };
        // Refuse malformed local values now rather than at the first op.
        resolved.settings(&Map::new())?;
        Ok(resolved)
    }
}

/// Explicit options merged with the config file.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    local: Map<String, Value>,
    /// `etcd_address` (one or more comma-separated endpoints).
    pub(crate) etcd_address: String,
    /// `etcd_prefix` without a trailing slash.
    pub(crate) prefix: String,
}

/// The effective settings the data path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `client_max_dirty_bytes`.
    pub max_dirty_bytes: u64,
    /// `client_max_dirty_ops`.
    pub max_dirty_ops: u64,
    /// `client_retry_interval`.
    pub retry_interval: Duration,
    /// `peer_connect_timeout`.
    pub connect_timeout: Duration,
    /// `client_op_timeout`.
    pub op_timeout: Duration,
    /// `immediate_commit` of `config/global` (or local options), used for pools that do not
    /// set their own; `None` = trust what each OSD reports.
    pub default_immediate_commit: Option<ImmediateCommit>,
}

impl Resolved {
    /// The settings with `global` (the value of `config/global`) under the local options.
    /// Local values must be valid; a bad global value is reported by the caller and ignored.
    pub(crate) fn settings(&self, global: &Map<String, Value>) -> Result<Settings, ClientError> {
        let get = |name: &str| self.local.get(name).or_else(|| global.get(name));
        let num = |name: &str, default: u64| -> Result<u64, ClientError> {
            match get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => {
                    vitastor_layout::tolerant::u64_of(v).ok_or_else(|| ClientError::BadOption {
                        name: name.to_string(),
                        reason: format!("{v} is not a non-negative integer"),
                    })
                }
            }
        };
        let positive = |name: &str, default: u64| -> Result<u64, ClientError> {
            match num(name, default)? {
                0 => Err(ClientError::BadOption {
                    name: name.to_string(),
                    reason: "must be positive".into(),
                }),
                n => Ok(n),
            }
        };
        let default_immediate_commit = match get("immediate_commit") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_str().and_then(ImmediateCommit::parse).ok_or_else(|| {
                ClientError::BadOption {
                    name: "immediate_commit".into(),
                    reason: format!("{v} is not all, small or none"),
                }
            })?),
        };
        Ok(Settings {
            max_dirty_bytes: positive("client_max_dirty_bytes", DEFAULT_MAX_DIRTY_BYTES)?,
            max_dirty_ops: positive("client_max_dirty_ops", DEFAULT_MAX_DIRTY_OPS)?,
            retry_interval: Duration::from_millis(positive(
                "client_retry_interval",
                DEFAULT_RETRY_INTERVAL_MS,
            )?),
            connect_timeout: Duration::from_secs(positive(
                "peer_connect_timeout",
                DEFAULT_CONNECT_TIMEOUT_S,
            )?),
            op_timeout: Duration::from_secs(positive("client_op_timeout", DEFAULT_OP_TIMEOUT_S)?),
            default_immediate_commit,
        })
    }

    /// Settings with a `config/global` value, falling back to the local-only settings (and a
    /// log line) when the global value is unusable.
    pub(crate) fn settings_with_global(&self, global: &Value) -> Settings {
        let empty = Map::new();
        let map = match global {
            Value::Object(m) => m,
            Value::Null => &empty,
            other => {
                crate::log(format_args!("config/global is not a JSON object: {other}"));
                &empty
            }
        };
        match self.settings(map) {
            Ok(s) => s,
            Err(e) => {
                crate::log(format_args!("config/global ignored: {e}"));
                // Local values were validated when the client was created.
                self.settings(&empty).unwrap_or(Settings::DEFAULT)
            }
        }
    }
}

impl Settings {
    /// Built-in defaults.
    pub const DEFAULT: Settings = Settings {
        max_dirty_bytes: DEFAULT_MAX_DIRTY_BYTES,
        max_dirty_ops: DEFAULT_MAX_DIRTY_OPS,
        retry_interval: Duration::from_millis(DEFAULT_RETRY_INTERVAL_MS),
        connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_S),
        op_timeout: Duration::from_secs(DEFAULT_OP_TIMEOUT_S),
        default_immediate_commit: None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(pairs: &[(&str, &str)]) -> ClientOptions {
        ClientOptions::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn precedence_explicit_file_global_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vitastor.conf");
        std::fs::write(
            &path,
            r#"{"etcd_address":"10.0.0.1:2379/v3","client_max_dirty_ops":7,"client_retry_interval":9}"#,
        )
        .unwrap();
        let o = opts(&[
            ("config_path", path.to_str().unwrap()),
            ("client_retry_interval", "11"),
            ("client_op_timeout", "3"),
        ]);
        let r = o.resolve().unwrap();
        assert_eq!(r.etcd_address, "10.0.0.1:2379/v3");
        assert_eq!(r.prefix, "/vitastor");
        let global = json!({"client_max_dirty_ops": 100, "client_max_dirty_bytes": 4096,
                            "immediate_commit": "none"});
        let s = r.settings_with_global(&global);
        assert_eq!(s.max_dirty_ops, 7, "file beats global");
        assert_eq!(
            s.retry_interval,
            Duration::from_millis(11),
            "explicit beats file"
        );
        assert_eq!(s.max_dirty_bytes, 4096, "global beats default");
        assert_eq!(
            s.connect_timeout,
            Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_S)
        );
        assert_eq!(s.default_immediate_commit, Some(ImmediateCommit::None));
        assert_eq!(s.op_timeout, Duration::from_secs(3));
        let s = r.settings_with_global(&json!({"client_op_timeout": 0}));
        assert_eq!(
            s.op_timeout,
            Duration::from_secs(3),
            "a bad global value is ignored"
        );
    }

    #[test]
    fn bad_values() {
        assert!(opts(&[]).resolve().is_err() || Path::new(DEFAULT_CONFIG_PATH).exists());
        let e = opts(&[("etcd_address", "a:1/v3"), ("client_max_dirty_bytes", "x")])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("client_max_dirty_bytes"), "{e}");
        let e = opts(&[("etcd_address", "a:1/v3"), ("client_op_timeout", "0")])
            .resolve()
            .and_then(|r| r.settings(&Map::new()))
            .unwrap_err();
        assert!(e.to_string().contains("client_op_timeout"), "{e}");
        let e = opts(&[
            ("etcd_address", "a:1/v3"),
            ("config_path", "/nonexistent/x"),
        ])
        .resolve()
        .unwrap_err();
        assert!(matches!(e, ClientError::ConfigFile { .. }), "{e}");
        let e = opts(&[("etcd_address", "a:1/v3"), ("etcd_prefix", "vitastor")])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("etcd_prefix"), "{e}");
        // A bad global value falls back to the local settings instead of failing.
        let r = opts(&[("etcd_host", "a:1/v3"), ("etcd_prefix", "/x/")])
            .resolve()
            .unwrap();
        assert_eq!(r.prefix, "/x");
        let s = r.settings_with_global(&json!({"client_max_dirty_ops": "lots"}));
        assert_eq!(s, Settings::DEFAULT);
        assert_eq!(r.settings_with_global(&json!([1])), Settings::DEFAULT);
    }
}
