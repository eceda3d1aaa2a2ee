#!/usr/bin/env bash
# vitastor-nbd benchmark (not part of `make test`): the seed's T1Q1 and Q128 4k
# randread/randwrite and 4M linear jobs through fio's nbd engine against `vitastor-nbd serve`
# on a Unix socket, beside the same jobs through libfio_vitastor.so (when it is built), with
# the NBD ÷ direct ratio. A throwaway cluster (devcluster: 3 OSDs, immediate_commit all) is
# started in a temp dir and stopped at the end.
#
# Environment: BENCH_RUNTIME (seconds per job, default 5), BENCH_IMAGE_SIZE (default 1G),
# BIN (directory with the release binaries, default target/release).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
RUNTIME="${BENCH_RUNTIME:-5}"
IMAGE_SIZE="${BENCH_IMAGE_SIZE:-1G}"
command -v fio >/dev/null || { echo "bench-nbd: fio not found (run scripts/setup.sh)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-nbd: python3 not found" >&2; exit 1; }
for b in devcluster vitastor-nbd vitastor-osd vitastor-disk; do
    [ -x "$BIN/$b" ] || { echo "bench-nbd: $BIN/$b missing (cargo build --release --workspace --bins)" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/vitastor-bench-nbd.XXXXXX)"
NBD_PID=""
cleanup() {
    [ -n "$NBD_PID" ] && kill -TERM "$NBD_PID" 2>/dev/null && wait "$NBD_PID" 2>/dev/null || true
    "$BIN/devcluster" down --dir "$WORK/cluster" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

size_bytes=$(python3 -c "import sys; s='$IMAGE_SIZE'; m={'K':1<<10,'M':1<<20,'G':1<<30}; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))")
"$BIN/devcluster" up --dir "$WORK/cluster" --osds 3 --image bench --image-size "$size_bytes" > "$WORK/env"
ETCD=$(sed -n 's/^etcd_address=//p' "$WORK/env")
SOCK="$WORK/nbd.sock"
"$BIN/vitastor-nbd" serve --etcd_address "$ETCD" --image bench --socket "$SOCK" \
    > "$WORK/nbd.out" 2> "$WORK/nbd.log" &
NBD_PID=$!
for _ in $(seq 1 100); do grep -q "^listening" "$WORK/nbd.out" 2>/dev/null && break; sleep 0.1; done
grep -q "^listening" "$WORK/nbd.out" || { echo "bench-nbd: vitastor-nbd did not start:" >&2; cat "$WORK/nbd.log" >&2; exit 1; }

# Fill the image once so reads hit real data.
fio --name=fill --ioengine=nbd --uri="nbd+unix:///bench?socket=$SOCK" --rw=write --bs=4M \
    --iodepth=8 --size="$IMAGE_SIZE" --output=/dev/null

ENGINE="$BIN/libfio_vitastor.so"
# name rw bs iodepth
JOBS="t1q1-randwrite-4k randwrite 4k 1
t1q1-randread-4k randread 4k 1
q128-randwrite-4k randwrite 4k 128
q128-randread-4k randread 4k 128
linear-write-4M write 4M 32
linear-read-4M read 4M 32"

run_job() { # out-file engine-args... ; the job options come from $rw $bs $qd
    local out="$1"; shift
    fio --name=job --rw="$rw" --bs="$bs" --iodepth="$qd" --size="$IMAGE_SIZE" \
        --runtime="$RUNTIME" --time_based --numjobs=1 --output-format=json --output="$out" "$@"
}

echo "bench-nbd: ${RUNTIME}s per job, image $IMAGE_SIZE" >&2
while read -r name rw bs qd; do
    echo "bench-nbd: $name" >&2
    run_job "$WORK/$name.nbd.json" --ioengine=nbd --uri="nbd+unix:///bench?socket=$SOCK"
    if [ -f "$ENGINE" ]; then
        LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
            run_job "$WORK/$name.direct.json" --thread --ioengine="$ENGINE" --etcd="$ETCD" --image=bench
    fi
done <<< "$JOBS"

python3 - "$WORK" <<'PY'
import json, os, sys
work = sys.argv[1]
names = ["t1q1-randwrite-4k", "t1q1-randread-4k", "q128-randwrite-4k", "q128-randread-4k",
         "linear-write-4M", "linear-read-4M"]
def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    job = json.loads(text[text.index("{"):])["jobs"][0]
    side = job["write"] if job["write"]["io_bytes"] > 0 else job["read"]
    return side["iops"], side["bw_bytes"] / 1e6, side["clat_ns"]["mean"] / 1e3
print(f"{'job':<20} {'nbd IOPS':>10} {'nbd MB/s':>9} {'nbd lat µs':>10} {'direct IOPS':>11} {'direct MB/s':>11} {'ratio':>6}")
for n in names:
    a = load(f"{work}/{n}.nbd.json")
    b = load(f"{work}/{n}.direct.json")
    bi = f"{b[0]:>11.0f} {b[1]:>11.1f} {a[0]/b[0]:>6.2f}" if b and b[0] else f"{'-':>11} {'-':>11} {'-':>6}"
    print(f"{n:<20} {a[0]:>10.0f} {a[1]:>9.1f} {a[2]:>10.0f} {bi}")
PY
