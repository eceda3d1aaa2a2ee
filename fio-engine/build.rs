//! Compiles the C engine (`src/fio_vitastor.c`) against the headers of the installed fio and
//! links the cdylib to libvitastor.so.
//!
//! - fio's headers: `$FIO_SRC_DIR`, else the directory `scripts/fio-headers.sh --find` prints
//!   (prepared by `make setup`; this script never installs anything itself). The flags are
//!   the ones fio compiles itself with, so struct layouts match the fio binary.
//! - libvitastor.so: the engine is linked against a stub with the same soname
//!   (`libvitastor.so.0`) that defines every `vitastor_c_*` function the C file calls, built
//!   here in OUT_DIR. So linking never waits for, or races with, the real library (which
//!   Cargo may still be building in parallel), and no dependency on vitastor-client leaks
//!   its link arguments into this cdylib. At run time the engine finds the real library
//!   through an rpath of `$ORIGIN` (i.e. `target/release/libvitastor.so.0` beside
//!   `target/release/libfio_vitastor.so`) or `LD_LIBRARY_PATH` / the system paths; the
//!   `libvitastor.so.0 -> deps/libvitastor.so` link in the profile directory is made here
//!   because nothing else in a Cargo build creates soname links.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fio_headers(root: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("FIO_SRC_DIR") {
        return PathBuf::from(dir);
    }
    let script = root.join("scripts/fio-headers.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--find")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last() {
        Some(dir) if out.status.success() && !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "fio headers are not prepared: run `make setup` or scripts/fio-headers.sh \
             (or set FIO_SRC_DIR to a configured fio source tree of the installed version)\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Builds `<out>/stub/libvitastor.so` (soname `libvitastor.so.0`) defining every
/// `vitastor_c_*` name that `engine` mentions, and returns its directory. The stub is only
/// linked against, never loaded: the bodies do not matter, the names and soname do.
fn link_stub(engine: &Path, out: &Path) -> PathBuf {
    let text = std::fs::read_to_string(engine)
        .unwrap_or_else(|e| panic!("reading {}: {e}", engine.display()));
    let mut names: Vec<&str> = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("vitastor_c_") {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Calls only (`name(`), not the `vitastor_c` type.
        if tail[len..].starts_with('(') {
            names.push(&tail[..len]);
        }
        rest = &tail[len..];
    }
    names.sort_unstable();
    names.dedup();
    let dir = out.join("stub");
    std::fs::create_dir_all(&dir).expect("creating the stub directory");
    let src = dir.join("stub.c");
    let body: String = names
        .iter()
        .map(|n| format!("void {n}(void) {{}}\n"))
        .collect();
    std::fs::write(&src, body).expect("writing the stub source");
    let compiler = cc::Build::new().get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-Wl,-soname,libvitastor.so.0", "-o"])
        .arg(dir.join("libvitastor.so"))
        .arg(&src)
        .status()
        .expect("running the C compiler for the link stub");
    assert!(
        status.success(),
        "building the libvitastor link stub failed"
    );
    dir
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("fio-engine/ lives in the workspace root");
    println!("cargo:rerun-if-changed=src/fio_vitastor.c");
    println!("cargo:rerun-if-changed=../include/vitastor_c.h");
    println!("cargo:rerun-if-changed=../scripts/fio-headers.sh");
    println!("cargo:rerun-if-env-changed=FIO_SRC_DIR");
    // A fio upgrade or reinstall touches this file; the engine must then be rebuilt against
    // the new version's headers.
    if Path::new("/var/lib/dpkg/info/fio.list").exists() {
        println!("cargo:rerun-if-changed=/var/lib/dpkg/info/fio.list");
    }

    let fio = fio_headers(root);
    let config_host = fio.join("config-host.h");
    assert!(
        config_host.exists(),
        "{} is missing: the fio tree is not configured",
        config_host.display()
    );
    println!("cargo:rerun-if-changed={}", config_host.display());

    cc::Build::new()
        .file("src/fio_vitastor.c")
        // -Wall -Werror is the bar; cc's default -Wextra trips over fio's own headers.
        .warnings(true)
        .extra_warnings(false)
        .warnings_into_errors(true)
        .flag("-std=gnu99")
        .flag("-Wwrite-strings")
        .flag("-Wdeclaration-after-statement")
        .define("_GNU_SOURCE", None)
        .define("_LARGEFILE_SOURCE", None)
        .define("_FILE_OFFSET_BITS", "64")
        .define("FIO_INC_DEBUG", None)
        .define("BITS_PER_LONG", "64")
        .flag("-include")
        .flag(config_host.to_str().expect("UTF-8 path"))
        .include(&fio)
        .include(root.join("include"))
        .compile("fio_vitastor_engine");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let stub_dir = link_stub(&manifest.join("src/fio_vitastor.c"), &out_dir);
    println!("cargo:rustc-link-search=native={}", stub_dir.display());
    println!("cargo:rustc-link-lib=dylib=vitastor");
    // `$ORIGIN` reaches the linker literally (no shell in between).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN");
    // fio dlclose()s engines between jobs; the Rust runtime in libvitastor.so (and its
    // thread-locals) must never be unloaded under a live thread, and the ops pointer must
    // stay the same across reloads.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR has the usual depth")
        .to_path_buf();
    // Cargo always leaves the newest libvitastor.so in deps/, but copies it up to the
    // profile directory only when it is built as a root (not as a test's dependency).
    let soname_link = profile_dir.join("libvitastor.so.0");
    let target = Path::new("deps/libvitastor.so");
    if std::fs::read_link(&soname_link).ok().as_deref() != Some(target) {
        let _ = std::fs::remove_file(&soname_link);
        if let Err(e) = std::os::unix::fs::symlink(target, &soname_link) {
            println!(
                "cargo:warning=could not create {}: {e}; set LD_LIBRARY_PATH to a directory \
                 with libvitastor.so.0",
                soname_link.display()
            );
        }
    }
}
