//! On-disk layout: the superblock, the journal header and the metadata entry format, plus the
//! geometry computed by `prepare`. Every record carries a CRC32C; nothing here trusts a length
//! or offset read from disk before checking it against the device size.
//!
//! Areas (each on any device, at any offset):
//! - metadata: block 0 is the superblock; then `meta_block_size` blocks of fixed-size entries,
//!   one entry per data block (entry `i` describes data block `i`).
//! - journal: block 0 is the journal header (start pointer, sequence, epoch); the rest is a
//!   circular log of entry sectors and small-write data.
//! - data: block 0 holds a copy of the superblock (so a data device on its own can be
//!   identified); blocks `1..` hold objects.
//!
//! A metadata entry (`inode, stripe, version, crc32c`, the allocation bitmap, the external
//! bitmap) is a power of two no larger than 512 bytes and never straddles a 512-byte sector,
//! so a torn metadata write leaves every entry either old or new, never mixed.

use crate::bitmap::bitmap_bytes;
use crate::config::*;
use crate::error::{BsError, BsResult};

/// Format version written by this build; older or newer layouts are refused. Version 2 keeps
/// an external bitmap beside the allocation bitmap in every journal write entry and metadata
/// entry; version 1 had only the allocation bitmap.
pub const FORMAT_VERSION: u32 = 2;
const SB_MAGIC: &[u8; 8] = b"VITRSBLK";
const JH_MAGIC: &[u8; 8] = b"VITRSJRN";
/// Bytes of the superblock and journal header records (the rest of their block is zero).
pub const HEADER_BYTES: usize = 512;
/// Which copy of the superblock a block holds.
const AREA_META: u32 = 1;
const AREA_DATA: u32 = 2;

/// Placement of one area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    /// Byte offset on its device.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The immutable geometry of an OSD's storage, as recorded in the superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Random identity shared by all three areas.
    pub uuid: [u8; 16],
    /// Object size.
    pub block_size: u32,
    /// Bitmap granularity.
    pub bitmap_granularity: u32,
    /// I/O alignment.
    pub disk_alignment: u32,
    /// Journal sector size.
    pub journal_block_size: u32,
    /// Metadata block size.
    pub meta_block_size: u32,
    /// Data area.
    pub data: Area,
    /// Metadata area (superblock first).
    pub meta: Area,
    /// Journal area (header first).
    pub journal: Area,
}

impl Layout {
    /// Bytes of one allocation bitmap.
    pub fn bitmap_bytes(&self) -> usize {
        bitmap_bytes(self.block_size, self.bitmap_granularity)
    }

    /// Size of one metadata entry.
    pub fn meta_entry_size(&self) -> usize {
        meta_entry_size(self.bitmap_bytes())
    }

    /// Entries per metadata block.
    pub fn entries_per_meta_block(&self) -> u64 {
        (self.meta_block_size as usize / self.meta_entry_size()) as u64
    }

    /// Number of data blocks (block 0 is reserved for the superblock copy).
    pub fn data_blocks(&self) -> u64 {
        self.data.size / self.block_size as u64
    }

    /// Byte offset (on the data device) of data block `b`.
    pub fn block_offset(&self, b: u64) -> u64 {
        self.data.offset + b * self.block_size as u64
    }

    /// Metadata block index (0 = superblock) and byte offset inside it for data block `b`.
    pub fn meta_pos(&self, b: u64) -> (u64, usize) {
        let per = self.entries_per_meta_block();
        (1 + b / per, (b % per) as usize * self.meta_entry_size())
    }

    /// Encode the superblock for one area.
    fn encode_sb(&self, area: u32) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(SB_MAGIC);
        put32(&mut b, 8, FORMAT_VERSION);
        b[16..32].copy_from_slice(&self.uuid);
        put32(&mut b, 32, self.block_size);
        put32(&mut b, 36, self.bitmap_granularity);
        put32(&mut b, 40, self.disk_alignment);
        put32(&mut b, 44, self.journal_block_size);
        put32(&mut b, 48, self.meta_block_size);
        put32(&mut b, 52, area);
        put64(&mut b, 56, self.data.offset);
        put64(&mut b, 64, self.data.size);
        put64(&mut b, 72, self.meta.offset);
        put64(&mut b, 80, self.meta.size);
        put64(&mut b, 88, self.journal.offset);
        put64(&mut b, 96, self.journal.size);
        let crc = crc32c::crc32c(&b);
        put32(&mut b, 12, crc);
        b
    }

    /// The superblock as stored at the start of the metadata area.
    pub fn meta_superblock(&self) -> Vec<u8> {
        self.encode_sb(AREA_META)
    }

    /// The superblock copy stored at the start of the data area.
    pub fn data_superblock(&self) -> Vec<u8> {
        self.encode_sb(AREA_DATA)
    }

    /// Decode a superblock; `expect_area` tells which copy this should be.
    pub fn decode_sb(b: &[u8], expect_data_copy: bool) -> BsResult<Layout> {
        if b.len() < HEADER_BYTES || &b[0..8] != SB_MAGIC {
            return Err(BsError::Layout(
                "no vitastor-rs superblock (run `vitastor-disk prepare` first)".into(),
            ));
        }
        let version = get32(b, 8);
        if version < FORMAT_VERSION {
            return Err(BsError::Layout(format!(
                "on-disk format version {version} was written by an older build; this build \
                 reads only format {FORMAT_VERSION} (entries with an external bitmap): move the \
                 data off this OSD and prepare it again"
            )));
        }
        if version != FORMAT_VERSION {
            return Err(BsError::Layout(format!(
                "on-disk format version {version} is not supported by this build (expects {FORMAT_VERSION})"
            )));
        }
        let mut copy = b[..HEADER_BYTES].to_vec();
        put32(&mut copy, 12, 0);
        if crc32c::crc32c(&copy) != get32(b, 12) {
            return Err(BsError::Layout(
                "superblock checksum mismatch (corrupted superblock)".into(),
            ));
        }
        let area = get32(b, 52);
        let want = if expect_data_copy {
            AREA_DATA
        } else {
            AREA_META
        };
        if area != want {
            return Err(BsError::Layout(format!(
                "found the superblock copy of the {} area where the {} area should start (devices or offsets swapped?)",
                if area == AREA_DATA { "data" } else { "metadata" },
                if expect_data_copy { "data" } else { "metadata" }
            )));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let l = Layout {
            uuid,
            block_size: get32(b, 32),
            bitmap_granularity: get32(b, 36),
            disk_alignment: get32(b, 40),
            journal_block_size: get32(b, 44),
            meta_block_size: get32(b, 48),
            data: Area {
                offset: get64(b, 56),
                size: get64(b, 64),
            },
            meta: Area {
                offset: get64(b, 72),
                size: get64(b, 80),
            },
            journal: Area {
                offset: get64(b, 88),
                size: get64(b, 96),
            },
        };
        l.validate().map_err(|e| {
            BsError::Layout(format!("superblock describes an impossible layout: {e}"))
        })?;
        Ok(l)
    }

    /// Internal consistency of the geometry.
    pub fn validate(&self) -> Result<(), String> {
        let pow2 = |v: u32| v != 0 && v.is_power_of_two();
        if !pow2(self.disk_alignment) || self.disk_alignment < 512 {
            return Err(format!(
                "disk_alignment {} must be a power of two >= 512",
                self.disk_alignment
            ));
        }
        if !pow2(self.journal_block_size)
            || self.journal_block_size < 512
            || self.journal_block_size > 1 << 20
        {
            return Err(format!(
                "journal_block_size {} must be a power of two in 512..1M",
                self.journal_block_size
            ));
        }
        if !pow2(self.meta_block_size)
            || self.meta_block_size < 512
            || self.meta_block_size > 1 << 20
        {
            return Err(format!(
                "meta_block_size {} must be a power of two in 512..1M",
                self.meta_block_size
            ));
        }
        if !pow2(self.bitmap_granularity)
            || !self.bitmap_granularity.is_multiple_of(self.disk_alignment)
        {
            return Err(format!(
                "bitmap_granularity {} must be a power of two and a multiple of disk_alignment {}",
                self.bitmap_granularity, self.disk_alignment
            ));
        }
        if !pow2(self.block_size)
            || self.block_size > MAX_BLOCK_SIZE
            || self.block_size < self.bitmap_granularity
        {
            return Err(format!(
                "block_size {} must be a power of two between bitmap_granularity and {MAX_BLOCK_SIZE}",
                self.block_size
            ));
        }
        if !self.journal_block_size.is_multiple_of(self.disk_alignment)
            && !self.disk_alignment.is_multiple_of(self.journal_block_size)
        {
            return Err("journal_block_size and disk_alignment must divide one another".into());
        }
        if !self
            .bitmap_granularity
            .is_multiple_of(self.journal_block_size)
        {
            return Err("bitmap_granularity must be a multiple of journal_block_size".into());
        }
        if self.meta_entry_size() > 512
            || self.meta_entry_size() > self.meta_block_size as usize
            || crate::journal::entry_size(crate::journal::Kind::SmallWrite, self.bitmap_bytes())
                > self.journal_block_size as usize
        {
            return Err(format!(
                "block_size / bitmap_granularity = {} granules makes metadata or journal entries too large",
                self.block_size / self.bitmap_granularity
            ));
        }
        for (name, a, align) in [
            ("data", self.data, self.block_size as u64),
            ("meta", self.meta, self.meta_block_size as u64),
            ("journal", self.journal, self.journal_block_size as u64),
        ] {
            if a.offset % self.disk_alignment as u64 != 0 {
                return Err(format!(
                    "{name}_offset {} is not aligned to disk_alignment",
                    a.offset
                ));
            }
            if a.size % align != 0 {
                return Err(format!(
                    "{name} area size {} is not a multiple of {align}",
                    a.size
                ));
            }
        }
        if self.data_blocks() < 2 {
            return Err("the data area must hold at least 2 blocks".into());
        }
        if self.journal.size < 16 * self.journal_block_size as u64
            || self.journal.size < 4 * self.block_size as u64
        {
            return Err(format!(
                "journal_size {} is too small: at least 16 journal blocks and 4 data blocks",
                self.journal.size
            ));
        }
        let need_meta = meta_area_size(
            self.data_blocks(),
            self.meta_block_size,
            self.meta_entry_size(),
        );
        if self.meta.size < need_meta {
            return Err(format!(
                "meta area {} is smaller than the {} bytes needed",
                self.meta.size, need_meta
            ));
        }
        Ok(())
    }

    /// Compute a fresh layout for `prepare`. `devs` gives (size) of the data, meta and journal
    /// devices and whether meta/journal share the data device.
    pub fn compute(
        cfg: &BlockstoreConfig,
        data_dev_size: u64,
        meta_dev_size: u64,
        journal_dev_size: u64,
        uuid: [u8; 16],
    ) -> BsResult<Layout> {
        let block_size = cfg.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
        let bitmap_granularity = cfg.bitmap_granularity.unwrap_or(DEFAULT_BITMAP_GRANULARITY);
        let disk_alignment = cfg.disk_alignment.unwrap_or(DEFAULT_DISK_ALIGNMENT);
        let journal_block_size = cfg.journal_block_size.unwrap_or(DEFAULT_JOURNAL_BLOCK_SIZE);
        let meta_block_size = cfg.meta_block_size.unwrap_or(DEFAULT_META_BLOCK_SIZE);
        let entry = meta_entry_size(bitmap_bytes(block_size, bitmap_granularity.max(1)));
        let meta_path = cfg.meta_path();
        let journal_path = cfg.journal_path();
        let meta_shared = meta_path == cfg.data_device;
        let journal_shared_meta = journal_path == meta_path;
        let journal_shared_data = journal_path == cfg.data_device;
        let bs = block_size as u64;
        let align = |v: u64, a: u64| v.div_ceil(a) * a;

        let meta_offset = cfg.meta_offset.unwrap_or(0);
        let journal_size = cfg.journal_size.unwrap_or(DEFAULT_JOURNAL_SIZE);
        // Journal placement: right after metadata when sharing its device, else at its offset.
        let mut cursor_meta_dev;
        let mut journal_offset;
        let data_offset;
        let meta_size;
        let data_size;
        if meta_shared {
            // One device for data and metadata (journal maybe too): [meta][journal][data].
            let total = data_dev_size;
            let meta_guess_blocks = total / bs;
            let msize = cfg
                .meta_size
                .unwrap_or_else(|| meta_area_size(meta_guess_blocks, meta_block_size, entry));
            cursor_meta_dev = align(meta_offset + msize, bs.max(disk_alignment as u64));
            if journal_shared_data {
                journal_offset = cfg.journal_offset.unwrap_or(cursor_meta_dev);
                cursor_meta_dev =
                    align(journal_offset + journal_size, bs.max(disk_alignment as u64));
            } else {
                journal_offset = cfg.journal_offset.unwrap_or(0);
            }
            data_offset = cfg.data_offset.unwrap_or(cursor_meta_dev);
            let avail = total.saturating_sub(data_offset);
            data_size = cfg.data_size.unwrap_or(avail / bs * bs);
            meta_size = msize;
        } else {
            // Metadata on its own device; the journal shares the data device, the metadata
            // device, or has its own.
            data_offset = if journal_shared_data {
                journal_offset = cfg.journal_offset.unwrap_or(0);
                cfg.data_offset
                    .unwrap_or(align(journal_offset + journal_size, bs))
            } else {
                journal_offset = 0;
                cfg.data_offset.unwrap_or(0)
            };
            data_size = cfg
                .data_size
                .unwrap_or(data_dev_size.saturating_sub(data_offset) / bs * bs);
            meta_size = cfg
                .meta_size
                .unwrap_or_else(|| meta_area_size(data_size / bs, meta_block_size, entry));
            if !journal_shared_data {
                journal_offset = if journal_shared_meta {
                    cfg.journal_offset
                        .unwrap_or(align(meta_offset + meta_size, disk_alignment as u64))
                } else {
                    cfg.journal_offset.unwrap_or(0)
                };
            }
        }
        let l = Layout {
            uuid,
            block_size,
            bitmap_granularity,
            disk_alignment,
            journal_block_size,
            meta_block_size,
            data: Area {
                offset: data_offset,
                size: data_size,
            },
            meta: Area {
                offset: meta_offset,
                size: meta_size,
            },
            journal: Area {
                offset: journal_offset,
                size: journal_size,
            },
        };
        l.validate().map_err(BsError::Config)?;
        // Areas must fit their devices and must not overlap where devices are shared.
        let end = |a: Area| a.offset + a.size;
        if end(l.data) > data_dev_size {
            return Err(BsError::Config(format!(
                "data area ends at {} beyond the device size {data_dev_size}",
                end(l.data)
            )));
        }
        if end(l.meta) > meta_dev_size {
            return Err(BsError::Config(format!(
                "metadata area ends at {} beyond the device size {meta_dev_size}",
                end(l.meta)
            )));
        }
        if end(l.journal) > journal_dev_size {
            return Err(BsError::Config(format!(
                "journal ends at {} beyond the device size {journal_dev_size}",
                end(l.journal)
            )));
        }
        let overlap = |a: Area, b: Area| a.offset < end(b) && b.offset < end(a);
        if meta_shared && overlap(l.meta, l.data) {
            return Err(BsError::Config("metadata and data areas overlap".into()));
        }
        if journal_shared_meta && overlap(l.meta, l.journal) {
            return Err(BsError::Config("metadata and journal areas overlap".into()));
        }
        if journal_shared_data && overlap(l.journal, l.data) {
            return Err(BsError::Config("journal and data areas overlap".into()));
        }
        Ok(l)
    }

    /// Check the options given at open time against the superblock.
    pub fn check_config(&self, cfg: &BlockstoreConfig) -> BsResult<()> {
        let mut bad = Vec::new();
        let mut cmp32 = |name: &str, given: Option<u32>, have: u32| {
            if let Some(g) = given {
                if g != have {
                    bad.push(format!(
                        "{name}={g} but the device was prepared with {name}={have}"
                    ));
                }
            }
        };
        cmp32("block_size", cfg.block_size, self.block_size);
        cmp32(
            "bitmap_granularity",
            cfg.bitmap_granularity,
            self.bitmap_granularity,
        );
        cmp32("disk_alignment", cfg.disk_alignment, self.disk_alignment);
        cmp32(
            "journal_block_size",
            cfg.journal_block_size,
            self.journal_block_size,
        );
        cmp32("meta_block_size", cfg.meta_block_size, self.meta_block_size);
        let mut cmp64 = |name: &str, given: Option<u64>, have: u64| {
            if let Some(g) = given {
                if g != have {
                    bad.push(format!("{name}={g} but the superblock says {name}={have}"));
                }
            }
        };
        cmp64("data_offset", cfg.data_offset, self.data.offset);
        cmp64("data_size", cfg.data_size, self.data.size);
        cmp64("meta_size", cfg.meta_size, self.meta.size);
        cmp64("journal_offset", cfg.journal_offset, self.journal.offset);
        cmp64("journal_size", cfg.journal_size, self.journal.size);
        if bad.is_empty() {
            Ok(())
        } else {
            Err(BsError::Config(bad.join("; ")))
        }
    }
}

/// Size of a metadata entry for a given bitmap size: `inode, stripe, version` (24 bytes),
/// CRC32C (4 bytes), allocation bitmap, external bitmap, rounded up to a power of two.
pub fn meta_entry_size(bitmap_bytes: usize) -> usize {
    (28 + 2 * bitmap_bytes).next_power_of_two()
}

/// Bytes of metadata area needed for `blocks` data blocks (including the superblock block).
pub fn meta_area_size(blocks: u64, meta_block_size: u32, entry: usize) -> u64 {
    let per = (meta_block_size as usize / entry).max(1) as u64;
    (1 + blocks.div_ceil(per)) * meta_block_size as u64
}

/// Journal header: where replay starts, the sequence expected there and the current epoch
/// (bumped at every open so that stale sectors of an earlier run are never replayed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalHeader {
    /// Identity; must match the superblock.
    pub uuid: [u8; 16],
    /// Offset (inside the journal area) of the first live sector.
    pub start: u64,
    /// Sequence number of the first entry at `start`.
    pub start_seq: u64,
    /// Current epoch.
    pub epoch: u64,
}

impl JournalHeader {
    /// Encode into a `HEADER_BYTES` record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(JH_MAGIC);
        b[16..32].copy_from_slice(&self.uuid);
        put64(&mut b, 32, self.start);
        put64(&mut b, 40, self.start_seq);
        put64(&mut b, 48, self.epoch);
        let crc = crc32c::crc32c(&b);
        put32(&mut b, 8, crc);
        b
    }

    /// Decode and verify.
    pub fn decode(b: &[u8]) -> BsResult<Self> {
        if b.len() < HEADER_BYTES || &b[0..8] != JH_MAGIC {
            return Err(BsError::Layout(
                "no journal header at journal_offset (wrong journal device or offset?)".into(),
            ));
        }
        let mut copy = b[..HEADER_BYTES].to_vec();
        put32(&mut copy, 8, 0);
        if crc32c::crc32c(&copy) != get32(b, 8) {
            return Err(BsError::Layout(
                "journal header checksum mismatch (corrupted journal header)".into(),
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        Ok(JournalHeader {
            uuid,
            start: get64(b, 32),
            start_seq: get64(b, 40),
            epoch: get64(b, 48),
        })
    }
}

/// One clean metadata entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaEntry {
    /// Object inode.
    pub inode: u64,
    /// Object stripe.
    pub stripe: u64,
    /// Flushed version.
    pub version: u64,
    /// Allocation bitmap.
    pub bitmap: Vec<u8>,
    /// External bitmap (see [`crate::bitmap`]).
    pub attr: Vec<u8>,
}

/// Encode an entry into `out` (exactly `meta_entry_size` bytes), salted with the block number
/// so that an entry copied to the wrong slot fails its checksum.
pub fn encode_meta_entry(out: &mut [u8], block: u64, e: &MetaEntry) {
    out.fill(0);
    put64(out, 0, e.inode);
    put64(out, 8, e.stripe);
    put64(out, 16, e.version);
    let bb = e.bitmap.len();
    out[28..28 + bb].copy_from_slice(&e.bitmap);
    out[28 + bb..28 + 2 * bb].copy_from_slice(&e.attr);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&block.to_le_bytes()), out);
    put32(out, 24, crc);
}

/// Decode an entry: `Ok(None)` for a free (all-zero) slot, an error for a damaged one.
#[allow(clippy::result_unit_err)]
pub fn decode_meta_entry(
    b: &[u8],
    block: u64,
    bitmap_bytes: usize,
) -> Result<Option<MetaEntry>, ()> {
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let mut copy = [0u8; 512];
    let c = &mut copy[..b.len()];
    c.copy_from_slice(b);
    put32(c, 24, 0);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&block.to_le_bytes()), c);
    if crc != get32(b, 24) {
        return Err(());
    }
    Ok(Some(MetaEntry {
        inode: get64(b, 0),
        stripe: get64(b, 8),
        version: get64(b, 16),
        bitmap: b[28..28 + bitmap_bytes].to_vec(),
        attr: b[28 + bitmap_bytes..28 + 2 * bitmap_bytes].to_vec(),
    }))
}

pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn get32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub(crate) fn get64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
pub(crate) fn get16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let mut cfg = BlockstoreConfig::new("/dev/x");
        cfg.journal_size = Some(4 << 20);
        Layout::compute(&cfg, 256 << 20, 256 << 20, 256 << 20, [7; 16]).unwrap()
    }

    #[test]
    fn single_device_layout() {
        let l = layout();
        assert_eq!(l.meta.offset, 0);
        assert!(l.journal.offset >= l.meta.size);
        assert!(l.data.offset >= l.journal.offset + l.journal.size);
        assert!(l.data.offset + l.data.size <= 256 << 20);
        assert_eq!(
            l.meta_entry_size(),
            64,
            "128K/4K objects cost 64 bytes of metadata (two 4-byte bitmaps)"
        );
    }

    #[test]
    fn superblock_roundtrip_and_damage() {
        let l = layout();
        let sb = l.meta_superblock();
        assert_eq!(Layout::decode_sb(&sb, false).unwrap(), l);
        assert!(
            Layout::decode_sb(&sb, true).is_err(),
            "meta copy is not the data copy"
        );
        let mut bad = sb.clone();
        bad[40] ^= 1;
        assert!(matches!(
            Layout::decode_sb(&bad, false),
            Err(BsError::Layout(_))
        ));
        let mut ver = sb.clone();
        put32(&mut ver, 8, 99);
        let e = Layout::decode_sb(&ver, false).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
        put32(&mut ver, 8, 1);
        let e = Layout::decode_sb(&ver, false).unwrap_err().to_string();
        assert!(
            e.contains("format version 1 was written by an older build"),
            "{e}"
        );
        assert!(Layout::decode_sb(&[0u8; 512], false).is_err());
    }

    #[test]
    fn mismatched_options_are_named() {
        let l = layout();
        let mut cfg = BlockstoreConfig::new("/dev/x");
        cfg.block_size = Some(1 << 20);
        let e = l.check_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("block_size=1048576"), "{e}");
    }

    #[test]
    fn meta_entry_roundtrip() {
        let e = MetaEntry {
            inode: 1 << 48 | 5,
            stripe: 128 << 10,
            version: 9,
            bitmap: vec![0xff, 1, 0, 0],
            attr: vec![0, 2, 0, 0x80],
        };
        let mut buf = [0u8; 64];
        encode_meta_entry(&mut buf, 17, &e);
        assert_eq!(decode_meta_entry(&buf, 17, 4), Ok(Some(e)));
        assert_eq!(
            decode_meta_entry(&buf, 18, 4),
            Err(()),
            "salted with the block number"
        );
        assert_eq!(decode_meta_entry(&[0u8; 64], 3, 4), Ok(None));
    }

    #[test]
    fn journal_header_roundtrip() {
        let h = JournalHeader {
            uuid: [1; 16],
            start: 4096,
            start_seq: 77,
            epoch: 3,
        };
        assert_eq!(JournalHeader::decode(&h.encode()).unwrap(), h);
        let mut bad = h.encode();
        bad[33] ^= 4;
        assert!(JournalHeader::decode(&bad).is_err());
    }
}
