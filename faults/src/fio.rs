//! fio through the real engine (`libfio_vitastor.so`), run again and again on background
//! threads while a scenario injects faults, then once more with `-verify_only` after the
//! faults stopped.
//!
//! Two loops run side by side on two areas, because neither verify mode catches everything
//! alone:
//! - `-verify=crc32c`: each block carries a header (offset, write number) and a checksum,
//!   checked when the run reads its area back;
//! - `-verify=pattern` with the run's number and the block's offset (`0x<seed>%o`): every
//!   byte is compared, so a block left from an earlier run — a write acknowledged but not
//!   stored — fails even in a `-verify_only` pass, which crc32c headers do not (fio skips
//!   their write-number check there; `tests/harness.rs`).
//!
//! Every run uses a new `-randseed`. The final `-verify_only` pass re-reads each loop's last
//! run. fio runs with
//! `-continue_on_error=verify`: its `total_err` counts the bad blocks instead of stopping at
//! the first. The longest client pause is fio's maximum completion latency over all runs.
//!
//! Only fio processes this module spawned are killed (by their handles), on abort or drop.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use vitastor_testkit::{artifacts, netns};

/// `/usr/bin/fio`, installed by `make setup`.
pub const FIO: &str = "/usr/bin/fio";

/// One run may wait out a whole-cluster restart; after this it is killed and counted failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// What fio reported, summed over runs.
#[derive(Debug, Default, Clone)]
pub struct FioFigures {
    /// Completed runs.
    pub runs: u64,
    /// Bad blocks found by verify (`total_err`).
    pub verify_errors: u64,
    /// Runs that failed otherwise (exit status, job error without a verify count, timeout);
    /// each with its stderr tail in [`FioFigures::failures`].
    pub failed_runs: u64,
    /// Longest completion latency of one I/O.
    pub longest_pause: Duration,
    /// Why runs failed.
    pub failures: Vec<String>,
}

/// The fio job: which image area, how large, how fast.
#[derive(Debug, Clone)]
pub struct FioJob {
    /// `127.0.0.1:PORT/v3`.
    pub etcd: String,
    /// Pool and inode number of the area.
    pub pool: u32,
    /// Inode number (without pool bits).
    pub inode: u64,
    /// Bytes written and verified per run.
    pub size: u64,
    /// `-rate` for writes (keeps the 2-core test machine responsive).
    pub rate: String,
    /// `-verify=pattern` with the run's number and offsets, else `-verify=crc32c`.
    pub pattern: bool,
    /// The engine fio loads (`libvitastor.so.0` beside it).
    pub engine: PathBuf,
    /// Run fio inside this network namespace (`None`: the test's own).
    pub netns: Option<String>,
}

impl FioJob {
    /// 16 MiB of 4 KiB random crc32c-verified writes at 4 MiB/s on inode 1 of pool 1, with
    /// the workspace's engine (built first when stale).
    pub fn new(etcd: String) -> FioJob {
        FioJob {
            etcd,
            pool: 1,
            inode: 1,
            size: 16 << 20,
            rate: "4m".into(),
            pattern: false,
            engine: artifacts::fresh_path("libfio_vitastor.so"),
            netns: None,
        }
    }

    fn command(&self, seed: u64, verify_only: bool, dir: &std::path::Path) -> Command {
        let mut cmd = Command::new(FIO);
        cmd.arg("-thread")
            .arg(format!("-ioengine={}", self.engine.display()))
            .arg(format!("-etcd={}", self.etcd))
            .arg(format!("-pool={}", self.pool))
            .arg(format!("-inode={}", self.inode))
            .arg(format!("-size={}", self.size))
            .arg(format!("-randseed={seed}"))
            .arg(format!("-rate={}", self.rate))
            .args(["-name=faults", "-direct=1", "-output-format=json", "-bs=4k"])
            .args(["-iodepth=16", "-rw=randwrite", "-continue_on_error=verify"])
            .stdin(Stdio::null())
            // fio leaves verify state files in its working directory.
            .current_dir(dir);
        if self.pattern {
            cmd.args([
                "-verify=pattern",
                &format!("-verify_pattern=0x{seed:08x}%o"),
            ]);
        } else {
            cmd.arg("-verify=crc32c");
        }
        if verify_only {
            cmd.arg("-verify_only");
        }
        if let Some(netns) = &self.netns {
            netns::enter_in_child(&mut cmd, netns).expect("entering fio's network namespace");
        }
        cmd
    }

    /// One run on its own: `seed` picks the data, `verify_only` only reads and checks it.
    pub fn run_once(&self, seed: u64, verify_only: bool) -> FioFigures {
        let mut figures = FioFigures::default();
        self.run(seed, verify_only, &AtomicBool::new(false), &mut figures);
        figures
    }

    /// One run, killed when `abort` is set or after [`RUN_TIMEOUT`]; adds to `figures`.
    fn run(&self, seed: u64, verify_only: bool, abort: &AtomicBool, figures: &mut FioFigures) {
        let dir = tempfile::tempdir().expect("temp dir for fio");
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        let mut cmd = self.command(seed, verify_only, dir.path());
        cmd.stdout(fs::File::create(&out).expect("fio stdout file"))
            .stderr(fs::File::create(&err).expect("fio stderr file"));
        let mut child = Reaped(cmd.spawn().expect("running fio"));
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = child.0.try_wait().expect("waiting for fio") {
                break Some(status);
            }
            if abort.load(Ordering::Relaxed) {
                return;
            }
            if Instant::now() > deadline {
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        drop(child);
        figures.runs += 1;
        let stdout = fs::read_to_string(&out).unwrap_or_default();
        let stderr = fs::read_to_string(&err).unwrap_or_default();
        let job = json_report(&stdout).map(|r| r["jobs"][0].clone());
        if let Some(job) = &job {
            for dir in ["write", "read"] {
                let max = job[dir]["clat_ns"]["max"].as_u64().unwrap_or(0);
                figures.longest_pause = figures.longest_pause.max(Duration::from_nanos(max));
            }
            figures.verify_errors += job["total_err"].as_u64().unwrap_or(0);
        }
        let job_error = job.as_ref().map(|j| j["error"] != 0).unwrap_or(true);
        let counted = job.as_ref().map(|j| j["total_err"] != 0).unwrap_or(false);
        let ok = matches!(status, Some(s) if s.success());
        if (!ok || job_error) && !counted {
            figures.failed_runs += 1;
            let tail: String = stderr
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .join(" | ");
            figures.failures.push(format!(
                "seed {seed}{}: {status:?}: {tail}",
                if verify_only { " (verify only)" } else { "" }
            ));
        }
    }
}

/// fio's final JSON report (fio may print warnings before it).
fn json_report(stdout: &str) -> Option<Value> {
    let start = stdout.find('{')?;
    serde_json::Deserializer::from_str(&stdout[start..])
        .into_iter::<Value>()
        .map_while(Result::ok)
        .last()
}

/// Our own fio child, killed and reaped when dropped while still running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// One loop of runs on one area.
struct Worker {
    job: FioJob,
    state: Arc<Mutex<(FioFigures, u64)>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(job: FioJob, stop: &Arc<AtomicBool>, abort: &Arc<AtomicBool>) -> Worker {
        let state = Arc::new(Mutex::new((FioFigures::default(), 0u64)));
        let thread = {
            let (job, stop, abort, state) =
                (job.clone(), stop.clone(), abort.clone(), state.clone());
            thread::spawn(move || {
                let mut seed = 1;
                while !stop.load(Ordering::Relaxed) && !abort.load(Ordering::Relaxed) {
                    let mut figures = state.lock().expect("fio figures").0.clone();
                    job.run(seed, false, &abort, &mut figures);
                    *state.lock().expect("fio figures") = (figures, seed);
                    seed += 1;
                }
            })
        };
        Worker {
            job,
            state,
            thread: Some(thread),
        }
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// fio runs on background threads (a crc32c loop and a pattern loop) until
/// [`FioLoop::finish`].
pub struct FioLoop {
    workers: Vec<Worker>,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    /// Private copies of the engine and libvitastor: a rebuild of `target/` during a long
    /// scenario must not swap the client library under it.
    _engine_dir: tempfile::TempDir,
}

impl FioLoop {
    /// Starts `job` with crc32c on its inode and with patterns on the next inode; each
    /// loop's next run starts as soon as one ends.
    pub fn start(job: FioJob) -> FioLoop {
        assert!(
            PathBuf::from(FIO).exists(),
            "{FIO} is missing (make setup installs it)"
        );
        let engine_dir = tempfile::tempdir().expect("temp dir for the engine");
        let client = artifacts::fresh_path("libvitastor.so");
        fs::copy(&client, engine_dir.path().join("libvitastor.so.0"))
            .expect("copying libvitastor.so");
        let engine = engine_dir.path().join("libfio_vitastor.so");
        fs::copy(&job.engine, &engine).expect("copying the fio engine");
        let job = FioJob { engine, ..job };
        let stop = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(AtomicBool::new(false));
        let pattern = FioJob {
            inode: job.inode + 1,
            pattern: true,
            ..job.clone()
        };
        let crc = FioJob {
            pattern: false,
            ..job
        };
        let workers = [crc, pattern]
            .into_iter()
            .map(|j| Worker::start(j, &stop, &abort))
            .collect();
        FioLoop {
            workers,
            stop,
            abort,
            _engine_dir: engine_dir,
        }
    }

    /// Lets the current runs complete, then verifies each loop's last run once more with
    /// `-verify_only` (the faults have stopped by now): returns the figures of every run
    /// and, separately, the bad blocks of those final passes.
    pub fn finish(mut self) -> (FioFigures, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = FioFigures::default();
        let mut lost = 0;
        for w in &mut self.workers {
            w.join();
            let (figures, last_seed) = w.state.lock().expect("fio figures").clone();
            let mut last = FioFigures::default();
            if last_seed > 0 {
                w.job.run(last_seed, true, &self.abort, &mut last);
            }
            lost += last.verify_errors;
            total.runs += figures.runs;
            total.verify_errors += figures.verify_errors;
            total.failed_runs += figures.failed_runs + last.failed_runs;
            total.failures.extend(figures.failures);
            total.failures.extend(last.failures);
            total.longest_pause = total
                .longest_pause
                .max(figures.longest_pause)
                .max(last.longest_pause);
        }
        (total, lost)
    }
}

/// Loops left running by a failed assertion kill their fio and end.
impl Drop for FioLoop {
    fn drop(&mut self) {
        self.abort.store(true, Ordering::Relaxed);
        for w in &mut self.workers {
            w.join();
        }
    }
}
