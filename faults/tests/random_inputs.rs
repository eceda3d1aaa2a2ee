//! Every untrusted-input parser fed random inputs in a plain loop: the etcd value parsers of
//! the layout crate (with structure-aware random JSON, so inputs reach the field checks, and
//! raw bytes through serde_json), the OSD frame decoder and the NBD session parser.
//!
//! The cargo-fuzz targets (`layout/fuzz`, `protocol/fuzz`, `nbd/fuzz`) need a nightly
//! compiler feature; this loop needs nothing and runs inside `make test`
//! (`VITASTOR_FUZZ_INPUTS`, 100,000 inputs per parser by default; `make test-faults` runs the
//! fuzz targets themselves for 1 M inputs each). Same checks: no panic, and what parses
//! round-trips.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Map, Value};
use vitastor_faults::duration::fuzz_inputs;
use vitastor_layout::{
    parse_pg_config, parse_pools, tolerant, ImageIndex, InodeConfig, OsdConfig, OsdState,
    PgConfigItem, PgHistory, PgState, PoolConfig,
};
use vitastor_nbd::proto::ExportDesc;
use vitastor_nbd::session::{Event, Session};
use vitastor_protocol::{FrameDecoder, REPLY_MAGIC, REQUEST_MAGIC};

const DEFAULT_INPUTS: u64 = 100_000;

/// Field names of the etcd values (`shared/spec/etcd-layout.md`), so random objects hit them.
const FIELDS: &[&str] = &[
    "name",
    "scheme",
    "pg_size",
    "pg_minsize",
    "pg_count",
    "parity_chunks",
    "failure_domain",
    "max_osd_combinations",
    "block_size",
    "bitmap_granularity",
    "immediate_commit",
    "pg_stripe_size",
    "root_node",
    "osd_tags",
    "primary_affinity_tags",
    "scrub_interval",
    "items",
    "osd_set",
    "primary",
    "pause",
    "state",
    "peers",
    "all_peers",
    "osd_sets",
    "epoch",
    "size",
    "parent_id",
    "parent_pool",
    "readonly",
    "meta",
    "id",
    "pool_id",
    "addresses",
    "port",
    "host",
    "blockstore_enabled",
    "primary_enabled",
    "reweight",
    "tags",
    "noout",
    "free",
    "time",
    "op_stats",
    "1",
    "2",
    "100",
];

fn rng() -> StdRng {
    let seed = rand::random::<u64>();
    println!("random_inputs: seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// A random scalar: numbers (huge, negative, fractional), numeric and other strings, state
/// names, bools, null.
fn scalar(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..10) {
        0 => json!(rng.gen_range(0..10u64)),
        1 => json!(rng.next_u64()),
        2 => json!(-(rng.gen_range(1..1000i64))),
        3 => json!(rng.gen::<f64>() * 1e6),
        4 => json!(rng.gen_range(0..100u64).to_string()),
        5 => json!(
            [
                "active",
                "degraded",
                "offline",
                "replicated",
                "xor",
                "ec",
                "all",
                "none"
            ][rng.gen_range(0..8)]
        ),
        6 => json!(rng.gen::<bool>()),
        7 => Value::Null,
        8 => json!("18446744073709551616"),
        _ => json!(String::from_utf8_lossy(&random_bytes(rng, 8))),
    }
}

fn value(rng: &mut StdRng, depth: u32) -> Value {
    if depth == 0 || rng.gen_range(0..3) == 0 {
        return scalar(rng);
    }
    if rng.gen() {
        (0..rng.gen_range(0..5))
            .map(|_| value(rng, depth - 1))
            .collect()
    } else {
        let mut m = Map::new();
        for _ in 0..rng.gen_range(0..8) {
            m.insert(
                FIELDS[rng.gen_range(0..FIELDS.len())].to_string(),
                value(rng, depth - 1),
            );
        }
        Value::Object(m)
    }
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let mut b = vec![0u8; rng.gen_range(0..=max)];
    rng.fill_bytes(&mut b);
    b
}

/// A random JSON value, or (one time in 8) whatever random bytes serde_json accepts.
fn input(rng: &mut StdRng) -> Value {
    if rng.gen_range(0..8) == 0 {
        serde_json::from_slice(&random_bytes(rng, 64)).unwrap_or(Value::Null)
    } else {
        value(rng, 4)
    }
}

fn each_input(f: impl Fn(&Value)) {
    let mut rng = rng();
    for _ in 0..fuzz_inputs(DEFAULT_INPUTS) {
        f(&input(&mut rng));
    }
}

#[test]
fn pool_config() {
    each_input(|v| {
        let (pools, _) = parse_pools(v);
        for (id, pool) in &pools {
            assert_eq!(
                PoolConfig::from_json(*id, &v[id.to_string()]).as_ref(),
                Ok(pool)
            );
        }
    });
}

#[test]
fn pg_config() {
    each_input(|v| {
        let (items, _) = parse_pg_config(v);
        for item in items.values() {
            let back: PgConfigItem =
                serde_json::from_value(serde_json::to_value(item).unwrap()).unwrap();
            assert_eq!(&back, item);
        }
    });
}

#[test]
fn pg_state_and_history() {
    each_input(|v| {
        if let Ok(state) = PgState::from_json("pg/state/1/1", v) {
            assert_eq!(
                PgState::from_json("pg/state/1/1", &state.to_json()),
                Ok(state)
            );
        }
        if let Ok(h) = PgHistory::from_json("pg/history/1/1", v) {
            let json = serde_json::to_value(&h).unwrap();
            assert_eq!(PgHistory::from_json("pg/history/1/1", &json), Ok(h));
        }
    });
}

#[test]
fn osd_state_config_and_stats() {
    each_input(|v| {
        if let Ok(state) = OsdState::from_json("osd/state/1", v) {
            assert_eq!(
                OsdState::from_json("osd/state/1", &state.to_json()),
                Ok(state)
            );
        }
        let _ = OsdConfig::from_json("config/osd/1", v);
        for field in FIELDS {
            let _ = tolerant::u64_field(v, field);
            let _ = tolerant::f64_field(v, field);
            let _ = tolerant::bool_of(&v[field]);
        }
    });
}

#[test]
fn inode_config() {
    each_input(|v| {
        if let Ok(config) = InodeConfig::from_json("config/inode/1/1", v) {
            let _ = config.parent(1);
            assert_eq!(
                InodeConfig::from_json("config/inode/1/1", &config.to_json()),
                Ok(config)
            );
        }
        let _ = ImageIndex::from_json("index/image/img", v);
    });
}

/// Random streams, half of them starting with a request or reply magic, fed in random
/// chunks; nothing must panic and a failed decoder stays failed.
#[test]
fn frame_decoder() {
    let mut rng = rng();
    for _ in 0..fuzz_inputs(DEFAULT_INPUTS) {
        let mut stream = Vec::new();
        match rng.gen_range(0..3) {
            0 => stream.extend_from_slice(&REQUEST_MAGIC.to_le_bytes()),
            1 => stream.extend_from_slice(&REPLY_MAGIC.to_le_bytes()),
            _ => {}
        }
        stream.extend(random_bytes(&mut rng, 1024));
        let chunk = rng.gen_range(1..=256);
        let mut decoder = FrameDecoder::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            match decoder.feed(&rest[..rest.len().min(chunk)], &mut |_| None) {
                Ok((used, _)) => rest = &rest[used..],
                Err(_) => {
                    assert!(decoder.is_failed());
                    break;
                }
            }
        }
    }
}

/// Random client bytes through the NBD session parser in both starting states, the way the
/// server feeds them.
#[test]
fn nbd_session() {
    let desc = ExportDesc {
        name: "testimg".into(),
        size: 1 << 30,
        flags: 0,
        min_block: 4096,
        preferred_block: 128 << 10,
    };
    let mut rng = rng();
    for _ in 0..fuzz_inputs(DEFAULT_INPUTS) {
        let data = random_bytes(&mut rng, 512);
        for mut session in [
            Session::handshake(desc.clone()).0,
            Session::transmission(desc.clone()),
        ] {
            let mut input = &data[..];
            loop {
                if let Some(space) = session.payload_space() {
                    let n = space.len().min(input.len());
                    if n == 0 {
                        break;
                    }
                    space[..n].copy_from_slice(&input[..n]);
                    input = &input[n..];
                    let _ = session.payload_filled(n);
                    continue;
                }
                let (used, event) = session.step(input);
                input = &input[used..];
                match event {
                    Some(Event::Close(_)) | Some(Event::SendAndClose(_)) => break,
                    None if used == 0 => break,
                    _ => {}
                }
            }
        }
    }
}
