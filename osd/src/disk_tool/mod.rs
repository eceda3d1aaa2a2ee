//! `vitastor-disk`: the operator tool that lays out OSD stores (`prepare`: the store, an OSD
//! number from etcd, the OSD's config file, its systemd unit enabled), lists and purges them,
//! and inspects them (`read-sb`, `dump-journal`, `dump-meta`). This module owns the command
//! line and the output formats; the layout work is the blockstore's, and inspection only reads
//! devices.

pub mod inspect;
pub mod options;
pub mod osd_configs;
pub mod osd_number;
pub mod prepare;
pub mod systemd;

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use vitastor_blockstore::layout::FORMAT_VERSION;
use vitastor_blockstore::BsError;

use inspect::{kind_name, JournalRow, MetaSlot, Store};
use options::{size_arg, store_config, DeviceArgs, GeometryArgs};

/// Everything that makes a command fail; printed once on stderr by the binary.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The blockstore refused (bad layout, mismatching options, device errors).
    #[error(transparent)]
    Store(#[from] BsError),
    /// A device or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The store or the request is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// etcd refused or did not answer.
    #[error(transparent)]
    Etcd(#[from] vitastor_etcd::CallError),
    /// Standard output went away (a closed pipe) or failed. Bare `io::Error`s convert to this
    /// one because only writes to the output use `?` on them; device errors carry context.
    #[error("write to stdout: {0}")]
    Output(#[from] io::Error),
}

impl ToolError {
    fn io(what: impl Into<String>, source: io::Error) -> Self {
        ToolError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Prepare and inspect vitastor-rs OSD stores.
#[derive(Parser, Debug)]
#[command(
    name = "vitastor-disk",
    version,
    about = "Prepare and inspect vitastor-rs OSD stores",
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Lay out a new OSD store on each device, reserve its OSD number in etcd (when an etcd
    /// address is known), write its config and enable its systemd unit
    Prepare(PrepareArgs),
    /// The OSD configs in the config directory and the state of their devices
    List(ListArgs),
    /// Erase the store of a stopped OSD (refused while it is up in etcd or holds its
    /// devices), disable its unit and remove its config
    Purge(PurgeArgs),
    /// Print the superblock (geometry, uuid, format version)
    ReadSb(InspectArgs),
    /// Decode the journal read-only and print the entries replay would apply
    DumpJournal(JournalArgs),
    /// Print every used metadata entry; corrupted entries make the command fail
    DumpMeta(InspectArgs),
}

/// Options of `prepare`.
#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(flatten)]
    geo: GeometryArgs,
    /// Create the data device as a regular file of this size (its blocks reserved on the host
    /// file system, nothing written), or grow a smaller one
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    size: Option<u64>,
    /// Write zeros over every block of a file-backed store that was never written (holes and
    /// reserved blocks; what the file reads is unchanged), so that no first write pays the
    /// host file system's extent conversion or a thin disk's allocation. Takes as long as
    /// writing the file out; block devices are left alone
    #[arg(long)]
    fill: bool,
    /// Overwrite an existing store
    #[arg(long)]
    force: bool,
    /// Print the OSD options as a JSON object instead of --key value lines
    #[arg(long)]
    json: bool,
    /// Write the OSD options to this file as a JSON config instead of CONFIG_DIR/osd<N>.json:
    /// a store run by hand, for which no OSD number is reserved and no unit enabled
    #[arg(long = "write_config", value_name = "PATH")]
    write_config: Option<PathBuf>,
    /// Use this OSD number instead of reserving one in etcd
    #[arg(long = "osd_num", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    osd_num: Option<u64>,
    /// Address the OSD listens on, written to its config [OSD default: 127.0.0.1]
    #[arg(long = "bind_address", value_name = "ADDR")]
    bind_address: Option<std::net::IpAddr>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Do not enable vitastor-osd@<N>.service
    #[arg(long = "no-systemd", alias = "no_systemd")]
    no_systemd: bool,
}

/// Which cluster and where the host's configs live.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// etcd endpoints [default: etcd_address of vitastor.conf]
    #[arg(long = "etcd_address", value_name = "ADDRS")]
    etcd_address: Option<String>,
    /// Key prefix in etcd [default: etcd_prefix of vitastor.conf, else /vitastor]
    #[arg(long = "etcd_prefix", value_name = "PREFIX")]
    etcd_prefix: Option<String>,
    /// Directory of the OSD configs osd<N>.json [default: the directory of vitastor.conf,
    /// /etc/vitastor, or of $VITASTOR_CONFIG_PATH]
    #[arg(long = "config_dir", value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

impl ClusterArgs {
    fn config_dir(&self) -> PathBuf {
        self.config_dir.clone().unwrap_or_else(|| {
            let conf = vitastor_etcd::config_file::default_config_path();
            conf.parent().map(PathBuf::from).unwrap_or_default()
        })
    }

    /// (etcd_address, etcd_prefix) from the options, then vitastor.conf.
    fn address(&self) -> Result<(Option<String>, String), ToolError> {
        let a = vitastor_etcd::config_file::cluster_address(
            self.etcd_address.clone(),
            self.etcd_prefix.clone(),
            None,
        )
        .map_err(|e| ToolError::Invalid(e.to_string()))?;
        let prefix = a
            .etcd_prefix
            .unwrap_or_else(|| vitastor_layout::keys::DEFAULT_PREFIX.to_string());
        Ok((a.etcd_address, prefix))
    }
}

/// Options of `list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Options of `purge`.
#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// The OSD's data device, as its config names it
    #[arg(value_name = "DEVICE")]
    device: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Do not disable vitastor-osd@<N>.service
    #[arg(long = "no-systemd", alias = "no_systemd")]
    no_systemd: bool,
}

/// Options of the read-only commands.
#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(flatten)]
    geo: GeometryArgs,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Options of `dump-journal`.
#[derive(Args, Debug)]
pub struct JournalArgs {
    #[command(flatten)]
    inspect: InspectArgs,
    /// Also print entries left in journal sectors that replay does not reach
    #[arg(long)]
    all: bool,
}

/// Run one command, printing its result to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), ToolError> {
    match &cli.command {
        Command::Prepare(a) => run_prepare(a, out),
        Command::List(a) => list(a, out),
        Command::Purge(a) => purge(a, out),
        Command::ReadSb(a) => read_sb(a, out),
        Command::DumpJournal(a) => dump_journal(a, out),
        Command::DumpMeta(a) => dump_meta(a, out),
    }
}

fn run_prepare(a: &PrepareArgs, out: &mut dyn Write) -> Result<(), ToolError> {
    let devices = a.dev.data_devices().map_err(ToolError::Invalid)?;
    if devices.len() > 1 && (a.write_config.is_some() || a.osd_num.is_some()) {
        return Err(ToolError::Invalid(
            "--write_config and --osd_num name one OSD: give one device".into(),
        ));
    }
    let (etcd_address, etcd_prefix) = a.cluster.address()?;
    for dev in &devices {
        prepare_one(a, dev, etcd_address.as_deref(), &etcd_prefix, out)?;
    }
    Ok(())
}

fn prepare_one(
    a: &PrepareArgs,
    dev: &std::path::Path,
    etcd_address: Option<&str>,
    etcd_prefix: &str,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    let cfg = store_config(dev, &a.dev, &a.geo);
    if let Some(size) = a.size {
        prepare::ensure_file_size(&cfg.data_device, size)?;
    }
    let layout = prepare::prepare(&cfg, a.force)?;
    prepare::materialize_areas(&cfg, &layout)?;
    if a.fill {
        prepare::fill_unwritten(&cfg)?;
    }
    let mut opts = prepare::osd_options(&cfg, &layout)?;
    // After the layout, which is what fails on a wrong device: a reserved number whose
    // store never came to be would stay in the cluster as a down OSD.
    let osd_num = match (a.osd_num, &a.write_config, etcd_address) {
        (Some(n), _, _) => Some(n),
        (None, None, Some(address)) => {
            Some(osd_number::allocate(address, etcd_prefix).map_err(|e| {
                ToolError::Invalid(format!(
                    "{} is prepared, but no OSD number was reserved: {e}",
                    dev.display()
                ))
            })?)
        }
        _ => None,
    };
    if let Some(n) = osd_num {
        opts.insert(0, ("osd_num", n.into()));
    }
    if let Some(b) = a.bind_address {
        opts.push(("bind_address", b.to_string().into()));
    }
    // Only what the command line said: otherwise the OSD reads vitastor.conf like every
    // other program, and a changed etcd address needs one file edited, not every OSD's.
    if let Some(e) = &a.cluster.etcd_address {
        opts.push(("etcd_address", e.clone().into()));
    }
    if let Some(p) = &a.cluster.etcd_prefix {
        opts.push(("etcd_prefix", p.clone().into()));
    }
    let obj = prepare::options_object(&opts);
    let config_path = a
        .write_config
        .clone()
        .or_else(|| osd_num.map(|n| osd_configs::config_path(&a.cluster.config_dir(), n)));
    if let Some(path) = &config_path {
        let text =
            serde_json::to_string_pretty(&obj).expect("a JSON value always serializes") + "\n";
        std::fs::write(path, text).map_err(|e| {
            ToolError::io(
                format!(
                    "the store is prepared, but writing the config {} failed",
                    path.display()
                ),
                e,
            )
        })?;
    }
    // The unit starts the OSD from CONFIG_DIR/osd<N>.json, so only a store configured there
    // gets one.
    if let (Some(n), None, false) = (osd_num, &a.write_config, a.no_systemd) {
        systemd::set_enabled(n, true)?;
    }
    if a.json {
        writeln!(out, "{obj:#}")?;
    } else {
        out.write_all(prepare::options_lines(&opts).as_bytes())?;
    }
    Ok(())
}

fn list(a: &ListArgs, out: &mut dyn Write) -> Result<(), ToolError> {
    let dir = a.cluster.config_dir();
    let osds = osd_configs::scan(&dir)?;
    let rows: Vec<Value> = osds
        .iter()
        .map(|o| {
            let store = Store::open(&o.store).map(|_| ()).map_err(|e| e.to_string());
            json!({
                "osd_num": o.osd_num,
                "config": o.path.display().to_string(),
                "data_device": o.store.data_device.display().to_string(),
                "meta_device": o.store.meta_path().display().to_string(),
                "journal_device": o.store.journal_path().display().to_string(),
                "store": match &store { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
            })
        })
        .collect();
    if a.json {
        writeln!(out, "{}", Value::Array(rows))?;
        return Ok(());
    }
    for r in &rows {
        writeln!(
            out,
            "osd {:<5} {:<30} store {}",
            r["osd_num"],
            r["data_device"].as_str().unwrap_or_default(),
            r["store"].as_str().unwrap_or_default()
        )?;
    }
    Ok(())
}

fn purge(a: &PurgeArgs, out: &mut dyn Write) -> Result<(), ToolError> {
    let dir = a.cluster.config_dir();
    let osd = osd_configs::find_by_device(&dir, &a.device)?;
    let (etcd_address, etcd_prefix) = a.cluster.address()?;
    if let Some(address) = etcd_address {
        if osd_number::is_up(&address, &etcd_prefix, osd.osd_num)? {
            return Err(ToolError::Invalid(format!(
                "OSD {} is up (it holds osd/state in etcd); stop it first: systemctl stop {}",
                osd.osd_num,
                systemd::osd_unit(osd.osd_num)
            )));
        }
    }
    if !a.no_systemd {
        systemd::set_enabled(osd.osd_num, false)?;
    }
    osd_configs::erase_superblocks(&osd)?;
    std::fs::remove_file(&osd.path)
        .map_err(|e| ToolError::io(format!("remove {}", osd.path.display()), e))?;
    writeln!(
        out,
        "OSD {} purged: its store on {} is erased and {} removed; remove it from the cluster \
         with: vitastor-cli rm-osd {}",
        osd.osd_num,
        osd.store.data_device.display(),
        osd.path.display(),
        osd.osd_num
    )?;
    Ok(())
}

fn open_store(a: &InspectArgs) -> Result<Store, ToolError> {
    let dev = a.dev.single().map_err(ToolError::Invalid)?;
    Store::open(&store_config(&dev, &a.dev, &a.geo))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn read_sb(a: &InspectArgs, out: &mut dyn Write) -> Result<(), ToolError> {
    let s = open_store(a)?;
    let l = &s.layout;
    let data_copy = match &s.data_copy {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("damaged: {e}"),
    };
    let rows: Vec<(&str, Value)> = vec![
        ("uuid", hex(&l.uuid).into()),
        ("format_version", FORMAT_VERSION.into()),
        ("data_device", s.data_path().display().to_string().into()),
        ("meta_device", s.meta_path().display().to_string().into()),
        (
            "journal_device",
            s.journal_path().display().to_string().into(),
        ),
        ("block_size", l.block_size.into()),
        ("bitmap_granularity", l.bitmap_granularity.into()),
        ("disk_alignment", l.disk_alignment.into()),
        ("journal_block_size", l.journal_block_size.into()),
        ("meta_block_size", l.meta_block_size.into()),
        ("data_offset", l.data.offset.into()),
        ("data_size", l.data.size.into()),
        ("meta_offset", l.meta.offset.into()),
        ("meta_size", l.meta.size.into()),
        ("journal_offset", l.journal.offset.into()),
        ("journal_size", l.journal.size.into()),
        // Including block 0, which holds the superblock copy instead of an object.
        ("data_blocks", l.data_blocks().into()),
        ("meta_entry_size", l.meta_entry_size().into()),
        ("data_superblock", data_copy.into()),
    ];
    if a.json {
        let obj: serde_json::Map<String, Value> =
            rows.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        writeln!(out, "{:#}", Value::Object(obj))?;
    } else {
        for (k, v) in rows {
            match v {
                Value::String(s) => writeln!(out, "{k:<20} {s}")?,
                v => writeln!(out, "{k:<20} {v}")?,
            }
        }
    }
    s.data_copy
        .map_err(|e| ToolError::Invalid(format!("data area superblock copy: {e}")))
}

fn journal_row_json(r: &JournalRow) -> Value {
    json!({
        "seq": r.seq,
        "epoch": r.epoch,
        "kind": kind_name(r.kind),
        "inode": format!("{:#x}", r.inode),
        "stripe": format!("{:#x}", r.stripe),
        "version": r.version,
        "offset": r.offset,
        "len": r.len,
        "loc": r.loc,
        "stable": r.stable,
        "pending": r.pending,
        "bitmap": hex(&r.bitmap),
        "ext_bitmap": hex(&r.attr),
        "sector": r.sector_pos,
        "live": r.live,
    })
}

fn journal_row_text(r: &JournalRow) -> String {
    use vitastor_blockstore::journal::Kind;
    let mut s = format!(
        "seq={} epoch={} sector={} {} {:#x}:{:#x} v={}",
        r.seq,
        r.epoch,
        r.sector_pos,
        kind_name(r.kind),
        r.inode,
        r.stripe,
        r.version
    );
    match r.kind {
        Kind::SmallWrite => s.push_str(&format!(
            " off={} len={} loc=journal:{} bitmap={} ext_bitmap={}",
            r.offset,
            r.len,
            r.loc,
            hex(&r.bitmap),
            hex(&r.attr)
        )),
        Kind::BigWrite => s.push_str(&format!(
            " off={} len={} loc=block:{} bitmap={} ext_bitmap={}",
            r.offset,
            r.len,
            r.loc,
            hex(&r.bitmap),
            hex(&r.attr)
        )),
        _ => {}
    }
    if r.stable {
        s.push_str(" stable");
    }
    if r.pending {
        s.push_str(" pending");
    }
    s
}

fn dump_journal(a: &JournalArgs, out: &mut dyn Write) -> Result<(), ToolError> {
    let s = open_store(&a.inspect)?;
    let d = s.dump_journal(a.all)?;
    let h = &d.header;
    if a.inspect.json {
        // One entry per line: a full journal holds thousands of them.
        let list = |rows: &[JournalRow]| {
            rows.iter()
                .map(|r| format!("\n{}", journal_row_json(r)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let header = json!({"start": h.start, "start_seq": h.start_seq, "epoch": h.epoch, "uuid": hex(&h.uuid)});
        write!(
            out,
            "{{\"header\":{header},\n\"entries\":[{}\n],",
            list(&d.entries)
        )?;
        if a.all {
            write!(out, "\n\"stale\":[{}\n],", list(&d.stale))?;
        }
        let summary = json!({"entries": d.entries.len(), "sectors": d.sectors, "log_end": d.log_end, "next_seq": d.next_seq});
        writeln!(out, "\n\"summary\":{summary}}}")?;
        return Ok(());
    }
    writeln!(
        out,
        "journal header: start={} start_seq={} epoch={}",
        h.start, h.start_seq, h.epoch
    )?;
    for r in &d.entries {
        writeln!(out, "{}", journal_row_text(r))?;
    }
    if a.all {
        writeln!(
            out,
            "not replayed ({} entries left in other sectors):",
            d.stale.len()
        )?;
        for r in &d.stale {
            writeln!(out, "  {}", journal_row_text(r))?;
        }
    }
    writeln!(
        out,
        "{} entries in {} sectors; the log ends at journal offset {} (next seq {})",
        d.entries.len(),
        d.sectors,
        d.log_end,
        d.next_seq
    )?;
    Ok(())
}

fn dump_meta(a: &InspectArgs, out: &mut dyn Write) -> Result<(), ToolError> {
    let s = open_store(a)?;
    let mut count = 0u64;
    let mut corrupted = Vec::new();
    if a.json {
        // Streamed: a large OSD has millions of entries.
        write!(out, "{{\"entries\":[")?;
    }
    let blocks = s.dump_meta(|slot| {
        match slot {
            MetaSlot::Entry(r) if a.json => {
                let v = json!({"block": r.block, "inode": format!("{:#x}", r.inode), "stripe": format!("{:#x}", r.stripe),
                    "version": r.version, "bitmap": hex(&r.bitmap), "ext_bitmap": hex(&r.attr)});
                write!(out, "{}\n{v}", if count == 0 { "" } else { "," })?;
                count += 1;
            }
            MetaSlot::Entry(r) => {
                writeln!(
                    out,
                    "block={} inode={:#x} stripe={:#x} version={} bitmap={} ext_bitmap={}",
                    r.block,
                    r.inode,
                    r.stripe,
                    r.version,
                    hex(&r.bitmap),
                    hex(&r.attr)
                )?;
                count += 1;
            }
            MetaSlot::Corrupted { block } => {
                if !a.json {
                    writeln!(out, "block={block} CORRUPTED (checksum mismatch)")?;
                }
                corrupted.push(block);
            }
        }
        Ok(())
    })?;
    if a.json {
        writeln!(
            out,
            "\n],\"count\":{count},\"corrupted\":{},\"data_blocks\":{blocks}}}",
            json!(corrupted)
        )?;
    } else {
        writeln!(
            out,
            "{count} entries, {} corrupted, {blocks} data blocks",
            corrupted.len()
        )?;
    }
    if corrupted.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 10;
    let list: Vec<String> = corrupted
        .iter()
        .take(SHOWN)
        .map(|b| b.to_string())
        .collect();
    let more = if corrupted.len() > SHOWN { ", ..." } else { "" };
    Err(ToolError::Invalid(format!(
        "{} corrupted metadata entries (checksum mismatch) for data blocks {}{more}; the OSD will refuse to open this store",
        corrupted.len(),
        list.join(", ")
    )))
}
