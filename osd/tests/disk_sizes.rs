//! `vitastor-disk` takes sizes in the grammar every other program takes
//! (`vitastor-cli create -s 1GiB`): `KiB`/`MiB`, `MB`, hexadecimal.

use std::collections::HashMap;
use std::process::Command;

#[test]
fn prepare_takes_the_shared_size_grammar() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = dir.path().join("osd.img");
    let out = Command::new(env!("CARGO_BIN_EXE_vitastor-disk"))
        .args(["prepare", "--data_device"])
        .arg(&img)
        .args([
            "--size",
            "0x4000000",
            "--journal_size",
            "4MiB",
            "--block_size",
            "64KiB",
            "--bitmap_granularity",
            "4KB",
        ])
        .output()
        .expect("run vitastor-disk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vitastor-disk prepare: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opts: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("--")?.split_once(' '))
        .collect();
    assert_eq!(opts["journal_size"], (4 << 20).to_string(), "{text}");
    assert_eq!(opts["block_size"], (64 << 10).to_string(), "{text}");
    assert_eq!(opts["bitmap_granularity"], "4096", "{text}");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);
}
