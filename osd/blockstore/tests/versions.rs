//! Versions without data and external bitmaps, as erasure-coded pools use them: a zero-length
//! write creates a version carrying only a bitmap, and a write's external bitmap (`attr`) is
//! kept per version apart from the allocation bitmap, through stabilize, rollback, flush,
//! journal replay and restarts. Also: a store of an older on-disk format is refused.

mod common;

use common::*;
use vitastor_blockstore::simdisk::{SimDisk, SimEngine};
use vitastor_blockstore::{
    device_paths, AlignedBuf, Blockstore, BlockstoreConfig, BsError, BsOp, BsReply, ObjVerId,
    ObjectId, NEWEST,
};

const BLOCK: u32 = 16384;

fn cfg() -> BlockstoreConfig {
    small_cfg(BLOCK, 256 * 1024)
}

fn oid(n: u64) -> ObjectId {
    ObjectId::new(1 << 48 | 1, n * BLOCK as u64)
}

fn write(
    bs: &mut Blockstore<SimEngine>,
    oid: ObjectId,
    first: u32,
    data: AlignedBuf,
    attr: Option<u8>,
    stable: bool,
) -> u64 {
    match bs.exec(BsOp::Write {
        oid,
        version: 0,
        offset: first * GRAN,
        data,
        bitmap: attr.map(|a| vec![a]),
        stable,
    }) {
        Ok(BsReply::Written { version, .. }) => version,
        other => panic!("write: {other:?}"),
    }
}

/// Version, bitmap and the writer of each granule.
fn read(bs: &mut Blockstore<SimEngine>, oid: ObjectId) -> (u64, u8, Vec<u64>) {
    let (version, bitmap, data) = match bs
        .exec(BsOp::Read {
            oid,
            version: NEWEST,
            offset: 0,
            len: BLOCK,
        })
        .expect("read")
    {
        BsReply::Read {
            version,
            bitmap,
            data,
        } => (version, bitmap, data.to_vec()),
        other => panic!("read: {other:?}"),
    };
    let writers = (0..BLOCK / GRAN)
        .map(|g| {
            decode_pattern(&data[(g * GRAN) as usize..((g + 1) * GRAN) as usize], g)
                .expect("garbage in a granule")
        })
        .collect();
    match bs.exec(BsOp::ReadBitmap {
        oid,
        version: NEWEST,
    }) {
        Ok(BsReply::Bitmap {
            version: v,
            bitmap: b,
        }) => {
            assert_eq!((v, &b), (version, &bitmap), "ReadBitmap agrees with Read")
        }
        other => panic!("read bitmap: {other:?}"),
    }
    assert_eq!(bitmap.len(), 1);
    (version, bitmap[0], writers)
}

fn flush(bs: &mut Blockstore<SimEngine>) {
    bs.exec(BsOp::Sync).unwrap();
    bs.flush_all().unwrap();
    assert_eq!(bs.dirty_count(), 0, "everything flushed");
}

fn restart(bs: Blockstore<SimEngine>, seed: u64) -> Blockstore<SimEngine> {
    let mut bs = bs;
    bs.exec(BsOp::Sync).unwrap();
    bs.wait_idle().unwrap();
    let disks = bs.engine_mut().power_loss_none();
    drop(bs);
    open_sim(&cfg(), disks, seed)
}

#[test]
fn zero_length_write_is_a_version_without_data() {
    let mut bs = open_sim(&cfg(), sim_disks(&cfg(), 2 << 20), 1);
    let a = oid(1);
    assert_eq!(write(&mut bs, a, 0, write_buf(1, 0, 2), None, true), 1);
    bs.exec(BsOp::Sync).unwrap();
    let used = bs.used_blocks();

    // Unstable, with an external bitmap: the data stays v1's, the bitmap is the new one.
    assert_eq!(
        write(&mut bs, a, 0, AlignedBuf::new(0), Some(0b1011), false),
        2
    );
    assert_eq!(
        bs.used_blocks(),
        used,
        "no data block for a version without data"
    );
    assert_eq!(read(&mut bs, a), (2, 0b1011, vec![1, 1, 0, 0]));
    let BsReply::List { unstable, .. } = bs.exec(BsOp::List(Default::default())).unwrap() else {
        panic!()
    };
    assert_eq!(unstable, vec![ObjVerId::new(a, 2)]);

    // Rolled back like any unstable write, also after a restart replays it.
    bs.exec(BsOp::Sync).unwrap();
    bs = restart(bs, 2);
    assert_eq!(read(&mut bs, a), (2, 0b1011, vec![1, 1, 0, 0]));
    bs.exec(BsOp::Rollback(vec![ObjVerId::new(a, 1)])).unwrap();
    assert_eq!(read(&mut bs, a), (1, 0b0011, vec![1, 1, 0, 0]));

    // Without an attr the external bitmap is the previous one plus the (empty) range.
    assert_eq!(write(&mut bs, a, 2, AlignedBuf::new(0), None, false), 2);
    bs.exec(BsOp::Sync).unwrap();
    bs.exec(BsOp::Stabilize(vec![ObjVerId::new(a, 2)])).unwrap();
    assert_eq!(read(&mut bs, a), (2, 0b0011, vec![1, 1, 0, 0]));
    bs = restart(bs, 3);
    assert_eq!(read(&mut bs, a), (2, 0b0011, vec![1, 1, 0, 0]));

    // Flushed and trimmed like a small write; the version survives a restart from metadata.
    assert_eq!(
        write(&mut bs, a, 3, AlignedBuf::new(0), Some(0b0111), true),
        3
    );
    flush(&mut bs);
    bs = restart(bs, 4);
    assert_eq!(bs.dirty_count(), 0);
    assert_eq!(read(&mut bs, a), (3, 0b0111, vec![1, 1, 0, 0]));

    // An object that does not exist yet gets a version too, and keeps it through a flush.
    let b = oid(2);
    assert_eq!(
        write(&mut bs, b, 0, AlignedBuf::new(0), Some(0b0100), true),
        1
    );
    assert_eq!(read(&mut bs, b), (1, 0b0100, vec![0, 0, 0, 0]));
    flush(&mut bs);
    bs = restart(bs, 5);
    assert_eq!(read(&mut bs, b), (1, 0b0100, vec![0, 0, 0, 0]));
    assert_eq!(bs.object_version(b), 1);
}

#[test]
fn zero_length_writes_fill_and_trim_the_journal() {
    // Many more versions than the journal holds at once: they must be flushed and trimmed.
    let mut bs = open_sim(&cfg(), sim_disks(&cfg(), 2 << 20), 7);
    let a = oid(3);
    write(&mut bs, a, 0, write_buf(9, 0, 4), None, true);
    for i in 0..3000u32 {
        // The low bits (the granules) stay set: only the unused high bits change.
        write(
            &mut bs,
            a,
            0,
            AlignedBuf::new(0),
            Some((i as u8) << 4 | 0x0f),
            true,
        );
        if i % 64 == 63 {
            bs.exec(BsOp::Sync).unwrap();
        }
    }
    flush(&mut bs);
    assert!(bs.stats().trims > 0);
    bs = restart(bs, 8);
    assert_eq!(read(&mut bs, a), (3001, 0x7f, vec![9, 9, 9, 9]));
}

#[test]
fn attr_is_kept_apart_from_the_allocation_bitmap() {
    let mut bs = open_sim(&cfg(), sim_disks(&cfg(), 2 << 20), 11);
    let a = oid(4);
    // A parity-like part: every granule holds bytes, the attr says something else.
    write(&mut bs, a, 0, write_buf(1, 0, 4), Some(0b0101), false);
    assert_eq!(read(&mut bs, a), (1, 0b0101, vec![1, 1, 1, 1]));
    // A partial write with an attr unchanged outside its range keeps the other granules.
    write(&mut bs, a, 1, write_buf(2, 1, 1), Some(0b0111), false);
    assert_eq!(read(&mut bs, a), (2, 0b0111, vec![1, 2, 1, 1]));
    bs.exec(BsOp::Sync).unwrap();
    bs = restart(bs, 12);
    assert_eq!(read(&mut bs, a), (2, 0b0111, vec![1, 2, 1, 1]));
    bs.exec(BsOp::Stabilize(vec![ObjVerId::new(a, 2)])).unwrap();
    flush(&mut bs);
    assert_eq!(read(&mut bs, a), (2, 0b0111, vec![1, 2, 1, 1]));
    bs = restart(bs, 13);
    assert_eq!(read(&mut bs, a), (2, 0b0111, vec![1, 2, 1, 1]));
    // Without an attr: the previous external bitmap plus the written range.
    write(&mut bs, a, 3, write_buf(3, 3, 1), None, true);
    assert_eq!(read(&mut bs, a), (3, 0b1111, vec![1, 2, 1, 3]));
    flush(&mut bs);
    bs = restart(bs, 14);
    assert_eq!(read(&mut bs, a), (3, 0b1111, vec![1, 2, 1, 3]));
    // A full rewrite with an attr: the attr as given, the data all there.
    write(&mut bs, a, 0, write_buf(4, 0, 4), Some(0), true);
    assert_eq!(read(&mut bs, a), (4, 0, vec![4, 4, 4, 4]));
    flush(&mut bs);
    bs = restart(bs, 15);
    assert_eq!(read(&mut bs, a), (4, 0, vec![4, 4, 4, 4]));
}

#[test]
fn granules_an_attr_clears_read_as_zeroes() {
    // The replicated pools' tombstone: one zero granule with an empty attr. Granules whose
    // external bit the write clears are gone, before and after a flush.
    let mut bs = open_sim(&cfg(), sim_disks(&cfg(), 2 << 20), 21);
    let a = oid(5);
    write(&mut bs, a, 0, write_buf(1, 0, 4), None, true);
    flush(&mut bs);
    write(&mut bs, a, 0, AlignedBuf::new(GRAN as usize), Some(0), true);
    assert_eq!(read(&mut bs, a), (2, 0, vec![0, 0, 0, 0]));
    bs = restart(bs, 22);
    assert_eq!(read(&mut bs, a), (2, 0, vec![0, 0, 0, 0]));
    flush(&mut bs);
    assert_eq!(read(&mut bs, a), (2, 0, vec![0, 0, 0, 0]));
    bs = restart(bs, 23);
    assert_eq!(read(&mut bs, a), (2, 0, vec![0, 0, 0, 0]));
    // Only the bits it clears: a partial clear keeps the rest.
    write(&mut bs, a, 0, write_buf(3, 0, 4), None, true);
    write(&mut bs, a, 3, AlignedBuf::new(0), Some(0b0110), true);
    assert_eq!(read(&mut bs, a), (4, 0b0110, vec![0, 3, 3, 0]));
    flush(&mut bs);
    bs = restart(bs, 24);
    assert_eq!(read(&mut bs, a), (4, 0b0110, vec![0, 3, 3, 0]));
}

#[test]
fn misaligned_zero_length_write_is_refused() {
    let mut bs = open_sim(&cfg(), sim_disks(&cfg(), 2 << 20), 31);
    for offset in [100, BLOCK + GRAN] {
        let r = bs.exec(BsOp::Write {
            oid: oid(6),
            version: 0,
            offset,
            data: AlignedBuf::new(0),
            bitmap: None,
            stable: true,
        });
        assert!(matches!(r, Err(BsError::Invalid(_))), "{r:?}");
    }
}

#[test]
fn older_format_is_refused_clearly() {
    let cfg = cfg();
    let mut disks: Vec<SimDisk> = sim_disks(&cfg, 2 << 20);
    // Format version 1 (one bitmap per version) in the metadata area's superblock.
    let meta = 0usize;
    disks[0].durable[meta + 8..meta + 12].copy_from_slice(&1u32.to_le_bytes());
    let (_, devs) = device_paths(&cfg);
    let e = match Blockstore::open_with(SimEngine::new(disks, 1), devs, &cfg) {
        Ok(_) => panic!("a format-1 store opened"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("format version 1"), "{e}");
    assert!(e.contains("older"), "{e}");
}
