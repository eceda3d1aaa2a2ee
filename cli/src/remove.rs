//! Removing an inode's data: `rm`, `rm-data`, shrinking `modify --resize`, and `vitastor-rm`.
//!
//! Two ways to know which objects to delete:
//! - listing ([`remove_listed`]), as the original does: every PG of the pool is listed on
//!   its primary (SEC_LIST for that inode, through the client library), at most
//!   `parallel_osds` PGs at a time, and every object found is deleted — objects past the
//!   image's size too, and without knowing the size at all (an inode with no `config/inode`
//!   key). Nothing is deleted unless every PG answered, so a failed removal lists again.
//! - a range ([`remove_data`]): every object from `min_offset` to `size` in `pg_block_size`
//!   steps, deleting absent ones harmlessly; for shrinking and an explicit `--size`.
//!
//! # What this module owns
//! - The listing and removal loops on the client library: objects grouped by the primary OSD
//!   of their PG, at most `iodepth` deletes in flight per OSD and at most `parallel_osds` OSDs
//!   busy at once (the original's knobs: they bound the load on each OSD and on the cluster).
//! - The progress bars (stderr, only on a terminal).
//!
//! # What it must never do
//! - Touch etcd keys: the callers remove metadata only after the data is gone, so a failed
//!   removal can simply be run again.
//! - Delete an object that also holds data below `min_offset` (a shrink keeps the object the
//!   new end falls in).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::IsTerminal;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vitastor::{Client, ClientError, OpDone};
use vitastor_layout::PoolConfig;

use crate::error::{CliError, Result};
use crate::options::Resolved;

/// How long the client library may take to load the cluster state before removal gives up
/// (it connects to etcd itself, with its own retries).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// With no delete finishing for this long, say so on stderr: the client library retries
/// forever while a PG is inactive, and the operator should know why nothing moves.
const STALL_WARNING: Duration = Duration::from_secs(30);
/// Default `--stall_timeout` (s): long enough to ride out a PG's peering after an OSD
/// restart, short enough that a pool with dead PGs ends in an error rather than a hang.
const DEFAULT_STALL_TIMEOUT_S: u64 = 120;
/// One poll of the client's event loop; short enough for a responsive progress bar.
const POLL: Duration = Duration::from_millis(100);

/// Parallelism of a removal.
#[derive(Debug, Clone, Copy, Args)]
#[command(rename_all = "snake_case")]
pub struct Limits {
    /// OSDs receiving deletes at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel_osds: u32,
    /// Deletes in flight per OSD.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub iodepth: u32,
    /// Give up when no delete finishes for this many seconds (PGs not active); 0 = wait
    /// forever.
    #[arg(long, default_value_t = DEFAULT_STALL_TIMEOUT_S, value_name = "SECS")]
    pub stall_timeout: u64,
}

/// Shared between the loop and the delete callbacks.
#[derive(Default)]
struct Done {
    /// `(group, error)` of each finished delete since the loop last looked.
    finished: Vec<(usize, Option<ClientError>)>,
}

/// Deletes the objects of `inode` (with pool bits) of `pool` covering `[min_offset, size)`.
/// Returns the number of objects deleted.
pub fn remove_data(
    resolved: &Resolved,
    pool: &PoolConfig,
    inode: u64,
    min_offset: u64,
    size: u64,
    limits: Limits,
) -> Result<u64> {
    let block = pool.pg_block_size();
    let first = min_offset.div_ceil(block) * block;
    let end = size.div_ceil(block) * block;
    if first >= end {
        return Ok(0);
    }
    let mut client = ready_client(resolved)?;
    let offsets = (first..end).step_by(block as usize);
    delete_objects(&mut client, pool, inode, offsets, limits)
}

/// Lists the objects of `inode` (with pool bits) on the OSDs of `pool` and deletes every one
/// that starts at or above `min_offset`, wherever it lies. Returns the number deleted.
pub fn remove_listed(
    resolved: &Resolved,
    pool: &PoolConfig,
    inode: u64,
    min_offset: u64,
    limits: Limits,
) -> Result<u64> {
    let mut client = ready_client(resolved)?;
    let found = list_objects(&mut client, pool, inode, limits)?;
    let block = pool.pg_block_size();
    let first = min_offset.div_ceil(block) * block;
    delete_objects(
        &mut client,
        pool,
        inode,
        found.range(first..).copied(),
        limits,
    )
}

/// How many objects `inode` (with pool bits) has on the OSDs of `pool`, by listing them.
pub(crate) fn count_objects(
    resolved: &Resolved,
    pool: &PoolConfig,
    inode: u64,
    limits: Limits,
) -> Result<u64> {
    let mut client = ready_client(resolved)?;
    Ok(list_objects(&mut client, pool, inode, limits)?.len() as u64)
}

/// A client library instance with the cluster state loaded.
pub(crate) fn ready_client(resolved: &Resolved) -> Result<Client> {
    let mut client = Client::new(&resolved.client_options())?;
    // Removing a snapshot's data (rm, merge) is decided by the command; the client's
    // read-only guard is for writers of image data.
    client.allow_readonly_writes(true);
    let deadline = Instant::now() + READY_TIMEOUT;
    while !client.is_ready() {
        if Instant::now() > deadline {
            return Err(CliError::EtcdTimeout {
                what: "loading the cluster state into the client library".into(),
                timeout: READY_TIMEOUT,
            });
        }
        client.wait_events(Some(POLL));
    }
    Ok(client)
}

/// Every object of `inode` in `pool`, from one listing per PG, at most `parallel_osds` PGs
/// at a time. Fails unless every PG answered.
fn list_objects(
    client: &mut Client,
    pool: &PoolConfig,
    inode: u64,
    limits: Limits,
) -> Result<BTreeSet<u64>> {
    let total = u64::from(pool.pg_count);
    let bar = progress_bar(total, "listing {bar:40} {pos}/{len} PGs");
    let answers: Rc<RefCell<Vec<(u32, OpDone)>>> = Rc::default();
    let mut next_pg = 1u32;
    let (mut inflight, mut answered) = (0u32, 0u64);
    let mut found = BTreeSet::new();
    let (mut failed, mut first_error) = (0u64, None::<String>);
    let mut last_progress = Instant::now();
    let stall_timeout = Duration::from_secs(limits.stall_timeout);
    while answered < total {
        while inflight < limits.parallel_osds && next_pg <= pool.pg_count {
            let answers = answers.clone();
            let pg = next_pg;
            client.list_objects(inode, pg, move |done| answers.borrow_mut().push((pg, done)));
            next_pg += 1;
            inflight += 1;
        }
        client.wait_events(Some(POLL));
        let batch = std::mem::take(&mut *answers.borrow_mut());
        if !batch.is_empty() {
            last_progress = Instant::now();
        }
        for (pg, done) in batch {
            inflight -= 1;
            answered += 1;
            bar.inc(1);
            match done.result {
                Ok(_) => found.extend(done.objects),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("PG {pg}: {e}"));
                }
            }
        }
        if limits.stall_timeout > 0 && last_progress.elapsed() > stall_timeout {
            bar.finish_and_clear();
            return Err(CliError::Listing {
                inode,
                failed: total - answered + failed,
                total,
                first: first_error.unwrap_or_else(|| {
                    format!(
                        "no PG answered for {stall_timeout:?}: PGs are not active (see pg-list)"
                    )
                }),
            });
        }
    }
    bar.finish_and_clear();
    match first_error {
        Some(first) => Err(CliError::Listing {
            inode,
            failed,
            total,
            first,
        }),
        None => Ok(found),
    }
}

/// Deletes the objects starting at `offsets` (see the module docs for the limits).
fn delete_objects(
    client: &mut Client,
    pool: &PoolConfig,
    inode: u64,
    offsets: impl Iterator<Item = u64>,
    limits: Limits,
) -> Result<u64> {
    let block = pool.pg_block_size();
    // Group objects by the OSD serving their PG now; a PG without an active primary gets a
    // group of its own (group key 0 + pg) so it does not hold up the rest.
    let mut groups: BTreeMap<(u64, u32), VecDeque<u64>> = BTreeMap::new();
    let mut total = 0u64;
    for offset in offsets {
        let pg = pool.pg_of(offset);
        let key = match client.view().primary(pool.id, pg) {
            Some((osd, _)) => (osd, 0),
            None => (0, pg),
        };
        groups.entry(key).or_default().push_back(offset);
        total += 1;
    }
    let mut queues: Vec<VecDeque<u64>> = groups.into_values().collect();
    let bar = progress_bar(
        total,
        "removing {bar:40} {pos}/{len} objects, {per_sec}, eta {eta}",
    );
    let done = Rc::new(RefCell::new(Done::default()));
    let mut inflight = vec![0u32; queues.len()];
    let (mut finished, mut failed, mut first_error) = (0u64, 0u64, None::<String>);
    let mut last_progress = Instant::now();
    let mut last_warning = Instant::now();
    let stall_timeout = Duration::from_secs(limits.stall_timeout);
    while finished < total {
        let mut busy = inflight.iter().filter(|&&n| n > 0).count() as u32;
        for (g, queue) in queues.iter_mut().enumerate() {
            while inflight[g] < limits.iodepth && !queue.is_empty() {
                if inflight[g] == 0 {
                    if busy >= limits.parallel_osds {
                        break;
                    }
                    busy += 1;
                }
                let Some(offset) = queue.pop_front() else {
                    break;
                };
                inflight[g] += 1;
                let done = done.clone();
                client.delete(inode, offset, block, 0, move |r| {
                    done.borrow_mut().finished.push((g, r.result.err()));
                });
            }
        }
        client.wait_events(Some(POLL));
        let batch = std::mem::take(&mut done.borrow_mut().finished);
        if !batch.is_empty() {
            last_progress = Instant::now();
            last_warning = last_progress;
        }
        for (g, error) in batch {
            inflight[g] -= 1;
            finished += 1;
            bar.inc(1);
            if let Some(e) = error {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        if limits.stall_timeout > 0 && last_progress.elapsed() > stall_timeout {
            bar.finish_and_clear();
            return Err(CliError::DataRemoval {
                inode,
                failed: total - finished + failed,
                total,
                first: first_error.unwrap_or_else(|| {
                    format!(
                        "no delete finished for {stall_timeout:?}: their PGs are not active \
                         (see pg-list)"
                    )
                }),
            });
        }
        if last_warning.elapsed() > STALL_WARNING {
            bar.suspend(|| {
                eprintln!(
                    "warning: no delete finished for {:?}; {} objects wait for their PGs to \
                     become active",
                    last_progress.elapsed(),
                    total - finished
                )
            });
            last_warning = Instant::now();
        }
    }
    bar.finish_and_clear();
    match first_error {
        Some(first) => Err(CliError::DataRemoval {
            inode,
            failed,
            total,
            first,
        }),
        None => Ok(total),
    }
}

fn progress_bar(total: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(POLL);
    bar
}
