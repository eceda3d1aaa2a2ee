//! A small blocking client for tests: finds the primary of a PG in etcd, speaks the OSD
//! protocol over plain TCP and retries while PGs move or peer. Tests use it to drive real
//! OSDs; it is not the product's client library and is not tuned for anything.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use vitastor_protocol::handshake::{RequestFeatures, ShowConfigRequestJson};
use vitastor_protocol::{
    decode_reply, encode_request, ObjectId, Packet, Reply, ReplyOp, Request, RequestOp, RwOp,
    SecRwOp, ShowConfigOp, OSD_PACKET_SIZE,
};

use serde_json::Value;
use vitastor_layout::{OsdState, PgState, PgStateName};

use crate::cluster::Cluster;

/// `-EPIPE`: the PG is not active on that OSD.
pub const EPIPE: i64 = -32;

/// A test client for pool 1 of a [`Cluster`].
pub struct TestClient {
    etcd_url: String,
    pg_count: u32,
    /// Image bytes of one object (more than one part's 128 KiB in an EC/XOR pool).
    object_size: u64,
    /// Last primary seen per PG, used while etcd cannot be read.
    primaries: HashMap<u32, u64>,
    conns: HashMap<u64, (TcpStream, u64)>,
    /// How long an op may keep retrying.
    pub retry_for: Duration,
}

/// The primary of an active PG from its `pg/state` value, read as the OSDs and the client
/// library read it (numbers may be strings, as the original writes them).
fn active_primary(key: &str, v: &Value) -> Option<u64> {
    let state = PgState::from_json(key, v).ok()?;
    state.has(PgStateName::Active).then_some(state.primary)
}

/// The first address of an `osd/state` value.
fn listen_addr(key: &str, v: &Value) -> Option<SocketAddr> {
    let state = OsdState::from_json(key, v).ok()?;
    format!("{}:{}", state.addresses.first()?, state.port)
        .parse()
        .ok()
}

fn io_err(e: std::io::Error) -> i64 {
    -(e.raw_os_error().unwrap_or(5) as i64)
}

impl TestClient {
    /// A client with no connections yet.
    pub fn new(cluster: &Cluster) -> TestClient {
        TestClient {
            etcd_url: cluster.etcd.client_url(),
            pg_count: cluster.opts.pg_count,
            object_size: cluster.object_size(),
            primaries: HashMap::new(),
            conns: HashMap::new(),
            retry_for: Duration::from_secs(60),
        }
    }

    /// One key under `/vitastor/` read with etcdctl (bounded by its command timeout).
    fn get(&self, key: &str) -> Option<(String, Value)> {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.etcd_url))
            .arg("--command-timeout=5s")
            .args(["get", &format!("/vitastor/{key}")])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let k = lines.next()?.strip_prefix("/vitastor/")?.to_string();
        Some((k, serde_json::from_str(lines.next()?).ok()?))
    }

    fn primary(&self, pg: u32) -> Option<u64> {
        let key = format!("pg/state/1/{pg}");
        let (k, v) = self.get(&key)?;
        (k == key).then(|| active_primary(&k, &v)).flatten()
    }

    /// The listening address of OSD `osd` from `osd/state`.
    pub fn osd_addr(&self, osd: u64) -> Option<SocketAddr> {
        let key = format!("osd/state/{osd}");
        let (k, v) = self.get(&key)?;
        (k == key).then(|| listen_addr(&k, &v)).flatten()
    }

    fn conn(&mut self, osd: u64) -> Result<&mut (TcpStream, u64), i64> {
        if !self.conns.contains_key(&osd) {
            let addr = self.osd_addr(osd).ok_or(EPIPE)?;
            let mut s =
                TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io_err)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(io_err)?;
            s.set_nodelay(true).map_err(io_err)?;
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
            let (reply, _) = exchange(&mut s, &req, &json, &[])?;
            if reply.retval < 0 {
                return Err(reply.retval);
            }
            self.conns.insert(osd, (s, 2));
        }
        Ok(self.conns.get_mut(&osd).expect("inserted above"))
    }

    /// Sends one request to OSD `osd` and returns the reply and its payload.
    pub fn call(
        &mut self,
        osd: u64,
        op: RequestOp,
        payload: &[u8],
        data: &[u8],
    ) -> Result<(Reply, Vec<u8>), i64> {
        let (s, next) = self.conn(osd)?;
        let req = Request { id: *next, op };
        *next += 1;
        let r = exchange(s, &req, payload, data);
        if r.is_err() {
            self.conns.remove(&osd);
        }
        r
    }

    /// Runs a client op on the object's primary, retrying `-EPIPE` and lost connections.
    fn client_op(
        &mut self,
        offset: u64,
        op: RequestOp,
        data: &[u8],
    ) -> Result<(Reply, Vec<u8>), i64> {
        let pg = self.pg_of(offset);
        let deadline = Instant::now() + self.retry_for;
        loop {
            let primary = match self.primaries.get(&pg) {
                Some(&osd) => Some(osd),
                None => self.primary(pg),
            };
            let res = match primary {
                Some(osd) => {
                    self.primaries.insert(pg, osd);
                    self.call(osd, op, &[], data)
                }
                None => Err(EPIPE),
            };
            match res {
                Ok((reply, payload)) if reply.retval != EPIPE => return Ok((reply, payload)),
                Ok(_) => {}
                Err(e) if e != EPIPE && e > -1000 && !is_conn_error(e) => return Err(e),
                Err(_) => {}
            }
            if Instant::now() > deadline {
                return Err(EPIPE);
            }
            // Ask etcd again; keep the old answer if etcd cannot be read.
            if let Some(osd) = self.primary(pg) {
                self.primaries.insert(pg, osd);
            }
            self.conns.clear();
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// PG of the object holding `offset` (pool 1, its smallest `pg_stripe_size`).
    pub fn pg_of(&self, offset: u64) -> u32 {
        ((offset / self.object_size) % self.pg_count as u64) as u32 + 1
    }

    /// WRITE; returns the version written.
    pub fn write(&mut self, inode: u64, offset: u64, data: &[u8]) -> Result<u64, i64> {
        let op = RequestOp::Write(RwOp {
            inode,
            offset,
            len: data.len() as u32,
            ..Default::default()
        });
        let (reply, _) = self.client_op(offset, op, data)?;
        match reply.op {
            ReplyOp::Write(r) if reply.retval == data.len() as i64 => Ok(r.version),
            _ => Err(reply.retval.min(-5)),
        }
    }

    /// READ; returns the data.
    pub fn read(&mut self, inode: u64, offset: u64, len: u32) -> Result<Vec<u8>, i64> {
        let op = RequestOp::Read(RwOp {
            inode,
            offset,
            len,
            ..Default::default()
        });
        let (reply, payload) = self.client_op(offset, op, &[])?;
        match reply.op {
            ReplyOp::Read(r) if reply.retval == len as i64 => {
                Ok(payload[r.bitmap_len as usize..].to_vec())
            }
            _ => Err(reply.retval.min(-5)),
        }
    }

    /// DELETE of the object holding `offset`.
    pub fn delete(&mut self, inode: u64, offset: u64) -> Result<(), i64> {
        let op = RequestOp::Delete(RwOp {
            inode,
            offset,
            ..Default::default()
        });
        let (reply, _) = self.client_op(offset, op, &[])?;
        if reply.retval < 0 {
            Err(reply.retval)
        } else {
            Ok(())
        }
    }

    /// SYNC on every OSD that is primary of some PG.
    pub fn sync_all(&mut self) -> Result<(), i64> {
        let mut primaries: Vec<u64> = (1..=self.pg_count)
            .filter_map(|pg| self.primary(pg))
            .collect();
        primaries.sort_unstable();
        primaries.dedup();
        for osd in primaries {
            let (reply, _) = self.call(osd, RequestOp::Sync, &[], &[])?;
            if reply.retval < 0 {
                return Err(reply.retval);
            }
        }
        Ok(())
    }

    /// SEC_READ of a whole 128 KiB object (or EC/XOR part) straight from OSD `osd` (newest
    /// version), for checking replicas and parts: `(version, data)`; version 0 means the OSD
    /// does not have it.
    pub fn read_replica(
        &mut self,
        osd: u64,
        inode: u64,
        stripe: u64,
    ) -> Result<(u64, Vec<u8>), i64> {
        let op = RequestOp::SecRead(SecRwOp {
            oid: ObjectId { inode, stripe },
            version: 0,
            offset: 0,
            len: 128 << 10,
            attr_len: 4,
            flags: 0,
        });
        let (reply, payload) = self.call(osd, op, &[], &[])?;
        match reply.op {
            ReplyOp::SecRead(r) if reply.retval >= 0 => {
                Ok((r.version, payload[r.attr_len as usize..].to_vec()))
            }
            _ => Err(reply.retval.min(-5)),
        }
    }
}

impl TestClient {
    /// Objects of PG `pg` of pool 1 that OSD `osd` stores (SEC_LIST; deleted ones excluded).
    pub fn list_pg(&mut self, osd: u64, pg: u32) -> Result<Vec<(u64, u64)>, i64> {
        let op = RequestOp::SecList(vitastor_protocol::SecListOp {
            list_pg: pg,
            pg_count: self.pg_count,
            pg_stripe_size: 128 << 10,
            min_inode: 1 << 48,
            max_inode: (2 << 48) - 1,
            ..Default::default()
        });
        let (reply, payload) = self.call(osd, op, &[], &[])?;
        if reply.retval < 0 {
            return Err(reply.retval);
        }
        let list = vitastor_protocol::obj_ver_ids(&payload).map_err(|_| -5i64)?;
        Ok(list.map(|e| (e.oid.stripe, e.version)).collect())
    }
}

fn is_conn_error(e: i64) -> bool {
    // ECONNREFUSED, ECONNRESET, EPIPE, ETIMEDOUT, EAGAIN (read timeout), EIO from a short read.
    [-111, -104, -32, -110, -11, -5].contains(&e)
}

fn exchange(
    s: &mut TcpStream,
    req: &Request,
    payload: &[u8],
    data: &[u8],
) -> Result<(Reply, Vec<u8>), i64> {
    let mut packet: Packet = [0; OSD_PACKET_SIZE];
    encode_request(req, &mut packet);
    let mut buf = packet.to_vec();
    buf.extend_from_slice(payload);
    buf.extend_from_slice(data);
    s.write_all(&buf).map_err(io_err)?;
    let mut rp: Packet = [0; OSD_PACKET_SIZE];
    s.read_exact(&mut rp).map_err(io_err)?;
    let reply = decode_reply(&rp).map_err(|_| -5i64)?;
    if reply.id != req.id {
        return Err(-5);
    }
    let len = reply.payload_len(req).map_err(|_| -5i64)?;
    let mut out = vec![0; len];
    s.read_exact(&mut out).map_err(io_err)?;
    Ok((reply, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_with_numbers_as_strings_are_read_like_numbers() {
        let pg = json!({"primary": "2", "state": ["active"], "peers": ["1", "2"]});
        assert_eq!(active_primary("pg/state/1/1", &pg), Some(2));
        let peering = json!({"primary": 2, "state": ["peering"], "peers": [1, 2]});
        assert_eq!(active_primary("pg/state/1/1", &peering), None);
        let osd = json!({"state": "up", "addresses": ["127.0.0.1"], "port": "11203"});
        assert_eq!(
            listen_addr("osd/state/3", &osd),
            Some("127.0.0.1:11203".parse().unwrap())
        );
    }
}
