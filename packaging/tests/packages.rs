//! The Debian packages as `make deb` builds them from the release build (built once per test
//! run, ~30 s): each package holds exactly the files README.md's table names, its relations
//! are right (shlibs, the exact fio and QEMU versions, etcd-server recommended), the
//! maintainer scripts never start a daemon or touch data, lintian finds no error, and the
//! systemd units pass `systemd-analyze verify` as installed (against the packages' own
//! binaries).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use vitastor_testkit::{artifacts, require_tools};

const PACKAGES: [&str; 7] = [
    "vitastor-osd",
    "vitastor-mon",
    "vitastor-client",
    "vitastor-client-dev",
    "vitastor-fio",
    "vitastor-qemu",
    "vitastor",
];
const TOOLS: [&str; 5] = [
    "dpkg-buildpackage",
    "dh",
    "dpkg-deb",
    "lintian",
    "systemd-analyze",
];

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `target/debian`, with the packages built once for this test process.
fn debs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        for a in [
            "vitastor-osd",
            "vitastor-disk",
            "vitastor-mon",
            "vitastor-cli",
            "vitastor-rm",
            "vitastor-nbd",
            "libvitastor.so",
            "libfio_vitastor.so",
        ] {
            artifacts::fresh_path(a);
        }
        let release = artifacts::profile_dir();
        for qemu in ["block-vitastor.so", "vitastor-qemu-preload"] {
            assert!(
                release.join(qemu).exists(),
                "{qemu} is missing from {}: run make build",
                release.display()
            );
        }
        let target = release.parent().unwrap();
        run(
            Command::new(artifacts::workspace_root().join("packaging/make-deb.sh"))
                .env("CARGO_TARGET_DIR", target),
        );
        target.join("debian")
    })
}

fn deb(package: &str) -> PathBuf {
    let arch = if package == "vitastor" {
        "all"
    } else {
        "amd64"
    };
    let version = env!("CARGO_PKG_VERSION");
    debs().join(format!("{package}_{version}_{arch}.deb"))
}

fn field(package: &str, name: &str) -> String {
    run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb(package))
        .arg(name))
    .trim()
    .to_string()
}

fn installed_version(package: &str) -> String {
    run(Command::new("dpkg-query").args(["-W", "-f=${Version}", package]))
}

/// README.md's table of package contents: the rows after the marker line, as
/// (package, files): the first cell's backticked name, the second cell's backticked paths.
fn readme_contents() -> Vec<(String, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(artifacts::workspace_root().join("README.md")).unwrap();
    let marker = "<!-- package contents: checked by packaging/tests/packages.rs -->";
    let start = readme
        .find(marker)
        .expect("README.md has the package table marker");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    readme[start + marker.len()..]
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| {
            let cells: Vec<&str> = row.split('|').collect();
            let name = ticked(cells.get(1)?).into_iter().next()?;
            Some((name, ticked(cells.get(2)?).into_iter().collect()))
        })
        .collect()
}

/// The files and symlinks of a package, without directories and its /usr/share/doc.
fn deb_contents(package: &str) -> BTreeSet<String> {
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(deb(package)));
    listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| {
            let path = l.split_whitespace().nth(5)?;
            Some(path.trim_start_matches('.').to_string())
        })
        .filter(|p| !p.starts_with(&format!("/usr/share/doc/{package}/")))
        .collect()
}

#[test]
fn every_package_holds_what_the_readme_lists() {
    if !require_tools(&TOOLS) {
        return;
    }
    let table = readme_contents();
    let named: Vec<&str> = table.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(named, PACKAGES, "README.md's table lists these packages");
    for (package, files) in &table {
        assert_eq!(&deb_contents(package), files, "{package}");
    }
}

#[test]
fn relations_name_the_right_packages_and_versions() {
    if !require_tools(&TOOLS) {
        return;
    }
    let osd = field("vitastor-osd", "Depends");
    assert!(osd.contains("libc6"), "shlibs: {osd}");
    assert_eq!(field("vitastor-mon", "Recommends"), "etcd-server");
    let fio = field("vitastor-fio", "Depends");
    assert!(
        fio.contains(&format!("fio (= {})", installed_version("fio"))),
        "{fio}"
    );
    assert!(fio.contains("vitastor-client (= "), "{fio}");
    let qemu = field("vitastor-qemu", "Depends");
    assert!(
        qemu.contains(&format!(
            "qemu-utils (= {})",
            installed_version("qemu-utils")
        )),
        "{qemu}"
    );
    assert!(qemu.contains("libglib2.0-0"), "shlibs: {qemu}");
    let meta = field("vitastor", "Depends");
    for p in ["vitastor-osd", "vitastor-mon", "vitastor-client"] {
        assert!(meta.contains(p), "{meta}");
    }
}

#[test]
fn maintainer_scripts_never_start_daemons_or_touch_data() {
    if !require_tools(&TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for package in PACKAGES {
        let control = dir.path().join(package);
        run(Command::new("dpkg-deb")
            .arg("--control")
            .arg(deb(package))
            .arg(&control));
        for script in ["preinst", "postinst", "prerm", "postrm"] {
            let Ok(text) = std::fs::read_to_string(control.join(script)) else {
                continue;
            };
            for bad in [
                "deb-systemd-invoke",
                "systemctl start",
                "systemctl restart",
                "vitastor-disk",
                "rm -",
                "/var/lib/vitastor",
                "/etc/vitastor/osd",
            ] {
                assert!(
                    !text.contains(bad),
                    "{package} {script} contains {bad:?}:\n{text}"
                );
            }
        }
        let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap_or_default();
        let want = if package == "vitastor-client" {
            "/etc/vitastor/vitastor.conf\n"
        } else {
            ""
        };
        assert_eq!(conffiles, want, "{package} conffiles");
    }
}

#[test]
fn lintian_finds_no_error() {
    if !require_tools(&TOOLS) {
        return;
    }
    let debs: Vec<PathBuf> = PACKAGES.iter().map(|p| deb(p)).collect();
    // Exit status 1 means "tags were emitted" (warnings included): judge by the tags.
    let out = Command::new("lintian")
        .args(["--no-tag-display-limit", "--fail-on", "error"])
        .args(&debs)
        .output()
        .expect("run lintian");
    let text = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(
        errors.is_empty() && out.status.success(),
        "lintian errors:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn units_verify_as_installed() {
    if !require_tools(&TOOLS) {
        return;
    }
    // A root with the packages unpacked (so ExecStart= names real binaries) and this
    // machine's systemd units (the targets ours refer to).
    let root = tempfile::tempdir().unwrap();
    for package in PACKAGES {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb(package))
            .arg(root.path()));
    }
    let units = root.path().join("lib/systemd/system");
    run(Command::new("cp")
        .args(["-an", "/lib/systemd/system/."])
        .arg(&units));
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .arg(units.join("vitastor.target"))
        .arg(units.join("vitastor-mon.service"))
        .arg(units.join("vitastor-osd@1.service"))
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
