//! What one pool can use: eligible OSDs, their failure domains and ideal shares,
//! and the uniformity metric used by the LP placement and the straw2 baseline alike.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::tree::PlacementTree;
use super::{OsdNum, PlacementError, PoolPgConfig, PoolRules};

/// The OSDs a pool may use, grouped into failure domains, with their ideal load.
///
/// Internally OSDs are dense indices into [`PoolLayout::eligible_osds`].
#[derive(Debug, Clone)]
pub struct PoolLayout {
    pub(crate) rules: PoolRules,
    pub(crate) osds: Vec<OsdNum>,
    pub(crate) index: HashMap<OsdNum, u32>,
    pub(crate) weight: Vec<f64>,
    pub(crate) up: Vec<bool>,
    pub(crate) primary_affinity: Vec<bool>,
    pub(crate) domain_of: Vec<u32>,
    pub(crate) domain_names: Vec<String>,
    pub(crate) domains: Vec<Vec<u32>>,
    pub(crate) domain_target: Vec<f64>,
    pub(crate) target: Vec<f64>,
    /// Filled slots per PG: `pg_size`, or the number of failure domains if lower.
    pub(crate) k: usize,
}

impl PoolLayout {
    /// Selects the pool's OSDs (in placement, under `root_node`, with `osd_tags`),
    /// groups them by failure domain and computes every OSD's ideal share.
    ///
    /// Errors: unknown failure-domain level or root node, and fewer non-empty
    /// failure domains than `pg_minsize` ([`PlacementError::Infeasible`]). With at
    /// least `pg_minsize` but fewer than `pg_size` domains the pool is placed
    /// degraded (one OSD per domain, missing slots 0), which keeps it writable.
    pub fn new(tree: &PlacementTree, rules: &PoolRules) -> Result<Self, PlacementError> {
        rules.validate()?;
        let rank = tree.levels().rank(&rules.failure_domain).ok_or_else(|| {
            PlacementError::UnknownLevel {
                context: format!("pool {} failure_domain", rules.id),
                level: rules.failure_domain.clone(),
            }
        })?;
        if let Some(root) = &rules.root_node {
            if !tree.has_node(root) {
                return Err(PlacementError::RootNotFound {
                    pool: rules.id.0,
                    root: root.clone(),
                });
            }
        }
        let mut picked: Vec<(OsdNum, usize)> = tree
            .osds()
            .iter()
            .enumerate()
            .filter(|(i, o)| {
                o.in_placement()
                    && o.has_tags(&rules.osd_tags)
                    && match rules.root_node.as_deref() {
                        Some(root) => tree.is_under(tree.osd_node(*i), root),
                        None => true,
                    }
            })
            .map(|(i, o)| (o.num, i))
            .collect();
        picked.sort_unstable();

        let mut layout = Self {
            rules: rules.clone(),
            osds: Vec::with_capacity(picked.len()),
            index: HashMap::with_capacity(picked.len()),
            weight: Vec::with_capacity(picked.len()),
            up: Vec::with_capacity(picked.len()),
            primary_affinity: Vec::with_capacity(picked.len()),
            domain_of: Vec::with_capacity(picked.len()),
            domain_names: Vec::new(),
            domains: Vec::new(),
            domain_target: Vec::new(),
            target: Vec::new(),
            k: 0,
        };
        let mut domain_ids: HashMap<&str, u32> = HashMap::new();
        for (num, i) in picked {
            let o = &tree.osds()[i];
            let node = tree.osd_node(i);
            // With failure_domain "osd" the rank is the OSD level's, so each OSD is its own domain.
            let domain = tree.domain_of(node, rank);
            let next = domain_ids.len() as u32;
            let d = *domain_ids.entry(domain).or_insert(next);
            if d == next {
                layout.domain_names.push(domain.to_owned());
                layout.domains.push(Vec::new());
            }
            let idx = layout.osds.len() as u32;
            layout.index.insert(num, idx);
            layout.osds.push(num);
            layout.weight.push(o.weight());
            layout.up.push(o.up);
            layout.primary_affinity.push(
                !rules.primary_affinity_tags.is_empty() && o.has_tags(&rules.primary_affinity_tags),
            );
            layout.domain_of.push(d);
            layout.domains[d as usize].push(idx);
        }
        let found = layout.domains.len();
        if found < rules.pg_minsize {
            return Err(PlacementError::Infeasible {
                pool: rules.id.0,
                needed: rules.pg_minsize,
                found,
                level: rules.failure_domain.clone(),
            });
        }
        layout.k = rules.pg_size.min(found);
        let domain_weight: Vec<f64> = layout
            .domains
            .iter()
            .map(|m| m.iter().map(|&i| layout.weight[i as usize]).sum())
            .collect();
        layout.domain_target = water_fill(&domain_weight, f64::from(rules.pg_count), layout.k);
        layout.target = (0..layout.osds.len())
            .map(|i| {
                let d = layout.domain_of[i] as usize;
                layout.domain_target[d] * layout.weight[i] / domain_weight[d]
            })
            .collect();
        Ok(layout)
    }

    /// Eligible OSDs, ascending.
    pub fn eligible_osds(&self) -> &[OsdNum] {
        &self.osds
    }

    /// Name of the failure domain of an eligible OSD.
    pub fn failure_domain(&self, osd: OsdNum) -> Option<&str> {
        self.index
            .get(&osd)
            .map(|&i| self.domain_names[self.domain_of[i as usize] as usize].as_str())
    }

    /// Number of failure domains holding eligible OSDs.
    pub fn failure_domain_count(&self) -> usize {
        self.domains.len()
    }

    /// Ideal number of PG slots on an eligible OSD (see [`Uniformity`]).
    pub fn target(&self, osd: OsdNum) -> Option<f64> {
        self.index.get(&osd).map(|&i| self.target[i as usize])
    }

    /// OSDs per PG that placement fills: `pg_size`, or fewer when the pool has
    /// fewer failure domains (then the pool is placed degraded).
    pub fn effective_size(&self) -> usize {
        self.k
    }

    /// Whether OSD set `set` (a full `osd_set`) respects this pool's rules: every
    /// non-zero OSD is eligible and no two share a failure domain.
    pub fn set_is_valid(&self, set: &[OsdNum]) -> bool {
        let mut seen = Vec::with_capacity(set.len());
        set.iter()
            .filter(|o| !o.is_none())
            .all(|o| match self.index.get(o) {
                Some(&i) => {
                    let d = self.domain_of[i as usize];
                    !seen.contains(&d) && {
                        seen.push(d);
                        true
                    }
                }
                None => false,
            })
    }

    /// Measures a pool's `pg/config` against these rules.
    pub fn evaluate(&self, cfg: &PoolPgConfig) -> Evaluation {
        let mut loads = vec![0u32; self.osds.len()];
        let mut eval = Evaluation::default();
        for pg in 1..=self.rules.pg_count {
            let Some(p) = cfg.get(super::PgNum(pg)) else {
                eval.missing_slots += self.rules.pg_size;
                continue;
            };
            if !self.set_is_valid(&p.osd_set) {
                eval.invalid_pgs += 1;
            }
            eval.missing_slots += self
                .rules
                .pg_size
                .saturating_sub(p.osd_set.iter().filter(|o| !o.is_none()).count());
            for o in &p.osd_set {
                if let Some(&i) = self.index.get(o) {
                    loads[i as usize] += 1;
                }
            }
        }
        eval.uniformity = Uniformity::measure(&loads, &self.target);
        eval
    }
}

/// What [`PoolLayout::evaluate`] finds in a pool's `pg/config`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evaluation {
    /// PGs with an ineligible OSD or two OSDs in one failure domain.
    pub invalid_pgs: usize,
    /// Empty slots (including absent PGs) compared with `pg_size` per PG.
    pub missing_slots: usize,
    /// Load balance.
    pub uniformity: Uniformity,
}

/// How evenly a placement loads OSDs relative to their ideal, size-weighted share.
///
/// The ideal share `target_i` of OSD `i` is its part of the pool's PG slots
/// (`pg_count` × filled slots per PG) proportional to size × reweight, except that
/// a failure domain can hold at most one slot of each PG: domains heavier than
/// that are capped at `pg_count` and the rest is spread over the others by weight
/// (water-filling), then split inside the domain by OSD weight.
///
/// `efficiency` is the headline "uniformity": `min_i target_i / load_i`, capped at 1.
/// A pool is full when its most over-loaded OSD is full, so this is the fraction
/// of the ideal pool capacity the placement makes usable (the same notion as the
/// 96–99 % quoted for LP placement against Ceph's 80–90 %).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Uniformity {
    /// `min(1, 1 / max_ratio)`: usable fraction of the ideal pool capacity.
    pub efficiency: f64,
    /// `max_i load_i / target_i`: the most over-loaded OSD.
    pub max_ratio: f64,
    /// `min_i load_i / target_i`: the most under-loaded OSD.
    pub min_ratio: f64,
    /// Best `efficiency` that any whole-number loads with the same total could
    /// reach, ignoring which OSD sets exist. It is below 1 when ideal shares are
    /// fractional and small (e.g. ~12 slots per OSD: one slot is 8 %), so it
    /// tells rounding loss apart from placement loss.
    pub integer_bound: f64,
}

impl Uniformity {
    /// Measures `loads` (slots per OSD) against `targets` (same indexing).
    pub fn measure(loads: &[u32], targets: &[f64]) -> Self {
        let mut max_ratio: f64 = 0.0;
        let mut min_ratio = f64::INFINITY;
        for (&l, &t) in loads.iter().zip(targets) {
            if t > 0.0 {
                max_ratio = max_ratio.max(f64::from(l) / t);
                min_ratio = min_ratio.min(f64::from(l) / t);
            }
        }
        if !min_ratio.is_finite() {
            min_ratio = 0.0;
        }
        let total: u64 = loads.iter().map(|&l| u64::from(l)).sum();
        Self {
            efficiency: if max_ratio > 0.0 {
                (1.0 / max_ratio).min(1.0)
            } else {
                0.0
            },
            max_ratio,
            min_ratio,
            integer_bound: integer_bound(targets, total),
        }
    }
}

/// Best efficiency of any whole-number loads summing to `total`: 1 / r*, where
/// r* is the smallest feasible largest `load / target` (see [`kth_ratio`]).
fn integer_bound(targets: &[f64], total: u64) -> f64 {
    match kth_ratio(targets, total, 0) {
        Some(r) if r > 0.0 => (1.0 / r).min(1.0),
        _ => 0.0,
    }
}

/// The `kth` smallest (1-based) of all `(m − offset) / target_i`, m = 1, 2, …,
/// merging the per-OSD sequences with a heap.
///
/// With offset 0 and kth = `total` this is r*, the smallest largest ratio of
/// whole loads summing to `total`: at least `total` slots fit under it. With
/// offset 1 and kth = `total + 1` it is the largest smallest ratio: giving every
/// OSD ⌈r · target⌉ slots uses at most `total` below it.
fn kth_ratio(targets: &[f64], kth: u64, offset: u32) -> Option<f64> {
    #[derive(PartialEq)]
    struct Next(f64, usize);
    impl Eq for Next {}
    impl PartialOrd for Next {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Next {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
        }
    }
    let mut m = vec![1u32; targets.len()];
    let value = |m: u32, i: usize| f64::from(m - offset) / targets[i];
    let mut heap: BinaryHeap<Reverse<Next>> = (0..targets.len())
        .filter(|&i| targets[i] > 0.0)
        .map(|i| Reverse(Next(value(1, i), i)))
        .collect();
    let mut last = None;
    for _ in 0..kth {
        let Reverse(Next(v, i)) = heap.pop()?;
        last = Some(v);
        m[i] += 1;
        heap.push(Reverse(Next(value(m[i], i), i)));
    }
    last
}

/// Relative tolerance when turning ratios back into slot counts.
const RATIO_TOLERANCE: f64 = 1e-9;

/// Whole-number loads summing to `total` that are as uniform as any can be
/// and as close to `current` as that allows.
///
/// Every OSD gets a band: at most ⌊r* · target⌋ slots (so the largest ratio is
/// the best possible, r*, see [`kth_ratio`]) and at least ⌈r_lo · target⌉ (so
/// the smallest ratio is the best possible too), the lower end clipped to the
/// upper one where shares are tiny. The goal is `current` clamped into each
/// band, then the sum is corrected one slot at a time on the OSDs with room in
/// their band, most over-loaded (or under-loaded) first. Inside the band nothing
/// moves: re-rounding every OSD's slightly changed share after a cluster change
/// would move far more data than the change itself needs.
pub(crate) fn integer_goal(targets: &[f64], current: &[u32], total: u64) -> Vec<u32> {
    let (Some(hi), Some(lo)) = (
        kth_ratio(targets, total, 0),
        kth_ratio(targets, total + 1, 1),
    ) else {
        return vec![0; targets.len()];
    };
    let band = |t: f64| {
        if t <= 0.0 {
            return (0, 0);
        }
        let upper = (hi * t * (1.0 + RATIO_TOLERANCE)).floor() as u32;
        let lower = (lo * t * (1.0 - RATIO_TOLERANCE)).ceil() as u32;
        (lower.min(upper), upper)
    };
    let bands: Vec<(u32, u32)> = targets.iter().map(|&t| band(t)).collect();
    let mut goal: Vec<u32> = current
        .iter()
        .zip(&bands)
        .map(|(&c, &(l, u))| c.clamp(l, u))
        .collect();
    let ratio = |g: u32, i: usize| f64::from(g) / targets[i];
    let mut sum: u64 = goal.iter().map(|&g| u64::from(g)).sum();
    while sum > total {
        let i = (0..goal.len())
            .filter(|&i| goal[i] > bands[i].0)
            .max_by(|&a, &b| {
                ratio(goal[a], a)
                    .total_cmp(&ratio(goal[b], b))
                    .then(b.cmp(&a))
            })
            .expect("lower band ends add up to at most the total");
        goal[i] -= 1;
        sum -= 1;
    }
    while sum < total {
        let i = (0..goal.len())
            .filter(|&i| goal[i] < bands[i].1)
            .min_by(|&a, &b| {
                ratio(goal[a] + 1, a)
                    .total_cmp(&ratio(goal[b] + 1, b))
                    .then(a.cmp(&b))
            })
            .expect("upper band ends add up to at least the total");
        goal[i] += 1;
        sum += 1;
    }
    goal
}

/// Ideal slots per failure domain: proportional to weight, each capped at
/// `pg_count` (one slot per PG), the excess spread over uncapped domains.
fn water_fill(weight: &[f64], pg_count: f64, k: usize) -> Vec<f64> {
    let total = pg_count * k as f64;
    let mut capped = vec![false; weight.len()];
    loop {
        let n_capped = capped.iter().filter(|&&c| c).count();
        let free_weight: f64 = weight
            .iter()
            .zip(&capped)
            .filter(|(_, &c)| !c)
            .map(|(w, _)| w)
            .sum();
        let left = total - pg_count * n_capped as f64;
        let scale = if free_weight > 0.0 {
            left / free_weight
        } else {
            0.0
        };
        let mut changed = false;
        for (c, &w) in capped.iter_mut().zip(weight) {
            if !*c && scale * w > pg_count * (1.0 + 1e-12) {
                *c = true;
                changed = true;
            }
        }
        if !changed {
            return weight
                .iter()
                .zip(&capped)
                .map(|(&w, &c)| if c { pg_count } else { scale * w })
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_fill_caps_heavy_domains() {
        let t = water_fill(&[10.0, 1.0, 1.0, 1.0], 100.0, 3);
        assert_eq!(t[0], 100.0);
        for x in &t[1..] {
            assert!((x - 200.0 / 3.0).abs() < 1e-9);
        }
        let even = water_fill(&[1.0, 1.0, 2.0], 10.0, 2);
        assert_eq!(even, vec![5.0, 5.0, 10.0]);
    }

    #[test]
    fn goal_stays_inside_bands_and_close_to_current() {
        let targets = [122.88; 25];
        let mut current = [128u32; 25];
        current[24] = 0;
        let goal = integer_goal(&targets, &current, 3072);
        assert_eq!(goal.iter().sum::<u32>(), 3072);
        assert_eq!(goal[24], 122);
        assert!(goal[..24].iter().all(|&g| g == 122 || g == 123));
        // Already inside the bands: the goal is the current state.
        assert_eq!(integer_goal(&targets, &goal, 3072), goal);
        // Tiny shares: bands clip, sums still match.
        let goal = integer_goal(&[0.5, 0.5, 2.0], &[0, 0, 3], 3);
        assert_eq!(goal.iter().sum::<u32>(), 3);
    }

    #[test]
    fn uniformity_and_integer_bound() {
        let u = Uniformity::measure(&[10, 10, 12], &[10.0, 11.0, 11.0]);
        assert!((u.max_ratio - 12.0 / 11.0).abs() < 1e-12);
        assert!((u.min_ratio - 10.0 / 11.0).abs() < 1e-12);
        assert!((u.efficiency - 11.0 / 12.0).abs() < 1e-12);
        // 32 slots over targets 10, 11, 11: best is 10/11/11 → efficiency 1.
        assert_eq!(u.integer_bound, 1.0);
        // 3 slots over two OSDs of target 1.5: someone gets 2.
        let u = Uniformity::measure(&[2, 1], &[1.5, 1.5]);
        assert!((u.integer_bound - 0.75).abs() < 1e-12);
    }
}
