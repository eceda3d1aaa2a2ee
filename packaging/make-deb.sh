#!/usr/bin/env bash
# `make deb`: Debian packages of the workspace's release build, in target/debian/*.deb.
# packaging/debian is copied into a staging tree (dpkg-buildpackage wants ./debian, and the
# workspace root stays free of build leftovers); its rules take the binaries from
# target/release, so run `make build` first (`make deb` does).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
out=$target/debian
stage=$out/build/vitastor-rs
rm -rf "$out"
mkdir -p "$stage"
cp -a "$root/packaging/debian" "$stage/debian"
log=$out/build.log
if ! (cd "$stage" && VITASTOR_SRC="$root" VITASTOR_BIN="$target/release" \
        dpkg-buildpackage -b -us -uc) >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "make deb: dpkg-buildpackage failed; the whole log is $log" >&2
    exit 1
fi
mv "$out"/build/*.deb "$out/"
ls "$out"/*.deb
