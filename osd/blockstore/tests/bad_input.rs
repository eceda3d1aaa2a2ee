//! Bad input at open time: damaged superblocks, truncated devices, mismatched options,
//! garbage journals and metadata give a clear error (or a clean empty log), never a panic.

mod common;

use common::*;
use proptest::prelude::*;
use vitastor_blockstore::simdisk::{SimDisk, SimEngine};
use vitastor_blockstore::{device_paths, Blockstore, BlockstoreConfig, BsError, BsOp, ObjectId};

fn cfg() -> BlockstoreConfig {
    small_cfg(16384, 256 * 1024)
}

fn try_open(cfg: &BlockstoreConfig, disks: Vec<SimDisk>) -> Result<Blockstore<SimEngine>, BsError> {
    let (_, devs) = device_paths(cfg);
    Blockstore::open_with(SimEngine::new(disks, 1), devs, cfg)
}

/// A store with some flushed and some journaled objects.
fn populated() -> (BlockstoreConfig, Vec<SimDisk>) {
    let cfg = cfg();
    let mut bs = open_sim(&cfg, sim_disks(&cfg, 2 << 20), 5);
    for i in 0..8u64 {
        let oid = ObjectId::new(1 << 48 | 1, i * 16384);
        bs.exec(BsOp::Write {
            oid,
            version: 0,
            offset: 0,
            data: write_buf(i + 1, 0, 4),
            bitmap: None,
            stable: true,
        })
        .unwrap();
        bs.exec(BsOp::Write {
            oid,
            version: 0,
            offset: 4096,
            data: write_buf(i + 100, 1, 1),
            bitmap: None,
            stable: true,
        })
        .unwrap();
    }
    bs.exec(BsOp::Sync).unwrap();
    bs.wait_idle().unwrap();
    let disks = bs.engine_mut().power_loss_none();
    (cfg, disks)
}

fn err_text(r: Result<Blockstore<SimEngine>, BsError>) -> String {
    match r {
        Ok(_) => panic!("open unexpectedly succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn corrupt_superblock() {
    let (cfg, mut disks) = populated();
    disks[0].durable[40] ^= 0x10;
    let e = err_text(try_open(&cfg, disks));
    assert!(e.contains("superblock checksum"), "{e}");
}

#[test]
fn not_a_store() {
    let cfg = cfg();
    let mut d = SimDisk::new(2 << 20);
    for (i, b) in d.durable.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let e = err_text(try_open(&cfg, vec![d]));
    assert!(e.contains("vitastor-disk prepare"), "{e}");
}

#[test]
fn truncated_device() {
    let (cfg, mut disks) = populated();
    disks[0].durable.truncate(1 << 20);
    let e = err_text(try_open(&cfg, disks));
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn mismatched_options() {
    let (mut cfg, disks) = populated();
    cfg.block_size = Some(131072);
    cfg.journal_block_size = Some(512);
    let e = err_text(try_open(&cfg, disks));
    assert!(
        e.contains("block_size=131072") && e.contains("journal_block_size=512"),
        "{e}"
    );
}

#[test]
fn garbage_journal_header() {
    let (cfg, mut disks) = populated();
    let bs = try_open(&cfg, disks.clone()).unwrap();
    let joff = bs.layout().journal.offset as usize;
    drop(bs);
    disks[0].durable[joff + 20] ^= 0xff;
    let e = err_text(try_open(&cfg, disks));
    assert!(e.contains("journal header"), "{e}");
}

#[test]
fn garbage_journal_body_ends_the_log() {
    let (cfg, mut disks) = populated();
    let bs = try_open(&cfg, disks.clone()).unwrap();
    let j = bs.layout().journal;
    let jbs = bs.layout().journal_block_size as usize;
    drop(bs);
    // Everything after the header becomes noise: replay finds no valid entry and the store
    // opens with the flushed state only.
    for (i, b) in disks[0].durable[j.offset as usize + jbs..(j.offset + j.size) as usize]
        .iter_mut()
        .enumerate()
    {
        *b = (i * 31 + 17) as u8;
    }
    let mut bs = try_open(&cfg, disks).expect("a garbage journal body is an empty log");
    let (_, data) = read_all(&mut bs, ObjectId::new(1 << 48 | 1, 0));
    assert!(decode_pattern(&data[..4096], 0).is_some());
}

#[test]
fn corrupt_metadata_entry() {
    let (cfg, mut disks) = populated();
    let bs = try_open(&cfg, disks.clone()).unwrap();
    let l = bs.layout().clone();
    drop(bs);
    let mut found = false;
    for b in 1..l.data_blocks() {
        let (mb, off) = l.meta_pos(b);
        let at = (l.meta.offset + mb * l.meta_block_size as u64) as usize + off;
        if disks[0].durable[at..at + l.meta_entry_size()]
            .iter()
            .any(|&x| x != 0)
        {
            disks[0].durable[at + 3] ^= 1;
            found = true;
            break;
        }
    }
    assert!(found, "the populated store has flushed objects");
    let e = err_text(try_open(&cfg, disks));
    assert!(e.contains("metadata entry of data block"), "{e}");
}

#[test]
fn invalid_requests_are_rejected() {
    let cfg = cfg();
    let mut bs = open_sim(&cfg, sim_disks(&cfg, 2 << 20), 9);
    let oid = ObjectId::new(1, 0);
    for (off, len) in [
        (100u32, 4096usize),
        (0, 100),
        // A zero-length write is a version without data, but still inside the object.
        (20480, 0),
        (16384, 4096),
        (12288, 8192),
    ] {
        let r = bs.exec(BsOp::Write {
            oid,
            version: 0,
            offset: off,
            data: vitastor_blockstore::AlignedBuf::new(len),
            bitmap: None,
            stable: false,
        });
        assert!(
            matches!(r, Err(BsError::Invalid(_))),
            "write {off}+{len}: {r:?}"
        );
    }
    let r = bs.exec(BsOp::Read {
        oid,
        version: u64::MAX,
        offset: 100,
        len: 4096,
    });
    assert!(matches!(r, Err(BsError::Invalid(_))), "{r:?}");
    bs.exec(BsOp::Write {
        oid,
        version: 5,
        offset: 0,
        data: write_buf(1, 0, 1),
        bitmap: None,
        stable: false,
    })
    .unwrap();
    let r = bs.exec(BsOp::Write {
        oid,
        version: 5,
        offset: 0,
        data: write_buf(2, 0, 1),
        bitmap: None,
        stable: false,
    });
    assert!(matches!(r, Err(BsError::VersionConflict(_))), "{r:?}");
    assert_eq!(r.unwrap_err().errno(), -17, "EEXIST on the wire");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Random damage anywhere: open either fails with an error or works; it never panics, and
    /// a store that opens can still be read.
    #[test]
    fn random_damage_never_panics(flips in proptest::collection::vec((0usize..(2 << 20), any::<u8>()), 1..64)) {
        let (cfg, mut disks) = populated();
        for (at, x) in flips {
            disks[0].durable[at] ^= x | 1;
        }
        if let Ok(mut bs) = try_open(&cfg, disks) {
            for i in 0..8u64 {
                let _ = bs.exec(BsOp::Read { oid: ObjectId::new(1 << 48 | 1, i * 16384), version: u64::MAX, offset: 0, len: 16384 });
            }
        }
    }
}
