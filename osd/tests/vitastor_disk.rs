//! `vitastor-disk` end to end: the built binary on files it creates. Prepare, inspect, open the
//! prepared store with the real io_uring engine, and check that every bad input fails with a
//! clear message and exit status instead of a panic.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use vitastor_blockstore::{
    AlignedBuf, Blockstore, BlockstoreConfig, BsOp, BsReply, ObjectId, NEWEST,
};

const INODE: u64 = 0x1000000000001;

fn tmpdir() -> tempfile::TempDir {
    // Integration tests get a directory on the target's file system (O_DIRECT works there).
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn disk(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_vitastor-disk"))
        .args(args)
        .output()
        .expect("run vitastor-disk");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "vitastor-disk {args:?} panicked: {stderr}"
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run and require success; returns stdout.
fn ok(args: &[&str]) -> String {
    let o = disk(args);
    assert!(
        o.status.success(),
        "vitastor-disk {args:?} failed: {}",
        stderr(&o)
    );
    stdout(&o)
}

/// Run and require a clean failure (exit 1, message on stderr containing `msg`).
fn fails(args: &[&str], msg: &str) {
    let o = disk(args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "vitastor-disk {args:?}: stdout {} stderr {}",
        stdout(&o),
        stderr(&o)
    );
    let e = stderr(&o);
    assert!(
        e.starts_with("vitastor-disk: ") && e.contains(msg),
        "vitastor-disk {args:?}: expected {msg:?} in {e:?}"
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 256 MiB sparse file prepared with default geometry; returns its path and the config.
fn prepared(dir: &Path) -> (PathBuf, PathBuf) {
    let img = dir.join("osd.img");
    let cfg = dir.join("osd.json");
    ok(&[
        "prepare",
        "--data_device",
        s(&img),
        "--size",
        "256M",
        "--write_config",
        s(&cfg),
    ]);
    (img, cfg)
}

fn open(cfg: &Path) -> Blockstore<vitastor_blockstore::uring::UringEngine> {
    let text = std::fs::read_to_string(cfg).unwrap();
    let map: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    Blockstore::open(&BlockstoreConfig::from_map(&map).unwrap()).expect("open the prepared store")
}

fn write(
    bs: &mut Blockstore<vitastor_blockstore::uring::UringEngine>,
    stripe: u64,
    offset: u32,
    fill: u8,
) -> u64 {
    let mut data = AlignedBuf::new(4096);
    data.fill(fill);
    let oid = ObjectId::new(INODE, stripe);
    match bs
        .exec(BsOp::Write {
            oid,
            version: 0,
            offset,
            data,
            bitmap: None,
            stable: true,
        })
        .unwrap()
    {
        BsReply::Written { version, .. } => version,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn prepare_inspect_open_write_and_dump() {
    let dir = tmpdir();
    let (img, cfg) = prepared(dir.path());
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 256 << 20);

    let sb = ok(&["read-sb", "--data_device", s(&img)]);
    assert!(
        sb.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["block_size", "131072"]),
        "{sb}"
    );
    assert!(sb.contains("data_superblock      ok"), "{sb}");
    let sbj = json(&ok(&[
        "read-sb",
        "--data_device",
        s(&img),
        "--json",
        "--block_size",
        "128K",
    ]));
    assert_eq!(sbj["block_size"], 131072);
    assert_eq!(sbj["format_version"], 2);
    assert_eq!(sbj["meta_entry_size"], 64);
    assert_eq!(sbj["uuid"].as_str().unwrap().len(), 32);

    // The written config opens the store, and data survives a write, sync and flush.
    let mut bs = open(&cfg);
    assert_eq!(bs.layout().block_size, 131072);
    assert_eq!(
        write(&mut bs, 0, 0, 0xaa),
        1,
        "first write of a new object (redirect)"
    );
    assert_eq!(
        write(&mut bs, 0, 8192, 0xbb),
        2,
        "small write to the existing object (journaled)"
    );
    bs.exec(BsOp::Sync).unwrap();
    drop(bs);

    let jt = ok(&["dump-journal", "--data_device", s(&img)]);
    let obj = format!("{INODE:#x}:0x0");
    assert!(
        jt.lines()
            .any(|l| l.contains(" big_write ") && l.contains(&obj) && l.contains("v=1")),
        "{jt}"
    );
    assert!(
        jt.lines().any(|l| l.contains(" small_write ")
            && l.contains(&obj)
            && l.contains("v=2 off=8192 len=4096")),
        "{jt}"
    );
    assert!(
        jt.lines()
            .any(|l| l.contains(" commit ") && l.contains(&obj)),
        "{jt}"
    );
    assert!(jt.contains("the log ends at journal offset"), "{jt}");
    let jj = json(&ok(&["dump-journal", "--data_device", s(&img), "--json"]));
    let entries = jj["entries"].as_array().unwrap();
    assert_eq!(jj["summary"]["entries"], entries.len());
    let small = entries
        .iter()
        .find(|e| e["kind"] == "small_write")
        .expect("a small write entry");
    assert_eq!(small["inode"], "0x1000000000001");
    assert_eq!(small["version"], 2);
    assert_eq!(small["stable"], true);
    // Nothing is flushed yet: the metadata area is still empty.
    assert!(ok(&["dump-meta", "--data_device", s(&img)]).starts_with("0 entries, 0 corrupted"));

    let mut bs = open(&cfg);
    bs.flush_all().unwrap();
    let read = bs
        .exec(BsOp::Read {
            oid: ObjectId::new(INODE, 0),
            version: NEWEST,
            offset: 0,
            len: 16384,
        })
        .unwrap();
    let BsReply::Read { version, data, .. } = read else {
        panic!("unexpected reply {read:?}")
    };
    assert_eq!(version, 2);
    assert!(
        data[..4096].iter().all(|&b| b == 0xaa) && data[8192..12288].iter().all(|&b| b == 0xbb)
    );
    assert!(data[4096..8192].iter().all(|&b| b == 0));
    drop(bs);

    let mt = ok(&["dump-meta", "--data_device", s(&img)]);
    let line = mt
        .lines()
        .find(|l| l.contains(&format!("inode={INODE:#x} stripe=0x0")))
        .unwrap_or_else(|| panic!("{mt}"));
    assert!(
        line.contains("version=2") && line.ends_with(" bitmap=05000000 ext_bitmap=05000000"),
        "{line}"
    );
    assert!(mt.contains("1 entries, 0 corrupted"), "{mt}");
    let mj = json(&ok(&["dump-meta", "--data_device", s(&img), "--json"]));
    assert_eq!(mj["count"], 1);
    assert_eq!(mj["entries"][0]["version"], 2);
    assert_eq!(mj["entries"][0]["bitmap"], "05000000");
    assert_eq!(mj["entries"][0]["ext_bitmap"], "05000000");

    // After the flush the journal was trimmed; the old entries are only visible with --all.
    let all = json(&ok(&[
        "dump-journal",
        "--data_device",
        s(&img),
        "--json",
        "--all",
    ]));
    let stale = all["stale"].as_array().unwrap();
    assert!(
        stale
            .iter()
            .any(|e| e["kind"] == "big_write" && e["live"] == false),
        "{all:#}"
    );

    // An existing store is never overwritten by accident.
    fails(
        &["prepare", "--data_device", s(&img)],
        "refusing to overwrite",
    );
    assert!(ok(&["dump-meta", "--data_device", s(&img)]).contains("1 entries"));
    let opts = json(&ok(&[
        "prepare",
        "--data_device",
        s(&img),
        "--force",
        "--json",
        "--journal_size",
        "16M",
    ]));
    assert_eq!(opts["journal_size"], 16 << 20);
    assert!(ok(&["dump-meta", "--data_device", s(&img)]).starts_with("0 entries"));
}

/// `prepare --size` reserves every block of the file it creates or grows, as a block device
/// has them: the first write to a hole of a sparse file makes the host file system allocate,
/// which io_uring cannot do without blocking (every such write went to a kernel worker
/// thread), and a host file system that fills up would fail the OSD's writes long after the
/// store was prepared instead of failing `prepare`.
#[test]
fn prepare_size_reserves_the_whole_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = tmpdir();
    let (img, _) = prepared(dir.path());
    let m = std::fs::metadata(&img).unwrap();
    assert_eq!(m.len(), 256 << 20);
    assert!(
        m.blocks() * 512 >= m.len(),
        "{} of {} bytes allocated",
        m.blocks() * 512,
        m.len()
    );
    // Growing an existing (sparse) file reserves the new part too.
    let grown = dir.path().join("grown.img");
    std::fs::File::create(&grown)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    ok(&["prepare", "--data_device", s(&grown), "--size", "128M"]);
    let m = std::fs::metadata(&grown).unwrap();
    assert_eq!(m.len(), 128 << 20);
    assert!(
        m.blocks() * 512 >= m.len(),
        "{} allocated",
        m.blocks() * 512
    );
}

#[test]
fn prepare_prints_osd_options() {
    let dir = tmpdir();
    let img = dir.path().join("osd.img");
    let text = ok(&[
        "prepare",
        "--data_device",
        s(&img),
        "--size",
        "64M",
        "--journal_size",
        "4M",
        "--block_size",
        "64K",
    ]);
    let mut opts = std::collections::HashMap::new();
    for l in text.lines() {
        let (k, v) = l
            .strip_prefix("--")
            .and_then(|l| l.split_once(' '))
            .unwrap_or_else(|| panic!("bad line {l:?}"));
        opts.insert(k.to_string(), v.to_string());
    }
    for k in [
        "data_device",
        "meta_device",
        "journal_device",
        "data_offset",
        "meta_offset",
        "journal_offset",
        "data_size",
        "meta_size",
    ] {
        assert!(opts.contains_key(k), "{k} missing: {text}");
    }
    assert_eq!(opts["block_size"], "65536");
    assert_eq!(opts["journal_size"], "4194304");
    assert!(Path::new(&opts["data_device"]).is_absolute());
    // The printed lines are valid OSD options: they open the store.
    let map = opts
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let mut bs = Blockstore::open(&BlockstoreConfig::from_map(&map).unwrap()).unwrap();
    assert_eq!(bs.layout().block_size, 65536);
    bs.exec(BsOp::Sync).unwrap();
}

#[test]
fn separate_meta_and_journal_devices() {
    let dir = tmpdir();
    let (data, meta, journal) = (
        dir.path().join("data.img"),
        dir.path().join("meta.img"),
        dir.path().join("journal.img"),
    );
    for (p, size) in [(&meta, 1u64 << 20), (&journal, 8 << 20)] {
        std::fs::File::create(p).unwrap().set_len(size).unwrap();
    }
    let cfg = dir.path().join("osd.json");
    let common = [
        "--data_device",
        s(&data),
        "--meta_device",
        s(&meta),
        "--journal_device",
        s(&journal),
    ];
    let mut args = vec![
        "prepare",
        "--size",
        "128M",
        "--journal_size",
        "4M",
        "--write_config",
        s(&cfg),
    ];
    args.extend(common);
    ok(&args);
    let sb = json(&ok(&[&["read-sb", "--json"][..], &common].concat()));
    assert_eq!(
        sb["data_offset"], 0,
        "a data device of its own starts with the data area"
    );
    assert!(sb["meta_device"].as_str().unwrap().ends_with("meta.img"));
    assert!(sb["journal_device"]
        .as_str()
        .unwrap()
        .ends_with("journal.img"));
    let mut bs = open(&cfg);
    write(&mut bs, 1 << 17, 0, 1);
    bs.exec(BsOp::Sync).unwrap();
    drop(bs);
    let jt = ok(&[&["dump-journal"][..], &common].concat());
    assert!(jt.contains(&format!("{INODE:#x}:0x20000")), "{jt}");
    // The inspection tools need the right devices: the data device alone has no superblock.
    fails(
        &["read-sb", "--data_device", s(&data)],
        "devices or offsets swapped?",
    );
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tmpdir();
    let missing = dir.path().join("missing.img");
    for cmd in ["read-sb", "dump-journal", "dump-meta"] {
        fails(
            &[cmd, "--data_device", s(&missing)],
            "No such file or directory",
        );
    }
    fails(
        &["prepare", "--data_device", s(&missing)],
        "use --size to create a file",
    );

    // Random bytes are not a store.
    let junk = dir.path().join("junk.img");
    let mut bytes = vec![0u8; 8 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&junk, &bytes).unwrap();
    for cmd in ["read-sb", "dump-journal", "dump-meta"] {
        fails(
            &[cmd, "--data_device", s(&junk)],
            "no vitastor-rs superblock",
        );
    }
    let err = Blockstore::open(&BlockstoreConfig::new(&junk))
        .err()
        .expect("junk must not open")
        .to_string();
    assert!(err.contains("no vitastor-rs superblock"), "{err}");
    // Too small for any store: prepare explains instead of writing.
    let tiny = dir.path().join("tiny.img");
    fails(
        &["prepare", "--data_device", s(&tiny), "--size", "1M"],
        "configuration error",
    );

    // Options that contradict the superblock are named, by the tool and by the OSD.
    let (img, cfg) = prepared(dir.path());
    fails(
        &["read-sb", "--data_device", s(&img), "--block_size", "1M"],
        "block_size=1048576 but the device was prepared with block_size=131072",
    );
    fails(
        &[
            "dump-meta",
            "--data_device",
            s(&img),
            "--journal_size",
            "1M",
        ],
        "journal_size=1048576 but the superblock says",
    );
    let mut c = BlockstoreConfig::new(&img);
    c.block_size = Some(1 << 20);
    let err = Blockstore::open(&c)
        .err()
        .expect("mismatched block_size must not open")
        .to_string();
    assert!(err.contains("block_size=1048576"), "{err}");

    // Bad arguments are usage errors (exit 2).
    for args in [
        &["read-sb"][..],
        &["read-sb", "--data_device", s(&img), "--block_size", "12Q"],
        &["frobnicate"],
    ] {
        assert_eq!(disk(args).status.code(), Some(2), "{args:?}");
    }

    // A truncated device: the superblock is there, the areas are not.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    for cmd in ["read-sb", "dump-journal", "dump-meta"] {
        fails(&[cmd, "--data_device", s(&img)], "truncated device?");
    }
    let text = std::fs::read_to_string(&cfg).unwrap();
    let map: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    let err = Blockstore::open(&BlockstoreConfig::from_map(&map).unwrap())
        .err()
        .expect("truncated store must not open")
        .to_string();
    assert!(err.contains("truncated device?"), "{err}");
    // Truncated below the superblock itself.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(100)
        .unwrap();
    fails(
        &["read-sb", "--data_device", s(&img)],
        "there is no superblock at offset 0",
    );
}

#[test]
fn damaged_metadata_and_journal_are_reported() {
    let dir = tmpdir();
    let (img, cfg) = prepared(dir.path());
    let mut bs = open(&cfg);
    write(&mut bs, 0, 0, 7);
    write(&mut bs, 1 << 17, 0, 8);
    bs.exec(BsOp::Sync).unwrap();
    bs.flush_all().unwrap();
    let layout = bs.layout().clone();
    drop(bs);

    let mj = json(&ok(&["dump-meta", "--data_device", s(&img), "--json"]));
    assert_eq!(mj["count"], 2);
    let block = mj["entries"][1]["block"].as_u64().unwrap();
    let (mb, off) = layout.meta_pos(block);
    let at = layout.meta.offset + mb * layout.meta_block_size as u64 + off as u64 + 16;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x40], at).unwrap();

    let o = disk(&["dump-meta", "--data_device", s(&img)]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("block={block} CORRUPTED (checksum mismatch)")),
        "{out}"
    );
    assert!(out.contains("1 entries, 1 corrupted"), "{out}");
    assert!(
        stderr(&o).contains(&format!(
            "1 corrupted metadata entries (checksum mismatch) for data blocks {block}"
        )),
        "{}",
        stderr(&o)
    );
    let o = disk(&["dump-meta", "--data_device", s(&img), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json(&stdout(&o))["corrupted"][0], block);

    // A damaged journal header stops dump-journal with a clear message.
    f.write_all_at(&[0xff; 8], layout.journal.offset + 40)
        .unwrap();
    fails(
        &["dump-journal", "--data_device", s(&img)],
        "journal header checksum mismatch",
    );
    // A damaged superblock copy in the data area fails read-sb after printing what it found.
    f.write_all_at(&[0xff; 4], layout.data.offset + 32).unwrap();
    let o = disk(&["read-sb", "--data_device", s(&img)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("data_superblock      damaged:"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("data area superblock copy"),
        "{}",
        stderr(&o)
    );
}
