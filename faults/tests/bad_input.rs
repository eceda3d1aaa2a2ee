//! Random bytes sent to every OSD port and to a `vitastor-nbd serve` TCP port while fio
//! writes with `-verify=crc32c` through the engine (issue #16, scenario 7): no daemon may
//! crash and no write may be lost. One `FAULTS` line of figures (faults = bad connections).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore};
use vitastor_faults::duration::fault_time;
use vitastor_faults::fio::{FioJob, FioLoop};
use vitastor_protocol::{OSD_PACKET_SIZE, REQUEST_MAGIC};
use vitastor_testkit::{artifacts, process, require_tools};

use vitastor_faults::scenario::{cluster, rng, verdict};

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

/// One connection: garbage, whatever the daemon answers within a moment, close.
fn send_garbage(addr: SocketAddr, rng: &mut StdRng) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return;
    };
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = s.write_all(&garbage(rng));
    let _ = s.read(&mut [0u8; 4096]);
}

#[test]
fn random_bytes_to_osd_and_nbd_ports() {
    const SCENARIO: &str = "random bytes to OSD+NBD";
    if !require_tools(&["/usr/bin/fio"]) {
        return;
    }
    let mut cluster = cluster(3, 2, 1);
    cluster
        .create_image("nbdimg", 64 << 20)
        .expect("creating the NBD image");
    let mut nbd = NbdServe::start(&cluster.etcd_address(), "nbdimg");
    let mut rng = rng(SCENARIO);
    let fio = FioLoop::start(FioJob::new(cluster.etcd_address()));
    let time = fault_time();
    let deadline = Instant::now() + time;
    let mut faults = 0;
    while Instant::now() < deadline {
        let targets: Vec<SocketAddr> = cluster
            .osds
            .iter()
            .filter_map(|o| o.addr)
            .chain([nbd.1])
            .collect();
        let addr = targets[rng.gen_range(0..targets.len())];
        send_garbage(addr, &mut rng);
        faults += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cluster.osds_running(), 3, "an OSD died of bad input");
    assert!(nbd.running(), "vitastor-nbd serve died of bad input");
    verdict(SCENARIO, time, faults, fio);
}
