//! Identifiers of a PG and of an OSD as types of their own, so that a pool id, a PG number
//! and an OSD number cannot be swapped silently where they cross a module boundary.
//! Both print as the original's logs write them (`1/7`, `osd.3`).

use std::fmt;

/// A placement group: pool id and PG number (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgId {
    /// Pool id.
    pub pool: u32,
    /// PG number within the pool, from 1.
    pub pg: u32,
}

impl PgId {
    /// PG `pg` of pool `pool`.
    pub const fn new(pool: u32, pg: u32) -> PgId {
        PgId { pool, pg }
    }
}

impl From<(u32, u32)> for PgId {
    fn from((pool, pg): (u32, u32)) -> PgId {
        PgId { pool, pg }
    }
}

impl From<PgId> for (u32, u32) {
    fn from(id: PgId) -> (u32, u32) {
        (id.pool, id.pg)
    }
}

impl fmt::Display for PgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.pool, self.pg)
    }
}

/// An OSD number (from 1; 0 marks an empty slot in a PG's set and is never an OSD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OsdNum(pub u64);

impl From<u64> for OsdNum {
    fn from(n: u64) -> OsdNum {
        OsdNum(n)
    }
}

impl fmt::Display for OsdNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "osd.{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_and_display() {
        let id = PgId::from((1, 7));
        assert_eq!(id, PgId::new(1, 7));
        assert_eq!(<(u32, u32)>::from(id), (1, 7));
        assert_eq!(id.to_string(), "1/7");
        assert_eq!(OsdNum::from(3).to_string(), "osd.3");
        assert!(PgId::new(1, 9) < PgId::new(2, 1));
    }
}
