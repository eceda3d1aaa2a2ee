//! Command-line and config-file options of the `vitastor-osd` daemon.
//!
//! The OSD's own options (`--osd_num`, `--bind_address`, `--bind_port`, `--config_path`,
//! `--etcd_address`) are typed clap options. Every blockstore option is accepted as
//! `--name value` under the name [`BlockstoreConfig::from_map`] reads, so the lines
//! `vitastor-disk prepare` prints can be pasted onto the command line unchanged; the same
//! names (and `osd_num`, `bind_address`, `bind_port`) may instead come from the JSON object in
//! `--config_path` (what `vitastor-disk prepare --write_config` writes). The command line wins
//! over the file. Values stay strings until the blockstore parses them, so size suffixes
//! (`32M`) work in both places. `etcd_address` and `etcd_prefix` that neither gives come from
//! the host's common `/etc/vitastor/vitastor.conf` (`vitastor_etcd::config_file`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use serde_json::{Map, Value};
use vitastor_blockstore::{BlockstoreConfig, BsError};
use vitastor_layout::OsdNum;

/// Blockstore option names accepted as `--name value`.
pub const BLOCKSTORE_OPTIONS: &[&str] = &[
    "data_device",
    "meta_device",
    "journal_device",
    "data_offset",
    "data_size",
    "meta_offset",
    "meta_size",
    "journal_offset",
    "journal_size",
    "block_size",
    "bitmap_granularity",
    "disk_alignment",
    "journal_block_size",
    "meta_block_size",
    "immediate_commit",
    "disable_data_fsync",
    "disable_meta_fsync",
    "disable_journal_fsync",
    "journal_no_same_sector_overwrites",
    "journal_sector_buffer_count",
    "flusher_count",
    "flusher_batch",
    "disable_device_lock",
    "inmemory_metadata",
    "disable_direct_io",
    "inject_faults",
];

/// The OSD's own options.
#[derive(Args, Debug, Clone)]
pub struct OsdArgs {
    /// This OSD's number [required here or in the config file]
    #[arg(long = "osd_num", value_name = "N")]
    pub osd_num: Option<u64>,
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long = "bind_address", value_name = "ADDR")]
    pub bind_address: Option<IpAddr>,
    /// Port to listen on; 0 picks a free one [default: 0]
    #[arg(long = "bind_port", value_name = "PORT")]
    pub bind_port: Option<u16>,
    /// JSON object of options (the OSD's and the blockstore's)
    #[arg(long = "config_path", value_name = "FILE")]
    pub config_path: Option<PathBuf>,
    /// etcd endpoints, `host:port[/v3]`, comma-separated; without it the OSD serves only
    /// secondary ops
    #[arg(long = "etcd_address", value_name = "ADDRS")]
    pub etcd_address: Option<String>,
    /// Key prefix in etcd [default: /vitastor]
    #[arg(long = "etcd_prefix", value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Seconds between lease keepalives; the lease lives 3 intervals (at least 10 s) [default: 5]
    #[arg(long = "etcd_report_interval", value_name = "SECS")]
    pub etcd_report_interval: Option<u64>,
    /// Seconds between osd/stats reports [default: 30]
    #[arg(long = "etcd_stats_interval", value_name = "SECS")]
    pub etcd_stats_interval: Option<u64>,
    /// Seconds a peer may leave a PING unanswered before it is considered lost [default: 5]
    #[arg(long = "osd_ping_timeout", value_name = "SECS")]
    pub osd_ping_timeout: Option<u64>,
    /// Seconds to connect to a peer and finish the handshake [default: 5]
    #[arg(long = "peer_connect_timeout", value_name = "SECS")]
    pub peer_connect_timeout: Option<u64>,
    /// Seconds a peer may leave a request unanswered before it is dropped from its PGs (they
    /// re-peer without it) [default: 10]
    #[arg(long = "osd_op_timeout", value_name = "SECS")]
    pub osd_op_timeout: Option<u64>,
    /// Seconds before a peer dropped for a timeout is connected again [default: 5]
    #[arg(long = "peer_connect_interval", value_name = "SECS")]
    pub peer_connect_interval: Option<u64>,
    /// Seconds after which an op in progress counts as slow (`slow_ops_*` in osd/stats) and
    /// between logs of the slow ops [default: 10]
    #[arg(long = "slow_log_interval", value_name = "SECS")]
    pub slow_log_interval: Option<u64>,
    /// Objects recovered in parallel [default: 4]
    #[arg(long = "recovery_queue_depth", value_name = "N")]
    pub recovery_queue_depth: Option<u64>,
    /// Address announced to peers and clients [default: the bind address, or 127.0.0.1]
    #[arg(long = "public_address", value_name = "ADDR")]
    pub public_address: Option<IpAddr>,
    /// Tests only: abort at `<point>:<n>` of the n-th EC write this OSD leads
    /// (`after_first_part_write`, `before_stabilize`)
    #[arg(long = "debug_ec_crash", value_name = "POINT:N", hide = true)]
    pub debug_ec_crash: Option<String>,
}

/// Everything the daemon needs to start.
#[derive(Debug, Clone)]
pub struct OsdOptions {
    /// This OSD's number.
    pub osd_num: OsdNum,
    /// Where to listen.
    pub bind: SocketAddr,
    /// `--etcd_address` as given.
    pub etcd_address: Option<String>,
    /// `--etcd_prefix`.
    pub etcd_prefix: String,
    /// Keepalive period of the etcd lease.
    pub etcd_report_interval: std::time::Duration,
    /// Period of `osd/stats`.
    pub etcd_stats_interval: std::time::Duration,
    /// Peer ping timeout.
    pub osd_ping_timeout: std::time::Duration,
    /// Peer connect timeout.
    pub peer_connect_timeout: std::time::Duration,
    /// Sub-op timeout: a peer leaving a request unanswered this long is dropped.
    pub osd_op_timeout: std::time::Duration,
    /// Hold before reconnecting a peer dropped for a timeout.
    pub peer_connect_interval: std::time::Duration,
    /// Age from which an op is slow, and the period of the slow-op log.
    pub slow_log_interval: std::time::Duration,
    /// Objects recovered in parallel.
    pub recovery_queue_depth: usize,
    /// Address announced in `osd/state`.
    pub public_address: IpAddr,
    /// The store to serve.
    pub store: BlockstoreConfig,
    /// `--debug_ec_crash` (tests only).
    pub debug_ec_crash: Option<crate::debug_crash::EcCrash>,
}

/// Why the options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The config file cannot be read.
    #[error("cannot read {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not a JSON object.
    #[error("{path} is not a JSON object of options: {why}")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// An OSD option is missing or malformed.
    #[error("{0}")]
    Invalid(String),
    /// The blockstore options are wrong.
    #[error("{0}")]
    Blockstore(#[from] BsError),
}

/// The clap command: [`OsdArgs`] plus one `--name value` option per blockstore option.
pub fn command() -> Command {
    let cmd = Command::new("vitastor-osd").about(
        "Vitastor OSD: stores data of the PGs placed on it and leads the PGs it is primary of",
    );
    let cmd = OsdArgs::augment_args(cmd);
    BLOCKSTORE_OPTIONS.iter().fold(cmd, |cmd, name| {
        cmd.arg(
            Arg::new(*name)
                .long(*name)
                .value_name("VALUE")
                .help("blockstore option (see vitastor-disk)")
                // Device fault injection is for tests only.
                .hide(*name == "inject_faults"),
        )
    })
}

/// Reads the options from parsed command-line matches (and the config file they name).
pub fn from_matches(matches: &ArgMatches) -> Result<OsdOptions, OptionsError> {
    let args =
        OsdArgs::from_arg_matches(matches).map_err(|e| OptionsError::Invalid(e.to_string()))?;
    let mut map = match &args.config_path {
        Some(path) => read_config(path)?,
        None => Map::new(),
    };
    for name in BLOCKSTORE_OPTIONS {
        if let Some(v) = matches.get_one::<String>(name) {
            map.insert((*name).to_string(), Value::String(v.clone()));
        }
    }
    let osd_num = match args.osd_num {
        Some(n) => n,
        None => map_u64(&map, "osd_num")?
            .ok_or_else(|| OptionsError::Invalid("--osd_num is required".into()))?,
    };
    if osd_num == 0 {
        return Err(OptionsError::Invalid("osd_num must be at least 1".into()));
    }
    let address = match args.bind_address {
        Some(a) => a,
        None => match map.get("bind_address") {
            None | Some(Value::Null) => IpAddr::from([127, 0, 0, 1]),
            Some(Value::String(s)) => s.parse().map_err(|_| {
                OptionsError::Invalid(format!("bind_address {s:?} is not an IP address"))
            })?,
            Some(v) => {
                return Err(OptionsError::Invalid(format!(
                    "bind_address must be a string, got {v}"
                )))
            }
        },
    };
    let port = match args.bind_port {
        Some(p) => p,
        None => match map_u64(&map, "bind_port")? {
            None => 0,
            Some(p) => u16::try_from(p)
                .map_err(|_| OptionsError::Invalid(format!("bind_port {p} is not a port")))?,
        },
    };
    let num = |arg: Option<u64>, key: &str, default: u64| -> Result<u64, OptionsError> {
        Ok(match arg {
            Some(v) => v,
            None => map_u64(&map, key)?.unwrap_or(default),
        })
    };
    let secs =
        |arg: Option<u64>, key: &str, default: u64| -> Result<std::time::Duration, OptionsError> {
            let v = num(arg, key, default)?;
            if v == 0 {
                return Err(OptionsError::Invalid(format!(
                    "{key} must be at least 1 second"
                )));
            }
            Ok(std::time::Duration::from_secs(v))
        };
    let from_osd_config = |key: &str| match map.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    // What neither names comes from the host's common file (vitastor.conf).
    let cluster = vitastor_etcd::config_file::cluster_address(
        args.etcd_address
            .or_else(|| from_osd_config("etcd_address")),
        args.etcd_prefix.or_else(|| from_osd_config("etcd_prefix")),
        None,
    )
    .map_err(|e| OptionsError::Invalid(e.to_string()))?;
    let etcd_address = cluster.etcd_address;
    let etcd_prefix = cluster
        .etcd_prefix
        .unwrap_or_else(|| crate::etcd::DEFAULT_PREFIX.to_string());
    let public_address = match args.public_address {
        Some(a) => a,
        None if address.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        None => address,
    };
    Ok(OsdOptions {
        // Typed from here on; it goes out bare only into etcd keys and the wire.
        osd_num: OsdNum(osd_num),
        bind: SocketAddr::new(address, port),
        etcd_address,
        etcd_prefix,
        etcd_report_interval: secs(args.etcd_report_interval, "etcd_report_interval", 5)?,
        etcd_stats_interval: secs(args.etcd_stats_interval, "etcd_stats_interval", 30)?,
        osd_ping_timeout: secs(args.osd_ping_timeout, "osd_ping_timeout", 5)?,
        peer_connect_timeout: secs(args.peer_connect_timeout, "peer_connect_timeout", 5)?,
        osd_op_timeout: secs(args.osd_op_timeout, "osd_op_timeout", 10)?,
        peer_connect_interval: secs(args.peer_connect_interval, "peer_connect_interval", 5)?,
        slow_log_interval: secs(args.slow_log_interval, "slow_log_interval", 10)?,
        recovery_queue_depth: num(args.recovery_queue_depth, "recovery_queue_depth", 4)?.max(1)
            as usize,
        public_address,
        store: BlockstoreConfig::from_map(&map)?,
        debug_ec_crash: args
            .debug_ec_crash
            .as_deref()
            .map(crate::debug_crash::EcCrash::parse)
            .transpose()
            .map_err(OptionsError::Invalid)?,
    })
}

/// This machine's host name (the OSD's default failure domain).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into a live buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn read_config(path: &PathBuf) -> Result<Map<String, Value>, OptionsError> {
    let text = std::fs::read_to_string(path).map_err(|source| OptionsError::ReadConfig {
        path: path.clone(),
        source,
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(OptionsError::ParseConfig {
            path: path.clone(),
            why: "not an object".into(),
        }),
        Err(e) => Err(OptionsError::ParseConfig {
            path: path.clone(),
            why: e.to_string(),
        }),
    }
}

fn map_u64(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, OptionsError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
        Some(v) => Err(OptionsError::Invalid(format!(
            "{key} must be a non-negative integer, got {v}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<OsdOptions, OptionsError> {
        let m = command()
            .try_get_matches_from(args)
            .map_err(|e| OptionsError::Invalid(e.to_string()))?;
        from_matches(&m)
    }

    /// OSD 1 on `/x` with `extra` options.
    fn parse_osd1(extra: &[&str]) -> Result<OsdOptions, OptionsError> {
        let base = ["osd", "--osd_num", "1", "--data_device", "/x"];
        parse(&[&base[..], extra].concat())
    }

    #[test]
    fn command_line_blockstore_options() {
        let o = parse(&[
            "osd",
            "--osd_num",
            "3",
            "--data_device",
            "/x",
            "--journal_size",
            "16M",
            "--bind_port",
            "7",
        ])
        .unwrap();
        assert_eq!(o.osd_num, OsdNum(3));
        assert_eq!(o.bind, "127.0.0.1:7".parse().unwrap());
        assert_eq!(o.store.journal_size, Some(16 << 20));
        assert_eq!(o.store.data_device, PathBuf::from("/x"));
    }

    #[test]
    fn config_file_and_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("osd.json");
        std::fs::write(&path, r#"{"osd_num": 5, "data_device": "/a", "block_size": 131072, "immediate_commit": "all"}"#)
            .unwrap();
        let p = path.to_str().unwrap();
        let o = parse(&["osd", "--config_path", p, "--data_device", "/b"]).unwrap();
        assert_eq!(o.osd_num, OsdNum(5));
        assert_eq!(o.store.data_device, PathBuf::from("/b"));
        assert_eq!(o.store.block_size, Some(131072));
        assert_eq!(
            o.store.immediate_commit,
            vitastor_blockstore::ImmediateCommit::All
        );
    }

    #[test]
    fn missing_or_bad_values_are_errors() {
        assert!(parse(&["osd", "--data_device", "/x"])
            .unwrap_err()
            .to_string()
            .contains("osd_num"));
        assert!(parse(&["osd", "--osd_num", "1"])
            .unwrap_err()
            .to_string()
            .contains("data_device"));
        assert!(parse_osd1(&["--immediate_commit", "maybe"]).is_err());
        assert!(parse(&["osd", "--osd_num", "0", "--data_device", "/x"]).is_err());
        assert!(parse_osd1(&["--debug_ec_crash", "soon:1"])
            .unwrap_err()
            .to_string()
            .contains("debug_ec_crash"));
    }

    #[test]
    fn the_ec_crash_hook_is_hidden_but_accepted() {
        let o = parse_osd1(&["--debug_ec_crash", "before_stabilize:2"]).unwrap();
        assert!(o.debug_ec_crash.is_some());
        let help = command().render_long_help().to_string();
        assert!(!help.contains("debug_ec_crash"), "hidden from --help");
    }

    #[test]
    fn failure_detection_timeouts_have_defaults_and_come_from_the_config_file() {
        let o = parse_osd1(&[]).unwrap();
        assert_eq!(o.osd_op_timeout, std::time::Duration::from_secs(10));
        assert_eq!(o.peer_connect_interval, std::time::Duration::from_secs(5));
        assert_eq!(o.slow_log_interval, std::time::Duration::from_secs(10));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("osd.json");
        std::fs::write(
            &path,
            r#"{"osd_num": 1, "data_device": "/a", "osd_op_timeout": 3, "slow_log_interval": 2}"#,
        )
        .unwrap();
        let o = parse(&["osd", "--config_path", path.to_str().unwrap()]).unwrap();
        assert_eq!(o.osd_op_timeout, std::time::Duration::from_secs(3));
        assert_eq!(o.slow_log_interval, std::time::Duration::from_secs(2));
        let e = parse_osd1(&["--osd_op_timeout", "0"]);
        assert!(e.unwrap_err().to_string().contains("osd_op_timeout"));
    }
}
