//! Gives libvitastor.so its soname, so programs linked against it record `libvitastor.so.0`
//! and keep working across compatible rebuilds.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvitastor.so.0");
}
