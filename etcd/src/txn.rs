//! Transactions every program builds the same way: create a key only if it is absent, put
//! a key only while it is bound to our lease, and splitting many writes into transactions
//! etcd accepts.
//!
//! etcd refuses a transaction whose compares, success ops or failure ops number more than
//! its `--max-txn-ops` (128 by default); [`batch_len`] says how many writes fit in one.

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Puts `key` (full) bound to `lease` (0: none) only if it does not exist.
pub fn create(key: String, value: String, lease: i64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value, lease_options(lease))])
}

/// Puts `key` (full) only if it exists bound to `lease`: a key another holder took over (or
/// one that expired with our lease) is left alone.
pub fn put_if_lease(key: String, value: String, lease: i64) -> Txn {
    Txn::new()
        .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
        .and_then([TxnOp::put(key, value, lease_options(lease))])
}

/// Deletes `key` (full) only if it is bound to `lease`.
pub fn delete_if_lease(key: String, lease: i64) -> Txn {
    Txn::new()
        .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
        .and_then([TxnOp::delete(key, None)])
}

fn lease_options(lease: i64) -> Option<PutOptions> {
    (lease != 0).then(|| PutOptions::new().with_lease(lease))
}

/// How many writes fit in one transaction when each adds at most one compare and one
/// operation, and every transaction also carries `fixed` compares (guards such as "the
/// master key is ours"); never 0, so a batching loop always makes progress.
pub const fn batch_len(max_txn_ops: usize, fixed: usize) -> usize {
    if max_txn_ops > fixed {
        max_txn_ops - fixed
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_leave_room_for_the_fixed_guards() {
        assert_eq!(batch_len(DEFAULT_MAX_TXN_OPS, 2), 126);
        assert_eq!(batch_len(DEFAULT_MAX_TXN_OPS, 0), 128);
        assert_eq!(batch_len(2, 5), 1);
    }
}
