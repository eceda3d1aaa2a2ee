#!/usr/bin/env bash
# Idempotent machine set-up for building and testing vitastor-rs on Debian 12.
# Installs only what is missing, from Debian's packages; Rust crates come through cargo.
# Every external tool a test runs is here (or installed by the scripts below): in `make test`
# a missing tool fails its test (testkit's prereq module).
set -euo pipefail

PKGS=(
    etcd-server etcd-client   # the cluster's source of truth, for tests and `make run`
    fio                       # raw-device baselines in `make bench`, fio engine tests
    libclang-dev              # bindgen (fio/QEMU headers)
    protobuf-compiler         # etcd-client's gRPC code generation
    pkg-config
    gcc libc6-dev             # the C plugins' build scripts, the C ABI tests' programs
    libnbd-bin                # nbdinfo, nbdcopy, nbdfuse: vitastor-nbd and QEMU driver tests
    fuse3                     # fusermount3, /dev/fuse mounts in the vitastor-nbd tests
    e2fsprogs                 # mkfs.ext4, fsck.ext4/e2fsck in the vitastor-nbd and QEMU tests
    mount                     # losetup, mount, umount in the vitastor-nbd tests
    qemu-utils                # qemu-img, qemu-io, qemu-nbd: vitastor-nbd and QEMU driver tests
    dpkg-dev debhelper        # dpkg-buildpackage, dh: the packages' test builds target/debian/*.deb
    lintian                   # the packages' test: no lintian error
    systemd                   # systemd-analyze verify of the units
)
# qemu-system-x86 (the VM test) comes with the QEMU headers below, in the same version.

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Headers of the installed fio for building libfio_vitastor.so (cached per fio version).
"$(dirname "$0")/fio-headers.sh" >/dev/null
"$(dirname "$0")/qemu-headers.sh" >/dev/null  # QEMU headers, qemu-system-x86, VM kernel for block-vitastor.so

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
echo "setup: ok"
