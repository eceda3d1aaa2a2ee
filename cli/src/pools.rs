//! Pool commands: `create-pool`, `modify-pool`, `rm-pool`, `ls-pools`, `df`.
//!
//! # What this module owns
//! - Edits of `config/pools` as compare-and-set transactions on its mod_revision; every
//!   edited entry is validated with `PoolConfig::from_json` before it is written, so the CLI
//!   never stores a pool the monitor, OSDs or clients would reject.
//! - Space accounting per pool for `df`: the monitor's `pool/stats` when present, else the
//!   same sums computed from `osd/stats` and `osd/space`.
//!
//! # What it must never do
//! - Remove a pool that still has images without `--force`, or touch `pg/config` (the
//!   monitor places PGs).

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use serde_json::{json, Map, Value};
use vitastor_layout::{
    keys, parse_pg_config, parse_size, tolerant, ImmediateCommit, OsdState, PoolConfig, Scheme,
};

use crate::error::{CliError, Result};
use crate::etcd::{Check, Etcd, Write};
use crate::format;
use crate::state::{load_images, num, Pools, MAX_TXN_ATTEMPTS};

/// `create-pool NAME (-s PG_SIZE | --ec N+K) -n PG_COUNT [options]`.
///
/// EC and XOR pools: `--ec N+K` (Reed-Solomon; with `--scheme xor` and K = 1 an XOR pool),
/// or `-s PG_SIZE --scheme xor|ec|jerasure [--parity_chunks K]` as in `config/pools`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct CreatePoolArgs {
    /// Pool name (not a number: pools are looked up by name or id).
    pub name: String,
    /// Copies of a replicated pool, or data + parity chunks with --scheme xor/ec.
    #[arg(
        short = 's',
        long,
        conflicts_with = "ec",
        required_unless_present = "ec"
    )]
    pub pg_size: Option<u32>,
    /// Erasure-coded pool with N data and K parity chunks (`N+K`).
    #[arg(long, value_name = "N+K", value_parser = parse_ec)]
    pub ec: Option<(u32, u32)>,
    /// replicated | xor | ec | jerasure (default: replicated with -s, ec with --ec).
    #[arg(long)]
    pub scheme: Option<String>,
    /// Parity chunks of an xor/ec pool given with -s (xor: 1).
    #[arg(long)]
    pub parity_chunks: Option<u32>,
    /// Number of PGs.
    #[arg(short = 'n', long)]
    pub pg_count: u32,
    /// Fewest live OSDs a PG still serves I/O with (default: pg_size-1 for replicated
    /// pools of 2+ copies, N+1 for EC pools with 2+ parity chunks, else N).
    #[arg(long)]
    pub pg_minsize: Option<u32>,
    /// Level that must differ between the OSDs of a PG (host, osd, or a placement level).
    #[arg(long, default_value = "host")]
    pub failure_domain: String,
    /// Object size (K/M suffixes; default 128K).
    #[arg(long, value_parser = parse_size)]
    pub block_size: Option<u64>,
    /// all | small | none (default: the cluster's).
    #[arg(long)]
    pub immediate_commit: Option<String>,
    /// Create it even if the cluster has fewer failure domains than pg_size.
    #[arg(long)]
    pub force: bool,
}

/// `modify-pool POOL [options]`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct ModifyPoolArgs {
    /// Pool (name or id).
    pub pool: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New number of copies (replicated pools).
    #[arg(short = 's', long)]
    pub pg_size: Option<u32>,
    /// New pg_minsize.
    #[arg(long)]
    pub pg_minsize: Option<u32>,
    /// New number of PGs.
    #[arg(short = 'n', long)]
    pub pg_count: Option<u32>,
    /// New failure domain.
    #[arg(long)]
    pub failure_domain: Option<String>,
    /// all | small | none.
    #[arg(long)]
    pub immediate_commit: Option<String>,
}

/// `rm-pool POOL [--force]`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct RmPoolArgs {
    /// Pool (name or id).
    pub pool: String,
    /// Remove it even if images remain in it.
    #[arg(long)]
    pub force: bool,
}

fn parse_ec(s: &str) -> std::result::Result<(u32, u32), String> {
    let bad = || format!("bad --ec {s:?}: expected N+K, e.g. 2+1");
    let (n, k) = s.split_once('+').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let k: u32 = k.trim().parse().map_err(|_| bad())?;
    if n == 0 || k == 0 {
        return Err(bad());
    }
    Ok((n, k))
}

/// A new pool's scheme, size and parity chunks, from the `create-pool` options.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Redundancy {
    scheme: &'static str,
    pg_size: u32,
    parity_chunks: u32,
}

impl Redundancy {
    /// Replicated: one copy may be down (at least 1); EC/XOR: the data chunks plus one when
    /// two or more parity chunks allow it, so a PG keeps a spare part while it serves I/O.
    fn default_minsize(&self) -> u32 {
        match self.parity_chunks {
            0 => self.pg_size.saturating_sub(1).max(1),
            1 => self.pg_size - 1,
            _ => self.pg_size - self.parity_chunks + 1,
        }
    }
}

fn redundancy(args: &CreatePoolArgs) -> Result<Redundancy> {
    let scheme = match args.scheme.as_deref() {
        None if args.ec.is_some() => "ec",
        None | Some("replicated") => "replicated",
        Some("xor") => "xor",
        Some("ec") => "ec",
        Some("jerasure") => "jerasure",
        Some(other) => {
            return Err(CliError::Usage(format!(
                "unknown --scheme {other:?}: use replicated, xor, ec or jerasure"
            )))
        }
    };
    let (pg_size, parity_chunks) = match (args.pg_size, args.ec, scheme) {
        (_, Some(_), "replicated") => {
            return Err(CliError::Usage(
                "--ec N+K makes an EC or XOR pool, not a replicated one".into(),
            ))
        }
        (_, Some((n, k)), _) => {
            if args.parity_chunks.is_some_and(|p| p != k) {
                return Err(CliError::Usage(format!(
                    "--parity_chunks {} contradicts --ec {n}+{k}",
                    args.parity_chunks.unwrap_or(0)
                )));
            }
            (n + k, k)
        }
        (Some(_), None, "replicated") if args.parity_chunks.is_some() => {
            return Err(CliError::Usage(
                "--parity_chunks applies to xor and ec pools only".into(),
            ))
        }
        (Some(size), None, "replicated") => (size, 0),
        (Some(size), None, "xor") => (size, args.parity_chunks.unwrap_or(1)),
        (Some(size), None, _) => match args.parity_chunks {
            Some(k) => (size, k),
            None => {
                return Err(CliError::Usage(format!(
                    "an {scheme} pool given with -s needs --parity_chunks K (or use --ec N+K)"
                )))
            }
        },
        (None, None, _) => return Err(CliError::Usage("give -s PG_SIZE or --ec N+K".into())),
    };
    if scheme == "xor" && parity_chunks != 1 {
        return Err(CliError::Usage(format!(
            "an xor pool has exactly 1 parity chunk, not {parity_chunks} (use --ec N+{parity_chunks} \
             for Reed-Solomon)"
        )));
    }
    if scheme != "replicated" && parity_chunks >= pg_size {
        return Err(CliError::Usage(format!(
            "parity_chunks ({parity_chunks}) must be less than pg_size ({pg_size}): a PG needs \
             at least one data chunk"
        )));
    }
    if scheme == "xor" && pg_size < 3 {
        return Err(CliError::Usage(format!(
            "an xor pool needs at least 2 data chunks + 1 parity chunk, pg_size {pg_size} is too small"
        )));
    }
    Ok(Redundancy {
        scheme,
        pg_size,
        parity_chunks,
    })
}

fn check_immediate_commit(s: &str) -> Result<()> {
    ImmediateCommit::parse(s).map(|_| ()).ok_or_else(|| {
        CliError::Usage(format!(
            "bad --immediate_commit {s:?}: use all, small or none"
        ))
    })
}

fn check_pool_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().all(|c| c.is_ascii_digit()) {
        return Err(CliError::Usage(format!(
            "bad pool name {name:?}: it must not be empty or a number"
        )));
    }
    Ok(())
}

/// Validates one pool entry as every other program will read it.
fn validate(id: u32, entry: &Map<String, Value>) -> Result<PoolConfig> {
    PoolConfig::from_json(id, &Value::Object(entry.clone()))
        .map_err(|e| CliError::Usage(format!("invalid pool: {e}")))
}

/// Writes `raw` as the new `config/pools` if it did not change since `rev`.
fn write_pools(etcd: &mut Etcd, what: &str, raw: Map<String, Value>, rev: i64) -> Result<bool> {
    etcd.txn(
        what,
        &[Check::ModRevision(keys::CONFIG_POOLS.into(), rev)],
        &[Write::Put(keys::CONFIG_POOLS.into(), Value::Object(raw))],
    )
}

/// How many distinct failure domains of `level` the known OSDs span.
fn failure_domains(etcd: &mut Etcd, level: &str) -> Result<usize> {
    let mut osd_hosts: BTreeMap<u64, String> = BTreeMap::new();
    for kv in etcd.get_prefix(keys::OSD_STATS_PREFIX)? {
        if let Some(n) = keys::parse_num(&kv.key, keys::OSD_STATS_PREFIX) {
            let host = kv.value.get("host").and_then(Value::as_str).unwrap_or("");
            osd_hosts.insert(n, host.to_string());
        }
    }
    for kv in etcd.get_prefix(keys::OSD_STATE_PREFIX)? {
        if let (Some(n), Ok(s)) = (
            keys::parse_num(&kv.key, keys::OSD_STATE_PREFIX),
            OsdState::from_json(&kv.key, &kv.value),
        ) {
            osd_hosts.insert(n, s.host);
        }
    }
    Ok(match level {
        "osd" => osd_hosts.len(),
        "host" => osd_hosts.values().collect::<BTreeSet<_>>().len(),
        _ => etcd
            .get(keys::CONFIG_NODE_PLACEMENT)?
            .and_then(|kv| kv.value.as_object().cloned())
            .map_or(0, |m| {
                m.values()
                    .filter(|n| n.get("level").and_then(Value::as_str) == Some(level))
                    .count()
            }),
    })
}

/// `create-pool`.
pub fn create_pool(etcd: &mut Etcd, args: &CreatePoolArgs, json_out: bool) -> Result<()> {
    check_pool_name(&args.name)?;
    let mut entry = Map::new();
    entry.insert("name".into(), json!(args.name));
    let redundancy = redundancy(args)?;
    let pg_size = redundancy.pg_size;
    entry.insert("scheme".into(), json!(redundancy.scheme));
    if redundancy.parity_chunks > 0 {
        entry.insert("parity_chunks".into(), json!(redundancy.parity_chunks));
    }
    let default_minsize = redundancy.default_minsize();
    entry.insert("pg_size".into(), json!(pg_size));
    entry.insert(
        "pg_minsize".into(),
        json!(args.pg_minsize.unwrap_or(default_minsize)),
    );
    entry.insert("pg_count".into(), json!(args.pg_count));
    entry.insert("failure_domain".into(), json!(args.failure_domain));
    if let Some(b) = args.block_size {
        entry.insert("block_size".into(), json!(b));
    }
    if let Some(ic) = &args.immediate_commit {
        check_immediate_commit(ic)?;
        entry.insert("immediate_commit".into(), json!(ic));
    }
    validate(1, &entry)?;
    if !args.force {
        let have = failure_domains(etcd, &args.failure_domain)?;
        if have < pg_size as usize {
            let what = match redundancy.parity_chunks {
                0 => format!("{pg_size} copies"),
                m => format!("{}+{m} (data+parity) chunks", pg_size - m),
            };
            return Err(CliError::Refused(format!(
                "a PG of pool {} holds {what} on {pg_size} different {}s, the cluster has \
                 {have}; add --force to create it anyway",
                args.name, args.failure_domain
            )));
        }
    }
    for _ in 0..MAX_TXN_ATTEMPTS {
        let pools = Pools::load(etcd)?;
        let name_taken = pools
            .raw
            .values()
            .any(|p| p.get("name").and_then(Value::as_str) == Some(&args.name));
        if name_taken {
            return Err(CliError::PoolExists(args.name.clone()));
        }
        // Above every key present, valid or not, so an invalid entry is never overwritten.
        let id = pools
            .raw
            .keys()
            .filter_map(|k| k.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let pool = validate(id, &entry)?;
        let mut raw = pools.raw.clone();
        raw.insert(id.to_string(), Value::Object(entry.clone()));
        if write_pools(etcd, "creating the pool", raw, pools.mod_revision)? {
            if json_out {
                let mut out = entry.clone();
                out.insert("id".into(), json!(id));
                println!("{}", Value::Object(out));
            } else {
                println!(
                    "Pool {} created (id {id}, {}, {} PGs)",
                    pool.name,
                    scheme_text(&pool),
                    pool.pg_count
                );
            }
            return Ok(());
        }
    }
    Err(CliError::Conflict("create-pool", MAX_TXN_ATTEMPTS))
}

/// `modify-pool`.
pub fn modify_pool(etcd: &mut Etcd, args: &ModifyPoolArgs, json_out: bool) -> Result<()> {
    if let Some(n) = &args.name {
        check_pool_name(n)?;
    }
    if let Some(ic) = &args.immediate_commit {
        check_immediate_commit(ic)?;
    }
    for _ in 0..MAX_TXN_ATTEMPTS {
        let pools = Pools::load(etcd)?;
        let pool = pools.find(&args.pool)?;
        if let Some(n) = &args.name {
            if pools
                .valid
                .values()
                .any(|p| &p.name == n && p.id != pool.id)
            {
                return Err(CliError::PoolExists(n.clone()));
            }
        }
        if args.pg_size.is_some() && pool.scheme != Scheme::Replicated {
            return Err(CliError::Usage(
                "--pg_size applies to replicated pools only".into(),
            ));
        }
        let mut entry = pools.raw[&pool.id.to_string()]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                entry.insert(k.into(), v);
            }
        };
        set("name", args.name.as_ref().map(|v| json!(v)));
        set("pg_size", args.pg_size.map(|v| json!(v)));
        set("pg_minsize", args.pg_minsize.map(|v| json!(v)));
        set("pg_count", args.pg_count.map(|v| json!(v)));
        set(
            "failure_domain",
            args.failure_domain.as_ref().map(|v| json!(v)),
        );
        set(
            "immediate_commit",
            args.immediate_commit.as_ref().map(|v| json!(v)),
        );
        let new = validate(pool.id, &entry)?;
        let mut raw = pools.raw.clone();
        raw.insert(pool.id.to_string(), Value::Object(entry.clone()));
        if write_pools(etcd, "modifying the pool", raw, pools.mod_revision)? {
            if json_out {
                entry.insert("id".into(), json!(pool.id));
                println!("{}", Value::Object(entry));
            } else {
                println!("Pool {} (id {}) modified", new.name, new.id);
            }
            return Ok(());
        }
    }
    Err(CliError::Conflict("modify-pool", MAX_TXN_ATTEMPTS))
}

/// `rm-pool`.
pub fn rm_pool(etcd: &mut Etcd, args: &RmPoolArgs, json_out: bool) -> Result<()> {
    for _ in 0..MAX_TXN_ATTEMPTS {
        let pools = Pools::load(etcd)?;
        let pool = pools.find(&args.pool)?.clone();
        let images = load_images(etcd, Some(pool.id))?;
        if !images.is_empty() && !args.force {
            return Err(CliError::Refused(format!(
                "pool {} still has {} image(s); remove them first or add --force",
                pool.name,
                images.len()
            )));
        }
        let mut raw = pools.raw.clone();
        raw.remove(&pool.id.to_string());
        let mut writes = vec![Write::Put(keys::CONFIG_POOLS.into(), Value::Object(raw))];
        // The id counter goes with the last image; with --force the remaining images keep
        // their ids, so a pool re-created under the same id must not reuse them.
        if images.is_empty() {
            writes.push(Write::Delete(keys::index_maxid(pool.id)));
        }
        if etcd.txn(
            "removing the pool",
            &[Check::ModRevision(
                keys::CONFIG_POOLS.into(),
                pools.mod_revision,
            )],
            &writes,
        )? {
            if json_out {
                println!("{}", json!({"id": pool.id, "name": pool.name}));
            } else {
                println!("Pool {} (id {}) removed", pool.name, pool.id);
            }
            return Ok(());
        }
    }
    Err(CliError::Conflict("rm-pool", MAX_TXN_ATTEMPTS))
}

/// `replicated`, `EC 2+1`, `XOR 2+1` (data + parity chunks).
pub fn scheme_text(p: &PoolConfig) -> String {
    match p.scheme {
        Scheme::Replicated => "replicated".into(),
        Scheme::Ec => format!("EC {}+{}", p.data_chunks(), p.parity_chunks),
        Scheme::Xor => format!("XOR {}+{}", p.data_chunks(), p.parity_chunks),
    }
}

/// `ls-pools`.
pub fn ls_pools(etcd: &mut Etcd, json_out: bool) -> Result<()> {
    let pools = Pools::load(etcd)?;
    if json_out {
        let out: Vec<Value> = pools
            .valid
            .keys()
            .map(|id| {
                let mut e = pools.raw[&id.to_string()]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                e.insert("id".into(), json!(id));
                Value::Object(e)
            })
            .collect();
        println!("{}", Value::Array(out));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = pools
        .valid
        .values()
        .map(|p| {
            let raw = &pools.raw[&p.id.to_string()];
            vec![
                p.id.to_string(),
                p.name.clone(),
                scheme_text(p),
                format!("{}/{}", p.pg_size, p.pg_minsize),
                p.pg_count.to_string(),
                raw.get("failure_domain")
                    .and_then(Value::as_str)
                    .unwrap_or("host")
                    .to_string(),
                format::size(u64::from(p.block_size)),
                p.immediate_commit.map_or("-", |c| c.as_str()).to_string(),
            ]
        })
        .collect();
    format::table(
        &[
            "ID",
            "NAME",
            "SCHEME",
            "PG_SIZE",
            "PGS",
            "FAILURE_DOMAIN",
            "BLOCK",
            "IMM",
        ],
        &rows,
    );
    Ok(())
}

/// Raw space of one pool: `(total, used, free)`, and where it came from.
fn pool_space(
    pool: &PoolConfig,
    stats: Option<&Value>,
    cluster: &ClusterSpace,
) -> ((u64, u64, u64), &'static str) {
    if let Some(s) = stats.filter(|s| s.get("error").is_none()) {
        return (
            (num(s, "total_raw"), num(s, "used_raw"), num(s, "free_raw")),
            "pool/stats",
        );
    }
    let members: BTreeSet<u64> = cluster
        .osd_sets
        .iter()
        .filter(|((p, _), _)| *p == pool.id)
        .flat_map(|(_, set)| set.iter().copied().filter(|&o| o != 0))
        .collect();
    let stat = |o: &u64, f| cluster.osd_stats.get(o).map_or(0, |s| num(s, f));
    let total = members.iter().map(|o| stat(o, "size")).sum();
    let free = members
        .iter()
        .filter(|o| cluster.up.contains(o))
        .map(|o| stat(o, "free"))
        .sum();
    let used = cluster.space.get(&pool.id).copied().unwrap_or(0);
    ((total, used, free), "osd/stats")
}

/// What `df` needs when the monitor has not written `pool/stats`.
struct ClusterSpace {
    osd_sets: BTreeMap<(u32, u32), Vec<u64>>,
    osd_stats: BTreeMap<u64, Value>,
    up: BTreeSet<u64>,
    /// Raw bytes stored per pool, summed over `osd/space`.
    space: BTreeMap<u32, u64>,
}

fn cluster_space(etcd: &mut Etcd) -> Result<ClusterSpace> {
    let osd_sets = match etcd.get(keys::PG_CONFIG)? {
        Some(kv) => parse_pg_config(&kv.value)
            .0
            .into_iter()
            .map(|(k, v)| (k, v.osd_set))
            .collect(),
        None => BTreeMap::new(),
    };
    let osd_stats = etcd
        .get_prefix(keys::OSD_STATS_PREFIX)?
        .into_iter()
        .filter_map(|kv| Some((keys::parse_num(&kv.key, keys::OSD_STATS_PREFIX)?, kv.value)))
        .collect();
    let up = etcd
        .get_prefix(keys::OSD_STATE_PREFIX)?
        .into_iter()
        .filter(|kv| OsdState::from_json(&kv.key, &kv.value).is_ok_and(|s| s.is_up()))
        .filter_map(|kv| keys::parse_num(&kv.key, keys::OSD_STATE_PREFIX))
        .collect();
    let mut space: BTreeMap<u32, u64> = BTreeMap::new();
    for kv in etcd.get_prefix(keys::OSD_SPACE_PREFIX)? {
        for (pool, inodes) in kv.value.as_object().into_iter().flatten() {
            if let Ok(pool) = pool.parse::<u32>() {
                let bytes: u64 = inodes
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, b)| tolerant::u64_of(b))
                    .sum();
                *space.entry(pool).or_default() += bytes;
            }
        }
    }
    Ok(ClusterSpace {
        osd_sets,
        osd_stats,
        up,
        space,
    })
}

/// `df`.
pub fn df(etcd: &mut Etcd, json_out: bool) -> Result<()> {
    let pools = Pools::load(etcd)?;
    let cluster = cluster_space(etcd)?;
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for p in pools.valid.values() {
        let stats = etcd.get(&keys::pool_stats(p.id))?.map(|kv| kv.value);
        let ((total_raw, used_raw, free_raw), source) = pool_space(p, stats.as_ref(), &cluster);
        // Usable bytes: replicas and parity are not user data.
        let usable = |raw: u64| raw * u64::from(p.data_chunks()) / u64::from(p.pg_size);
        let (total, used, avail) = (usable(total_raw), usable(used_raw), usable(free_raw));
        out.push(json!({
            "id": p.id, "name": p.name, "scheme": scheme_text(p), "pg_size": p.pg_size,
            "pg_minsize": p.pg_minsize, "pg_count": p.pg_count,
            "total_raw": total_raw, "used_raw": used_raw, "free_raw": free_raw,
            "total": total, "used": used, "available": avail, "source": source,
        }));
        rows.push(vec![
            p.name.clone(),
            scheme_text(p),
            format!("{}/{}", p.pg_size, p.pg_minsize),
            p.pg_count.to_string(),
            format::size(total),
            format::size(used),
            format::size(avail),
            format::percent(used, total),
        ]);
    }
    if json_out {
        println!("{}", Value::Array(out));
    } else {
        format::table(
            &[
                "NAME",
                "SCHEME",
                "PG_SIZE",
                "PGS",
                "TOTAL",
                "USED",
                "AVAILABLE",
                "USED%",
            ],
            &rows,
        );
    }
    Ok(())
}
