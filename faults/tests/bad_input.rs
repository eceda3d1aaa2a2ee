//! Random bytes sent to every OSD port, to a `vitastor-nbd serve` TCP port and to the
//! monitor's metrics (HTTP) port while fio writes with `-verify=crc32c` through the engine
//! (issue #16, scenarios 6 and 7): no daemon may crash, the monitor must still serve
//! `/metrics` afterwards, and no write may be lost. One `FAULTS` line of figures (faults =
//! bad connections).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore};
use vitastor_protocol::{OSD_PACKET_SIZE, REQUEST_MAGIC};
use vitastor_testkit::{artifacts, process, require_tools, Cluster, ClusterOptions};

use vitastor_faults::scenario::Run;

/// `vitastor-nbd serve` on a TCP port, started and killed by this test only.
struct NbdServe(Child, SocketAddr);

impl NbdServe {
    fn start(etcd: &str, image: &str) -> NbdServe {
        let mut child = Command::new(artifacts::fresh_path("vitastor-nbd"))
            .args(["serve", "--etcd_address", etcd, "--image", image])
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning vitastor-nbd serve");
        let line = process::first_line_within(&mut child, Duration::from_secs(60));
        let addr = match &line {
            Ok(Some(l)) => l.strip_prefix("listening on ").and_then(|a| a.parse().ok()),
            _ => None,
        };
        match addr {
            Some(addr) => NbdServe(child, addr),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vitastor-nbd serve did not start: first line {line:?}");
            }
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for NbdServe {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Random bytes, or a random packet header (and more) behind a valid request magic.
fn garbage(rng: &mut StdRng) -> Vec<u8> {
    let mut b = vec![0u8; rng.gen_range(1..4096)];
    rng.fill_bytes(&mut b);
    if rng.gen_range(0..3) > 0 {
        // A header the OSD starts to decode: the magic, then random opcode, ids and lengths.
        b.resize(b.len().max(OSD_PACKET_SIZE), 0);
        b[..8].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
    }
    b
}

/// Random bytes, or an HTTP request line and headers with random parts and a random body.
fn http_garbage(rng: &mut StdRng) -> Vec<u8> {
    let mut junk = vec![0u8; rng.gen_range(0..2048)];
    rng.fill_bytes(&mut junk);
    match rng.gen_range(0..3) {
        0 => junk,
        1 => {
            let mut b = b"GET /metrics HTTP/1.1\r\nContent-Length: ".to_vec();
            b.extend_from_slice(rng.gen::<u64>().to_string().as_bytes());
            b.extend_from_slice(b"\r\n\r\n");
            b.extend_from_slice(&junk);
            b
        }
        _ => {
            let mut b = b"POST /".to_vec();
            b.extend(junk.iter().map(|c| b'!' + c % 90));
            b.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n");
            b.extend_from_slice(&junk);
            b
        }
    }
}

/// One connection: `bytes`, whatever the daemon answers within a moment, close.
fn send(addr: SocketAddr, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return;
    };
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = s.write_all(bytes);
    let _ = s.read(&mut [0u8; 4096]);
}

/// A loopback port free at the moment (the monitor binds it right after).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

/// The monitor's answer to a well-formed `GET /metrics` (its status line and body).
fn metrics(addr: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn random_bytes_to_osd_nbd_and_monitor_ports() {
    const SCENARIO: &str = "random bytes to OSD+NBD+mon";
    if !require_tools(&["/usr/bin/fio"]) {
        return;
    }
    let port = free_port();
    let mut opts = ClusterOptions::from_workspace();
    opts.osds = 3;
    opts.pg_size = 2;
    opts.monitors = 1;
    opts.osd_size = 512 << 20;
    opts.mon_args = vec![
        "--prometheus_port".into(),
        port.to_string(),
        "--prometheus_address".into(),
        "127.0.0.1".into(),
    ];
    let cluster = Cluster::start(opts).expect("starting the cluster");
    let mon: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        metrics(mon).starts_with("HTTP/1.1 200"),
        "the monitor does not serve /metrics on {mon}"
    );
    cluster
        .create_image("nbdimg", 64 << 20)
        .expect("creating the NBD image");
    let mut nbd = NbdServe::start(&cluster.etcd_address(), "nbdimg");
    let mut run = Run::start(SCENARIO, cluster);
    while Instant::now() < run.deadline {
        let targets: Vec<SocketAddr> = run
            .cluster
            .osds
            .iter()
            .filter_map(|o| o.addr)
            .chain([nbd.1, mon])
            .collect();
        let addr = targets[run.rng.gen_range(0..targets.len())];
        let bytes = if addr == mon {
            http_garbage(&mut run.rng)
        } else {
            garbage(&mut run.rng)
        };
        send(addr, &bytes);
        run.faults += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(run.cluster.osds_running(), 3, "an OSD died of bad input");
    assert!(nbd.running(), "vitastor-nbd serve died of bad input");
    let answer = metrics(mon);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("vitastor"),
        "the monitor no longer serves /metrics after bad input: {answer:.200}"
    );
    run.verdict();
}
