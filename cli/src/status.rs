//! `status` (cluster summary) and `pg-list` (PGs with their OSD sets and states).
//!
//! # What this module owns
//! - The PG state of every PG of `pg/config`: its `pg/state` names joined with `+`, or
//!   `offline` when no primary reports it (the monitor's convention in `pool/stats`).
//! - The `pg-list` filter syntax: each argument is `state+state+^state` (all listed states
//!   present, `^` ones absent); a PG is listed when it matches any argument.
//! - The slow-ops warning of `status`: the OSDs that are up and report `slow_ops_primary` or
//!   `slow_ops_secondary` above zero in `osd/stats` (a down OSD's last report is stale).
//!
//! # What it must never do
//! - Write to etcd.

use std::collections::BTreeMap;

use clap::Args;
use serde_json::{json, Value};
use vitastor_layout::{keys, parse_pg_config, OsdState, PgConfigItem, PgState, PgStateName};

use crate::error::{CliError, Result};
use crate::etcd::{Etcd, Kv};
use crate::format;
use crate::state::{num, Pools};

/// `pg-list [-p POOL] [STATE+STATE...]`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct PgListArgs {
    /// Only PGs of this pool (name or id).
    #[arg(short = 'p', long)]
    pub pool: Option<String>,
    /// Filters like `active+has_degraded` or `active+^degraded`; any may match.
    pub states: Vec<String>,
}

/// One PG with its configured placement and reported state.
struct Pg {
    pool: u32,
    pg: u32,
    config: PgConfigItem,
    state: Option<PgState>,
}

impl Pg {
    fn names(&self) -> Vec<String> {
        match &self.state {
            Some(s) if !s.state.is_empty() => s.state.clone(),
            _ => vec![PgStateName::Offline.as_str().to_string()],
        }
    }
}

fn load_pgs(etcd: &mut Etcd) -> Result<Vec<Pg>> {
    let config = match etcd.get(keys::PG_CONFIG)? {
        Some(kv) => {
            let (items, errors) = parse_pg_config(&kv.value);
            for e in errors {
                eprintln!("warning: {e}");
            }
            items
        }
        None => BTreeMap::new(),
    };
    let mut states = BTreeMap::new();
    for kv in etcd.get_prefix(keys::PG_STATE_PREFIX)? {
        let Some((pool, pg)) = keys::parse_pair(&kv.key, keys::PG_STATE_PREFIX) else {
            continue;
        };
        match PgState::from_json(&kv.key, &kv.value) {
            Ok(s) => {
                states.insert((pool, pg as u32), s);
            }
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    Ok(config
        .into_iter()
        .map(|((pool, pg), config)| Pg {
            pool,
            pg,
            config,
            state: states.remove(&(pool, pg)),
        })
        .collect())
}

/// One `pg-list` filter: states that must be present and states that must be absent.
struct Filter {
    with: Vec<String>,
    without: Vec<String>,
}

fn parse_filter(text: &str) -> Result<Filter> {
    let mut f = Filter {
        with: Vec::new(),
        without: Vec::new(),
    };
    for part in text.split('+') {
        let (neg, name) = match part.strip_prefix('^') {
            Some(n) => (true, n),
            None => (false, part),
        };
        if PgStateName::parse(name).is_none() {
            return Err(CliError::Usage(format!(
                "unknown PG state {name:?} in {text:?}"
            )));
        }
        if neg {
            f.without.push(name.into());
        } else {
            f.with.push(name.into());
        }
    }
    Ok(f)
}

/// `pg-list`.
pub fn pg_list(etcd: &mut Etcd, args: &PgListArgs, json_out: bool) -> Result<()> {
    let filters = args
        .states
        .iter()
        .map(|s| parse_filter(s))
        .collect::<Result<Vec<_>>>()?;
    let pools = Pools::load(etcd)?;
    let pool = args.pool.as_deref().map(|p| pools.find(p)).transpose()?;
    let pgs: Vec<Pg> = load_pgs(etcd)?
        .into_iter()
        .filter(|pg| pool.map_or(true, |p| p.id == pg.pool))
        .filter(|pg| {
            let names = pg.names();
            filters.is_empty()
                || filters.iter().any(|f| {
                    f.with.iter().all(|s| names.contains(s))
                        && !f.without.iter().any(|s| names.contains(s))
                })
        })
        .collect();
    let pool_name = |id: u32| {
        pools
            .valid
            .get(&id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    };
    if json_out {
        let out: Vec<Value> = pgs
            .iter()
            .map(|pg| {
                json!({"pool_id": pg.pool, "pool_name": pool_name(pg.pool), "pg_num": pg.pg,
                       "osd_set": pg.config.osd_set, "primary": pg.state.as_ref().map(|s| s.primary),
                       "target_primary": pg.config.primary, "pause": pg.config.pause,
                       "state": pg.names(),
                       "peers": pg.state.as_ref().map(|s| s.peers.clone())})
            })
            .collect();
        println!("{}", Value::Array(out));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = pgs
        .iter()
        .map(|pg| {
            let set: Vec<String> = pg.config.osd_set.iter().map(u64::to_string).collect();
            vec![
                pool_name(pg.pool),
                pg.pg.to_string(),
                format!("[{}]", set.join(",")),
                pg.state
                    .as_ref()
                    .map_or_else(|| "-".into(), |s| s.primary.to_string()),
                pg.names().join("+"),
            ]
        })
        .collect();
    format::table(&["POOL", "PG", "OSD_SET", "PRIMARY", "STATE"], &rows);
    Ok(())
}

/// An up OSD with ops in progress for longer than its `slow_log_interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlowOsd {
    osd: u64,
    primary: u64,
    secondary: u64,
}

/// The up OSDs whose `osd/stats` report slow ops, by OSD number.
fn slow_osds(osd_stats: &[Kv], up: &std::collections::BTreeSet<u64>) -> Vec<SlowOsd> {
    let mut slow: Vec<SlowOsd> = osd_stats
        .iter()
        .filter_map(|kv| {
            let osd = keys::parse_num(&kv.key, keys::OSD_STATS_PREFIX)?;
            let s = SlowOsd {
                osd,
                primary: num(&kv.value, "slow_ops_primary"),
                secondary: num(&kv.value, "slow_ops_secondary"),
            };
            (up.contains(&osd) && s.primary + s.secondary > 0).then_some(s)
        })
        .collect();
    slow.sort_by_key(|s| s.osd);
    slow
}

/// `status`.
pub fn status(etcd: &mut Etcd, json_out: bool) -> Result<()> {
    let master = etcd.get(keys::MON_MASTER)?.map(|kv| kv.value);
    let mut up = std::collections::BTreeSet::new();
    let mut osd_nums = std::collections::BTreeSet::new();
    for kv in etcd.get_prefix(keys::OSD_STATE_PREFIX)? {
        if let Some(n) = keys::parse_num(&kv.key, keys::OSD_STATE_PREFIX) {
            osd_nums.insert(n);
            if OsdState::from_json(&kv.key, &kv.value).is_ok_and(|s| s.is_up()) {
                up.insert(n);
            }
        }
    }
    let osd_up = up.len();
    let osd_stats = etcd.get_prefix(keys::OSD_STATS_PREFIX)?;
    let slow = slow_osds(&osd_stats, &up);
    osd_nums.extend(
        osd_stats
            .iter()
            .filter_map(|kv| keys::parse_num(&kv.key, keys::OSD_STATS_PREFIX)),
    );
    // The monitor's aggregate when present, else the same sums over osd/stats.
    let (total_raw, free_raw) = match etcd.get(keys::STATS)? {
        Some(kv) if kv.value.get("total_raw").is_some() => {
            (num(&kv.value, "total_raw"), num(&kv.value, "free_raw"))
        }
        _ => osd_stats.iter().fold((0, 0), |(t, f), kv| {
            (t + num(&kv.value, "size"), f + num(&kv.value, "free"))
        }),
    };
    let pools = Pools::load(etcd)?;
    let mut pg_states: BTreeMap<String, u64> = BTreeMap::new();
    for pg in load_pgs(etcd)? {
        *pg_states.entry(pg.names().join("+")).or_default() += 1;
    }
    let used_raw = total_raw.saturating_sub(free_raw);
    if json_out {
        println!(
            "{}",
            json!({"mon_master": master, "osd_count": osd_nums.len(), "osd_up": osd_up,
                   "pool_count": pools.valid.len(), "total_raw": total_raw,
                   "free_raw": free_raw, "used_raw": used_raw, "pg_states": pg_states,
                   "slow_ops": slow.iter().map(|s| json!({"osd": s.osd,
                       "primary": s.primary, "secondary": s.secondary})).collect::<Vec<_>>()})
        );
        return Ok(());
    }
    let master_text = match &master {
        Some(m) => {
            let ip = m
                .get("ip")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .unwrap_or("?");
            format!("master {ip}")
        }
        None => "no master".into(),
    };
    println!("  cluster:");
    println!("    mon:   {master_text}");
    println!("    osd:   {osd_up} / {} up", osd_nums.len());
    if !slow.is_empty() {
        let list: Vec<String> = slow
            .iter()
            .map(|s| {
                format!(
                    "osd.{} ({} primary, {} secondary)",
                    s.osd, s.primary, s.secondary
                )
            })
            .collect();
        println!();
        println!("  warnings:");
        println!("    slow ops on {}", list.join(", "));
    }
    println!();
    println!("  data:");
    println!(
        "    raw:   {} used, {} / {} available",
        format::size(used_raw),
        format::size(free_raw),
        format::size(total_raw)
    );
    println!("    pools: {}", pools.valid.len());
    let total_pgs: u64 = pg_states.values().sum();
    if pg_states.is_empty() {
        println!("    pgs:   none");
    }
    for (i, (state, n)) in pg_states.iter().enumerate() {
        let label = if i == 0 { "pgs:" } else { "" };
        println!("    {label:<6} {n} {state}");
    }
    if total_pgs > 0 && pg_states.len() > 1 {
        println!("           {total_pgs} total");
    }
    Ok(())
}

#[cfg(test)]
mod slow_tests {
    use super::*;

    fn kv(osd: u64, value: Value) -> Kv {
        Kv {
            key: format!("{}{osd}", keys::OSD_STATS_PREFIX),
            value,
            mod_revision: 0,
        }
    }

    #[test]
    fn only_up_osds_with_slow_ops_are_named() {
        let stats = [
            kv(3, json!({"slow_ops_primary": 2, "slow_ops_secondary": 0})),
            kv(1, json!({"slow_ops_primary": 0, "slow_ops_secondary": "4"})),
            kv(2, json!({"slow_ops_primary": 0, "slow_ops_secondary": 0})),
            kv(4, json!({})),
            // Down: its last report is stale.
            kv(5, json!({"slow_ops_primary": 9})),
        ];
        let up = [1, 2, 3, 4].into_iter().collect();
        let slow = slow_osds(&stats, &up);
        assert_eq!(
            slow,
            [
                SlowOsd {
                    osd: 1,
                    primary: 0,
                    secondary: 4
                },
                SlowOsd {
                    osd: 3,
                    primary: 2,
                    secondary: 0
                }
            ]
        );
    }
}
