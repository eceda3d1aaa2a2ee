//! One placement round: from the mirrored cluster state to the writes that fix it.
//!
//! # What this module owns
//! - Building the placement input from etcd values: the OSD list (up/down/out, size,
//!   reweight, tags, noout), the tree, the valid pools (`vitastor-layout` validation, then the
//!   placement rules).
//! - [`plan`]: the new `pg/config`, the `pg/history` entries to extend or drop, and
//!   `history/last_clean_pgs`, as a [`Plan`] the daemon writes under guards.
//! - PG count changes: pause the pool's PGs, wait until no PG of the pool runs, then
//!   renumber with history that names every old PG whose objects a new PG may hold.
//! - [`DownTracker`]: since when each OSD is down, which OSDs are out (`osd_out_time`).
//!
//! # Choices
//! - An OSD without a `size` in `osd/stats` yet is placed with the mean size of the OSDs that
//!   report one (or weight 1 when none does): an OSD is usable as soon as it is up, and its
//!   share is corrected once it reports.
//! - A pool the monitor cannot place (invalid JSON, too few failure domains) keeps its
//!   previous PGs: a typo must never unmap data. A pool deleted from `config/pools` loses
//!   its PGs and history.
//! - `blockstore_enabled: false` in `osd/state` (an OSD that stores nothing) gets no PGs.
//! - `primary_enabled: false` in `osd/state`: the OSD holds data but is never primary.
//!
//! # What it must never do
//! - Touch etcd or read the clock (time comes in as an argument), or panic on any value.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use vitastor_layout::{
    keys, tolerant, OsdConfig, OsdState, PgHistory, PgState, PgStateName, PoolConfig,
};

use crate::placement::{
    place_pool, OsdInfo, OsdNum, PgConfig, PgNum, PgPlacement, PlacementOptions, PlacementTree,
    PoolId, PoolPgConfig, PoolRules,
};
use crate::state::ClusterState;

/// One `pg/history` write: the new value and the mod_revision the key must still have
/// (0: must not exist), so an OSD's concurrent epoch update is never overwritten.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPut {
    /// Pool id.
    pub pool: u32,
    /// PG number.
    pub pg: u32,
    /// New value.
    pub value: PgHistory,
    /// Expected mod_revision.
    pub expect_rev: i64,
}

/// What a round decided.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// New `pg/config`, when it differs from the current one.
    pub config: Option<Value>,
    /// History to write (before or with the config).
    pub history_puts: Vec<HistoryPut>,
    /// History keys to delete `(pool, pg, expected mod_revision)`: PG clean or gone.
    pub history_deletes: Vec<(u32, u32, i64)>,
    /// New `history/last_clean_pgs`.
    pub last_clean: Option<Value>,
    /// Pools skipped, with the reason.
    pub pool_errors: BTreeMap<u32, String>,
    /// Pools whose PGs are paused waiting for a PG count change.
    pub paused: Vec<u32>,
    /// Bad values met on the way (logged by the caller when they change).
    pub notes: Vec<String>,
    /// Placement reports of pools whose PGs changed.
    pub reports: Vec<String>,
}

impl Plan {
    /// Whether the plan writes anything.
    pub fn is_empty(&self) -> bool {
        self.config.is_none()
            && self.history_puts.is_empty()
            && self.history_deletes.is_empty()
            && self.last_clean.is_none()
    }
}

/// Every OSD the monitor knows: with a valid state, with stats, or named by `pg/config`.
/// An invalid `osd/state` alone does not make an OSD (it would get PGs while down).
pub fn known_osds(state: &ClusterState) -> BTreeSet<u64> {
    let (pgs, _) = state.pg_items();
    state
        .osd_state
        .keys()
        .copied()
        .filter(|&n| osd_state(state, n).is_some())
        .chain(state.osd_stats.keys().copied())
        .chain(pgs.values().flat_map(|i| i.osd_set.iter().copied()))
        .filter(|&o| o != 0)
        .collect()
}

/// The parsed `osd/state` of `osd`, if it is present and valid.
fn osd_state(state: &ClusterState, osd: u64) -> Option<OsdState> {
    let v = state.osd_state.get(&osd)?;
    OsdState::from_json(&keys::osd_state(osd), v).ok()
}

/// Whether `osd` holds a valid `up` state.
pub fn is_up(state: &ClusterState, osd: u64) -> bool {
    osd_state(state, osd).is_some_and(|s| s.is_up())
}

/// `config/osd/<osd>`, defaults when absent or invalid (with a note).
fn osd_config(state: &ClusterState, osd: u64, notes: &mut Vec<String>) -> OsdConfig {
    match state.osd_config.get(&osd) {
        None => OsdConfig::default(),
        Some(v) => OsdConfig::from_json(&keys::config_osd(osd), v).unwrap_or_else(|e| {
            notes.push(format!("{e}; using defaults"));
            OsdConfig::default()
        }),
    }
}

/// The OSD list placement sees.
fn build_osds(state: &ClusterState, out: &BTreeSet<u64>, notes: &mut Vec<String>) -> Vec<OsdInfo> {
    let size_of = |n: u64| {
        state
            .osd_stats
            .get(&n)
            .and_then(|s| tolerant::u64_field(s, "size"))
    };
    let known = known_osds(state);
    let sizes: Vec<u64> = known.iter().filter_map(|&n| size_of(n)).collect();
    let fallback = if sizes.is_empty() {
        1
    } else {
        (sizes.iter().map(|&s| s as u128).sum::<u128>() / sizes.len() as u128) as u64
    };
    for (n, v) in &state.osd_state {
        if osd_state(state, *n).is_none() {
            notes.push(format!("osd/state/{n}: invalid value {v}; ignored"));
        }
    }
    known
        .into_iter()
        .map(|n| {
            let st = osd_state(state, n);
            let host = st
                .as_ref()
                .map(|s| s.host.clone())
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    let stats = state.osd_stats.get(&n)?;
                    Some(stats.get("host")?.as_str()?.to_owned())
                })
                .unwrap_or_default();
            let cfg = osd_config(state, n, notes);
            let mut osd = OsdInfo::new(OsdNum(n), host, size_of(n).unwrap_or(fallback));
            // Placement uses `up` only to choose primaries.
            osd.up = st.as_ref().is_some_and(|s| s.is_up() && s.primary_enabled);
            osd.out = out.contains(&n);
            osd.noout = cfg.noout;
            osd.tags = cfg.tags;
            // Placement takes reweight as a share of the size; above 1 means "full size".
            osd.reweight = cfg.reweight.min(1.0);
            if st.is_some_and(|s| !s.blockstore_enabled) {
                osd.reweight = 0.0;
            }
            osd
        })
        .collect()
}

/// Whether a `pg/state` value says the PG is served by nobody.
fn pg_offline(v: &Value) -> bool {
    PgState::from_json("pg/state", v).map_or(true, |s| s.has(PgStateName::Offline))
}

/// Whether the PG is clean on exactly `set`: active, nothing degraded, misplaced, unclean or
/// incomplete, and peered with the current members only.
pub fn is_clean(st: Option<&Value>, set: &[OsdNum]) -> bool {
    let Some(st) = st.and_then(|v| PgState::from_json("pg/state", v).ok()) else {
        return false;
    };
    use PgStateName::*;
    let dirty = [
        HasMisplaced,
        HasDegraded,
        HasUnclean,
        HasIncomplete,
        Degraded,
        Incomplete,
    ];
    let mut peers = st.peers.clone();
    peers.sort_unstable();
    peers.dedup();
    let mut members: Vec<u64> = set.iter().map(|o| o.0).filter(|&o| o != 0).collect();
    members.sort_unstable();
    members.dedup();
    st.is_active() && !dirty.iter().any(|&d| st.has(d)) && peers == members
}

/// Adds an old OSD set (and optionally an old PG's whole history) to a history value.
fn add_to_history(h: &mut PgHistory, set: &[u64], old: Option<&PgHistory>) {
    let mut sets: Vec<&[u64]> = vec![set];
    if let Some(old) = old {
        sets.extend(old.osd_sets.iter().map(Vec::as_slice));
        h.all_peers.extend(old.all_peers.iter().copied());
        h.epoch = h.epoch.max(old.epoch);
    }
    for s in sets {
        if s.iter().any(|&o| o != 0) && !h.osd_sets.iter().any(|x| x == s) {
            h.osd_sets.push(s.to_vec());
        }
        h.all_peers.extend(s.iter().copied().filter(|&o| o != 0));
    }
    h.all_peers.sort_unstable();
    h.all_peers.dedup();
}

fn raw_set(p: &PgPlacement) -> Vec<u64> {
    p.osd_set.iter().map(|o| o.0).collect()
}

/// The stored history of a PG, if valid.
fn history_of(state: &ClusterState, pool: u32, pg: u32) -> Option<PgHistory> {
    let (v, _) = state.pg_history.get(&(pool, pg))?;
    PgHistory::from_json(&keys::pg_history(pool, pg), v).ok()
}

fn history_rev(state: &ClusterState, pool: u32, pg: u32) -> i64 {
    state.pg_history.get(&(pool, pg)).map_or(0, |(_, r)| *r)
}

/// Renumbers a pool from its old PGs to `new_count` PGs. Returns the previous placement to
/// start from (new PG i inherits the set of the old PG its objects mostly come from, so
/// little moves) and the history of every new PG: the sets and histories of all old PGs
/// whose objects it may now hold.
fn scale(
    state: &ClusterState,
    pool: u32,
    prev: &PoolPgConfig,
    new_count: u32,
) -> (PoolPgConfig, BTreeMap<u32, PgHistory>) {
    let old: Vec<(PgNum, &PgPlacement)> = prev.pgs.iter().map(|(k, v)| (*k, v)).collect();
    let (n_old, n_new) = (old.len(), new_count as usize);
    let dense = old
        .iter()
        .enumerate()
        .all(|(i, (pg, _))| pg.0 as usize == i + 1);
    let mut hist: BTreeMap<u32, PgHistory> = BTreeMap::new();
    let mut add = |i: usize, j: usize| {
        let (pg, p) = old[j];
        let h = hist.entry(i as u32 + 1).or_default();
        add_to_history(h, &raw_set(p), history_of(state, pool, pg.0).as_ref());
    };
    // Object o lives in PG (o % count) + 1, so when one count divides the other each new
    // PG draws from a known subset of old PGs; otherwise from any of them.
    if dense && n_new % n_old == 0 {
        for i in 0..n_new {
            add(i, i % n_old);
        }
    } else if dense && n_old % n_new == 0 {
        for i in 0..n_new {
            for k in 0..n_old / n_new {
                add(i, i + k * n_new);
            }
        }
    } else {
        for i in 0..n_new {
            for j in 0..n_old {
                add(i, j);
            }
        }
    }
    let mut start = PoolPgConfig::default();
    for i in 0..n_new {
        let mut p = old[i % n_old].1.clone();
        p.pause = false;
        start.pgs.insert(PgNum(i as u32 + 1), p);
    }
    (start, hist)
}

/// Computes one round. `out` are the OSDs the monitor declared out.
pub fn plan(state: &ClusterState, out: &BTreeSet<u64>, opts: &PlacementOptions) -> Plan {
    let mut plan = Plan::default();
    let (items, errors) = state.pg_items();
    plan.notes.extend(
        errors
            .iter()
            .map(|e| format!("{e}; the PG is placed again")),
    );
    let mut prev: BTreeMap<u32, PoolPgConfig> = BTreeMap::new();
    for ((pool, pg), item) in items {
        prev.entry(pool).or_default().pgs.insert(
            PgNum(pg),
            PgPlacement {
                osd_set: item.osd_set.into_iter().map(OsdNum).collect(),
                primary: OsdNum(item.primary),
                pause: item.pause,
            },
        );
    }
    let pools = match &state.pools {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m.clone(),
        other => {
            // Without a readable pool list, dropping pools would unmap everything: wait.
            plan.notes.push(format!(
                "config/pools: expected an object of pools, got {other}; placement paused"
            ));
            return plan;
        }
    };
    let osds = build_osds(state, out, &mut plan.notes);
    let levels = state
        .global
        .get("placement_levels")
        .cloned()
        .unwrap_or(Value::Null);
    let tree = match PlacementTree::new(osds, &state.node_placement, &levels) {
        Ok(t) => t,
        Err(e) => {
            plan.notes
                .push(format!("{e}; placement paused until it is fixed"));
            return plan;
        }
    };

    let mut new: BTreeMap<u32, PoolPgConfig> = BTreeMap::new();
    let mut touched: BTreeSet<(u32, u32)> = BTreeSet::new();
    for (key, v) in &pools {
        let Some(id) = key.parse::<u32>().ok().filter(|&i| i > 0) else {
            plan.notes.push(format!(
                "config/pools: pool id {key:?} is not a positive integer; skipped"
            ));
            continue;
        };
        let prev_pool = prev.get(&id).filter(|p| !p.pgs.is_empty());
        let rules = PoolConfig::from_json(id, v)
            .map_err(|e| e.to_string())
            .and_then(|_| PoolRules::from_json(PoolId(id), v).map_err(|e| e.to_string()));
        let rules = match rules {
            Ok(r) => r,
            Err(e) => {
                plan.pool_errors.insert(id, e);
                if let Some(p) = prev_pool {
                    new.insert(id, p.clone());
                }
                continue;
            }
        };
        let count = rules.pg_count as usize;
        let count_changed = prev_pool.is_some_and(|p| {
            p.pgs.len() != count || p.pgs.keys().next_back() != Some(&PgNum(rules.pg_count))
        });
        let (start, scaled) = match prev_pool {
            Some(p) if count_changed => {
                let running = state
                    .pg_state
                    .range((id, 0)..=(id, u32::MAX))
                    .any(|(_, v)| !pg_offline(v));
                if running {
                    let mut paused = p.clone();
                    paused.pgs.values_mut().for_each(|pg| pg.pause = true);
                    new.insert(id, paused);
                    plan.paused.push(id);
                    continue;
                }
                let (start, hist) = scale(state, id, p, rules.pg_count);
                (
                    Some(start),
                    Some((hist, p.pgs.keys().copied().collect::<Vec<_>>())),
                )
            }
            _ => (prev_pool.cloned(), None),
        };
        let placed = match place_pool(&tree, &rules, start.as_ref(), opts) {
            Ok(p) => p,
            Err(e) => {
                plan.pool_errors.insert(id, e.to_string());
                if let Some(p) = prev_pool {
                    new.insert(id, p.clone());
                }
                continue;
            }
        };
        if placed.report.pgs_changed > 0 || placed.report.new_pgs > 0 || scaled.is_some() {
            plan.reports.push(placed.report.to_string());
        }
        match scaled {
            Some((hist, old_pgs)) => {
                for (pg, value) in hist {
                    touched.insert((id, pg));
                    plan.history_puts.push(HistoryPut {
                        pool: id,
                        pg,
                        value,
                        expect_rev: history_rev(state, id, pg),
                    });
                }
                for pg in old_pgs.into_iter().filter(|pg| pg.0 > rules.pg_count) {
                    if state.pg_history.contains_key(&(id, pg.0)) {
                        touched.insert((id, pg.0));
                        plan.history_deletes
                            .push((id, pg.0, history_rev(state, id, pg.0)));
                    }
                }
            }
            None => {
                for (pg, np) in &placed.config.pgs {
                    let Some(op) = prev_pool.and_then(|p| p.get(*pg)) else {
                        continue;
                    };
                    if op.osd_set == np.osd_set {
                        continue;
                    }
                    let mut h = history_of(state, id, pg.0).unwrap_or_default();
                    add_to_history(&mut h, &raw_set(op), None);
                    touched.insert((id, pg.0));
                    plan.history_puts.push(HistoryPut {
                        pool: id,
                        pg: pg.0,
                        value: h,
                        expect_rev: history_rev(state, id, pg.0),
                    });
                }
            }
        }
        new.insert(id, placed.config);
    }

    // History of PGs that are clean on their current set, or gone, is no longer needed.
    for (&(pool, pg), (_, rev)) in &state.pg_history {
        if touched.contains(&(pool, pg)) {
            continue;
        }
        let keep = match new.get(&pool).and_then(|p| p.get(PgNum(pg))) {
            None => false,
            Some(p) => !is_clean(state.pg_state.get(&(pool, pg)), &p.osd_set),
        };
        if !keep {
            plan.history_deletes.push((pool, pg, *rev));
        }
    }

    let config = PgConfig {
        items: new.into_iter().map(|(k, v)| (PoolId(k), v)).collect(),
    };
    let json = config.to_json();
    let empty = config.items.is_empty();
    if json != state.pg_config && !(empty && state.pg_config.is_null()) {
        plan.config = Some(json);
    } else if !empty
        && plan.history_puts.is_empty()
        && plan.history_deletes.len() == state.pg_history.len()
        && state.last_clean != state.pg_config
        && config.items.iter().all(|(pool, pgs)| {
            pgs.pgs
                .iter()
                .all(|(pg, p)| is_clean(state.pg_state.get(&(pool.0, pg.0)), &p.osd_set))
        })
    {
        plan.last_clean = Some(state.pg_config.clone());
    }
    plan
}

/// Since when each OSD is down (unix seconds), and who is out.
#[derive(Debug, Clone, Default)]
pub struct DownTracker {
    since: BTreeMap<u64, f64>,
}

impl DownTracker {
    /// Updates from the current state. An OSD seen down for the first time is down since
    /// `now`, except on the first update after the master took over (`first`), where its last
    /// `osd/stats` `time` is used: a new master must not restart the out timer of an OSD
    /// that died long ago.
    pub fn update(&mut self, state: &ClusterState, now: f64, first: bool) {
        let known = known_osds(state);
        self.since.retain(|n, _| known.contains(n));
        for n in known {
            if is_up(state, n) {
                self.since.remove(&n);
                continue;
            }
            let last_report = || {
                let t = tolerant::f64_field(state.osd_stats.get(&n)?, "time")?;
                t.is_finite().then_some(t.min(now))
            };
            let t = if first {
                last_report().unwrap_or(now)
            } else {
                now
            };
            self.since.entry(n).or_insert(t);
        }
    }

    /// OSDs down for at least `out_time` seconds and not `noout`, and the next time another
    /// OSD becomes out (to wake up then).
    pub fn out(
        &self,
        state: &ClusterState,
        out_time: f64,
        now: f64,
    ) -> (BTreeSet<u64>, Option<f64>) {
        let mut out = BTreeSet::new();
        let mut next: Option<f64> = None;
        for (&n, &since) in &self.since {
            if osd_config(state, n, &mut Vec::new()).noout {
                continue;
            }
            let at = since + out_time;
            if at <= now {
                out.insert(n);
            } else {
                next = Some(next.map_or(at, |x| x.min(at)));
            }
        }
        (out, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;
    use vitastor_layout::parse_pg_config;

    fn cluster(n_hosts: u64) -> ClusterState {
        let mut s = ClusterState::default();
        let now = Instant::now();
        for o in 1..=n_hosts * 2 {
            let host = format!("h{}", o.div_ceil(2));
            s.apply(
                &keys::osd_state(o),
                Some(json!({"state":"up","addresses":["127.0.0.1"],"port":1000+o,"host":host})),
                1,
                now,
            );
            s.apply(
                &keys::osd_stats(o),
                Some(json!({"size": 1u64 << 30, "host": host})),
                1,
                now,
            );
        }
        s.apply(
            "config/pools",
            Some(json!({"1":{"name":"a","pg_size":2,"pg_minsize":1,"pg_count":8}})),
            1,
            now,
        );
        s
    }

    fn commit(s: &mut ClusterState, p: &Plan, rev: i64) {
        let now = Instant::now();
        if let Some(c) = &p.config {
            s.apply("pg/config", Some(c.clone()), rev, now);
        }
        for h in &p.history_puts {
            s.apply(
                &keys::pg_history(h.pool, h.pg),
                Some(serde_json::to_value(&h.value).unwrap()),
                rev,
                now,
            );
        }
        for &(pool, pg, _) in &p.history_deletes {
            s.apply(&keys::pg_history(pool, pg), None, rev, now);
        }
    }

    #[test]
    fn place_move_history_clean() {
        let mut s = cluster(3);
        let opts = PlacementOptions::default();
        let p = plan(&s, &BTreeSet::new(), &opts);
        assert!(p.pool_errors.is_empty() && p.history_puts.is_empty());
        commit(&mut s, &p, 2);
        assert!(plan(&s, &BTreeSet::new(), &opts).is_empty());
        // OSD 1 down: primaries move, sets stay.
        s.apply("osd/state/1", None, 3, Instant::now());
        let p = plan(&s, &BTreeSet::new(), &opts);
        assert!(p.history_puts.is_empty());
        commit(&mut s, &p, 4);
        let (items, _) = parse_pg_config(&s.pg_config);
        assert!(items.values().all(|i| i.primary != 1));
        assert!(items.values().any(|i| i.osd_set.contains(&1)));
        // Out: re-placed, with history.
        let p = plan(&s, &BTreeSet::from([1]), &opts);
        assert!(!p.history_puts.is_empty());
        assert!(p
            .history_puts
            .iter()
            .any(|h| h.value.all_peers.contains(&1)));
        commit(&mut s, &p, 5);
        let (items, _) = parse_pg_config(&s.pg_config);
        assert!(items.values().all(|i| !i.osd_set.contains(&1)));
        // PGs report clean: history goes and last_clean_pgs is written.
        for ((pool, pg), i) in &items {
            s.apply(
                &keys::pg_state(*pool, *pg),
                Some(json!({"primary":i.primary,"state":["active"],"peers":i.osd_set})),
                6,
                Instant::now(),
            );
        }
        let p = plan(&s, &BTreeSet::from([1]), &opts);
        assert_eq!(p.history_deletes.len(), s.pg_history.len());
        assert_eq!(p.last_clean.as_ref(), Some(&s.pg_config));
        commit(&mut s, &p, 7);
        s.apply(
            "history/last_clean_pgs",
            p.last_clean.clone(),
            7,
            Instant::now(),
        );
        assert!(plan(&s, &BTreeSet::from([1]), &opts).is_empty());
    }

    #[test]
    fn pg_count_change_pauses_then_scales() {
        let mut s = cluster(3);
        let opts = PlacementOptions::default();
        let p = plan(&s, &BTreeSet::new(), &opts);
        commit(&mut s, &p, 2);
        s.apply(
            "pg/state/1/3",
            Some(json!({"primary":2,"state":["active"],"peers":[2,3]})),
            3,
            Instant::now(),
        );
        s.apply(
            "config/pools",
            Some(json!({"1":{"name":"a","pg_size":2,"pg_minsize":1,"pg_count":16}})),
            3,
            Instant::now(),
        );
        let p = plan(&s, &BTreeSet::new(), &opts);
        assert_eq!(p.paused, vec![1]);
        commit(&mut s, &p, 4);
        let (items, _) = parse_pg_config(&s.pg_config);
        assert_eq!(items.len(), 8);
        assert!(items.values().all(|i| i.pause));
        s.apply("pg/state/1/3", None, 5, Instant::now());
        let p = plan(&s, &BTreeSet::new(), &opts);
        assert!(p.paused.is_empty());
        assert_eq!(p.history_puts.len(), 16);
        let old: BTreeMap<(u32, u32), _> = parse_pg_config(&s.pg_config).0;
        // New PG 11 holds objects of old PG 3.
        let h11 = p.history_puts.iter().find(|h| h.pg == 11).unwrap();
        assert_eq!(h11.value.osd_sets, vec![old[&(1, 3)].osd_set.clone()]);
        commit(&mut s, &p, 6);
        let (items, _) = parse_pg_config(&s.pg_config);
        assert_eq!(items.len(), 16);
        assert!(items.values().all(|i| !i.pause));
    }

    #[test]
    fn pg_size_change_is_online() {
        let mut s = cluster(3);
        let opts = PlacementOptions::default();
        let p = plan(&s, &BTreeSet::new(), &opts);
        commit(&mut s, &p, 2);
        s.apply(
            "config/pools",
            Some(json!({"1":{"name":"a","pg_size":3,"pg_minsize":2,"pg_count":8}})),
            3,
            Instant::now(),
        );
        let p = plan(&s, &BTreeSet::new(), &opts);
        assert!(p.paused.is_empty());
        // Every PG gains a member: each one keeps its old set in history.
        assert_eq!(p.history_puts.len(), 8);
        commit(&mut s, &p, 4);
        let (items, _) = parse_pg_config(&s.pg_config);
        assert!(items.values().all(|i| i.osd_set.len() == 3 && !i.pause));
    }

    #[test]
    fn bad_pools_are_skipped_and_kept() {
        let mut s = cluster(2);
        s.apply(
            "config/pools",
            Some(json!({
            "1":{"name":"a","pg_size":2,"pg_minsize":1,"pg_count":4},
            "2":{"name":"b","scheme":"raid5","pg_size":2,"pg_minsize":1,"pg_count":4},
            "3":{"name":"c","pg_size":3,"pg_minsize":3,"pg_count":4},
            "4":{"name":"d","pg_size":1,"pg_minsize":2,"pg_count":4},
            "x":7})),
            2,
            Instant::now(),
        );
        s.apply(
            "config/osd/2",
            Some(json!({"reweight":"heavy"})),
            2,
            Instant::now(),
        );
        let p = plan(&s, &BTreeSet::new(), &PlacementOptions::default());
        assert_eq!(
            p.pool_errors.keys().copied().collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(
            p.pool_errors[&3].contains("failure domains"),
            "{:?}",
            p.pool_errors
        );
        assert!(
            p.notes.iter().any(|n| n.contains("config/osd/2")),
            "{:?}",
            p.notes
        );
        let c = p.config.unwrap();
        assert_eq!(c["items"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn out_timer() {
        let mut s = cluster(2);
        s.apply("osd/state/1", None, 2, Instant::now());
        s.apply(
            "osd/stats/1",
            Some(json!({"size": 1, "time": 100.0})),
            2,
            Instant::now(),
        );
        s.apply("osd/state/2", None, 2, Instant::now());
        s.apply(
            "config/osd/2",
            Some(json!({"noout": true})),
            2,
            Instant::now(),
        );
        let mut d = DownTracker::default();
        d.update(&s, 1000.0, true);
        let (out, next) = d.out(&s, 600.0, 1000.0);
        assert_eq!(out, BTreeSet::from([1]));
        assert_eq!(next, None);
        s.apply("osd/state/3", None, 3, Instant::now());
        d.update(&s, 1001.0, false);
        assert_eq!(d.out(&s, 600.0, 1001.0).1, Some(1601.0));
    }
}
