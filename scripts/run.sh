#!/usr/bin/env bash
# `make run`: a local cluster in ./var (etcd, monitor, 3 OSDs on sparse files, pool
# `testpool`, image `testimg`), kept in the foreground until Ctrl-C, which stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
DIR=var/cluster
mkdir -p "$DIR"
if [ -f "$DIR/devcluster.pid" ] && kill -0 "$(cat "$DIR/devcluster.pid")" 2>/dev/null; then
    echo "run: a cluster from an earlier 'make run' is still running; stopping it first"
    "$BIN/devcluster" down --dir "$DIR"
fi
# Start in the background, print how to use it, then wait in the foreground.
"$BIN/devcluster" up --dir "$DIR" --osds 3 --monitor --image testimg --image-size $((10 << 30)) > "$DIR/run.env"
ETCD=$(sed -n 's/^etcd_address=//p' "$DIR/run.env")
cat <<INFO

vitastor local cluster is up (data, configs and logs in $DIR):
$(sed 's/^/  /' "$DIR/run.env")

Try it (in another terminal):
  $BIN/vitastor-cli --etcd_address $ETCD status
  $BIN/vitastor-cli --etcd_address $ETCD ls -l
  fio -thread -ioengine=$PWD/$BIN/libfio_vitastor.so -name=test -bs=4k -direct=1 -iodepth=16 \\
      -rw=randwrite -runtime=10 -etcd=$ETCD -image=testimg
  $BIN/vitastor-qemu-preload qemu-img info 'vitastor:image=testimg:etcd_host=${ETCD/:/\\:}'
  $BIN/vitastor-nbd serve --etcd_address $ETCD --image testimg --socket /tmp/testimg.sock

Press Ctrl-C to stop the cluster.
INFO
stop() {
    echo
    "$BIN/devcluster" down --dir "$DIR"
    exit 0
}
trap stop INT TERM
while kill -0 "$(cat "$DIR/devcluster.pid")" 2>/dev/null; do
    sleep 1
done
echo "run: the cluster stopped on its own; see $DIR/devcluster.log" >&2
exit 1
