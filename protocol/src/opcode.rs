//! The opcode table and the flag bits that ride in op bodies.
//!
//! Owns the mapping between wire numbers and [`Opcode`]; an unknown number is
//! an error value, never a panic.

use crate::error::ProtocolError;

/// Every operation the protocol knows, with its wire number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u64)]
pub enum Opcode {
    /// Read an object version from a secondary (primary → secondary).
    SecRead = 1,
    /// Write an unstable version on a secondary.
    SecWrite = 2,
    /// Write a version that is stable at once.
    SecWriteStable = 3,
    /// Make a secondary's completed writes durable.
    SecSync = 4,
    /// Turn unstable versions into committed state.
    SecStabilize = 5,
    /// Discard unstable versions above the given ones.
    SecRollback = 6,
    /// Delete an object on a secondary.
    SecDelete = 7,
    /// Sync and stabilize everything (tests only).
    TestSyncStabAll = 8,
    /// List object versions of PGs (peering).
    SecList = 9,
    /// Handshake: exchange configuration; first op on every connection.
    ShowConfig = 10,
    /// Client read.
    Read = 11,
    /// Client write.
    Write = 12,
    /// Client sync.
    Sync = 13,
    /// Client delete.
    Delete = 14,
    /// Keepalive.
    Ping = 15,
    /// Bulk-read object bitmaps from a secondary.
    SecReadBmp = 16,
    /// Scrub (admin).
    Scrub = 17,
    /// Describe unclean objects (admin).
    Describe = 18,
    /// Lock or unlock a PG on a secondary for a primary.
    SecLock = 19,
}

impl Opcode {
    /// Every opcode in wire order.
    pub const ALL: [Opcode; 19] = [
        Opcode::SecRead,
        Opcode::SecWrite,
        Opcode::SecWriteStable,
        Opcode::SecSync,
        Opcode::SecStabilize,
        Opcode::SecRollback,
        Opcode::SecDelete,
        Opcode::TestSyncStabAll,
        Opcode::SecList,
        Opcode::ShowConfig,
        Opcode::Read,
        Opcode::Write,
        Opcode::Sync,
        Opcode::Delete,
        Opcode::Ping,
        Opcode::SecReadBmp,
        Opcode::Scrub,
        Opcode::Describe,
        Opcode::SecLock,
    ];

    /// The number carried in the packet's `opcode` field.
    pub fn code(self) -> u64 {
        self as u64
    }

    /// A readable name for logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::SecRead => "sec_read",
            Opcode::SecWrite => "sec_write",
            Opcode::SecWriteStable => "sec_write_stable",
            Opcode::SecSync => "sec_sync",
            Opcode::SecStabilize => "sec_stabilize",
            Opcode::SecRollback => "sec_rollback",
            Opcode::SecDelete => "sec_delete",
            Opcode::TestSyncStabAll => "test_sync_stab_all",
            Opcode::SecList => "sec_list",
            Opcode::ShowConfig => "show_config",
            Opcode::Read => "read",
            Opcode::Write => "write",
            Opcode::Sync => "sync",
            Opcode::Delete => "delete",
            Opcode::Ping => "ping",
            Opcode::SecReadBmp => "sec_read_bmp",
            Opcode::Scrub => "scrub",
            Opcode::Describe => "describe",
            Opcode::SecLock => "sec_lock",
        }
    }
}

impl Opcode {
    /// The key this op is counted under in `osd/stats` `op_stats` and `subop_stats`: the
    /// original Vitastor's name for it, which its tools and dashboards read (client ops are
    /// `primary_*`, secondary ops carry the bare verb).
    pub fn stat_name(self) -> &'static str {
        match self {
            Opcode::SecRead => "read",
            Opcode::SecWrite => "write",
            Opcode::SecWriteStable => "write_stable",
            Opcode::SecSync => "sync",
            Opcode::SecStabilize => "stabilize",
            Opcode::SecRollback => "rollback",
            Opcode::SecDelete => "delete",
            Opcode::TestSyncStabAll => "sync_stab_all",
            Opcode::SecList => "list",
            Opcode::ShowConfig => "show_config",
            Opcode::Read => "primary_read",
            Opcode::Write => "primary_write",
            Opcode::Sync => "primary_sync",
            Opcode::Delete => "primary_delete",
            Opcode::Ping => "ping",
            Opcode::SecReadBmp => "sec_read_bmp",
            Opcode::Scrub => "scrub",
            Opcode::Describe => "describe",
            Opcode::SecLock => "sec_lock",
        }
    }
}

impl std::fmt::Display for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<u64> for Opcode {
    type Error = ProtocolError;

    fn try_from(code: u64) -> Result<Opcode, ProtocolError> {
        // The table is dense from 1, so the index is the code minus one.
        code.checked_sub(1)
            .and_then(|index| usize::try_from(index).ok())
            .and_then(|index| Opcode::ALL.get(index).copied())
            .ok_or(ProtocolError::UnknownOpcode { opcode: code })
    }
}

/// Op flag: the op is part of recovery or rebalance, so it is accounted (and
/// may be throttled) separately from client I/O.
pub const OSD_OP_RECOVERY_RELATED: u32 = 1;

/// Op flag: run the secondary op even though the PG is locked by a primary.
pub const OSD_OP_IGNORE_PG_LOCK: u32 = 2;

/// SEC_LOCK `flags`: take the PG lock.
pub const OSD_SEC_LOCK_PG: u64 = 1;

/// SEC_LOCK `flags`: release the PG lock.
pub const OSD_SEC_UNLOCK_PG: u64 = 2;

/// SEC_LIST request and reply `flags`: list on behalf of the primary (a
/// single-PG listing).
pub const OSD_LIST_PRIMARY: u64 = 1;

/// DELETE reply `flags`: the OSD fills in the left-on-dead list when needed.
pub const OSD_DEL_SUPPORT_LEFT_ON_DEAD: u32 = 1;

/// DELETE reply `flags`: some OSDs holding the object were down, so the
/// deletion may be incomplete on them; their numbers are in the packet.
pub const OSD_DEL_LEFT_ON_DEAD: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_spec_table() {
        for (i, op) in Opcode::ALL.iter().enumerate() {
            assert_eq!(op.code(), i as u64 + 1);
            assert_eq!(Opcode::try_from(op.code()), Ok(*op));
        }
        assert_eq!(Opcode::SecLock.code(), 19);
        assert_eq!(Opcode::ShowConfig.code(), 10);
        assert_eq!(Opcode::SecReadBmp.code(), 16);
    }

    #[test]
    fn unknown_codes_are_errors() {
        for code in [0, 20, 255, u64::MAX] {
            assert_eq!(
                Opcode::try_from(code),
                Err(ProtocolError::UnknownOpcode { opcode: code })
            );
        }
    }

    #[test]
    fn names_are_unique() {
        for name in [Opcode::name, Opcode::stat_name] {
            let mut names: Vec<_> = Opcode::ALL.iter().map(|&op| name(op)).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), Opcode::ALL.len());
        }
    }

    #[test]
    fn stat_names_are_the_originals_in_wire_order() {
        let names: Vec<_> = Opcode::ALL.iter().map(|op| op.stat_name()).collect();
        assert_eq!(
            names,
            [
                "read",
                "write",
                "write_stable",
                "sync",
                "stabilize",
                "rollback",
                "delete",
                "sync_stab_all",
                "list",
                "show_config",
                "primary_read",
                "primary_write",
                "primary_sync",
                "primary_delete",
                "ping",
                "sec_read_bmp",
                "scrub",
                "describe",
                "sec_lock",
            ]
        );
    }
}
