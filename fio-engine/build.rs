//! Compiles the C engine (`src/fio_vitastor.c`) against the headers of the installed fio and
//! links the cdylib to libvitastor.so.
//!
//! - fio's headers: `$FIO_SRC_DIR`, else what `scripts/fio-headers.sh --find` prints
//!   (prepared by `make setup`). The flags are the ones fio compiles itself with, so struct
//!   layouts match the fio binary.
//! - libvitastor.so: linked against a stub with its soname, found at run time through an
//!   rpath of `$ORIGIN` (`target/<profile>/libvitastor.so.0`) or the library path; see
//!   `vitastor-build-support`.

use std::env;
use std::path::{Path, PathBuf};

use vitastor_build_support::{libvitastor_stub, prepared_sources, profile_dir, soname_link};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("fio-engine/ lives in the workspace root");
    println!("cargo:rerun-if-changed=src/fio_vitastor.c");
    println!("cargo:rerun-if-changed=../include/vitastor_c.h");
    // A fio upgrade or reinstall touches this file; the engine must then be rebuilt against
    // the new version's headers.
    if Path::new("/var/lib/dpkg/info/fio.list").exists() {
        println!("cargo:rerun-if-changed=/var/lib/dpkg/info/fio.list");
    }

    let fio = prepared_sources(root, "fio-headers.sh", "FIO_SRC_DIR", "fio");
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
    let stub_dir = libvitastor_stub(&[manifest.join("src/fio_vitastor.c")], &out_dir);
    println!("cargo:rustc-link-search=native={}", stub_dir.display());
    println!("cargo:rustc-link-lib=dylib=vitastor");
    // `$ORIGIN` reaches the linker literally (no shell in between).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN");
    // fio dlclose()s engines between jobs; the Rust runtime in libvitastor.so (and its
    // thread-locals) must never be unloaded under a live thread, and the ops pointer must
    // stay the same across reloads.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");

    soname_link(&profile_dir(&out_dir));
}
