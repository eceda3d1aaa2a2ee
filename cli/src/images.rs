//! Image commands: `ls`, `create`, `modify`, `rm`, `rm-data`.
//!
//! # What this module owns
//! - Inode number allocation: `index/maxid/<pool>` is advanced in the same transaction that
//!   creates `config/inode/<pool>/<id>` and `index/image/<name>`. The transaction compares
//!   the maxid key's mod_revision and requires the name and the config key to be absent, so
//!   two concurrent creates can never get the same id, and a failed create never burns one.
//! - Image metadata changes as compare-and-set transactions on the keys' mod_revisions.
//!
//! # What it must never do
//! - Remove an image's keys before its data is gone (a failed removal must be re-runnable),
//!   or shrink an image without `--force` (shrinking deletes data).

use clap::Args;
use serde_json::{json, Value};
use vitastor_layout::{inode_with_pool, keys, parse_size, tolerant, ImageIndex, InodeConfig};

use crate::error::{CliError, Result};
use crate::etcd::{Check, Etcd, Write};
use crate::format;
use crate::layers;
use crate::options::Resolved;
use crate::remove::{count_objects, remove_data, remove_listed, Limits};
use crate::state::{
    check_image_name, find_image, load_images, num, Image, Pools, MAX_TXN_ATTEMPTS,
};

/// Image sizes are whole multiples of this (and of the pool's bitmap granularity): the
/// smallest unit any op may address.
const IMAGE_SIZE_ALIGN: u64 = 4096;

/// `ls [-l] [-p POOL] [GLOB]`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct LsArgs {
    /// Also show inode numbers, space used and I/O rates.
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// Only images of this pool (name or id).
    #[arg(short = 'p', long)]
    pub pool: Option<String>,
    /// Only names matching this glob (`*`, `?`).
    pub glob: Option<String>,
    /// Show the layer tree (snapshots and clones under their parents).
    #[arg(long)]
    pub tree: bool,
}

/// `create -s SIZE [-p POOL] [--parent NAME[@SNAP]] NAME`, `create --snapshot SNAP NAME`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct CreateArgs {
    /// Size (K/M/G/T suffixes); a clone defaults to its parent's size.
    #[arg(short = 's', long, value_parser = parse_size, required_unless_present_any = ["parent", "snapshot"])]
    pub size: Option<u64>,
    /// Pool (name or id); may be omitted when the cluster has one pool (a clone defaults
    /// to its parent's pool).
    #[arg(short = 'p', long)]
    pub pool: Option<String>,
    /// Create a copy-on-write clone of this read-only image or snapshot.
    #[arg(long, conflicts_with = "snapshot")]
    pub parent: Option<String>,
    /// Snapshot NAME as NAME@SNAPSHOT instead (like snap-create).
    #[arg(long, conflicts_with_all = ["size", "pool"])]
    pub snapshot: Option<String>,
    /// Image name.
    pub name: String,
}

/// `modify NAME [--rename N] [--resize S] [--readonly|--readwrite] [--force]`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct ModifyArgs {
    /// Image name.
    pub name: String,
    /// New name.
    #[arg(long)]
    pub rename: Option<String>,
    /// New size (K/M/G/T suffixes); shrinking needs --force and deletes the data past it.
    #[arg(long, value_parser = parse_size)]
    pub resize: Option<u64>,
    /// Make the image read-only.
    #[arg(long, conflicts_with = "readwrite")]
    pub readonly: bool,
    /// Make the image writable.
    #[arg(long)]
    pub readwrite: bool,
    /// Allow shrinking.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub limits: Limits,
}

/// `rm NAME...`.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct RmArgs {
    /// Images to remove (data, then metadata).
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub limits: Limits,
}

/// `rm-data --pool P --inode I [--size S] [--min_offset O]` (also `vitastor-rm`).
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct RmDataArgs {
    /// Pool (name or id).
    #[arg(long)]
    pub pool: String,
    /// Inode number within the pool.
    #[arg(long)]
    pub inode: u64,
    /// Delete every object below this size instead of listing the inode's objects on the
    /// OSDs (without it, every object found is deleted, even past the image's size).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Keep data below this offset (the object containing it is kept whole).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub min_offset: u64,
    #[command(flatten)]
    pub limits: Limits,
}

/// `ls`.
pub fn ls(etcd: &mut Etcd, args: &LsArgs, json_out: bool) -> Result<()> {
    let pools = Pools::load(etcd)?;
    let pool_filter = args.pool.as_deref().map(|p| pools.find(p)).transpose()?;
    let mut images = load_images(etcd, pool_filter.map(|p| p.id))?;
    if args.tree {
        if json_out {
            println!("{}", layers::tree_json(&images));
        } else {
            layers::print_tree(&images);
        }
        return Ok(());
    }
    images.retain(|i| {
        args.glob
            .as_deref()
            .map_or(true, |g| format::glob(g, &i.cfg.name))
    });
    images.sort_by(|a, b| a.cfg.name.cmp(&b.cfg.name));
    let all = load_images(etcd, None)?;
    let parent_name = |img: &Image| {
        img.parent().map(|(pool, id)| {
            all.iter()
                .find(|i| i.pool == pool && i.id == id)
                .map_or_else(|| format!("{pool}/{id}"), |i| i.cfg.name.clone())
        })
    };
    let stats: Vec<Value> = images
        .iter()
        .map(|i| {
            etcd.get(&keys::inode_stats(i.pool, i.id))
                .map(|kv| kv.map_or(Value::Null, |kv| kv.value))
        })
        .collect::<Result<_>>()?;
    let pool_name = |id: u32| {
        pools
            .valid
            .get(&id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    };
    // Usable bytes from raw bytes: replicas or parity chunks are not the image's data.
    let used = |img: &Image, st: &Value| {
        let raw = num(st, "raw_used");
        pools.valid.get(&img.pool).map_or(raw, |p| {
            raw * u64::from(p.data_chunks()) / u64::from(p.pg_size)
        })
    };
    if json_out {
        let out: Vec<Value> = images
            .iter()
            .zip(&stats)
            .map(|(i, st)| {
                json!({
                    "name": i.cfg.name, "pool_id": i.pool, "pool_name": pool_name(i.pool),
                    "id": i.id, "inode": i.inode(), "size": i.cfg.size,
                    "readonly": i.cfg.readonly, "parent_name": parent_name(i),
                    "parent_pool_id": i.parent().map(|p| p.0), "parent_id": i.parent().map(|p| p.1),
                    "raw_used": num(st, "raw_used"), "used": used(i, st),
                    "read": st.get("read"), "write": st.get("write"), "delete": st.get("delete"),
                })
            })
            .collect();
        println!("{}", Value::Array(out));
        return Ok(());
    }
    let rate = |st: &Value, op: &str, field: &str| {
        st.get(op)
            .and_then(|o| o.get(field))
            .and_then(tolerant::f64_of)
            .unwrap_or(0.0)
    };
    let rows: Vec<Vec<String>> = images
        .iter()
        .zip(&stats)
        .map(|(i, st)| {
            let mut row = vec![i.cfg.name.clone()];
            if args.long {
                row.push(i.id.to_string());
            }
            row.push(pool_name(i.pool));
            row.push(format::size(i.cfg.size));
            if args.long {
                row.push(format::size(used(i, st)));
                row.push(format!(
                    "{}/s",
                    format::size(rate(st, "read", "bps") as u64)
                ));
                row.push(format!("{:.0}", rate(st, "read", "iops")));
                row.push(format!(
                    "{}/s",
                    format::size(rate(st, "write", "bps") as u64)
                ));
                row.push(format!("{:.0}", rate(st, "write", "iops")));
            }
            row.push(if i.cfg.readonly { "RO" } else { "-" }.into());
            row.push(parent_name(i).unwrap_or_else(|| "-".into()));
            row
        })
        .collect();
    let headers: &[&str] = if args.long {
        &[
            "NAME", "ID", "POOL", "SIZE", "USED", "READ", "IOPS", "WRITE", "IOPS", "FLAGS",
            "PARENT",
        ]
    } else {
        &["NAME", "POOL", "SIZE", "FLAGS", "PARENT"]
    };
    format::table(headers, &rows);
    Ok(())
}

/// `create`.
pub fn create(etcd: &mut Etcd, args: &CreateArgs, json_out: bool) -> Result<()> {
    if let Some(snap) = &args.snapshot {
        return layers::snap_create(etcd, &format!("{}@{snap}", args.name), json_out);
    }
    check_image_name(&args.name)?;
    let pools = Pools::load(etcd)?;
    let parent = args
        .parent
        .as_deref()
        .map(|p| layers::clone_parent(etcd, p))
        .transpose()?;
    let pool = match (&args.pool, &parent) {
        (None, Some((p, _))) => pools
            .valid
            .get(&p.pool)
            .ok_or_else(|| CliError::NoSuchPool(p.pool.to_string()))?,
        _ => pools.find_or_only(args.pool.as_deref())?,
    };
    let size = match (args.size, &parent) {
        (Some(s), _) => s,
        (None, Some((_, s))) => *s,
        (None, None) => return Err(CliError::Usage("give the size with -s SIZE".into())),
    };
    check_size(size, pool.bitmap_granularity)?;
    let maxid_key = keys::index_maxid(pool.id);
    let index_key = keys::index_image(&args.name);
    let (parent_pool, parent_id) = match &parent {
        Some((p, _)) if p.pool == pool.id => (0, p.id),
        Some((p, _)) => (u64::from(p.pool), p.id),
        None => (0, 0),
    };
    let cfg = InodeConfig {
        name: args.name.clone(),
        size,
        parent_pool,
        parent_id,
        readonly: false,
    };
    // Raised past ids whose config key exists although maxid is behind (images created by
    // other tools), so the loop cannot retry the same taken id forever.
    let mut taken_floor = 0;
    for _ in 0..MAX_TXN_ATTEMPTS {
        let (id, maxid_rev) = next_id(etcd, pool.id, taken_floor)?;
        let config_key = keys::config_inode(pool.id, id);
        let index = ImageIndex {
            id,
            pool_id: pool.id,
        };
        let ok = etcd.txn(
            "creating the image",
            &[
                Check::ModRevision(maxid_key.clone(), maxid_rev),
                Check::ModRevision(index_key.clone(), 0),
                Check::ModRevision(config_key.clone(), 0),
            ],
            &[
                Write::Put(maxid_key.clone(), json!(id)),
                Write::Put(config_key.clone(), cfg.to_json()),
                Write::Put(index_key.clone(), json!(index)),
            ],
        )?;
        if ok {
            if json_out {
                println!(
                    "{}",
                    json!({"name": args.name, "pool_id": pool.id, "pool_name": pool.name,
                           "id": id, "inode": inode_with_pool(pool.id, id), "size": size,
                           "parent": args.parent})
                );
            } else {
                println!(
                    "Image {} created in pool {} (id {id}, size {})",
                    args.name,
                    pool.name,
                    format::size(size)
                );
            }
            return Ok(());
        }
        if etcd.get(&index_key)?.is_some() {
            return Err(CliError::ImageExists(args.name.clone()));
        }
        if etcd.get(&config_key)?.is_some() {
            taken_floor = id;
        }
    }
    Err(CliError::Conflict("create", MAX_TXN_ATTEMPTS))
}

fn check_size(size: u64, granularity: u32) -> Result<()> {
    let align = IMAGE_SIZE_ALIGN.max(u64::from(granularity));
    if size == 0 || size % align != 0 {
        return Err(CliError::Usage(format!(
            "bad size {size}: it must be a positive multiple of {}",
            format::size(align)
        )));
    }
    Ok(())
}

/// `modify`.
pub fn modify(
    etcd: &mut Etcd,
    resolved: &Resolved,
    args: &ModifyArgs,
    json_out: bool,
) -> Result<()> {
    if args.rename.is_none() && args.resize.is_none() && !args.readonly && !args.readwrite {
        return Err(CliError::Usage(
            "nothing to change: give --rename, --resize, --readonly or --readwrite".into(),
        ));
    }
    if let Some(new) = &args.rename {
        // A snapshot may be renamed to another IMAGE@SNAP.
        if new.contains('@') {
            layers::split_snapshot(new)?;
        } else {
            check_image_name(new)?;
        }
    }
    let pools = Pools::load(etcd)?;
    for _ in 0..MAX_TXN_ATTEMPTS {
        let (img, index_rev) = find_image(etcd, &args.name)?;
        let pool = pools
            .valid
            .get(&img.pool)
            .ok_or_else(|| CliError::NoSuchPool(img.pool.to_string()))?;
        let mut raw = img.raw.as_object().cloned().unwrap_or_default();
        let old_size = img.cfg.size;
        if let Some(size) = args.resize {
            check_size(size, pool.bitmap_granularity)?;
            if size < old_size && !args.force {
                return Err(CliError::Refused(format!(
                    "shrinking {} from {} to {} deletes the data past the new end; add --force",
                    args.name,
                    format::size(old_size),
                    format::size(size)
                )));
            }
            raw.insert("size".into(), json!(size));
        }
        if args.readonly {
            raw.insert("readonly".into(), json!(true));
        } else if args.readwrite {
            raw.remove("readonly");
        }
        let name = args.rename.clone().unwrap_or_else(|| args.name.clone());
        raw.insert("name".into(), json!(name));
        let old_index = keys::index_image(&args.name);
        let mut checks = vec![
            Check::ModRevision(img.key(), img.mod_revision),
            Check::ModRevision(old_index.clone(), index_rev),
        ];
        let mut writes = vec![Write::Put(img.key(), Value::Object(raw.clone()))];
        if name != args.name {
            let new_index = keys::index_image(&name);
            checks.push(Check::ModRevision(new_index.clone(), 0));
            writes.push(Write::Delete(old_index));
            writes.push(Write::Put(
                new_index,
                json!(ImageIndex {
                    id: img.id,
                    pool_id: img.pool
                }),
            ));
        }
        if !etcd.txn("modifying the image", &checks, &writes)? {
            if name != args.name && etcd.get(&keys::index_image(&name))?.is_some() {
                return Err(CliError::ImageExists(name));
            }
            continue;
        }
        // Metadata first: clients watching the image stop at the new end before its tail
        // is deleted.
        let new_size = args.resize.unwrap_or(old_size);
        let removed = if new_size < old_size {
            remove_data(resolved, pool, img.inode(), new_size, old_size, args.limits)?
        } else {
            0
        };
        if json_out {
            let mut out = raw;
            out.insert("pool_id".into(), json!(img.pool));
            out.insert("id".into(), json!(img.id));
            out.insert("objects_removed".into(), json!(removed));
            println!("{}", Value::Object(out));
        } else {
            println!("Image {name} modified");
        }
        return Ok(());
    }
    Err(CliError::Conflict("modify", MAX_TXN_ATTEMPTS))
}

/// `rm`.
pub fn rm(etcd: &mut Etcd, resolved: &Resolved, args: &RmArgs, json_out: bool) -> Result<()> {
    let pools = Pools::load(etcd)?;
    let mut out = Vec::new();
    for name in &args.names {
        let (img, _) = find_image(etcd, name)?;
        let children: Vec<Image> = load_images(etcd, None)?
            .into_iter()
            .filter(|c| c.parent() == Some((img.pool, img.id)))
            .collect();
        let removed = match children.as_slice() {
            // A snapshot inside a chain: its data moves into its only child first, or the
            // child's down into it when that moves less (layers::merge_down says when).
            [child] if img.cfg.readonly => {
                let pool = pools
                    .valid
                    .get(&img.pool)
                    .ok_or_else(|| CliError::NoSuchPool(img.pool.to_string()))?;
                let count = |i: &Image| count_objects(resolved, pool, i.inode(), args.limits);
                if child.cfg.readonly
                    && child.pool == img.pool
                    && layers::merge_down(&img, child, count(&img)?, count(child)?)
                {
                    layers::rm_inverse(etcd, resolved, &img, child, args.limits)?
                } else {
                    layers::rm_merged(etcd, resolved, &img, child, args.limits)?
                }
            }
            [] => {
                let pool = pools
                    .valid
                    .get(&img.pool)
                    .ok_or_else(|| CliError::NoSuchPool(img.pool.to_string()))?;
                // Listed rather than up to the size: objects past it (an interrupted
                // shrink, writes by other tools) go too.
                remove_listed(resolved, pool, img.inode(), 0, args.limits)?
            }
            _ => {
                let names: Vec<&str> = children.iter().map(|c| c.cfg.name.as_str()).collect();
                return Err(CliError::Refused(format!(
                    "image {name} is the parent of {}; remove or flatten those first",
                    names.join(", ")
                )));
            }
        };
        remove_keys(etcd, name, &img)?;
        if json_out {
            out.push(json!({"name": name, "pool_id": img.pool, "id": img.id,
                            "objects_removed": removed}));
        } else {
            println!("Image {name} removed ({removed} objects deleted)");
        }
    }
    if json_out {
        println!("{}", Value::Array(out));
    }
    Ok(())
}

/// Deletes an image's config and index keys once its data is gone, provided the name
/// still points to the same inode.
fn remove_keys(etcd: &mut Etcd, name: &str, removed: &Image) -> Result<()> {
    for _ in 0..MAX_TXN_ATTEMPTS {
        let (img, index_rev) = match find_image(etcd, name) {
            Ok(found) => found,
            Err(CliError::NoSuchImage(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if (img.pool, img.id) != (removed.pool, removed.id) {
            return Err(CliError::Refused(format!(
                "image {name} was re-created while its data was being removed; left as is"
            )));
        }
        let index = keys::index_image(name);
        if etcd.txn(
            "removing the image's keys",
            &[
                Check::ModRevision(img.key(), img.mod_revision),
                Check::ModRevision(index.clone(), index_rev),
            ],
            &[Write::Delete(img.key()), Write::Delete(index)],
        )? {
            return Ok(());
        }
    }
    Err(CliError::Conflict("rm", MAX_TXN_ATTEMPTS))
}

/// `rm-data` and `vitastor-rm`.
pub fn rm_data(
    etcd: &mut Etcd,
    resolved: &Resolved,
    args: &RmDataArgs,
    json_out: bool,
) -> Result<()> {
    let pools = Pools::load(etcd)?;
    let pool = pools.find(&args.pool)?;
    let inode = inode_with_pool(pool.id, args.inode);
    let removed = match args.size {
        Some(size) => remove_data(resolved, pool, inode, args.min_offset, size, args.limits)?,
        None => remove_listed(resolved, pool, inode, args.min_offset, args.limits)?,
    };
    if json_out {
        println!(
            "{}",
            json!({"pool_id": pool.id, "inode": args.inode, "objects_removed": removed})
        );
    } else {
        println!(
            "Removed {removed} objects of inode {} in pool {}",
            args.inode, pool.name
        );
    }
    Ok(())
}

/// The next free inode number of `pool`, with the revision of `index/maxid/<pool>` (0 when
/// absent) for the transaction's check.
pub(crate) fn next_id(etcd: &mut Etcd, pool: u32, floor: u64) -> Result<(u64, i64)> {
    let key = keys::index_maxid(pool);
    let (maxid, rev) = match etcd.get(&key)? {
        Some(kv) => (
            tolerant::u64_of(&kv.value).ok_or_else(|| CliError::BadValue {
                key: kv.key.clone(),
                reason: format!("expected a number, got {}", kv.value),
            })?,
            kv.mod_revision,
        ),
        // No counter yet: start above every existing image of the pool.
        None => (
            load_images(etcd, Some(pool))?
                .iter()
                .map(|i| i.id)
                .max()
                .unwrap_or(0),
            0,
        ),
    };
    Ok((maxid.max(floor) + 1, rev))
}
