//! What the build scripts of the C plugins over `vitastor_c.h` (`fio-engine`,
//! `qemu-driver`) share: finding the prepared headers of the installed host program, linking
//! against libvitastor without depending on the vitastor-client crate, and the soname link
//! that lets `$ORIGIN` find the library at run time.
//!
//! Why not a plain dependency on vitastor-client: Cargo passes a dependency's
//! `rustc-cdylib-link-arg` (libvitastor's `-soname`) on to dependent cdylibs
//! (rust-lang/cargo#9562), which would give the plugin libvitastor's soname.
//!
//! It must never install anything: `make setup` prepares the headers.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The configured source tree of `what` (fio, QEMU): `$env_var` if set, else the directory
/// `scripts/<script> --find` prints. Panics with what to run when it is not prepared.
pub fn prepared_sources(root: &Path, script: &str, env_var: &str, what: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={env_var}");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("scripts").join(script).display()
    );
    if let Some(dir) = std::env::var_os(env_var) {
        return PathBuf::from(dir);
    }
    let script = root.join("scripts").join(script);
    let out = Command::new("bash")
        .arg(&script)
        .arg("--find")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last() {
        Some(dir) if out.status.success() && !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "{what} headers are not prepared: run `make setup` or {} (or set {env_var} to a \
             configured {what} tree of the installed version)\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Builds `<out>/stub/libvitastor.so` (soname `libvitastor.so.0`) defining every
/// `vitastor_c_*` function the `sources` call, and returns its directory. The stub is only
/// linked against, never loaded: the names and the soname matter, the bodies do not. So
/// linking never waits for, or races with, the real library Cargo may still be building.
pub fn libvitastor_stub(sources: &[PathBuf], out: &Path) -> PathBuf {
    let mut names: Vec<String> = Vec::new();
    for src in sources {
        let text = std::fs::read_to_string(src)
            .unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        let mut rest = text.as_str();
        while let Some(at) = rest.find("vitastor_c_") {
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            // Calls only (`name(`), not the `vitastor_c` type.
            if tail[len..].starts_with('(') {
                names.push(tail[..len].to_string());
            }
            rest = &tail[len..];
        }
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
    let status = cc::Build::new()
        .get_compiler()
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

/// `target/<profile>` from OUT_DIR (`<target>/<profile>/build/<pkg>-<hash>/out`).
pub fn profile_dir(out: &Path) -> PathBuf {
    out.ancestors()
        .nth(3)
        .expect("OUT_DIR has the usual depth")
        .to_path_buf()
}

/// Makes `<profile>/libvitastor.so.0 -> deps/libvitastor.so`, which an rpath of `$ORIGIN`
/// finds: Cargo leaves the newest libvitastor.so in deps/, but copies it up to the profile
/// directory only when it is built as a root (not as a test's dependency), and nothing in a
/// Cargo build creates soname links.
pub fn soname_link(profile_dir: &Path) {
    let link = profile_dir.join("libvitastor.so.0");
    let target = Path::new("deps/libvitastor.so");
    if std::fs::read_link(&link).ok().as_deref() != Some(target) {
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(target, &link) {
            println!(
                "cargo:warning=could not create {}: {e}; set LD_LIBRARY_PATH to a directory \
                 with libvitastor.so.0",
                link.display()
            );
        }
    }
}
