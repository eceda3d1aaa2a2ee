//! PG placement: which OSDs hold each PG of a pool.
//!
//! Pure functions, no etcd: the caller reads the OSD list, `config/node_placement`,
//! `placement_levels`, `config/pools` and the previous `pg/config`, and writes the
//! returned [`PgConfig`] back.
//!
//! # Algorithm (per pool)
//! 1. [`PoolLayout`]: OSDs in placement (size × reweight > 0, not out unless
//!    noout), under `root_node`, with all `osd_tags`; grouped by failure domain;
//!    each OSD's ideal share of the `pg_count × pg_size` slots (see [`Uniformity`]).
//! 2. First placement (no previous PGs): whole-number loads at the integer
//!    bound, laid out by failure domain in one pass (`stripe`,
//!    [`PlacementMethod::Striped`]), then the single-slot refinement for the
//!    rare domain that cannot hold its OSDs' rounded shares.
//! 3. With a previous placement, the incremental result comes first: keep every
//!    previous slot that is still usable, fill lost slots greedily, then move
//!    single slots towards the best whole-number loads (`refine`). If that moves
//!    nothing the placement is [`PlacementMethod::Unchanged`]; if it reaches the
//!    integer bound no placement can be more uniform, and it moves close to the
//!    minimum of data, so it is taken ([`PlacementMethod::Incremental`]).
//! 4. Otherwise (the refinement got stuck short of the bound, e.g. after a
//!    previous placement that broke failure domains): candidate OSD sets, at
//!    most `max_osd_combinations` (or the number of distinct previous sets, if
//!    larger, as those are always kept): previous sets, their repairs and
//!    single-OSD swaps, then all or a weighted sample of fresh sets
//!    (`candidates`).
//! 5. A linear program (good_lp + microlp) picks how many PGs each set gets,
//!    balance first, kept slots second (`lp` explains the model and the solver
//!    choice). If it fails (time limit, numerical trouble) placement falls back
//!    to greedy filling and says so ([`PlacementMethod::GreedyFallback`]).
//! 6. PG numbers get sets: unchanged sets stay, swapped sets return to the PG
//!    they came from, the rest by largest overlap; PGs the LP left out are
//!    filled greedily, then the same single-slot refinement removes rounding
//!    loss. The incremental result still wins unless the LP one is more uniform
//!    by at least [`WORTH_MOVING`] and leaves every PG the previous members it
//!    must keep to stay writable while it recovers (`pg_minsize`).
//! 7. Primaries: among up OSDs, balanced, honouring `primary_affinity_tags`.
//!
//! # Why not the LP for everything, measured
//! `placement_bench` (2-core machine): the LP over 10,000 sampled sets took
//! 5.5–5.9 s for 1000 OSDs / 126 hosts / 4096 PGs (its time limit nearly hit)
//! and cannot be built at all for 10,000 OSDs; the striped construction reaches
//! the integer bound in ~5 ms and ~0.4 s respectively (peak memory under
//! 40 MiB). It uses more distinct OSD sets than the LP's vertex solutions
//! (3634 against 909 for 1000 OSDs, of 1.6e8 possible): OSDs alternate inside
//! their host's run, which is what keeps re-placements cheap (see `stripe`);
//! hosts still share PGs with few other hosts. Re-placements after ±1 OSD, ±1 host or a reweight
//! stayed incremental in every benchmark scenario, moving 0.96–1.03× the
//! share that must move (1.15× on a reweight whose share is 2.6 slots: whole
//! slots). The LP remains for re-placements the refinement cannot finish.

mod assign;
mod candidates;
mod error;
mod layout;
mod lp;
mod previous;
mod primary;
mod refine;
mod rules;
mod straw2;
mod stripe;
#[cfg(test)]
mod tests;
mod tree;
mod types;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use serde_json::Value;

pub use error::PlacementError;
pub use layout::{Evaluation, PoolLayout, Uniformity};
pub use rules::{PoolRules, PoolScheme, DEFAULT_MAX_OSD_COMBINATIONS, MAX_PG_COUNT, MAX_PG_SIZE};
pub use straw2::straw2_placement;
pub use tree::{
    OsdInfo, PlacementLevels, PlacementTree, DEFAULT_HOST_RANK, DEFAULT_OSD_RANK, HOST_LEVEL,
    OSD_LEVEL,
};
pub use types::{OsdNum, PgConfig, PgNum, PgPlacement, PoolId, PoolPgConfig};

use previous::{Previous, Slots};

/// Default LP time limit (the LP only runs when the incremental refinement is
/// stuck short of the integer bound). The 10000-set LP of a 1000-OSD pool took
/// 4.2–6.0 s on the 2-core development machine; 7 s leaves some room and keeps
/// the whole pool under the 10 s budget when the limit hits and the greedy
/// fallback runs (it takes well under 1 s).
pub const DEFAULT_LP_TIME_LIMIT: Duration = Duration::from_secs(7);
/// Float tolerance when checking that a placement reaches the integer bound.
const BOUND_EPS: f64 = 1e-9;
/// Usable-capacity gain (fraction of the ideal) for which the LP result is
/// taken over the incremental one although it moves more data: below half a
/// percent, the extra movement costs more than the capacity it frees.
pub const WORTH_MOVING: f64 = 0.005;

/// Knobs that are not pool options.
#[derive(Debug, Clone)]
pub struct PlacementOptions {
    /// Seed of the candidate sampler; the same inputs and seed give the same output.
    pub seed: u64,
    /// Wall-clock limit of one LP solve.
    pub lp_time_limit: Duration,
}

impl Default for PlacementOptions {
    fn default() -> Self {
        Self {
            seed: 0x5EED,
            lp_time_limit: DEFAULT_LP_TIME_LIMIT,
        }
    }
}

/// How a pool's placement was produced.
#[derive(Debug, Clone, PartialEq)]
pub enum PlacementMethod {
    /// The previous OSD sets were complete, valid and already balanced; only
    /// primaries may change (e.g. when a primary went down).
    Unchanged,
    /// Previous slots kept, lost ones filled greedily, then single-slot moves:
    /// taken when it reaches the integer bound (the LP is then not run) or when
    /// the LP result is not worth its extra movement.
    Incremental {
        /// Efficiency the LP reached, when it was run.
        lp_efficiency: Option<f64>,
    },
    /// First placement: whole-number loads at the integer bound laid out by
    /// failure domain (`stripe`), then integer refinement.
    Striped,
    /// LP over candidate sets, then integer refinement.
    Lp,
    /// The LP failed; previous sets were kept, completed greedily and refined.
    GreedyFallback {
        /// The solver's error.
        reason: String,
    },
}

/// What placement did for one pool, for logs and operators.
#[derive(Debug, Clone)]
pub struct PlacementReport {
    /// Pool id.
    pub pool: PoolId,
    /// How the placement was produced.
    pub method: PlacementMethod,
    /// OSDs the pool may use.
    pub eligible_osds: usize,
    /// Failure domains among them.
    pub failure_domains: usize,
    /// OSDs per PG actually placed; below `pg_size` the pool is degraded for lack
    /// of failure domains.
    pub effective_size: usize,
    /// Candidate sets given to the LP.
    pub combinations_considered: usize,
    /// Valid sets in total (may exceed any budget by far).
    pub combination_space: f64,
    /// Fresh candidates were sampled because the space exceeds `max_osd_combinations`.
    pub sampled: bool,
    /// Distinct OSD sets in use (fewer sets means fewer peers per OSD).
    pub distinct_sets: usize,
    /// Slots filled outside the LP (PGs it left out, or everything on fallback).
    pub greedy_slots: usize,
    /// Single-slot moves made by the integer refinement.
    pub refine_moves: usize,
    /// Balance of the result.
    pub uniformity: Uniformity,
    /// PGs whose `osd_set` changed (PGs new to the pool are not counted).
    pub pgs_changed: usize,
    /// Slots that now name an OSD that did not hold them: data to move.
    pub slots_moved: usize,
    /// PGs without a previous entry.
    pub new_pgs: usize,
    /// Time in the LP solver.
    pub lp_time: Duration,
    /// Total time for the pool.
    pub solve_time: Duration,
}

impl fmt::Display for PlacementReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match &self.method {
            PlacementMethod::Unchanged => "unchanged".to_owned(),
            PlacementMethod::Incremental {
                lp_efficiency: None,
            } => "incremental".to_owned(),
            PlacementMethod::Incremental {
                lp_efficiency: Some(e),
            } => {
                format!("incremental (LP reached {:.2}%)", e * 100.0)
            }
            PlacementMethod::Striped => "striped".to_owned(),
            PlacementMethod::Lp => "lp".to_owned(),
            PlacementMethod::GreedyFallback { reason } => format!("greedy fallback ({reason})"),
        };
        // Candidate sets and LP time only mean something when the LP ran.
        let lp = if self.combinations_considered > 0 {
            format!(
                ", LP over {} of {:.3e} sets{} in {:.3}s",
                self.combinations_considered,
                self.combination_space,
                if self.sampled { " sampled" } else { "" },
                self.lp_time.as_secs_f64(),
            )
        } else {
            String::new()
        };
        write!(
            f,
            "pool {}: {method}, {} OSDs in {} domains, size {}, {} sets in use, uniformity {:.2}% \
             (integer bound {:.2}%), {} PGs changed, {} slots moved, {} refine moves, {:.3}s{lp}",
            self.pool,
            self.eligible_osds,
            self.failure_domains,
            self.effective_size,
            self.distinct_sets,
            self.uniformity.efficiency * 100.0,
            self.uniformity.integer_bound * 100.0,
            self.pgs_changed,
            self.slots_moved,
            self.refine_moves,
            self.solve_time.as_secs_f64(),
        )
    }
}

/// A pool's new PGs and the report on how they were obtained.
#[derive(Debug, Clone)]
pub struct PoolPlacement {
    /// The pool's part of `pg/config`.
    pub config: PoolPgConfig,
    /// What was done.
    pub report: PlacementReport,
}

/// Places one pool. `previous` is the pool's current part of `pg/config`, used
/// to move as little data as possible.
pub fn place_pool(
    tree: &PlacementTree,
    rules: &PoolRules,
    previous: Option<&PoolPgConfig>,
    opts: &PlacementOptions,
) -> Result<PoolPlacement, PlacementError> {
    let started = Instant::now();
    let layout = PoolLayout::new(tree, rules)?;
    let prev = Previous::new(&layout, previous);
    let mut report = PlacementReport {
        pool: rules.id,
        method: PlacementMethod::Lp,
        eligible_osds: layout.osds.len(),
        failure_domains: layout.domains.len(),
        effective_size: layout.k,
        combinations_considered: 0,
        combination_space: 0.0,
        sampled: false,
        distinct_sets: 0,
        greedy_slots: 0,
        refine_moves: 0,
        uniformity: Uniformity::default(),
        pgs_changed: 0,
        slots_moved: 0,
        new_pgs: prev.present.iter().filter(|&&p| !p).count(),
        lp_time: Duration::ZERO,
        solve_time: Duration::ZERO,
    };

    // Incremental candidate: keep every previous slot that is still usable,
    // fill the rest greedily, then single-slot moves. Its data movement is close
    // to the minimum by construction (each move fixes one slot of imbalance).
    let has_previous = prev.present.iter().any(|&p| p);
    let mut incremental = None;
    if has_previous {
        let mut pgs = prev.slots.clone();
        let greedy = assign::fill_missing(&layout, &mut pgs);
        let moves = refine::refine(&layout, &prev, &mut pgs);
        let verbatim =
            (0..prev.raw.len()).all(|i| prev.present[i] && prev.raw[i].len() == rules.pg_size);
        if greedy == 0 && moves == 0 && verbatim {
            report.method = PlacementMethod::Unchanged;
            return Ok(finish(&layout, &prev, pgs, report, started));
        }
        let u = Uniformity::measure(&assign::loads(&layout, &pgs), &layout.target);
        if u.efficiency >= u.integer_bound - BOUND_EPS {
            report.method = PlacementMethod::Incremental {
                lp_efficiency: None,
            };
            report.greedy_slots = greedy;
            report.refine_moves = moves;
            return Ok(finish(&layout, &prev, pgs, report, started));
        }
        incremental = Some((pgs, u, greedy, moves));
    }

    let mut rng = rand::rngs::SmallRng::seed_from_u64(
        opts.seed ^ u64::from(rules.id.0).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    if !has_previous {
        let mut pgs = stripe::place(&layout, &mut rng);
        report.method = PlacementMethod::Striped;
        report.refine_moves = refine::refine(&layout, &prev, &mut pgs);
        return Ok(finish(&layout, &prev, pgs, report, started));
    }
    let cands = candidates::Candidates::generate(&layout, &prev, &mut rng);
    report.combinations_considered = cands.sets.len();
    report.combination_space = cands.space;
    report.sampled = cands.sampled;
    let lp_started = Instant::now();
    let solved = lp::solve(&layout, &cands, opts.lp_time_limit);
    report.lp_time = lp_started.elapsed();
    let mut pgs = match solved {
        Ok(sol) => {
            let counts = assign::integerize(&sol.value, rules.pg_count);
            assign::assign(&layout, &prev, &cands.sets, counts, &cands.index)
        }
        Err(reason) => {
            report.method = PlacementMethod::GreedyFallback { reason };
            prev.slots.clone()
        }
    };
    report.greedy_slots = assign::fill_missing(&layout, &mut pgs);
    report.refine_moves = refine::refine(&layout, &prev, &mut pgs);
    if let Some((inc, u, greedy, moves)) = incremental {
        let lp = Uniformity::measure(&assign::loads(&layout, &pgs), &layout.target);
        let ordered = rules.ordered_slots();
        let keeps_minsize = (0..pgs.len())
            .all(|i| prev.kept(ordered, i, &pgs[i]) >= prev.required_kept(&layout, i));
        if report.method == PlacementMethod::Lp
            && (u.efficiency >= lp.efficiency - WORTH_MOVING || !keeps_minsize)
        {
            report.method = PlacementMethod::Incremental {
                lp_efficiency: Some(lp.efficiency),
            };
            report.greedy_slots = greedy;
            report.refine_moves = moves;
            return Ok(finish(&layout, &prev, inc, report, started));
        }
    }
    Ok(finish(&layout, &prev, pgs, report, started))
}

/// Chooses primaries, builds the pool's `pg/config` and completes the report.
fn finish(
    layout: &PoolLayout,
    prev: &Previous,
    pgs: Vec<Slots>,
    mut report: PlacementReport,
    started: Instant,
) -> PoolPlacement {
    let primaries = primary::choose(layout, prev, &pgs);
    let ordered = layout.rules.ordered_slots();
    let mut config = PoolPgConfig::default();
    let mut sets = HashSet::new();
    for (i, (pg, primary)) in pgs.iter().zip(primaries).enumerate() {
        let osd_set: Vec<OsdNum> = pg
            .iter()
            .map(|s| s.map_or(OsdNum::NONE, |x| layout.osds[x as usize]))
            .collect();
        if prev.present[i] {
            let old = &prev.raw[i];
            let moved = osd_set
                .iter()
                .enumerate()
                .filter(|&(j, o)| {
                    !o.is_none()
                        && if ordered {
                            old.get(j) != Some(o)
                        } else {
                            !old.contains(o)
                        }
                })
                .count();
            report.slots_moved += moved;
            let changed = if ordered {
                osd_set != *old
            } else {
                let mut a: Vec<OsdNum> = osd_set.iter().copied().filter(|o| !o.is_none()).collect();
                let mut b: Vec<OsdNum> = old.iter().copied().filter(|o| !o.is_none()).collect();
                a.sort_unstable();
                b.sort_unstable();
                a != b
            };
            report.pgs_changed += usize::from(changed);
        }
        let mut members: Vec<u32> = pg.iter().flatten().copied().collect();
        members.sort_unstable();
        sets.insert(members);
        config.pgs.insert(
            PgNum(i as u32 + 1),
            PgPlacement {
                osd_set,
                primary: primary.map_or(OsdNum::NONE, |x| layout.osds[x as usize]),
                pause: false,
            },
        );
    }
    report.distinct_sets = sets.len();
    report.uniformity = Uniformity::measure(&assign::loads(layout, &pgs), &layout.target);
    report.solve_time = started.elapsed();
    PoolPlacement { config, report }
}

/// The placement of every pool.
#[derive(Debug, Clone)]
pub struct ClusterPlacement {
    /// The new `pg/config`. Pools that failed keep their previous entry, so a
    /// configuration mistake in one pool never unmaps another pool's data.
    pub config: PgConfig,
    /// Per pool: its report, or why it could not be placed.
    pub reports: BTreeMap<PoolId, Result<PlacementReport, PlacementError>>,
}

/// Places every pool of `config/pools` (`pools`, the etcd value).
///
/// Fails as a whole only when `pools` is not an object of numeric pool ids;
/// per-pool problems (invalid options, infeasible rules) go to the reports.
pub fn place_all(
    tree: &PlacementTree,
    pools: &Value,
    previous: &PgConfig,
    opts: &PlacementOptions,
) -> Result<ClusterPlacement, PlacementError> {
    let invalid = |reason: String| PlacementError::InvalidField {
        context: "config/pools".into(),
        field: "pools".into(),
        reason,
    };
    let map = match pools {
        Value::Null => {
            return Ok(ClusterPlacement {
                config: PgConfig::default(),
                reports: BTreeMap::new(),
            })
        }
        Value::Object(m) => m,
        other => return Err(invalid(format!("expected an object, got {other}"))),
    };
    let mut out = ClusterPlacement {
        config: PgConfig::default(),
        reports: BTreeMap::new(),
    };
    for (key, pool) in map {
        let id = key
            .parse::<u32>()
            .ok()
            .filter(|&id| id > 0)
            .map(PoolId)
            .ok_or_else(|| invalid(format!("pool id {key:?} is not a positive integer")))?;
        let prev = previous.items.get(&id);
        let placed =
            PoolRules::from_json(id, pool).and_then(|rules| place_pool(tree, &rules, prev, opts));
        match placed {
            Ok(p) => {
                out.config.items.insert(id, p.config);
                out.reports.insert(id, Ok(p.report));
            }
            Err(e) => {
                if let Some(prev) = prev {
                    out.config.items.insert(id, prev.clone());
                }
                out.reports.insert(id, Err(e));
            }
        }
    }
    Ok(out)
}
