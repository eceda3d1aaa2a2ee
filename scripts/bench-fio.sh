#!/usr/bin/env bash
# `make bench` (second part): the seed's six fio commands through libfio_vitastor.so against
# a local devcluster (etcd + 3 OSDs on files, pool 1 with pg_size 2) in both durability modes,
# beside the same six against a raw file on the same disk (libaio), plus the loopback TCP
# round-trip time. Per row: raw, ours, ours ÷ raw, the seed's floor and ours ÷ floor, and,
# with BENCH_BASELINE, the same jobs on an older build in the same run.
#
# Modes: `all` (immediate_commit all with the seed's OSD options for drives with power-loss
# protection: disable_data_fsync, flusher_count 8, journal_no_same_sector_overwrites,
# journal_sector_buffer_count 1024) and `none` (every fsync on, nothing disabled).
# The image (and the raw file) is written in full before any job, so that reads hit data
# rather than holes that read back as zeroes without touching a disk.
# The seed's floor for T1Q1: read = 1 round trip + 1 raw read; write with immediate commit =
# 2 round trips + 1 raw write; lazy write + fsync = 4 round trips + 1 raw write + 1 raw fsync.
# Results are kept in target/bench/fio-<date>.json.
#
# Counters (when `perf` can count tracepoints, e.g. as root): every cluster job runs under
# `perf stat` on the fio client and on the three OSDs, and a second table per mode prints,
# per fio op, the system calls, `epoll_wait`s, `io_uring_enter`s and io_uring submissions
# (SQEs), and the context switches (each one a sleep, so a wake-up) of the client, of the
# OSDs' main threads and of the kernel's io-wq workers (disk I/O that io_uring could not
# issue without blocking). The OSD figures are the sum of all OSDs: a replicated 4k write is
# one primary plus one secondary. Ops are counted as fio's IOPS × (runtime + ramp), since
# perf counts the ramp too. A regression in the data path shows here as a larger count even
# when the shared machine's timings are noise.
#
# Storage: every OSD file is written out in full before its cluster starts (devcluster
# --osd-fill, i.e. `vitastor-disk prepare --fill`), like the raw file. Reserved-only files
# (fallocate: unwritten extents on ext4) made each cluster pay first writes the raw row never
# pays (an extent conversion with a journal transaction per write), clusters on them ran
# slower, and the one started second in a run was ahead on Q128 writes by 10-30% whichever
# build it ran (README: the order effect). BENCH_OSD_FILL=0 leaves the files reserved only (the old behaviour, for comparison).
#
# Environment: BENCH_RUNTIME (seconds per test, default 15), BENCH_IMAGE_SIZE (default 2G),
# BENCH_OSD_SIZE (each OSD's file, default 4G; three per cluster, written out in full),
# BENCH_MODES (default "all none"), BENCH_BASELINE (a directory with an older build's
# devcluster, vitastor-osd, vitastor-disk, libfio_vitastor.so and the libvitastor.so.0 it
# loads, e.g. a saved target/release: its figures
# are printed beside ours), BENCH_DIR (work directory, default target/bench; must not be
# tmpfs), CARGO_TARGET_DIR (where the binaries are, default target).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNTIME="${BENCH_RUNTIME:-15}"
IMAGE_SIZE="${BENCH_IMAGE_SIZE:-2G}"
MODES="${BENCH_MODES:-all none}"
OSD_SIZE="$(numfmt --from=iec "${BENCH_OSD_SIZE:-4G}")"
OSD_FILL="${BENCH_OSD_FILL:-1}"
BASELINE="${BENCH_BASELINE:-}"
WORK="${BENCH_DIR:-$ROOT/target/bench}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
ENGINE="$BIN/libfio_vitastor.so"

command -v fio >/dev/null || { echo "bench-fio: fio not found (run scripts/setup.sh)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-fio: python3 not found" >&2; exit 1; }
for f in "$ENGINE" "$BIN/devcluster" "$BIN/vitastor-osd"; do
    [ -e "$f" ] || { echo "bench-fio: $f is missing; run make build" >&2; exit 1; }
done
if [ -n "$BASELINE" ]; then
    BASELINE="$(cd "$BASELINE" && pwd)"
    for f in libfio_vitastor.so libvitastor.so.0 devcluster vitastor-osd vitastor-disk; do
        [ -e "$BASELINE/$f" ] || { echo "bench-fio: BENCH_BASELINE has no $f" >&2; exit 1; }
    done
fi
for m in $MODES; do
    case "$m" in all | none) ;; *) echo "bench-fio: unknown mode $m (all | none)" >&2; exit 1 ;; esac
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
CLUSTER_BIN=""
stop() {
    if [ -n "$CLUSTER_BIN" ]; then
        "$CLUSTER_BIN/devcluster" down --dir "$RUN/cluster" >/dev/null 2>&1 || true
    fi
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

# perf stat events for the counters table (see above), if perf can count them here.
PERF_EVENTS="raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_io_uring_enter,io_uring:io_uring_submit_req,context-switches"
COUNT=""
if command -v perf >/dev/null && perf stat -x, -e "$PERF_EVENTS" -o /dev/null true 2>/dev/null; then
    COUNT=1
else
    echo "bench-fio: perf cannot count syscall tracepoints here: no counters table" >&2
fi
OSD_PIDS="" # the OSDs of the running devcluster, comma-separated, for the counters

run_jobs() { # SIDE FIO-ARGS...: every job; JSON to $RUN/SIDE-NAME.json (+ .cli/.osd counters)
    local side="$1"
    shift
    for j in "${JOBS[@]}"; do
        local name="${j%%|*}" args="${j#*|}"
        echo "bench-fio: $side $name (${RUNTIME}s)" >&2
        local perf=() osd_perf=""
        if [ -n "$COUNT" ] && [ -n "$OSD_PIDS" ]; then
            perf=(perf stat -x, -e "$PERF_EVENTS" -o "$RUN/$side-$name.cli" --)
            perf stat -x, -e "$PERF_EVENTS" --per-thread -p "$OSD_PIDS" \
                -o "$RUN/$side-$name.osd" &
            osd_perf=$!
        fi
        # shellcheck disable=SC2086
        ${perf[@]+"${perf[@]}"} fio "$@" -name="$name" -direct=1 -runtime="$RUNTIME" -time_based \
            -ramp_time=1 -output-format=json $args >"$RUN/$side-$name.json"
        if [ -n "$osd_perf" ]; then
            kill -INT "$osd_perf"
            wait "$osd_perf" || true
        fi
    done
}

# Raw: a file of the same size on the same file system, written out in full once (fio would
# create it with fallocate, whose unwritten extents read back without touching the disk).
RAW="$WORK/raw-fio.img"
if [ "$(cat "$RAW.written" 2>/dev/null)" != "$IMAGE_SIZE" ]; then
    echo "bench-fio: writing out $RAW ($IMAGE_SIZE)" >&2
    rm -f "$RAW" "$RAW.written"
    fio -ioengine=libaio -direct=1 -name=layout -filename="$RAW" -size="$IMAGE_SIZE" -rw=write \
        -bs=4M -iodepth=32 -output-format=json >/dev/null
    echo "$IMAGE_SIZE" >"$RAW.written"
fi
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

osd_storage() { # BIN-DIR: devcluster options for the OSD files (written out unless BENCH_OSD_FILL=0)
    local bin="$1"
    echo "--osd-size $OSD_SIZE"
    [ "$OSD_FILL" = 0 ] && return
    if "$bin/devcluster" up --help | grep -q -- --osd-fill; then
        echo "--osd-fill"
        return
    fi
    # A baseline built before --osd-fill: the same written-out files, made here; its
    # `vitastor-disk prepare --size` keeps a file that already has the size.
    mkdir -p "$RUN/cluster"
    local i
    for i in 1 2 3; do
        dd if=/dev/zero of="$RUN/cluster/osd$i.data" bs=4M count=$((OSD_SIZE >> 22)) \
            oflag=direct conv=fsync status=none
    done
}

cluster_jobs() { # BIN-DIR SIDE MODE: a fresh devcluster of that build, image written in full, jobs
    local bin="$1" side="$2" mode="$3"
    local osd_args=()
    if [ "$mode" = all ]; then
        # The seed's published OSD options (drives with power-loss protection).
        osd_args=(--disable_data_fsync true --flusher_count 8
            --journal_no_same_sector_overwrites true --journal_sector_buffer_count 1024)
    fi
    echo "bench-fio: starting a devcluster ($side, immediate_commit=$mode)" >&2
    rm -rf "$RUN/cluster"
    local storage
    storage="$(osd_storage "$bin")"
    CLUSTER_BIN="$bin"
    # shellcheck disable=SC2086
    "$bin/devcluster" up --dir "$RUN/cluster" --osds 3 --immediate-commit "$mode" $storage \
        ${osd_args[@]+"${osd_args[@]/#/--osd-arg=}"} >"$RUN/up.env"
    local etcd
    etcd="$(sed -n 's/^etcd_address=//p' "$RUN/up.env")"
    OSD_PIDS="$(sed -n 's/^osd[0-9]*_pid=//p' "$RUN/up.env" | paste -sd, -)"
    [ -n "$etcd" ] || { echo "bench-fio: devcluster printed no etcd_address" >&2; exit 1; }
    local engine=(-thread -ioengine="$bin/libfio_vitastor.so" -etcd="$etcd" -pool=1 -inode=1
        -size="$IMAGE_SIZE")
    echo "bench-fio: $side $mode: writing the whole image ($IMAGE_SIZE)" >&2
    fio "${engine[@]}" -name=prefill -direct=1 -rw=write -bs=4M -iodepth=32 \
        -output-format=json >"$RUN/$side-$mode-prefill.json"
    run_jobs "$side-$mode" "${engine[@]}"
    OSD_PIDS=""
    "$bin/devcluster" down --dir "$RUN/cluster" >/dev/null
    CLUSTER_BIN=""
}

for mode in $MODES; do
    cluster_jobs "$BIN" vitastor "$mode"
    if [ -n "$BASELINE" ]; then
        cluster_jobs "$BASELINE" baseline "$mode"
    fi
done

# EC 2+1 beside rep2 (#13): the same six jobs, in the same run on the same disk, on a
# devcluster of the same 3 OSDs and options whose pool 1 is erasure-coded 2+1 (2 data parts
# and a Reed-Solomon parity part per 256 KiB object); its rows and their ratios to rep2 are
# printed after the main tables and kept in target/bench/fio-<date>-ec.json. BENCH_EC=0
# skips it.
BENCH_EC="${BENCH_EC:-1}"
ec_cluster_jobs() { # MODE: like cluster_jobs, for an EC 2+1 pool; JSON to $RUN/ec21-MODE-NAME.json
    local mode="$1"
    local osd_args=()
    if [ "$mode" = all ]; then
        osd_args=(--disable_data_fsync true --flusher_count 8
            --journal_no_same_sector_overwrites true --journal_sector_buffer_count 1024)
    fi
    echo "bench-fio: starting a devcluster (EC 2+1, immediate_commit=$mode)" >&2
    rm -rf "$RUN/cluster"
    local storage
    storage="$(osd_storage "$BIN")"
    CLUSTER_BIN="$BIN"
    # shellcheck disable=SC2086
    "$BIN/devcluster" up --dir "$RUN/cluster" --osds 3 --ec 2+1 --immediate-commit "$mode" \
        $storage ${osd_args[@]+"${osd_args[@]/#/--osd-arg=}"} >"$RUN/up.env"
    local etcd
    etcd="$(sed -n 's/^etcd_address=//p' "$RUN/up.env")"
    [ -n "$etcd" ] || { echo "bench-fio: devcluster printed no etcd_address" >&2; exit 1; }
    local engine=(-thread -ioengine="$BIN/libfio_vitastor.so" -etcd="$etcd" -pool=1 -inode=1
        -size="$IMAGE_SIZE")
    echo "bench-fio: EC 2+1 $mode: writing the whole image ($IMAGE_SIZE)" >&2
    fio "${engine[@]}" -name=prefill -direct=1 -rw=write -bs=4M -iodepth=32 \
        -output-format=json >"$RUN/ec21-$mode-prefill.json"
    run_jobs "ec21-$mode" "${engine[@]}"
    "$BIN/devcluster" down --dir "$RUN/cluster" >/dev/null
    CLUSTER_BIN=""
}
if [ "$BENCH_EC" != 0 ]; then
    for mode in $MODES; do
        ec_cluster_jobs "$mode"
    done
fi

python3 - "$RUN" "$OUT" "$MODES" "$BASELINE" "$RUNTIME" <<'PY'
import collections, json, os, sys

run, out, modes, baseline = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]
runtime = float(sys.argv[5])
rtt = float(open(f"{run}/rtt").read())
names = ["write-4M", "read-4M", "randwrite-t1q1-fsync", "randread-t1q1", "randwrite-q128", "randread-q128"]

def job(side, name):
    text = open(f"{run}/{side}-{name}.json").read()
    j = json.loads(text[text.index("{"):])["jobs"][0]
    if j["error"]:
        sys.exit(f"bench-fio: {side} {name} failed with error {j['error']}")
    d = j["write" if "write" in name else "read"]
    lat = d["lat_ns"]["mean"] / 1000
    p99 = d["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000
    # With -fsync=1 at depth 1 each operation is the write and its fsync: fio reports the
    # fsync apart, so add it (on both sides).
    sync = j.get("sync", {})
    synced = sync.get("total_ios", 0) > 0
    sync_lat = sync["lat_ns"]["mean"] / 1000 if synced else 0.0
    sync_p99 = sync["lat_ns"].get("percentile", {}).get("99.000000", 0) / 1000 if synced else 0.0
    return {"iops": d["iops"], "mbs": d["bw_bytes"] / 1e6, "lat_us": lat + sync_lat,
            "write_lat_us": lat, "sync_lat_us": sync_lat, "p99_us": p99,
            "sync_p99_us": sync_p99}

def p99_cell(r):
    """The p99 of a row: the write's and the fsync's apart where the op has both (fio
    measures them apart; the mean adds them, so the write's p99 alone can sit below it)."""
    if r.get("sync_lat_us", 0) > 0:
        return f"{r['p99_us']:.0f} + {r['sync_p99_us']:.0f}"
    return f"{r['p99_us']:.0f}"

def perf_counts(path, per_thread):
    """perf stat -x, output: {group: {event: count}}; groups are client, osd (main threads)
    and io-wq (the kernel's iou-wrk-* workers)."""
    c = collections.defaultdict(lambda: collections.defaultdict(float))
    if not os.path.exists(path):
        return None
    for line in open(path):
        p = line.strip().split(",")
        if len(p) < 4 or line.startswith("#"):
            continue
        if per_thread:
            thread, value, event = p[0], p[1], p[3]
            group = "io-wq" if thread.startswith("iou-wrk") else "osd"
        else:
            group, value, event = "client", p[0], p[2]
        try:
            c[group][event.split(":")[-1]] += float(value)
        except ValueError:
            pass  # <not counted> / <not supported>
    return c

def counters(side, name, r):
    """Per-op counts of one job, or None without perf."""
    cli = perf_counts(f"{run}/{side}-{name}.cli", False)
    osd = perf_counts(f"{run}/{side}-{name}.osd", True)
    if cli is None or osd is None:
        return None
    ops = r["iops"] * (runtime + 1)
    if ops <= 0:
        return None
    per = lambda g, e: (cli if g == "client" else osd)[g][e] / ops
    return {
        "client_syscalls": per("client", "sys_enter"),
        "client_epoll_waits": per("client", "sys_enter_epoll_wait"),
        "client_cs": per("client", "context-switches"),
        "osd_syscalls": per("osd", "sys_enter"),
        "osd_uring_enters": per("osd", "sys_enter_io_uring_enter"),
        "osd_sqes": per("osd", "io_uring_submit_req"),
        "osd_cs": per("osd", "context-switches"),
        "iowq_cs": per("io-wq", "context-switches"),
    }

def metric(name, r):
    """The row's figure: latency for T1Q1, MB/s for 4M, IOPS for Q128."""
    if "t1q1" in name:
        return r["lat_us"]
    return r["mbs"] if "4M" in name else r["iops"]

def floor(name, raw, mode):
    if "t1q1" not in name:
        return None
    if "read" in name:
        return raw["lat_us"] + rtt
    if mode == "all":
        # The client skips fsyncs in immediate_commit all: write = 2 round trips + 1 write.
        return raw["write_lat_us"] + 2 * rtt
    return raw["write_lat_us"] + raw["sync_lat_us"] + 4 * rtt

raw = {n: job("raw", n) for n in names}
report = {"rtt_us": rtt, "raw": raw, "modes": {}}
print(f"\nfio: raw file (libaio) vs libfio_vitastor.so on a devcluster (3 OSDs, pg_size 2), image "
      f"written in full first; loopback TCP round trip {rtt:.1f} us. T1Q1 rows are mean latency "
      f"in us (write rows include the fsync), 4M rows MB/s, Q128 rows IOPS.")
for mode in modes:
    rows = []
    for n in names:
        ours = job(f"vitastor-{mode}", n)
        ours["counters"] = counters(f"vitastor-{mode}", n, ours)
        row = {"test": n, "vitastor": ours, "floor_us": floor(n, raw[n], mode)}
        if baseline:
            row["baseline"] = job(f"baseline-{mode}", n)
            row["baseline"]["counters"] = counters(f"baseline-{mode}", n, row["baseline"])
        rows.append(row)
    report["modes"][mode] = rows
    opts = ("the seed's OSD options: disable_data_fsync, flusher_count 8, "
            "journal_no_same_sector_overwrites" if mode == "all" else "every fsync on")
    print(f"\nimmediate_commit {mode} ({opts})")
    head = ("| test | raw | ours (p99 µs; T1Q1 write rows: write + fsync) | ours ÷ raw | "
            "seed floor | ours ÷ floor |")
    sep = "|---|---|---|---|---|---|"
    if baseline:
        head += " previous build | ours ÷ previous |"
        sep += "---|---|"
    print(head)
    print(sep)
    for row in rows:
        n = row["test"]
        r, o = metric(n, raw[n]), metric(n, row["vitastor"])
        fl = row["floor_us"]
        line = (f"| {n} | {r:.0f} | {o:.0f} ({p99_cell(row['vitastor'])}) | {o / r:.2f} | "
                f"{f'{fl:.0f}' if fl else '—'} | {f'{o / fl:.2f}' if fl else '—'} |")
        if baseline:
            b = metric(n, row["baseline"])
            line += f" {b:.0f} | {o / b:.2f} |"
        print(line)
    if any(row["vitastor"]["counters"] for row in rows):
        keys = ["client_syscalls", "client_epoll_waits", "client_cs", "osd_syscalls",
                "osd_uring_enters", "osd_sqes", "osd_cs", "iowq_cs"]
        print(f"\nper fio op (4M rows: per 4 MiB op), immediate_commit {mode}: client syscalls / "
              "epoll_wait / context switches; OSDs (all three, main threads) syscalls / "
              "io_uring_enter / SQEs / context switches; io-wq worker context switches"
              + ("; `ours (previous)`" if baseline else ""))
        print("| test | client sys | client waits | client cs | OSD sys | OSD uring_enter | "
              "OSD SQEs | OSD cs | io-wq cs |")
        print("|---|---|---|---|---|---|---|---|---|")
        for row in rows:
            c = row["vitastor"]["counters"] or {}
            b = (row.get("baseline") or {}).get("counters") or {}
            cells = [f"{c[k]:.2f}" + (f" ({b[k]:.2f})" if k in b else "") if k in c else "—"
                     for k in keys]
            print(f"| {row['test']} | " + " | ".join(cells) + " |")
print("\nours ÷ raw and ours ÷ floor: latency rows want small numbers (1.00 = at the floor), "
      "throughput rows large ones; ours ÷ previous likewise.")
json.dump(report, open(out, "w"), indent=1)
print(f"\n(saved to {out})")
PY

# The EC 2+1 rows beside rep2 with the ratios and the goals of #13.
if [ "$BENCH_EC" != 0 ]; then
python3 - "$RUN" "${OUT%.json}-ec.json" "$MODES" <<'PY'
import json, sys

run, out, modes = sys.argv[1], sys.argv[2], sys.argv[3].split()
names = ["write-4M", "read-4M", "randwrite-t1q1-fsync", "randread-t1q1", "randwrite-q128", "randread-q128"]
# (goal of EC ÷ rep2, True when the ratio must stay at or below it)
goals = {"randwrite-t1q1-fsync": (1.8, True), "randread-t1q1": (1.1, True),
         "randwrite-q128": (0.5, False), "write-4M": (1.0, False)}

def figure(side, name):
    """Latency in us (write + fsync) for T1Q1, MB/s for 4M, IOPS for Q128; and the p99."""
    text = open(f"{run}/{side}-{name}.json").read()
    j = json.loads(text[text.index("{"):])["jobs"][0]
    if j["error"]:
        sys.exit(f"bench-fio: {side} {name} failed with error {j['error']}")
    d = j["write" if "write" in name else "read"]
    p99 = d["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000
    if "t1q1" in name:
        sync = j.get("sync", {})
        lat = d["lat_ns"]["mean"] / 1000
        if sync.get("total_ios", 0) > 0:
            lat += sync["lat_ns"]["mean"] / 1000
        return lat, p99
    return (d["bw_bytes"] / 1e6 if "4M" in name else d["iops"]), p99

report = {}
for mode in modes:
    print(f"\nEC 2+1 beside rep2, immediate_commit {mode} (same run, same disk, 3 OSDs; T1Q1 "
          f"rows mean latency in us, 4M rows MB/s, Q128 rows IOPS)")
    print("| test | rep2 (p99 µs) | EC 2+1 (p99 µs) | EC ÷ rep2 | goal |")
    print("|---|---|---|---|---|")
    rows = []
    for n in names:
        (rep, rep_p99), (ec, ec_p99) = figure(f"vitastor-{mode}", n), figure(f"ec21-{mode}", n)
        ratio = ec / rep
        goal = ""
        if n in goals:
            g, at_most = goals[n]
            ok = ratio <= g if at_most else ratio >= g
            goal = f"{'≤' if at_most else '≥'} {g}: {'pass' if ok else 'MISS'}"
        rows.append({"test": n, "rep2": rep, "ec21": ec, "ratio": ratio, "goal": goal})
        print(f"| {n} | {rep:.0f} ({rep_p99:.0f}) | {ec:.0f} ({ec_p99:.0f}) | {ratio:.2f} | "
              f"{goal or '—'} |")
    report[mode] = rows
json.dump(report, open(out, "w"), indent=1)
print(f"\n(saved to {out})")
PY
fi
