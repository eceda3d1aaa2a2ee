//! A real VM on a vitastor disk: qemu-system-x86_64 (the installed QEMU's version) boots
//! Debian's kernel (extracted from the linux-image package, not installed) with a busybox
//! initramfs; the disk is `vitastor:` as virtio-blk on an iothread (so the driver's
//! AioContext moves from the main loop to the iothread). The guest checksums data the host
//! wrote, writes its own pattern and the checksums to the disk, syncs and powers off; the
//! host then checks both through the driver.
//!
//! The VM machinery (assets, accelerator, initramfs, QEMU command line) is testkit's `vm`.
//!
//! Needs qemu-system-x86_64 and the kernel and busybox prepared by
//! `scripts/qemu-vm-assets.sh` (both from `make setup`; see testkit's `require_tools`).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use vitastor_testkit::{require, require_tools, vm};

const GUEST_DATA: usize = 1 << 20;

const INIT: &str = r#"
host=$(dd if=/dev/vda bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1)
dd if=/guest.bin of=/dev/vda bs=1M seek=2 conv=fsync 2>/dev/null
echo 3 > /proc/sys/vm/drop_caches
guest=$(dd if=/dev/vda bs=1M skip=2 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
echo "VITASTOR-VM host=$host guest=$guest" > /result
dd if=/result of=/dev/vda bs=4096 seek=768 conv=sync,fsync 2>/dev/null
sync
echo "VITASTOR-VM-RESULT host=$host guest=$guest"
poweroff -f
"#;

/// Boots the VM on disk `spec` with `guest` in its initramfs; returns the console output.
fn boot(assets: &Path, dir: &Path, spec: &str, guest: &[u8]) -> String {
    let initrd = vm::initramfs(assets, dir, INIT, &[("guest.bin", guest)]).expect("initramfs");
    eprintln!("booting with -accel {}", vm::accel());
    qemu_ok(
        vm::QEMU_SYSTEM,
        &as_strs(&vm::qemu_args(assets, &initrd, "", spec)),
    )
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn vm_boots_and_writes_to_a_vitastor_disk() {
    if !require_tools(&["qemu-system-x86_64", "qemu-img", "md5sum"]) {
        return;
    }
    let Some(assets) = require(vm::assets()) else {
        return;
    };
    let cl = start_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let host_data = pattern(11, MIB as usize);
    let guest_data = pattern(12, GUEST_DATA);
    let host_file = tmp.path().join("host.raw");
    fs::write(&host_file, &host_data).unwrap();
    let spec = image_spec(&cl, "vmdisk");
    qemu_ok("qemu-img", &["create", "-f", "raw", &spec, "16M"]);
    qemu_ok(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            host_file.to_str().unwrap(),
            &spec,
        ],
    );
    let out = boot(&assets, tmp.path(), &spec, &guest_data);
    let want = format!(
        "VITASTOR-VM-RESULT host={} guest={}",
        vm::md5(&host_data, tmp.path()).unwrap(),
        vm::md5(&guest_data, tmp.path()).unwrap()
    );
    assert!(out.contains(&want), "guest console lacks `{want}`:\n{out}");

    // What the guest wrote is on the cluster, read back through the driver.
    assert!(read_image(&spec, tmp.path(), 2 * MIB, GUEST_DATA as u64) == guest_data);
    let record = read_image(&spec, tmp.path(), 3 * MIB, 4096);
    let line = format!("{}\n", want.replace("VITASTOR-VM-RESULT", "VITASTOR-VM"));
    assert_eq!(&record[..line.len()], line.as_bytes());
    assert!(read_image(&spec, tmp.path(), 0, MIB) == host_data);
}

/// The golden-image workflow: a disk is written into `base`, `snap-create base@golden`, two
/// clones of it; a TCG (or KVM) VM runs on each clone: it reads the golden data through the
/// layers, writes its own data, and the base stays unchanged. The VM boots its kernel and
/// initramfs with -kernel (the assets have no bootloader disk); the clone is its only disk.
#[test]
fn vms_on_two_clones_of_a_golden_snapshot() {
    if !require_tools(&["qemu-system-x86_64", "qemu-img", "md5sum"]) {
        return;
    }
    let Some(assets) = require(vm::assets()) else {
        return;
    };
    let cl = start_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let golden = pattern(21, MIB as usize);
    let golden_file = tmp.path().join("golden.raw");
    fs::write(&golden_file, &golden).unwrap();
    let base = image_spec(&cl, "base");
    qemu_ok("qemu-img", &["create", "-f", "raw", &base, "16M"]);
    qemu_ok(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            golden_file.to_str().unwrap(),
            &base,
        ],
    );
    let cli = |args: &[&str]| {
        let out = Command::new(vitastor_testkit::artifacts::fresh_path("vitastor-cli"))
            .args(["--etcd_address", &cl.etcd_address()])
            .args(args)
            .output()
            .expect("vitastor-cli");
        assert!(
            out.status.success(),
            "vitastor-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(&["snap-create", "base@golden"]);
    cli(&["create", "--parent", "base@golden", "vm1"]);
    cli(&["create", "--parent", "base@golden", "vm2"]);
    for (i, name) in ["vm1", "vm2"].iter().enumerate() {
        let dir = tmp.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        let guest = pattern(30 + i as u64, GUEST_DATA);
        let spec = image_spec(&cl, name);
        let out = boot(&assets, &dir, &spec, &guest);
        let want = format!(
            "VITASTOR-VM-RESULT host={} guest={}",
            vm::md5(&golden, &dir).unwrap(),
            vm::md5(&guest, &dir).unwrap()
        );
        assert!(
            out.contains(&want),
            "{name}: guest console lacks `{want}`:\n{out}"
        );
        assert!(read_image(&spec, &dir, 2 * MIB, GUEST_DATA as u64) == guest);
        assert!(read_image(&spec, &dir, 0, MIB) == golden);
    }
    // The snapshot under both clones is unchanged: nothing past the golden data was written.
    let snap = image_spec(&cl, "base@golden");
    assert!(read_image(&snap, tmp.path(), 0, MIB) == golden);
    assert!(read_image(&snap, tmp.path(), 2 * MIB, GUEST_DATA as u64)
        .iter()
        .all(|&b| b == 0));
}
