//! Shared test harness: stores on simulated disks and on files, data patterns that identify
//! which write produced each granule.
#![allow(dead_code)]

pub mod tap;
pub mod workload;

use std::path::Path;

use vitastor_blockstore::prepare::prepare_images;
use vitastor_blockstore::simdisk::{SimDisk, SimEngine};
use vitastor_blockstore::{
    device_paths, AlignedBuf, Blockstore, BlockstoreConfig, BsOp, BsReply, ImmediateCommit,
    ObjectId,
};

pub const GRAN: u32 = 4096;

/// A small geometry that makes the journal wrap and the data area fill quickly.
pub fn small_cfg(block_size: u32, journal_size: u64) -> BlockstoreConfig {
    let mut cfg = BlockstoreConfig::new("/sim/data");
    cfg.block_size = Some(block_size);
    cfg.journal_size = Some(journal_size);
    cfg.flusher_count = 4;
    cfg.flusher_batch = 4;
    cfg
}

/// Fresh simulated disks (one device for everything) holding a prepared store.
pub fn sim_disks(cfg: &BlockstoreConfig, dev_size: u64) -> Vec<SimDisk> {
    let (paths, _) = device_paths(cfg);
    let mut disks: Vec<SimDisk> = paths
        .iter()
        .map(|_| SimDisk::new(dev_size as usize))
        .collect();
    prepare_images(cfg, (dev_size, dev_size, dev_size), |dev, off, bytes| {
        disks[dev].durable[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
    })
    .expect("prepare");
    disks
}

pub fn open_sim(cfg: &BlockstoreConfig, disks: Vec<SimDisk>, seed: u64) -> Blockstore<SimEngine> {
    let (_, devs) = device_paths(cfg);
    Blockstore::open_with(SimEngine::new(disks, seed), devs, cfg).expect("open")
}

/// Granule content that names its writer: (write id, granule index) repeated.
pub fn pattern(write_id: u64, granule: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(GRAN as usize);
    while v.len() < GRAN as usize {
        v.extend_from_slice(&write_id.to_le_bytes());
        v.extend_from_slice(&(granule as u64).to_le_bytes());
    }
    v
}

/// Which write produced this granule: `Some(0)` for zeroes, `None` for garbage.
pub fn decode_pattern(g: &[u8], granule: u32) -> Option<u64> {
    if g.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let id = u64::from_le_bytes(g[0..8].try_into().unwrap());
    (g == pattern(id, granule).as_slice()).then_some(id)
}

pub fn write_buf(write_id: u64, first_granule: u32, granules: u32) -> AlignedBuf {
    let mut b = AlignedBuf::new((granules * GRAN) as usize);
    for i in 0..granules {
        let s = (i * GRAN) as usize;
        b[s..s + GRAN as usize].copy_from_slice(&pattern(write_id, first_granule + i));
    }
    b
}

/// A stable write of granules `first..first + granules` of `oid`, each holding the pattern of
/// write `id`.
pub fn stable_write(oid: ObjectId, id: u64, first: u32, granules: u32) -> BsOp {
    BsOp::Write {
        oid,
        version: 0,
        offset: first * GRAN,
        data: write_buf(id, first, granules),
        bitmap: None,
        stable: true,
    }
}

/// A store prepared on a 16 MiB file at `path` (a 1 MiB journal, every write durable at
/// once), for the io_uring engine.
pub fn prepared_file(path: &Path, block_size: u32) -> BlockstoreConfig {
    std::fs::File::create(path)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let mut c = BlockstoreConfig::new(path);
    c.block_size = Some(block_size);
    c.journal_size = Some(1 << 20);
    c.immediate_commit = ImmediateCommit::All;
    vitastor_blockstore::prepare::prepare(&c, false).unwrap();
    c
}

pub fn read_all<E: vitastor_blockstore::IoEngine>(
    bs: &mut Blockstore<E>,
    oid: ObjectId,
) -> (u64, Vec<u8>) {
    let len = bs.layout().block_size;
    match bs
        .exec(BsOp::Read {
            oid,
            version: vitastor_blockstore::NEWEST,
            offset: 0,
            len,
        })
        .expect("read")
    {
        BsReply::Read { version, data, .. } => (version, data.to_vec()),
        other => panic!("unexpected reply {other:?}"),
    }
}
