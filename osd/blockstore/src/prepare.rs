//! Laying out a new OSD store: compute the geometry, write the superblock (metadata area and
//! data area copy), a fresh journal header, and zero the metadata area. Used by
//! `vitastor-disk prepare`, tests and benchmarks. Refuses to overwrite an existing store
//! unless asked to.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rand::RngCore;

use crate::config::BlockstoreConfig;
use crate::error::{BsError, BsResult};
use crate::layout::{JournalHeader, Layout};

fn dev_size(path: &Path) -> BsResult<u64> {
    let f = std::fs::File::open(path)
        .map_err(|e| BsError::io(format!("open {}", path.display()), e))?;
    use std::os::unix::fs::FileTypeExt;
    let meta = f
        .metadata()
        .map_err(|e| BsError::io(format!("stat {}", path.display()), e))?;
    if meta.file_type().is_block_device() {
        use std::io::{Seek, SeekFrom};
        let mut f = f;
        return f
            .seek(SeekFrom::End(0))
            .map_err(|e| BsError::io(format!("size of {}", path.display()), e));
    }
    Ok(meta.len())
}

/// Create the on-disk layout described by `cfg` (sizes default from the devices). With
/// `force == false` an existing vitastor-rs superblock is an error.
pub fn prepare(cfg: &BlockstoreConfig, force: bool) -> BsResult<Layout> {
    let data = cfg.data_device.clone();
    let meta = cfg.meta_path();
    let journal = cfg.journal_path();
    let mut uuid = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut uuid);
    let layout = Layout::compute(
        cfg,
        dev_size(&data)?,
        dev_size(&meta)?,
        dev_size(&journal)?,
        uuid,
    )?;
    let open = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .map_err(|e| BsError::io(format!("open {}", p.display()), e))
    };
    let (fd, fm, fj) = (open(&data)?, open(&meta)?, open(&journal)?);
    if !force {
        let mut sb = vec![0u8; 512];
        if fm.read_exact_at(&mut sb, layout.meta.offset).is_ok()
            && Layout::decode_sb(&sb, false).is_ok()
        {
            return Err(BsError::Config(format!(
                "{} already holds an OSD store at offset {}; refusing to overwrite it",
                meta.display(),
                layout.meta.offset
            )));
        }
    }
    let w = |f: &std::fs::File, p: &Path, off: u64, b: &[u8]| {
        f.write_all_at(b, off)
            .map_err(|e| BsError::io(format!("write {}", p.display()), e))
    };
    // Metadata area: zero entries, then the superblock last so a half-prepared device is not
    // mistaken for a store.
    let chunk = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < layout.meta.size {
        let n = chunk.len().min((layout.meta.size - off) as usize);
        w(&fm, &meta, layout.meta.offset + off, &chunk[..n])?;
        off += n as u64;
    }
    let jbs = layout.journal_block_size as usize;
    let mut jh = vec![0u8; jbs * 2];
    let header = JournalHeader {
        uuid,
        start: jbs as u64,
        start_seq: 1,
        epoch: 0,
    };
    jh[..512].copy_from_slice(&header.encode());
    w(&fj, &journal, layout.journal.offset, &jh)?;
    let mut dsb = vec![0u8; layout.block_size as usize];
    dsb[..512].copy_from_slice(&layout.data_superblock());
    w(&fd, &data, layout.data.offset, &dsb)?;
    for (f, p) in [(&fd, &data), (&fj, &journal)] {
        f.sync_all()
            .map_err(|e| BsError::io(format!("fsync {}", p.display()), e))?;
    }
    let mut sb = vec![0u8; layout.meta_block_size as usize];
    sb[..512].copy_from_slice(&layout.meta_superblock());
    w(&fm, &meta, layout.meta.offset, &sb)?;
    fm.sync_all()
        .map_err(|e| BsError::io(format!("fsync {}", meta.display()), e))?;
    Ok(layout)
}

/// Prepare into in-memory images (simulated devices) for tests: returns the layout after
/// writing it through `write(dev_index, offset, bytes)`.
pub fn prepare_images(
    cfg: &BlockstoreConfig,
    sizes: (u64, u64, u64),
    mut write: impl FnMut(usize, u64, &[u8]),
) -> BsResult<Layout> {
    let mut uuid = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut uuid);
    let layout = Layout::compute(cfg, sizes.0, sizes.1, sizes.2, uuid)?;
    let (_, devs) = crate::blockstore::device_paths(cfg);
    let jbs = layout.journal_block_size as usize;
    let mut jh = vec![0u8; jbs];
    jh[..512].copy_from_slice(
        &JournalHeader {
            uuid,
            start: jbs as u64,
            start_seq: 1,
            epoch: 0,
        }
        .encode(),
    );
    write(devs.journal.0 as usize, layout.journal.offset, &jh);
    write(
        devs.data.0 as usize,
        layout.data.offset,
        &layout.data_superblock(),
    );
    write(
        devs.meta.0 as usize,
        layout.meta.offset,
        &layout.meta_superblock(),
    );
    Ok(layout)
}
