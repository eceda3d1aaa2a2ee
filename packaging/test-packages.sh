#!/usr/bin/env bash
# `make test-packages` (opt-in: root, network, a few minutes): installs target/debian/*.deb
# with apt-get into a clean Debian root made by mmdebstrap from deb.debian.org and runs the
# packaged programs there: --help of the CLI and the OSD, ldd of every program, library and
# plugin (nothing missing; no undefined symbol in libvitastor.so.0), and each plugin loaded by
# its host (fio --enghelp, qemu-img through vitastor-qemu-preload).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
debs=$target/debian
ls "$debs"/*.deb >/dev/null || { echo "test-packages: no packages in $debs: run make deb" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "test-packages: needs root (mmdebstrap, chroot)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
}
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
work=$(mktemp -d "$target/test-packages.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$target/test-packages.log

lib=/usr/lib/x86_64-linux-gnu
cat > "$work/checks.sh" <<CHECKS
set -eux
# -t backports: vitastor-qemu needs the QEMU version it was built for, which comes from there.
DEBIAN_FRONTEND=noninteractive apt-get install -y -t $suite-backports /debs/*.deb
vitastor-cli --help >/dev/null
vitastor-osd --help >/dev/null
for f in /usr/bin/vitastor-cli /usr/bin/vitastor-rm /usr/bin/vitastor-nbd /usr/bin/vitastor-osd \
         /usr/bin/vitastor-disk /usr/bin/vitastor-mon $lib/libvitastor.so.0 \
         $lib/vitastor/libfio_vitastor.so $lib/qemu/block-vitastor.so; do
    ldd "\$f"
    ! ldd "\$f" | grep 'not found'
done
! ldd -r $lib/libvitastor.so.0 2>&1 | grep 'undefined symbol'
# The plugins use their host's symbols: loading them into the host is what proves them.
fio --enghelp=$lib/vitastor/libfio_vitastor.so
vitastor-qemu-preload qemu-img --help | grep -w vitastor
pkg-config --cflags --libs vitastor
echo 'test-packages: all checks passed'
CHECKS

echo "test-packages: building a clean $suite root and installing the packages (log: $log)"
if ! mmdebstrap --variant=apt --include=pkg-config \
    --customize-hook="mkdir -p \"\$1/debs\" && cp $debs/*.deb $work/checks.sh \"\$1/debs/\"" \
    --customize-hook='chroot "$1" sh /debs/checks.sh' \
    "$suite" "$work/root" \
    "deb http://deb.debian.org/debian $suite main" \
    "deb http://deb.debian.org/debian $suite-backports main" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "test-packages: FAILED; the whole log is $log" >&2
    exit 1
fi
grep 'test-packages: all checks passed' "$log"
