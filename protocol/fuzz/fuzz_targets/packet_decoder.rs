//! Feeds arbitrary bytes to the streaming frame decoder, split at arbitrary
//! points, and checks that it never panics, never announces a payload above
//! the protocol limits, and stays poisoned after a fatal error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitastor_protocol::*;

/// The request a reply with this id answers. The id's low bits pick the
/// opcode and the next bits the length, so the fuzzer can reach every reply
/// path, including READ replies that must echo the requested length.
fn outstanding(id: u64) -> Option<Request> {
    let opcode = Opcode::ALL[(id % Opcode::ALL.len() as u64) as usize];
    let len = ((id >> 5) & 0x1_ffff) as u32;
    let op = match opcode {
        Opcode::SecRead => RequestOp::SecRead(SecRwOp {
            len,
            attr_len: 8,
            ..Default::default()
        }),
        Opcode::SecWrite => RequestOp::SecWrite(SecRwOp::default()),
        Opcode::SecWriteStable => RequestOp::SecWriteStable(SecRwOp::default()),
        Opcode::SecSync => RequestOp::SecSync(SecSyncOp::default()),
        Opcode::SecStabilize => RequestOp::SecStabilize(SecStabOp::default()),
        Opcode::SecRollback => RequestOp::SecRollback(SecStabOp::default()),
        Opcode::SecDelete => RequestOp::SecDelete(SecDeleteOp::default()),
        Opcode::TestSyncStabAll => RequestOp::TestSyncStabAll,
        Opcode::SecList => RequestOp::SecList(SecListOp::default()),
        Opcode::ShowConfig => RequestOp::ShowConfig(ShowConfigOp::default()),
        Opcode::Read => RequestOp::Read(RwOp {
            len,
            ..Default::default()
        }),
        Opcode::Write => RequestOp::Write(RwOp::default()),
        Opcode::Sync => RequestOp::Sync,
        Opcode::Delete => RequestOp::Delete(RwOp::default()),
        Opcode::Ping => RequestOp::Ping,
        Opcode::SecReadBmp => RequestOp::SecReadBmp(SecReadBmpOp::default()),
        Opcode::Scrub => RequestOp::Scrub(OpaqueRequestBody::default()),
        Opcode::Describe => RequestOp::Describe(OpaqueRequestBody::default()),
        Opcode::SecLock => RequestOp::SecLock(SecLockOp::default()),
    };
    Some(Request { id, op })
}

fn max_payload() -> usize {
    (MAX_SEC_LIST_ENTRIES * OBJ_VER_ID_SIZE as u64) as usize
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    let mut decoder = FrameDecoder::new();
    let mut lookup = outstanding;
    let mut rest = stream;
    while !rest.is_empty() {
        let step = &rest[..rest.len().min(chunk)];
        match decoder.feed(step, &mut lookup) {
            Ok((used, frame)) => {
                assert!(used > 0);
                rest = &rest[used..];
                assert!(decoder.wanted() <= max_payload().max(OSD_PACKET_SIZE));
                let Some(frame) = frame else { continue };
                let len = decoder.payload().len();
                assert!(len <= max_payload());
                match frame {
                    Frame::Request(request) => {
                        assert_eq!(len, request.payload_len());
                        assert_eq!(request.validate(), Ok(()));
                        let mut packet = [0u8; OSD_PACKET_SIZE];
                        encode_request(&request, &mut packet);
                        assert_eq!(decode_request(&packet), Ok(request));
                    }
                    Frame::Rejected { error, .. } => assert!(!error.is_fatal()),
                    Frame::Reply { reply, request } => {
                        assert_eq!(reply.payload_len(&request), Ok(len));
                        let mut packet = [0u8; OSD_PACKET_SIZE];
                        encode_reply(&reply, &mut packet);
                        assert_eq!(decode_reply(&packet), Ok(reply));
                    }
                }
            }
            Err(error) => {
                assert!(error.is_fatal());
                assert!(decoder.is_failed());
                assert_eq!(
                    decoder.feed(rest, &mut lookup),
                    Err(ProtocolError::Poisoned)
                );
                return;
            }
        }
    }
});
