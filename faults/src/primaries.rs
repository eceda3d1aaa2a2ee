//! The "never two primaries" check: at no moment may two OSDs serve one PG as primary.
//!
//! Two views are compared, both on this machine's wall clock in microseconds:
//! - each OSD's own: its log's "pg P/N: primary role begins at T us" / "... ends at T us"
//!   lines (written by the OSD once etcd granted `pg/state`, and once the PG drained and
//!   stopped or claims again) give, per PG, the intervals in which that OSD led it.
//!   [`overlaps`] fails on any two intervals of different OSDs that overlap for one PG: a
//!   log records every interval, so this catches what sampling would miss.
//! - etcd's: [`Sampler`] reads `pg/state` again and again (each read between two clock
//!   readings). [`unclaimed`] fails when an OSD led a PG during a whole sample while
//!   `pg/state` named another OSD or none: serving without holding the claim.
//!
//! An interval still open when the logs are read ends at that moment. A process killed
//! while leading leaves an open interval too, so scenarios that kill OSDs cannot use this
//! check as it stands; the partition scenario never kills one.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vitastor_testkit::Cluster;

/// `(pool, pg)`.
pub type PgKey = (u32, u32);

/// One OSD leading one PG from `begin` to `end` (µs since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// The OSD.
    pub osd: u64,
    /// When its primary role began.
    pub begin: u64,
    /// When it ended (the time the log was read, for a role still held).
    pub end: u64,
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "osd.{} [{} us, {} us]", self.osd, self.begin, self.end)
    }
}

/// The wall clock in µs since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `(pg, begins, at)` of one primary-role line.
fn role_line(line: &str) -> Option<(PgKey, bool, u64)> {
    let (head, tail) = line.split_once(": primary role ")?;
    let (pool, pg) = head.rsplit(' ').next()?.split_once('/')?;
    let mut words = tail.split_whitespace();
    let begins = match words.next()? {
        "begins" => true,
        "ends" => false,
        _ => return None,
    };
    (words.next()? == "at").then_some(())?;
    let at = words.next()?.parse().ok()?;
    Some(((pool.parse().ok()?, pg.parse().ok()?), begins, at))
}

/// Adds OSD `osd`'s primary-role intervals from its `log` to `out`; a role still held ends
/// at `now`. An end without a begin (a PG stopped before its claim was granted) is no role.
pub fn add_intervals(osd: u64, log: &str, now: u64, out: &mut BTreeMap<PgKey, Vec<Interval>>) {
    let mut open: BTreeMap<PgKey, u64> = BTreeMap::new();
    for (pg, begins, at) in log.lines().filter_map(role_line) {
        if begins {
            open.entry(pg).or_insert(at);
        } else if let Some(begin) = open.remove(&pg) {
            out.entry(pg).or_default().push(Interval {
                osd,
                begin,
                end: at,
            });
        }
    }
    for (pg, begin) in open {
        out.entry(pg).or_default().push(Interval {
            osd,
            begin,
            end: now,
        });
    }
}

/// Every pair of intervals of different OSDs that overlap on one PG.
pub fn overlaps(intervals: &BTreeMap<PgKey, Vec<Interval>>) -> Vec<(PgKey, Interval, Interval)> {
    let mut out = Vec::new();
    for (&pg, list) in intervals {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.osd != b.osd && a.begin < b.end && b.begin < a.end {
                    out.push((pg, *a, *b));
                }
            }
        }
    }
    out
}

/// One read of `pg/state`: the primary it names per PG, read between `t0` and `t1`.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Clock before the read.
    pub t0: u64,
    /// Clock after it.
    pub t1: u64,
    /// `pg/state` primary per PG (PGs without a key are absent).
    pub primaries: BTreeMap<PgKey, u64>,
}

/// Reads of `pg/state` over a scenario.
#[derive(Debug, Default)]
pub struct Sampler {
    /// Samples so far.
    pub samples: Vec<Sample>,
}

impl Sampler {
    /// Reads `pg/state` of pool 1 once (a failed read, e.g. etcd unreachable, is no sample).
    pub fn sample(&mut self, cluster: &Cluster) {
        let t0 = now_us();
        let Ok(states) = cluster.pg_states() else {
            return;
        };
        let t1 = now_us();
        let primaries = states
            .into_iter()
            .filter_map(|(pg, v)| Some(((1, pg), v["primary"].as_u64()?)))
            .collect();
        self.samples.push(Sample { t0, t1, primaries });
    }

    /// Samples every `every` until `until`.
    pub fn sample_until(&mut self, cluster: &Cluster, until: Instant, every: Duration) {
        while Instant::now() < until {
            self.sample(cluster);
            std::thread::sleep(every.min(until.saturating_duration_since(Instant::now())));
        }
    }
}

/// Each OSD that led a PG during a whole sample whose `pg/state` named another OSD or none,
/// as a printable line.
pub fn unclaimed(samples: &[Sample], intervals: &BTreeMap<PgKey, Vec<Interval>>) -> Vec<String> {
    let mut out = Vec::new();
    for s in samples {
        for (pg, list) in intervals {
            for i in list.iter().filter(|i| i.begin <= s.t0 && s.t1 <= i.end) {
                let named = s.primaries.get(pg).copied();
                if named != Some(i.osd) {
                    out.push(format!(
                        "pg {}/{}: {i} led it while pg/state read in [{} us, {} us] named {named:?}",
                        pg.0, pg.1, s.t0, s.t1
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-07T10:28:48.008215Z  INFO vitastor_osd::peering: etcd session up
2026-12-07T10:28:48.1Z  INFO vitastor_osd::peering: pg 1/2: primary role begins at 100 us
2026-12-07T10:28:48.1Z  INFO vitastor_osd::peering: pg 1/3: primary role ends at 105 us
2026-12-07T10:28:48.1Z  INFO vitastor_osd::peering: pg 1/2: primary role ends at 200 us
2026-12-07T10:28:48.1Z  INFO vitastor_osd::peering: pg 1/2: primary role begins at 300 us
";

    fn from(logs: &[(u64, &str)], now: u64) -> BTreeMap<PgKey, Vec<Interval>> {
        let mut out = BTreeMap::new();
        for (osd, log) in logs {
            add_intervals(*osd, log, now, &mut out);
        }
        out
    }

    #[test]
    fn intervals_come_from_begin_and_end_lines() {
        let got = from(&[(1, LOG)], 1000);
        let iv = |begin, end| Interval { osd: 1, begin, end };
        assert_eq!(got[&(1, 2)], vec![iv(100, 200), iv(300, 1000)]);
        assert!(!got.contains_key(&(1, 3)), "an end alone is no role");
    }

    #[test]
    fn overlapping_roles_of_two_osds_are_found() {
        let other =
            "x: pg 1/2: primary role begins at 150 us\nx: pg 1/2: primary role ends at 160 us\n";
        let got = overlaps(&from(&[(1, LOG), (2, other)], 1000));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].1.osd, got[0].2.osd), (1, 2));
        let after =
            "x: pg 1/2: primary role begins at 200 us\nx: pg 1/2: primary role ends at 300 us\n";
        assert!(overlaps(&from(&[(1, LOG), (2, after)], 1000)).is_empty());
    }

    #[test]
    fn leading_without_the_claim_is_found() {
        let intervals = from(&[(1, LOG)], 1000);
        let sample = |t0, t1, primary: Option<u64>| Sample {
            t0,
            t1,
            primaries: primary.map(|p| ((1, 2), p)).into_iter().collect(),
        };
        assert!(unclaimed(&[sample(120, 130, Some(1))], &intervals).is_empty());
        assert!(unclaimed(&[sample(190, 210, Some(2))], &intervals).is_empty());
        assert_eq!(unclaimed(&[sample(120, 130, Some(2))], &intervals).len(), 1);
        assert_eq!(unclaimed(&[sample(400, 410, None)], &intervals).len(), 1);
    }
}
