//! When an object whose recovery failed may be tried again, and when an OSD that ran out of
//! space may be sent recovery copies again. Each failure doubles the wait (from
//! [`FIRST_DELAY`] up to [`MAX_DELAY`]); a success forgets the object (or the OSD). Waiting
//! per OSD matters on a full cluster: every degraded object would otherwise queue one more
//! doomed copy on the full OSD's store, in front of the deletes that would make room.
//!
//! Objects a recovery pass found waiting are parked here by deadline ([`RecoveryBackoff::park`])
//! and handed back by [`RecoveryBackoff::due`] once it passes, so a pass never walks the
//! objects that must still wait.
//!
//! It only keeps deadlines: it never starts anything and never reads the clock itself (the
//! caller passes `now`), so a failed recovery can never lead straight into another attempt —
//! retries happen when the event loop's next recovery pass finds the deadline past.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use vitastor_blockstore::ObjectId;
use vitastor_layout::{OsdNum, PgId};
use vitastor_protocol::errno::Errno;

/// Wait after the first failure.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(16);

/// An object of a PG.
pub type ObjKey = (PgId, ObjectId);

#[derive(Debug, Clone, Copy)]
struct Entry {
    attempts: u32,
    until: Instant,
    errno: Errno,
}

/// Failed recoveries and their deadlines. See the module docs.
#[derive(Debug, Default)]
pub struct RecoveryBackoff {
    entries: HashMap<ObjKey, Entry>,
    full: HashMap<OsdNum, Entry>,
    /// Parked objects by the time they may be tried again, and that time by object.
    parked: BTreeSet<(Instant, ObjKey)>,
    parked_until: HashMap<ObjKey, Instant>,
}

fn next(prev: Option<&Entry>, errno: Errno, now: Instant) -> Entry {
    let attempts = prev.map_or(0, |e| e.attempts) + 1;
    let delay = FIRST_DELAY
        .saturating_mul(1 << (attempts - 1).min(16))
        .min(MAX_DELAY);
    Entry {
        attempts,
        until: now + delay,
        errno,
    }
}

impl RecoveryBackoff {
    /// Records a failed attempt with `errno`; returns how long the object now waits.
    pub fn failed(&mut self, key: ObjKey, errno: Errno, now: Instant) -> Duration {
        let e = next(self.entries.get(&key), errno, now);
        self.entries.insert(key, e);
        e.until - now
    }

    /// OSD `osd` refused a recovery copy for lack of space.
    pub fn osd_full(&mut self, osd: OsdNum, now: Instant) {
        let e = next(self.full.get(&osd), Errno::ENOSPC, now);
        self.full.insert(osd, e);
    }

    /// OSD `osd` took a recovery copy.
    pub fn osd_took(&mut self, osd: OsdNum) {
        self.full.remove(&osd);
    }

    /// Whether OSD `osd` ran out of space recently enough not to be sent copies now.
    pub fn osd_waits(&self, osd: OsdNum, now: Instant) -> bool {
        self.osd_ready_at(osd, now).is_some()
    }

    /// When OSD `osd` may be sent copies again, if not now.
    pub fn osd_ready_at(&self, osd: OsdNum, now: Instant) -> Option<Instant> {
        self.full.get(&osd).map(|e| e.until).filter(|&t| now < t)
    }

    /// When the object may be tried again, if not now.
    pub fn ready_at(&self, key: &ObjKey, now: Instant) -> Option<Instant> {
        self.entries.get(key).map(|e| e.until).filter(|&t| now < t)
    }

    /// Remembers that a recovery pass parked the object until `until`.
    pub fn park(&mut self, key: ObjKey, until: Instant) {
        if let Some(old) = self.parked_until.insert(key, until) {
            self.parked.remove(&(old, key));
        }
        self.parked.insert((until, key));
    }

    /// The parked objects whose time has come (each once), in deadline order.
    pub fn due(&mut self, now: Instant) -> Vec<ObjKey> {
        let mut out = Vec::new();
        while let Some(&(until, key)) = self.parked.first() {
            if until > now {
                break;
            }
            self.parked.pop_first();
            self.parked_until.remove(&key);
            out.push(key);
        }
        out
    }

    /// The object was recovered (or needs no recovery any more).
    pub fn succeeded(&mut self, key: &ObjKey) {
        self.entries.remove(key);
    }

    /// The errno of the last failure while the object must still wait; `None` when it may
    /// be tried now.
    pub fn waiting(&self, key: &ObjKey, now: Instant) -> Option<Errno> {
        self.entries
            .get(key)
            .filter(|e| now < e.until)
            .map(|e| e.errno)
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self, key: &ObjKey) -> u32 {
        self.entries.get(key).map_or(0, |e| e.attempts)
    }

    /// Forgets every object of a PG this OSD stops leading.
    pub fn forget_pg(&mut self, pg: PgId) {
        self.entries.retain(|(p, _), _| *p != pg);
        self.parked.retain(|(_, (p, _))| *p != pg);
        self.parked_until.retain(|(p, _), _| *p != pg);
    }

    /// Makes every deadline past (tests: "time has passed").
    #[cfg(test)]
    pub fn expire_all(&mut self) {
        let past = Instant::now() - MAX_DELAY;
        for e in self.entries.values_mut().chain(self.full.values_mut()) {
            e.until = past;
        }
        let parked: Vec<ObjKey> = self.parked_until.keys().copied().collect();
        for key in parked {
            self.park(key, past);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stripe: u64) -> ObjKey {
        (PgId::new(1, 1), ObjectId::new(1 << 48, stripe))
    }

    #[test]
    fn doubles_up_to_the_cap_and_forgets_on_success() {
        let mut b = RecoveryBackoff::default();
        let t0 = Instant::now();
        let delays: Vec<u64> = (0..7)
            .map(|_| b.failed(key(0), Errno::ENOSPC, t0).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 16, 16]);
        assert_eq!(b.attempts(&key(0)), 7);
        assert_eq!(b.waiting(&key(0), t0), Some(Errno::ENOSPC));
        assert_eq!(b.waiting(&key(0), t0 + MAX_DELAY), None);
        assert_eq!(b.waiting(&key(1), t0), None);
        b.succeeded(&key(0));
        assert_eq!(b.attempts(&key(0)), 0);
        assert_eq!(b.waiting(&key(0), t0), None);
    }

    #[test]
    fn a_full_osd_waits_until_it_takes_a_copy() {
        let mut b = RecoveryBackoff::default();
        let t0 = Instant::now();
        b.osd_full(OsdNum(3), t0);
        assert!(b.osd_waits(OsdNum(3), t0));
        assert!(!b.osd_waits(OsdNum(2), t0));
        assert!(!b.osd_waits(OsdNum(3), t0 + FIRST_DELAY));
        b.osd_full(OsdNum(3), t0);
        assert!(b.osd_waits(OsdNum(3), t0 + FIRST_DELAY));
        b.osd_took(OsdNum(3));
        assert!(!b.osd_waits(OsdNum(3), t0));
    }

    #[test]
    fn parked_objects_come_back_once_in_deadline_order() {
        let mut b = RecoveryBackoff::default();
        let t0 = Instant::now();
        b.park(key(0), t0 + MAX_DELAY);
        b.park(key(1), t0 + FIRST_DELAY);
        // Parked again: only the new deadline counts.
        b.park(key(2), t0 + MAX_DELAY);
        b.park(key(2), t0 + FIRST_DELAY * 2);
        assert!(b.due(t0).is_empty());
        assert_eq!(b.due(t0 + FIRST_DELAY * 2), [key(1), key(2)]);
        assert!(b.due(t0 + FIRST_DELAY * 2).is_empty());
        assert_eq!(b.due(t0 + MAX_DELAY), [key(0)]);
        b.park(key(3), t0);
        b.forget_pg(PgId::new(1, 1));
        assert!(b.due(t0 + MAX_DELAY).is_empty());
    }

    #[test]
    fn deadlines_are_reported_only_while_in_the_future() {
        let mut b = RecoveryBackoff::default();
        let t0 = Instant::now();
        b.failed(key(0), Errno::EIO, t0);
        assert_eq!(b.ready_at(&key(0), t0), Some(t0 + FIRST_DELAY));
        assert_eq!(b.ready_at(&key(0), t0 + FIRST_DELAY), None);
        b.osd_full(OsdNum(2), t0);
        assert_eq!(b.osd_ready_at(OsdNum(2), t0), Some(t0 + FIRST_DELAY));
        assert_eq!(b.osd_ready_at(OsdNum(3), t0), None);
    }

    #[test]
    fn a_stopped_pg_is_forgotten() {
        let mut b = RecoveryBackoff::default();
        let t0 = Instant::now();
        b.failed(key(0), Errno::EIO, t0);
        b.failed((PgId::new(1, 2), ObjectId::new(1 << 48, 0)), Errno::EIO, t0);
        b.forget_pg(PgId::new(1, 1));
        assert_eq!(b.attempts(&key(0)), 0);
        assert_eq!(b.attempts(&(PgId::new(1, 2), ObjectId::new(1 << 48, 0))), 1);
    }
}
