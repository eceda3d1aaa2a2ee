//! A cluster whose `pg/config` is written the way the original Vitastor's monitor writes it
//! (OSD numbers as strings, a `hash` field): the OSDs take the primaries it names and the
//! client does I/O through them. Before the layout's readers accepted numeric strings, every
//! OSD dropped every PG and the client waited forever.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use vitastor::{Client, ClientOptions, OpDone};
use vitastor_testkit::{Cluster, ClusterOptions};

const INODE: u64 = (1 << 48) | 5;
const OBJ: u64 = 128 << 10;
const TIMEOUT: Duration = Duration::from_secs(60);

fn wait_ops(client: &mut Client, done: &Rc<RefCell<Vec<OpDone>>>, n: usize) -> Vec<OpDone> {
    let deadline = Instant::now() + TIMEOUT;
    while done.borrow().len() < n {
        assert!(Instant::now() < deadline, "client ops did not finish");
        client.wait_events(Some(Duration::from_millis(50)));
    }
    done.borrow_mut().drain(..).collect()
}

#[test]
fn io_on_a_pg_config_with_string_osd_numbers() {
    let cluster = Cluster::start(ClusterOptions::from_workspace()).expect("starting the cluster");
    cluster.wait_active(TIMEOUT).expect("PGs active");
    // The same sets, but the second OSD of each as primary: the OSDs must read this value to
    // move the primaries.
    let sets = cluster.default_sets();
    let mut pgs = Map::new();
    for (i, set) in sets.iter().enumerate() {
        let osd_set: Vec<String> = set.iter().map(u64::to_string).collect();
        pgs.insert(
            (i + 1).to_string(),
            json!({"osd_set": osd_set, "primary": set[1].to_string(), "pause": false}),
        );
    }
    cluster
        .put_json(
            "pg/config",
            &json!({"hash": "0123456789abcdef", "items": {"1": Value::Object(pgs)}}),
        )
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let states = cluster.pg_states().unwrap();
        let moved = states
            .iter()
            .filter(|(pg, v)| {
                v["primary"].as_u64() == Some(sets[*pg as usize - 1][1])
                    && v["state"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|s| s == "active"))
            })
            .count();
        if moved == sets.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{moved} of {} PGs active on the primaries pg/config names: {states:?}",
            sets.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut opts = ClientOptions::new();
    opts.set("etcd_address", &cluster.etcd_address());
    let mut client = Client::new(&opts).unwrap();
    let objects = 2 * sets.len() as u64;
    let done: Rc<RefCell<Vec<OpDone>>> = Rc::default();
    for i in 0..objects {
        let d = done.clone();
        let data = vec![i as u8 + 1; 4096];
        client.write(INODE, i * OBJ, data, 0, move |r| d.borrow_mut().push(r));
    }
    for r in wait_ops(&mut client, &done, objects as usize) {
        r.result.expect("write");
    }
    for i in 0..objects {
        let d = done.clone();
        client.read(INODE, i * OBJ, vec![0; 4096], move |r| {
            d.borrow_mut().push(r)
        });
        let r = wait_ops(&mut client, &done, 1).remove(0);
        r.result.expect("read");
        assert!(r.buf.iter().all(|&b| b == i as u8 + 1), "object {i}");
    }
}
