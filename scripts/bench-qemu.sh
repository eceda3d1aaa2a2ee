#!/usr/bin/env bash
# `make bench` (QEMU part): `qemu-img bench` through block-vitastor.so beside fio through
# libfio_vitastor.so, both on the same devcluster image: 4 KiB writes then reads at queue
# depth 1 (T1Q1) and 32, sequential (qemu-img bench's pattern; fio runs the same). Prints a
# table with the average latency (Little's law for qemu-img bench: time * depth / count) and
# the ratio QEMU/fio (goal: at most 1.1). The fio column is left out when the engine is not
# built. Results are kept in target/bench/qemu-<date>.txt.
#
# Environment: BENCH_QEMU_COUNT_Q1 (requests per T1Q1 run, default 10000),
# BENCH_QEMU_COUNT_Q32 (default 100000), BENCH_IMMEDIATE_COMMIT (all | none, default all),
# BENCH_DIR (work directory, default target/bench; must not be tmpfs), CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COUNT_Q1="${BENCH_QEMU_COUNT_Q1:-10000}"
COUNT_Q32="${BENCH_QEMU_COUNT_Q32:-100000}"
IMMEDIATE="${BENCH_IMMEDIATE_COMMIT:-all}"
WORK="${BENCH_DIR:-$ROOT/target/bench}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
DRIVER="$BIN/block-vitastor.so"
ENGINE="$BIN/libfio_vitastor.so"
IMAGE_SIZE=$((1 << 30))

command -v qemu-img >/dev/null || { echo "bench-qemu: qemu-img not found (run scripts/setup.sh)" >&2; exit 1; }
for f in "$DRIVER" "$BIN/devcluster" "$BIN/vitastor-osd"; do
    [ -e "$f" ] || { echo "bench-qemu: $f is missing; run make build" >&2; exit 1; }
done
if [ -e "$ENGINE" ] && command -v fio >/dev/null; then
    with_fio=1
else
    with_fio=0
    echo "bench-qemu: $ENGINE (or fio) missing; the fio column is left out" >&2
fi
# The biggest run must fit in the image (qemu-img bench does not wrap around).
if [ $((COUNT_Q32 * 4096)) -gt $IMAGE_SIZE ] || [ $((COUNT_Q1 * 4096)) -gt $IMAGE_SIZE ]; then
    echo "bench-qemu: counts above $((IMAGE_SIZE / 4096)) do not fit the 1 GiB image" >&2
    exit 1
fi
mkdir -p "$WORK"
if [ "$(stat -f -c %T "$WORK")" = "tmpfs" ]; then
    echo "bench-qemu: $WORK is on tmpfs; set BENCH_DIR to a directory on a real disk" >&2
    exit 1
fi

STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="$WORK/qemu-$STAMP.txt"
RUN="$(mktemp -d "$WORK/qemu-run.XXXXXX")"
stop() {
    "$BIN/devcluster" down --dir "$RUN/cluster" >/dev/null 2>&1 || true
    rm -rf "$RUN"
}
trap stop EXIT

echo "bench-qemu: starting a devcluster (immediate_commit=$IMMEDIATE)" >&2
# The OSD options bench-fio.sh uses (drives with power-loss protection), so numbers compare.
OSD_ARGS=(--disable_data_fsync true --flusher_count 8 --journal_no_same_sector_overwrites true
    --journal_sector_buffer_count 1024)
"$BIN/devcluster" up --dir "$RUN/cluster" --osds 3 --immediate-commit "$IMMEDIATE" \
    --image bench --image-size "$IMAGE_SIZE" "${OSD_ARGS[@]/#/--osd-arg=}" >"$RUN/up.env"
ETCD="$(sed -n 's/^etcd_address=//p' "$RUN/up.env")"
[ -n "$ETCD" ] || { echo "bench-qemu: devcluster printed no etcd_address" >&2; exit 1; }
SPEC="vitastor:image=bench:etcd_host=${ETCD//:/\\:}"

# qemu-img bench: prints "Run completed in X seconds."; echoes "iops lat_us".
qemu_bench() { # RW(read|write) DEPTH COUNT
    local rw="$1" depth="$2" count="$3" flags=() secs
    [ "$rw" = write ] && flags=(-w)
    secs=$(LD_PRELOAD="$DRIVER" qemu-img bench -f raw -t none -d "$depth" -c "$count" -s 4096 \
        -S 4096 "${flags[@]}" "$SPEC" | sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p')
    [ -n "$secs" ] || { echo "bench-qemu: qemu-img bench printed no time" >&2; exit 1; }
    awk -v s="$secs" -v c="$count" -v d="$depth" 'BEGIN { printf "%.0f %.1f\n", c / s, s * d / c * 1e6 }'
}

# fio through the engine, the same requests; echoes "iops lat_us".
fio_bench() { # RW DEPTH COUNT
    local rw="$1" depth="$2" count="$3"
    fio -thread -ioengine="$ENGINE" -etcd="$ETCD" -image=bench -name=bench -direct=1 -bs=4k \
        -rw="$rw" -iodepth="$depth" -number_ios="$count" -size="$IMAGE_SIZE" \
        -output-format=json >"$RUN/fio.json"
    python3 - "$RUN/fio.json" "$rw" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
if job["error"]:
    sys.exit(f"bench-qemu: fio failed with error {job['error']}")
d = job[sys.argv[2]]
print(f"{d['iops']:.0f} {d['lat_ns']['mean'] / 1000:.1f}")
PY
}

{
    if [ $with_fio = 1 ]; then
        printf "%-16s %12s %12s %12s %12s %8s\n" test qemu-iops qemu-lat-us fio-iops fio-lat-us ratio
    else
        printf "%-16s %12s %12s\n" test qemu-iops qemu-lat-us
    fi
    # Writes first: the reads then hit written objects, not unallocated ones.
    for t in "write 1 $COUNT_Q1" "read 1 $COUNT_Q1" "write 32 $COUNT_Q32" "read 32 $COUNT_Q32"; do
        read -r rw depth count <<<"$t"
        name="$rw-4k-q$depth"
        echo "bench-qemu: $name ($count requests)" >&2
        read -r q_iops q_lat <<<"$(qemu_bench "$rw" "$depth" "$count")"
        if [ $with_fio = 1 ]; then
            read -r f_iops f_lat <<<"$(fio_bench "$rw" "$depth" "$count")"
            ratio=$(awk -v a="$q_lat" -v b="$f_lat" 'BEGIN { printf "%.2f", a / b }')
            printf "%-16s %12s %12s %12s %12s %8s\n" "$name" "$q_iops" "$q_lat" "$f_iops" "$f_lat" "$ratio"
        else
            printf "%-16s %12s %12s\n" "$name" "$q_iops" "$q_lat"
        fi
    done
} | tee "$OUT"
echo "bench-qemu: results in $OUT" >&2
