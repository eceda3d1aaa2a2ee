#!/usr/bin/env bash
# Prepares what the QEMU driver's VM test boots: a Debian kernel (from the linux-image package,
# extracted with dpkg-deb, never installed), its virtio modules and a static busybox for the
# initramfs. Prints the directory as the last line of stdout:
#   DIR/vmlinuz, DIR/busybox, DIR/modules/lib/modules/<kver>/..., DIR/kver
#
# Idempotent: the .debs are cached in ~/.cache/vitastor-rs/debs/, the extracted files in
# ~/.cache/vitastor-rs/vm-<kernel package>_<version>/ (vm-current links to them).
#
#   scripts/qemu-vm-assets.sh          prepare if needed, print the directory
#   scripts/qemu-vm-assets.sh --find   print the directory only if already prepared (exit 1)
set -euo pipefail

say() { echo "qemu-vm-assets: $*" >&2; }
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/vitastor-rs"
link="$cache_root/vm-current"

# Any prepared kernel serves as a test guest: once one is there, apt is not asked again
# (apt-cache takes seconds, and make setup runs this every time).
if [ -f "$link/stamp" ]; then
    readlink -f "$link"
    exit 0
fi
if [ "${1:-}" = "--find" ]; then
    say "VM assets are not prepared; run scripts/qemu-vm-assets.sh (or make setup)"
    exit 1
fi

# The kernel the distribution's linux-image-amd64 points at (6.1 on bookworm: its
# virtio_blk is a plain .ko, loadable by busybox insmod without xz support).
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)
[ -n "$kpkg" ] || { say "apt knows no linux-image-amd64"; exit 1; }
kver_pkg=$(apt-cache policy "$kpkg" | sed -n 's/^ *Candidate: //p')
bver=$(apt-cache policy busybox-static | sed -n 's/^ *Candidate: //p')
dir="$cache_root/vm-${kpkg}_${kver_pkg//:/_}"

debs="$cache_root/debs"
mkdir -p "$debs"
fetch() { # package version
    local f
    f=$(find "$debs" -maxdepth 1 -name "${1}_${2//:/%3a}_*.deb" | head -n1)
    if [ -z "$f" ]; then
        say "downloading $1=$2"
        # As root apt would warn that its _apt sandbox user cannot write the cache; the
        # download is just a file fetch, so skip the sandbox.
        (cd "$debs" && apt-get -o Acquire::Retries=3 -o APT::Sandbox::User="$(id -un)" \
            download -qq "$1=$2" >/dev/null)
        f=$(find "$debs" -maxdepth 1 -name "${1}_${2//:/%3a}_*.deb" | head -n1)
    fi
    [ -n "$f" ] || { say "could not download $1=$2"; exit 1; }
    echo "$f"
}
kdeb=$(fetch "$kpkg" "$kver_pkg")
bdeb=$(fetch busybox-static "$bver")

work=$(mktemp -d "$cache_root/.vm-assets.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$kdeb" "$work/k"
dpkg-deb -x "$bdeb" "$work/b"
kver=$(basename "$(find "$work/k/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
mkdir -p "$work/out/modules/lib/modules/$kver/kernel/drivers/block"
cp "$work/k/boot/vmlinuz-$kver" "$work/out/vmlinuz"
cp "$work/b/bin/busybox" "$work/out/busybox"
# virtio transport + block driver: the only modules the test guest loads.
cp -a "$work/k/lib/modules/$kver/kernel/drivers/virtio" "$work/out/modules/lib/modules/$kver/kernel/drivers/"
cp "$work/k/lib/modules/$kver/kernel/drivers/block/virtio_blk.ko"* "$work/out/modules/lib/modules/$kver/kernel/drivers/block/"
# The package ships no modules.dep; busybox makes one for its modprobe.
"$work/out/busybox" depmod -b "$work/out/modules" "$kver"
echo "$kver" >"$work/out/kver"
echo "$kpkg $kver_pkg busybox-static $bver" >"$work/out/stamp"
rm -rf "$dir"
mv "$work/out" "$dir"
ln -sfn "$dir" "$link"
echo "$dir"
