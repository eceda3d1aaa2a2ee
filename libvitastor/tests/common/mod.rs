//! Building C programs against `include/vitastor_c.h` and the `libvitastor.so` cargo built
//! for this test run, for the tests that check the C ABI from C.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/<profile>`: test binaries live in `target/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// A C program compiled into `dir` (`-Wall -Werror`), with a `libvitastor.so.0` beside it
/// for the loader (the binary records the soname). `None`, with the reason printed, when gcc
/// or the library is not there.
pub struct CProgram {
    bin: PathBuf,
    dir: PathBuf,
}

impl CProgram {
    pub fn build(source: &str, dir: &Path) -> Option<CProgram> {
        if Command::new("gcc").arg("--version").output().is_err() {
            println!("skipped: gcc is not installed");
            return None;
        }
        let profile = profile_dir();
        let Some(lib) = [profile.clone(), profile.join("deps")]
            .into_iter()
            .find(|d| d.join("libvitastor.so").exists())
        else {
            println!("skipped: libvitastor.so was not built next to this test binary");
            return None;
        };
        let (src, bin) = (dir.join("t.c"), dir.join("t"));
        std::fs::write(&src, source).unwrap();
        let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
        let out = Command::new("gcc")
            .args(["-std=c99", "-D_DEFAULT_SOURCE", "-Wall", "-Werror", "-o"])
            .arg(&bin)
            .arg(&src)
            .arg(format!("-I{}", include.display()))
            .arg(format!("-L{}", lib.display()))
            .arg("-lvitastor")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gcc failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::os::unix::fs::symlink(lib.join("libvitastor.so"), dir.join("libvitastor.so.0"))
            .unwrap();
        Some(CProgram {
            bin,
            dir: dir.to_path_buf(),
        })
    }

    /// Runs it with `args`; panics with its output unless it exits 0.
    pub fn run(&self, args: &[&str]) -> Output {
        let run = Command::new(&self.bin)
            .args(args)
            .env("LD_LIBRARY_PATH", &self.dir)
            .output()
            .unwrap();
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
