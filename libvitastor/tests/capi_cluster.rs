//! A C program that uses only `vitastor_c.h` writes data across object boundaries on a real
//! cluster, syncs, reads it back and compares (issue #4). Needs gcc and the workspace's OSD
//! binaries (`make test` builds them); skipped with a printed reason without gcc.

mod common;

use common::{profile_dir, CProgram};
use vitastor_testkit::{Cluster, ClusterOptions};

const C_PROGRAM: &str = r#"
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include "vitastor_c.h"

static void on_io(void *opaque, long retval) { *(long *)opaque = retval; }
static void on_read(void *opaque, long retval, uint64_t version) { (void)version; *(long *)opaque = retval; }

/* Runs the client until *done != 1 (the callbacks overwrite the 1). */
static void wait_for(vitastor_c *c, long *done) {
    struct pollfd p = { vitastor_c_epoll_get_fd(c), POLLIN, 0 };
    while (*done == 1) {
        poll(&p, 1, 100);
        vitastor_c_epoll_handle_events(c, 0);
    }
}

static char wbuf[3 * 131072], rbuf[3 * 131072];

int main(int argc, char **argv) {
    if (argc < 2) return 10;
    const char *opts[] = { "etcd_address", argv[1] };
    vitastor_c *c = vitastor_c_create_epoll_json(opts, 2);
    if (!c) return 11;
    long r = 1;
    vitastor_c_on_ready(c, on_io, &r);
    wait_for(c, &r);
    for (size_t i = 0; i < sizeof(wbuf); i++) wbuf[i] = (char)(i * 7 + i / 4096);
    /* 2 objects and a half, starting 8 KiB into an object: three PGs, two boundaries. */
    uint64_t inode = (1ull << 48) | 5, off = 131072 - 8192;
    size_t len = sizeof(wbuf) - 131072 + 16384;
    struct iovec wio[2] = { { wbuf, 4096 }, { wbuf + 4096, len - 4096 } };
    r = 1;
    vitastor_c_write(c, inode, off, len, 0, wio, 2, on_io, &r);
    wait_for(c, &r);
    if (r != (long)len) { fprintf(stderr, "write: %ld\n", r); return 12; }
    r = 1;
    vitastor_c_sync(c, on_io, &r);
    wait_for(c, &r);
    if (r != 0) { fprintf(stderr, "sync: %ld\n", r); return 13; }
    struct iovec rio = { rbuf, len };
    r = 1;
    vitastor_c_read(c, inode, off, len, &rio, 1, on_read, &r);
    wait_for(c, &r);
    if (r != (long)len) { fprintf(stderr, "read: %ld\n", r); return 14; }
    if (memcmp(wbuf, rbuf, len) != 0) { fprintf(stderr, "data differs\n"); return 15; }
    vitastor_c_destroy(c);
    printf("read back %zu bytes\n", len);
    return 0;
}
"#;

#[test]
fn c_program_writes_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(program) = CProgram::build(C_PROGRAM, tmp.path()) else {
        return;
    };
    let mut opts = ClusterOptions::new(profile_dir());
    opts.osd_size = 256 << 20;
    let cluster = Cluster::start(opts).expect("cluster");
    program.run(&[&cluster.etcd_address()]);
}
