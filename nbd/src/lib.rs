//! The pure NBD protocol pieces of `vitastor-nbd`, as a library so the fuzz target
//! (`nbd/fuzz`) can drive them: [`proto`] (wire constants and encoding) and [`session`]
//! (handshake and request framing of untrusted client bytes), with the data buffers they
//! recycle ([`bufpool`]). The daemon is `src/main.rs`.

pub mod bufpool;
pub mod proto;
pub mod session;
