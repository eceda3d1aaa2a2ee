//! Unit-test bench for the primary: a real [`Server`] on a real blockstore (a sparse file in a
//! temp dir, io_uring) with no etcd thread. The test plays etcd by feeding events, plays the
//! client over a loopback socket, and turns the loop's crank itself ([`Bench::pump`]), so
//! each step of an op is observable without timing.
//!
//! Peers named in `pg/config` but absent from `osd/state` are never connected: they count
//! as down, which is how the tests take a holder away.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};
use vitastor_blockstore::{
    prepare::prepare, Blockstore, BlockstoreConfig, BsOp, BsReply, ImmediateCommit, ListFilter,
    ObjVerId,
};
use vitastor_protocol::{
    decode_reply, encode_request, Reply, Request, RequestOp, RwOp, OSD_PACKET_SIZE,
};

use vitastor_layout::{OsdNum, PgId};

use crate::etcd::EtcdEvent;
use crate::peers::PeerTimeouts;
use crate::pg::Phase;
use crate::server::{Server, ServerConfig};

/// Pool 1's inode 1.
pub(crate) const INODE: u64 = (1 << 48) | 1;
/// The store's object size.
pub(crate) const BLOCK: u64 = 128 * 1024;

/// A server, its store and one client connection. See the module docs.
pub(crate) struct Bench {
    pub server: Server,
    client: TcpStream,
    next_id: u64,
    /// What the bench's etcd holds, for a new session's [`EtcdEvent::InitialLoad`].
    kvs: Vec<(String, Value)>,
    _dir: tempfile::TempDir,
}

/// What a test sets up: the store's data size, this OSD, the PG's set.
pub(crate) struct Setup {
    pub data_mib: u64,
    pub osd_num: u64,
    pub osd_set: Vec<u64>,
    pub pg_minsize: u32,
    pub immediate_commit: ImmediateCommit,
    /// `replicated`, `xor` or `ec`.
    pub scheme: &'static str,
    /// Parity parts of an `ec`/`xor` pool.
    pub parity_chunks: u32,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            data_mib: 16,
            osd_num: 1,
            osd_set: vec![1, 2],
            pg_minsize: 1,
            immediate_commit: ImmediateCommit::All,
            scheme: "replicated",
            parity_chunks: 0,
        }
    }
}

impl Bench {
    /// A server leading pool 1's only PG, set `setup.osd_set`; returns once the PG is active.
    pub fn new(setup: Setup) -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("osd.img");
        let journal_mib = 4;
        std::fs::File::create(&data)
            .and_then(|f| f.set_len((setup.data_mib + journal_mib + 4) << 20))
            .expect("sparse data file");
        let mut cfg = BlockstoreConfig::new(&data);
        cfg.journal_size = Some(journal_mib << 20);
        cfg.direct_io = false;
        cfg.immediate_commit = setup.immediate_commit;
        prepare(&cfg, false).expect("prepare the store");
        let bs = Blockstore::open(&cfg).expect("open the store");
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback listener");
        let addr = listener.local_addr().expect("listener address");
        let server_cfg = ServerConfig {
            osd_num: OsdNum(setup.osd_num),
            peer_timeouts: PeerTimeouts {
                connect: Duration::from_secs(5),
                ping: Duration::from_secs(5),
                op: Duration::from_secs(10),
                retry: Duration::from_secs(5),
            },
            recovery_queue_depth: 4,
            stats_interval: Duration::from_secs(3600),
            slow_log_interval: Duration::from_secs(10),
            debug_ec_crash: None,
        };
        let server =
            Server::with_listener(listener, server_cfg, bs, None).expect("server on loopback");
        let client = TcpStream::connect(addr).expect("connect to the server");
        client.set_nodelay(true).expect("nodelay");
        let mut bench = Bench {
            server,
            client,
            next_id: 1,
            kvs: Vec::new(),
            _dir: dir,
        };
        bench.server.accept();
        let commit = match setup.immediate_commit {
            ImmediateCommit::All => "all",
            ImmediateCommit::Small => "small",
            ImmediateCommit::None => "none",
        };
        let kvs: Vec<(String, Value)> = vec![
            (
                "config/pools".into(),
                json!({"1": {"name": "p", "scheme": setup.scheme,
                    "pg_size": setup.osd_set.len(), "pg_minsize": setup.pg_minsize,
                    "parity_chunks": setup.parity_chunks,
                    "pg_count": 1, "immediate_commit": commit}}),
            ),
            (
                "pg/config".into(),
                json!({"items": {"1": {"1": {"osd_set": setup.osd_set, "primary": setup.osd_num}}}}),
            ),
        ];
        bench.kvs = kvs;
        bench.reload();
        bench.etcd(vec![EtcdEvent::PgClaimed {
            pool: 1,
            pg: 1,
            granted: true,
        }]);
        bench.pump_until(|s| {
            s.pgs
                .get(&PgId::new(1, 1))
                .is_some_and(|pg| pg.phase == Phase::Active)
        });
        bench
    }

    /// A new etcd session: the bench's keys loaded again, as after a reconnect.
    pub fn reload(&mut self) {
        let kvs = self.kvs.clone();
        self.etcd(vec![EtcdEvent::Connected, EtcdEvent::InitialLoad { kvs }]);
    }

    /// Delivers etcd events as the side thread would.
    pub fn etcd(&mut self, events: Vec<EtcdEvent>) {
        self.server.on_etcd_events(events);
        self.server.process_peer_events();
    }

    /// One loop round without sockets to poll: the client connection read (as its poll
    /// would), disk completions, deferred sub-op results, replies written.
    pub fn pump(&mut self) {
        let s = &mut self.server;
        s.receive(0);
        s.end_turn();
        s.bs.engine_mut()
            .wait_for(Some(Duration::from_millis(2)))
            .expect("wait for the ring");
        s.bs.poll(false).expect("blockstore poll");
        s.process_peer_events();
        s.drain_completions();
        s.end_turn();
    }

    /// Pumps until `done` holds; panics after many rounds (a hang is a failure, not a wait).
    pub fn pump_until(&mut self, mut done: impl FnMut(&Server) -> bool) {
        for _ in 0..20_000 {
            if done(&self.server) {
                return;
            }
            self.pump();
        }
        panic!("the server never reached the expected state");
    }

    /// Sends a client request; returns its id.
    pub fn send(&mut self, op: RequestOp, payload: &[u8]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut p = [0u8; OSD_PACKET_SIZE];
        encode_request(&Request { id, op }, &mut p);
        self.client.write_all(&p).expect("send request");
        self.client.write_all(payload).expect("send payload");
        self.server.receive(0);
        id
    }

    /// A client WRITE of `data` at `offset` of [`INODE`].
    pub fn write(&mut self, offset: u64, data: &[u8]) -> u64 {
        let op = RequestOp::Write(RwOp {
            inode: INODE,
            offset,
            len: data.len() as u32,
            flags: 0,
            meta_revision: 0,
            version: 0,
        });
        self.send(op, data)
    }

    /// A client READ of `len` bytes at `offset` of [`INODE`]: its retval, bitmap and data
    /// (`bitmap_bytes` of bitmap: the test knows the object's shape).
    pub fn read(&mut self, offset: u64, len: u32, bitmap_bytes: usize) -> (i64, Vec<u8>, Vec<u8>) {
        let op = RequestOp::Read(RwOp {
            inode: INODE,
            offset,
            len,
            flags: 0,
            meta_revision: 0,
            version: 0,
        });
        let id = self.send(op, &[]);
        let (reply, mut payload) = self.reply(id, |r| {
            if r.retval >= 0 {
                bitmap_bytes + r.retval as usize
            } else {
                0
            }
        });
        let data = payload.split_off(payload.len().min(bitmap_bytes));
        (reply.retval, payload, data)
    }

    /// A client SYNC.
    pub fn sync(&mut self) -> u64 {
        self.send(RequestOp::Sync, &[])
    }

    /// The versions the local store still holds unstable, in PG 1/1 (the only PG).
    pub fn local_unstable(&mut self) -> Vec<ObjVerId> {
        let filter = ListFilter {
            pg_count: 1,
            pg_num: 1,
            pg_stripe_size: BLOCK,
            min_inode: 1 << 48,
            max_inode: (2 << 48) - 1,
            min_stripe: 0,
            max_stripe: 0,
        };
        match self.server.bs.exec(BsOp::List(filter)) {
            Ok(BsReply::List { unstable, .. }) => unstable,
            other => panic!("local listing: {other:?}"),
        }
    }

    /// Pumps until the reply to `id` arrives; returns it and its payload (`payload_len`
    /// bytes: the test knows what it asked for).
    pub fn reply(&mut self, id: u64, payload_len: impl Fn(&Reply) -> usize) -> (Reply, Vec<u8>) {
        self.client
            .set_nonblocking(true)
            .expect("nonblocking client");
        let mut packet = [0u8; OSD_PACKET_SIZE];
        let mut got = 0;
        for _ in 0..20_000 {
            match self.client.read(&mut packet[got..]) {
                Ok(0) => panic!("the server closed the connection"),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("read reply: {e}"),
            }
            if got == OSD_PACKET_SIZE {
                break;
            }
            self.pump();
        }
        assert_eq!(got, OSD_PACKET_SIZE, "no reply to request {id}");
        self.client.set_nonblocking(false).expect("blocking client");
        let reply = decode_reply(&packet).expect("a valid reply");
        assert_eq!(reply.id, id, "replies come in request order here");
        let mut payload = vec![0; payload_len(&reply)];
        self.client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        self.client.read_exact(&mut payload).expect("reply payload");
        (reply, payload)
    }

    /// The PG's reported state names, for assertions.
    pub fn pg_states(&self) -> Vec<String> {
        self.server.pgs[&PgId::new(1, 1)]
            .state_names()
            .iter()
            .map(|n| format!("{n:?}"))
            .collect()
    }
}
