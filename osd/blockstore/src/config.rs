//! Blockstore options: parsing from the OSD's key/value configuration (command line, config
//! file, etcd `config/global`), defaults, and validation. Immutable layout options are checked
//! against the superblock at open time by [`crate::layout`].

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::error::{BsError, BsResult};
use crate::fault::FaultPlan;

/// When writes become durable without an explicit SYNC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImmediateCommit {
    /// Every write is durable when acknowledged.
    All,
    /// Journaled (small) writes and deletes are durable when acknowledged; redirect (big)
    /// writes need a SYNC.
    Small,
    /// Nothing is durable before a SYNC (lazy fsync).
    None,
}

impl ImmediateCommit {
    /// Parse the option value used in configs and on the wire.
    pub fn parse(s: &str) -> BsResult<Self> {
        match s {
            "all" => Ok(ImmediateCommit::All),
            "small" => Ok(ImmediateCommit::Small),
            "none" | "" => Ok(ImmediateCommit::None),
            other => Err(BsError::Config(format!(
                "immediate_commit must be all, small or none, not {other:?}"
            ))),
        }
    }

    /// The option value as text.
    pub fn as_str(self) -> &'static str {
        match self {
            ImmediateCommit::All => "all",
            ImmediateCommit::Small => "small",
            ImmediateCommit::None => "none",
        }
    }
}

/// Default object size: 128 KiB, as in the original.
pub const DEFAULT_BLOCK_SIZE: u32 = 128 * 1024;
/// Default allocation-bitmap granularity.
pub const DEFAULT_BITMAP_GRANULARITY: u32 = 4096;
/// Default alignment of data and journal I/O.
pub const DEFAULT_DISK_ALIGNMENT: u32 = 4096;
/// Default journal sector size.
pub const DEFAULT_JOURNAL_BLOCK_SIZE: u32 = 4096;
/// Default metadata block size.
pub const DEFAULT_META_BLOCK_SIZE: u32 = 4096;
/// Default journal size: small journals keep replay fast and memory low; 32 MiB absorbs
/// bursts of tens of thousands of 4 KiB writes while the flusher catches up.
pub const DEFAULT_JOURNAL_SIZE: u64 = 32 << 20;
/// Largest supported object size (the original's limit).
pub const MAX_BLOCK_SIZE: u32 = 128 << 20;

/// Everything needed to open (or prepare) a blockstore.
#[derive(Clone, Debug)]
pub struct BlockstoreConfig {
    /// Device or file holding the data area.
    pub data_device: PathBuf,
    /// Device holding metadata (default: the data device).
    pub meta_device: Option<PathBuf>,
    /// Device holding the journal (default: the metadata device).
    pub journal_device: Option<PathBuf>,
    /// Byte offset of the data area on its device (checked against the superblock if given).
    pub data_offset: Option<u64>,
    /// Size of the data area.
    pub data_size: Option<u64>,
    /// Byte offset of the metadata area (the superblock lives at its start). Default 0.
    pub meta_offset: Option<u64>,
    /// Size of the metadata area.
    pub meta_size: Option<u64>,
    /// Byte offset of the journal area.
    pub journal_offset: Option<u64>,
    /// Size of the journal area.
    pub journal_size: Option<u64>,
    /// Object size (immutable).
    pub block_size: Option<u32>,
    /// Bitmap granularity (immutable).
    pub bitmap_granularity: Option<u32>,
    /// I/O alignment (immutable).
    pub disk_alignment: Option<u32>,
    /// Journal sector size (immutable).
    pub journal_block_size: Option<u32>,
    /// Metadata block size (immutable).
    pub meta_block_size: Option<u32>,
    /// Durability of acknowledged writes without SYNC.
    pub immediate_commit: ImmediateCommit,
    /// Skip fsync of the data device (only with power-loss-protected drives).
    pub disable_data_fsync: bool,
    /// Skip fsync of the metadata device.
    pub disable_meta_fsync: bool,
    /// Skip fsync of the journal device.
    pub disable_journal_fsync: bool,
    /// Never write the same journal sector twice in a row (some SSDs dislike it).
    pub journal_no_same_sector_overwrites: bool,
    /// Journal sector buffers: how many sectors may be written at once.
    pub journal_sector_buffer_count: u32,
    /// Maximum number of objects flushed in parallel.
    pub flusher_count: u32,
    /// Flushable objects that start a flush round when the journal is not under pressure
    /// (the round then flushes with `flusher_count` flushers, sharing fsyncs).
    pub flusher_batch: u32,
    /// Do not take an exclusive lock on the devices.
    pub disable_device_lock: bool,
    /// Keep a copy of the metadata area in memory (no read-modify-write when flushing).
    pub inmemory_metadata: bool,
    /// Use O_DIRECT (on by default; off only for file systems without it).
    pub direct_io: bool,
    /// Device faults to inject, for tests (option `inject_faults`, grammar in
    /// [`crate::fault`]); `None` in production.
    pub inject_faults: Option<FaultPlan>,
}

impl BlockstoreConfig {
    /// Defaults for a store on `data_device`.
    pub fn new(data_device: impl Into<PathBuf>) -> Self {
        BlockstoreConfig {
            data_device: data_device.into(),
            meta_device: None,
            journal_device: None,
            data_offset: None,
            data_size: None,
            meta_offset: None,
            meta_size: None,
            journal_offset: None,
            journal_size: None,
            block_size: None,
            bitmap_granularity: None,
            disk_alignment: None,
            journal_block_size: None,
            meta_block_size: None,
            immediate_commit: ImmediateCommit::None,
            disable_data_fsync: false,
            disable_meta_fsync: false,
            disable_journal_fsync: false,
            journal_no_same_sector_overwrites: false,
            journal_sector_buffer_count: 32,
            flusher_count: 32,
            flusher_batch: 32,
            disable_device_lock: false,
            inmemory_metadata: true,
            direct_io: true,
            inject_faults: None,
        }
    }

    /// Parse from a key/value map (values may be JSON strings, numbers or booleans, as they
    /// come from the command line, the config file or etcd). Unknown keys are ignored because
    /// the same map carries OSD and client options.
    pub fn from_map(map: &Map<String, Value>) -> BsResult<Self> {
        let data_device = str_opt(map, "data_device")?
            .ok_or_else(|| BsError::Config("data_device is required".into()))?;
        let mut c = BlockstoreConfig::new(data_device);
        c.meta_device = str_opt(map, "meta_device")?.map(PathBuf::from);
        c.journal_device = str_opt(map, "journal_device")?.map(PathBuf::from);
        c.data_offset = u64_opt(map, "data_offset")?;
        c.data_size = u64_opt(map, "data_size")?;
        c.meta_offset = u64_opt(map, "meta_offset")?;
        c.meta_size = u64_opt(map, "meta_size")?;
        c.journal_offset = u64_opt(map, "journal_offset")?;
        c.journal_size = u64_opt(map, "journal_size")?;
        c.block_size = u32_opt(map, "block_size")?;
        c.bitmap_granularity = u32_opt(map, "bitmap_granularity")?;
        c.disk_alignment = u32_opt(map, "disk_alignment")?;
        c.journal_block_size = u32_opt(map, "journal_block_size")?;
        c.meta_block_size = u32_opt(map, "meta_block_size")?;
        if let Some(s) = str_opt(map, "immediate_commit")? {
            c.immediate_commit = ImmediateCommit::parse(&s)?;
        }
        let flag = |k: &str, d: bool| bool_opt(map, k).map(|v| v.unwrap_or(d));
        c.disable_data_fsync = flag("disable_data_fsync", false)?;
        c.disable_meta_fsync = flag("disable_meta_fsync", false)?;
        c.disable_journal_fsync = flag("disable_journal_fsync", false)?;
        c.journal_no_same_sector_overwrites = flag("journal_no_same_sector_overwrites", false)?;
        c.disable_device_lock = flag("disable_device_lock", false)?;
        c.inmemory_metadata = flag("inmemory_metadata", true)?;
        c.direct_io = !flag("disable_direct_io", false)?;
        if let Some(v) = u32_opt(map, "journal_sector_buffer_count")? {
            c.journal_sector_buffer_count = v;
        }
        if let Some(v) = u32_opt(map, "flusher_count")? {
            c.flusher_count = v;
        }
        if let Some(v) = u32_opt(map, "flusher_batch")? {
            c.flusher_batch = v;
        }
        c.inject_faults = str_opt(map, "inject_faults")?
            .map(|s| s.parse::<FaultPlan>())
            .transpose()?;
        c.validate_runtime()?;
        Ok(c)
    }

    /// Checks of the options that are not part of the on-disk layout.
    pub fn validate_runtime(&self) -> BsResult<()> {
        if self.journal_sector_buffer_count < 2 {
            return Err(BsError::Config(
                "journal_sector_buffer_count must be at least 2".into(),
            ));
        }
        if self.flusher_count == 0 {
            return Err(BsError::Config("flusher_count must be at least 1".into()));
        }
        if self.flusher_batch == 0 {
            return Err(BsError::Config("flusher_batch must be at least 1".into()));
        }
        Ok(())
    }

    /// Metadata device path (defaults to the data device).
    pub fn meta_path(&self) -> PathBuf {
        self.meta_device
            .clone()
            .unwrap_or_else(|| self.data_device.clone())
    }

    /// Journal device path (defaults to the metadata device).
    pub fn journal_path(&self) -> PathBuf {
        self.journal_device
            .clone()
            .unwrap_or_else(|| self.meta_path())
    }

    /// Whether the (journal, data, metadata) areas get fsyncs. The original's rule, which
    /// its users' configurations rely on: an area on the device it defaults to follows that
    /// device's flag, so the metadata on the data device follows `disable_data_fsync` and
    /// the journal on the metadata device follows the metadata's. `disable_data_fsync` on a
    /// single device (the recommended setting for drives with power-loss protection) thus
    /// turns off every fsync of it, not only the data area's.
    pub fn fsyncs_enabled(&self) -> (bool, bool, bool) {
        let data = !self.disable_data_fsync;
        let meta = if self.meta_path() == self.data_device {
            data
        } else {
            !self.disable_meta_fsync
        };
        let journal = if self.journal_path() == self.meta_path() {
            meta
        } else {
            !self.disable_journal_fsync
        };
        (journal, data, meta)
    }
}

fn str_opt(map: &Map<String, Value>, key: &str) -> BsResult<Option<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(BsError::Config(format!("{key} must be a string, got {v}"))),
    }
}

fn u64_opt(map: &Map<String, Value>, key: &str) -> BsResult<Option<u64>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            BsError::Config(format!("{key} must be a non-negative integer, got {n}"))
        }),
        Some(Value::String(s)) => vitastor_layout::parse_size(s)
            .map(Some)
            .map_err(|e| BsError::Config(format!("{key}: {e}"))),
        Some(v) => Err(BsError::Config(format!("{key} must be a number, got {v}"))),
    }
}

fn u32_opt(map: &Map<String, Value>, key: &str) -> BsResult<Option<u32>> {
    match u64_opt(map, key)? {
        None => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| BsError::Config(format!("{key} is too large: {v}"))),
    }
}

fn bool_opt(map: &Map<String, Value>, key: &str) -> BsResult<Option<bool>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
        Some(Value::String(s)) => match s.as_str() {
            "true" | "1" | "yes" => Ok(Some(true)),
            "false" | "0" | "no" | "" => Ok(Some(false)),
            _ => Err(BsError::Config(format!(
                "{key} must be true or false, got {s:?}"
            ))),
        },
        Some(v) => Err(BsError::Config(format!(
            "{key} must be true or false, got {v}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_strings_and_numbers() {
        let m = json!({"data_device": "/tmp/x", "block_size": "128K", "journal_size": 1048576,
            "immediate_commit": "all", "disable_data_fsync": "true", "flusher_count": "8"});
        let c = BlockstoreConfig::from_map(m.as_object().unwrap()).unwrap();
        assert_eq!(c.block_size, Some(131072));
        assert_eq!(c.journal_size, Some(1 << 20));
        assert_eq!(c.immediate_commit, ImmediateCommit::All);
        assert!(c.disable_data_fsync);
        assert_eq!(c.flusher_count, 8);
        assert!(c.inject_faults.is_none());
        let m = json!({"data_device": "/tmp/x", "inject_faults": "fsync:eio:after=3"});
        let c = BlockstoreConfig::from_map(m.as_object().unwrap()).unwrap();
        assert_eq!(c.inject_faults.unwrap().to_string(), "fsync:eio:after=3");
    }

    #[test]
    fn areas_on_a_shared_device_follow_its_fsync_flag() {
        let cfg = |v: Value| BlockstoreConfig::from_map(v.as_object().unwrap()).unwrap();
        // One device: disable_data_fsync turns every fsync off, whatever the other flags say.
        let c = cfg(json!({"data_device": "/d", "disable_data_fsync": true}));
        assert_eq!(c.fsyncs_enabled(), (false, false, false));
        let c = cfg(json!({"data_device": "/d", "disable_journal_fsync": true}));
        assert_eq!(c.fsyncs_enabled(), (true, true, true));
        // Separate metadata device with the journal on it: the journal follows it.
        let c = cfg(json!({"data_device": "/d", "meta_device": "/m",
            "disable_data_fsync": true, "disable_meta_fsync": true}));
        assert_eq!(c.fsyncs_enabled(), (false, false, false));
        let c = cfg(json!({"data_device": "/d", "meta_device": "/m", "disable_data_fsync": true}));
        assert_eq!(c.fsyncs_enabled(), (true, false, true));
        // Three devices: each flag on its own.
        let c = cfg(
            json!({"data_device": "/d", "meta_device": "/m", "journal_device": "/j",
            "disable_journal_fsync": true}),
        );
        assert_eq!(c.fsyncs_enabled(), (false, true, true));
    }

    #[test]
    fn sizes_take_the_grammar_every_program_takes() {
        // The OSD's config JSON and vitastor-disk's options are one grammar: "1GiB" was
        // refused here while vitastor-cli accepted it.
        let m = json!({"data_device": "/tmp/x", "journal_size": "1GiB", "meta_offset": "0x1000",
            "data_size": "10 GB"});
        let c = BlockstoreConfig::from_map(m.as_object().unwrap()).unwrap();
        assert_eq!(c.journal_size, Some(1 << 30));
        assert_eq!(c.meta_offset, Some(4096));
        assert_eq!(c.data_size, Some(10 << 30));
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            json!({"block_size": "12Q", "data_device": "/x"}),
            json!({"data_device": "/x", "immediate_commit": "sometimes"}),
            json!({"data_device": "/x", "disable_data_fsync": "maybe"}),
            json!({"block_size": 4096}),
            json!({"data_device": "/x", "block_size": 1099511627776u64}),
            json!({"data_device": "/x", "flusher_count": 0}),
            json!({"data_device": "/x", "inject_faults": "write:sometimes"}),
        ] {
            assert!(
                BlockstoreConfig::from_map(bad.as_object().unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}
