//! Untrusted NBD client bytes through the session parser, in both starting states (the
//! handshake of `serve`, and transmission as after `map`'s kernel hand-off), the way the
//! server feeds them: `step` for headers and options, `payload_space`/`payload_filled` for
//! write payloads. Any panic, or a buffer sized from an unchecked length (the allocation
//! limit of libFuzzer), is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitastor_nbd::proto::ExportDesc;
use vitastor_nbd::session::{Event, Session};

fuzz_target!(|data: &[u8]| {
    let desc = ExportDesc {
        name: "testimg".into(),
        size: 1 << 30,
        flags: 0,
        min_block: 4096,
        preferred_block: 128 << 10,
    };
    for mut session in [
        Session::handshake(desc.clone()).0,
        Session::transmission(desc.clone()),
    ] {
        let mut input = data;
        loop {
            if let Some(space) = session.payload_space() {
                let n = space.len().min(input.len());
                if n == 0 {
                    break;
                }
                space[..n].copy_from_slice(&input[..n]);
                input = &input[n..];
                let _ = session.payload_filled(n);
                continue;
            }
            let (used, event) = session.step(input);
            input = &input[used..];
            match event {
                Some(Event::Close(_)) | Some(Event::SendAndClose(_)) => break,
                None if used == 0 => break,
                _ => {}
            }
        }
    }
});
