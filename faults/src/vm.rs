//! The VM scenarios (issue #16: "one with a TCG VM doing a checksum loop on its disk"): a
//! VM (testkit's `vm`: Debian's kernel, busybox, TCG here) whose `/init` is
//! `checksum_guest.sh` runs on a `vitastor:` disk through our QEMU driver while the scenario
//! injects faults. The guest writes, reads back and records rounds of random data; the
//! host follows its console ([`crate::guest_console`]) for the longest pause, then reads
//! the disk through the driver and checks that every slot holds what the last round on it
//! acknowledged.
//!
//! Boot happens before the fault timer starts (TCG takes seconds to boot). The guest runs
//! [`TAIL`] longer than the faults, so it sees the last fault's pause and then a healthy
//! cluster. QEMU is SIGKILLed by its PID when a scenario fails (testkit's `Guest`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use vitastor_testkit::vm::{self, Guest, Tail};
use vitastor_testkit::{artifacts, process, require, require_tools, Cluster};

use crate::duration::fault_time;
use crate::figures::Figures;
use crate::guest_console::{Console, Expected};
use crate::scenario::{pause_until, rng};

/// The guest's `/init`.
const GUEST_INIT: &str = include_str!("checksum_guest.sh");

/// The disk's layout, handed to the guest on its kernel command line: record block `s` (4
/// KiB) at `s * RECORD`, slot `s` at `(DATA_BLOCK + s * SLOT_BLOCKS) * BLOCK`; a slot spans
/// four 128 KiB objects, so each round writes to several PGs.
const SLOTS: u64 = 8;
const BLOCK: u64 = 64 << 10;
const SLOT_BLOCKS: u64 = 8;
const DATA_BLOCK: u64 = 16;
const RECORD: u64 = 4096;
const DISK_SIZE: u64 = 16 << 20;
const IMAGE: &str = "vmdisk";

/// How long the guest keeps looping after the faults stop.
pub const TAIL: Duration = Duration::from_secs(10);
/// The longest a TCG boot may take until the first round.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest the guest may take to end once the faults stopped (a round may still wait
/// out the last restart's recovery).
const FINISH_TIMEOUT: Duration = Duration::from_secs(300);
/// Reading the disk back after the run.
const READ_TIMEOUT: Duration = Duration::from_secs(180);
/// How often the console file is read: the resolution of the pause figure.
const POLL: Duration = Duration::from_millis(50);

/// What a finished guest did and what its disk holds.
#[derive(Debug)]
pub struct Outcome {
    /// Its console, complete.
    pub console: Console,
    /// QEMU's exit status.
    pub status: ExitStatus,
    /// Slots whose data or record differs from what the last round on them acknowledged,
    /// one description each.
    pub lost: Vec<String>,
    /// The console's last lines, for failure messages.
    pub tail: String,
}

/// The console file read on a thread as it grows, each line timed as it arrives.
struct Watcher {
    console: Arc<Mutex<Console>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(path: &Path) -> Watcher {
        let mut tail = Tail::open(path).expect("opening the guest's console");
        let console = Arc::new(Mutex::new(Console::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (console, stop) = (console.clone(), stop.clone());
            thread::spawn(move || loop {
                // Read once more after the stop, so nothing the guest wrote is missed.
                let last = stop.load(Ordering::Relaxed);
                let lines = tail.lines().expect("reading the guest's console");
                let now = Instant::now();
                let mut c = console.lock().expect("console");
                for l in &lines {
                    c.line(l, now);
                }
                drop(c);
                if last {
                    break;
                }
                thread::sleep(POLL);
            })
        };
        Watcher {
            console,
            stop,
            thread: Some(thread),
        }
    }

    fn first_round_seen(&self) -> bool {
        self.console
            .lock()
            .expect("console")
            .first_round_at
            .is_some()
    }

    /// Stops the thread after a last read; returns the console.
    fn finish(mut self) -> Console {
        self.join();
        std::mem::take(&mut *self.console.lock().expect("console"))
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.join();
    }
}

/// A booted checksum guest. Dropping it kills QEMU.
pub struct ChecksumVm {
    guest: Guest,
    watcher: Watcher,
    spec: String,
    driver: PathBuf,
    dir: tempfile::TempDir,
}

/// `vitastor:image=NAME:etcd_host=127.0.0.1\:PORT/v3`.
fn image_spec(cluster: &Cluster, name: &str) -> String {
    format!(
        "vitastor:image={name}:etcd_host={}",
        cluster.etcd_address().replace(':', "\\:")
    )
}

/// Private copies of the driver and the libvitastor.so it loads (`$ORIGIN`): a rebuild of
/// `target/` during a scenario must not swap the libraries under QEMU.
fn private_driver(dir: &Path) -> PathBuf {
    let so = vm::driver().unwrap_or_else(|e| panic!("{e}"));
    let client = artifacts::fresh_path("libvitastor.so");
    fs::copy(&client, dir.join("libvitastor.so.0")).expect("copying libvitastor.so");
    let copy = dir.join("block-vitastor.so");
    fs::copy(&so, &copy).expect("copying block-vitastor.so");
    copy
}

impl ChecksumVm {
    /// Creates the guest's image on `cluster`, boots the guest to loop for `loop_time` and
    /// returns once its first round is on the console.
    pub fn boot(cluster: &Cluster, assets: &Path, loop_time: Duration) -> ChecksumVm {
        let dir = tempfile::Builder::new()
            .prefix("vitastor-vm-")
            .tempdir()
            .expect("temp dir for the VM");
        let driver = private_driver(dir.path());
        cluster
            .create_image(IMAGE, DISK_SIZE)
            .expect("creating the guest's image");
        let spec = image_spec(cluster, IMAGE);
        let initrd =
            vm::initramfs(assets, dir.path(), GUEST_INIT, &[]).expect("building the initramfs");
        let env = format!(
            "vm_secs={} vm_slots={SLOTS} vm_slot_blocks={SLOT_BLOCKS} vm_data_block={DATA_BLOCK}",
            loop_time.as_secs()
        );
        let console = dir.path().join("console");
        let started = Instant::now();
        let guest = Guest::spawn(
            &vm::qemu_args(assets, &initrd, &env, &spec),
            &driver,
            &console,
        )
        .expect("starting the VM");
        let watcher = Watcher::start(&console);
        let mut vm = ChecksumVm {
            guest,
            watcher,
            spec,
            driver,
            dir,
        };
        while !vm.watcher.first_round_seen() {
            if let Some(status) = vm.guest.try_wait().expect("waiting for QEMU") {
                panic!(
                    "the VM ended before its first round ({status}):\n{}",
                    vm.diagnostics()
                );
            }
            assert!(
                started.elapsed() < BOOT_TIMEOUT,
                "no round after {BOOT_TIMEOUT:?} of boot:\n{}",
                vm.diagnostics()
            );
            thread::sleep(POLL);
        }
        println!(
            "vm: -accel {} booted to its first round in {:.1} s",
            vm::accel(),
            started.elapsed().as_secs_f64()
        );
        vm
    }

    /// The console's last lines and QEMU's stderr.
    fn diagnostics(&self) -> String {
        let text = fs::read_to_string(self.guest.console()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "console (last lines):\n{tail}\nqemu stderr:\n{}",
            self.guest.stderr()
        )
    }

    /// Waits for the guest to power off, then checks its disk through the driver.
    pub fn finish(mut self) -> Outcome {
        let deadline = Instant::now() + FINISH_TIMEOUT;
        let status = loop {
            if let Some(status) = self.guest.try_wait().expect("waiting for QEMU") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the VM did not finish within {FINISH_TIMEOUT:?} after the faults:\n{}",
                self.diagnostics()
            );
            thread::sleep(POLL);
        };
        let tail = self.diagnostics();
        let ChecksumVm {
            guest,
            watcher,
            spec,
            driver,
            dir,
        } = self;
        drop(guest);
        let console = watcher.finish();
        let disk = read_disk(&spec, &driver, dir.path());
        let lost = lost_writes(&disk, &console, |data| {
            vm::md5(data, dir.path()).expect("md5 of the disk's data")
        });
        Outcome {
            console,
            status,
            lost,
            tail,
        }
    }
}

/// The whole disk `spec`, read through `driver` (via a copy in `dir`).
fn read_disk(spec: &str, driver: &Path, dir: &Path) -> Vec<u8> {
    let copy = dir.join("disk.raw");
    let out = process::output_within(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw", spec])
            .arg(&copy)
            .env("LD_PRELOAD", driver)
            .stdin(Stdio::null()),
        READ_TIMEOUT,
    )
    .expect("reading the guest's disk");
    assert!(
        out.status.success(),
        "qemu-img convert of the guest's disk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read(&copy).expect("reading the disk copy")
}

/// Every slot of `disk` against the last round on it (`console`): the data's checksum
/// (`md5` of the slot's bytes) and the record block. One description per slot that lost
/// what was acknowledged.
fn lost_writes(disk: &[u8], console: &Console, md5: impl Fn(&[u8]) -> String) -> Vec<String> {
    let mut lost = Vec::new();
    for (&slot, expected) in &console.slots {
        let Expected::Data {
            round,
            md5: want,
            record,
        } = expected
        else {
            continue;
        };
        let start = ((DATA_BLOCK + slot * SLOT_BLOCKS) * BLOCK) as usize;
        let got = md5(&disk[start..start + (SLOT_BLOCKS * BLOCK) as usize]);
        if &got != want {
            lost.push(format!(
                "slot {slot}: round {round} wrote md5 {want}, disk has {got}"
            ));
            continue;
        }
        let line = format!("VMREC slot={slot} round={round} md5={want}\n");
        let rec = &disk[(slot * RECORD) as usize..((slot + 1) * RECORD) as usize];
        if *record && !rec.starts_with(line.as_bytes()) {
            let end = rec.iter().position(|&b| b == b'\n' || b == 0).unwrap_or(80);
            lost.push(format!(
                "slot {slot}: record of round {round} missing, disk has {:?}",
                String::from_utf8_lossy(&rec[..end.min(80)])
            ));
        }
    }
    lost
}

/// One VM scenario: `cluster` is started, the guest boots, then `inject` runs every 5–15 s
/// for [`fault_time`]; the figures line is printed (VM rounds instead of fio runs) and the
/// scenario fails on a failed or bad round, a lost write, a guest that did not finish or
/// an I/O error in its kernel log — never on a timing.
pub fn checksum_scenario(
    scenario: &'static str,
    cluster: impl FnOnce() -> Cluster,
    mut inject: impl FnMut(&mut Cluster, &mut StdRng),
) {
    if !require_tools(&[vm::QEMU_SYSTEM, "qemu-img", "md5sum"]) {
        return;
    }
    let Some(assets) = require(vm::assets()) else {
        return;
    };
    let mut cluster = cluster();
    let time = fault_time();
    let guest = ChecksumVm::boot(&cluster, &assets, time + TAIL);
    let mut rng = rng(scenario);
    let deadline = Instant::now() + time;
    let mut faults = 0;
    while pause_until(&mut rng, 5.0..15.0, deadline) {
        inject(&mut cluster, &mut rng);
        faults += 1;
    }
    let out = guest.finish();
    let c = &out.console;
    Figures {
        scenario: scenario.into(),
        duration: time,
        faults,
        longest_pause: c.longest_gap,
        verify_errors: c.verify_errors(),
        lost_writes: out.lost.len() as u64,
        vm_rounds: c.rounds,
        ..Figures::default()
    }
    .report();
    println!(
        "{scenario}: guest kernel {}; its log about I/O, timeouts, blocked tasks: {:?}",
        c.kernel.as_deref().unwrap_or("(no VM-KERNEL line)"),
        c.kernel_findings
    );
    assert!(
        out.status.success(),
        "{scenario}: QEMU exited with {}:\n{}",
        out.status,
        out.tail
    );
    assert!(
        c.complete(),
        "{scenario}: the guest did not finish its loop (summary {:?}, {} rounds seen):\n{}",
        c.summary,
        c.rounds,
        out.tail
    );
    assert!(c.rounds > 0, "{scenario}: no round");
    assert!(
        c.failures.is_empty(),
        "{scenario}: failed rounds: {:#?}",
        c.failures
    );
    assert!(
        out.lost.is_empty(),
        "{scenario}: acknowledged writes lost: {:#?}",
        out.lost
    );
    let io_errors: Vec<_> = c
        .kernel_findings
        .iter()
        .filter(|l| l.to_ascii_lowercase().contains("i/o error"))
        .collect();
    assert!(
        io_errors.is_empty(),
        "{scenario}: guest kernel I/O errors: {io_errors:#?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in checksum: the slot's first byte.
    fn first_byte(data: &[u8]) -> String {
        format!("{:02x}", data[0])
    }

    fn write_slot(disk: &mut [u8], slot: u64, round: u64, fill: u8) {
        let start = ((DATA_BLOCK + slot * SLOT_BLOCKS) * BLOCK) as usize;
        disk[start..start + (SLOT_BLOCKS * BLOCK) as usize].fill(fill);
        let rec = format!("VMREC slot={slot} round={round} md5={fill:02x}\n");
        let at = (slot * RECORD) as usize;
        disk[at..at + RECORD as usize].fill(0);
        disk[at..at + rec.len()].copy_from_slice(rec.as_bytes());
    }

    fn console(lines: &[&str]) -> Console {
        let mut c = Console::default();
        for l in lines {
            c.line(l, Instant::now());
        }
        c
    }

    #[test]
    fn a_disk_with_every_acknowledged_round_passes() {
        let mut disk = vec![0; DISK_SIZE as usize];
        write_slot(&mut disk, 1, 1, 0x11);
        write_slot(&mut disk, 2, 2, 0x22);
        write_slot(&mut disk, 1, 9, 0x99);
        let c = console(&[
            "VM-ROUND 1 ok slot=1 md5=11 got=11",
            "VM-ROUND 2 ok slot=2 md5=22 got=22",
            "VM-ROUND 9 ok slot=1 md5=99 got=99",
        ]);
        assert!(lost_writes(&disk, &c, first_byte).is_empty());
    }

    #[test]
    fn stale_data_or_a_missing_record_is_a_lost_write() {
        let mut disk = vec![0; DISK_SIZE as usize];
        // Slot 1 still holds round 1 though round 9 was acknowledged.
        write_slot(&mut disk, 1, 1, 0x11);
        // Slot 2 has round 10's data, but the record of round 2.
        write_slot(&mut disk, 2, 2, 0x22);
        let start = ((DATA_BLOCK + 2 * SLOT_BLOCKS) * BLOCK) as usize;
        disk[start] = 0xaa;
        // Slot 3's write failed: anything goes; slot 4's record write failed: data only.
        write_slot(&mut disk, 4, 3, 0x44);
        let c = console(&[
            "VM-ROUND 9 ok slot=1 md5=99 got=99",
            "VM-ROUND 10 ok slot=2 md5=aa got=aa",
            "VM-ROUND 11 EIO:write slot=3 md5=33 got=-",
            "VM-ROUND 12 EIO:record slot=4 md5=44 got=44",
        ]);
        let lost = lost_writes(&disk, &c, first_byte);
        assert_eq!(lost.len(), 2, "{lost:#?}");
        assert!(lost[0].starts_with("slot 1: round 9"), "{}", lost[0]);
        assert!(
            lost[1].starts_with("slot 2: record of round 10"),
            "{}",
            lost[1]
        );
    }
}
