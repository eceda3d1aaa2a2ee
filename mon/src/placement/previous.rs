//! The previous `pg/config` of a pool, mapped onto the current layout.

use super::layout::PoolLayout;
use super::{OsdNum, PgNum, PoolPgConfig};

/// One PG's OSD per slot (`pg_size` entries), as dense eligible-OSD indices;
/// `None` is an empty slot.
pub(crate) type Slots = Vec<Option<u32>>;

/// What the previous placement says about each PG `1..=pg_count` (index `pg - 1`).
#[derive(Debug, Clone)]
pub(crate) struct Previous {
    /// Whether the PG had an entry at all (new PGs cost no movement).
    pub present: Vec<bool>,
    /// Previous slots that are still usable: eligible, and the first OSD of its
    /// failure domain in the set (a later duplicate is treated as lost).
    pub slots: Vec<Slots>,
    /// The previous `osd_set`, verbatim, to count movement exactly.
    pub raw: Vec<Vec<OsdNum>>,
    /// The previous primary, if it is still eligible.
    pub primary: Vec<Option<u32>>,
}

impl Previous {
    pub fn new(layout: &PoolLayout, cfg: Option<&PoolPgConfig>) -> Self {
        let n = layout.rules.pg_count as usize;
        let size = layout.rules.pg_size;
        let mut prev = Self {
            present: vec![false; n],
            slots: vec![vec![None; size]; n],
            raw: vec![Vec::new(); n],
            primary: vec![None; n],
        };
        let Some(cfg) = cfg else { return prev };
        for (pg, p) in cfg.pgs.range(PgNum(1)..=PgNum(layout.rules.pg_count)) {
            let i = pg.0 as usize - 1;
            prev.present[i] = true;
            prev.raw[i] = p.osd_set.clone();
            let mut domains = Vec::with_capacity(size);
            for (j, o) in p.osd_set.iter().take(size).enumerate() {
                if let Some(&x) = layout.index.get(o) {
                    let d = layout.domain_of[x as usize];
                    if !domains.contains(&d) {
                        domains.push(d);
                        prev.slots[i][j] = Some(x);
                    }
                }
            }
            prev.primary[i] = layout.index.get(&p.primary).copied();
        }
        prev
    }

    /// Still-usable previous members of PG index `i`, sorted.
    pub fn members(&self, i: usize) -> Vec<u32> {
        let mut m: Vec<u32> = self.slots[i].iter().flatten().copied().collect();
        m.sort_unstable();
        m
    }

    /// Whether placing OSD `x` in slot `j` of PG `i` moves data there.
    /// For EC/XOR the part number must match; for replicas any slot will do.
    pub fn slot_cost(&self, ordered: bool, i: usize, j: usize, x: u32) -> u32 {
        let kept = if ordered {
            self.slots[i][j] == Some(x)
        } else {
            self.slots[i].contains(&Some(x))
        };
        u32::from(!kept)
    }
}

impl Previous {
    /// Previous members PG `i` must keep while it moves data: `pg_minsize` of
    /// them (all that are still usable, if fewer), so a PG never recovers more
    /// copies at once than it can while staying writable. A PG that lost
    /// nothing may move one copy even below `pg_minsize`: with
    /// `pg_minsize = pg_size` nothing could rebalance otherwise.
    pub fn required_kept(&self, layout: &PoolLayout, i: usize) -> usize {
        let usable = self.slots[i].iter().flatten().count();
        let required = usable.min(layout.rules.pg_minsize);
        if usable == layout.k {
            required.min(usable.saturating_sub(1))
        } else {
            required
        }
    }

    /// Previous members PG `i` keeps with slots `pg`.
    pub fn kept(&self, ordered: bool, i: usize, pg: &Slots) -> usize {
        pg.iter()
            .enumerate()
            .filter(|&(j, s)| matches!(s, Some(x) if self.slot_cost(ordered, i, j, *x) == 0))
            .count()
    }
}

/// Puts OSD set `set` into PG `i`'s slots, keeping each previous member in its
/// slot so that only the changed OSDs move (and EC parts keep their numbers).
pub(crate) fn arrange(prev: &Previous, i: usize, set: &[u32]) -> Slots {
    let mut slots: Slots = vec![None; prev.slots[i].len()];
    let mut rest = Vec::with_capacity(set.len());
    for &x in set {
        match prev.slots[i].iter().position(|&s| s == Some(x)) {
            Some(j) => slots[j] = Some(x),
            None => rest.push(x),
        }
    }
    let mut free = (0..slots.len())
        .filter(|&j| slots[j].is_none())
        .collect::<Vec<_>>()
        .into_iter();
    for x in rest {
        let j = free
            .next()
            .expect("a set never has more OSDs than the PG has slots");
        slots[j] = Some(x);
    }
    slots
}
