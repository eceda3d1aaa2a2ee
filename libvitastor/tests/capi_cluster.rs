//! A C program that uses only `vitastor_c.h` writes data across object boundaries on a real
//! cluster, syncs, reads it back and compares (issue #4). Each of its waits gives up with a
//! message after a deadline (argv[2] seconds), so a cluster that never answers fails the test
//! instead of hanging it. Needs gcc (`make setup`); the OSD binaries are rebuilt when stale.

mod common;

use std::time::Duration;

use common::CProgram;
use vitastor_testkit::{Cluster, ClusterOptions, TestkitError};

const C_PROGRAM: &str = r#"
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "vitastor_c.h"

static void on_io(void *opaque, long retval) { *(long *)opaque = retval; }
static void on_read(void *opaque, long retval, uint64_t version) { (void)version; *(long *)opaque = retval; }

static long wait_secs;

/* Runs the client until *done != 1 (the callbacks overwrite the 1); exits with status 20 and
   a message when `what` has not finished after wait_secs. */
static void wait_for(vitastor_c *c, long *done, const char *what) {
    struct pollfd p = { vitastor_c_epoll_get_fd(c), POLLIN, 0 };
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (*done == 1) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= wait_secs) {
            fprintf(stderr, "%s did not finish within %ld s\n", what, wait_secs);
            exit(20);
        }
        poll(&p, 1, 100);
        vitastor_c_epoll_handle_events(c, 0);
    }
}

static char wbuf[3 * 131072], rbuf[3 * 131072];

int main(int argc, char **argv) {
    if (argc < 3) return 10;
    wait_secs = atol(argv[2]);
    const char *opts[] = { "etcd_address", argv[1] };
    vitastor_c *c = vitastor_c_create_epoll_json(opts, 2);
    if (!c) return 11;
    long r = 1;
    vitastor_c_on_ready(c, on_io, &r);
    wait_for(c, &r, "connecting");
    for (size_t i = 0; i < sizeof(wbuf); i++) wbuf[i] = (char)(i * 7 + i / 4096);
    /* 2 objects and a half, starting 8 KiB into an object: three PGs, two boundaries. */
    uint64_t inode = (1ull << 48) | 5, off = 131072 - 8192;
    size_t len = sizeof(wbuf) - 131072 + 16384;
    struct iovec wio[2] = { { wbuf, 4096 }, { wbuf + 4096, len - 4096 } };
    r = 1;
    vitastor_c_write(c, inode, off, len, 0, wio, 2, on_io, &r);
    wait_for(c, &r, "write");
    if (r != (long)len) { fprintf(stderr, "write: %ld\n", r); return 12; }
    r = 1;
    vitastor_c_sync(c, on_io, &r);
    wait_for(c, &r, "sync");
    if (r != 0) { fprintf(stderr, "sync: %ld\n", r); return 13; }
    struct iovec rio = { rbuf, len };
    r = 1;
    vitastor_c_read(c, inode, off, len, &rio, 1, on_read, &r);
    wait_for(c, &r, "read");
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
    let mut opts = ClusterOptions::from_workspace();
    opts.osd_size = 256 << 20;
    let cluster = Cluster::start(opts).expect("cluster");
    program.run(&[&cluster.etcd_address(), "60"]);
}

/// No etcd behind the address: the C program's wait gives up with its message, and a program
/// that never returns is killed at the test's deadline instead of hanging the run.
#[test]
fn a_cluster_that_never_answers_fails_instead_of_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(program) = CProgram::build(C_PROGRAM, tmp.path()) else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let etcd = format!("127.0.0.1:{port}/v3");
    let out = program
        .run_within(&[&etcd, "1"], Duration::from_secs(60))
        .expect("the C program's own wait ends it");
    assert_eq!(out.status.code(), Some(20), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connecting did not finish within 1 s"),
        "{out:?}"
    );
    match program.run_within(&[&etcd, "1000"], Duration::from_secs(2)) {
        Err(TestkitError::Timeout { .. }) => {}
        other => panic!("expected the run to be killed at its deadline: {other:?}"),
    }
}
