//! `vitastor-osd` end to end: the built binary on a prepared sparse file, driven over plain
//! TCP with the protocol crate. Covers the handshake, every secondary op, pipelining, bad
//! input on one connection not hurting another, and data surviving a restart.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vitastor_blockstore::BlockstoreConfig;
use vitastor_protocol::handshake::{ShowConfigReplyJson, ShowConfigRequestJson};
use vitastor_protocol::*;

const INODE: u64 = 0x1000000000001;
/// Object bitmap size at the default 128 KiB / 4 KiB geometry.
const BMP: usize = 4;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The OSD child process; killed by PID whatever way the test ends.
struct Osd {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Osd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Osd {
    fn start(img: &Path) -> Osd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vitastor-osd"))
            .args(["--osd_num", "7", "--bind_port", "0"])
            .arg("--data_device")
            .arg(img)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start vitastor-osd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut osd = Osd {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("bad first line {line:?}"));
        osd.addr = addr.parse().unwrap();
        osd
    }

    /// SIGTERM, then require a clean exit.
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's PID.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "vitastor-osd exited with {status}");
                return;
            }
            assert!(
                start.elapsed() < IO_TIMEOUT,
                "vitastor-osd did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn prepared(dir: &Path) -> PathBuf {
    let img = dir.join("osd.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    vitastor_blockstore::prepare::prepare(&BlockstoreConfig::new(&img), false).unwrap();
    img
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

struct Client {
    s: TcpStream,
    next_id: u64,
    dec: FrameDecoder,
    outstanding: HashMap<u64, Request>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            s,
            next_id: 1,
            dec: FrameDecoder::new(),
            outstanding: HashMap::new(),
        }
    }

    /// Connects and handshakes; returns the OSD's JSON.
    fn handshake(addr: SocketAddr, check_sequencing: bool) -> (Client, ShowConfigReplyJson) {
        let mut c = Client::connect(addr);
        let mut json = ShowConfigRequestJson::default();
        json.features.check_sequencing = check_sequencing;
        let json = json.to_json();
        let (reply, payload) = c.call(
            RequestOp::ShowConfig(ShowConfigOp {
                json_len: json.len() as u64,
            }),
            &json,
        );
        assert_eq!(reply.retval, payload.len() as i64);
        (c, ShowConfigReplyJson::parse(&payload).unwrap())
    }

    fn send(&mut self, op: RequestOp, payload: &[u8]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request { id, op };
        assert_eq!(req.payload_len(), payload.len());
        let mut p = [0u8; OSD_PACKET_SIZE];
        encode_request(&req, &mut p);
        self.s.write_all(&p).unwrap();
        self.s.write_all(payload).unwrap();
        self.outstanding.insert(id, req);
        id
    }

    fn recv(&mut self) -> (Reply, Vec<u8>) {
        loop {
            let buf = self.dec.read_buf().unwrap();
            let n = self.s.read(buf).unwrap();
            assert!(n > 0, "OSD closed the connection");
            let outstanding = &mut self.outstanding;
            if let Some(frame) = self
                .dec
                .advance(n, &mut |id| outstanding.remove(&id))
                .unwrap()
            {
                let Frame::Reply { reply, .. } = frame else {
                    panic!("not a reply: {frame:?}")
                };
                return (reply, self.dec.take_payload());
            }
        }
    }

    fn call(&mut self, op: RequestOp, payload: &[u8]) -> (Reply, Vec<u8>) {
        let id = self.send(op, payload);
        let (reply, payload) = self.recv();
        assert_eq!(reply.id, id);
        (reply, payload)
    }

    fn write(
        &mut self,
        stripe: u64,
        version: u64,
        offset: u32,
        data: &[u8],
        bitmap: &[u8],
        stable: bool,
    ) -> Reply {
        let rw = SecRwOp {
            oid: ObjectId {
                inode: INODE,
                stripe,
            },
            version,
            offset,
            len: data.len() as u32,
            attr_len: bitmap.len() as u32,
            flags: 0,
        };
        let op = if stable {
            RequestOp::SecWriteStable(rw)
        } else {
            RequestOp::SecWrite(rw)
        };
        let (reply, _) = self.call(op, &[bitmap, data].concat());
        reply
    }

    /// Reads `len` bytes at offset 0 of the newest version: (version, bitmap, data).
    fn read(&mut self, stripe: u64, len: u32) -> (u64, Vec<u8>, Vec<u8>) {
        let rw = SecRwOp {
            oid: ObjectId {
                inode: INODE,
                stripe,
            },
            version: 0,
            offset: 0,
            len,
            attr_len: BMP as u32,
            flags: 0,
        };
        let (reply, payload) = self.call(RequestOp::SecRead(rw), &[]);
        assert_eq!(reply.retval, i64::from(len));
        let ReplyOp::SecRead(body) = reply.op else {
            panic!("{reply:?}")
        };
        assert_eq!(body.attr_len as usize, BMP);
        (
            body.version,
            payload[..BMP].to_vec(),
            payload[BMP..].to_vec(),
        )
    }

    fn list_op(&mut self, op: fn(SecStabOp) -> RequestOp, list: &[(u64, u64)]) -> i64 {
        let entries: Vec<ObjVerId> = list
            .iter()
            .map(|&(stripe, version)| ObjVerId {
                oid: ObjectId {
                    inode: INODE,
                    stripe,
                },
                version,
            })
            .collect();
        let mut payload = Vec::new();
        encode_obj_ver_ids(&entries, &mut payload);
        self.call(
            op(SecStabOp {
                len: payload.len() as u64,
                flags: 0,
            }),
            &payload,
        )
        .0
        .retval
    }

    fn sync(&mut self) {
        assert_eq!(
            self.call(RequestOp::SecSync(SecSyncOp::default()), &[])
                .0
                .retval,
            0
        );
    }

    /// (stable_count, every listed (stripe, version)).
    fn list(&mut self) -> (u64, Vec<(u64, u64)>) {
        let (reply, payload) = self.call(RequestOp::SecList(SecListOp::default()), &[]);
        let ReplyOp::SecList(body) = reply.op else {
            panic!("{reply:?}")
        };
        let all: Vec<(u64, u64)> = obj_ver_ids(&payload)
            .unwrap()
            .map(|e| (e.oid.stripe, e.version))
            .collect();
        assert_eq!(all.len() as i64, reply.retval);
        (body.stable_count, all)
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Reads until the OSD closes the connection; panics if it stays open.
fn assert_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("connection was not closed: {e}"),
        }
    }
}

#[test]
fn secondary_ops() {
    let dir = tmpdir();
    let osd = Osd::start(&prepared(dir.path()));
    let (mut c, cfg) = Client::handshake(osd.addr, false);
    assert_eq!(cfg.osd_num, Some(7));
    assert_eq!(cfg.protocol_version, 1);
    assert_eq!((cfg.block_size, cfg.bitmap_granularity), (131072, 4096));
    assert_eq!(
        (cfg.primary_enabled, cfg.blockstore_enabled, cfg.readonly),
        (Some(false), Some(true), Some(false))
    );
    assert_eq!(cfg.immediate_commit, handshake::ImmediateCommit::None);
    assert_eq!(c.call(RequestOp::Ping, &[]).0.retval, 0);

    // Stable write, then read back data, version and bitmap.
    let a = pattern(1, 8192);
    let r = c.write(0, 1, 0, &a, &[0x03, 0, 0, 0], true);
    assert_eq!(
        (r.retval, r.op),
        (
            8192,
            ReplyOp::SecWriteStable(SecRwReply {
                version: 1,
                attr_len: 0
            })
        )
    );
    assert_eq!(c.read(0, 8192), (1, vec![0x03, 0, 0, 0], a.clone()));

    // Unstable write: listed as unstable until synced and stabilized.
    let b = pattern(2, 4096);
    assert_eq!(c.write(131072, 1, 4096, &b, &[], false).retval, 4096);
    assert_eq!(c.list(), (1, vec![(0, 1), (131072, 1)]));
    c.sync();
    assert_eq!(c.list_op(RequestOp::SecStabilize, &[(131072, 1)]), 0);
    assert_eq!(c.list(), (2, vec![(0, 1), (131072, 1)]));
    let (v, bmp, data) = c.read(131072, 8192);
    assert_eq!((v, bmp), (1, vec![0x02, 0, 0, 0]));
    assert_eq!(&data[4096..], &b[..]);

    // Rollback of an unstable version restores the stable one.
    c.write(0, 2, 0, &pattern(3, 4096), &[], false);
    assert_eq!(c.read(0, 8192).0, 2);
    assert_eq!(c.list_op(RequestOp::SecRollback, &[(0, 1)]), 0);
    assert_eq!(c.read(0, 8192), (1, vec![0x03, 0, 0, 0], a.clone()));

    // Delete (two-phase like a write), then it is gone from the listing.
    let del = SecDeleteOp {
        oid: ObjectId {
            inode: INODE,
            stripe: 131072,
        },
        version: 2,
        flags: 0,
    };
    let (r, _) = c.call(RequestOp::SecDelete(del), &[]);
    assert_eq!(
        (r.retval, r.op),
        (0, ReplyOp::SecDelete(SecDeleteReply { version: 2 }))
    );
    c.sync();
    assert_eq!(c.list_op(RequestOp::SecStabilize, &[(131072, 2)]), 0);
    assert_eq!(c.list(), (1, vec![(0, 1)]));

    // Bitmaps of several objects at once.
    let entries = [(0u64, u64::MAX), (131072, u64::MAX), (262144, u64::MAX)];
    let ids: Vec<ObjVerId> = entries
        .iter()
        .map(|&(stripe, version)| ObjVerId {
            oid: ObjectId {
                inode: INODE,
                stripe,
            },
            version,
        })
        .collect();
    let mut list = Vec::new();
    encode_obj_ver_ids(&ids, &mut list);
    let (r, payload) = c.call(
        RequestOp::SecReadBmp(SecReadBmpOp {
            len: list.len() as u64,
            flags: 0,
        }),
        &list,
    );
    assert_eq!(r.retval, 3 * (8 + BMP as i64));
    assert_eq!(&payload[..12], &[1, 0, 0, 0, 0, 0, 0, 0, 0x03, 0, 0, 0]);
    assert_eq!(
        &payload[20..24],
        &[0; 4],
        "deleted object has an empty bitmap"
    );
    assert_eq!(
        &payload[24..],
        &[0; 12],
        "missing object: version 0, empty bitmap"
    );

    // TEST_SYNC_STAB_ALL stabilizes what is unstable.
    c.write(393216, 1, 0, &pattern(4, 4096), &[], false);
    assert_eq!(c.list().0, 1);
    assert_eq!(c.call(RequestOp::TestSyncStabAll, &[]).0.retval, 0);
    assert_eq!(c.list(), (2, vec![(0, 1), (393216, 1)]));

    // Blockstore errors reach the wire through BsError::errno: a misaligned write.
    assert_eq!(c.write(0, 3, 100, &[0; 4096], &[], true).retval, -22);
    // No PG is active here: client ops and SEC_LOCK get -EPIPE.
    let read = RwOp {
        inode: INODE,
        offset: 0,
        len: 4096,
        ..RwOp::default()
    };
    assert_eq!(c.call(RequestOp::Read(read), &[]).0.retval, -32);
    let lock = SecLockOp {
        flags: OSD_SEC_LOCK_PG,
        pool_id: 1,
        pg_num: 1,
        pg_state: 0,
    };
    assert_eq!(c.call(RequestOp::SecLock(lock), &[]).0.retval, -32);
    osd.stop();
}

#[test]
fn pipelined_writes_match_by_id() {
    let dir = tmpdir();
    let osd = Osd::start(&prepared(dir.path()));
    let (mut c, _) = Client::handshake(osd.addr, true);
    let mut sent = HashMap::new();
    for i in 0..32u64 {
        let rw = SecRwOp {
            oid: ObjectId {
                inode: INODE,
                stripe: i * 131072,
            },
            version: 1,
            offset: 0,
            len: 4096,
            attr_len: 0,
            flags: 0,
        };
        let id = c.send(RequestOp::SecWriteStable(rw), &pattern(i as u8, 4096));
        sent.insert(id, i);
    }
    for _ in 0..32 {
        let (reply, _) = c.recv();
        assert!(
            sent.remove(&reply.id).is_some(),
            "unexpected reply id {}",
            reply.id
        );
        assert_eq!(reply.retval, 4096);
    }
    assert!(sent.is_empty());
    for i in [0u64, 17, 31] {
        assert_eq!(c.read(i * 131072, 4096).2, pattern(i as u8, 4096));
    }
}

#[test]
fn bad_input_closes_only_that_connection() {
    let dir = tmpdir();
    let osd = Osd::start(&prepared(dir.path()));
    let (mut good, _) = Client::handshake(osd.addr, false);

    // Garbage: bad magic, the stream cannot be followed.
    let (mut bad, _) = Client::handshake(osd.addr, false);
    bad.s.write_all(&[0xaa; OSD_PACKET_SIZE]).unwrap();
    assert_closed(&mut bad.s);
    assert_eq!(good.call(RequestOp::Ping, &[]).0.retval, 0);

    // A write announcing more than OSD_RW_MAX bytes.
    let (mut big, _) = Client::handshake(osd.addr, false);
    let rw = SecRwOp {
        oid: ObjectId {
            inode: INODE,
            stripe: 0,
        },
        len: OSD_RW_MAX as u32 + 4096,
        ..SecRwOp::default()
    };
    let mut p = [0u8; OSD_PACKET_SIZE];
    encode_request(
        &Request {
            id: 100,
            op: RequestOp::SecWrite(rw),
        },
        &mut p,
    );
    big.s.write_all(&p).unwrap();
    assert_closed(&mut big.s);

    // An unknown opcode is not fatal: -EINVAL, and the connection goes on.
    let (mut odd, _) = Client::handshake(osd.addr, false);
    let mut p = [0u8; OSD_PACKET_SIZE];
    encode_request(
        &Request {
            id: 50,
            op: RequestOp::Ping,
        },
        &mut p,
    );
    p[16..24].copy_from_slice(&77u64.to_le_bytes());
    odd.s.write_all(&p).unwrap();
    let mut r = [0u8; OSD_PACKET_SIZE];
    odd.s.read_exact(&mut r).unwrap();
    assert!(matches!(
        Header::parse(&r),
        Ok(Header::Reply {
            id: 50,
            opcode: 77,
            retval: -22
        })
    ));
    assert_eq!(odd.call(RequestOp::Ping, &[]).0.retval, 0);

    // check_sequencing: an id gap drops the connection.
    let (mut seq, _) = Client::handshake(osd.addr, true);
    assert_eq!(seq.call(RequestOp::Ping, &[]).0.retval, 0);
    seq.next_id += 5;
    seq.send(RequestOp::Ping, &[]);
    assert_closed(&mut seq.s);

    assert_eq!(good.call(RequestOp::Ping, &[]).0.retval, 0);
    assert_eq!(
        good.write(0, 1, 0, &pattern(9, 4096), &[], true).retval,
        4096
    );
    osd.stop();
}

#[test]
fn data_survives_restart() {
    let dir = tmpdir();
    let img = prepared(dir.path());
    let a = pattern(5, 131072);
    {
        let osd = Osd::start(&img);
        let (mut c, _) = Client::handshake(osd.addr, false);
        assert_eq!(
            c.write(131072 * 3, 4, 0, &a, &[0xff; BMP], true).retval,
            131072
        );
        c.sync();
        osd.stop();
    }
    let osd = Osd::start(&img);
    let (mut c, _) = Client::handshake(osd.addr, false);
    assert_eq!(c.read(131072 * 3, 131072), (4, vec![0xff; BMP], a));
    assert_eq!(c.list(), (1, vec![(131072 * 3, 4)]));
    osd.stop();
}

/// What an erasure-coded write needs from a secondary: SEC_WRITE's attr is kept as the
/// version's external bitmap (returned by SEC_READ) while every written byte stays readable,
/// and a zero-length SEC_WRITE creates a version carrying only its attr; both survive a
/// restart.
#[test]
fn attr_is_the_external_bitmap_and_versions_need_no_data() {
    let dir = tmpdir();
    let img = prepared(dir.path());
    let a = pattern(6, 131072);
    let stripe = 131072 * 5;
    {
        let osd = Osd::start(&img);
        let (mut c, _) = Client::handshake(osd.addr, false);
        // A parity-like part: all bytes written, the attr names granules 0 and 2 only.
        let attr = [0b0101, 0, 0, 0];
        assert_eq!(c.write(stripe, 1, 0, &a, &attr, true).retval, 131072);
        assert_eq!(c.read(stripe, 131072), (1, attr.to_vec(), a.clone()));
        // A version without data, unstable, then synced and stabilized.
        let r = c.write(stripe, 2, 0, &[], &[0b0111, 0, 0, 0x80], false);
        assert_eq!(
            (r.retval, r.op),
            (
                0,
                ReplyOp::SecWrite(SecRwReply {
                    version: 2,
                    attr_len: 0
                })
            )
        );
        assert_eq!(
            c.read(stripe, 131072),
            (2, vec![0b0111, 0, 0, 0x80], a.clone())
        );
        c.sync();
        assert_eq!(c.list_op(RequestOp::SecStabilize, &[(stripe, 2)]), 0);
        osd.stop();
    }
    let osd = Osd::start(&img);
    let (mut c, _) = Client::handshake(osd.addr, false);
    assert_eq!(c.read(stripe, 131072), (2, vec![0b0111, 0, 0, 0x80], a));
    assert_eq!(c.list(), (1, vec![(stripe, 2)]));
    osd.stop();
}
