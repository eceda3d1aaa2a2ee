//! Crash test: a child process runs a random concurrent workload on a real file through
//! io_uring and reports every submission, completion and sync on a pipe; the parent kills it
//! with SIGKILL at a random moment, reopens the store (journal replay) and checks that every
//! durable write reads back and nothing reads back as garbage. Durability mode and runtime
//! options change at every restart. `VITASTOR_CRASH_POINTS` sets
//! the number of kills (200 in `make test`, more in `make test-long`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::workload::{verify, Checker, Event, Workload};
use rand::{Rng, SeedableRng};
use vitastor_blockstore::{Blockstore, BlockstoreConfig, ImmediateCommit};

const BLOCK: u32 = 32768;
const OBJECTS: u64 = 48;

fn cfg(path: &PathBuf, mode: ImmediateCommit) -> BlockstoreConfig {
    let mut c = BlockstoreConfig::new(path);
    c.block_size = Some(BLOCK);
    c.journal_size = Some(2 << 20);
    c.flusher_count = 4;
    c.immediate_commit = mode;
    c
}

/// Runtime options the parent draws for each child; they may change at every restart.
fn vary(c: &mut BlockstoreConfig, code: u64) {
    c.inmemory_metadata = code & 1 == 0;
    c.journal_no_same_sector_overwrites = code & 2 != 0;
    c.flusher_count = 1 + (code >> 2) as u32 % 8;
    c.flusher_batch = 1 + (code >> 8) as u32 % 40;
    // A killed process loses no completed write: as on a drive with power-loss protection.
    c.disable_data_fsync = code & (1 << 16) != 0;
}

fn mode_of(s: &str) -> ImmediateCommit {
    ImmediateCommit::parse(s).unwrap()
}

/// The child side: runs only when the parent sets `VITASTOR_CRASH_CHILD`.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var("VITASTOR_CRASH_CHILD") else {
        return;
    };
    let mode = mode_of(&std::env::var("VITASTOR_CRASH_MODE").unwrap());
    let seed: u64 = std::env::var("VITASTOR_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let first_id: u64 = std::env::var("VITASTOR_CRASH_FIRST_ID")
        .unwrap()
        .parse()
        .unwrap();
    let mut c = cfg(&PathBuf::from(path), mode);
    vary(&mut c, seed);
    let mut bs = Blockstore::open(&c).expect("child open");
    let mut w = Workload::new(OBJECTS, BLOCK, 1 + (seed % 32) as usize, seed, first_id);
    use std::io::Write;
    let out = std::io::stdout();
    // libtest has printed "test crash_child ... " without a newline: end that line first.
    out.lock().write_all(b"\n").unwrap();
    w.run(&mut bs, None, &mut |e| {
        let mut o = out.lock();
        o.write_all(e.line().as_bytes()).unwrap();
        o.flush().unwrap();
    });
}

#[test]
fn crash_kill9() {
    if std::env::var("VITASTOR_CRASH_CHILD").is_ok() {
        return;
    }
    let points: u64 = std::env::var("VITASTOR_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("osd.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    vitastor_blockstore::prepare::prepare(&cfg(&path, ImmediateCommit::None), false)
        .expect("prepare");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0xC0FFEE);
    let mut checker = Checker::new(false);
    let mut next_id = 1u64;
    let mut killed_busy = 0;
    for point in 0..points {
        let mode = [
            ImmediateCommit::All,
            ImmediateCommit::None,
            ImmediateCommit::Small,
        ][rng.gen_range(0..3)];
        checker.immediate = mode == ImmediateCommit::All;
        {
            let mut c = cfg(&path, mode);
            vary(&mut c, point * 7);
            let mut bs = Blockstore::open(&c)
                .unwrap_or_else(|e| panic!("crash point {point}: reopen failed: {e}"));
            if let Err(e) = verify(&mut bs, &mut checker, OBJECTS, BLOCK) {
                panic!("crash point {point}: {e}");
            }
        }
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("VITASTOR_CRASH_CHILD", &path)
            .env("VITASTOR_CRASH_MODE", mode.as_str())
            .env("VITASTOR_CRASH_SEED", rng.gen::<u64>().to_string())
            .env("VITASTOR_CRASH_FIRST_ID", next_id.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut events = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            // A line cut by the kill has no newline: it never happened as far as we know.
            while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 && line.ends_with(b"\n") {
                if let Some(e) =
                    Event::parse(std::str::from_utf8(&line[..line.len() - 1]).unwrap_or(""))
                {
                    if matches!(e, Event::Done { .. }) {
                        let _ = started_tx.send(());
                    }
                    events.push(e);
                }
                line.clear();
            }
            events
        });
        // Kill at a random moment after the workload is really running (a slow start must not
        // turn the test into a series of kills before the first write).
        let _ = started_rx.recv_timeout(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..100)));
        child.kill().expect("SIGKILL child");
        child.wait().unwrap();
        let events = reader.join().unwrap();
        if std::env::var("VITASTOR_TEST_DEBUG").is_ok() {
            eprintln!("point {point}: {} events", events.len());
        }
        if events.iter().any(|e| matches!(e, Event::Done { .. })) {
            killed_busy += 1;
        }
        for e in &events {
            checker.feed(e);
            if let Event::Write { id, .. } | Event::Delete { id, .. } | Event::SyncStart { id } = e
            {
                next_id = next_id.max(id + 1);
            }
        }
    }
    let mut bs = Blockstore::open(&cfg(&path, ImmediateCommit::None)).expect("final reopen");
    verify(&mut bs, &mut checker, OBJECTS, BLOCK).expect("final verify");
    assert!(
        killed_busy * 10 >= points * 9,
        "kills must hit a running workload ({killed_busy} of {points})"
    );
}
