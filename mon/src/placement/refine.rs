//! Integer refinement: single-slot moves towards the best whole-number loads.
//!
//! The LP is fractional; whole PGs per set leave some OSDs a slot or two above
//! or below their share, which matters when shares are small (1000 OSDs with
//! 4096 PGs × 3 have ~12 slots each). This pass first fixes a goal: whole
//! slots per OSD with the best possible largest and smallest load / target
//! ratios, as close to the current loads as that allows ([`integer_goal`]).
//! It then moves one slot at a time from an OSD above its goal to one below it,
//! in a PG whose other OSDs leave the receiver's failure domain free, or, when
//! no such PG exists, through a relay OSD that takes the slot and hands one of
//! its own on (two slot moves). Each step lowers Σ |load − goal| by 2, so the
//! pass ends after at most half of that.
//!
//! A move never takes a PG below `pg_minsize` of its previous members (see
//! `Previous::required_kept`): with several OSDs over their goal, one PG could
//! otherwise lose two copies at once and recover them while not writable.
//!
//! Among possible moves it prefers one that puts a slot back where the previous
//! placement had it, then one that displaces no previously placed data, then
//! the receiver most under-loaded relative to its share. Aiming at a goal that
//! tolerates rounding rather than at any improvement matters for movement: with
//! a potential-descent rule, a cluster that gained one OSD saw every old OSD
//! re-round its slightly smaller share, moving 2–4× the data the new OSD needs.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::assign::loads;
use super::layout::{integer_goal, PoolLayout};
use super::previous::{Previous, Slots};

#[derive(Debug, Clone, Copy, PartialEq)]
struct Key(f64);
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Key {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0)
    }
}

#[derive(Clone, Copy)]
struct Move {
    pg: usize,
    slot: usize,
    to: u32,
    cost: i32,
    rank: Key,
}

/// Runs the refinement on `pgs` in place and returns the number of slot moves.
pub(crate) fn refine(layout: &PoolLayout, prev: &Previous, pgs: &mut [Slots]) -> usize {
    let n = layout.osds.len();
    let ordered = layout.rules.ordered_slots();
    let mut load = loads(layout, pgs);
    let total: u64 = load.iter().map(|&l| u64::from(l)).sum();
    let goal = integer_goal(&layout.target, &load, total);
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (i, pg) in pgs.iter().enumerate() {
        for x in pg.iter().flatten() {
            members[*x as usize].push(i as u32);
        }
    }
    // Receivers, most under-loaded (relative to target) first.
    let fill = |load: &[u32], b: usize| Key(f64::from(load[b] + 1) / layout.target[b]);
    let mut under: BTreeSet<(Key, u32)> = (0..n)
        .filter(|&b| load[b] < goal[b])
        .map(|b| (fill(&load, b), b as u32))
        .collect();
    let mut moves = 0;
    loop {
        let mut over: Vec<u32> = (0..n as u32)
            .filter(|&a| load[a as usize] > goal[a as usize])
            .collect();
        over.sort_by(|&a, &b| {
            let ra = f64::from(load[a as usize]) / layout.target[a as usize];
            let rb = f64::from(load[b as usize]) / layout.target[b as usize];
            rb.total_cmp(&ra).then(a.cmp(&b))
        });
        let before = moves;
        for a in over {
            while load[a as usize] > goal[a as usize] {
                let state = State {
                    layout,
                    prev,
                    pgs,
                    members: &members,
                    under: &under,
                    load: &load,
                    goal: &goal,
                    ordered,
                };
                let steps = match best_move(&state, a) {
                    Some(m) => vec![(a, m)],
                    None => match best_chain(&state, a) {
                        Some((c, first, second)) => vec![(a, first), (c, second)],
                        None => break,
                    },
                };
                let b = steps.last().expect("a move has at least one step").1.to;
                under.remove(&(fill(&load, b as usize), b));
                load[a as usize] -= 1;
                load[b as usize] += 1;
                if load[b as usize] < goal[b as usize] {
                    under.insert((fill(&load, b as usize), b));
                }
                for (from, m) in steps {
                    pgs[m.pg][m.slot] = Some(m.to);
                    let list = &mut members[from as usize];
                    let at = list
                        .iter()
                        .position(|&p| p as usize == m.pg)
                        .expect("the mover is a member of its PG");
                    list.swap_remove(at);
                    members[m.to as usize].push(m.pg as u32);
                    moves += 1;
                }
            }
        }
        // Moves change which domains PGs use, which can unblock an earlier OSD.
        if moves == before || under.is_empty() {
            return moves;
        }
    }
}

/// What move searches look at.
struct State<'a> {
    layout: &'a PoolLayout,
    prev: &'a Previous,
    pgs: &'a [Slots],
    members: &'a [Vec<u32>],
    under: &'a BTreeSet<(Key, u32)>,
    load: &'a [u32],
    goal: &'a [u32],
    ordered: bool,
}

impl State<'_> {
    /// Whether OSD `b` may replace slot `slot` of PG `p`: not in the PG yet,
    /// and its failure domain unused by the PG's other slots.
    fn fits(&self, p: usize, slot: usize, b: u32) -> bool {
        let bd = self.layout.domain_of[b as usize];
        self.pgs[p].iter().enumerate().all(|(j, s)| match s {
            Some(x) if j != slot => *x != b && self.layout.domain_of[*x as usize] != bd,
            _ => true,
        })
    }

    /// Data movement added by putting `b` instead of `a` in slot `slot` of PG `p`.
    fn cost(&self, p: usize, slot: usize, a: u32, b: u32) -> i32 {
        self.prev.slot_cost(self.ordered, p, slot, b) as i32
            - self.prev.slot_cost(self.ordered, p, slot, a) as i32
    }

    /// Whether putting `b` instead of `a` in slot `slot` of PG `p` leaves the
    /// PG the previous members it must keep ([`Previous::required_kept`]).
    fn keeps_minsize(&self, p: usize, slot: usize, a: u32, b: u32) -> bool {
        self.cost(p, slot, a, b) <= 0
            || self.prev.kept(self.ordered, p, &self.pgs[p])
                > self.prev.required_kept(self.layout, p)
    }

    fn slot_of(&self, p: usize, a: u32) -> usize {
        self.pgs[p]
            .iter()
            .position(|&s| s == Some(a))
            .expect("members lists are exact")
    }
}

/// The preferred move of one slot away from OSD `a` to a receiver, if any.
fn best_move(st: &State<'_>, a: u32) -> Option<Move> {
    let mut best: Option<Move> = None;
    let mut consider = |m: Move| {
        if !matches!(&best, Some(b) if (m.cost, m.rank, m.pg) >= (b.cost, b.rank, b.pg)) {
            best = Some(m);
        }
    };
    for &p in &st.members[a as usize] {
        let p = p as usize;
        let slot = st.slot_of(p, a);
        // The most under-loaded receiver that fits this PG.
        if let Some(&(rank, b)) = st
            .under
            .iter()
            .find(|&&(_, b)| st.fits(p, slot, b) && st.keeps_minsize(p, slot, a, b))
        {
            consider(Move {
                pg: p,
                slot,
                to: b,
                cost: st.cost(p, slot, a, b),
                rank,
            });
        }
        // A receiver that held this slot before: no data to move.
        for b in st.prev.slots[p].iter().flatten().copied() {
            if b != a
                && st.load[b as usize] < st.goal[b as usize]
                && st.fits(p, slot, b)
                && st.keeps_minsize(p, slot, a, b)
            {
                let rank = Key(f64::from(st.load[b as usize] + 1) / st.layout.target[b as usize]);
                consider(Move {
                    pg: p,
                    slot,
                    to: b,
                    cost: st.cost(p, slot, a, b),
                    rank,
                });
            }
        }
    }
    best
}

/// When no receiver fits any PG of `a` (every under-loaded OSD sits in a
/// failure domain those PGs already use), a relay OSD `c` can take a slot of
/// `a` and hand one of its own slots, in another PG, to a receiver: `c` keeps
/// its load. Returns the relay and both steps, cheapest in movement first.
fn best_chain(st: &State<'_>, a: u32) -> Option<(u32, Move, Move)> {
    // relay[c]: c's cheapest hand-off to a receiver, computed on first use.
    let mut relay: Vec<Option<Option<Move>>> = vec![None; st.layout.osds.len()];
    let mut best: Option<(i32, u32, Move, Move)> = None;
    for &p in &st.members[a as usize] {
        let p = p as usize;
        let slot = st.slot_of(p, a);
        for c in 0..st.layout.osds.len() as u32 {
            if c == a || !st.fits(p, slot, c) || !st.keeps_minsize(p, slot, a, c) {
                continue;
            }
            let hand_off =
                relay[c as usize].get_or_insert_with(|| best_move(st, c).filter(|m| m.pg != p));
            let Some(second) = hand_off else { continue };
            let cost = st.cost(p, slot, a, c) + second.cost;
            if !matches!(&best, Some(b) if cost >= b.0) {
                let first = Move {
                    pg: p,
                    slot,
                    to: c,
                    cost: st.cost(p, slot, a, c),
                    rank: second.rank,
                };
                let second = Move { ..*second };
                best = Some((cost, c, first, second));
            }
        }
    }
    best.map(|(_, c, first, second)| (c, first, second))
}
