//! Building C programs against `include/vitastor_c.h` and the `libvitastor.so` of this
//! workspace (rebuilt first when stale), and running them with a deadline, for the tests that
//! check the C ABI from C.

// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use vitastor_testkit::{artifacts, process, require_tools, TestkitError};

/// Upper bound on one run of a test's C program; the C programs bound each of their own
/// waits well below it, so this only catches a program stuck outside them.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// A C program compiled into `dir` (`-Wall -Werror`), with a `libvitastor.so.0` beside it
/// for the loader (the binary records the soname).
pub struct CProgram {
    bin: PathBuf,
    dir: PathBuf,
}

impl CProgram {
    /// Compiles `source`; `None` only when gcc is missing and skips are allowed (testkit's
    /// `require_tools`).
    pub fn build(source: &str, dir: &Path) -> Option<CProgram> {
        if !require_tools(&["gcc"]) {
            return None;
        }
        let lib = artifacts::fresh_path("libvitastor.so");
        let lib_dir = lib.parent().expect("target/<profile>");
        let (src, bin) = (dir.join("t.c"), dir.join("t"));
        std::fs::write(&src, source).unwrap();
        let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
        let out = process::output_within(
            Command::new("gcc")
                .args(["-std=c99", "-D_DEFAULT_SOURCE", "-Wall", "-Werror", "-o"])
                .arg(&bin)
                .arg(&src)
                .arg(format!("-I{}", include.display()))
                .arg(format!("-L{}", lib_dir.display()))
                .arg("-lvitastor")
                .stdin(Stdio::null()),
            Duration::from_secs(120),
        )
        .expect("gcc");
        assert!(
            out.status.success(),
            "gcc failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::os::unix::fs::symlink(&lib, dir.join("libvitastor.so.0")).unwrap();
        Some(CProgram {
            bin,
            dir: dir.to_path_buf(),
        })
    }

    /// Runs it with `args`; a program still running after `timeout` is killed (by its PID)
    /// and reported as [`TestkitError::Timeout`] with its output so far.
    pub fn run_within(&self, args: &[&str], timeout: Duration) -> Result<Output, TestkitError> {
        process::output_within(
            Command::new(&self.bin)
                .args(args)
                .env("LD_LIBRARY_PATH", &self.dir)
                .stdin(Stdio::null()),
            timeout,
        )
    }

    /// Runs it with `args`; panics with its output unless it exits 0 within [`RUN_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> Output {
        let run = self
            .run_within(args, RUN_TIMEOUT)
            .unwrap_or_else(|e| panic!("the C program: {e}"));
        assert!(
            run.status.success(),
            "the C program failed ({:?}):\n{}{}",
            run.status.code(),
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        run
    }
}
