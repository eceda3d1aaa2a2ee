//! The SHOW_CONFIG reply on the wire, as the original Vitastor's clients read it: the JSON
//! followed by one NUL byte, `retval` counting both (they parse the payload as a C string).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vitastor_blockstore::BlockstoreConfig;
use vitastor_protocol::handshake::{ShowConfigReplyJson, ShowConfigRequestJson};
use vitastor_protocol::{
    decode_reply, encode_request, ReplyOp, Request, RequestOp, ShowConfigOp, OSD_PACKET_SIZE,
};

/// The OSD child process; killed by PID whatever way the test ends.
struct Osd(Child);

impl Drop for Osd {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn show_config_reply_is_nul_terminated_json() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = dir.path().join("osd.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    vitastor_blockstore::prepare::prepare(&BlockstoreConfig::new(&img), false).unwrap();
    let mut osd = Osd(Command::new(env!("CARGO_BIN_EXE_vitastor-osd"))
        .args(["--osd_num", "3", "--bind_port", "0", "--data_device"])
        .arg(&img)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start vitastor-osd"));
    let mut line = String::new();
    BufReader::new(osd.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("bad first line {line:?}"));

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let json = ShowConfigRequestJson::default().to_json();
    let request = Request {
        id: 1,
        op: RequestOp::ShowConfig(ShowConfigOp {
            json_len: json.len() as u64,
        }),
    };
    let mut packet = [0u8; OSD_PACKET_SIZE];
    encode_request(&request, &mut packet);
    s.write_all(&packet).unwrap();
    s.write_all(&json).unwrap();
    s.read_exact(&mut packet).unwrap();
    let reply = decode_reply(&packet).unwrap();
    assert_eq!((reply.id, reply.op), (1, ReplyOp::ShowConfig));
    assert!(reply.retval > 1, "retval {}", reply.retval);
    let mut payload = vec![0u8; reply.retval as usize];
    s.read_exact(&mut payload).unwrap();

    let (last, json) = payload.split_last().unwrap();
    assert_eq!(*last, 0, "the reply must end in NUL: {payload:?}");
    assert!(!json.contains(&0), "one NUL, at the end");
    // What a C-string reader sees is the whole JSON, with nothing trailing.
    let strict: serde_json::Value = serde_json::from_slice(json).unwrap();
    assert_eq!(strict["osd_num"], 3);
    assert_eq!(strict["protocol_version"], 1);
    let parsed = ShowConfigReplyJson::parse(&payload).unwrap();
    assert_eq!(parsed.osd_num, Some(3));
}
