//! The linear program: how many PGs each candidate OSD set gets.
//!
//! Variables: `x_c ≥ 0` PGs on candidate set `c`, plus, for each way a candidate
//! reuses a previous set (see [`super::candidates::Tier`]), `y ≥ 0` bounded by
//! the number of PGs that had that previous set.
//!
//! ```text
//! maximise   FILL · (Σ x + Σ y)  +  Σ bonus · y
//! subject to Σ_{c ∋ i} (x_c + y_c) ≤ target_i           for every OSD i
//!            Σ_{y of group g} y ≤ PGs of group g          (groups with several tiers)
//! ```
//!
//! Every set has `k` OSDs and the shares add up to `pg_count × k`, so the
//! capacities alone keep the total at or below `pg_count` (an explicit total
//! row, dense over all sets, cost microlp ~15 % more time at 1000 OSDs). The
//! capacities are the ideal shares, so placing all `pg_count` PGs means a
//! perfectly balanced fractional placement; `FILL` dominates the reuse bonus, so
//! balance comes first and, among balanced placements, the one keeping the most
//! slots in place wins.
//!
//! Solver choice, measured on the 2-core development machine (4096 PGs × 3):
//! - microlp 0.6 (pure-Rust simplex, through good_lp's `microlp` feature) on
//!   this "maximise placed PGs" form: 100 OSDs × 10000 sets in 30–45 ms,
//!   1000 OSDs × 10000 sets in 4.2–6.0 s (1.9 s in a first prototype drawing
//!   sets uniformly instead of by share), returning a vertex with about one
//!   non-zero set per OSD, which keeps OSD peer counts low. The equivalent "minimise the largest
//!   load ratio t" form (t on the right-hand side) stalled for over 60 s
//!   already at 100 OSDs × 2000 sets, hence this form.
//! - clarabel (pure-Rust interior point, also behind good_lp): 1000 OSDs ×
//!   10000 sets in 0.7–1.0 s, but an interior solution with all 10000 sets
//!   non-zero: PGs would be spread over every candidate, losing the structure
//!   that is the LP's point here (see the `placement` module docs).
//! - HiGHS: not built; through good_lp it compiles C++ with cmake for about
//!   6 minutes on 2 cores, for a problem microlp solves within the budget.

use std::time::Duration;

use good_lp::solvers::microlp::microlp;
use good_lp::{
    variable, Expression, ProblemVariables, Solution, SolverModel, Variable, WithTimeLimit,
};

use super::candidates::Candidates;
use super::layout::PoolLayout;

/// Objective weight of one placed PG per slot of the set, against a reuse bonus
/// of at most one per kept slot: placing a PG within the ideal capacities is
/// worth more than keeping several previous PGs in place.
const FILL_PER_SLOT: f64 = 8.0;

/// What the LP decided.
#[derive(Debug)]
pub(crate) struct LpSolution {
    /// Fractional PGs per candidate set.
    pub value: Vec<f64>,
}

/// Solves the LP; `Err` carries the solver's complaint (time limit, numerical
/// trouble) for the report, and placement then falls back to greedy filling.
pub(crate) fn solve(
    layout: &PoolLayout,
    cands: &Candidates,
    time_limit: Duration,
) -> Result<LpSolution, String> {
    let fill = FILL_PER_SLOT * layout.k as f64;
    let mut vars = ProblemVariables::new();
    let x: Vec<Variable> = cands
        .sets
        .iter()
        .map(|_| vars.add(variable().min(0.0)))
        .collect();
    let y: Vec<Variable> = cands
        .tiers
        .iter()
        .map(|t| {
            vars.add(
                variable()
                    .min(0.0)
                    .max(f64::from(cands.group_count[t.group])),
            )
        })
        .collect();

    let mut objective = Expression::with_capacity(x.len() + y.len());
    let mut load: Vec<Expression> = vec![Expression::default(); layout.osds.len()];
    let mut group_tiers: Vec<Vec<Variable>> = vec![Vec::new(); cands.group_count.len()];
    for (c, &v) in x.iter().enumerate() {
        objective.add_mul(fill, v);
        for &i in &cands.sets[c] {
            load[i as usize].add_mul(1.0, v);
        }
    }
    for (t, &v) in cands.tiers.iter().zip(&y) {
        objective.add_mul(fill + t.bonus, v);
        for &i in &cands.sets[t.cand] {
            load[i as usize].add_mul(1.0, v);
        }
        group_tiers[t.group].push(v);
    }

    let mut problem = vars
        .maximise(objective)
        .using(microlp)
        .with_time_limit(time_limit.as_secs_f64());
    for (i, l) in load.into_iter().enumerate() {
        problem.add_constraint(l.leq(layout.target[i]));
    }
    for (g, tiers) in group_tiers.into_iter().enumerate() {
        if tiers.len() > 1 {
            let sum: Expression = tiers.into_iter().sum();
            problem.add_constraint(sum.leq(f64::from(cands.group_count[g])));
        }
    }
    let solution = problem.solve().map_err(|e| e.to_string())?;
    let mut value: Vec<f64> = x.iter().map(|&v| solution.value(v).max(0.0)).collect();
    for (t, &v) in cands.tiers.iter().zip(&y) {
        value[t.cand] += solution.value(v).max(0.0);
    }
    Ok(LpSolution { value })
}
