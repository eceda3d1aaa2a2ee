//! Identifiers and the `pg/config` layout written to etcd.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::PlacementError;

/// OSD number. `OsdNum(0)` never names an OSD: in an `osd_set` it marks a missing slot.
/// Written as a number; read from a number or a numeric string (the original monitor's form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct OsdNum(pub u64);

impl<'de> Deserialize<'de> for OsdNum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OsdNum, D::Error> {
        vitastor_layout::tolerant::num(d).map(OsdNum)
    }
}

impl OsdNum {
    /// The "no OSD" marker used for missing slots and for a PG without a primary.
    pub const NONE: OsdNum = OsdNum(0);

    /// True for the missing-slot marker.
    pub fn is_none(self) -> bool {
        self == Self::NONE
    }
}

impl fmt::Display for OsdNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Pool id (key of `config/pools`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PoolId(pub u32);

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// PG number inside a pool; PG numbers start at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PgNum(pub u32);

impl fmt::Display for PgNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One PG of `pg/config`: `{"osd_set":[1,2,3],"primary":1,"pause":false}`.
///
/// `osd_set` has `pg_size` entries; for EC/XOR pools the position is the part
/// number, so positions are kept stable across re-placements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgPlacement {
    /// OSD per slot, [`OsdNum::NONE`] for a missing slot.
    pub osd_set: Vec<OsdNum>,
    /// Primary OSD, [`OsdNum::NONE`] when no OSD of the set is up.
    pub primary: OsdNum,
    /// Set by the monitor while it changes the PG count; placement never pauses a PG.
    #[serde(default, deserialize_with = "vitastor_layout::tolerant::flag")]
    pub pause: bool,
}

/// The PGs of one pool, keyed by PG number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PoolPgConfig {
    /// PG number → placement.
    pub pgs: BTreeMap<PgNum, PgPlacement>,
}

impl PoolPgConfig {
    /// The placement of PG `pg`, if present.
    pub fn get(&self, pg: PgNum) -> Option<&PgPlacement> {
        self.pgs.get(&pg)
    }
}

/// The whole `pg/config` value: `{"items":{"<pool>":{"<pg>":{...}}}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgConfig {
    /// Pool id → its PGs.
    #[serde(default)]
    pub items: BTreeMap<PoolId, PoolPgConfig>,
}

impl PgConfig {
    /// Parses the etcd value of `pg/config`; `null` (key absent) is an empty config.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, PlacementError> {
        if value.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(value.clone()).map_err(|e| PlacementError::InvalidField {
            context: "pg/config".into(),
            field: "items".into(),
            reason: e.to_string(),
        })
    }

    /// The etcd value of `pg/config`.
    pub fn to_json(&self) -> serde_json::Value {
        // Serializing maps of newtype integers to JSON cannot fail: keys become strings.
        serde_json::to_value(self).expect("pg/config is always representable as JSON")
    }
}
