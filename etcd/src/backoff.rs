//! How long to wait before the next session after one failed: doubling from 100 ms to 2 s,
//! back to the start once a session got going. A returning etcd is noticed within a couple
//! of seconds without hammering a dead endpoint.

use std::time::Duration;

/// First wait after a failed session.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The wait before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff(INITIAL_BACKOFF)
    }
}

impl Backoff {
    /// The wait to take now; the next one is twice as long, up to [`MAX_BACKOFF`].
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        wait
    }

    /// A session got going: the next failure waits [`INITIAL_BACKOFF`] again.
    pub fn reset(&mut self) {
        self.0 = INITIAL_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_wait(), INITIAL_BACKOFF);
    }
}
