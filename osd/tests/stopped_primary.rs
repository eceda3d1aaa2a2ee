//! A primary stopped past its etcd lease must not act as primary when it continues (issue
//! #16, "no two primaries"), with real etcd, a monitor and three `vitastor-osd` processes,
//! rep2 with `pg_minsize` 1.
//!
//! PG X's primary is SIGSTOPped after write A; writes of B then reach its socket while it is
//! stopped (as from a client that has not timed out yet), so they sit there unexecuted. The
//! lease expires, the monitor gives PG X to another OSD, and a client writes B and then C to
//! the same offset through the new primary. Once the old primary continues, the writes of B
//! in its socket must not be executed: each gets `-EPIPE` (before the fix the first one ran,
//! its local write included, and failed only because the secondary already held newer
//! versions), and every replica and the client read C.
//!
//! Only processes this test started are signalled, by PID; the cluster stops on drop.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vitastor_protocol::handshake::{RequestFeatures, ShowConfigRequestJson};
use vitastor_protocol::{decode_reply, OSD_PACKET_SIZE};
use vitastor_protocol::{encode_request, Packet, Request, RequestOp, RwOp, ShowConfigOp};
use vitastor_testkit::{Cluster, ClusterOptions, TestClient};

const INODE: u64 = (1 << 48) | 1;
/// Writes of B left in the stopped primary's socket: more than the new primary makes, so
/// that their versions would end above C's.
const STALE_WRITES: u64 = 8;
/// What a primary answers for a PG it does not serve (the client retries).
const EPIPE: i64 = -32;
/// A liveness bound for the cluster's state changes, not a timing criterion.
const WAIT: Duration = Duration::from_secs(120);

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vitastor-osd"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn pattern(round: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(31) ^ round.wrapping_mul(0x5b))
        .collect()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the PID of an OSD this test's cluster started and still holds.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

/// The primary of PG `pg` of pool 1 while it is active.
fn active_primary(cl: &Cluster, pg: u32) -> Option<u64> {
    let states = cl.pg_states().ok()?;
    let (_, v) = states.into_iter().find(|(n, _)| *n == pg)?;
    let active = v["state"]
        .as_array()?
        .iter()
        .any(|s| s.as_str() == Some("active"));
    let primary = v["primary"]
        .as_u64()
        .or_else(|| v["primary"].as_str()?.parse().ok())?;
    active.then_some(primary)
}

/// A raw client connection to `osd`, past its handshake.
fn raw_connection(c: &TestClient, osd: u64) -> TcpStream {
    let addr = c.osd_addr(osd).expect("the primary's address");
    let mut s = TcpStream::connect(addr).expect("connect to the primary");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let json = ShowConfigRequestJson {
        osd_num: None,
        features: RequestFeatures::default(),
    }
    .to_json();
    let req = Request {
        id: 1,
        op: RequestOp::ShowConfig(ShowConfigOp {
            json_len: json.len() as u64,
        }),
    };
    send(&mut s, &req, &json);
    let mut rp: Packet = [0; OSD_PACKET_SIZE];
    std::io::Read::read_exact(&mut s, &mut rp).expect("handshake reply");
    let reply = decode_reply(&rp).expect("handshake reply decodes");
    assert!(reply.retval > 0, "handshake refused: {}", reply.retval);
    let mut config = vec![0; reply.retval as usize];
    std::io::Read::read_exact(&mut s, &mut config).expect("handshake payload");
    s
}

fn send(s: &mut TcpStream, req: &Request, payload: &[u8]) {
    let mut packet: Packet = [0; OSD_PACKET_SIZE];
    encode_request(req, &mut packet);
    let mut buf = packet.to_vec();
    buf.extend_from_slice(payload);
    s.write_all(&buf).expect("request reaches the socket");
}

#[test]
fn a_primary_continued_after_its_lease_expired_executes_nothing_it_received() {
    let mut o = ClusterOptions::new(bin_dir());
    o.osds = 3;
    o.pg_size = 2;
    o.pg_minsize = Some(1);
    o.pg_count = 4;
    o.osd_size = 256 << 20;
    o.monitors = 1;
    o.write_pg_config = false;
    // testkit's OSDs report every second: the shortest lease the OSD allows (10 s).
    if let Ok(dir) = std::env::var("VITASTOR_TEST_DIR") {
        let dir = PathBuf::from(dir).join(format!("stopped-primary-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        o.dir = Some(dir);
    }
    let cl = Cluster::start(o).expect("cluster starts");
    cl.wait_active(WAIT).expect("PGs active");

    let offset = 0;
    let mut c = TestClient::new(&cl);
    c.retry_for = WAIT;
    let pg = c.pg_of(offset);
    c.write(INODE, offset, &pattern(b'A')).expect("write A");
    let old = active_primary(&cl, pg).expect("PG X has an active primary");
    let pid = cl
        .osd_pids()
        .into_iter()
        .find_map(|(osd, pid)| (osd == old).then_some(pid))
        .expect("the primary's PID");

    let mut stale = raw_connection(&c, old);
    signal(pid, libc::SIGSTOP);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for i in 0..STALE_WRITES {
            let write = Request {
                id: 2 + i,
                op: RequestOp::Write(RwOp {
                    inode: INODE,
                    offset,
                    len: 4096,
                    ..Default::default()
                }),
            };
            send(&mut stale, &write, &pattern(b'B'));
        }
        let deadline = Instant::now() + WAIT;
        let new = loop {
            match active_primary(&cl, pg) {
                Some(p) if p != old => break p,
                _ => assert!(
                    Instant::now() < deadline,
                    "PG {pg} never moved off osd.{old}"
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        // A fresh client: the first one would still wait for the stopped primary.
        let mut c = TestClient::new(&cl);
        c.retry_for = WAIT;
        c.write(INODE, offset, &pattern(b'B'))
            .expect("B through the new primary");
        c.write(INODE, offset, &pattern(b'C'))
            .expect("C through the new primary");
        new
    }));
    // Continued even when the steps above failed, so the cluster can stop.
    signal(pid, libc::SIGCONT);
    let new = match outcome {
        Ok(new) => new,
        Err(e) => std::panic::resume_unwind(e),
    };

    // The old primary's loop runs again at once, its etcd thread learns of the lost lease a
    // round trip later: every write it finds in its socket must be refused as by a primary
    // that is not active (the client retries), none executed.
    let mut answers = Vec::new();
    for _ in 0..STALE_WRITES {
        let mut rp: Packet = [0; OSD_PACKET_SIZE];
        match std::io::Read::read_exact(&mut stale, &mut rp) {
            Ok(()) => answers.push(decode_reply(&rp).expect("reply decodes").retval),
            Err(e) => panic!("no reply to a stale write after {answers:?}: {e}"),
        }
    }
    assert!(
        answers.iter().all(|&r| r == EPIPE),
        "the old primary osd.{old} executed writes after its lease expired: {answers:?}"
    );
    // It rejoins, and the PG gets clean with the old primary in its set again.
    cl.wait_clean(WAIT)
        .expect("PGs clean once the old primary is back");
    let mut c = TestClient::new(&cl);
    c.retry_for = WAIT;
    let mut holders = Vec::new();
    for osd in 1..=3 {
        let (version, data) = c
            .read_replica(osd, INODE, offset)
            .unwrap_or_else(|e| panic!("SEC_READ from osd.{osd}: {e}"));
        if version == 0 {
            continue;
        }
        holders.push(osd);
        let got = match &data[..4096] {
            d if d == pattern(b'A') => "A",
            d if d == pattern(b'B') => "B",
            d if d == pattern(b'C') => "C",
            _ => "something else",
        };
        assert_eq!(
            got, "C",
            "osd.{osd} holds {got} at version {version} (old primary osd.{old}, new osd.{new})"
        );
    }
    assert!(holders.len() >= 2, "only {holders:?} hold the object");
    assert!(
        c.read(INODE, offset, 4096)
            .expect("read through the client")
            == pattern(b'C'),
        "the client does not read C"
    );
}
