//! A C program that uses only `vitastor_c.h` writes data across object boundaries on a real
//! cluster, syncs, reads it back and compares (issue #4). Needs gcc and the workspace's OSD
//! binaries (`make test` builds them); skipped with a printed reason without gcc.

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

#[test]
fn c_program_writes_and_reads_back() {
    if Command::new("gcc").arg("--version").output().is_err() {
        println!("skipped: gcc is not installed");
        return;
    }
    let profile = profile_dir();
    let lib = [profile.clone(), profile.join("deps")]
        .into_iter()
        .find(|d| d.join("libvitastor.so").exists())
        .expect("libvitastor.so is built for the tests");
    let mut opts = ClusterOptions::new(profile);
    opts.osd_size = 256 << 20;
    let cluster = Cluster::start(opts).expect("cluster");
    let tmp = tempfile::tempdir().unwrap();
    let (src, bin) = (tmp.path().join("t.c"), tmp.path().join("t"));
    std::fs::write(&src, C_PROGRAM).unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
    let out = Command::new("gcc")
        .args(["-std=c99", "-D_DEFAULT_SOURCE", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .arg(format!("-I{}", include.display()))
        .arg(format!("-L{}", lib.display()))
        .arg("-lvitastor")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::os::unix::fs::symlink(
        lib.join("libvitastor.so"),
        tmp.path().join("libvitastor.so.0"),
    )
    .unwrap();
    let run = Command::new(&bin)
        .arg(cluster.etcd_address())
        .env("LD_LIBRARY_PATH", tmp.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the C program failed ({:?}):\n{}{}",
        run.status.code(),
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
