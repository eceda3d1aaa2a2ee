//! From the LP's fractional set counts to concrete PG numbers.

use std::collections::BTreeSet;

use super::layout::PoolLayout;
use super::previous::{arrange, Previous, Slots};

/// Whole PGs per candidate: floors, then the largest fractional parts, up to
/// the rounded LP total (never more than `pg_count`). PGs the LP could not fit
/// are left to [`fill_missing`].
pub(crate) fn integerize(value: &[f64], pg_count: u32) -> Vec<u32> {
    let total: f64 = value.iter().sum();
    let goal = (total.round() as u64).min(u64::from(pg_count));
    let mut count: Vec<u32> = value.iter().map(|v| (v + 1e-9).floor() as u32).collect();
    let assigned: u64 = count.iter().map(|&c| u64::from(c)).sum();
    let mut frac: Vec<(f64, usize)> = value
        .iter()
        .enumerate()
        .map(|(c, v)| (v - f64::from(count[c]), c))
        .filter(|(f, _)| *f > 1e-6)
        .collect();
    frac.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, c) in frac.iter().take(goal.saturating_sub(assigned) as usize) {
        count[c] += 1;
    }
    // Flooring with a tolerance can overshoot only by rounding noise; trim it.
    let mut excess = count
        .iter()
        .map(|&c| u64::from(c))
        .sum::<u64>()
        .saturating_sub(u64::from(pg_count));
    for c in count.iter_mut().rev() {
        let cut = u64::from(*c).min(excess);
        *c -= cut as u32;
        excess -= cut;
    }
    count
}

/// Gives PGs their sets: a PG whose previous set is still chosen keeps it; the
/// others take the remaining set that overlaps their previous one the most
/// (so a swap variant returns to the PG it came from), then any remaining set.
/// PGs left without a set get empty slots.
pub(crate) fn assign(
    layout: &PoolLayout,
    prev: &Previous,
    sets: &[Vec<u32>],
    mut left: Vec<u32>,
    index: &std::collections::HashMap<Vec<u32>, usize>,
) -> Vec<Slots> {
    let n = prev.slots.len();
    let k = layout.k;
    let mut out: Vec<Option<Slots>> = vec![None; n];
    for (i, slot) in out.iter_mut().enumerate() {
        let m = prev.members(i);
        if m.len() == k {
            if let Some(&c) = index.get(&m) {
                if left[c] > 0 {
                    left[c] -= 1;
                    *slot = Some(prev.slots[i].clone());
                }
            }
        }
    }

    let mut containing: Vec<Vec<usize>> = vec![Vec::new(); layout.osds.len()];
    for (c, set) in sets.iter().enumerate() {
        if left[c] > 0 {
            for &x in set {
                containing[x as usize].push(c);
            }
        }
    }
    let mut overlap: Vec<(usize, usize)> = Vec::new();
    for level in (1..k).rev() {
        for (i, slot) in out.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            overlap.clear();
            for x in prev.slots[i].iter().flatten() {
                for &c in &containing[*x as usize] {
                    if left[c] == 0 {
                        continue;
                    }
                    match overlap.iter_mut().find(|(cc, _)| *cc == c) {
                        Some((_, cnt)) => *cnt += 1,
                        None => overlap.push((c, 1)),
                    }
                }
            }
            if let Some(&(c, cnt)) = overlap
                .iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            {
                if cnt >= level {
                    left[c] -= 1;
                    *slot = Some(arrange(prev, i, &sets[c]));
                }
            }
        }
    }

    let mut next = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if slot.is_some() {
            continue;
        }
        while next < sets.len() && left[next] == 0 {
            next += 1;
        }
        if next < sets.len() {
            left[next] -= 1;
            *slot = Some(arrange(prev, i, &sets[next]));
        }
    }
    out.into_iter()
        .map(|s| s.unwrap_or_else(|| vec![None; layout.rules.pg_size]))
        .collect()
}

/// Fills every PG up to `k` OSDs, each time with the OSD of an unused failure
/// domain whose load ratio after the addition is lowest (ties: lowest index).
/// Used for slots lost with their OSD, for a grown `pg_size`, for PGs the LP
/// left out and as the whole placement when the LP fails.
///
/// OSDs wait in an ordered set by that ratio, so each slot costs a walk past
/// the OSDs of the PG's own domains and one re-insertion: a scan of every OSD
/// per slot took 10 s when `pg_size` grew on 10,000 OSDs × 65,536 PGs.
pub(crate) fn fill_missing(layout: &PoolLayout, pgs: &mut [Slots]) -> usize {
    let mut load = loads(layout, pgs);
    // `up_key` is positive (or +inf), where the bit pattern orders like the value.
    let key = |load: &[u32], x: usize| up_key(layout, load, x).to_bits();
    let mut queue: BTreeSet<(u64, u32)> = (0..layout.osds.len())
        .map(|x| (key(&load, x), x as u32))
        .collect();
    let mut filled = 0;
    let mut used: Vec<u32> = Vec::with_capacity(layout.k);
    for pg in pgs.iter_mut() {
        let mut have = pg.iter().flatten().count();
        while have < layout.k {
            used.clear();
            used.extend(pg.iter().flatten().map(|&x| layout.domain_of[x as usize]));
            let &(old, best) = queue
                .iter()
                .find(|&&(_, x)| !used.contains(&layout.domain_of[x as usize]))
                .expect("k never exceeds the number of failure domains");
            let j = pg
                .iter()
                .position(Option::is_none)
                .expect("fewer than k filled slots leaves a free one");
            pg[j] = Some(best);
            queue.remove(&(old, best));
            load[best as usize] += 1;
            queue.insert((key(&load, best as usize), best));
            have += 1;
            filled += 1;
        }
    }
    filled
}

/// Slots per OSD.
pub(crate) fn loads(layout: &PoolLayout, pgs: &[Slots]) -> Vec<u32> {
    let mut load = vec![0u32; layout.osds.len()];
    for x in pgs.iter().flatten().flatten() {
        load[*x as usize] += 1;
    }
    load
}

/// Marginal cost of one more slot on OSD `x` under the balance potential
/// Σ load² / target (minimised exactly when loads are proportional to targets).
pub(crate) fn up_key(layout: &PoolLayout, load: &[u32], x: usize) -> f64 {
    f64::from(2 * load[x] + 1) / layout.target[x]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule `fill_missing` implements, as a plain scan over every OSD.
    fn fill_by_scan(layout: &PoolLayout, pgs: &mut [Slots]) {
        let mut load = loads(layout, pgs);
        for pg in pgs.iter_mut() {
            while pg.iter().flatten().count() < layout.k {
                let used: Vec<u32> = pg
                    .iter()
                    .flatten()
                    .map(|&x| layout.domain_of[x as usize])
                    .collect();
                let best = (0..layout.osds.len())
                    .filter(|&x| !used.contains(&layout.domain_of[x]))
                    .min_by(|&a, &b| {
                        up_key(layout, &load, a)
                            .total_cmp(&up_key(layout, &load, b))
                            .then(a.cmp(&b))
                    })
                    .unwrap();
                let j = pg.iter().position(Option::is_none).unwrap();
                pg[j] = Some(best as u32);
                load[best] += 1;
            }
        }
    }

    #[test]
    fn fill_missing_picks_as_a_full_scan_does() {
        use crate::placement::{OsdInfo, OsdNum, PlacementTree, PoolId, PoolRules};
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        let osds = (0..40)
            .map(|i| {
                let size = [1u64, 2, 4, 8][rng.gen_range(0..4)] << 40;
                OsdInfo::new(OsdNum(i + 1), format!("h{}", i % 9), size)
            })
            .collect();
        let tree =
            PlacementTree::new(osds, &serde_json::Value::Null, &serde_json::Value::Null).unwrap();
        let layout = PoolLayout::new(&tree, &PoolRules::replicated(PoolId(1), 4, 2, 300)).unwrap();
        // Some PGs keep one or two OSDs (distinct domains), the rest start empty.
        let mut pgs: Vec<Slots> = (0..300)
            .map(|_| {
                let mut pg = vec![None; 4];
                if rng.gen_bool(0.5) {
                    let x = rng.gen_range(0..40u32);
                    pg[0] = Some(x);
                    let y = rng.gen_range(0..40u32);
                    if layout.domain_of[y as usize] != layout.domain_of[x as usize] {
                        pg[2] = Some(y);
                    }
                }
                pg
            })
            .collect();
        let mut expected = pgs.clone();
        fill_by_scan(&layout, &mut expected);
        fill_missing(&layout, &mut pgs);
        assert_eq!(pgs, expected);
    }

    #[test]
    fn integerize_keeps_total() {
        let c = integerize(&[1.5, 1.5, 0.9999999999, 2.1], 6);
        assert_eq!(c.iter().sum::<u32>(), 6);
        assert_eq!(c[2], 1);
        assert_eq!(integerize(&[0.4, 0.4], 10).iter().sum::<u32>(), 1);
        assert_eq!(integerize(&[3.0, 3.0], 5).iter().sum::<u32>(), 5);
    }
}
