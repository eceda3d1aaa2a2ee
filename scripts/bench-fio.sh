#!/usr/bin/env bash
# `make bench` (second part): the seed's six fio commands through libfio_vitastor.so against
# a local devcluster (etcd + 3 OSDs on files, pool 1 with pg_size 2), beside the same six
# against a raw file on the same disk (libaio), plus the loopback TCP round-trip time, in one
# table with the ratio to raw and to the seed's theoretical bound (replicated T1Q1 read =
# 1 round trip + 1 disk read; write with immediate commit = 2 round trips + 1 disk write).
# Results are kept in target/bench/fio-<date>.json.
#
# Environment: BENCH_RUNTIME (seconds per test, default 15), BENCH_IMAGE_SIZE (default 2G),
# BENCH_IMMEDIATE_COMMIT (all | none, default all), BENCH_DIR (work directory, default
# target/bench; must not be tmpfs), CARGO_TARGET_DIR (where the binaries are, default target).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNTIME="${BENCH_RUNTIME:-15}"
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
# tmpfs has no O_DIRECT and no disk behind it: both sides would measure memory.
if [ "$(stat -f -c %T "$WORK")" = "tmpfs" ]; then
    echo "bench-fio: $WORK is on tmpfs; set BENCH_DIR to a directory on a real disk" >&2
    exit 1
fi

STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="$WORK/fio-$STAMP.json"
RUN="$(mktemp -d "$WORK/fio-run.XXXXXX")"
stop() {
    "$BIN/devcluster" down --dir "$RUN/cluster" >/dev/null 2>&1 || true
    rm -rf "$RUN"
}
trap stop EXIT

# The seed's six jobs: NAME and the fio arguments both sides share.
JOBS=(
    "write-4M|-rw=write -bs=4M -iodepth=32"
    "read-4M|-rw=read -bs=4M -iodepth=32"
    "randwrite-t1q1-fsync|-rw=randwrite -bs=4k -iodepth=1 -fsync=1"
    "randread-t1q1|-rw=randread -bs=4k -iodepth=1"
    "randwrite-q128|-rw=randwrite -bs=4k -iodepth=128"
    "randread-q128|-rw=randread -bs=4k -iodepth=128"
)

run_jobs() { # SIDE FIO-ARGS...: every job; JSON to $RUN/SIDE-NAME.json
    local side="$1"
    shift
    for j in "${JOBS[@]}"; do
        local name="${j%%|*}" args="${j#*|}"
        echo "bench-fio: $side $name (${RUNTIME}s)" >&2
        # shellcheck disable=SC2086
        fio "$@" -name="$name" -direct=1 -runtime="$RUNTIME" -time_based -ramp_time=1 \
            -output-format=json $args >"$RUN/$side-$name.json"
    done
}

# Raw: a file of the same size on the same file system, written out first like fio does.
RAW="$WORK/raw-fio.img"
echo "bench-fio: raw file $RAW" >&2
run_jobs raw -ioengine=libaio -invalidate=1 -filename="$RAW" -size="$IMAGE_SIZE"

# Loopback TCP round trip (one byte each way, Nagle off), the network part of the bound.
python3 - >"$RUN/rtt" <<'PY'
# Two processes (threads would measure Python's GIL hand-off, not the network).
import os, socket, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
if os.fork() == 0:
    c, _ = srv.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (b := c.recv(1)):
        c.sendall(b)
    os._exit(0)
s = socket.create_connection(srv.getsockname()); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n = 20000
for _ in range(1000):
    s.sendall(b"x"); s.recv(1)
t = time.perf_counter()
for _ in range(n):
    s.sendall(b"x"); s.recv(1)
print((time.perf_counter() - t) / n * 1e6)
s.close()
os.wait()
PY

echo "bench-fio: starting a devcluster (immediate_commit=$IMMEDIATE)" >&2
# OSD options of the seed's published benchmark (drives with power-loss protection).
OSD_ARGS=(--disable_data_fsync true --flusher_count 8 --journal_no_same_sector_overwrites true
    --journal_sector_buffer_count 1024)
"$BIN/devcluster" up --dir "$RUN/cluster" --osds 3 --immediate-commit "$IMMEDIATE" \
    "${OSD_ARGS[@]/#/--osd-arg=}" >"$RUN/up.env"
ETCD="$(sed -n 's/^etcd_address=//p' "$RUN/up.env")"
[ -n "$ETCD" ] || { echo "bench-fio: devcluster printed no etcd_address" >&2; exit 1; }
run_jobs vitastor -thread -ioengine="$ENGINE" -etcd="$ETCD" -pool=1 -inode=1 -size="$IMAGE_SIZE"

python3 - "$RUN" "$OUT" "$IMMEDIATE" <<'PY'
import json, sys

run, out, immediate = sys.argv[1:4]
rtt = float(open(f"{run}/rtt").read())
names = ["write-4M", "read-4M", "randwrite-t1q1-fsync", "randread-t1q1", "randwrite-q128", "randread-q128"]

def job(side, name):
    text = open(f"{run}/{side}-{name}.json").read()
    j = json.loads(text[text.index("{"):])["jobs"][0]
    if j["error"]:
        sys.exit(f"bench-fio: {side} {name} failed with error {j['error']}")
    d = j["write" if "write" in name else "read"]
    lat = d["lat_ns"]
    p99 = d["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000
    return {"iops": d["iops"], "mbs": d["bw_bytes"] / 1e6, "lat_us": lat["mean"] / 1000, "p99_us": p99}

rows = []
for n in names:
    raw, vs = job("raw", n), job("vitastor", n)
    row = {"test": n, "raw": raw, "vitastor": vs}
    if "t1q1" in n:
        # Seed: read = 1 round trip + 1 disk read; write = 2 round trips + 1 disk write.
        bound = raw["lat_us"] + (2 if "write" in n else 1) * rtt
        row["ratio_raw"] = vs["lat_us"] / raw["lat_us"]
        row["bound_us"] = bound
        row["ratio_bound"] = vs["lat_us"] / bound
    else:
        row["ratio_raw"] = vs["iops"] / raw["iops"]
    rows.append(row)
json.dump({"immediate_commit": immediate, "rtt_us": rtt, "results": rows}, open(out, "w"), indent=1)

print(f"\nfio: raw file (libaio) vs libfio_vitastor.so on a devcluster (3 OSDs, pg_size 2, "
      f"immediate_commit={immediate}, the seed's OSD options: disable_data_fsync, flusher_count 8, "
      f"journal_no_same_sector_overwrites); loopback TCP round trip {rtt:.1f} us")
print("| test | raw IOPS | raw MB/s | raw lat µs (p99) | vitastor IOPS | vitastor MB/s | vitastor lat µs (p99) | vs raw | seed bound µs | vs bound |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    a, b = r["raw"], r["vitastor"]
    kind = "lat ×" if "bound_us" in r else "IOPS ×"
    bound = f"{r['bound_us']:.0f}" if "bound_us" in r else "—"
    vb = f"{r['ratio_bound']:.2f}" if "ratio_bound" in r else "—"
    print(f"| {r['test']} | {a['iops']:.0f} | {a['mbs']:.0f} | {a['lat_us']:.0f} ({a['p99_us']:.0f}) | "
          f"{b['iops']:.0f} | {b['mbs']:.0f} | {b['lat_us']:.0f} ({b['p99_us']:.0f}) | "
          f"{kind} {r['ratio_raw']:.2f} | {bound} | {vb} |")
print(f"\n(saved to {out})")
PY
