//! The pure NBD protocol pieces of `vitastor-nbd`, as a library so the fuzz target
//! (`nbd/fuzz`) can drive them: [`proto`] (wire constants and encoding) and [`session`]
//! (handshake and request framing of untrusted client bytes). The daemon is `src/main.rs`.

pub mod proto;
pub mod session;
