//! `Client::list_objects` against scripted OSDs speaking the wire protocol: a primary that
//! answers for the whole PG (`OSD_LIST_PRIMARY` in its reply, as the original's primaries
//! do) is the only OSD asked; a primary that lists only its own store is completed by
//! listing every peer `pg/state` names.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use vitastor::{Client, ClientOptions, OpDone};
use vitastor_protocol::handshake::{ImmediateCommit, ReplyFeatures, ShowConfigReplyJson};
use vitastor_protocol::{
    decode_request, encode_obj_ver_ids, encode_reply, ObjVerId, ObjectId, Reply, ReplyOp,
    RequestOp, SecListReply, OSD_LIST_PRIMARY, OSD_PACKET_SIZE, PROTOCOL_VERSION,
};
use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

const INODE: u64 = (1 << 48) | 7;
const OBJ: u64 = 128 << 10;

/// One OSD that answers SHOW_CONFIG, then SEC_LISTs with `stripes` and `reply_flags`; it
/// records the flags of each SEC_LIST it got.
fn scripted_osd(
    osd: u64,
    stripes: Vec<u64>,
    reply_flags: u64,
) -> (u16, thread::JoinHandle<Vec<u64>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut seen = Vec::new();
        let mut packet = [0u8; OSD_PACKET_SIZE];
        while s.read_exact(&mut packet).is_ok() {
            let req = decode_request(&packet).unwrap();
            let mut payload = vec![0u8; req.payload_len()];
            s.read_exact(&mut payload).unwrap();
            let (op, body) = match req.op {
                RequestOp::ShowConfig(_) => {
                    let json = ShowConfigReplyJson {
                        osd_num: Some(osd),
                        protocol_version: PROTOCOL_VERSION,
                        block_size: OBJ as u32,
                        bitmap_granularity: 4096,
                        primary_enabled: Some(true),
                        blockstore_enabled: Some(true),
                        readonly: Some(false),
                        immediate_commit: ImmediateCommit::All,
                        lease_timeout: None,
                        features: ReplyFeatures::default(),
                    };
                    (ReplyOp::ShowConfig, json.to_json())
                }
                RequestOp::SecList(list) => {
                    assert_eq!(
                        (list.list_pg, list.min_inode, list.max_inode),
                        (1, INODE, INODE)
                    );
                    seen.push(list.flags);
                    let ids: Vec<ObjVerId> = stripes
                        .iter()
                        .map(|&stripe| ObjVerId {
                            oid: ObjectId {
                                inode: INODE,
                                stripe,
                            },
                            version: 1,
                        })
                        .collect();
                    let mut body = Vec::new();
                    encode_obj_ver_ids(&ids, &mut body);
                    let reply = SecListReply {
                        stable_count: ids.len() as u64,
                        flags: reply_flags,
                    };
                    (ReplyOp::SecList(reply), body)
                }
                other => panic!("unexpected request {other:?}"),
            };
            let retval = match op {
                ReplyOp::SecList(_) => stripes.len() as i64,
                _ => body.len() as i64,
            };
            encode_reply(
                &Reply {
                    id: req.id,
                    retval,
                    op,
                },
                &mut packet,
            );
            s.write_all(&packet).unwrap();
            s.write_all(&body).unwrap();
        }
        seen
    });
    (port, handle)
}

fn list(etcd: &EtcdServer) -> Vec<u64> {
    let mut opts = ClientOptions::new();
    opts.set("etcd_address", &etcd.etcd_address());
    let mut client = Client::new(&opts).unwrap();
    let out: Rc<RefCell<Option<OpDone>>> = Rc::default();
    let o = out.clone();
    client.list_objects(INODE, 1, move |r| *o.borrow_mut() = Some(r));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        client.wait_events(Some(Duration::from_millis(50)));
        if let Some(r) = out.borrow_mut().take() {
            r.result.expect("listing");
            return r.objects;
        }
        assert!(Instant::now() < deadline, "the listing did not finish");
    }
}

fn cluster(etcd: &EtcdServer, ports: &[(u64, u16)]) {
    let put = |k: &str, v: serde_json::Value| {
        etcd.etcdctl(&["put", &format!("/vitastor/{k}"), &v.to_string()])
            .unwrap();
    };
    put(
        "config/pools",
        json!({"1":{"name":"p","pg_size":2,"pg_minsize":1,"pg_count":1}}),
    );
    put(
        "pg/config",
        json!({"items":{"1":{"1":{"osd_set":["1","2"],"primary":"1"}}}}),
    );
    put(
        "pg/state/1/1",
        json!({"primary":1,"state":["active"],"peers":[1,2]}),
    );
    for &(osd, port) in ports {
        put(
            &format!("osd/state/{osd}"),
            json!({"state":"up","addresses":["127.0.0.1"],"port":port}),
        );
    }
}

#[test]
fn a_primary_answering_for_the_pg_is_enough() {
    let etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    let (p1, osd1) = scripted_osd(1, vec![OBJ, 5 * OBJ, 3 * OBJ + 4096], OSD_LIST_PRIMARY);
    // OSD 2 listens but must not be asked.
    let (p2, _osd2) = scripted_osd(2, vec![9 * OBJ], 0);
    cluster(&etcd, &[(1, p1), (2, p2)]);
    assert_eq!(list(&etcd), vec![OBJ, 3 * OBJ, 5 * OBJ]);
    assert_eq!(osd1.join().unwrap(), vec![OSD_LIST_PRIMARY]);
}

#[test]
fn a_primary_listing_its_own_store_is_completed_by_the_peers() {
    let etcd = EtcdServer::start(EtcdOptions::default()).expect("etcd");
    let (p1, osd1) = scripted_osd(1, vec![OBJ, 2 * OBJ], 0);
    let (p2, osd2) = scripted_osd(2, vec![2 * OBJ, 9 * OBJ], 0);
    cluster(&etcd, &[(1, p1), (2, p2)]);
    assert_eq!(list(&etcd), vec![OBJ, 2 * OBJ, 9 * OBJ]);
    assert_eq!(osd1.join().unwrap(), vec![OSD_LIST_PRIMARY]);
    assert_eq!(osd2.join().unwrap(), vec![0]);
}
