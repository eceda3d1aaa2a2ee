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

/// Writes zeros over every range of the store's regular files that reads as zeros without
/// having been written: holes and the blocks `ensure_file_size` reserved (file systems with
/// unwritten extents, ext4 and XFS, report those as holes to `SEEK_HOLE`). What a file reads
/// stays byte for byte the same, so the layout is untouched and a second run writes nothing.
/// Why: the first write into an unwritten block converts it to written with a file-system
/// journal transaction at completion (and on a thin-provisioned virtual disk a block's first
/// write may also cost the host an allocation); a store written out once pays that no more
/// than a raw file or a block device does. Writes are O_DIRECT in 4 MiB pieces (no page cache
/// filled with GiBs of zeros), then one fsync. Block devices are left alone. Returns the bytes
/// written.
pub fn fill_unwritten(cfg: &BlockstoreConfig) -> Result<u64, ToolError> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in [cfg.data_device.clone(), cfg.meta_path(), cfg.journal_path()] {
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    let mut written = 0;
    for path in paths {
        let regular = std::fs::metadata(&path)
            .map(|m| m.is_file())
            .unwrap_or(false);
        if regular {
            written += fill_file(&path)?;
        }
    }
    Ok(written)
}

/// `fill_unwritten` for one regular file.
fn fill_file(path: &Path) -> Result<u64, ToolError> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const CHUNK: u64 = 4 << 20;
    const ALIGN: u64 = 4096;
    let ctx = |what: &str| format!("{what} {}", path.display());
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| ToolError::io(ctx("open"), e))?;
    // A file system without O_DIRECT (tmpfs before Linux 6.6) takes the writes buffered.
    let direct = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(d) => Some(d),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
        Err(e) => return Err(ToolError::io(ctx("open (O_DIRECT)"), e)),
    };
    // SEEK_HOLE takes an unwritten extent for data while pages of it are cached (a read of
    // the file puts zeroes there): write back the dirty ones, then drop them all.
    f.sync_all().map_err(|e| ToolError::io(ctx("fsync"), e))?;
    drop_cache(&f).map_err(|e| ToolError::io(ctx("drop the cached pages of"), e))?;
    let len = f
        .metadata()
        .map_err(|e| ToolError::io(ctx("stat"), e))?
        .len();
    let zeros = vec![0u8; (CHUNK + ALIGN) as usize];
    let skip = zeros.as_ptr().align_offset(ALIGN as usize);
    let zeros = &zeros[skip..skip + CHUNK as usize];
    let mut written = 0;
    let mut pos = 0;
    while pos < len {
        let hole =
            seek(&f, pos, libc::SEEK_HOLE).map_err(|e| ToolError::io(ctx("SEEK_HOLE in"), e))?;
        if hole >= len {
            break;
        }
        let end = match seek(&f, hole, libc::SEEK_DATA) {
            Ok(d) => d.min(len),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => len,
            Err(e) => return Err(ToolError::io(ctx("SEEK_DATA in"), e)),
        };
        let mut at = hole;
        while at < end {
            // O_DIRECT needs aligned offsets and lengths: the aligned part goes direct, and
            // only a tail shorter than a page at the end of the file (or a hole starting
            // unaligned) through the page cache.
            let n = (end - at).min(CHUNK);
            let aligned = at % ALIGN == 0 && n >= ALIGN;
            let n = if aligned { n - n % ALIGN } else { n };
            let out = match &direct {
                Some(d) if aligned => d,
                _ => &f,
            };
            out.write_all_at(&zeros[..n as usize], at).map_err(|e| {
                ToolError::io(format!("write zeros at {at} to {}", path.display()), e)
            })?;
            at += n;
            written += n;
        }
        pos = end;
    }
    if written > 0 {
        f.sync_all().map_err(|e| ToolError::io(ctx("fsync"), e))?;
    }
    Ok(written)
}

/// Drops the file's clean cached pages.
fn drop_cache(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: posix_fadvise on a descriptor `f` keeps open; it touches no user memory.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// `lseek` with `SEEK_HOLE` / `SEEK_DATA`, which std's `Seek` does not offer.
fn seek(f: &std::fs::File, pos: u64, whence: libc::c_int) -> std::io::Result<u64> {
    use std::os::unix::io::AsRawFd;
    let pos =
        libc::off_t::try_from(pos).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: lseek on a descriptor `f` keeps open; it touches no user memory.
    let r = unsafe { libc::lseek(f.as_raw_fd(), pos, whence) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r as u64)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::os::unix::fs::FileExt;

    /// Bytes of `path` that are holes or unwritten extents, by FIEMAP (which, unlike
    /// SEEK_HOLE, does not count an unwritten extent with cached pages as data); `None` where
    /// the file system has no FIEMAP.
    fn unwritten_bytes(path: &Path) -> Option<u64> {
        use std::os::unix::io::AsRawFd;
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Extent {
            logical: u64,
            physical: u64,
            length: u64,
            reserved64: [u64; 2],
            flags: u32,
            reserved: [u32; 3],
        }
        #[repr(C)]
        struct Fiemap {
            start: u64,
            length: u64,
            flags: u32,
            mapped_extents: u32,
            extent_count: u32,
            reserved: u32,
            extents: [Extent; 64],
        }
        const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
        const FLAG_SYNC: u32 = 1;
        const EXTENT_LAST: u32 = 1;
        const EXTENT_UNWRITTEN: u32 = 0x800;
        let f = std::fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len();
        let (mut pos, mut written) = (0u64, 0u64);
        loop {
            let mut m = Fiemap {
                start: pos,
                length: u64::MAX - pos,
                flags: FLAG_SYNC,
                mapped_extents: 0,
                extent_count: 64,
                reserved: 0,
                extents: [Extent::default(); 64],
            };
            // SAFETY: FS_IOC_FIEMAP writes at most extent_count extents into `m`, which
            // outlives the call.
            let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, &mut m as *mut Fiemap) };
            if r < 0 {
                return None;
            }
            let got = &m.extents[..m.mapped_extents as usize];
            for e in got {
                if e.flags & EXTENT_UNWRITTEN == 0 {
                    let end = (e.logical + e.length).min(len);
                    written += end.saturating_sub(e.logical.max(pos));
                }
            }
            match got.last() {
                Some(e) if e.flags & EXTENT_LAST == 0 => pos = e.logical + e.length,
                _ => return Some(len - written),
            }
        }
    }

    fn first_hole(path: &Path) -> u64 {
        let f = std::fs::File::open(path).unwrap();
        seek(&f, 0, libc::SEEK_HOLE).unwrap()
    }

    /// `vitastor-disk prepare` of a new 64 MiB file; returns the data file and its config.
    fn prepare_file(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, Value) {
        let data = dir.join(format!("{name}.data"));
        let conf = dir.join(format!("{name}.json"));
        let mut args = vec![
            "vitastor-disk".to_string(),
            "prepare".into(),
            "--data_device".into(),
            data.display().to_string(),
            "--size".into(),
            "64M".into(),
            "--write_config".into(),
            conf.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let cli = super::super::Cli::try_parse_from(args).unwrap();
        super::super::run(&cli, &mut Vec::new()).unwrap();
        let text = std::fs::read_to_string(&conf).unwrap();
        (
            data,
            serde_json::from_str(&text.replace(name, "NAME")).unwrap(),
        )
    }

    #[test]
    fn fill_writes_out_every_reserved_block_and_keeps_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, plain_conf) = prepare_file(dir.path(), "plain", &[]);
        let (filled, filled_conf) = prepare_file(dir.path(), "filled", &["--fill"]);
        let len = std::fs::metadata(&filled).unwrap().len();
        assert_eq!(len, 64 << 20);
        assert_eq!(
            first_hole(&filled),
            len,
            "a hole or unwritten range is left"
        );
        assert!(
            matches!(unwritten_bytes(&filled), None | Some(0)),
            "unwritten extents left"
        );
        assert_eq!(plain_conf, filled_conf, "the layout differs");
        assert_eq!(
            fill_unwritten(&BlockstoreConfig::new(&filled)).unwrap(),
            0,
            "a second fill wrote again"
        );
        // The same fill on a store prepared without it: every byte reads as before.
        let before = std::fs::read(&plain).unwrap();
        // ext4 and XFS report reserved (unwritten) blocks as holes: the data area is one.
        let had_holes = first_hole(&plain) < len;
        let written = fill_unwritten(&BlockstoreConfig::new(&plain)).unwrap();
        assert!(!had_holes || written > len / 2, "wrote {written} of {len}");
        assert_eq!(first_hole(&plain), len);
        // Reading the store above left its never-written blocks in the page cache, where
        // SEEK_HOLE takes them for data: the fill must still have written them.
        assert!(
            matches!(unwritten_bytes(&plain), None | Some(0)),
            "unwritten extents left"
        );
        assert!(
            std::fs::read(&plain).unwrap() == before,
            "filling changed what the store reads"
        );
    }

    #[test]
    fn fill_writes_only_holes_up_to_an_unaligned_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let len = (9 << 20) + 100;
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(len).unwrap();
        f.write_all_at(b"kept", (5 << 20) + 7).unwrap();
        f.sync_all().unwrap();
        let written = fill_file(&path).unwrap();
        assert!(
            written >= len - (1 << 20) && written < len,
            "wrote {written} of {len}"
        );
        assert_eq!(first_hole(&path), len);
        assert!(matches!(unwritten_bytes(&path), None | Some(0)));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, len);
        let at = (5 << 20) + 7;
        assert_eq!(&bytes[at..at + 4], b"kept");
        assert!(bytes[..at].iter().chain(&bytes[at + 4..]).all(|&b| b == 0));
    }
}
