//! Read-only views of a store for the inspection commands: the superblock, the journal as
//! replay would see it, and the metadata entries. Devices are opened with plain buffered std
//! files, read-only and without the OSD's advisory lock, so inspecting never changes a device
//! and works on the devices of a stopped (or crashed) OSD.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vitastor_blockstore::journal::{decode, entry_size, Journal, Kind, JE_HEADER};
use vitastor_blockstore::layout::{decode_meta_entry, JournalHeader, Layout, HEADER_BYTES};
use vitastor_blockstore::{device_paths, BlockstoreConfig, Devices};

use super::ToolError;

/// Bytes of metadata area read per request while dumping: large enough for sequential
/// throughput, small enough that a multi-terabyte OSD's metadata is never held whole.
const META_READ_CHUNK: u64 = 16 << 20;

struct Dev {
    file: File,
    path: PathBuf,
    size: u64,
}

impl Dev {
    fn open(path: &Path) -> Result<Dev, ToolError> {
        let file =
            File::open(path).map_err(|e| ToolError::io(format!("open {}", path.display()), e))?;
        let size =
            dev_size(&file).map_err(|e| ToolError::io(format!("size of {}", path.display()), e))?;
        Ok(Dev {
            file,
            path: path.to_path_buf(),
            size,
        })
    }

    fn read(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<(), ToolError> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            ToolError::io(
                format!(
                    "read {what} from {} at offset {offset}",
                    self.path.display()
                ),
                e,
            )
        })
    }
}

/// Size of a regular file or a block device (whose metadata length is 0).
fn dev_size(f: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileTypeExt;
    if f.metadata()?.file_type().is_block_device() {
        let mut f = f;
        return f.seek(SeekFrom::End(0));
    }
    Ok(f.metadata()?.len())
}

/// A store opened for inspection: its verified superblock and read-only device handles.
pub struct Store {
    /// Geometry from the metadata area's superblock.
    pub layout: Layout,
    /// Device paths, in the blockstore's de-duplicated order.
    pub paths: Vec<PathBuf>,
    /// Result of checking the superblock copy at the start of the data area.
    pub data_copy: Result<(), String>,
    devs: Vec<Dev>,
    ids: Devices,
}

impl Store {
    /// Read and verify the superblock, check the given options against it and check that
    /// every area fits its device, with the same rules the OSD applies at open.
    pub fn open(cfg: &BlockstoreConfig) -> Result<Store, ToolError> {
        let (paths, ids) = device_paths(cfg);
        let devs = paths
            .iter()
            .map(|p| Dev::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        let meta = &devs[ids.meta.0 as usize];
        let meta_offset = cfg.meta_offset.unwrap_or(0);
        if meta_offset.saturating_add(HEADER_BYTES as u64) > meta.size {
            return Err(ToolError::Invalid(format!(
                "{} is only {} bytes: there is no superblock at offset {meta_offset}",
                meta.path.display(),
                meta.size
            )));
        }
        let mut sb = vec![0u8; HEADER_BYTES];
        meta.read(meta_offset, &mut sb, "superblock")?;
        let layout = Layout::decode_sb(&sb, false)?;
        layout.check_config(cfg)?;
        for (name, dev, area) in [
            ("data", ids.data, layout.data),
            ("metadata", ids.meta, layout.meta),
            ("journal", ids.journal, layout.journal),
        ] {
            let d = &devs[dev.0 as usize];
            if area.offset + area.size > d.size {
                return Err(ToolError::Invalid(format!(
                    "the {name} area ends at byte {} but {} has only {} bytes (truncated device?)",
                    area.offset + area.size,
                    d.path.display(),
                    d.size
                )));
            }
        }
        let data = &devs[ids.data.0 as usize];
        let mut dsb = vec![0u8; HEADER_BYTES];
        data.read(layout.data.offset, &mut dsb, "data area superblock")?;
        let data_copy = match Layout::decode_sb(&dsb, true) {
            Ok(l) if l == layout => Ok(()),
            Ok(_) => {
                Err("the data area belongs to a different OSD than the metadata area".to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        Ok(Store {
            layout,
            paths,
            data_copy,
            devs,
            ids,
        })
    }

    /// Path of the device holding the metadata area.
    pub fn meta_path(&self) -> &Path {
        &self.devs[self.ids.meta.0 as usize].path
    }

    /// Path of the device holding the journal.
    pub fn journal_path(&self) -> &Path {
        &self.devs[self.ids.journal.0 as usize].path
    }

    /// Path of the device holding the data area.
    pub fn data_path(&self) -> &Path {
        &self.devs[self.ids.data.0 as usize].path
    }

    /// Replay the journal exactly as the OSD would at open, without applying anything. With
    /// `all`, also decode entries left in sectors outside the live log (older laps, torn
    /// tails of earlier runs).
    pub fn dump_journal(&self, all: bool) -> Result<JournalDump, ToolError> {
        let l = &self.layout;
        let dev = &self.devs[self.ids.journal.0 as usize];
        let mut mirror = vec![0u8; l.journal.size as usize];
        dev.read(l.journal.offset, &mut mirror, "journal")?;
        let header = JournalHeader::decode(&mirror[..HEADER_BYTES])?;
        if header.uuid != l.uuid {
            return Err(ToolError::Invalid(
                "the journal belongs to a different OSD (uuid mismatch with the superblock)".into(),
            ));
        }
        let jbs = l.journal_block_size as u64;
        if header.start < jbs || header.start >= l.journal.size || header.start % jbs != 0 {
            return Err(ToolError::Invalid(format!(
                "the journal header names an impossible start offset {}",
                header.start
            )));
        }
        let bb = l.bitmap_bytes();
        let mut entries = Vec::new();
        let end = Journal::replay(
            &mirror,
            jbs,
            bb,
            header.start,
            header.start_seq,
            header.epoch,
            |e, sector| {
                entries.push((sector, JournalRow::from_entry(e, 0, true)));
            },
        );
        let entries: Vec<JournalRow> = entries
            .into_iter()
            .map(|(sector, row)| JournalRow {
                sector_pos: end.sectors[sector as usize].0,
                ..row
            })
            .collect();
        let mut stale = Vec::new();
        if all {
            let live: HashSet<u64> = end.sectors.iter().map(|s| s.0).collect();
            for pos in (jbs..l.journal.size)
                .step_by(jbs as usize)
                .filter(|p| !live.contains(p))
            {
                let sector = &mirror[pos as usize..(pos + jbs) as usize];
                let mut fill = 0;
                while fill + JE_HEADER <= sector.len() {
                    let Some(e) = decode(&sector[fill..], bb) else {
                        break;
                    };
                    stale.push(JournalRow::from_entry(&e, pos, false));
                    fill += entry_size(e.kind, bb);
                }
            }
        }
        Ok(JournalDump {
            header,
            sectors: end.sectors.len(),
            log_end: end.next_free,
            next_seq: end.next_seq,
            entries,
            stale,
        })
    }

    /// Call `row` for every used or damaged metadata slot, in data block order; returns the
    /// number of data blocks (block 0, the superblock copy, has no slot).
    pub fn dump_meta(
        &self,
        mut row: impl FnMut(MetaSlot) -> Result<(), ToolError>,
    ) -> Result<u64, ToolError> {
        let l = &self.layout;
        let dev = &self.devs[self.ids.meta.0 as usize];
        let mbs = l.meta_block_size as u64;
        let esz = l.meta_entry_size();
        let bb = l.bitmap_bytes();
        let chunk_blocks = (META_READ_CHUNK / mbs).max(1);
        let mut buf = Vec::new();
        // Metadata blocks [first, first + loaded) are in `buf`.
        let (mut first, mut loaded) = (0u64, 0u64);
        // Block 0 of the data area holds the superblock copy and has no entry.
        for b in 1..l.data_blocks() {
            let (mb, off) = l.meta_pos(b);
            if mb >= first + loaded {
                let n = chunk_blocks.min(l.meta.size / mbs - mb);
                buf.resize((n * mbs) as usize, 0);
                dev.read(l.meta.offset + mb * mbs, &mut buf, "metadata")?;
                (first, loaded) = (mb, n);
            }
            let at = ((mb - first) * mbs) as usize + off;
            match decode_meta_entry(&buf[at..at + esz], b, bb) {
                Ok(None) => {}
                Ok(Some(e)) => row(MetaSlot::Entry(MetaRow {
                    block: b,
                    inode: e.inode,
                    stripe: e.stripe,
                    version: e.version,
                    bitmap: e.bitmap,
                    attr: e.attr,
                }))?,
                Err(()) => row(MetaSlot::Corrupted { block: b })?,
            }
        }
        Ok(l.data_blocks())
    }
}

/// One journal entry, owned (the decoder borrows from the journal image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalRow {
    /// Sequence number.
    pub seq: u64,
    /// Epoch (OSD run) that wrote it.
    pub epoch: u64,
    /// What it records.
    pub kind: Kind,
    /// Object inode.
    pub inode: u64,
    /// Object stripe.
    pub stripe: u64,
    /// Version.
    pub version: u64,
    /// Written range start (writes only).
    pub offset: u32,
    /// Written length (writes only).
    pub len: u32,
    /// Journal offset of the data (small writes) or data block (big writes).
    pub loc: u64,
    /// Written as stable.
    pub stable: bool,
    /// Redirect write waiting for its commit record.
    pub pending: bool,
    /// Allocation bitmap after this version (writes only).
    pub bitmap: Vec<u8>,
    /// External bitmap after this version (writes only): what reads report.
    pub attr: Vec<u8>,
    /// Journal offset of the sector holding the entry.
    pub sector_pos: u64,
    /// Whether replay reaches it (false for leftovers shown by `--all`).
    pub live: bool,
}

impl JournalRow {
    fn from_entry(
        e: &vitastor_blockstore::journal::Entry<'_>,
        sector_pos: u64,
        live: bool,
    ) -> Self {
        JournalRow {
            seq: e.seq,
            epoch: e.epoch,
            kind: e.kind,
            inode: e.oid.inode,
            stripe: e.oid.stripe,
            version: e.version,
            offset: e.offset,
            len: e.len,
            loc: e.loc,
            stable: e.stable,
            pending: e.pending,
            bitmap: e.bitmap.to_vec(),
            attr: e.attr.to_vec(),
            sector_pos,
            live,
        }
    }
}

/// The journal as replay sees it.
#[derive(Debug)]
pub struct JournalDump {
    /// The decoded header.
    pub header: JournalHeader,
    /// Entries replay applies, in order.
    pub entries: Vec<JournalRow>,
    /// Entries outside the live log (only with `all`).
    pub stale: Vec<JournalRow>,
    /// Sectors holding live entries.
    pub sectors: usize,
    /// Journal offset where the next write would go.
    pub log_end: u64,
    /// Sequence number the next entry would get.
    pub next_seq: u64,
}

/// A used metadata slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaRow {
    /// Data block the entry describes.
    pub block: u64,
    /// Object inode.
    pub inode: u64,
    /// Object stripe.
    pub stripe: u64,
    /// Flushed version.
    pub version: u64,
    /// Allocation bitmap.
    pub bitmap: Vec<u8>,
    /// External bitmap: what reads report.
    pub attr: Vec<u8>,
}

/// What a non-empty metadata slot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaSlot {
    /// A valid entry.
    Entry(MetaRow),
    /// A slot whose checksum does not match: the OSD refuses to open such a store.
    Corrupted {
        /// Data block of the slot.
        block: u64,
    },
}

/// Snake-case name of a journal entry kind, as printed.
pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::SmallWrite => "small_write",
        Kind::BigWrite => "big_write",
        Kind::Delete => "delete",
        Kind::Stable => "stable",
        Kind::Rollback => "rollback",
        Kind::Commit => "commit",
    }
}
