# /init of the VM scenarios' guest after the boot every guest shares (testkit's vm::initramfs
# puts that first: busybox applets, mounts, virtio modules, /dev/vda).
#
# For vm_secs seconds of its own uptime, round n writes fresh random data to slot
# n % vm_slots of /dev/vda (O_DIRECT, then a flush), reads it back past every cache and
# compares checksums, then writes the round's record (slot, round, checksum) to the slot's
# record block, and prints one console line per round:
#   VM-ROUND <n> <ok|BAD|EIO:<ops>> slot=<s> md5=<written> got=<read back>
# A write whose dd succeeded was acknowledged, so the host later expects, per slot, the
# data and the record of the last round on it (unless that round's data write failed).
# I/O may pause for as long as the cluster recovers: requests just wait; an error is a
# failure and is printed, never retried here.
#
# The layout comes from the kernel command line (the kernel passes unknown name=value
# words to init as environment variables): vm_slots, vm_slot_blocks (64 KiB blocks per
# slot), vm_data_block (first data block, in 64 KiB blocks); record block s (4 KiB) is at
# byte 4096 * s.

# What could turn a long pause into an error or a warning: the block layer's request
# timeout (the queue has no io_timeout file when the driver has no timeout handler, as
# virtio_blk: its requests only wait) and the hung-task detector's threshold.
echo "VM-KERNEL io_timeout_ms=$(cat /sys/block/vda/queue/io_timeout 2>/dev/null || echo none)" \
    "hung_task_timeout_secs=$(cat /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null)"

uptime_secs() { read -r up _ </proc/uptime; echo "${up%.*}"; }
md5() { set -- $(md5sum "$1"); echo "$1"; }

start=$(uptime_secs)
n=0 ok=0 bad=0 eio=0
while [ $(($(uptime_secs) - start)) -lt "$vm_secs" ]; do
    n=$((n + 1))
    slot=$((n % vm_slots))
    block=$((vm_data_block + slot * vm_slot_blocks))
    dd if=/dev/urandom of=/tmp/w bs=64k count="$vm_slot_blocks" 2>/dev/null
    sum=$(md5 /tmp/w)
    got=-
    failed=
    if dd if=/tmp/w of=/dev/vda bs=64k seek=$block oflag=direct conv=notrunc,fsync 2>/tmp/err; then
        echo 3 >/proc/sys/vm/drop_caches
        if dd if=/dev/vda of=/tmp/r bs=64k skip=$block count="$vm_slot_blocks" iflag=direct 2>/tmp/err; then
            got=$(md5 /tmp/r)
        else
            failed=read
        fi
        echo "VMREC slot=$slot round=$n md5=$sum" >/tmp/rec
        if ! dd if=/tmp/rec of=/dev/vda bs=4096 seek=$slot count=1 oflag=direct conv=sync,notrunc,fsync 2>/tmp/err; then
            failed=${failed:+$failed,}record
        fi
    else
        failed=write
    fi
    if [ -n "$failed" ]; then
        eio=$((eio + 1))
        echo "VM-ROUND $n EIO:$failed slot=$slot md5=$sum got=$got err=$(tail -n 1 /tmp/err)"
    elif [ "$got" = "$sum" ]; then
        ok=$((ok + 1))
        echo "VM-ROUND $n ok slot=$slot md5=$sum got=$got"
    else
        bad=$((bad + 1))
        echo "VM-ROUND $n BAD slot=$slot md5=$sum got=$got"
    fi
    sleep 0.2
done
echo "VM-SUMMARY rounds=$n ok=$ok bad=$bad eio=$eio"
echo "VM-DMESG-BEGIN"
dmesg
echo "VM-DMESG-END"
sync
poweroff -f
