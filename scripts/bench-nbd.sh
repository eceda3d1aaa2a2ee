#!/usr/bin/env bash
# vitastor-nbd benchmark (not part of `make test`): the seed's T1Q1 and Q128 4k
# randread/randwrite and 4M linear jobs through fio's nbd engine against `vitastor-nbd serve`
# on a Unix socket, beside the same jobs through libfio_vitastor.so (when it is built), with
# the NBD ÷ direct ratio. A throwaway cluster (devcluster: 3 OSDs, immediate_commit all) is
# started in a temp dir and stopped at the end.
#
# Per-op counters of the NBD server: its wake-ups (voluntary context switches of the serving
# thread, /proc/PID/status) and, when `perf stat` may watch it, its system calls and CPU time
# per request (`perf stat -p` around each NBD job). Unlike IOPS on a busy machine, these do
# not depend on what else runs.
#
# Environment: BENCH_RUNTIME (seconds per job, default 5), BENCH_IMAGE_SIZE (default 1G),
# BENCH_OSD_SIZE (bytes per OSD file, reserved in full; default 2G), BENCH_DIR (parent of
# the temp dir, default /tmp), BIN (directory with the release binaries, default
# target/release), BENCH_NBD_BASELINE (another vitastor-nbd binary, e.g. a copy of the
# previous build: served on a second socket of the same cluster and run before each job's
# current run, so old and new interleave under the same load).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
RUNTIME="${BENCH_RUNTIME:-5}"
IMAGE_SIZE="${BENCH_IMAGE_SIZE:-1G}"
OSD_SIZE="${BENCH_OSD_SIZE:-2147483648}"
BASELINE="${BENCH_NBD_BASELINE:-}"
command -v fio >/dev/null || { echo "bench-nbd: fio not found (run scripts/setup.sh)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-nbd: python3 not found" >&2; exit 1; }
for b in devcluster vitastor-nbd vitastor-osd vitastor-disk; do
    [ -x "$BIN/$b" ] || { echo "bench-nbd: $BIN/$b missing (cargo build --release --workspace --bins)" >&2; exit 1; }
done
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || { echo "bench-nbd: BENCH_NBD_BASELINE=$BASELINE is not executable" >&2; exit 1; }

mkdir -p "${BENCH_DIR:-/tmp}"
WORK="$(mktemp -d "${BENCH_DIR:-/tmp}/vitastor-bench-nbd.XXXXXX")"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    "$BIN/devcluster" down --dir "$WORK/cluster" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

size_bytes=$(python3 -c "import sys; s='$IMAGE_SIZE'; m={'K':1<<10,'M':1<<20,'G':1<<30}; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))")
"$BIN/devcluster" up --dir "$WORK/cluster" --osds 3 --osd-size "$OSD_SIZE" \
    --image bench --image-size "$size_bytes" > "$WORK/env"
ETCD=$(sed -n 's/^etcd_address=//p' "$WORK/env")

# serve NAME BINARY: starts a server on $WORK/NAME.sock and records its PID in $WORK/NAME.pid.
serve() {
    local name="$1" binary="$2"
    "$binary" serve --etcd_address "$ETCD" --image bench --socket "$WORK/$name.sock" \
        > "$WORK/$name.out" 2> "$WORK/$name.log" &
    PIDS+=($!)
    echo $! > "$WORK/$name.pid"
    for _ in $(seq 1 100); do grep -q "^listening" "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "^listening" "$WORK/$name.out" || { echo "bench-nbd: $binary did not start:" >&2; cat "$WORK/$name.log" >&2; exit 1; }
}
SERVERS="nbd"
serve nbd "$BIN/vitastor-nbd"
if [ -n "$BASELINE" ]; then
    serve base "$BASELINE"
    SERVERS="base nbd"
fi

# Fill the image once so reads hit real data.
fio --name=fill --ioengine=nbd --uri="nbd+unix:///bench?socket=$WORK/nbd.sock" --rw=write --bs=4M \
    --iodepth=8 --size="$IMAGE_SIZE" --output=/dev/null

PERF=""
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -p "$(cat "$WORK/nbd.pid")" -o /dev/null -- sleep 0.1 2>/dev/null; then
    PERF=1
else
    echo "bench-nbd: perf stat cannot watch the server; no per-op counters" >&2
fi

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
    for srv in $SERVERS; do
        pid=$(cat "$WORK/$srv.pid")
        stat_pid=""
        if [ -n "$PERF" ]; then
            perf stat -e raw_syscalls:sys_enter,task-clock -p "$pid" -o "$WORK/$name.$srv.perf" &
            stat_pid=$!
        fi
        w0=$(sed -n 's/^voluntary_ctxt_switches:\s*//p' "/proc/$pid/status")
        run_job "$WORK/$name.$srv.json" --ioengine=nbd --uri="nbd+unix:///bench?socket=$WORK/$srv.sock"
        w1=$(sed -n 's/^voluntary_ctxt_switches:\s*//p' "/proc/$pid/status")
        echo $((w1 - w0)) > "$WORK/$name.$srv.wake"
        if [ -n "$stat_pid" ]; then
            kill -INT "$stat_pid" && wait "$stat_pid" || true
        fi
    done
    if [ -f "$ENGINE" ]; then
        LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
            run_job "$WORK/$name.direct.json" --thread --ioengine="$ENGINE" --etcd="$ETCD" --image=bench
    fi
done <<< "$JOBS"

python3 - "$WORK" "$SERVERS" <<'PY'
import json, os, re, sys
work, servers = sys.argv[1], sys.argv[2].split()
names = ["t1q1-randwrite-4k", "t1q1-randread-4k", "q128-randwrite-4k", "q128-randread-4k",
         "linear-write-4M", "linear-read-4M"]
def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    job = json.loads(text[text.index("{"):])["jobs"][0]
    side = job["write"] if job["write"]["io_bytes"] > 0 else job["read"]
    return side["iops"], side["bw_bytes"] / 1e6, side["clat_ns"]["mean"] / 1e3, side["total_ios"]
def counters(base, ios):
    wake = f"{int(open(base + '.wake').read()) / ios:>7.3f}" if ios else f"{'-':>7}"
    if not os.path.exists(base + ".perf") or not ios:
        return f"{'-':>6} {wake} {'-':>7}"
    text = open(base + ".perf").read()
    num = lambda pat: float(re.search(pat, text).group(1).replace(",", ""))
    sc = num(r"([\d,]+)\s+raw_syscalls:sys_enter")
    ms = num(r"([\d.,]+)\s+msec task-clock")
    return f"{sc / ios:>6.2f} {wake} {ms * 1000 / ios:>7.1f}"
label = {"nbd": "nbd", "base": "baseline nbd"}
for srv in servers:
    print(f"{label[srv]}: IOPS, MB/s, mean latency; the server's system calls, wake-ups and CPU µs per request; the direct engine's IOPS and mean latency, and the IOPS ratio")
    print(f"{'job':<20} {'IOPS':>8} {'MB/s':>7} {'lat µs':>8} {'sys/op':>6} {'wake/op':>7} {'cpu µs':>7} {'direct IOPS':>11} {'direct µs':>9} {'ratio':>6}")
    for n in names:
        a = load(f"{work}/{n}.{srv}.json")
        b = load(f"{work}/{n}.direct.json")
        if not a:
            continue
        c = counters(f"{work}/{n}.{srv}", a[3])
        d = f"{b[0]:>11.0f} {b[2]:>9.0f} {a[0] / b[0]:>6.2f}" if b and b[0] else f"{'-':>11} {'-':>9} {'-':>6}"
        print(f"{n:<20} {a[0]:>8.0f} {a[1]:>7.1f} {a[2]:>8.0f} {c} {d}")
    print()
PY
