//! `config/inode/<pool>/<inode>` (image metadata) and `index/image/<name>`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{from_serde, LayoutError};
use crate::tolerant;

/// Image metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeConfig {
    /// Image name.
    pub name: String,
    /// Size in bytes.
    #[serde(default, deserialize_with = "tolerant::num")]
    pub size: u64,
    /// Pool of the parent layer (copy-on-write clones and snapshots); 0 = same pool.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "tolerant::num"
    )]
    pub parent_pool: u64,
    /// Parent inode (without pool bits); 0 = no parent.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "tolerant::num"
    )]
    pub parent_id: u64,
    /// Snapshots and protected images refuse writes.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "tolerant::flag"
    )]
    pub readonly: bool,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

fn is_false(x: &bool) -> bool {
    !*x
}

impl InodeConfig {
    /// Parses the value of a `config/inode` key.
    pub fn from_json(key: &str, v: &Value) -> Result<InodeConfig, LayoutError> {
        serde_json::from_value(v.clone()).map_err(|e| from_serde(key, e))
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The parent layer as `(pool, inode without pool bits)` for an image stored in
    /// `own_pool`; `None` without a parent. `parent_pool` 0 means the image's own pool.
    pub fn parent(&self, own_pool: u32) -> Result<Option<(u32, u64)>, LayoutError> {
        if self.parent_id == 0 {
            return Ok(None);
        }
        if self.parent_id >= 1u64 << crate::POOL_ID_BITS {
            return Err(LayoutError::invalid(
                &format!("image {}", self.name),
                "parent_id",
                format!("{} carries pool bits", self.parent_id),
            ));
        }
        let pool = match self.parent_pool {
            0 => own_pool,
            p => u32::try_from(p)
                .ok()
                .filter(|&p| p < 1 << 16)
                .ok_or_else(|| {
                    LayoutError::invalid(
                        &format!("image {}", self.name),
                        "parent_pool",
                        format!("{p} is not a pool id"),
                    )
                })?,
        };
        Ok(Some((pool, self.parent_id)))
    }
}

/// `index/image/<name>`: where an image's metadata lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndex {
    /// Inode number without pool bits.
    #[serde(deserialize_with = "tolerant::num")]
    pub id: u64,
    /// Pool id.
    #[serde(deserialize_with = "tolerant::num")]
    pub pool_id: u32,
}

impl ImageIndex {
    /// Parses the value of an `index/image` key.
    pub fn from_json(key: &str, v: &Value) -> Result<ImageIndex, LayoutError> {
        serde_json::from_value(v.clone()).map_err(|e| from_serde(key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inode_round_trip() {
        let v = json!({"name":"testimg","size":10737418240u64});
        let i = InodeConfig::from_json("config/inode/1/1", &v).unwrap();
        assert_eq!(i.to_json(), v);
        assert!(InodeConfig::from_json("k", &json!({"size":1})).is_err());
        let idx = ImageIndex::from_json("k", &json!({"id":5,"pool_id":1})).unwrap();
        assert_eq!(idx, ImageIndex { id: 5, pool_id: 1 });
    }

    #[test]
    fn layers_as_the_original_writes_them() {
        let as_numbers =
            json!({"name":"a@s","size":4096,"parent_pool":2,"parent_id":5,"readonly":true});
        let as_strings =
            json!({"name":"a@s","size":"4096","parent_pool":"2","parent_id":"5","readonly":"1"});
        let a = InodeConfig::from_json("k", &as_numbers).unwrap();
        assert_eq!(a, InodeConfig::from_json("k", &as_strings).unwrap());
        assert_eq!(a.parent(1).unwrap(), Some((2, 5)));
        assert!(a.readonly);
        assert_eq!(a.to_json(), as_numbers);
        let same_pool =
            InodeConfig::from_json("k", &json!({"name":"c","size":1,"parent_id":7})).unwrap();
        assert_eq!(same_pool.parent(3).unwrap(), Some((3, 7)));
        let flat = InodeConfig::from_json(
            "k",
            &json!({"name":"f","size":1,"parent_pool":0,"parent_id":0,"readonly":false}),
        )
        .unwrap();
        assert_eq!(flat.parent(3).unwrap(), None);
        assert_eq!(flat.to_json(), json!({"name":"f","size":1}));
        let bad_pool = InodeConfig::from_json(
            "k",
            &json!({"name":"b","size":1,"parent_pool":70000,"parent_id":1}),
        )
        .unwrap();
        assert!(bad_pool.parent(1).is_err());
        let pool_bits =
            InodeConfig::from_json("k", &json!({"name":"b","size":1,"parent_id":(1u64<<48)|1}))
                .unwrap();
        assert!(pool_bits.parent(1).is_err());
        for bad in [
            json!({"name":"x","size":1,"parent_id":"x"}),
            json!({"name":"x","size":1,"readonly":"yes"}),
        ] {
            assert!(InodeConfig::from_json("k", &bad).is_err(), "{bad}");
        }
    }
}
