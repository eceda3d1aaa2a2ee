//! Image watches: an image's metadata looked up by name and kept current as etcd changes.
//!
//! # What this module owns
//! - [`ImageInfo`] from the cluster view (the image's inode, size, parent with pool bits,
//!   flags, and its pool's geometry), and refreshing every open watch after etcd events.
//!   A watch follows its name: when the name moves to another inode (a snapshot was taken)
//!   the watch moves with it, so the plugins' next writes go to the new top layer.
//!
//! # What it must never do
//! - Drop a watch's metadata because the image vanished or was renamed: it keeps the last
//!   known values.

use std::cell::RefCell;
use std::ffi::CString;
use std::rc::Rc;

use vitastor_layout::{inode_with_pool, pool_of, PoolConfig};

use super::{Client, Completion, ImageInfo, ImageWatch, WatchResult};
use crate::error::ClientError;

impl Client {
    fn image_info(&self, name: &str) -> Result<ImageInfo, ClientError> {
        let missing = || ClientError::NoSuchImage(name.to_string());
        let inode = self.view.image(name).ok_or_else(missing)?;
        let entry = self.view.inode(inode).ok_or_else(missing)?;
        let pool_id = pool_of(inode);
        let pool: Option<&PoolConfig> = self.view.pools.get(&pool_id);
        let c = &entry.config;
        let parent_pool = if c.parent_pool != 0 {
            u32::try_from(c.parent_pool).unwrap_or(pool_id)
        } else {
            pool_id
        };
        Ok(ImageInfo {
            name: name.to_string(),
            inode,
            size: c.size,
            parent_id: if c.parent_id == 0 {
                0
            } else {
                inode_with_pool(parent_pool, c.parent_id)
            },
            readonly: c.readonly,
            meta: entry
                .raw
                .get("meta")
                .and_then(|m| CString::new(m.to_string()).ok()),
            mod_revision: entry.mod_revision,
            block_size: pool.map_or(0, |p| p.block_size),
            bitmap_granularity: pool.map_or(0, |p| p.bitmap_granularity),
            immediate_commit: pool.and_then(|p| {
                p.immediate_commit
                    .or(self.settings.default_immediate_commit)
            }),
        })
    }

    pub(super) fn open_watch(&mut self, name: &str) -> WatchResult {
        let info = Rc::new(RefCell::new(self.image_info(name)?));
        let id = self.next_watch;
        self.next_watch += 1;
        self.watches.insert(id, Rc::clone(&info));
        Ok(ImageWatch { id, info })
    }

    pub(super) fn refresh_watches(&mut self) {
        if !self.view.loaded {
            return;
        }
        for (name, cb) in std::mem::take(&mut self.pending_watches) {
            let result = self.open_watch(&name);
            self.completions.push_back(Completion::Watch(cb, result));
        }
        for info in self.watches.values() {
            let name = info.borrow().name.clone();
            // A deleted or renamed image keeps its last known metadata. When the name moves
            // to another inode (a snapshot was taken: the old inode became `IMAGE@SNAP`), the
            // watch follows it, so the next writes go to the new top layer.
            if let Ok(new) = self.image_info(&name) {
                *info.borrow_mut() = new;
            }
        }
    }
}
