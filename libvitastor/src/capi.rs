//! The C ABI (`include/vitastor_c.h`, generated from this file by cbindgen): the names,
//! argument orders and callback shapes of the original Vitastor `vitastor_c.h`.
//!
//! # What this module owns
//! - Every `extern "C"` function, their pointer checks, and the one place where a
//!   [`ClientError`] becomes `-errno` ([`retval`]).
//! - Running completions after the client's borrow is released, so a C callback may call
//!   back into the library (QEMU and fio submit the next op from a completion).
//!
//! # What it must never do
//! - Unwind into C: nothing here panics on caller input; null pointers are refused.
//! - Wait inside the QEMU variant: QEMU's loop polls the client's fd and calls back.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_long, c_void, CStr};
use std::ptr;
use std::time::Duration;

use vitastor_layout::ImmediateCommit;

use crate::client::{Callback, Client, ImageWatch, OpDone, OpRequest, WatchResult};
use crate::error::ClientError;
use crate::options::ClientOptions;
use crate::sys::IoVec;

/// Version of this C API; the functions of version 5 of the original header that
/// `shared/spec/interfaces.md` lists are all present.
pub const VITASTOR_C_API_VERSION: u32 = 5;
/// Bits of an inode number below the pool id.
pub const POOL_ID_BITS: u32 = 16;
/// `vitastor_c_inode_get_immediate_commit`: every write needs a sync.
pub const IMMEDIATE_NONE: u32 = 0;
/// `vitastor_c_inode_get_immediate_commit`: small writes are durable at once.
pub const IMMEDIATE_SMALL: u32 = 1;
/// `vitastor_c_inode_get_immediate_commit`: every write is durable at once.
pub const IMMEDIATE_ALL: u32 = 2;

/// Completion of a read: `(opaque, retval, version)`.
pub type VitastorReadHandler =
    Option<unsafe extern "C" fn(opaque: *mut c_void, retval: c_long, version: u64)>;
/// Completion of other ops: `(opaque, retval)`.
pub type VitastorIOHandler = Option<unsafe extern "C" fn(opaque: *mut c_void, retval: c_long)>;
/// Completion of a bitmap read: `(opaque, retval, bitmap)`; the bitmap is valid during the
/// call only.
pub type VitastorReadBitmapHandler =
    Option<unsafe extern "C" fn(opaque: *mut c_void, retval: c_long, bitmap: *mut u8)>;
/// QEMU fd handler.
pub type IOHandler = Option<unsafe extern "C" fn(opaque: *mut c_void)>;
/// QEMU's `aio_set_fd_handler` shape (`is_external` and `poll_fn` are passed as 0/NULL).
pub type QEMUSetFDHandler = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        fd: c_int,
        is_external: c_int,
        fd_read: IOHandler,
        fd_write: IOHandler,
        poll_fn: *mut c_void,
        opaque: *mut c_void,
    ),
>;

/// The non-null form of [`QEMUSetFDHandler`].
type SetFdHandlerFn =
    unsafe extern "C" fn(*mut c_void, c_int, c_int, IOHandler, IOHandler, *mut c_void, *mut c_void);

/// The opaque client handle.
pub struct vitastor_c {
    client: Client,
    /// QEMU's registration function and its context, to unregister on destroy.
    qemu: Option<(SetFdHandlerFn, *mut c_void)>,
}

/// The C return value of an op result: the byte count, or `-errno`.
fn retval(result: &Result<u64, ClientError>) -> c_long {
    match result {
        Ok(n) => c_long::try_from(*n).unwrap_or(c_long::MAX),
        Err(e) => -c_long::from(e.errno()),
    }
}

/// Runs queued completions one at a time, each after the client borrow is released.
///
/// # Safety
/// `client` must be a live handle from a `vitastor_c_create_*` function.
unsafe fn run_completions(client: *mut vitastor_c) {
    loop {
        // SAFETY: the caller guarantees `client` is live; the borrow ends before the
        // callback runs, so a callback re-entering the library gets its own borrow.
        let Some(done) = (unsafe { (*client).client.pop_completion() }) else {
            return;
        };
        done();
    }
}

fn io_done(cb: usize, opaque: usize, done: OpDone) {
    // SAFETY: `cb` was made from a non-null `VitastorIOHandler` in `io_callback`.
    let f: unsafe extern "C" fn(*mut c_void, c_long) = unsafe { std::mem::transmute(cb) };
    // SAFETY: calling the caller's callback with the opaque pointer it gave us.
    unsafe { f(opaque as *mut c_void, retval(&done.result)) };
}

fn read_done(cb: usize, opaque: usize, done: OpDone) {
    // SAFETY: `cb` was made from a non-null `VitastorReadHandler` in `vitastor_c_read`.
    let f: unsafe extern "C" fn(*mut c_void, c_long, u64) = unsafe { std::mem::transmute(cb) };
    // SAFETY: calling the caller's callback with the opaque pointer it gave us.
    unsafe { f(opaque as *mut c_void, retval(&done.result), done.version) };
}

fn bitmap_done(cb: usize, opaque: usize, mut done: OpDone) {
    // SAFETY: `cb` was made from a non-null `VitastorReadBitmapHandler`.
    let f: unsafe extern "C" fn(*mut c_void, c_long, *mut u8) = unsafe { std::mem::transmute(cb) };
    let bitmap = if done.result.is_ok() {
        done.bitmap.as_mut_ptr()
    } else {
        ptr::null_mut()
    };
    // SAFETY: the bitmap lives until this function returns, as documented.
    unsafe { f(opaque as *mut c_void, retval(&done.result), bitmap) };
}

fn watch_done(cb: usize, opaque: usize, result: WatchResult) {
    // SAFETY: `cb` was made from a non-null `VitastorIOHandler` in `vitastor_c_watch_inode`.
    let f: unsafe extern "C" fn(*mut c_void, c_long) = unsafe { std::mem::transmute(cb) };
    let value = match result {
        // The handle is freed by vitastor_c_close_watch.
        Ok(watch) => Box::into_raw(Box::new(watch)) as c_long,
        Err(e) => -c_long::from(e.errno()),
    };
    // SAFETY: calling the caller's callback with the opaque pointer it gave us.
    unsafe { f(opaque as *mut c_void, value) };
}

fn io_callback(cb: VitastorIOHandler, opaque: *mut c_void) -> Option<Callback<OpDone>> {
    Some(Callback::Plain {
        f: io_done,
        a: cb? as usize,
        b: opaque as usize,
    })
}

/// # Safety
/// `s` is null or a NUL-terminated string.
unsafe fn opt_str<'a>(s: *const c_char) -> Option<&'a str> {
    if s.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .ok()
        .filter(|s| !s.is_empty())
}

fn create(options: ClientOptions) -> *mut vitastor_c {
    match Client::new(&options) {
        Ok(client) => Box::into_raw(Box::new(vitastor_c { client, qemu: None })),
        Err(e) => {
            crate::log(format_args!("cannot create the client: {e}"));
            ptr::null_mut()
        }
    }
}

/// # Safety
/// Each pointer is null or a NUL-terminated string.
unsafe fn legacy_options(
    config_path: *const c_char,
    etcd_host: *const c_char,
    etcd_prefix: *const c_char,
) -> ClientOptions {
    let mut o = ClientOptions::new();
    // SAFETY: forwarded caller contract.
    let pairs = unsafe {
        [
            ("config_path", opt_str(config_path)),
            ("etcd_address", opt_str(etcd_host)),
            ("etcd_prefix", opt_str(etcd_prefix)),
        ]
    };
    for (k, v) in pairs {
        if let Some(v) = v {
            o.set(k, v);
        }
    }
    o
}

unsafe extern "C" fn qemu_fd_read(opaque: *mut c_void) {
    let client = opaque.cast::<vitastor_c>();
    // SAFETY: `opaque` is the live handle registered in vitastor_c_create_qemu and
    // unregistered in vitastor_c_destroy before it is freed.
    unsafe {
        (*client).client.work();
        run_completions(client);
    }
}

/// Creates a client whose fd is polled by QEMU's loop through `aio_set_fd_handler`.
/// RDMA options are not supported and ignored; `log_level` is ignored.
///
/// # Safety
/// String arguments are null or NUL-terminated; `aio_set_fd_handler` is callable with
/// `aio_context` until `vitastor_c_destroy`.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_create_qemu(
    aio_set_fd_handler: QEMUSetFDHandler,
    aio_context: *mut c_void,
    config_path: *const c_char,
    etcd_host: *const c_char,
    etcd_prefix: *const c_char,
    use_rdma: c_int,
    rdma_device: *const c_char,
    rdma_port_num: c_int,
    rdma_gid_index: c_int,
    rdma_mtu: c_int,
    log_level: c_int,
) -> *mut vitastor_c {
    // RDMA and log levels are not supported; the arguments exist for ABI compatibility.
    let _ = (
        use_rdma,
        rdma_device,
        rdma_port_num,
        rdma_gid_index,
        rdma_mtu,
        log_level,
    );
    let Some(set) = aio_set_fd_handler else {
        return ptr::null_mut();
    };
    // SAFETY: forwarded caller contract.
    let client = create(unsafe { legacy_options(config_path, etcd_host, etcd_prefix) });
    if client.is_null() {
        return client;
    }
    // SAFETY: `client` was just created and is exclusively ours; `set` is QEMU's
    // registration function, called with its own context as the caller guarantees.
    unsafe {
        (*client).qemu = Some((set, aio_context));
        let fd = (*client).client.poll_fd();
        set(
            aio_context,
            fd,
            0,
            Some(qemu_fd_read),
            None,
            ptr::null_mut(),
            client.cast(),
        );
    }
    client
}

/// Creates a client driven by `vitastor_c_uring_*` calls. RDMA options and `log_level`
/// are ignored.
///
/// # Safety
/// String arguments are null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_create_uring(
    config_path: *const c_char,
    etcd_host: *const c_char,
    etcd_prefix: *const c_char,
    use_rdma: c_int,
    rdma_device: *const c_char,
    rdma_port_num: c_int,
    rdma_gid_index: c_int,
    rdma_mtu: c_int,
    log_level: c_int,
) -> *mut vitastor_c {
    // RDMA and log levels are not supported; the arguments exist for ABI compatibility.
    let _ = (
        use_rdma,
        rdma_device,
        rdma_port_num,
        rdma_gid_index,
        rdma_mtu,
        log_level,
    );
    // SAFETY: forwarded caller contract.
    create(unsafe { legacy_options(config_path, etcd_host, etcd_prefix) })
}

/// # Safety
/// `options` points to `options_len` NUL-terminated strings (key, value, key, value…).
unsafe fn json_options(options: *const *const c_char, options_len: c_int) -> ClientOptions {
    let mut o = ClientOptions::new();
    if options.is_null() || options_len <= 0 {
        return o;
    }
    // SAFETY: the caller guarantees `options_len` readable pointers.
    let list = unsafe { std::slice::from_raw_parts(options, options_len as usize) };
    for pair in list.chunks_exact(2) {
        // SAFETY: each entry is null or NUL-terminated per the caller's contract.
        if let (Some(k), Some(v)) = unsafe { (opt_str(pair[0]), opt_str(pair[1])) } {
            o.set(k, v);
        }
    }
    o
}

/// Creates a client from key/value option strings (`options_len` strings in total).
///
/// # Safety
/// See [`vitastor_c_create_epoll_json`].
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_create_uring_json(
    options: *const *const c_char,
    options_len: c_int,
) -> *mut vitastor_c {
    // SAFETY: forwarded caller contract.
    create(unsafe { json_options(options, options_len) })
}

/// Creates a client from key/value option strings (`options_len` strings in total), to be
/// driven with `vitastor_c_epoll_get_fd` and `vitastor_c_epoll_handle_events`.
///
/// # Safety
/// `options` points to `options_len` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_create_epoll_json(
    options: *const *const c_char,
    options_len: c_int,
) -> *mut vitastor_c {
    // SAFETY: forwarded caller contract.
    create(unsafe { json_options(options, options_len) })
}

/// Destroys the client; ops still running complete with `-ECANCELED` first.
///
/// # Safety
/// `client` is null or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_destroy(client: *mut vitastor_c) {
    if client.is_null() {
        return;
    }
    // SAFETY: live handle per the caller's contract; unregistering from QEMU first so its
    // loop never calls back into freed memory.
    unsafe {
        if let Some((set, ctx)) = (*client).qemu {
            set(
                ctx,
                (*client).client.poll_fd(),
                0,
                None,
                None,
                ptr::null_mut(),
                ptr::null_mut(),
            );
        }
        drop(Box::from_raw(client));
    }
}

macro_rules! live {
    ($client:expr) => {
        if $client.is_null() {
            return;
        }
    };
    ($client:expr, $default:expr) => {
        if $client.is_null() {
            return $default;
        }
    };
}

/// 1 once the cluster state is loaded.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_is_ready(client: *mut vitastor_c) -> c_int {
    live!(client, 0);
    // SAFETY: live handle.
    c_int::from(unsafe { (*client).client.is_ready() })
}

/// Calls `cb(opaque, 0)` once the cluster state is loaded.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_on_ready(
    client: *mut vitastor_c,
    cb: VitastorIOHandler,
    opaque: *mut c_void,
) {
    live!(client);
    let Some(cb) = io_callback(cb, opaque) else {
        return;
    };
    // SAFETY: live handle; completions run after the borrow.
    unsafe {
        (*client).client.on_ready(cb);
        run_completions(client);
    }
}

/// An fd that becomes readable when the client has work (its epoll fd).
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_uring_register_eventfd(client: *mut vitastor_c) -> c_int {
    live!(client, -22);
    // SAFETY: live handle.
    unsafe { (*client).client.poll_fd() }
}

/// Blocks until the cluster state is loaded.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_uring_wait_ready(client: *mut vitastor_c) {
    live!(client);
    // SAFETY: live handle.
    while !unsafe { (*client).client.is_ready() } {
        // SAFETY: live handle.
        unsafe { wait(client, None) };
    }
}

/// # Safety
/// `client` is a live handle.
unsafe fn wait(client: *mut vitastor_c, timeout: Option<Duration>) {
    // SAFETY: live handle; completions run after the borrow.
    unsafe {
        (*client).client.wait_events_no_run(timeout);
        run_completions(client);
    }
}

/// Does the work that is ready without blocking.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_uring_handle_events(client: *mut vitastor_c) {
    live!(client);
    // SAFETY: live handle.
    unsafe { wait(client, Some(Duration::ZERO)) };
}

/// Blocks until something happens, then handles it.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_uring_wait_events(client: *mut vitastor_c) {
    live!(client);
    // SAFETY: live handle.
    unsafe { wait(client, None) };
}

/// The fd to poll for readability.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_epoll_get_fd(client: *mut vitastor_c) -> c_int {
    live!(client, -22);
    // SAFETY: live handle.
    unsafe { (*client).client.poll_fd() }
}

/// Waits up to `timeout` ms (negative = forever, 0 = poll) and handles what is ready.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_epoll_handle_events(client: *mut vitastor_c, timeout: c_int) {
    live!(client);
    let timeout = u64::try_from(timeout).ok().map(Duration::from_millis);
    // SAFETY: live handle.
    unsafe { wait(client, timeout) };
}

/// # Safety
/// `iov` is null (with `iovcnt` 0) or points to `iovcnt` iovecs.
unsafe fn iov_slice<'a>(iov: *const IoVec, iovcnt: c_int) -> &'a [IoVec] {
    if iov.is_null() || iovcnt <= 0 {
        return &[];
    }
    // SAFETY: the caller guarantees `iovcnt` readable iovecs.
    unsafe { std::slice::from_raw_parts(iov, iovcnt as usize) }
}

/// Reads `len` bytes at `offset` into `iov`; `cb(opaque, len or -errno, version)`.
///
/// # Safety
/// `client` is a live handle; the iovec buffers stay valid and untouched until `cb`.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_read(
    client: *mut vitastor_c,
    inode: u64,
    offset: u64,
    len: u64,
    iov: *mut libc::iovec,
    iovcnt: c_int,
    cb: VitastorReadHandler,
    opaque: *mut c_void,
) {
    live!(client);
    let Some(cb) = cb else { return };
    let cb = Callback::Plain {
        f: read_done,
        a: cb as usize,
        b: opaque as usize,
    };
    // SAFETY: live handle and iovecs per the caller's contract.
    unsafe {
        let iov = iov_slice(iov, iovcnt);
        (*client)
            .client
            .submit(OpRequest::read(inode, offset, len, iov), cb);
        run_completions(client);
    }
}

/// Writes `len` bytes from `iov` at `offset`; `check_version` != 0 makes it a
/// compare-and-set. `cb(opaque, len or -errno)`.
///
/// # Safety
/// `client` is a live handle; the iovec buffers stay valid until `cb`.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_write(
    client: *mut vitastor_c,
    inode: u64,
    offset: u64,
    len: u64,
    check_version: u64,
    iov: *mut libc::iovec,
    iovcnt: c_int,
    cb: VitastorIOHandler,
    opaque: *mut c_void,
) {
    live!(client);
    let Some(cb) = io_callback(cb, opaque) else {
        return;
    };
    // SAFETY: live handle and iovecs per the caller's contract.
    unsafe {
        let iov = iov_slice(iov, iovcnt);
        (*client)
            .client
            .submit(OpRequest::write(inode, offset, len, check_version, iov), cb);
        run_completions(client);
    }
}

/// Deletes the objects covering the range. `cb(opaque, 0 or -errno)`.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_delete(
    client: *mut vitastor_c,
    inode: u64,
    offset: u64,
    len: u64,
    check_version: u64,
    cb: VitastorIOHandler,
    opaque: *mut c_void,
) {
    live!(client);
    let Some(cb) = io_callback(cb, opaque) else {
        return;
    };
    // SAFETY: live handle.
    unsafe {
        (*client)
            .client
            .submit(OpRequest::delete(inode, offset, len, check_version), cb);
        run_completions(client);
    }
}

/// Reads the allocation bitmap of the range (one bit per bitmap granularity).
/// `with_parents` is accepted but parent layers are not merged.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_read_bitmap(
    client: *mut vitastor_c,
    inode: u64,
    offset: u64,
    len: u64,
    with_parents: c_int,
    cb: VitastorReadBitmapHandler,
    opaque: *mut c_void,
) {
    live!(client);
    // Layering is not implemented yet, so there are no parents to merge.
    let _ = with_parents;
    let Some(cb) = cb else { return };
    let cb = Callback::Plain {
        f: bitmap_done,
        a: cb as usize,
        b: opaque as usize,
    };
    // SAFETY: live handle.
    unsafe {
        (*client)
            .client
            .submit(OpRequest::read_bitmap(inode, offset, len), cb);
        run_completions(client);
    }
}

/// Makes every write completed before it durable. `cb(opaque, 0 or -errno)`.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_sync(
    client: *mut vitastor_c,
    cb: VitastorIOHandler,
    opaque: *mut c_void,
) {
    live!(client);
    let Some(cb) = io_callback(cb, opaque) else {
        return;
    };
    // SAFETY: live handle.
    unsafe {
        (*client).client.submit(OpRequest::sync(), cb);
        run_completions(client);
    }
}

/// Looks an image up by name; `cb(opaque, handle)` with a watch handle (a pointer cast to
/// `long`), or `-ENOENT`.
///
/// # Safety
/// `client` is a live handle; `image` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_watch_inode(
    client: *mut vitastor_c,
    image: *mut c_char,
    cb: VitastorIOHandler,
    opaque: *mut c_void,
) {
    live!(client);
    let Some(f) = cb else { return };
    // SAFETY: NUL-terminated per the caller's contract.
    let name = unsafe { opt_str(image) }.unwrap_or("").to_string();
    let cb = Callback::Plain {
        f: watch_done,
        a: f as usize,
        b: opaque as usize,
    };
    // SAFETY: live handle.
    unsafe {
        (*client).client.watch_inode(&name, cb);
        run_completions(client);
    }
}

/// Stops a watch and frees its handle.
///
/// # Safety
/// `handle` came from `vitastor_c_watch_inode` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_close_watch(client: *mut vitastor_c, handle: *mut c_void) {
    if handle.is_null() {
        return;
    }
    // SAFETY: the handle is a Box<ImageWatch> made in `watch_done`.
    let watch = unsafe { Box::from_raw(handle.cast::<ImageWatch>()) };
    if !client.is_null() {
        // SAFETY: live handle.
        unsafe { (*client).client.close_watch(&watch) };
    }
}

/// # Safety
/// `handle` is null or a live watch handle.
unsafe fn with_watch<R>(handle: *mut c_void, default: R, f: impl FnOnce(&ImageWatch) -> R) -> R {
    if handle.is_null() {
        return default;
    }
    // SAFETY: a live Box<ImageWatch> made in `watch_done`.
    f(unsafe { &*handle.cast::<ImageWatch>() })
}

/// Image size in bytes.
///
/// # Safety
/// `handle` is a live watch handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_size(handle: *mut c_void) -> u64 {
    // SAFETY: forwarded caller contract.
    unsafe { with_watch(handle, 0, |w| w.with(|i| i.size)) }
}

/// Inode number with pool bits.
///
/// # Safety
/// `handle` is a live watch handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_num(handle: *mut c_void) -> u64 {
    // SAFETY: forwarded caller contract.
    unsafe { with_watch(handle, 0, |w| w.with(|i| i.inode)) }
}

/// Parent inode number with pool bits, 0 when none.
///
/// # Safety
/// `handle` is a live watch handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_parent_id(handle: *mut c_void) -> u64 {
    // SAFETY: forwarded caller contract.
    unsafe { with_watch(handle, 0, |w| w.with(|i| i.parent_id)) }
}

/// 1 for read-only images.
///
/// # Safety
/// `handle` is a live watch handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_readonly(handle: *mut c_void) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe { with_watch(handle, 0, |w| c_int::from(w.with(|i| i.readonly))) }
}

/// The image's `meta` JSON, or NULL. Owned by the handle: valid until the next call into
/// the library (which may refresh it) or `vitastor_c_close_watch`.
///
/// # Safety
/// `handle` is a live watch handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_meta(handle: *mut c_void) -> *mut c_char {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_watch(handle, ptr::null_mut(), |w| {
            w.with(|i| {
                i.meta
                    .as_ref()
                    .map_or(ptr::null_mut(), |m| m.as_ptr().cast_mut())
            })
        })
    }
}

/// etcd `mod_revision` of the image's metadata.
///
/// # Safety
/// `handle` is a live watch handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_mod_revision(handle: *mut c_void) -> u64 {
    // SAFETY: forwarded caller contract.
    unsafe { with_watch(handle, 0, |w| w.with(|i| i.mod_revision)) }
}

/// Block size of the inode's pool, 0 if unknown.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_block_size(
    client: *mut vitastor_c,
    inode_num: u64,
) -> u32 {
    live!(client, 0);
    // SAFETY: live handle.
    unsafe { (*client).client.pool_info(inode_num) }.map_or(0, |p| p.0)
}

/// Bitmap granularity of the inode's pool, 0 if unknown.
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_bitmap_granularity(
    client: *mut vitastor_c,
    inode_num: u64,
) -> u32 {
    live!(client, 0);
    // SAFETY: live handle.
    unsafe { (*client).client.pool_info(inode_num) }.map_or(0, |p| p.1)
}

/// `IMMEDIATE_ALL`, `IMMEDIATE_SMALL` or `IMMEDIATE_NONE` for the inode's pool; NONE when
/// neither the pool nor the cluster config says (so callers keep syncing).
///
/// # Safety
/// `client` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_immediate_commit(
    client: *mut vitastor_c,
    inode_num: u64,
) -> u32 {
    live!(client, IMMEDIATE_NONE);
    // SAFETY: live handle.
    match unsafe { (*client).client.pool_info(inode_num) }.and_then(|p| p.2) {
        Some(ImmediateCommit::All) => IMMEDIATE_ALL,
        Some(ImmediateCommit::Small) => IMMEDIATE_SMALL,
        Some(ImmediateCommit::None) | None => IMMEDIATE_NONE,
    }
}
