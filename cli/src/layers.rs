//! Snapshot and clone commands: `snap-create`, `create --snapshot`/`--parent`, `flatten`,
//! `merge-data`, `ls --tree`, and `rm` of a snapshot inside a chain.
//!
//! Layers are images whose `config/inode` names a parent (`parent_pool`, `parent_id`), as
//! the original writes them; a snapshot is a read-only layer.
//!
//! # What this module owns
//! - `snap-create IMAGE@SNAP` as one etcd transaction: the image's inode is renamed to the
//!   read-only `IMAGE@SNAP`, and `IMAGE` moves to a new, empty inode whose parent it is. The
//!   transaction checks every key it reads, so a racing writer or a crash never leaves two
//!   images with one name, or none.
//! - Walking a layer's chain (refusing unknown parents and cycles).
//! - The metadata steps around [`crate::copy`]: a parent is dropped, or a snapshot removed,
//!   only after the data it provided is in place. `rm` of a snapshot in a chain moves the
//!   smaller side: the snapshot's data up into its child, or a small read-only child's data
//!   down into the snapshot, whose inode then takes the child's name ([`merge_down`]).
//!
//! # What it must never do
//! - Change a layer's parent before the data it would lose has been copied.
//! - Remove a layer that still has children other than the one it was merged into.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use vitastor_layout::{inode_with_pool, keys, ImageIndex, InodeConfig};

use crate::copy::{copy_missing, CopyJob, CopyStats};
use crate::error::{CliError, Result};
use crate::etcd::{Check, Etcd, Write};
use crate::images::next_id;
use crate::options::Resolved;
use crate::remove::{ready_client, remove_listed, Limits};
use crate::state::{check_image_name, find_image, load_images, Image, Pools, MAX_TXN_ATTEMPTS};

/// `snap-create IMAGE@SNAP`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct SnapCreateArgs {
    /// The image and the snapshot's name, `IMAGE@SNAP`.
    pub name: String,
}

/// Options of the commands that copy data (`flatten`, `merge-data`, `rm` of a snapshot).
#[derive(Debug, Clone, Copy, Args)]
#[command(rename_all = "snake_case")]
pub struct CopyLimits {
    /// Objects copied at the same time.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub copy_iodepth: u32,
}

/// `flatten LAYER`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct FlattenArgs {
    /// The clone to make independent of its parents.
    pub name: String,
    #[command(flatten)]
    pub copy: CopyLimits,
    /// Give up when no I/O finishes for this many seconds; 0 = wait forever.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub stall_timeout: u64,
}

/// `merge-data FROM TO`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct MergeDataArgs {
    /// A layer below TO: its data, and that of the layers between, is copied.
    pub from: String,
    /// The layer written: it gets the granules it lacks and FROM (or a layer between) holds.
    pub to: String,
    #[command(flatten)]
    pub copy: CopyLimits,
    /// Give up when no I/O finishes for this many seconds; 0 = wait forever.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub stall_timeout: u64,
}

/// Splits `IMAGE@SNAP`.
pub fn split_snapshot(name: &str) -> Result<(&str, &str)> {
    match name.split_once('@') {
        Some((image, snap)) if !image.is_empty() && !snap.is_empty() && !snap.contains('@') => {
            check_image_name(image)?;
            Ok((image, snap))
        }
        _ => Err(CliError::Usage(format!(
            "bad snapshot name {name:?}: expected IMAGE@SNAP"
        ))),
    }
}

/// The layers under `img`, parent first; refuses unknown parents and cycles.
pub fn chain_of(all: &[Image], img: &Image) -> Result<Vec<Image>> {
    let by_id: BTreeMap<(u32, u64), &Image> = all.iter().map(|i| ((i.pool, i.id), i)).collect();
    let mut out: Vec<Image> = Vec::new();
    let mut cur = img.clone();
    while let Some(parent) = cur.parent() {
        if parent == (img.pool, img.id) || out.iter().any(|i| (i.pool, i.id) == parent) {
            return Err(CliError::Refused(format!(
                "the parents of {} form a cycle at {}",
                img.cfg.name, cur.cfg.name
            )));
        }
        let p = by_id.get(&parent).ok_or_else(|| {
            CliError::Refused(format!(
                "layer {} names parent {} in pool {}, which does not exist",
                cur.cfg.name, parent.1, parent.0
            ))
        })?;
        out.push((*p).clone());
        cur = (*p).clone();
    }
    Ok(out)
}

/// `snap-create IMAGE@SNAP` (and `create --snapshot SNAP IMAGE`).
pub fn snap_create(etcd: &mut Etcd, full: &str, json_out: bool) -> Result<()> {
    let (image, _) = split_snapshot(full)?;
    let mut floor = 0;
    for _ in 0..MAX_TXN_ATTEMPTS {
        let (img, index_rev) = find_image(etcd, image)?;
        let (new_id, maxid_rev) = next_id(etcd, img.pool, floor)?;
        let snap_index = keys::index_image(full);
        let new_key = keys::config_inode(img.pool, new_id);
        // The old inode keeps its data and its own parent, and becomes the snapshot.
        let mut snap = img.raw.as_object().cloned().unwrap_or_default();
        snap.insert("name".into(), json!(full));
        snap.insert("readonly".into(), json!(true));
        let top = InodeConfig {
            name: image.to_string(),
            size: img.cfg.size,
            parent_pool: 0,
            parent_id: img.id,
            readonly: false,
        };
        let ok = etcd.txn(
            "creating the snapshot",
            &[
                Check::ModRevision(keys::index_maxid(img.pool), maxid_rev),
                Check::ModRevision(keys::index_image(image), index_rev),
                Check::ModRevision(img.key(), img.mod_revision),
                Check::ModRevision(snap_index.clone(), 0),
                Check::ModRevision(new_key.clone(), 0),
            ],
            &[
                Write::Put(keys::index_maxid(img.pool), json!(new_id)),
                Write::Put(img.key(), Value::Object(snap)),
                Write::Put(new_key.clone(), top.to_json()),
                Write::Put(
                    keys::index_image(image),
                    json!(ImageIndex {
                        id: new_id,
                        pool_id: img.pool
                    }),
                ),
                Write::Put(
                    snap_index.clone(),
                    json!(ImageIndex {
                        id: img.id,
                        pool_id: img.pool
                    }),
                ),
            ],
        )?;
        if ok {
            if json_out {
                println!(
                    "{}",
                    json!({"snapshot": full, "snapshot_id": img.id, "image": image,
                           "id": new_id, "pool_id": img.pool})
                );
            } else {
                println!("Snapshot {full} created (image {image} is now inode {new_id})");
            }
            return Ok(());
        }
        if etcd.get(&snap_index)?.is_some() {
            return Err(CliError::ImageExists(full.to_string()));
        }
        if etcd.get(&new_key)?.is_some() {
            floor = new_id;
        }
    }
    Err(CliError::Conflict("snap-create", MAX_TXN_ATTEMPTS))
}

/// The parent for `create --parent NAME[@SNAP]`: it must exist and be read-only (a clone
/// of a writable image would see the parent's later writes through its holes).
pub fn clone_parent(etcd: &mut Etcd, parent: &str) -> Result<(Image, u64)> {
    let (img, _) = find_image(etcd, parent)?;
    if !img.cfg.readonly {
        return Err(CliError::Refused(format!(
            "image {parent} is writable: clone a snapshot (snap-create {parent}@SNAP) or make \
             it read-only (modify {parent} --readonly)"
        )));
    }
    let size = img.cfg.size;
    Ok((img, size))
}

/// `flatten LAYER`.
pub fn flatten(
    etcd: &mut Etcd,
    resolved: &Resolved,
    args: &FlattenArgs,
    json_out: bool,
) -> Result<()> {
    let (img, _) = find_image(etcd, &args.name)?;
    if img.cfg.readonly {
        return Err(CliError::Refused(format!(
            "image {} is read-only; flatten writes to it",
            args.name
        )));
    }
    let all = load_images(etcd, None)?;
    let chain = chain_of(&all, &img)?;
    let Some(parent) = img.parent() else {
        return report(json_out, &args.name, "has no parent", CopyStats::default());
    };
    let stats = copy_from(
        etcd,
        resolved,
        &img,
        Sources::Below(&chain),
        args.copy,
        args.stall_timeout,
        json_out,
    )?;
    drop_parent(etcd, &args.name, &img, parent)?;
    report(json_out, &args.name, "flattened", stats)
}

/// `merge-data FROM TO`.
pub fn merge_data(
    etcd: &mut Etcd,
    resolved: &Resolved,
    args: &MergeDataArgs,
    json_out: bool,
) -> Result<()> {
    let (to, _) = find_image(etcd, &args.to)?;
    let (from, _) = find_image(etcd, &args.from)?;
    let all = load_images(etcd, None)?;
    let chain = chain_of(&all, &to)?;
    let Some(pos) = chain
        .iter()
        .position(|l| (l.pool, l.id) == (from.pool, from.id))
    else {
        return Err(CliError::Usage(format!(
            "{} is not a layer below {}",
            args.from, args.to
        )));
    };
    let stats = copy_from(
        etcd,
        resolved,
        &to,
        Sources::Below(&chain[..=pos]),
        args.copy,
        args.stall_timeout,
        json_out,
    )?;
    report(json_out, &args.to, "merged", stats)
}

/// The layers a copy reads: below the target (it gets the granules it lacks), or the one
/// layer right above it (every granule that one holds wins, see [`CopyJob::overwrite`]).
enum Sources<'a> {
    Below(&'a [Image]),
    Above(&'a Image),
}

fn copy_from(
    etcd: &mut Etcd,
    resolved: &Resolved,
    target: &Image,
    sources: Sources<'_>,
    copy: CopyLimits,
    stall_timeout: u64,
    json_out: bool,
) -> Result<CopyStats> {
    let (sources, overwrite) = match sources {
        Sources::Below(s) => (s, false),
        Sources::Above(s) => (std::slice::from_ref(s), true),
    };
    let pools = Pools::load(etcd)?;
    let pool = pools
        .valid
        .get(&target.pool)
        .ok_or_else(|| CliError::NoSuchPool(target.pool.to_string()))?;
    for s in sources {
        let sp = pools
            .valid
            .get(&s.pool)
            .ok_or_else(|| CliError::NoSuchPool(s.pool.to_string()))?;
        if sp.bitmap_granularity != pool.bitmap_granularity {
            return Err(CliError::Refused(format!(
                "layer {} has bitmap granularity {}, {} has {}: their bitmaps cannot be merged",
                s.cfg.name, sp.bitmap_granularity, target.cfg.name, pool.bitmap_granularity
            )));
        }
    }
    let mut client = ready_client(resolved)?;
    // ready_client allows writes to read-only layers: merging into a snapshot writes one,
    // and what it reads does not change. Flatten refuses read-only targets itself.
    let job = CopyJob {
        target: target.inode(),
        sources: sources.iter().map(Image::inode).collect(),
        size: target.cfg.size,
        block: pool.pg_block_size(),
        granularity: u64::from(pool.bitmap_granularity),
        iodepth: copy.copy_iodepth,
        stall_timeout: Duration::from_secs(stall_timeout),
        json_progress: json_out,
        overwrite,
    };
    copy_missing(&mut client, &job)
}

/// Re-parents `name` (inode `img`) from `old_parent` onto its grandparent `new_parent`
/// (`None`: no parent), provided nobody changed its parent meanwhile.
fn reparent(
    etcd: &mut Etcd,
    name: &str,
    img: &Image,
    old_parent: (u32, u64),
    new_parent: Option<(u32, u64)>,
) -> Result<()> {
    for _ in 0..MAX_TXN_ATTEMPTS {
        let Some(cur) = crate::state::load_image(etcd, img.pool, img.id)? else {
            return Err(CliError::NoSuchImage(name.to_string()));
        };
        if cur.parent() != Some(old_parent) {
            return Err(CliError::Refused(format!(
                "the parent of {name} changed while its data was copied; run again"
            )));
        }
        let mut raw = cur.raw.as_object().cloned().unwrap_or_default();
        match new_parent {
            Some((pool, id)) => {
                if pool == cur.pool {
                    raw.remove("parent_pool");
                } else {
                    raw.insert("parent_pool".into(), json!(pool));
                }
                raw.insert("parent_id".into(), json!(id));
            }
            None => {
                raw.remove("parent_pool");
                raw.remove("parent_id");
            }
        }
        if etcd.txn(
            "changing the parent",
            &[Check::ModRevision(cur.key(), cur.mod_revision)],
            &[Write::Put(cur.key(), Value::Object(raw))],
        )? {
            return Ok(());
        }
    }
    Err(CliError::Conflict("changing the parent", MAX_TXN_ATTEMPTS))
}

fn drop_parent(etcd: &mut Etcd, name: &str, img: &Image, parent: (u32, u64)) -> Result<()> {
    reparent(etcd, name, img, parent, None)
}

fn report(json_out: bool, name: &str, what: &str, stats: CopyStats) -> Result<()> {
    if json_out {
        println!(
            "{}",
            json!({"name": name, "result": what, "objects": stats.objects,
                   "copied_objects": stats.copied_objects, "copied_bytes": stats.bytes,
                   "restarts": stats.restarts})
        );
    } else {
        println!(
            "Image {name} {what} ({} of {} objects needed data, {} bytes copied)",
            stats.copied_objects, stats.objects, stats.bytes
        );
    }
    Ok(())
}

/// [`copy_from`] with `rm`'s limits, quietly: the data `rm` of a snapshot moves before it
/// removes one side.
fn copy_for_rm(
    etcd: &mut Etcd,
    resolved: &Resolved,
    target: &Image,
    sources: Sources<'_>,
    limits: Limits,
) -> Result<CopyStats> {
    copy_from(
        etcd,
        resolved,
        target,
        sources,
        CopyLimits {
            copy_iodepth: limits.iodepth,
        },
        limits.stall_timeout,
        false,
    )
}

/// `rm` of a read-only layer with exactly one child: its data goes into the child (the
/// granules the child lacks), the child takes its parent, then the layer is removed.
/// Returns the objects removed.
pub fn rm_merged(
    etcd: &mut Etcd,
    resolved: &Resolved,
    img: &Image,
    child: &Image,
    limits: Limits,
) -> Result<u64> {
    copy_for_rm(
        etcd,
        resolved,
        child,
        Sources::Below(std::slice::from_ref(img)),
        limits,
    )?;
    reparent(
        etcd,
        &child.cfg.name,
        child,
        (img.pool, img.id),
        img.parent(),
    )?;
    let pools = Pools::load(etcd)?;
    let pool = pools
        .valid
        .get(&img.pool)
        .ok_or_else(|| CliError::NoSuchPool(img.pool.to_string()))?;
    remove_listed(resolved, pool, img.inode(), 0, limits)
}

/// Whether `rm` of the read-only layer `img` should merge its only child down into it
/// ([`rm_inverse`]) rather than its data up into the child: only when that moves less data
/// (the child has fewer objects) and the child can change inode number under nobody.
///
/// A writable child may be open in a running VM, whose client keeps writing to the child's
/// inode number: after the switch those writes would land in a deleted inode. Nothing in
/// etcd says whether an image is open, so a writable child always takes the data itself.
pub fn merge_down(img: &Image, child: &Image, img_objects: u64, child_objects: u64) -> bool {
    child.cfg.readonly
        && child.pool == img.pool
        && child.cfg.size == img.cfg.size
        && child_objects < img_objects
}

/// `rm` of a read-only layer whose only child is read-only and holds less data: the
/// child's data goes down into the layer (overwriting the layer's own where both hold
/// it), then one transaction gives the layer's inode the child's name, size and flags,
/// re-parents the child's children onto it and drops the child's inode; the child's data
/// is removed last. Returns the objects removed.
pub fn rm_inverse(
    etcd: &mut Etcd,
    resolved: &Resolved,
    img: &Image,
    child: &Image,
    limits: Limits,
) -> Result<u64> {
    copy_for_rm(etcd, resolved, img, Sources::Above(child), limits)?;
    let (img_name, child_name) = (&img.cfg.name, &child.cfg.name);
    for _ in 0..MAX_TXN_ATTEMPTS {
        let (cur_img, img_index_rev) = find_image(etcd, img_name)?;
        let (cur_child, child_index_rev) = find_image(etcd, child_name)?;
        if (cur_img.pool, cur_img.id, cur_child.pool, cur_child.id)
            != (img.pool, img.id, child.pool, child.id)
            || cur_child.parent() != Some((img.pool, img.id))
        {
            return Err(CliError::Refused(format!(
                "{img_name} or {child_name} changed while the data was merged; run again"
            )));
        }
        let grandchildren: Vec<Image> = load_images(etcd, None)?
            .into_iter()
            .filter(|c| c.parent() == Some((child.pool, child.id)))
            .collect();
        // The child's config (name, size, flags, anything else) on the layer's inode, under
        // the layer's parent.
        let mut merged = cur_child.raw.as_object().cloned().unwrap_or_default();
        let below = cur_img.raw.as_object().cloned().unwrap_or_default();
        for field in ["parent_pool", "parent_id"] {
            match below.get(field) {
                Some(v) => merged.insert(field.into(), v.clone()),
                None => merged.remove(field),
            };
        }
        let mut checks = vec![
            Check::ModRevision(keys::index_image(img_name), img_index_rev),
            Check::ModRevision(keys::index_image(child_name), child_index_rev),
            Check::ModRevision(cur_img.key(), cur_img.mod_revision),
            Check::ModRevision(cur_child.key(), cur_child.mod_revision),
        ];
        let mut writes = vec![
            Write::Put(cur_img.key(), Value::Object(merged)),
            Write::Put(
                keys::index_image(child_name),
                json!(ImageIndex {
                    id: img.id,
                    pool_id: img.pool
                }),
            ),
            Write::Delete(keys::index_image(img_name)),
            Write::Delete(cur_child.key()),
        ];
        for g in &grandchildren {
            let mut raw = g.raw.as_object().cloned().unwrap_or_default();
            if g.pool == img.pool {
                raw.remove("parent_pool");
            } else {
                raw.insert("parent_pool".into(), json!(img.pool));
            }
            raw.insert("parent_id".into(), json!(img.id));
            checks.push(Check::ModRevision(g.key(), g.mod_revision));
            writes.push(Write::Put(g.key(), Value::Object(raw)));
        }
        if etcd.txn("merging the child into the snapshot", &checks, &writes)? {
            let pools = Pools::load(etcd)?;
            let pool = pools
                .valid
                .get(&child.pool)
                .ok_or_else(|| CliError::NoSuchPool(child.pool.to_string()))?;
            return remove_listed(resolved, pool, child.inode(), 0, limits);
        }
    }
    Err(CliError::Conflict("rm", MAX_TXN_ATTEMPTS))
}

/// `ls --tree`: every layer under its parent.
pub fn print_tree(all: &[Image]) {
    let mut children: BTreeMap<Option<(u32, u64)>, Vec<&Image>> = BTreeMap::new();
    let known: std::collections::BTreeSet<(u32, u64)> =
        all.iter().map(|i| (i.pool, i.id)).collect();
    for i in all {
        // A layer whose parent is missing is shown as a root, marked.
        let key = i.parent().filter(|p| known.contains(p));
        children.entry(key).or_default().push(i);
    }
    for v in children.values_mut() {
        v.sort_by(|a, b| a.cfg.name.cmp(&b.cfg.name));
    }
    fn walk(
        children: &BTreeMap<Option<(u32, u64)>, Vec<&Image>>,
        at: Option<(u32, u64)>,
        prefix: &str,
        seen: &mut Vec<(u32, u64)>,
    ) {
        let Some(list) = children.get(&at) else {
            return;
        };
        for (n, i) in list.iter().enumerate() {
            let last = n + 1 == list.len();
            let me = (i.pool, i.id);
            let mut flags = Vec::new();
            if i.cfg.readonly {
                flags.push("RO".to_string());
            }
            if at.is_none() && i.parent().is_some() {
                flags.push("parent missing".into());
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            };
            let branch = if at.is_none() {
                ""
            } else if last {
                "└── "
            } else {
                "├── "
            };
            println!("{prefix}{branch}{}{flags}", i.cfg.name);
            if seen.contains(&me) {
                continue;
            }
            seen.push(me);
            let next = if at.is_none() {
                String::new()
            } else {
                format!("{prefix}{}", if last { "    " } else { "│   " })
            };
            walk(children, Some(me), &next, seen);
        }
    }
    walk(&children, None, "", &mut Vec::new());
}

/// `ls --tree --json`: each layer with its children's names.
pub fn tree_json(all: &[Image]) -> Value {
    let name_of = |p: (u32, u64)| {
        all.iter()
            .find(|i| (i.pool, i.id) == p)
            .map(|i| i.cfg.name.clone())
    };
    Value::Array(
        all.iter()
            .map(|i| {
                let kids: Vec<String> = all
                    .iter()
                    .filter(|c| c.parent() == Some((i.pool, i.id)))
                    .map(|c| c.cfg.name.clone())
                    .collect();
                json!({"name": i.cfg.name, "pool_id": i.pool, "id": i.id,
                       "inode": inode_with_pool(i.pool, i.id), "readonly": i.cfg.readonly,
                       "parent": i.parent().and_then(name_of), "children": kids})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(pool: u32, id: u64, cfg: Value) -> Image {
        Image {
            pool,
            id,
            cfg: InodeConfig::from_json("k", &cfg).unwrap(),
            raw: cfg,
            mod_revision: 1,
        }
    }

    #[test]
    fn snapshot_names() {
        assert_eq!(split_snapshot("a@b").unwrap(), ("a", "b"));
        for bad in ["a", "@b", "a@", "a@b@c"] {
            assert!(split_snapshot(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chains_refuse_cycles_and_unknown_parents() {
        let all = vec![
            img(1, 1, json!({"name":"base","size":1})),
            img(1, 2, json!({"name":"s","size":1,"parent_id":1})),
            img(
                2,
                3,
                json!({"name":"c","size":1,"parent_pool":1,"parent_id":2}),
            ),
            img(1, 4, json!({"name":"x","size":1,"parent_id":5})),
            img(1, 5, json!({"name":"y","size":1,"parent_id":4})),
            img(1, 6, json!({"name":"o","size":1,"parent_id":60})),
        ];
        let names = |v: Vec<Image>| v.into_iter().map(|i| i.cfg.name).collect::<Vec<_>>();
        assert_eq!(names(chain_of(&all, &all[2]).unwrap()), ["s", "base"]);
        assert!(chain_of(&all, &all[3])
            .unwrap_err()
            .to_string()
            .contains("cycle"));
        assert!(chain_of(&all, &all[5])
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }
}
