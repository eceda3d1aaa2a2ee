#!/usr/bin/env bash
# `make bench` (second part): fio through libfio_vitastor.so against a local devcluster
# (etcd + 3 OSDs on sparse files, pool 1 with pg_size 2), the six numbers the original
# Vitastor README reports:
#   4M linear write / read bandwidth (-iodepth=16), T1Q1 4k randwrite / randread latency,
#   Q128 4k randwrite / randread iops.
# The linear write runs first and fills the image, so that the reads hit real data.
# Results are printed as a Markdown table and kept in target/bench/fio-<date>.json.
#
# Environment: BENCH_RUNTIME (seconds per test, default 10), BENCH_IMAGE_SIZE (default 2G),
# BENCH_IMMEDIATE_COMMIT (all | none, default all), BENCH_DIR (cluster data, default
# target/bench; must not be tmpfs), CARGO_TARGET_DIR (where the binaries are, default target).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNTIME="${BENCH_RUNTIME:-10}"
IMAGE_SIZE="${BENCH_IMAGE_SIZE:-2G}"
IMMEDIATE="${BENCH_IMMEDIATE_COMMIT:-all}"
WORK="${BENCH_DIR:-$ROOT/target/bench}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
ENGINE="$BIN/libfio_vitastor.so"

command -v fio >/dev/null || { echo "bench-fio: fio not found (run scripts/setup.sh)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-fio: python3 not found" >&2; exit 1; }
for f in "$ENGINE" "$BIN/devcluster" "$BIN/vitastor-osd"; do
    [ -e "$f" ] || { echo "bench-fio: $f is missing; run make build" >&2; exit 1; }
done
mkdir -p "$WORK"
# tmpfs has no O_DIRECT and no disk behind it: the OSDs would measure memory.
if [ "$(stat -f -c %T "$WORK")" = "tmpfs" ]; then
    echo "bench-fio: $WORK is on tmpfs; set BENCH_DIR to a directory on a real disk" >&2
    exit 1
fi

STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="$WORK/fio-$STAMP.json"
CLUSTER="$(mktemp -d "$WORK/fio-cluster.XXXXXX")"
stop() {
    "$BIN/devcluster" down --dir "$CLUSTER" >/dev/null 2>&1 || true
    rm -rf "$CLUSTER"
}
trap stop EXIT

echo "bench-fio: starting a devcluster in $CLUSTER (immediate_commit=$IMMEDIATE)" >&2
"$BIN/devcluster" up --dir "$CLUSTER" --osds 3 --immediate-commit "$IMMEDIATE" >"$CLUSTER/up.env"
ETCD="$(sed -n 's/^etcd_address=//p' "$CLUSTER/up.env")"
[ -n "$ETCD" ] || { echo "bench-fio: devcluster printed no etcd_address" >&2; exit 1; }

# job NAME FIO-ARGS...: one fio run; its JSON goes to $CLUSTER/NAME.json.
job() {
    local name="$1"
    shift
    echo "bench-fio: $name (${RUNTIME}s)" >&2
    fio -thread -ioengine="$ENGINE" -etcd="$ETCD" -pool=1 -inode=1 -size="$IMAGE_SIZE" \
        -name="$name" -direct=1 -runtime="$RUNTIME" -time_based -ramp_time=1 \
        -output-format=json "$@" >"$CLUSTER/$name.json"
}

job write-4M -rw=write -bs=4M -iodepth=16
job read-4M -rw=read -bs=4M -iodepth=16
job randwrite-t1q1 -rw=randwrite -bs=4k -iodepth=1
job randread-t1q1 -rw=randread -bs=4k -iodepth=1
job randwrite-q128 -rw=randwrite -bs=4k -iodepth=128
job randread-q128 -rw=randread -bs=4k -iodepth=128

python3 - "$CLUSTER" "$OUT" "$IMMEDIATE" <<'PY'
import json, sys

cluster, out, immediate = sys.argv[1:4]

def job(name):
    # fio may print warnings before the JSON document.
    text = open(f"{cluster}/{name}.json").read()
    j = json.loads(text[text.index("{"):])["jobs"][0]
    if j["error"]:
        sys.exit(f"bench-fio: {name} failed with error {j['error']}")
    return j

rows = []
for name, ddir, what in [
    ("write-4M", "write", "bw"), ("read-4M", "read", "bw"),
    ("randwrite-t1q1", "write", "lat"), ("randread-t1q1", "read", "lat"),
    ("randwrite-q128", "write", "iops"), ("randread-q128", "read", "iops"),
]:
    d = job(name)[ddir]
    if what == "bw":
        value = f"{d['bw_bytes'] / 2**20:.0f} MiB/s"
    elif what == "lat":
        value = f"{d['lat_ns']['mean'] / 1000:.0f} us ({d['iops']:.0f} iops)"
    else:
        value = f"{d['iops']:.0f} iops"
    rows.append({"test": name, "value": value, "iops": d["iops"], "bw_bytes": d["bw_bytes"],
                 "lat_mean_us": d["lat_ns"]["mean"] / 1000})

json.dump({"immediate_commit": immediate, "results": rows}, open(out, "w"), indent=1)
print(f"\nfio via libfio_vitastor.so, devcluster: 3 OSDs, pg_size 2, immediate_commit={immediate}")
print("| test | result |\n|---|---|")
for r in rows:
    print(f"| {r['test']} | {r['value']} |")
print(f"\n(saved to {out})")
PY
