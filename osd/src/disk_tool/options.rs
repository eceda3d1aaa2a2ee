//! Command-line options shared by the `vitastor-disk` subcommands: where a store lives (devices
//! and the superblock offset) and its geometry, converted into the blockstore's own
//! [`BlockstoreConfig`]. Option names use underscores, like the OSD's own options, so that the
//! lines `prepare` prints can be pasted onto an OSD command line unchanged.

use std::path::{Path, PathBuf};

use clap::Args;
use vitastor_blockstore::BlockstoreConfig;
use vitastor_layout::parse_size;

/// Parse a byte count in the size grammar every program shares (`128K`, `1GiB`, `4096`…).
pub fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// Parse a byte count that must fit the 32-bit on-disk fields (block and sector sizes).
pub fn size32_arg(s: &str) -> Result<u32, String> {
    let v = size_arg(s)?;
    u32::try_from(v).map_err(|_| format!("{s} is too large for this option (at most 4G - 1)"))
}

/// Which devices hold the store and where its superblock is.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Device(s) or file(s) holding the data area, as --data_device; `prepare` lays out one
    /// OSD on each
    #[arg(
        value_name = "DEVICE",
        conflicts_with = "data_device",
        required_unless_present = "data_device"
    )]
    pub devices: Vec<PathBuf>,
    /// Device or file holding the data area
    #[arg(long = "data_device", value_name = "PATH")]
    pub data_device: Option<PathBuf>,
    /// Device holding the metadata area [default: the data device]
    #[arg(long = "meta_device", value_name = "PATH")]
    pub meta_device: Option<PathBuf>,
    /// Device holding the journal [default: the metadata device]
    #[arg(long = "journal_device", value_name = "PATH")]
    pub journal_device: Option<PathBuf>,
    /// Byte offset of the metadata area, where the superblock lives [default: 0]
    #[arg(long = "meta_offset", value_name = "SIZE", value_parser = size_arg)]
    pub meta_offset: Option<u64>,
}

/// Area placement and geometry. `prepare` lays the store out with them; the inspection
/// commands check them against the superblock, like the OSD does when it opens the store.
#[derive(Args, Debug, Clone, Default)]
pub struct GeometryArgs {
    /// Byte offset of the data area
    #[arg(long = "data_offset", value_name = "SIZE", value_parser = size_arg)]
    pub data_offset: Option<u64>,
    /// Size of the data area [default: the rest of the device]
    #[arg(long = "data_size", value_name = "SIZE", value_parser = size_arg)]
    pub data_size: Option<u64>,
    /// Size of the metadata area [default: what the data area needs]
    #[arg(long = "meta_size", value_name = "SIZE", value_parser = size_arg)]
    pub meta_size: Option<u64>,
    /// Byte offset of the journal area
    #[arg(long = "journal_offset", value_name = "SIZE", value_parser = size_arg)]
    pub journal_offset: Option<u64>,
    /// Size of the journal area [default: 32M]
    #[arg(long = "journal_size", value_name = "SIZE", value_parser = size_arg)]
    pub journal_size: Option<u64>,
    /// Object size [default: 128K]
    #[arg(long = "block_size", value_name = "SIZE", value_parser = size32_arg)]
    pub block_size: Option<u32>,
    /// Allocation bitmap granularity [default: 4K]
    #[arg(long = "bitmap_granularity", value_name = "SIZE", value_parser = size32_arg)]
    pub bitmap_granularity: Option<u32>,
    /// Alignment of data and journal I/O [default: 4K]
    #[arg(long = "disk_alignment", value_name = "SIZE", value_parser = size32_arg)]
    pub disk_alignment: Option<u32>,
    /// Journal sector size [default: 4K]
    #[arg(long = "journal_block_size", value_name = "SIZE", value_parser = size32_arg)]
    pub journal_block_size: Option<u32>,
    /// Metadata block size [default: 4K]
    #[arg(long = "meta_block_size", value_name = "SIZE", value_parser = size32_arg)]
    pub meta_block_size: Option<u32>,
}

impl DeviceArgs {
    /// The data devices named, positionally or by --data_device. Separate metadata or
    /// journal devices belong to one store, so they allow only one data device.
    pub fn data_devices(&self) -> Result<Vec<PathBuf>, String> {
        let list = match &self.data_device {
            Some(d) => vec![d.clone()],
            None => self.devices.clone(),
        };
        if list.is_empty() {
            return Err("no device given (DEVICE or --data_device)".into());
        }
        if list.len() > 1 && (self.meta_device.is_some() || self.journal_device.is_some()) {
            return Err(
                "--meta_device and --journal_device belong to one store: give one data device"
                    .into(),
            );
        }
        Ok(list)
    }

    /// The one data device of a command that works on one store.
    pub fn single(&self) -> Result<PathBuf, String> {
        let mut list = self.data_devices()?;
        if list.len() > 1 {
            return Err(format!(
                "this command takes one device, {} given",
                list.len()
            ));
        }
        Ok(list.remove(0))
    }
}

/// The blockstore configuration of the store on `data_device` with these options.
pub fn store_config(data_device: &Path, dev: &DeviceArgs, geo: &GeometryArgs) -> BlockstoreConfig {
    let mut c = BlockstoreConfig::new(data_device);
    c.meta_device = dev.meta_device.clone();
    c.journal_device = dev.journal_device.clone();
    c.meta_offset = dev.meta_offset;
    c.data_offset = geo.data_offset;
    c.data_size = geo.data_size;
    c.meta_size = geo.meta_size;
    c.journal_offset = geo.journal_offset;
    c.journal_size = geo.journal_size;
    c.block_size = geo.block_size;
    c.bitmap_granularity = geo.bitmap_granularity;
    c.disk_alignment = geo.disk_alignment;
    c.journal_block_size = geo.journal_block_size;
    c.meta_block_size = geo.meta_block_size;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_suffixes_and_reject_overflow() {
        assert_eq!(size_arg("128K"), Ok(131072));
        assert_eq!(size32_arg("1M"), Ok(1 << 20));
        assert!(size32_arg("4G").is_err());
        assert!(size_arg("12Q").is_err());
    }

    /// The same grammar as every other program's sizes (`vitastor-cli create -s 1GiB`).
    #[test]
    fn sizes_take_every_spelling_the_cli_takes() {
        for (text, want) in [
            ("1GiB", 1u64 << 30),
            ("1GB", 1 << 30),
            ("32MiB", 32 << 20),
            ("512kb", 512 << 10),
            ("4096", 4096),
            ("0x1000", 4096),
        ] {
            assert_eq!(size_arg(text), Ok(want), "{text}");
        }
        assert_eq!(size32_arg("128KiB"), Ok(128 << 10));
    }
}
