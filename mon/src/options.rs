//! Command line, config file and `config/global`: what the monitor is told to do.
//!
//! # What this module owns
//! - The `vitastor-mon` command line ([`Cli`], clap) and the merge with the common config
//!   file (`/etc/vitastor/vitastor.conf`, JSON) into [`MonOptions`].
//! - [`Tunables`]: the options that may also come from `config/global`, resolved with the
//!   precedence command line > config file > `config/global` > built-in default.
//! - `etcd_address` parsing (`host:port/v3`, several separated by commas).
//!
//! # What it must never do
//! - Fail on a bad value in `config/global`: that is cluster state, not the operator's
//!   command line; such a value is ignored (with a note for the log) and the default applies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use vitastor_layout::tolerant;

use crate::MonError;

/// The common config file read when `--config_path` is not given (a missing default file is
/// not an error; a missing explicit one is; `VITASTOR_CONFIG_PATH` names another).
pub use vitastor_etcd::config_file::DEFAULT_CONFIG_PATH;
/// Default `osd_out_time` (s): how long an OSD may be down before its PGs are re-placed.
pub const DEFAULT_OSD_OUT_TIME: u64 = 600;
/// Default `etcd_mon_ttl` (s): the master lease. A dead master is replaced within about
/// this long; shorter makes a slow etcd depose healthy masters.
pub const DEFAULT_MON_TTL: u64 = 10;
/// Smallest accepted `etcd_mon_ttl`: keepalives go every third of it and need a round trip.
pub const MIN_MON_TTL: u64 = 2;
/// Default `mon_change_timeout` (ms): changes are collected this long before a placement
/// round, so an OSD host going down (several keys) costs one round, not one per key.
pub const DEFAULT_CHANGE_TIMEOUT_MS: u64 = 1000;
/// Default `mon_stats_interval` (s): how often aggregates are written.
pub const DEFAULT_STATS_INTERVAL: u64 = 5;
/// Bound on one etcd call: longer than any healthy answer, shorter than the lease TTL
/// default so a stuck etcd ends the session before the lease is silently lost.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `etcd_prefix`.
pub const DEFAULT_PREFIX: &str = vitastor_layout::keys::DEFAULT_PREFIX;

/// `vitastor-mon` command line.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "vitastor-mon",
    about = "Vitastor monitor: PG placement, failure handling and stats aggregation. \
             Several may run against one etcd; one of them is master."
)]
pub struct Cli {
    /// etcd endpoints: host:port/v3, several separated by commas.
    #[arg(long = "etcd_address", value_name = "ADDRS")]
    pub etcd_address: Option<String>,
    /// Key prefix of the cluster in etcd (default /vitastor).
    #[arg(long = "etcd_prefix", value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Common config file (JSON), default /etc/vitastor/vitastor.conf.
    #[arg(long = "config_path", value_name = "FILE")]
    pub config_path: Option<PathBuf>,
    /// Serve Prometheus metrics on this port (GET /metrics).
    #[arg(long = "prometheus_port", value_name = "PORT")]
    pub prometheus_port: Option<u16>,
    /// Address the metrics listener binds (default 0.0.0.0).
    #[arg(long = "prometheus_address", value_name = "ADDR")]
    pub prometheus_address: Option<String>,
    /// Seconds an OSD may be down before its PGs move (overrides config/global, default 600).
    #[arg(long = "osd_out_time", value_name = "SECS")]
    pub osd_out_time: Option<u64>,
    /// TTL of the master lease in seconds (default 10).
    #[arg(long = "etcd_mon_ttl", value_name = "SECS")]
    pub etcd_mon_ttl: Option<u64>,
    /// Milliseconds changes are collected before placement runs (default 1000).
    #[arg(long = "mon_change_timeout", value_name = "MS")]
    pub mon_change_timeout: Option<u64>,
    /// Seconds between stats aggregations (default 5).
    #[arg(long = "mon_stats_interval", value_name = "SECS")]
    pub mon_stats_interval: Option<u64>,
}

/// Options fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct MonOptions {
    /// etcd endpoints as `http://host:port`.
    pub endpoints: Vec<String>,
    /// Key prefix without a trailing slash.
    pub prefix: String,
    /// Where to serve metrics, if anywhere.
    pub prometheus: Option<SocketAddr>,
    /// Per-call bound on etcd requests.
    pub call_timeout: Duration,
    /// Values from the command line or config file that win over `config/global`.
    pub overrides: Overrides,
}

/// Tunables set on the command line or in the config file (`None`: not set there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `osd_out_time`, s.
    pub osd_out_time: Option<u64>,
    /// `etcd_mon_ttl`, s.
    pub etcd_mon_ttl: Option<u64>,
    /// `mon_change_timeout`, ms.
    pub mon_change_timeout: Option<u64>,
    /// `mon_stats_interval`, s.
    pub mon_stats_interval: Option<u64>,
}

/// The tunables in effect, after `config/global` and the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Tunables {
    /// Down time after which an OSD is out.
    pub osd_out_time: Duration,
    /// Master lease TTL.
    pub mon_ttl: Duration,
    /// Debounce of placement rounds.
    pub change_timeout: Duration,
    /// Stats aggregation period.
    pub stats_interval: Duration,
}

impl Tunables {
    /// Resolves the tunables; returns notes about ignored `config/global` values.
    pub fn resolve(o: &Overrides, global: &Value) -> (Tunables, Vec<String>) {
        let mut notes = Vec::new();
        let mut pick = |name: &str, over: Option<u64>, default: u64| -> u64 {
            if let Some(v) = over {
                return v;
            }
            match global.get(name) {
                None | Some(Value::Null) => default,
                Some(v) => match tolerant::u64_of(v) {
                    Some(v) => v,
                    None => {
                        notes.push(format!(
                            "config/global: {name} = {v} is not a non-negative integer, using {default}"
                        ));
                        default
                    }
                },
            }
        };
        let t = Tunables {
            osd_out_time: Duration::from_secs(pick(
                "osd_out_time",
                o.osd_out_time,
                DEFAULT_OSD_OUT_TIME,
            )),
            mon_ttl: Duration::from_secs(
                pick("etcd_mon_ttl", o.etcd_mon_ttl, DEFAULT_MON_TTL).max(MIN_MON_TTL),
            ),
            change_timeout: Duration::from_millis(pick(
                "mon_change_timeout",
                o.mon_change_timeout,
                DEFAULT_CHANGE_TIMEOUT_MS,
            )),
            stats_interval: Duration::from_secs(
                pick(
                    "mon_stats_interval",
                    o.mon_stats_interval,
                    DEFAULT_STATS_INTERVAL,
                )
                .max(1),
            ),
        };
        (t, notes)
    }
}

impl MonOptions {
    /// Merges the command line with the config file.
    pub fn from_cli(cli: Cli) -> Result<MonOptions, MonError> {
        let path = cli
            .config_path
            .clone()
            .unwrap_or_else(vitastor_etcd::config_file::default_config_path);
        let file =
            vitastor_etcd::config_file::read_config(cli.config_path.as_deref()).map_err(|e| {
                MonError::ConfigFile {
                    path: e.path,
                    reason: e.reason,
                }
            })?;
        let file_str = |name: &'static str| -> Result<Option<String>, MonError> {
            match file.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                // The original accepts etcd_address as an array of endpoints too.
                Some(Value::Array(a)) if name == "etcd_address" => Ok(Some(
                    a.iter()
                        .map(|x| x.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad_file(&path, name))?
                        .join(","),
                )),
                Some(_) => Err(bad_file(&path, name)),
            }
        };
        let file_u64 = |name: &'static str| -> Result<Option<u64>, MonError> {
            match file.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => tolerant::u64_of(v)
                    .map(Some)
                    .ok_or_else(|| bad_file(&path, name)),
            }
        };
        let address = match cli.etcd_address.clone() {
            Some(a) => a,
            None => file_str("etcd_address")?.ok_or(MonError::BadOption {
                name: "--etcd_address",
                reason: "required (on the command line or in the config file)".into(),
            })?,
        };
        let endpoints = parse_etcd_address(&address)?;
        let prefix = match cli.etcd_prefix.clone().or(file_str("etcd_prefix")?) {
            Some(p) => normalize_prefix(&p)?,
            None => DEFAULT_PREFIX.to_owned(),
        };
        let port = match cli.prometheus_port {
            Some(p) => Some(p),
            None => file_u64("prometheus_port")?
                .map(|p| u16::try_from(p).map_err(|_| bad_file(&path, "prometheus_port")))
                .transpose()?,
        };
        let prometheus = match port {
            None | Some(0) => None,
            Some(port) => {
                let host = cli
                    .prometheus_address
                    .clone()
                    .unwrap_or_else(|| "0.0.0.0".to_owned());
                let ip = host.parse().map_err(|_| MonError::BadOption {
                    name: "--prometheus_address",
                    reason: format!("{host:?} is not an IP address"),
                })?;
                Some(SocketAddr::new(ip, port))
            }
        };
        Ok(MonOptions {
            endpoints,
            prefix,
            prometheus,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            overrides: Overrides {
                osd_out_time: cli.osd_out_time.or(file_u64("osd_out_time")?),
                etcd_mon_ttl: cli.etcd_mon_ttl.or(file_u64("etcd_mon_ttl")?),
                mon_change_timeout: cli.mon_change_timeout.or(file_u64("mon_change_timeout")?),
                mon_stats_interval: cli.mon_stats_interval.or(file_u64("mon_stats_interval")?),
            },
        })
    }
}

fn bad_file(path: &std::path::Path, name: &str) -> MonError {
    MonError::ConfigFile {
        path: path.display().to_string(),
        reason: format!("{name} has the wrong type"),
    }
}

fn normalize_prefix(p: &str) -> Result<String, MonError> {
    vitastor_etcd::normalize_prefix(p).map_err(|e| MonError::BadOption {
        name: "--etcd_prefix",
        reason: e.to_string(),
    })
}

/// Parses `etcd_address` (`host:port/v3`, optionally `http://`, comma-separated) into the
/// `http://host:port` URLs of the gRPC client; the `/v3` path belongs to etcd's JSON gateway.
pub fn parse_etcd_address(value: &str) -> Result<Vec<String>, MonError> {
    vitastor_etcd::EtcdAddress::parse(value)
        .map(|a| a.endpoints().to_vec())
        .map_err(|e| MonError::BadOption {
            name: "--etcd_address",
            reason: format!("{value:?}: {}", e.reason),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn etcd_address_forms() {
        assert_eq!(
            parse_etcd_address("127.0.0.1:2379/v3,http://e2:1/v3/").unwrap(),
            ["http://127.0.0.1:2379", "http://e2:1"]
        );
        for bad in ["", "a", "a:0/v3", "a:1/v2", "https://a:1", "a:1,,b:2"] {
            assert!(parse_etcd_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tunables_precedence() {
        let over = Overrides {
            osd_out_time: Some(3),
            ..Overrides::default()
        };
        let (t, notes) = Tunables::resolve(
            &over,
            &json!({"osd_out_time": 100, "etcd_mon_ttl": "x", "mon_stats_interval": 2}),
        );
        assert_eq!(t.osd_out_time, Duration::from_secs(3));
        assert_eq!(t.mon_ttl, Duration::from_secs(DEFAULT_MON_TTL));
        assert_eq!(t.stats_interval, Duration::from_secs(2));
        assert_eq!(notes.len(), 1, "{notes:?}");
        let (t, _) = Tunables::resolve(&Overrides::default(), &Value::Null);
        assert_eq!(t.osd_out_time, Duration::from_secs(DEFAULT_OSD_OUT_TIME));
    }
}
