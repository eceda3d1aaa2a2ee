//! Our own programs and libraries as tests run them: found in this workspace's
//! `target/<profile>/` and built by cargo first when missing or older than their sources.
//!
//! Cargo only builds, before a package's tests, that package's binaries (`CARGO_BIN_EXE_*`).
//! Tests that spawn another package's binary (an OSD from the fio tests) or load a cdylib
//! (`libvitastor.so`, which cargo never uplifts for a dependent's tests) get it through
//! [`fresh`], so they never test a stale build. Freshness is judged like cargo does it for
//! path dependencies, from the dep-info file cargo writes beside the artifact (every source
//! file, including build-script inputs): a file newer than the artifact means a rebuild,
//! `cargo build --release -p <package> --bin <name>` (or `--lib`), once per artifact and
//! test process.
//!
//! Tests only: `devcluster` and scripts use the binaries next to them and never run cargo.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::{process, TestkitError};

/// A full rebuild of the OSD on two cores takes a few minutes; this bounds a stuck cargo.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

enum Kind {
    Bin,
    Lib,
}

/// Every artifact tests run: (file in `target/<profile>`, package, kind).
const ARTIFACTS: &[(&str, &str, Kind)] = &[
    ("vitastor-osd", "vitastor-osd", Kind::Bin),
    ("vitastor-disk", "vitastor-osd", Kind::Bin),
    ("vitastor-mon", "vitastor-mon", Kind::Bin),
    ("vitastor-cli", "vitastor-cli", Kind::Bin),
    ("vitastor-rm", "vitastor-cli", Kind::Bin),
    ("vitastor-nbd", "vitastor-nbd", Kind::Bin),
    ("devcluster", "vitastor-testkit", Kind::Bin),
    ("libvitastor.so", "vitastor-client", Kind::Lib),
    ("libfio_vitastor.so", "vitastor-fio", Kind::Lib),
];

/// `target/<profile>` of the running executable: test binaries live in its `deps/`,
/// examples in `examples/`, binaries in it.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running executable");
    let dir = exe.parent().expect("executable has a directory");
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("deps" | "examples") => dir.parent().expect("target/<profile>").to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

/// The workspace's root directory (where cargo is run).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

/// The path of `file` (a name from the table above, e.g. `vitastor-osd`, `libvitastor.so`)
/// in `target/<profile>/`, built first if it is missing or stale.
pub fn fresh(file: &str) -> Result<PathBuf, TestkitError> {
    static DONE: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    // Held across the build: a second test asking for the same artifact waits for it.
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    let done = done.get_or_insert_with(HashMap::new);
    if let Some(path) = done.get(file) {
        return Ok(path.clone());
    }
    let (_, package, kind) = ARTIFACTS
        .iter()
        .find(|(f, _, _)| *f == file)
        .ok_or_else(|| {
            build_error(
                file,
                "not a workspace artifact known to testkit's artifacts table".into(),
            )
        })?;
    let profile = profile_dir();
    let path = profile.join(file);
    if let Some(why) = staleness(&path) {
        eprintln!("testkit: building {file} ({why})");
        build(&profile, package, kind, file)?;
        if !path.exists() {
            return Err(build_error(
                file,
                format!(
                    "cargo build succeeded but {} does not exist",
                    path.display()
                ),
            ));
        }
    }
    done.insert(file.to_string(), path.clone());
    Ok(path)
}

/// [`fresh`] for a test: panics with the reason (cargo's errors) when it cannot be built.
pub fn fresh_path(file: &str) -> PathBuf {
    fresh(file).unwrap_or_else(|e| panic!("{e}"))
}

fn build_error(file: &str, detail: String) -> TestkitError {
    TestkitError::Build {
        what: file.to_string(),
        detail,
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Why `artifact` must be built, or `None` when it is newer than every file its dep-info
/// (`<stem>.d` beside it) lists.
fn staleness(artifact: &Path) -> Option<String> {
    let Some(built) = mtime(artifact) else {
        return Some("missing".into());
    };
    let stem = artifact.file_name()?.to_str()?;
    let dep_info = artifact.with_file_name(format!("{}.d", stem.trim_end_matches(".so")));
    let Ok(text) = fs::read_to_string(&dep_info) else {
        return Some(format!("no {}", dep_info.display()));
    };
    let root = workspace_root();
    for source in dep_info_sources(&text) {
        let source = root.join(source);
        match mtime(&source) {
            None => return Some(format!("{} is gone", source.display())),
            Some(t) if t > built => return Some(format!("{} is newer", source.display())),
            Some(_) => {}
        }
    }
    None
}

/// The prerequisites of a makefile-style dep-info file (`target: a.rs b\ c.rs`; a backslash
/// escapes a space).
fn dep_info_sources(text: &str) -> Vec<String> {
    let mut sources = Vec::new();
    for line in text.lines() {
        // The target is an absolute path: the first ": " ends it.
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        let mut current = String::new();
        let mut chars = deps.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => current.extend(chars.next()),
                ' ' => {
                    if !current.is_empty() {
                        sources.push(std::mem::take(&mut current));
                    }
                }
                _ => current.push(c),
            }
        }
        if !current.is_empty() {
            sources.push(current);
        }
    }
    sources
}

fn build(profile: &Path, package: &str, kind: &Kind, file: &str) -> Result<(), TestkitError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", profile.parent().expect("target dir"))
        .args(["build", "-p", package]);
    match kind {
        Kind::Bin => cmd.args(["--bin", file]),
        Kind::Lib => cmd.arg("--lib"),
    };
    match profile.file_name().and_then(|n| n.to_str()) {
        Some("release") => {
            cmd.arg("--release");
        }
        Some("debug") | None => {}
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let out = process::output_within(&mut cmd, BUILD_TIMEOUT)?;
    if out.status.success() {
        return Ok(());
    }
    Err(build_error(
        file,
        format!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_parsing() {
        let text = "/t/release/vitastor-osd: /w/osd/src/a.rs /w/with\\ space.rs\n\n\
                    /w/osd/src/a.rs:\n";
        assert_eq!(
            dep_info_sources(text),
            vec![
                "/w/osd/src/a.rs".to_string(),
                "/w/with space.rs".to_string()
            ]
        );
    }

    #[test]
    fn an_artifact_older_than_a_source_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.rs");
        let bin = dir.path().join("prog");
        fs::write(&src, "fn main() {}").unwrap();
        assert_eq!(staleness(&bin).as_deref(), Some("missing"));
        fs::write(&bin, "").unwrap();
        assert!(staleness(&bin).unwrap().starts_with("no "), "no dep-info");
        fs::write(
            dir.path().join("prog.d"),
            format!("{}: {}\n", bin.display(), src.display()),
        )
        .unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(staleness(&bin), None);
        fs::File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        assert!(staleness(&bin).unwrap().ends_with("is newer"));
        fs::remove_file(&src).unwrap();
        assert!(staleness(&bin).unwrap().ends_with("is gone"));
    }

    #[test]
    fn unknown_artifacts_are_refused() {
        let err = fresh("no-such-program").unwrap_err().to_string();
        assert!(err.contains("no-such-program"), "{err}");
    }
}
