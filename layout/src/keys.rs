//! Key names, relative to the cluster prefix (`/vitastor` by default) and without a leading
//! slash, exactly as the etcd watchers of every program report them.

/// Default `etcd_prefix`.
pub const DEFAULT_PREFIX: &str = "/vitastor";

/// Cluster-wide options.
pub const CONFIG_GLOBAL: &str = "config/global";
/// All pools, one JSON object.
pub const CONFIG_POOLS: &str = "config/pools";
/// Per-OSD operator settings (`reweight`, `tags`, `noout`), one key per OSD.
pub const CONFIG_OSD_PREFIX: &str = "config/osd/";
/// Placement tree.
pub const CONFIG_NODE_PLACEMENT: &str = "config/node_placement";
/// Image metadata, `config/inode/<pool>/<inode>`.
pub const CONFIG_INODE_PREFIX: &str = "config/inode/";
/// PG placement, one JSON object for all pools.
pub const PG_CONFIG: &str = "pg/config";
/// `pg/history/<pool>/<pg>`.
pub const PG_HISTORY_PREFIX: &str = "pg/history/";
/// `pg/state/<pool>/<pg>`.
pub const PG_STATE_PREFIX: &str = "pg/state/";
/// `osd/state/<osd>`.
pub const OSD_STATE_PREFIX: &str = "osd/state/";
/// `osd/stats/<osd>`.
pub const OSD_STATS_PREFIX: &str = "osd/stats/";
/// `osd/inodestats/<pool>`.
pub const OSD_INODESTATS_PREFIX: &str = "osd/inodestats/";
/// `osd/space/<osd>`.
pub const OSD_SPACE_PREFIX: &str = "osd/space/";
/// `index/image/<name>`.
pub const INDEX_IMAGE_PREFIX: &str = "index/image/";
/// `index/maxid/<pool>`.
pub const INDEX_MAXID_PREFIX: &str = "index/maxid/";
/// The master monitor's leased key.
pub const MON_MASTER: &str = "mon/master";
/// Last PG config in which every PG was clean.
pub const LAST_CLEAN_PGS: &str = "history/last_clean_pgs";

/// `osd/state/<osd>`.
pub fn osd_state(osd: u64) -> String {
    format!("{OSD_STATE_PREFIX}{osd}")
}

/// `osd/stats/<osd>`.
pub fn osd_stats(osd: u64) -> String {
    format!("{OSD_STATS_PREFIX}{osd}")
}

/// `config/osd/<osd>`.
pub fn config_osd(osd: u64) -> String {
    format!("{CONFIG_OSD_PREFIX}{osd}")
}

/// `pg/state/<pool>/<pg>`.
pub fn pg_state(pool: u32, pg: u32) -> String {
    format!("{PG_STATE_PREFIX}{pool}/{pg}")
}

/// `pg/history/<pool>/<pg>`.
pub fn pg_history(pool: u32, pg: u32) -> String {
    format!("{PG_HISTORY_PREFIX}{pool}/{pg}")
}

/// `config/inode/<pool>/<inode>` (inode without its pool bits).
pub fn config_inode(pool: u32, inode: u64) -> String {
    format!("{CONFIG_INODE_PREFIX}{pool}/{inode}")
}

/// `index/image/<name>`.
pub fn index_image(name: &str) -> String {
    format!("{INDEX_IMAGE_PREFIX}{name}")
}

/// `index/maxid/<pool>`.
pub fn index_maxid(pool: u32) -> String {
    format!("{INDEX_MAXID_PREFIX}{pool}")
}

/// The number after `prefix` in `key` (`osd/state/12` → 12).
pub fn parse_num(key: &str, prefix: &str) -> Option<u64> {
    key.strip_prefix(prefix)?.parse().ok()
}

/// The two numbers after `prefix` in `key` (`pg/state/1/7` → (1, 7)).
pub fn parse_pair(key: &str, prefix: &str) -> Option<(u32, u64)> {
    let (a, b) = key.strip_prefix(prefix)?.split_once('/')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Joins the cluster prefix and a relative key: `("/vitastor", "pg/config")` → `/vitastor/pg/config`.
pub fn full(prefix: &str, key: &str) -> String {
    format!("{}/{}", prefix.trim_end_matches('/'), key)
}

/// Cluster-wide stats aggregate, written by the monitor.
pub const STATS: &str = "stats";
/// `pool/stats/<pool>`, written by the monitor.
pub const POOL_STATS_PREFIX: &str = "pool/stats/";
/// `inode/stats/<pool>/<inode>`, written by the monitor.
pub const INODE_STATS_PREFIX: &str = "inode/stats/";

/// `pool/stats/<pool>`.
pub fn pool_stats(pool: u32) -> String {
    format!("{POOL_STATS_PREFIX}{pool}")
}

/// `inode/stats/<pool>/<inode>` (inode without its pool bits).
pub fn inode_stats(pool: u32, inode: u64) -> String {
    format!("{INODE_STATS_PREFIX}{pool}/{inode}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_num(&osd_state(12), OSD_STATE_PREFIX), Some(12));
        assert_eq!(parse_pair(&pg_state(1, 7), PG_STATE_PREFIX), Some((1, 7)));
        assert_eq!(parse_pair("pg/state/x/7", PG_STATE_PREFIX), None);
        assert_eq!(full("/vitastor/", PG_CONFIG), "/vitastor/pg/config");
    }
}
