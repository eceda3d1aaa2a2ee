//! Primary selection: one up OSD per PG, primaries spread evenly.
//!
//! Candidates of a PG are its up OSDs, narrowed to those with the pool's
//! `primary_affinity_tags` when any of them is up. Each OSD's fair number of
//! primaries is Σ over its PGs of 1 / (candidates of that PG). A previous
//! primary that is still a candidate keeps the role (changing primaries makes
//! PGs re-peer); the other PGs, most constrained first, go to the candidate
//! least loaded relative to its fair share. Then a primary is handed to another
//! candidate of its PG only where that lowers Σ count² / fair, so an already
//! balanced assignment is never touched. A PG with no up OSD gets no primary (0).

use super::layout::PoolLayout;
use super::previous::{Previous, Slots};

/// Safety net on balancing passes over all PGs; a few normally suffice.
const MAX_PASSES: usize = 64;
/// Margin a hand-over must beat, so float noise never flips a primary back and forth.
const EPS: f64 = 1e-9;

/// Chooses the primary of every PG (`None` when no OSD of the set is up).
pub(crate) fn choose(layout: &PoolLayout, prev: &Previous, pgs: &[Slots]) -> Vec<Option<u32>> {
    let cands: Vec<Vec<u32>> = pgs
        .iter()
        .map(|pg| {
            let up: Vec<u32> = pg
                .iter()
                .flatten()
                .copied()
                .filter(|&x| layout.up[x as usize])
                .collect();
            let preferred: Vec<u32> = up
                .iter()
                .copied()
                .filter(|&x| layout.primary_affinity[x as usize])
                .collect();
            if preferred.is_empty() {
                up
            } else {
                preferred
            }
        })
        .collect();
    let mut fair = vec![0.0f64; layout.osds.len()];
    for c in &cands {
        for &x in c {
            fair[x as usize] += 1.0 / c.len() as f64;
        }
    }
    let mut count = vec![0u32; layout.osds.len()];
    let mut primary: Vec<Option<u32>> = vec![None; pgs.len()];
    for (i, c) in cands.iter().enumerate() {
        if let Some(p) = prev.primary[i].filter(|p| c.contains(p)) {
            count[p as usize] += 1;
            primary[i] = Some(p);
        }
    }
    let key = |count: &[u32], x: u32, extra: i32| {
        (2.0 * f64::from(count[x as usize]) + f64::from(extra)) / fair[x as usize]
    };
    let mut rest: Vec<usize> = (0..pgs.len())
        .filter(|&i| primary[i].is_none() && !cands[i].is_empty())
        .collect();
    rest.sort_by_key(|&i| (cands[i].len(), i));
    for i in rest {
        let best = cands[i]
            .iter()
            .copied()
            .min_by(|&a, &b| {
                key(&count, a, 1)
                    .total_cmp(&key(&count, b, 1))
                    .then(a.cmp(&b))
            })
            .expect("PGs without candidates were filtered out");
        count[best as usize] += 1;
        primary[i] = Some(best);
    }
    // Hand the role over where that lowers Σ count² / fair: each switch strictly
    // lowers it, so this ends, and a balanced input is left exactly as it is.
    for _ in 0..MAX_PASSES {
        let mut switched = false;
        for (i, c) in cands.iter().enumerate() {
            let Some(a) = primary[i] else { continue };
            let Some(b) = c.iter().copied().filter(|&b| b != a).min_by(|&x, &y| {
                key(&count, x, 1)
                    .total_cmp(&key(&count, y, 1))
                    .then(x.cmp(&y))
            }) else {
                continue;
            };
            if key(&count, b, 1) < key(&count, a, -1) - EPS {
                count[a as usize] -= 1;
                count[b as usize] += 1;
                primary[i] = Some(b);
                switched = true;
            }
        }
        if !switched {
            break;
        }
    }
    primary
}
