//! Fsync tickets: who waits for which fsync, per device.
//!
//! A ticket stands for "an fsync submitted after now": it covers every write completed before
//! it was taken. The journal, data and metadata areas each ask for their own tickets (each can
//! be disabled), but tickets are counted per device: areas that share a file share its
//! fsyncs, so a flusher's data fsync and a SYNC's journal fsync on one file become one.
//! Several fsyncs of one device may be in flight, so that a write completing during an fsync
//! waits for one more, not for two in a row.
//!
//! Background tickets (the flusher's) do not start an fsync by themselves: they wait until
//! the caller says background writes have settled ([`Fsyncs::take_due`]'s `background`), or
//! ride on the next fsync a client operation starts. Flush jobs finish their writes at
//! different moments; an fsync per completion cost one fsync per job and step where a round
//! of jobs needs one per step, and every extra fsync is one more thing a client read queues
//! behind on the device.
//!
//! It only decides; it never submits or waits (the blockstore turns [`Fsyncs::take_due`] into
//! device I/O and feeds completions back with [`Fsyncs::completed`]).

use crate::io::DevId;

/// Fsyncs of one device in flight at most. One in flight made a write that completed during
/// it wait for it and then its own; a few more cost the disk little (the file system joins
/// concurrent fsyncs into one commit) and bound what a storm of tickets can queue.
const MAX_IN_FLIGHT: u32 = 4;

/// The areas that take tickets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Area {
    /// The journal device.
    Journal,
    /// The data device.
    Data,
    /// The metadata device.
    Meta,
}

#[derive(Debug)]
struct DevFsync {
    dev: DevId,
    /// Fsyncs submitted so far; the n-th carries number n.
    submitted: u64,
    /// Highest number completed: it covers every ticket up to it (a later fsync covers all
    /// an earlier one does, so out-of-order completions only ever raise it).
    completed: u64,
    /// Highest ticket handed out for a client operation.
    wanted: u64,
    /// Highest background ticket handed out.
    wanted_bg: u64,
    in_flight: u32,
}

/// Fsync tickets of the journal, data and metadata areas.
#[derive(Debug)]
pub(crate) struct Fsyncs {
    devs: Vec<DevFsync>,
    /// Per area (journal, data, meta): index into `devs`, or `None` when its fsyncs are off.
    areas: [Option<usize>; 3],
}

fn area_index(a: Area) -> usize {
    match a {
        Area::Journal => 0,
        Area::Data => 1,
        Area::Meta => 2,
    }
}

impl Fsyncs {
    /// `areas`: the device of the journal, data and metadata areas and whether their fsyncs
    /// are on.
    pub(crate) fn new(areas: [(DevId, bool); 3]) -> Self {
        let mut devs: Vec<DevFsync> = Vec::new();
        let mut idx = [None; 3];
        for (i, &(dev, enabled)) in areas.iter().enumerate() {
            if !enabled {
                continue;
            }
            let d = match devs.iter().position(|d| d.dev == dev) {
                Some(d) => d,
                None => {
                    devs.push(DevFsync {
                        dev,
                        submitted: 0,
                        completed: 0,
                        wanted: 0,
                        wanted_bg: 0,
                        in_flight: 0,
                    });
                    devs.len() - 1
                }
            };
            idx[i] = Some(d);
        }
        Fsyncs { devs, areas: idx }
    }

    /// A ticket for an fsync of `area` that covers every write completed before now (0, done
    /// at once, when the area's fsyncs are off).
    pub(crate) fn ticket(&mut self, area: Area) -> u64 {
        let Some(d) = self.areas[area_index(area)] else {
            return 0;
        };
        let d = &mut self.devs[d];
        let t = d.submitted + 1;
        d.wanted = d.wanted.max(t);
        t
    }

    /// A background ticket: like [`Fsyncs::ticket`], but its fsync starts only with a client's
    /// or once background writes have settled.
    pub(crate) fn ticket_background(&mut self, area: Area) -> u64 {
        let Some(d) = self.areas[area_index(area)] else {
            return 0;
        };
        let d = &mut self.devs[d];
        let t = d.submitted + 1;
        d.wanted_bg = d.wanted_bg.max(t);
        t
    }

    /// Whether any fsync is in flight.
    pub(crate) fn any_in_flight(&self) -> bool {
        self.devs.iter().any(|d| d.in_flight > 0)
    }

    /// Whether ticket `t` of `area` is durable.
    pub(crate) fn done(&self, area: Area, t: u64) -> bool {
        match self.areas[area_index(area)] {
            None => true,
            Some(d) => self.devs[d].completed >= t,
        }
    }

    /// Fsyncs to submit now, as `(device, number)`: one per device that has a ticket no
    /// submitted fsync covers, unless too many are in flight already. Background tickets
    /// count only when `background` says their writes have settled.
    pub(crate) fn take_due(&mut self, out: &mut Vec<(DevId, u64)>, background: bool) {
        for d in self.devs.iter_mut() {
            let due = d.wanted > d.submitted || (background && d.wanted_bg > d.submitted);
            if due && d.in_flight < MAX_IN_FLIGHT {
                d.submitted += 1;
                d.in_flight += 1;
                out.push((d.dev, d.submitted));
            }
        }
    }

    /// Fsync `number` of `dev` completed successfully.
    pub(crate) fn completed(&mut self, dev: DevId, number: u64) {
        if let Some(d) = self.devs.iter_mut().find(|d| d.dev == dev) {
            d.in_flight -= 1;
            d.completed = d.completed.max(number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const J: DevId = DevId(0);
    const D: DevId = DevId(1);

    fn submit(f: &mut Fsyncs) -> Vec<(DevId, u64)> {
        let mut v = Vec::new();
        f.take_due(&mut v, false);
        v
    }

    #[test]
    fn background_tickets_wait_until_their_writes_settle_or_ride_on_a_client_fsync() {
        let mut f = Fsyncs::new([(J, true), (J, true), (J, true)]);
        let a = f.ticket_background(Area::Data);
        let b = f.ticket_background(Area::Meta);
        assert!(
            submit(&mut f).is_empty(),
            "other flush writes may still come"
        );
        let mut v = Vec::new();
        f.take_due(&mut v, true);
        assert_eq!(v, vec![(J, 1)], "one fsync for both once they settle");
        f.completed(J, 1);
        assert!(f.done(Area::Data, a) && f.done(Area::Meta, b));
        let c = f.ticket_background(Area::Meta);
        let j = f.ticket(Area::Journal);
        assert_eq!(
            submit(&mut f),
            vec![(J, 2)],
            "a client's fsync starts at once"
        );
        f.completed(J, 2);
        assert!(
            f.done(Area::Meta, c) && f.done(Area::Journal, j),
            "and covers both"
        );
        assert!(!f.any_in_flight());
    }

    #[test]
    fn a_ticket_taken_during_an_fsync_needs_the_next_one_which_starts_at_once() {
        let mut f = Fsyncs::new([(J, true), (D, true), (D, true)]);
        let t1 = f.ticket(Area::Journal);
        assert_eq!(submit(&mut f), vec![(J, 1)]);
        // Its write completed after fsync 1 was submitted: fsync 1 does not cover it.
        let t2 = f.ticket(Area::Journal);
        assert_eq!(
            submit(&mut f),
            vec![(J, 2)],
            "no waiting for fsync 1 to end"
        );
        f.completed(J, 1);
        assert!(f.done(Area::Journal, t1));
        assert!(!f.done(Area::Journal, t2));
        f.completed(J, 2);
        assert!(f.done(Area::Journal, t2));
        assert!(submit(&mut f).is_empty());
    }

    #[test]
    fn tickets_taken_before_one_submission_share_it() {
        let mut f = Fsyncs::new([(J, true), (J, true), (J, true)]);
        let a = f.ticket(Area::Journal);
        let b = f.ticket(Area::Data);
        let c = f.ticket(Area::Meta);
        assert_eq!(submit(&mut f), vec![(J, 1)], "one file, one fsync");
        f.completed(J, 1);
        assert!(f.done(Area::Journal, a) && f.done(Area::Data, b) && f.done(Area::Meta, c));
    }

    #[test]
    fn separate_devices_fsync_separately() {
        let mut f = Fsyncs::new([(J, true), (D, true), (D, true)]);
        let j = f.ticket(Area::Journal);
        let d = f.ticket(Area::Data);
        assert_eq!(submit(&mut f), vec![(J, 1), (D, 1)]);
        f.completed(D, 1);
        assert!(f.done(Area::Data, d) && f.done(Area::Meta, d));
        assert!(!f.done(Area::Journal, j));
    }

    #[test]
    fn a_later_fsync_completing_first_covers_the_earlier_tickets() {
        let mut f = Fsyncs::new([(J, true), (J, true), (J, true)]);
        let t1 = f.ticket(Area::Journal);
        submit(&mut f);
        let t2 = f.ticket(Area::Journal);
        submit(&mut f);
        f.completed(J, 2);
        assert!(f.done(Area::Journal, t1) && f.done(Area::Journal, t2));
        f.completed(J, 1);
        assert!(
            f.done(Area::Journal, t2),
            "an older completion never lowers it"
        );
    }

    #[test]
    fn in_flight_fsyncs_are_bounded() {
        let mut f = Fsyncs::new([(J, true), (J, true), (J, true)]);
        for n in 1..=MAX_IN_FLIGHT as u64 {
            f.ticket(Area::Journal);
            assert_eq!(submit(&mut f), vec![(J, n)]);
        }
        let t = f.ticket(Area::Journal);
        assert!(submit(&mut f).is_empty());
        f.completed(J, 1);
        assert_eq!(submit(&mut f), vec![(J, MAX_IN_FLIGHT as u64 + 1)]);
        f.completed(J, MAX_IN_FLIGHT as u64 + 1);
        assert!(f.done(Area::Journal, t));
    }

    #[test]
    fn disabled_areas_are_done_at_once_and_submit_nothing() {
        let mut f = Fsyncs::new([(J, false), (J, true), (J, false)]);
        let t = f.ticket(Area::Journal);
        assert!(f.done(Area::Journal, t));
        assert!(submit(&mut f).is_empty());
        let d = f.ticket(Area::Data);
        assert!(!f.done(Area::Data, d));
        assert_eq!(submit(&mut f), vec![(J, 1)]);
    }
}
