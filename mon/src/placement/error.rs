//! Errors reported by placement: invalid input or an infeasible pool.

/// Why a pool (or the whole placement input) could not be placed.
///
/// Every variant is a configuration problem the operator has to fix; solver
/// trouble is never an error (placement falls back and says so in the report).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// A field has a wrong type or an out-of-range value.
    #[error("{context}: invalid {field}: {reason}")]
    InvalidField {
        /// Which object (e.g. `pool 1`, `config/osd/5`).
        context: String,
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A required field is absent.
    #[error("{context}: missing {field}")]
    MissingField {
        /// Which object.
        context: String,
        /// The missing field.
        field: String,
    },
    /// A level name that `placement_levels` does not define.
    #[error("{context}: unknown placement level {level:?}")]
    UnknownLevel {
        /// Where the level was used.
        context: String,
        /// The unknown level.
        level: String,
    },
    /// `config/node_placement` describes an impossible tree.
    #[error("placement tree: node {node:?}: {reason}")]
    InvalidTree {
        /// The offending node.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// `root_node` names no node of the tree.
    #[error("pool {pool}: root_node {root:?} is not in the placement tree")]
    RootNotFound {
        /// Pool id.
        pool: u32,
        /// The configured root.
        root: String,
    },
    /// Fewer failure domains with eligible OSDs than `pg_minsize`.
    #[error(
        "pool {pool}: needs {needed} failure domains of level {level:?} with eligible OSDs, found {found}"
    )]
    Infeasible {
        /// Pool id.
        pool: u32,
        /// `pg_minsize`.
        needed: usize,
        /// Failure domains that hold at least one eligible OSD.
        found: usize,
        /// The pool's failure domain level.
        level: String,
    },
}
