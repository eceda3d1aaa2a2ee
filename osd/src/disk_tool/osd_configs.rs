//! The OSD configs of a host: `osd<N>.json` in the config directory (`/etc/vitastor`), one
//! per prepared store, each what `vitastor-osd@<N>.service` starts the OSD from. Finding
//! them by number or by data device, and erasing the store one of them describes.
//!
//! # What it must never do
//! - Erase more than the superblocks: the OSD refuses a store without them, and the data
//!   blocks are the cluster's business (they were recovered elsewhere, or the operator has
//!   decided to lose them).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use vitastor_blockstore::BlockstoreConfig;

use super::ToolError;

/// Bytes zeroed at each superblock: every copy fits in its first sector, and 4 KiB keeps
/// the write aligned for any device.
const SUPERBLOCK_WIPE: usize = 4096;

/// One `osd<N>.json`.
#[derive(Debug)]
pub struct OsdConfigFile {
    /// N.
    pub osd_num: u64,
    /// The file.
    pub path: PathBuf,
    /// The store it opens.
    pub store: BlockstoreConfig,
}

/// The config file of OSD `osd_num` in `dir`.
pub fn config_path(dir: &Path, osd_num: u64) -> PathBuf {
    dir.join(format!("osd{osd_num}.json"))
}

fn osd_num_of_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("osd")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// Every `osd<N>.json` in `dir`, by number; a missing directory holds none.
pub fn scan(dir: &Path) -> Result<Vec<OsdConfigFile>, ToolError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ToolError::io(format!("read {}", dir.display()), e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ToolError::io(format!("read {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(osd_num) = name.to_str().and_then(osd_num_of_file_name) else {
            continue;
        };
        found.push(read(osd_num, entry.path())?);
    }
    found.sort_by_key(|o| o.osd_num);
    Ok(found)
}

fn read(osd_num: u64, path: PathBuf) -> Result<OsdConfigFile, ToolError> {
    let bad = |why: String| ToolError::Invalid(format!("{}: {why}", path.display()));
    let text =
        std::fs::read(&path).map_err(|e| ToolError::io(format!("read {}", path.display()), e))?;
    let map: Map<String, Value> = match serde_json::from_slice(&text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(bad("not a JSON object".into())),
        Err(e) => return Err(bad(e.to_string())),
    };
    let store = BlockstoreConfig::from_map(&map).map_err(|e| bad(e.to_string()))?;
    Ok(OsdConfigFile {
        osd_num,
        path,
        store,
    })
}

/// The config in `dir` whose data device is `device` (compared as absolute paths, without
/// resolving symlinks, as `prepare` writes them).
pub fn find_by_device(dir: &Path, device: &Path) -> Result<OsdConfigFile, ToolError> {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let want = abs(device);
    scan(dir)?
        .into_iter()
        .find(|o| abs(&o.store.data_device) == want)
        .ok_or_else(|| {
            ToolError::Invalid(format!(
                "no OSD config in {} names {} as its data device",
                dir.display(),
                device.display()
            ))
        })
}

/// Zeroes the store's superblock and its copy at the start of the data area, so neither
/// the OSD nor `prepare` (without --force) takes the device for a store any more. Refused
/// while a process holds the device lock every OSD takes at open, so a running OSD (even
/// one etcd cannot be asked about) keeps its store.
pub fn erase_superblocks(osd: &OsdConfigFile) -> Result<(), ToolError> {
    let s = &osd.store;
    let zeros = vec![0u8; SUPERBLOCK_WIPE];
    let areas = [
        (s.meta_path(), s.meta_offset.unwrap_or(0)),
        (s.data_device.clone(), s.data_offset.unwrap_or(0)),
    ];
    // Every device locked before anything is written, each once (a second flock of the
    // same file through another descriptor would conflict with our own first one); the
    // locks go with the files.
    let mut files: Vec<(PathBuf, std::fs::File)> = Vec::new();
    for (path, _) in &areas {
        if files.iter().any(|(p, _)| p == path) {
            continue;
        }
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| ToolError::io(format!("open {}", path.display()), e))?;
        // SAFETY: flock on a descriptor owned by `f`, which outlives the call.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                ToolError::Invalid(format!(
                    "{} is in use (a running OSD holds its lock); stop OSD {} first",
                    path.display(),
                    osd.osd_num
                ))
            } else {
                ToolError::io(format!("lock {}", path.display()), e)
            });
        }
        files.push((path.clone(), f));
    }
    for (path, offset) in &areas {
        let (_, f) = files
            .iter()
            .find(|(p, _)| p == path)
            .expect("every area's device was opened above");
        f.write_all_at(&zeros, *offset)
            .and_then(|()| f.sync_all())
            .map_err(|e| ToolError::io(format!("erase the superblock of {}", path.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_osd_number_files_are_configs() {
        assert_eq!(osd_num_of_file_name("osd12.json"), Some(12));
        for other in ["vitastor.conf", "osd.json", "osdx.json", "osd1.json.bak"] {
            assert_eq!(osd_num_of_file_name(other), None, "{other}");
        }
    }
}
