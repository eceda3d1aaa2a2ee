//! Throwaway VMs on vitastor disks: qemu-system-x86_64 boots Debian's kernel (extracted
//! from the linux-image package by `scripts/qemu-vm-assets.sh`, never installed) with a
//! busybox initramfs whose `/init` is the test's script; the disk is a `vitastor:` filename
//! as virtio-blk on an iothread, through our QEMU driver (`block-vitastor.so`, preloaded).
//!
//! Owns finding the assets and the driver, the initramfs, the QEMU command line and a
//! running guest whose serial console goes to a file the test reads as it grows. A guest is
//! SIGKILLed by its own PID (tied to the test process) when dropped; nothing here ever
//! signals a process it did not spawn.
//!
//! KVM is used only when /dev/kvm is real hardware virtualization; these machines have PVM
//! (`kvm_pvm`), on which a stock kernel does not boot, so TCG runs the guest there.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::etcd::spawn_tied_to_process;
use crate::{artifacts, TestkitError};

/// The QEMU program every guest runs in.
pub const QEMU_SYSTEM: &str = "qemu-system-x86_64";

/// The kernel/busybox directory prepared by `scripts/qemu-vm-assets.sh` (`make setup`);
/// `Err` says how to prepare it (for [`crate::require`]).
pub fn assets() -> Result<PathBuf, String> {
    let script = artifacts::workspace_root().join("scripts/qemu-vm-assets.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--find")
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last() {
        Some(dir) if out.status.success() && !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => Err(format!(
            "VM kernel/busybox not prepared ({}); `make setup` runs scripts/qemu-vm-assets.sh",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// `kvm` only for hardware KVM (PVM, `kvm_pvm`, cannot boot a stock kernel), else `tcg`.
pub fn accel() -> &'static str {
    let hw = ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| Path::new("/sys/module").join(m).exists());
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if hw && !pvm && usable {
        "kvm"
    } else {
        "tcg"
    }
}

/// `target/<profile>/block-vitastor.so` (written by qemu-driver's build.rs, so a test
/// package needs `vitastor-qemu` among its dev-dependencies) with the `libvitastor.so` it
/// loads through `$ORIGIN` rebuilt first when stale.
pub fn driver() -> Result<PathBuf, TestkitError> {
    artifacts::fresh("libvitastor.so")?;
    let so = artifacts::profile_dir().join("block-vitastor.so");
    if !so.exists() {
        return Err(TestkitError::Build {
            what: "block-vitastor.so".into(),
            detail: format!(
                "{} is missing (built by qemu-driver/build.rs: `cargo build --release -p \
                 vitastor-qemu`)",
                so.display()
            ),
        });
    }
    Ok(so)
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> TestkitError {
    move |source| TestkitError::Io { what, source }
}

/// What every guest's `/init` does first: busybox's applets, /proc, /sys and /dev, the
/// virtio modules, and a wait of up to 10 s for the disk to show as /dev/vda.
const GUEST_BOOT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
modprobe virtio_pci
modprobe virtio_blk
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
"#;

/// The md5 of `data` as md5sum prints it (the guests' busybox checksums with md5sum), through
/// a scratch file in `dir`.
pub fn md5(data: &[u8], dir: &Path) -> Result<String, TestkitError> {
    let f = dir.join("md5.in");
    fs::write(&f, data).map_err(io_err(format!("writing {}", f.display())))?;
    let out = Command::new("md5sum")
        .arg(&f)
        .output()
        .map_err(io_err("running md5sum".into()))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| {
            TestkitError::InvalidOptions(format!("md5sum printed nothing for {}", f.display()))
        })
}

/// Builds `dir/initrd.cpio`, an uncompressed newc initramfs: busybox, the virtio modules,
/// `/init` (the boot every guest shares — mounts, modules, /dev/vda — then `init`, a
/// busybox sh script body) and `files` (name, contents) in its root.
pub fn initramfs(
    assets: &Path,
    dir: &Path,
    init: &str,
    files: &[(&str, &[u8])],
) -> Result<PathBuf, TestkitError> {
    let root = dir.join("initramfs");
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
    }
    let busybox = assets.join("busybox");
    fs::copy(&busybox, root.join("bin/busybox"))
        .map_err(io_err(format!("copying {}", busybox.display())))?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(assets.join("modules/lib"))
        .arg(&root)
        .status()
        .map_err(io_err("running cp".into()))?;
    if !status.success() {
        return Err(TestkitError::InvalidOptions(format!(
            "copying the kernel modules from {} failed ({status})",
            assets.display()
        )));
    }
    let init_path = root.join("init");
    fs::write(&init_path, format!("{GUEST_BOOT}{init}"))
        .map_err(io_err(format!("writing {}", init_path.display())))?;
    fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("chmod {}", init_path.display())))?;
    for (name, data) in files {
        let p = root.join(name);
        fs::write(&p, data).map_err(io_err(format!("writing {}", p.display())))?;
    }
    let image = dir.join("initrd.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && '{bb}' find . | '{bb}' cpio -o -H newc > '{}' 2>/dev/null",
            root.display(),
            image.display(),
            bb = busybox.display()
        ))
        .status()
        .map_err(io_err("running cpio".into()))?;
    if !status.success() {
        return Err(TestkitError::InvalidOptions(format!(
            "building {} failed ({status})",
            image.display()
        )));
    }
    Ok(image)
}

/// The arguments of [`QEMU_SYSTEM`] for a guest with 256 MiB of memory, its serial console
/// on stdio, no reboot (the guest's `poweroff -f` or a panic ends QEMU), the kernel of
/// `assets`, `initrd`, `append` after the console options on the kernel command line (the
/// kernel hands `name=value` words it does not know to `/init` as environment variables)
/// and `disk` (a `vitastor:` filename) as virtio-blk on an iothread, so that the driver's
/// AioContext moves from the main loop to the iothread.
pub fn qemu_args(assets: &Path, initrd: &Path, append: &str, disk: &str) -> Vec<String> {
    let mut cmdline = "console=ttyS0 panic=-1 quiet".to_string();
    if !append.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(append);
    }
    [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-accel",
        accel(),
        "-m",
        "256",
        "-kernel",
        &assets.join("vmlinuz").display().to_string(),
        "-initrd",
        &initrd.display().to_string(),
        "-append",
        &cmdline,
        "-object",
        "iothread,id=io0",
        "-drive",
        &format!("file={disk},format=raw,if=none,id=d0,cache=none"),
        "-device",
        "virtio-blk-pci,drive=d0,iothread=io0",
    ]
    .map(String::from)
    .to_vec()
}

/// A running guest: QEMU with `driver` preloaded, its serial console (stdout) in a file
/// that grows while it runs; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Guest {
    child: Child,
    console: PathBuf,
}

impl Guest {
    /// Starts [`QEMU_SYSTEM`] with `args`, `driver` preloaded (in QEMU only), its console
    /// in `console` and its stderr in `console` + `.err`.
    pub fn spawn(args: &[String], driver: &Path, console: &Path) -> Result<Guest, TestkitError> {
        let stderr = console.with_extension("err");
        let out =
            File::create(console).map_err(io_err(format!("creating {}", console.display())))?;
        let err =
            File::create(&stderr).map_err(io_err(format!("creating {}", stderr.display())))?;
        let mut cmd = Command::new(QEMU_SYSTEM);
        cmd.args(args)
            .env("LD_PRELOAD", driver)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn_tied_to_process(cmd).map_err(|source| TestkitError::Spawn {
            binary: QEMU_SYSTEM.into(),
            source,
        })?;
        Ok(Guest {
            child,
            console: console.to_path_buf(),
        })
    }

    /// The console file.
    pub fn console(&self) -> &Path {
        &self.console
    }

    /// QEMU's exit status once it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, TestkitError> {
        self.child
            .try_wait()
            .map_err(io_err(format!("waiting for {QEMU_SYSTEM}")))
    }

    /// What QEMU wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.console.with_extension("err")).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Complete lines of a file another process appends to, read as they arrive.
#[derive(Debug)]
pub struct Tail {
    file: File,
    partial: Vec<u8>,
}

impl Tail {
    /// Follows `path` from its beginning.
    pub fn open(path: &Path) -> Result<Tail, TestkitError> {
        let file = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
        Ok(Tail {
            file,
            partial: Vec::new(),
        })
    }

    /// The lines completed since the last call, without their line ends (`\r\n` as the
    /// serial console writes them, or `\n`).
    pub fn lines(&mut self) -> Result<Vec<String>, TestkitError> {
        let mut buf = Vec::new();
        self.file
            .read_to_end(&mut buf)
            .map_err(io_err("reading a console file".into()))?;
        self.partial.extend_from_slice(&buf);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            lines.push(text.trim_end_matches(['\n', '\r']).to_string());
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tail_returns_complete_lines_as_they_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console");
        let mut w = File::create(&path).unwrap();
        let mut tail = Tail::open(&path).unwrap();
        assert!(tail.lines().unwrap().is_empty());
        w.write_all(b"one\r\ntw").unwrap();
        assert_eq!(tail.lines().unwrap(), ["one"]);
        w.write_all(b"o\r\nthree\n\n").unwrap();
        assert_eq!(tail.lines().unwrap(), ["two", "three", ""]);
        assert!(tail.lines().unwrap().is_empty());
    }

    #[test]
    fn the_command_line_carries_the_disk_and_the_init_environment() {
        let args = qemu_args(
            Path::new("/a"),
            Path::new("/a/initrd"),
            "vm_secs=5",
            "vitastor:image=x",
        );
        let at = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].clone()
        };
        assert_eq!(at("-kernel"), "/a/vmlinuz");
        assert_eq!(at("-append"), "console=ttyS0 panic=-1 quiet vm_secs=5");
        assert_eq!(
            at("-drive"),
            "file=vitastor:image=x,format=raw,if=none,id=d0,cache=none"
        );
    }
}
