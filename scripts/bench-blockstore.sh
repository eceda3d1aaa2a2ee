#!/usr/bin/env bash
# `make bench`: the blockstore (examples/bsbench.rs, through io_uring) beside the same six fio
# jobs on a raw file of the same size and on the same file system (the seventh blockstore
# test, reads while the flusher drains a backlog, is set beside the raw reads), printed as one
# table with the goals of the blockstore issue. Results go to target/bench/blockstore-<date>.json.
#
# Environment: BENCH_RUNTIME (seconds per test, default 10), BENCH_SIZE (file size, default
# 2G), BENCH_DIR (work directory, default target/bench; must not be tmpfs), CARGO.
# The two image files stay in the work directory so that later runs skip writing them out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNTIME="${BENCH_RUNTIME:-10}"
SIZE="${BENCH_SIZE:-2G}"
WORK="${BENCH_DIR:-$ROOT/target/bench}"
CARGO="${CARGO:-cargo}"

command -v fio >/dev/null || { echo "bench: fio not found (run scripts/setup.sh)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench: python3 not found" >&2; exit 1; }
mkdir -p "$WORK"
# tmpfs has no O_DIRECT and no disk behind it: both sides would measure memory.
if [ "$(stat -f -c %T "$WORK")" = "tmpfs" ]; then
    echo "bench: $WORK is on tmpfs; set BENCH_DIR to a directory on a real disk" >&2
    exit 1
fi

STAMP="$(date +%Y%m%d-%H%M%S)"
RAW="$WORK/raw.img"
STORE="$WORK/blockstore.img"
OUT="$WORK/blockstore-$STAMP.json"
RUN="$(mktemp -d "$WORK/run.XXXXXX")"
trap 'rm -rf "$RUN"' EXIT

# Build first so that compilation never overlaps a measurement.
"$CARGO" build --release -q -p vitastor-blockstore --example bsbench

raw_job() {
    local name="$1"
    shift
    echo "bench: fio $name (${RUNTIME}s)" >&2
    fio -ioengine=libaio -direct=1 -invalidate=1 -name="$name" -filename="$RAW" -size="$SIZE" \
        -runtime="$RUNTIME" -time_based "$@" --output-format=json --output="$RUN/fio-$name.json"
}

# fio creates a missing file with fallocate: unwritten extents read back as zeroes without
# touching the disk, which would make the raw reads look impossibly fast. Write it out once.
if [ "$(cat "$RAW.written" 2>/dev/null)" != "$SIZE" ]; then
    echo "bench: writing out $RAW ($SIZE)" >&2
    rm -f "$RAW" "$RAW.written"
    fio -ioengine=libaio -direct=1 -name=layout -filename="$RAW" -size="$SIZE" -rw=write -bs=4M \
        -iodepth=32 --output-format=json --output="$RUN/fio-layout.json"
    echo "$SIZE" >"$RAW.written"
fi

raw_job write_sync_4k_t1q1 -rw=randwrite -bs=4k -iodepth=1 -fsync=1
raw_job read_4k_t1q1 -rw=randread -bs=4k -iodepth=1
raw_job randwrite_4k_q128 -rw=randwrite -bs=4k -iodepth=128
raw_job randread_4k_q128 -rw=randread -bs=4k -iodepth=128
raw_job write_128k_q32 -rw=write -bs=128k -iodepth=32
raw_job write_4m -rw=write -bs=4M -iodepth=32

echo "bench: blockstore (${RUNTIME}s per test)" >&2
"$CARGO" run --release -q -p vitastor-blockstore --example bsbench -- \
    --file "$STORE" --size "$SIZE" --runtime "$RUNTIME" --json "$RUN/bsbench.json" >&2

python3 - "$RUN" "$OUT" "$RUNTIME" "$SIZE" <<'PY'
import json, os, sys, time

run, out, runtime, size = sys.argv[1:5]
TESTS = ["write_sync_4k_t1q1", "read_4k_t1q1", "read_4k_t1q1_flushing", "randwrite_4k_q128",
         "randread_4k_q128", "write_128k_q32", "write_4m"]
# Blockstore tests measured against another test's raw job: reads while the flusher drains a
# backlog are set beside the same raw reads.
RAW_OF = {"read_4k_t1q1_flushing": "read_4k_t1q1"}
# The issue's goals: (what is compared, limit, text).
GOALS = {
    "write_sync_4k_t1q1": ("lat", 1.2, "lat <= 1.2x raw write+fsync"),
    "read_4k_t1q1": ("iops", 0.9, "IOPS >= 0.9x raw"),
    "read_4k_t1q1_flushing": ("iops", 0.9, "IOPS >= 0.9x raw"),
    "randwrite_4k_q128": ("iops", 0.5, "IOPS >= 0.5x raw"),
    "randread_4k_q128": ("iops", 0.9, "IOPS >= 0.9x raw"),
}

def raw_result(name):
    job = json.load(open(os.path.join(run, f"fio-{name}.json")))["jobs"][0]
    side = job["write"] if job["write"]["total_ios"] > 0 else job["read"]
    mean = side["lat_ns"]["mean"] / 1000
    p99 = side["clat_ns"]["percentile"]["99.000000"] / 1000
    sync = job.get("sync", {})
    if sync.get("total_ios", 0) > 0:
        # fio -fsync=1 at depth 1: every write waits for its own fsync; one operation is both.
        mean += sync["lat_ns"]["mean"] / 1000
        p99 += sync["lat_ns"]["percentile"]["99.000000"] / 1000
    return {"iops": side["iops"], "lat_mean_us": mean, "lat_p99_us": p99,
            "mib_per_s": side["bw_bytes"] / 2**20, "ops": side["total_ios"]}

raw = {t: raw_result(RAW_OF.get(t, t)) for t in TESTS}
bs_all = json.load(open(os.path.join(run, "bsbench.json")))
bs = bs_all["tests"]

rows, comparison = [], {}
for t in TESTS:
    r, b = raw[t], bs[t]
    iops_ratio = b["iops"] / r["iops"] if r["iops"] else 0.0
    lat_ratio = b["lat_mean_us"] / r["lat_mean_us"] if r["lat_mean_us"] else 0.0
    goal = GOALS.get(t)
    verdict = ""
    passed = None
    if goal:
        kind, limit, text = goal
        passed = lat_ratio <= limit if kind == "lat" else iops_ratio >= limit
        verdict = f"{text}: {'PASS' if passed else 'FAIL'}"
    comparison[t] = {"iops_ratio": iops_ratio, "lat_ratio": lat_ratio,
                     "goal": goal[2] if goal else None, "pass": passed}
    rows.append((t, r["iops"], r["lat_mean_us"], r["mib_per_s"], b["iops"], b["lat_mean_us"],
                 b["mib_per_s"], b["device_writes_per_op"], b.get("fsyncs_per_op", 0.0),
                 b.get("uring_enters_per_op", 0.0), b.get("allocs_per_op", 0.0),
                 b.get("bg_io_in_flight_per_read", 0.0), iops_ratio,
                 lat_ratio if "t1q1" in t else None, verdict))

head = ("test", "raw IOPS", "raw lat us", "raw MiB/s", "bs IOPS", "bs lat us", "bs MiB/s",
        "bs wr/op", "fsync/op", "enter/op", "alloc/op", "bg/read", "IOPS ratio", "lat ratio",
        "goal")
print(f"{head[0]:<22}" + "".join(f"{h:>11}" for h in head[1:14]) + f"  {head[14]}")
for t, ri, rl, rm, bi, bl, bm, wr, fs, en, al, bg, ir, lr, v in rows:
    lr_text = f"{lr:>11.2f}" if lr is not None else f"{'-':>11}"
    print(f"{t:<22}{ri:>11.0f}{rl:>11.1f}{rm:>11.1f}{bi:>11.0f}{bl:>11.1f}{bm:>11.1f}{wr:>11.2f}"
          f"{fs:>11.2f}{en:>11.2f}{al:>11.2f}{bg:>11.2f}{ir:>11.2f}{lr_text}  {v}")
print("raw = fio libaio direct on a raw file; bs = blockstore via io_uring; per operation: bs "
      "wr/op = device writes (write amplification), fsync/op = fsyncs, enter/op = io_uring_enter "
      "calls, alloc/op = heap allocations; bg/read = writes and fsyncs in flight when a read "
      "went to the device.\nread_4k_t1q1_flushing: T1Q1 reads (immediate_commit none) while the "
      "flusher drains a backlog of a quarter of the working set, beside the same raw reads.\n"
      "write_4m: fio runs 4M x Q32, the blockstore one 4M operation (32 x 128K object writes) at "
      "a time.")

report = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "runtime_s": float(runtime),
    "size": size,
    "host": " ".join(os.uname()),
    "raw": raw,
    "blockstore": bs_all,
    "comparison": comparison,
}
with open(out, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
print(f"results: {out}")
PY
