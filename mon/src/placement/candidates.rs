//! Candidate OSD sets ("combinations") for the LP.
//!
//! The number of valid sets grows like `domains^pg_size`, so the LP only sees a
//! bounded sample (`max_osd_combinations`). Which sets are in it decides both how
//! balanced and how stable the result can be:
//! - every previous set is included, so the LP can keep PGs where they are;
//! - "repairs" of previous sets that lost OSDs and single-OSD "swaps" of previous
//!   sets towards under-loaded OSDs, so moving data costs one slot per PG, not a
//!   whole PG (this is what makes adding one OSD move ≈ 1/(N+1) of the data);
//! - fresh sets: all of them when they fit in the budget, else one covering set
//!   per OSD plus random sets drawn in proportion to the ideal shares.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::Rng;

use super::layout::PoolLayout;
use super::previous::Previous;

/// Repaired variants tried for each previous set that lost OSDs: a few, so the
/// LP can spread the replacements instead of piling them on one OSD.
const REPAIR_OPTIONS: usize = 3;
/// Swap variants generated per missing slot of an under-loaded OSD: enough for
/// the LP to choose which over-loaded OSDs give up data, few enough to stay cheap.
const SWAPS_PER_SLOT: f64 = 3.0;
/// Share of the budget left after previous sets that repairs and swaps may use;
/// the rest is kept for fresh sets, which keep the LP feasible.
const REUSE_BUDGET_SHARE: f64 = 0.5;
/// Random draws per fresh set wanted before giving up (duplicates are rejected).
const DRAWS_PER_FRESH_SET: usize = 4;

/// A candidate that reuses part of a previous set: the LP may assign up to the
/// group's PG count to it and earns `bonus` (slots kept in place) per PG.
#[derive(Debug, Clone)]
pub(crate) struct Tier {
    pub cand: usize,
    pub group: usize,
    pub bonus: f64,
}

/// The candidate sets and how they relate to the previous placement.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    /// Sorted OSD indices, `k` per set.
    pub sets: Vec<Vec<u32>>,
    pub index: HashMap<Vec<u32>, usize>,
    pub tiers: Vec<Tier>,
    /// PGs per previous group (a group is a distinct set of previous usable members).
    pub group_count: Vec<u32>,
    /// How many valid sets exist in total.
    pub space: f64,
    /// Whether fresh sets were sampled because the space exceeds the budget.
    pub sampled: bool,
}

impl Candidates {
    fn add(&mut self, mut set: Vec<u32>) -> usize {
        set.sort_unstable();
        let next = self.sets.len();
        *self.index.entry(set.clone()).or_insert_with(|| {
            self.sets.push(set);
            next
        })
    }

    pub fn generate(layout: &PoolLayout, prev: &Previous, rng: &mut impl Rng) -> Self {
        let k = layout.k;
        let budget = layout.rules.max_osd_combinations;
        let n = layout.osds.len();
        let mut c = Self {
            space: combination_space(layout),
            ..Self::default()
        };

        let mut group_of: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut groups: Vec<Vec<u32>> = Vec::new();
        let mut load = vec![0.0f64; n];
        for i in 0..prev.slots.len() {
            let m = prev.members(i);
            if m.is_empty() {
                continue;
            }
            for &x in &m {
                load[x as usize] += 1.0;
            }
            let g = *group_of.entry(m.clone()).or_insert_with(|| {
                groups.push(m);
                c.group_count.push(0);
                groups.len() - 1
            });
            c.group_count[g] += 1;
        }
        let mut deficit: Vec<f64> = layout
            .target
            .iter()
            .zip(&load)
            .map(|(t, l)| t - l)
            .collect();

        for (g, m) in groups.iter().enumerate() {
            if m.len() == k {
                let cand = c.add(m.clone());
                c.tiers.push(Tier {
                    cand,
                    group: g,
                    bonus: k as f64,
                });
            }
        }
        let reuse_budget = c.sets.len()
            + (budget.saturating_sub(c.sets.len()) as f64 * REUSE_BUDGET_SHARE) as usize;

        // Repairs: fill the lost slots of incomplete previous sets with the most
        // under-loaded OSDs of unused domains, a few different ways.
        for (g, m) in groups.iter().enumerate().filter(|(_, m)| m.len() < k) {
            let mut tried: Vec<u32> = Vec::new();
            for _ in 0..REPAIR_OPTIONS {
                if c.sets.len() >= reuse_budget {
                    break;
                }
                let mut set = m.clone();
                while set.len() < k {
                    let pick = best_by_deficit(layout, &deficit, &set, &tried)
                        .or_else(|| best_by_deficit(layout, &deficit, &set, &[]))
                        .expect("k never exceeds the number of failure domains");
                    set.push(pick);
                }
                let share = f64::from(c.group_count[g]) / REPAIR_OPTIONS as f64;
                for &x in &set[m.len()..] {
                    deficit[x as usize] -= share;
                    tried.push(x);
                }
                let cand = c.add(set);
                c.tiers.push(Tier {
                    cand,
                    group: g,
                    bonus: m.len() as f64,
                });
            }
        }

        // Swaps: move one slot of a previous set to an under-loaded OSD, taking it
        // from the set's member in the same domain, else its most over-loaded one.
        let mut needy: Vec<u32> = (0..n as u32)
            .filter(|&b| deficit[b as usize] >= 0.5)
            .collect();
        needy.sort_by(|&a, &b| {
            deficit[b as usize]
                .total_cmp(&deficit[a as usize])
                .then(a.cmp(&b))
        });
        let mut complete: Vec<usize> = (0..groups.len())
            .filter(|&g| groups[g].len() == k)
            .collect();
        complete.shuffle(rng);
        let mut cursor = 0;
        for b in needy {
            let mut want = (deficit[b as usize] * SWAPS_PER_SLOT).ceil() as usize;
            let bd = layout.domain_of[b as usize];
            for _ in 0..complete.len() {
                if want == 0 || c.sets.len() >= reuse_budget {
                    break;
                }
                let g = complete[cursor % complete.len()];
                cursor += 1;
                let m = &groups[g];
                if m.contains(&b) {
                    continue;
                }
                let out = match m.iter().position(|&a| layout.domain_of[a as usize] == bd) {
                    Some(p) => p,
                    None => (0..m.len())
                        .min_by(|&x, &y| deficit[m[x] as usize].total_cmp(&deficit[m[y] as usize]))
                        .expect("complete sets are not empty"),
                };
                deficit[m[out] as usize] += 1.0 / SWAPS_PER_SLOT;
                let mut set = m.clone();
                set[out] = b;
                let cand = c.add(set);
                c.tiers.push(Tier {
                    cand,
                    group: g,
                    bonus: (k - 1) as f64,
                });
                want -= 1;
            }
        }

        let fresh_budget = budget.saturating_sub(c.sets.len());
        if c.space <= fresh_budget as f64 {
            enumerate(layout, &mut Vec::with_capacity(k), 0, &mut c);
        } else {
            c.sampled = true;
            sample(layout, budget, rng, &mut c);
        }
        c
    }
}

/// The under-loaded OSD (largest deficit) whose domain `set` does not use yet,
/// avoiding `avoid`; ties go to the lower index so results are reproducible.
fn best_by_deficit(
    layout: &PoolLayout,
    deficit: &[f64],
    set: &[u32],
    avoid: &[u32],
) -> Option<u32> {
    let used: Vec<u32> = set.iter().map(|&x| layout.domain_of[x as usize]).collect();
    (0..layout.osds.len() as u32)
        .filter(|&x| !used.contains(&layout.domain_of[x as usize]) && !avoid.contains(&x))
        .min_by(|&a, &b| deficit[b as usize].total_cmp(&deficit[a as usize]))
}

/// Number of valid sets: the `k`-th elementary symmetric polynomial of the
/// domain sizes (choose `k` domains, then one OSD in each). May be astronomically
/// large, hence `f64`.
fn combination_space(layout: &PoolLayout) -> f64 {
    let k = layout.k;
    let mut e = vec![0.0f64; k + 1];
    e[0] = 1.0;
    for d in &layout.domains {
        for j in (1..=k).rev() {
            e[j] += e[j - 1] * d.len() as f64;
        }
    }
    e[k]
}

/// Adds every valid set (only called when they all fit in the budget).
fn enumerate(layout: &PoolLayout, set: &mut Vec<u32>, from_domain: usize, c: &mut Candidates) {
    if set.len() == layout.k {
        c.add(set.clone());
        return;
    }
    let left = layout.k - set.len();
    for d in from_domain..=layout.domains.len() - left {
        for &x in &layout.domains[d] {
            set.push(x);
            enumerate(layout, set, d + 1, c);
            set.pop();
        }
    }
}

/// Fills the budget with random sets: first one containing each OSD (so every
/// OSD can get load), then draws weighted by ideal shares.
fn sample(layout: &PoolLayout, budget: usize, rng: &mut impl Rng, c: &mut Candidates) {
    let k = layout.k;
    let domain_cdf = cdf(layout.domain_target.iter().copied());
    let osd_cdf: Vec<Vec<f64>> = layout
        .domains
        .iter()
        .map(|m| cdf(m.iter().map(|&x| layout.target[x as usize])))
        .collect();
    let draw_osd = |d: usize, rng: &mut dyn rand::RngCore| -> u32 {
        layout.domains[d][pick(&osd_cdf[d], rng.gen::<f64>())]
    };
    // Draws `k - set.len()` more distinct domains by weight; rejection is cheap
    // because k is small next to the domain count, and bounded when it is not.
    let fill = |set: &mut Vec<u32>, rng: &mut dyn rand::RngCore| -> bool {
        let mut used: Vec<usize> = set
            .iter()
            .map(|&x| layout.domain_of[x as usize] as usize)
            .collect();
        let mut tries = 0;
        while set.len() < k {
            tries += 1;
            if tries > 64 * k {
                return false;
            }
            let d = pick(&domain_cdf, rng.gen::<f64>());
            if !used.contains(&d) {
                used.push(d);
                set.push(draw_osd(d, rng));
            }
        }
        true
    };
    let mut order: Vec<u32> = (0..layout.osds.len() as u32).collect();
    order.shuffle(rng);
    for x in order {
        if c.sets.len() >= budget {
            return;
        }
        let mut set = vec![x];
        if fill(&mut set, rng) {
            c.add(set);
        }
    }
    let wanted = budget.saturating_sub(c.sets.len());
    for _ in 0..wanted * DRAWS_PER_FRESH_SET {
        if c.sets.len() >= budget {
            return;
        }
        let mut set = Vec::with_capacity(k);
        if fill(&mut set, rng) {
            c.add(set);
        }
    }
}

fn cdf(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

/// Index drawn from a cumulative weight table with uniform `u` in [0, 1).
fn pick(cdf: &[f64], u: f64) -> usize {
    let total = cdf.last().copied().unwrap_or(0.0);
    cdf.partition_point(|&c| c <= u * total).min(cdf.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{OsdInfo, OsdNum, PlacementTree, PoolId, PoolRules};
    use rand::SeedableRng;

    fn layout(hosts: usize, per_host: usize, pg_size: usize, budget: usize) -> PoolLayout {
        let osds = (0..hosts * per_host)
            .map(|i| OsdInfo::new(OsdNum(i as u64 + 1), format!("h{}", i / per_host), 1000))
            .collect();
        let tree =
            PlacementTree::new(osds, &serde_json::Value::Null, &serde_json::Value::Null).unwrap();
        let mut rules = PoolRules::replicated(PoolId(1), pg_size, 1, 64);
        rules.max_osd_combinations = budget;
        PoolLayout::new(&tree, &rules).unwrap()
    }

    #[test]
    fn enumerates_small_spaces_and_samples_large_ones() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let l = layout(4, 3, 3, 10000);
        let prev = Previous::new(&l, None);
        let c = Candidates::generate(&l, &prev, &mut rng);
        // 4 choose 3 host triples × 3³ OSD choices.
        assert_eq!(c.space, 108.0);
        assert_eq!(c.sets.len(), 108);
        assert!(!c.sampled);

        let l = layout(20, 10, 3, 500);
        let prev = Previous::new(&l, None);
        let c = Candidates::generate(&l, &prev, &mut rng);
        assert!(c.sampled);
        assert_eq!(c.sets.len(), 500);
        for s in &c.sets {
            let mut d: Vec<u32> = s.iter().map(|&x| l.domain_of[x as usize]).collect();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3, "one OSD per failure domain");
        }
        // The covering pass puts every OSD in at least one set.
        let mut seen = vec![false; l.osds.len()];
        s_iter(&c).for_each(|x| seen[x as usize] = true);
        assert!(seen.iter().all(|&s| s));
    }

    fn s_iter(c: &Candidates) -> impl Iterator<Item = u32> + '_ {
        c.sets.iter().flatten().copied()
    }
}
