//! `vitastor-disk prepare`: make room for a store in a regular file when asked, lay the store
//! out through the blockstore's own `prepare`, and describe the result as the OSD options
//! that open it (command-line lines or a JSON config).

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use vitastor_blockstore::layout::Layout;
use vitastor_blockstore::BlockstoreConfig;

use super::ToolError;

/// Create `path` as a file of `size` bytes, or grow a smaller regular file to it, and reserve
/// every block of it on the host file system, as a block device has them. A hole costs the
/// first write into it a block allocation, which io_uring cannot do without blocking (each
/// such write is handed to a kernel worker thread), and a full host file system would fail
/// the OSD's writes long after `prepare` said yes. Reserving writes no data (the blocks are
/// allocated unwritten), so it is quick at any size. Never shrinks: a larger file may already
/// hold something the operator cares about.
pub fn ensure_file_size(path: &Path, size: u64) -> Result<(), ToolError> {
    let len = match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(ToolError::Invalid(format!(
                "--size only creates or grows regular files, and {} is not one",
                path.display()
            )))
        }
        Ok(m) => m.len(),
        Err(e) if e.kind() == ErrorKind::NotFound => 0,
        Err(e) => return Err(ToolError::io(format!("stat {}", path.display()), e)),
    };
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| ToolError::io(format!("create {}", path.display()), e))?;
    if len < size {
        f.set_len(size)
            .map_err(|e| ToolError::io(format!("resize {} to {size} bytes", path.display()), e))?;
    }
    reserve(&f, len.max(size)).map_err(|e| {
        ToolError::io(
            format!(
                "reserve {} bytes for {} on its file system",
                len.max(size),
                path.display()
            ),
            e,
        )
    })
}

/// Allocates the holes of the first `len` bytes of `f` (mode 0 `fallocate`: data and size
/// unchanged). A file system without `fallocate` keeps a sparse file.
fn reserve(f: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let len =
        libc::off_t::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: fallocate on a descriptor `f` keeps open; it touches no user memory.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return Ok(()),
            _ => return Err(e),
        }
    }
}

/// Lay out a store; refuses to overwrite an existing one unless `force`.
pub fn prepare(cfg: &BlockstoreConfig, force: bool) -> Result<Layout, ToolError> {
    for p in [cfg.data_device.clone(), cfg.meta_path(), cfg.journal_path()] {
        if let Err(e) = std::fs::metadata(&p) {
            let hint = if e.kind() == ErrorKind::NotFound {
                " (use --size to create a file)"
            } else {
                ""
            };
            return Err(ToolError::Invalid(format!("{}: {e}{hint}", p.display())));
        }
    }
    Ok(vitastor_blockstore::prepare::prepare(cfg, force)?)
}

/// On regular files, rewrites the journal and metadata areas in place (same bytes) so that
/// they are allocated on the host file system: otherwise every journal fsync of a fresh
/// sparse file also commits the file system's block allocation, which costs several times
/// the write itself and makes a new file-backed OSD look far slower than it is. Block
/// devices are left alone; the data area is only reserved (`ensure_file_size`), not written:
/// it can be large.
pub fn materialize_areas(cfg: &BlockstoreConfig, l: &Layout) -> Result<(), ToolError> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 1 << 20;
    for (path, area) in [(cfg.journal_path(), l.journal), (cfg.meta_path(), l.meta)] {
        let regular = std::fs::metadata(&path)
            .map(|m| m.is_file())
            .unwrap_or(false);
        if !regular || area.size == 0 {
            continue;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| ToolError::io(format!("open {}", path.display()), e))?;
        let mut buf = vec![0u8; CHUNK as usize];
        let mut pos = area.offset;
        let end = area.offset + area.size;
        while pos < end {
            let n = (end - pos).min(CHUNK) as usize;
            f.read_exact_at(&mut buf[..n], pos)
                .and_then(|_| f.write_all_at(&buf[..n], pos))
                .map_err(|e| ToolError::io(format!("allocate {} at {pos}", path.display()), e))?;
            pos += n as u64;
        }
        f.sync_all()
            .map_err(|e| ToolError::io(format!("fsync {}", path.display()), e))?;
    }
    Ok(())
}

/// The OSD options that open the prepared store, in the order they are printed. Paths are
/// made absolute (without resolving symlinks, so stable names like /dev/disk/by-id survive)
/// because the OSD may run from another directory.
pub fn osd_options(
    cfg: &BlockstoreConfig,
    l: &Layout,
) -> Result<Vec<(&'static str, Value)>, ToolError> {
    let abs = |p: PathBuf| -> Result<Value, ToolError> {
        let a = std::path::absolute(&p)
            .map_err(|e| ToolError::io(format!("absolute path of {}", p.display()), e))?;
        Ok(Value::String(a.to_string_lossy().into_owned()))
    };
    Ok(vec![
        ("data_device", abs(cfg.data_device.clone())?),
        ("meta_device", abs(cfg.meta_path())?),
        ("journal_device", abs(cfg.journal_path())?),
        ("data_offset", l.data.offset.into()),
        ("data_size", l.data.size.into()),
        ("meta_offset", l.meta.offset.into()),
        ("meta_size", l.meta.size.into()),
        ("journal_offset", l.journal.offset.into()),
        ("journal_size", l.journal.size.into()),
        ("block_size", l.block_size.into()),
        ("bitmap_granularity", l.bitmap_granularity.into()),
        ("disk_alignment", l.disk_alignment.into()),
        ("journal_block_size", l.journal_block_size.into()),
        ("meta_block_size", l.meta_block_size.into()),
    ])
}

/// The options as a JSON object (a config file the OSD and `BlockstoreConfig::from_map` read).
pub fn options_object(opts: &[(&'static str, Value)]) -> Value {
    Value::Object(
        opts.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Map<_, _>>(),
    )
}

/// The options as `--key value` lines.
pub fn options_lines(opts: &[(&'static str, Value)]) -> String {
    let mut s = String::new();
    for (k, v) in opts {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        s.push_str(&format!("--{k} {v}\n"));
    }
    s
}
