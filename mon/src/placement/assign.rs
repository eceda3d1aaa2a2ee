//! From the LP's fractional set counts to concrete PG numbers.

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
/// domain whose load ratio after the addition is lowest. Used for PGs the LP
/// left out, for previous sets that lost OSDs when the LP fails, and as the
/// whole placement when the LP is unavailable.
pub(crate) fn fill_missing(layout: &PoolLayout, pgs: &mut [Slots]) -> usize {
    let mut load = loads(layout, pgs);
    let mut filled = 0;
    let mut used: Vec<u32> = Vec::with_capacity(layout.k);
    for pg in pgs.iter_mut() {
        let mut have = pg.iter().flatten().count();
        while have < layout.k {
            used.clear();
            used.extend(pg.iter().flatten().map(|&x| layout.domain_of[x as usize]));
            let best = (0..layout.osds.len())
                .filter(|&x| !used.contains(&layout.domain_of[x]))
                .min_by(|&a, &b| {
                    up_key(layout, &load, a)
                        .total_cmp(&up_key(layout, &load, b))
                        .then(a.cmp(&b))
                })
                .expect("k never exceeds the number of failure domains");
            let j = pg
                .iter()
                .position(Option::is_none)
                .expect("fewer than k filled slots leaves a free one");
            pg[j] = Some(best as u32);
            load[best] += 1;
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

    #[test]
    fn integerize_keeps_total() {
        let c = integerize(&[1.5, 1.5, 0.9999999999, 2.1], 6);
        assert_eq!(c.iter().sum::<u32>(), 6);
        assert_eq!(c[2], 1);
        assert_eq!(integerize(&[0.4, 0.4], 10).iter().sum::<u32>(), 1);
        assert_eq!(integerize(&[3.0, 3.0], 5).iter().sum::<u32>(), 5);
    }
}
