//! `libfio_vitastor.so`, the fio ioengine of vitastor-rs.
//!
//! The engine itself is C (`src/fio_vitastor.c`, compiled by `build.rs` against the headers
//! of the installed fio): fio's engine API is a set of C structs (`thread_data`, `io_u`,
//! `ioengine_ops`) whose layout is only known from fio's own headers. This file only exports
//! the entry point fio looks up, because a Rust cdylib exports Rust symbols and hides those
//! of the C objects linked into it.

use std::ffi::c_void;

extern "C" {
    /// The engine's single, static `struct ioengine_ops` (defined in `fio_vitastor.c`).
    fn vitastor_fio_ops() -> *mut c_void;
}

/// fio calls this after `dlopen("libfio_vitastor.so")` when it finds no `ioengine` symbol;
/// it stores the engine's ops into `*ops`. The pointer is the same on every call, as fio
/// expects when it reloads the engine at job start.
///
/// # Safety
/// `ops` points to writable storage for one pointer (fio's `struct ioengine_ops **`).
#[no_mangle]
pub unsafe extern "C" fn get_ioengine(ops: *mut *mut c_void) {
    // SAFETY: `ops` is writable per the caller's contract; `vitastor_fio_ops` only returns
    // the address of a static.
    unsafe { *ops = vitastor_fio_ops() };
}
