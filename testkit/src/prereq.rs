//! What a test needs from the machine besides our own programs: external tools (fio,
//! qemu-img, nbdinfo, gcc...) and things only the machine can offer (root, a kernel module).
//!
//! `make setup` installs every tool, so a missing tool **fails** the test with what to install.
//! For local runs, `VITASTOR_ALLOW_SKIP=1` turns that failure into a skip. A skip is never
//! silent (libtest would count the test as passed): it is printed and appended as one line
//! to `target/<profile>/skipped-tests.txt`, which `make test` empties first and prints at the
//! end. What setup cannot provide (no NBD kernel module, not root) is skipped and recorded
//! the same way, with or without the variable.
//!
//! This module never reports a prerequisite as present without having found it, and never
//! sets `VITASTOR_ALLOW_SKIP` itself.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::artifacts;

/// The environment variable that allows skipping tests whose tools are missing (value `1`).
pub const ALLOW_SKIP_VAR: &str = "VITASTOR_ALLOW_SKIP";

/// File name of the skip summary inside `target/<profile>/`.
pub const SKIP_SUMMARY: &str = "skipped-tests.txt";

/// True when every tool is an executable file on `PATH` (a name with a `/` is taken as the
/// path itself).
///
/// A missing tool fails the test (panics, naming the tools and `make setup`) unless
/// `VITASTOR_ALLOW_SKIP=1`; then the skip is recorded and `false` returned, and the test
/// must return at once: `if !require_tools(&["fio"]) { return; }`.
#[must_use]
pub fn require_tools(tools: &[&str]) -> bool {
    Prereqs::from_env().require_tools(tools)
}

/// Like [`require_tools`] for something else `make setup` prepares (e.g. the VM test's
/// kernel): `Err(why)` fails the test, or with `VITASTOR_ALLOW_SKIP=1` records a skip and
/// returns `None`.
#[must_use]
pub fn require<T>(found: Result<T, String>) -> Option<T> {
    Prereqs::from_env().require(found)
}

/// Records (and prints) that the calling test skips `what` because the machine cannot do it
/// and setup cannot change that (no kernel module, not root). Never fails the test.
pub fn skip_unavailable(what: &str) {
    Prereqs::from_env().record(what);
}

/// Where `tool` is on `PATH`, or `tool` itself when it contains a `/`; `None` when that is
/// not an executable file.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if tool.contains('/') {
        return executable(Path::new(tool)).then(|| PathBuf::from(tool));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| executable(p))
}

/// The policy with its two inputs explicit (the functions above read them from the process).
#[derive(Debug, Clone)]
pub struct Prereqs {
    /// Skip instead of failing when a tool is missing.
    pub allow_skip: bool,
    /// The summary file skips are appended to.
    pub summary: PathBuf,
    /// Names the test in the summary (`binary::test`).
    pub test: String,
}

impl Prereqs {
    /// `VITASTOR_ALLOW_SKIP`, `target/<profile>/skipped-tests.txt` and the running test.
    pub fn from_env() -> Prereqs {
        Prereqs {
            allow_skip: std::env::var(ALLOW_SKIP_VAR).is_ok_and(|v| v == "1"),
            summary: artifacts::profile_dir().join(SKIP_SUMMARY),
            test: current_test(),
        }
    }

    /// See [`require_tools`].
    #[must_use]
    pub fn require_tools(&self, tools: &[&str]) -> bool {
        let missing: Vec<&str> = tools
            .iter()
            .copied()
            .filter(|t| find_tool(t).is_none())
            .collect();
        let found = if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} not installed (`make setup` installs it)",
                missing.join(", ")
            ))
        };
        self.require(found).is_some()
    }

    /// See [`require`].
    #[must_use]
    pub fn require<T>(&self, found: Result<T, String>) -> Option<T> {
        match found {
            Ok(v) => Some(v),
            Err(why) if self.allow_skip => {
                self.record(&why);
                None
            }
            Err(why) => panic!(
                "{}: {why}; set {ALLOW_SKIP_VAR}=1 to skip such tests in a local run",
                self.test
            ),
        }
    }

    /// Prints the skip and appends it to the summary file.
    pub fn record(&self, why: &str) {
        let line = format!("{}: {why}", self.test);
        eprintln!("SKIPPED {line}");
        let appended = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.summary)
            // One write of one line: O_APPEND keeps parallel tests' lines whole.
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = appended {
            panic!(
                "cannot record the skip in {}: {e} (a skip must not be silent)",
                self.summary.display()
            );
        }
    }
}

/// `binary::test`: the test binary's name without cargo's hash, and the test's name (libtest
/// runs each test on a thread named after it).
fn current_test() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .and_then(|s| s.to_str())
        .unwrap_or("?");
    let binary = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => stem,
    };
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => format!("{binary}::{name}"),
        _ => binary.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prereqs(allow_skip: bool, dir: &Path) -> Prereqs {
        Prereqs {
            allow_skip,
            summary: dir.join(SKIP_SUMMARY),
            test: "bin::some_test".into(),
        }
    }

    #[test]
    fn present_tools_pass_without_a_record() {
        let dir = tempfile::tempdir().unwrap();
        assert!(prereqs(false, dir.path()).require_tools(&["sh", "ls", "/bin/sh"]));
        assert!(!dir.path().join(SKIP_SUMMARY).exists());
    }

    #[test]
    fn a_missing_tool_fails_the_test_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let p = prereqs(false, dir.path());
        let err = std::panic::catch_unwind(|| p.require_tools(&["sh", "no-such-tool-x1"]))
            .expect_err("a missing tool must fail");
        assert!(std::panic::catch_unwind(|| p.require_tools(&["/no/such/fio"])).is_err());
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("no-such-tool-x1 not installed") && msg.contains("make setup"),
            "{msg}"
        );
        assert!(msg.contains(ALLOW_SKIP_VAR), "{msg}");
        assert!(!dir.path().join(SKIP_SUMMARY).exists());
    }

    #[test]
    fn allowed_skips_are_listed_in_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let p = prereqs(true, dir.path());
        assert!(!p.require_tools(&["no-such-tool-x1"]));
        assert_eq!(p.require(Err::<(), _>("no VM kernel".into())), None);
        assert_eq!(p.require(Ok::<_, String>(7)), Some(7));
        p.record("no /dev/nbd0");
        let text = std::fs::read_to_string(dir.path().join(SKIP_SUMMARY)).unwrap();
        assert_eq!(
            text,
            "bin::some_test: no-such-tool-x1 not installed (`make setup` installs it)\n\
             bin::some_test: no VM kernel\n\
             bin::some_test: no /dev/nbd0\n"
        );
    }

    #[test]
    fn the_test_is_named_after_its_thread() {
        let name = std::thread::Builder::new()
            .name("mod::case".into())
            .spawn(current_test)
            .unwrap()
            .join()
            .unwrap();
        assert!(name.ends_with("::mod::case"), "{name}");
        assert!(name.starts_with("vitastor_testkit"), "{name}");
    }
}
