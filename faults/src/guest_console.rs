//! The checksum guest's console (`checksum_guest.sh`), read line by line as it arrives:
//! its rounds and their outcome, the longest gap between two round lines (the longest
//! pause the guest saw), what each disk slot must hold afterwards (the last round on it
//! that was acknowledged), the guest's own summary and the block-layer messages of its
//! kernel log.
//!
//! Pure: lines and their arrival times in, state out. It never reads a file or touches a
//! process; `vm.rs` feeds it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the disk must hold in one slot after the run: the last round written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The round's data write was acknowledged: the slot holds data with this MD5, and
    /// (when `record`) its record block names the round and the MD5.
    Data {
        /// The round.
        round: u64,
        /// MD5 of the data written, lower-case hex.
        md5: String,
        /// The record write was acknowledged too.
        record: bool,
    },
    /// The round's data write failed: the slot's content is undefined.
    Unknown,
}

/// The guest's closing line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Rounds run.
    pub rounds: u64,
    /// Rounds whose data read back right.
    pub ok: u64,
    /// Rounds whose data read back wrong.
    pub bad: u64,
    /// Rounds where a read or write failed.
    pub eio: u64,
}

/// Everything the console said so far.
#[derive(Debug, Default)]
pub struct Console {
    /// Round lines seen.
    pub rounds: u64,
    /// Rounds whose data read back wrong.
    pub bad: u64,
    /// Rounds where a read or write failed.
    pub eio: u64,
    /// When the first round line arrived.
    pub first_round_at: Option<Instant>,
    /// Longest time between two consecutive round lines.
    pub longest_gap: Duration,
    /// Per slot, what the disk must hold.
    pub slots: BTreeMap<u64, Expected>,
    /// The guest's closing line, once it came.
    pub summary: Option<Summary>,
    /// The guest kernel's block timeout settings (its `VM-KERNEL` line).
    pub kernel: Option<String>,
    /// Lines of the guest's kernel log about I/O errors, timeouts or blocked tasks.
    pub kernel_findings: Vec<String>,
    /// The guest's kernel log was printed completely.
    pub dmesg_done: bool,
    /// Every failed round's line and every line that looked like a round but was not one.
    pub failures: Vec<String>,
    last_round_at: Option<Instant>,
    last_round: u64,
    in_dmesg: bool,
}

/// Kernel-log words that matter for a paused disk: an error reached the guest, a request
/// timed out, or a task waited long enough for the hung-task detector.
const KERNEL_SIGNS: [&str; 5] = [
    "i/o error",
    "timed out",
    "timeout",
    "blocked for more than",
    "hung_task",
];

fn field<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn number(words: &[&str], key: &str) -> Option<u64> {
    field(words, key)?.parse().ok()
}

impl Console {
    /// Takes one console line (without its line end) that arrived at `at`.
    pub fn line(&mut self, line: &str, at: Instant) {
        if self.in_dmesg {
            if line.contains("VM-DMESG-END") {
                self.in_dmesg = false;
                self.dmesg_done = true;
            } else {
                let lower = line.to_ascii_lowercase();
                if KERNEL_SIGNS.iter().any(|s| lower.contains(s)) {
                    self.kernel_findings.push(line.to_string());
                }
            }
        } else if let Some(at_round) = line.find("VM-ROUND ") {
            self.round(&line[at_round..], at);
        } else if let Some(i) = line.find("VM-SUMMARY ") {
            let words: Vec<&str> = line[i..].split_whitespace().collect();
            self.summary = Some(Summary {
                rounds: number(&words, "rounds").unwrap_or(u64::MAX),
                ok: number(&words, "ok").unwrap_or(u64::MAX),
                bad: number(&words, "bad").unwrap_or(u64::MAX),
                eio: number(&words, "eio").unwrap_or(u64::MAX),
            });
        } else if let Some(i) = line.find("VM-KERNEL ") {
            self.kernel = Some(line[i + "VM-KERNEL ".len()..].to_string());
        } else if line.contains("VM-DMESG-BEGIN") {
            self.in_dmesg = true;
        }
    }

    fn round(&mut self, line: &str, at: Instant) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let n = words.get(1).and_then(|w| w.parse::<u64>().ok());
        let status = words.get(2).copied();
        let slot = number(&words, "slot");
        let md5 = field(&words, "md5");
        let (Some(n), Some(status), Some(slot), Some(md5)) = (n, status, slot, md5) else {
            self.failures.push(format!("unreadable round line: {line}"));
            return;
        };
        if n != self.last_round + 1 {
            self.failures
                .push(format!("round {n} after round {}: {line}", self.last_round));
        }
        self.last_round = n;
        self.rounds += 1;
        if let Some(prev) = self.last_round_at {
            self.longest_gap = self.longest_gap.max(at.saturating_duration_since(prev));
        }
        self.last_round_at = Some(at);
        self.first_round_at.get_or_insert(at);
        let data = |record| Expected::Data {
            round: n,
            md5: md5.to_string(),
            record,
        };
        let expected = match status {
            "ok" => data(true),
            "BAD" => {
                self.bad += 1;
                self.failures.push(line.to_string());
                data(true)
            }
            eio if eio.starts_with("EIO:") => {
                self.eio += 1;
                self.failures.push(line.to_string());
                let ops: Vec<&str> = eio["EIO:".len()..].split(',').collect();
                if ops.contains(&"write") {
                    Expected::Unknown
                } else {
                    data(!ops.contains(&"record"))
                }
            }
            _ => {
                self.failures.push(format!("unknown round status: {line}"));
                Expected::Unknown
            }
        };
        self.slots.insert(slot, expected);
    }

    /// Rounds that found bad data or failed I/O: the scenario's verify errors.
    pub fn verify_errors(&self) -> u64 {
        self.bad + self.eio
    }

    /// True once the guest said it finished and what it counted agrees with the lines.
    pub fn complete(&self) -> bool {
        self.summary
            == Some(Summary {
                rounds: self.rounds,
                ok: self.rounds - self.bad - self.eio,
                bad: self.bad,
                eio: self.eio,
            })
            && self.dmesg_done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &[(&str, u64)]) -> Console {
        let t0 = Instant::now();
        let mut c = Console::default();
        for (l, ms) in lines {
            c.line(l, t0 + Duration::from_millis(*ms));
        }
        c
    }

    #[test]
    fn rounds_gaps_and_slots_are_followed() {
        let c = feed(&[
            (
                "VM-KERNEL io_timeout_ms=30000 hung_task_timeout_secs=120",
                0,
            ),
            ("VM-ROUND 1 ok slot=1 md5=aa got=aa", 1000),
            ("VM-ROUND 2 ok slot=0 md5=bb got=bb", 1300),
            ("[   12.0] some kernel line", 5000),
            ("VM-ROUND 3 ok slot=1 md5=cc got=cc", 21300),
            ("VM-ROUND 4 ok slot=0 md5=dd got=dd", 21600),
            ("VM-SUMMARY rounds=4 ok=4 bad=0 eio=0", 21700),
            ("VM-DMESG-BEGIN", 21700),
            (
                "[    1.0] virtio_blk virtio0: [vda] 32768 512-byte logical blocks",
                21700,
            ),
            (
                "[   30.0] INFO: task dd:71 blocked for more than 120 seconds.",
                21700,
            ),
            ("VM-DMESG-END", 21700),
        ]);
        assert_eq!(c.rounds, 4);
        assert_eq!(c.longest_gap, Duration::from_secs(20));
        assert_eq!(c.verify_errors(), 0);
        assert!(c.failures.is_empty(), "{:?}", c.failures);
        assert_eq!(
            c.slots[&1],
            Expected::Data {
                round: 3,
                md5: "cc".into(),
                record: true
            }
        );
        assert_eq!(c.slots.len(), 2);
        assert_eq!(
            c.kernel.as_deref(),
            Some("io_timeout_ms=30000 hung_task_timeout_secs=120")
        );
        assert_eq!(c.kernel_findings.len(), 1);
        assert!(c.complete());
    }

    #[test]
    fn failed_rounds_count_and_decide_what_the_slot_must_hold() {
        let c = feed(&[
            ("VM-ROUND 1 BAD slot=1 md5=aa got=ab", 0),
            (
                "VM-ROUND 2 EIO:write slot=2 md5=bb got=- err=dd: error writing",
                10,
            ),
            ("VM-ROUND 3 EIO:read,record slot=3 md5=cc got=-", 20),
            ("garbage VM-ROUND x", 30),
            ("VM-ROUND 5 ok slot=1 md5=ee got=ee", 40),
            ("VM-SUMMARY rounds=4 ok=1 bad=1 eio=2", 50),
        ]);
        assert_eq!((c.rounds, c.bad, c.eio), (4, 1, 2));
        assert_eq!(c.verify_errors(), 3);
        assert_eq!(c.slots[&2], Expected::Unknown);
        assert_eq!(
            c.slots[&3],
            Expected::Data {
                round: 3,
                md5: "cc".into(),
                record: false
            }
        );
        // Three failed rounds, the unreadable line and the round that skipped one.
        assert_eq!(c.failures.len(), 5, "{:?}", c.failures);
        // The summary agrees, but the guest's kernel log never came.
        assert!(!c.complete());
    }

    #[test]
    fn a_summary_that_disagrees_with_the_lines_is_not_complete() {
        let c = feed(&[
            ("VM-ROUND 1 ok slot=1 md5=aa got=aa", 0),
            ("VM-SUMMARY rounds=2 ok=2 bad=0 eio=0", 10),
            ("VM-DMESG-BEGIN", 10),
            (
                "[ 30.1] blk_update_request: I/O error, dev vda, sector 8",
                10,
            ),
            ("VM-DMESG-END", 10),
        ]);
        assert!(!c.complete());
        assert_eq!(c.kernel_findings.len(), 1);
    }
}
