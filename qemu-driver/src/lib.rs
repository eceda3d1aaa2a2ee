//! `block-vitastor.so`, the QEMU block driver of vitastor-rs (protocol `vitastor`).
//!
//! The driver is C (`src/block_vitastor.c`, `src/etcd_http.c`): QEMU's block driver API is a
//! set of C structs and macros (`BlockDriver`, coroutines, `AioContext`) whose layout is only
//! known from the headers of the exact QEMU version that loads it. `build.rs` compiles it
//! against those headers (prepared by `scripts/qemu-headers.sh`) and links
//! `target/<profile>/block-vitastor.so`; this crate has no Rust code of its own. The tests in
//! `tests/` drive the real qemu-img, qemu-io, qemu-nbd and qemu-system-x86_64 with it.
