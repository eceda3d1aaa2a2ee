//! One line of figures per scenario, printed and appended to
//! `target/<profile>/fault-figures.txt` so that `make test-faults` prints the table at the
//! end (scenarios run in parallel, their output is interleaved).

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use vitastor_testkit::artifacts;

/// What one scenario did and saw.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// Scenario name.
    pub scenario: String,
    /// How long faults were injected.
    pub duration: Duration,
    /// Faults injected (kills, bad connections...).
    pub faults: u64,
    /// Longest time one client I/O waited (fio's maximum completion latency).
    pub longest_pause: Duration,
    /// Blocks fio's verify found wrong while faults were injected.
    pub verify_errors: u64,
    /// Blocks acknowledged before the faults stopped and wrong or unreadable afterwards (the
    /// final verify-only pass).
    pub lost_writes: u64,
    /// fio runs completed.
    pub fio_runs: u64,
    /// Rounds of the VM scenarios' guest (printed instead of fio runs when not 0).
    pub vm_rounds: u64,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<28} duration {:>4} s  faults {:>4}  longest pause {:>7.2} s  verify errors {}  \
             lost writes {}  ({})",
            self.scenario,
            self.duration.as_secs(),
            self.faults,
            self.longest_pause.as_secs_f64(),
            self.verify_errors,
            self.lost_writes,
            if self.vm_rounds > 0 {
                format!("VM rounds {}", self.vm_rounds)
            } else {
                format!("fio runs {}", self.fio_runs)
            }
        )
    }
}

impl Figures {
    /// Prints the line and appends it to the figures file.
    pub fn report(&self) {
        println!("FAULTS {self}");
        let path = artifacts::profile_dir().join("fault-figures.txt");
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{self}");
        }
    }
}
