#!/usr/bin/env bash
# Prepares the headers of the INSTALLED fio for building libfio_vitastor.so and prints their
# directory (the configured fio source tree) as the last line of stdout.
#
# Why the source of the exact installed version: fio's only ABI check is FIO_IOOPS_VERSION,
# while `struct thread_data` (which the engine reads) changes between releases without it,
# so the engine must be compiled against the very version that loads it. fio ships no -dev
# package, hence `apt-get source` + `./configure` (for config-host.h).
#
# Idempotent: the result is cached in ~/.cache/vitastor-rs/fio-<version>/ (keyed by the exact
# Debian version) and reused; apt sources and packages are only touched when missing.
#
#   scripts/fio-headers.sh          prepare if needed, print the directory
#   scripts/fio-headers.sh --find   print the directory only if already prepared (exit 1 if not);
#                                   what build scripts use, as they must not install anything
set -euo pipefail

say() { echo "fio-headers: $*" >&2; }

ver=$(dpkg-query -W -f='${Version}' fio 2>/dev/null || true)
if [ -z "$ver" ]; then
    say "fio is not installed (scripts/setup.sh installs it)"
    exit 1
fi
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/vitastor-rs"
dir="$cache_root/fio-$ver"
# config-host.h is written last by configure; its presence marks a complete tree.
if [ -f "$dir/src/config-host.h" ] && [ -f "$dir/src/ioengines.h" ]; then
    echo "$dir/src"
    exit 0
fi
if [ "${1:-}" = "--find" ]; then
    say "headers of fio $ver are not prepared; run scripts/fio-headers.sh (or make setup)"
    exit 1
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Other sessions may be running apt at the same time; wait for the lock instead of failing.
APT=(apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)

# `apt-get source` needs dpkg-source (dpkg-dev); configure needs a C compiler and make.
need=()
for p in dpkg-dev gcc make; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    $SUDO "${APT[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO "${APT[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Source index for the distribution fio came from: add deb-src only when apt cannot see the
# source of this exact version yet.
has_src() { apt-cache showsrc fio 2>/dev/null | grep -qx "Version: $ver"; }
ours=/etc/apt/sources.list.d/vitastor-rs-src.sources
if ! has_src && grep -rqs '^[[:space:]]*\(deb-src\|Types:.*deb-src\)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # Source URIs are configured already (by someone else); maybe only the index is missing.
    $SUDO "${APT[@]}" update -qq
fi
if ! has_src; then
    if [ ! -f "$ours" ]; then
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
        say "enabling deb-src for $codename in $ours"
        $SUDO tee "$ours" >/dev/null <<EOF
# Added by vitastor-rs scripts/fio-headers.sh: fio sources for building libfio_vitastor.so.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    $SUDO "${APT[@]}" update -qq
    has_src || { say "apt has no source package for fio=$ver"; exit 1; }
fi

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/.fio-$ver.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "fetching and configuring fio $ver source (~15 s)"
(cd "$work" && "${APT[@]}" source -qq "fio=$ver" >/dev/null 2>"$work/apt.log") || {
    cat "$work/apt.log" >&2
    exit 1
}
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'fio-*' | head -n1)
[ -n "$src" ] || { say "apt-get source produced no fio-* directory"; exit 1; }
# --disable-native: the engine must not depend on the build machine's CPU; --prefix as Debian.
(cd "$src" && ./configure --disable-native --prefix=/usr >"$work/configure.log" 2>&1) || {
    cat "$work/configure.log" >&2
    exit 1
}
rm -rf "$dir"
mkdir -p "$dir"
mv "$src" "$dir/src"
cp "$work/configure.log" "$dir/"
echo "$dir/src"
