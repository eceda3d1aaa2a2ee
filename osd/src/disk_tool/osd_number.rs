//! OSD numbers for newly prepared stores: taken from etcd by a transaction so that two
//! hosts preparing disks at the same time never get the same number. A number is reserved by
//! creating `osd/stats/<N>` with `{}`, as the original's `alloc-osd` does; the OSD overwrites
//! it with real statistics once it runs.
//!
//! The choice is one above the highest number the cluster has ever shown (`osd/stats`,
//! `osd/state`, `config/osd`), never a gap: a removed OSD's number may still be named by
//! `pg/history`, and reusing it would make peering look for that OSD's data on a new disk.
//!
//! # What it must never do
//! - Reserve a number without the transaction's check that nobody else holds it.
//! - Wait on etcd without a bound.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use vitastor_etcd::{bounded, connect, EtcdAddress};
use vitastor_layout::keys;

use super::ToolError;

/// Bound on each etcd call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Transactions lost to another host's allocation before giving up.
const ATTEMPTS: usize = 20;
/// Key prefixes whose numbers count as taken.
const TAKEN_PREFIXES: [&str; 3] = [
    keys::OSD_STATS_PREFIX,
    keys::OSD_STATE_PREFIX,
    keys::CONFIG_OSD_PREFIX,
];

/// The number to try: one above every number taken.
pub fn next_osd_num(taken: &BTreeSet<u64>) -> u64 {
    taken.last().map_or(1, |n| n + 1)
}

/// A connected client of the cluster at `address`, the runtime that drives it, and the
/// normalized `prefix`.
struct Session {
    rt: tokio::runtime::Runtime,
    client: etcd_client::Client,
    prefix: String,
}

impl Session {
    fn open(address: &str, prefix: &str) -> Result<Session, ToolError> {
        let endpoints =
            EtcdAddress::parse(address).map_err(|e| ToolError::Invalid(e.to_string()))?;
        let prefix = vitastor_etcd::normalize_prefix(prefix)
            .map_err(|e| ToolError::Invalid(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ToolError::io("start the etcd client runtime", e))?;
        let client = rt.block_on(connect(endpoints.endpoints(), CALL_TIMEOUT))?;
        Ok(Session { rt, client, prefix })
    }
}

/// Whether OSD `osd_num` holds its `osd/state` key (it runs, or died within its lease).
pub fn is_up(address: &str, prefix: &str, osd_num: u64) -> Result<bool, ToolError> {
    let Session {
        rt,
        mut client,
        prefix,
    } = Session::open(address, prefix)?;
    let key = keys::full(&prefix, &keys::osd_state(osd_num));
    let opts = GetOptions::new().with_count_only();
    let r = rt.block_on(bounded(CALL_TIMEOUT, "get", client.get(key, Some(opts))))?;
    Ok(r.count() > 0)
}

/// Reserves a new OSD number in the cluster at `address` under `prefix`.
pub fn allocate(address: &str, prefix: &str) -> Result<u64, ToolError> {
    let Session {
        rt,
        mut client,
        prefix,
    } = Session::open(address, prefix)?;
    rt.block_on(async {
        for _ in 0..ATTEMPTS {
            let mut taken = BTreeSet::new();
            for p in TAKEN_PREFIXES {
                let full = keys::full(&prefix, p);
                let opts = GetOptions::new().with_prefix().with_keys_only();
                let r = bounded(CALL_TIMEOUT, "get", client.get(full.as_str(), Some(opts))).await?;
                taken.extend(
                    r.kvs()
                        .iter()
                        .filter_map(|kv| keys::parse_num(kv.key_str().ok()?, &full)),
                );
            }
            let n = next_osd_num(&taken);
            let absent = |k: String| Compare::create_revision(k, CompareOp::Equal, 0);
            let txn = Txn::new()
                .when([
                    absent(keys::full(&prefix, &keys::osd_stats(n))),
                    absent(keys::full(&prefix, &keys::osd_state(n))),
                    absent(keys::full(&prefix, &keys::config_osd(n))),
                ])
                .and_then([TxnOp::put(
                    keys::full(&prefix, &keys::osd_stats(n)),
                    "{}",
                    None,
                )]);
            let r = bounded(CALL_TIMEOUT, "txn", client.txn(txn)).await?;
            if r.succeeded() {
                return Ok(n);
            }
        }
        Err(ToolError::Invalid(format!(
            "no OSD number could be reserved: {ATTEMPTS} attempts lost to other allocations"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_above_the_highest_never_a_gap() {
        assert_eq!(next_osd_num(&BTreeSet::new()), 1);
        assert_eq!(next_osd_num(&[1, 2, 3].into()), 4);
        assert_eq!(next_osd_num(&[2, 7].into()), 8);
    }
}
