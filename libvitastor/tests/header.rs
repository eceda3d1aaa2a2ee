//! `include/vitastor_c.h` must be what cbindgen generates from `src/capi.rs`, and it must
//! compile and link against the built `libvitastor.so`.

mod common;

use std::path::PathBuf;

use common::CProgram;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../include/vitastor_c.h")
}

fn generate() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/capi.rs"))
        .generate()
        .expect("cbindgen failed on src/capi.rs")
        .write(&mut out);
    String::from_utf8(out).expect("cbindgen output is UTF-8")
}

#[test]
fn header_is_current() {
    let fresh = generate();
    let path = header_path();
    if std::env::var_os("VITASTOR_REGEN_HEADER").is_some() {
        std::fs::write(&path, &fresh).expect("writing include/vitastor_c.h");
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == fresh,
        "include/vitastor_c.h is stale; regenerate it with:\n  \
         VITASTOR_REGEN_HEADER=1 cargo test -p vitastor-client --test header header_is_current"
    );
}

const C_PROGRAM: &str = r#"
#include <stdio.h>
#include "vitastor_c.h"

static void on_io(void *opaque, long retval) { *(long *)opaque = retval; }
static void on_read(void *opaque, long retval, uint64_t version) { (void)version; *(long *)opaque = retval; }

int main(void) {
    const char *opts[] = { "etcd_address", "127.0.0.1:1/v3", "config_path", "/nonexistent/vitastor.conf" };
    /* A missing config file is refused: creation fails cleanly with NULL. */
    vitastor_c *c = vitastor_c_create_epoll_json(opts, 4);
    if (c != NULL) return 1;
    const char *good[] = { "etcd_address", "127.0.0.1:1/v3" };
    c = vitastor_c_create_epoll_json(good, 2);
    if (c == NULL) return 2;
    if (vitastor_c_epoll_get_fd(c) < 0) return 3;
    if (vitastor_c_is_ready(c)) return 4;
    long r = 1;
    char buf[4096];
    struct iovec iov = { buf, sizeof(buf) };
    vitastor_c_read(c, 1ull << 48 | 1, 0, sizeof(buf), &iov, 1, on_read, &r);
    vitastor_c_write(c, 1ull << 48 | 1, 0, sizeof(buf), 0, &iov, 1, on_io, &r);
    vitastor_c_epoll_handle_events(c, 0);
    /* etcd is unreachable: the ops wait; destroying the client cancels them. */
    vitastor_c_destroy(c);
    if (r != -125) return 5;
    printf("api %d ok\n", VITASTOR_C_API_VERSION);
    return 0;
}
"#;

#[test]
fn c_program_compiles_and_links() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(program) = CProgram::build(C_PROGRAM, tmp.path()) else {
        return;
    };
    let run = program.run(&[]);
    assert!(String::from_utf8_lossy(&run.stdout).contains("api 5 ok"));
}
