//! `vitastor-disk`: the operator tool that lays out OSD stores (`prepare`) and inspects them
//! (`read-sb`, `dump-journal`, `dump-meta`). This module owns the command line and the output
//! formats; the layout work is the blockstore's, and inspection only reads devices.

pub mod inspect;
pub mod options;
pub mod prepare;

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
    /// Lay out a new OSD store and print the OSD options that open it
    Prepare(PrepareArgs),
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
    /// Create the data device as a sparse regular file of this size, or grow a smaller one
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    size: Option<u64>,
    /// Overwrite an existing store
    #[arg(long)]
    force: bool,
    /// Print the OSD options as a JSON object instead of --key value lines
    #[arg(long)]
    json: bool,
    /// Also write the OSD options to this file as a JSON config
    #[arg(long = "write_config", value_name = "PATH")]
    write_config: Option<PathBuf>,
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
        Command::ReadSb(a) => read_sb(a, out),
        Command::DumpJournal(a) => dump_journal(a, out),
        Command::DumpMeta(a) => dump_meta(a, out),
    }
}

fn run_prepare(a: &PrepareArgs, out: &mut dyn Write) -> Result<(), ToolError> {
    let cfg = store_config(&a.dev, &a.geo);
    if let Some(size) = a.size {
        prepare::ensure_file_size(&cfg.data_device, size)?;
    }
    let layout = prepare::prepare(&cfg, a.force)?;
    prepare::materialize_areas(&cfg, &layout)?;
    let opts = prepare::osd_options(&cfg, &layout)?;
    let obj = prepare::options_object(&opts);
    if let Some(path) = &a.write_config {
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
    if a.json {
        writeln!(out, "{obj:#}")?;
    } else {
        out.write_all(prepare::options_lines(&opts).as_bytes())?;
    }
    Ok(())
}

fn open_store(a: &InspectArgs) -> Result<Store, ToolError> {
    Store::open(&store_config(&a.dev, &a.geo))
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
            " off={} len={} loc=journal:{}",
            r.offset, r.len, r.loc
        )),
        Kind::BigWrite => s.push_str(&format!(
            " off={} len={} loc=block:{}",
            r.offset, r.len, r.loc
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
                    "version": r.version, "bitmap": hex(&r.bitmap)});
                write!(out, "{}\n{v}", if count == 0 { "" } else { "," })?;
                count += 1;
            }
            MetaSlot::Entry(r) => {
                writeln!(
                    out,
                    "block={} inode={:#x} stripe={:#x} version={} bitmap={}",
                    r.block,
                    r.inode,
                    r.stripe,
                    r.version,
                    hex(&r.bitmap)
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
