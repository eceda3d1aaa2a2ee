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
}
