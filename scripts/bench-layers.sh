#!/usr/bin/env bash
# `make bench` (layers): 4k reads of a fresh clone (all its data in the parent snapshot)
# beside the same reads of a flat image in the same devcluster run, then `vitastor-cli
# flatten` of the clone timed against the cluster's 4M sequential write throughput, then the
# reads of the flattened clone. The issue's goals: reading through one layer at most 1.15x
# the flat latency (T1Q1); flatten at least 50% of the 4M write throughput.
#
# Environment: BENCH_RUNTIME (seconds per read test, default 10), BENCH_IMAGE_SIZE (default
# 1G), BENCH_DIR (work directory, default target/bench; not tmpfs), CARGO_TARGET_DIR.
# Results are kept in target/bench/layers-<date>.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNTIME="${BENCH_RUNTIME:-10}"
IMAGE_SIZE="${BENCH_IMAGE_SIZE:-1G}"
WORK="${BENCH_DIR:-$ROOT/target/bench}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
ENGINE="$BIN/libfio_vitastor.so"

command -v fio >/dev/null || { echo "bench-layers: fio not found (run scripts/setup.sh)" >&2; exit 1; }
for f in "$ENGINE" "$BIN/devcluster" "$BIN/vitastor-osd" "$BIN/vitastor-cli"; do
    [ -e "$f" ] || { echo "bench-layers: $f is missing; run make build" >&2; exit 1; }
done
mkdir -p "$WORK"
if [ "$(stat -f -c %T "$WORK")" = "tmpfs" ]; then
    echo "bench-layers: $WORK is on tmpfs; set BENCH_DIR to a directory on a real disk" >&2
    exit 1
fi
OUT="$WORK/layers-$(date +%Y%m%d-%H%M%S).json"
RUN="$(mktemp -d "$WORK/layers-run.XXXXXX")"
UP=""
stop() {
    if [ -n "$UP" ]; then
        "$BIN/devcluster" down --dir "$RUN/cluster" >/dev/null 2>&1 || true
    fi
    rm -rf "$RUN"
}
trap stop EXIT

echo "bench-layers: starting a devcluster (3 OSDs, immediate_commit all)" >&2
UP=1
"$BIN/devcluster" up --dir "$RUN/cluster" --osds 3 --immediate-commit all >"$RUN/up.env"
ETCD="$(sed -n 's/^etcd_address=//p' "$RUN/up.env")"
[ -n "$ETCD" ] || { echo "bench-layers: devcluster printed no etcd_address" >&2; exit 1; }
cli() { "$BIN/vitastor-cli" --etcd_address "$ETCD" "$@"; }
fio_on() { # IMAGE NAME ARGS...: JSON to $RUN/NAME.json
    local image="$1" name="$2"
    shift 2
    fio -thread -ioengine="$ENGINE" -etcd="$ETCD" -image="$image" -name="$name" -direct=1 \
        -output-format=json "$@" >"$RUN/$name.json"
}

cli create -s "$IMAGE_SIZE" flat >/dev/null
cli create -s "$IMAGE_SIZE" base >/dev/null
echo "bench-layers: writing flat and base in full ($IMAGE_SIZE each, 4M Q32)" >&2
fio_on flat write-4M -rw=write -bs=4M -iodepth=32 -size="$IMAGE_SIZE"
fio_on base prefill-base -rw=write -bs=4M -iodepth=32 -size="$IMAGE_SIZE"
cli snap-create base@s >/dev/null
cli create --parent base@s clone >/dev/null

reads() { # IMAGE SIDE
    for j in "t1q1|-iodepth=1" "q128|-iodepth=128"; do
        echo "bench-layers: $2 randread ${j%%|*} (${RUNTIME}s)" >&2
        # shellcheck disable=SC2086
        fio_on "$1" "$2-${j%%|*}" -rw=randread -bs=4k ${j#*|} -size="$IMAGE_SIZE" \
            -runtime="$RUNTIME" -time_based -ramp_time=1
    done
}
reads flat flat
reads clone clone
echo "bench-layers: flatten clone" >&2
start=$(date +%s.%N)
cli flatten clone --json >"$RUN/flatten.json"
end=$(date +%s.%N)
echo "$start $end" >"$RUN/flatten.time"
reads clone flattened

python3 - "$RUN" "$OUT" "$IMAGE_SIZE" <<'PY'
import json, sys

run, out, size_s = sys.argv[1], sys.argv[2], sys.argv[3]

def job(name, d="read"):
    text = open(f"{run}/{name}.json").read()
    j = json.loads(text[text.index("{"):])["jobs"][0]
    if j["error"]:
        sys.exit(f"bench-layers: {name} failed with error {j['error']}")
    return j[d]

units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
size = int(size_s[:-1]) * units[size_s[-1].upper()] if size_s[-1].upper() in units else int(size_s)
write = job("write-4M", "write")["bw_bytes"] / 1e6
start, end = map(float, open(f"{run}/flatten.time").read().split())
flatten = size / (end - start) / 1e6
rows, report = [], {"write_4m_mbs": write, "flatten_mbs": flatten, "reads": {}}
for side in ["flat", "clone", "flattened"]:
    t1 = job(f"{side}-t1q1")
    q = job(f"{side}-q128")
    report["reads"][side] = {"t1q1_lat_us": t1["lat_ns"]["mean"] / 1000, "q128_iops": q["iops"]}
flat = report["reads"]["flat"]
print(f"\nlayers: 4k random reads of a {size_s} image, flat vs a fresh clone (all data in its "
      f"parent) vs the clone after flatten; one devcluster run (3 OSDs, pg_size 2).")
print(f"{'':<12}{'T1Q1 lat us':>12}{'x flat':>8}{'Q128 IOPS':>12}{'x flat':>8}")
for side, r in report["reads"].items():
    print(f"{side:<12}{r['t1q1_lat_us']:>12.1f}{r['t1q1_lat_us'] / flat['t1q1_lat_us']:>8.2f}"
          f"{r['q128_iops']:>12.0f}{r['q128_iops'] / flat['q128_iops']:>8.2f}")
print(f"flatten {flatten:.1f} MB/s vs 4M Q32 write {write:.1f} MB/s: "
      f"{flatten / write:.2f}x (goal >= 0.50); T1Q1 through one layer "
      f"{report['reads']['clone']['t1q1_lat_us'] / flat['t1q1_lat_us']:.2f}x flat (goal <= 1.15)")
json.dump(report, open(out, "w"), indent=1)
print(f"(kept in {out})")
PY
