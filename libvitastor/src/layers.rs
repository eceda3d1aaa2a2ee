//! Snapshot and clone layers: which inodes a read of a layered image goes through, and which
//! parts of a layer's reply must be read again from the layer below.
//!
//! An image with `parent_id` is the top of a chain of layers (clone → snapshot → … → base).
//! The top layer is read first; an OSD's READ reply carries the object's allocation bitmap,
//! and the granules whose bit is clear are read from the next layer down, and so on. Writes
//! only ever go to the top layer, so nothing here concerns them.
//!
//! # What this module must never do
//! - Follow a chain it cannot prove finite: a parent that is unknown, in a pool that does
//!   not exist, or already in the chain (a cycle written by hand) is an error for the op,
//!   never a hang or a loop.
//! - Allocate per op: the chain is written into the op's reusable vector.

use vitastor_layout::{inode_with_pool, pool_of};

use crate::cluster::ClusterView;
use crate::error::ClientError;

/// Longest chain followed; deeper chains are refused rather than walked without bound.
pub(crate) const MAX_LAYERS: usize = 1024;

/// Writes the layers of `inode` (with pool bits) into `out`, top first: `[inode]` for an
/// image without a parent or an inode without metadata, `[inode, parent, grandparent…]`
/// otherwise.
pub(crate) fn resolve_chain(
    view: &ClusterView,
    inode: u64,
    out: &mut Vec<u64>,
) -> Result<(), ClientError> {
    out.clear();
    out.push(inode);
    let mut cur = inode;
    while let Some(entry) = view.inode(cur) {
        let parent = entry
            .config
            .parent(pool_of(cur))
            .map_err(|e| ClientError::BrokenLayers(e.to_string()))?;
        let Some((pool, id)) = parent else {
            return Ok(());
        };
        let name = &entry.config.name;
        let parent = inode_with_pool(pool, id);
        if !view.pools.contains_key(&pool) {
            return Err(ClientError::BrokenLayers(format!(
                "layer {name} has its parent {id} in pool {pool}, which does not exist"
            )));
        }
        if view.inode(parent).is_none() {
            return Err(ClientError::BrokenLayers(format!(
                "layer {name} names parent {id} in pool {pool}, which does not exist"
            )));
        }
        if out.contains(&parent) {
            return Err(ClientError::BrokenLayers(format!(
                "the parents of {} form a cycle at layer {name}",
                view.inode(inode).map_or("?", |e| e.config.name.as_str())
            )));
        }
        if out.len() >= MAX_LAYERS {
            return Err(ClientError::BrokenLayers(format!(
                "more than {MAX_LAYERS} layers under {name}"
            )));
        }
        out.push(parent);
        cur = parent;
    }
    Ok(())
}

/// Calls `f(offset, len)` for every run of granules in `[0, len)` of a part whose bits are
/// clear in `bitmap`; bit `first_bit` of the bitmap is the part's first granule. Bits past
/// the bitmap's end count as clear (an object the layer does not hold has an empty bitmap).
pub(crate) fn missing_runs(
    bitmap: &[u8],
    first_bit: u64,
    granularity: u64,
    len: u64,
    mut f: impl FnMut(u64, u64),
) {
    let granules = len / granularity;
    let is_set = |i: u64| {
        let bit = first_bit + i;
        bitmap
            .get((bit / 8) as usize)
            .is_some_and(|b| b & (1 << (bit % 8)) != 0)
    };
    let mut i = 0;
    while i < granules {
        if is_set(i) {
            i += 1;
            continue;
        }
        let start = i;
        while i < granules && !is_set(i) {
            i += 1;
        }
        f(start * granularity, (i - start) * granularity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::{EtcdEvent, EtcdKv};
    use serde_json::{json, Value};

    fn view(kvs: &[(&str, Value)]) -> ClusterView {
        let mut v = ClusterView::default();
        let mut all = vec![(
            "config/pools",
            json!({"1":{"name":"a","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":1},
                   "2":{"name":"b","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":1}}),
        )];
        all.extend(kvs.iter().cloned());
        v.apply(EtcdEvent::Loaded {
            kvs: all
                .into_iter()
                .map(|(k, value)| EtcdKv {
                    key: k.into(),
                    value,
                    mod_revision: 1,
                })
                .collect(),
        });
        v
    }

    fn chain(v: &ClusterView, inode: u64) -> Result<Vec<u64>, String> {
        let mut out = Vec::new();
        resolve_chain(v, inode, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    const P1: u64 = 1 << 48;
    const P2: u64 = 2 << 48;

    #[test]
    fn chains_follow_parents_across_pools() {
        let v = view(&[
            (
                "config/inode/1/1",
                json!({"name":"base","size":4096,"readonly":true}),
            ),
            (
                "config/inode/1/2",
                json!({"name":"base@s","size":4096,"parent_id":1,"readonly":true}),
            ),
            (
                "config/inode/2/3",
                json!({"name":"clone","size":4096,"parent_pool":1,"parent_id":2}),
            ),
        ]);
        assert_eq!(chain(&v, P2 | 3).unwrap(), vec![P2 | 3, P1 | 2, P1 | 1]);
        assert_eq!(chain(&v, P1 | 1).unwrap(), vec![P1 | 1]);
        // An inode without metadata (fio -pool -inode) is a single layer.
        assert_eq!(chain(&v, P1 | 9).unwrap(), vec![P1 | 9]);
    }

    #[test]
    fn broken_chains_are_errors() {
        let unknown = view(&[(
            "config/inode/1/3",
            json!({"name":"c","size":1,"parent_id":7}),
        )]);
        let e = chain(&unknown, P1 | 3).unwrap_err();
        assert!(
            e.contains("parent 7") && e.contains("does not exist"),
            "{e}"
        );

        let missing_pool = view(&[(
            "config/inode/1/3",
            json!({"name":"c","size":1,"parent_pool":5,"parent_id":1}),
        )]);
        let e = chain(&missing_pool, P1 | 3).unwrap_err();
        assert!(e.contains("pool 5"), "{e}");

        let cycle = view(&[
            (
                "config/inode/1/1",
                json!({"name":"x","size":1,"parent_id":2}),
            ),
            (
                "config/inode/1/2",
                json!({"name":"y","size":1,"parent_id":1}),
            ),
        ]);
        let e = chain(&cycle, P1 | 1).unwrap_err();
        assert!(e.contains("cycle"), "{e}");
        let own = view(&[(
            "config/inode/1/1",
            json!({"name":"x","size":1,"parent_id":1}),
        )]);
        assert!(chain(&own, P1 | 1).unwrap_err().contains("cycle"));
    }

    fn runs(bitmap: &[u8], first: u64, len: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        missing_runs(bitmap, first, 4096, len, |o, l| out.push((o, l)));
        out
    }

    #[test]
    fn missing_runs_are_the_clear_granules() {
        // A layer that holds the whole range costs nothing more.
        assert_eq!(runs(&[0xff], 0, 8 * 4096), vec![]);
        assert_eq!(runs(&[], 0, 2 * 4096), vec![(0, 8192)]);
        // bits 1 and 2 set: granules 0 and 3.. are missing
        assert_eq!(
            runs(&[0b0000_0110], 0, 5 * 4096),
            vec![(0, 4096), (3 * 4096, 2 * 4096)]
        );
        // The part starts at granule 9 of the object.
        assert_eq!(
            runs(&[0, 0b0000_0010], 8, 3 * 4096),
            vec![(0, 4096), (8192, 4096)]
        );
    }
}
