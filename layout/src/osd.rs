//! `osd/state/<osd>` (leased, written by the OSD) and `config/osd/<osd>` (operator settings).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{from_serde, LayoutError};
use crate::tolerant;

/// `osd/state/<osd>`: present while the OSD's lease lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsdState {
    /// `up` while the OSD runs.
    pub state: String,
    /// Addresses peers and clients connect to.
    pub addresses: Vec<String>,
    /// TCP port.
    #[serde(deserialize_with = "tolerant::num")]
    pub port: u16,
    /// Host name (default failure domain).
    #[serde(default)]
    pub host: String,
    /// Whether the OSD takes primary roles.
    #[serde(default = "yes", deserialize_with = "tolerant::flag")]
    pub primary_enabled: bool,
    /// Whether the OSD stores data.
    #[serde(default = "yes", deserialize_with = "tolerant::flag")]
    pub blockstore_enabled: bool,
    /// Version of the OSD program (the original's tools show it); empty when not reported.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

fn yes() -> bool {
    true
}

impl OsdState {
    /// Parses the value of an `osd/state` key.
    pub fn from_json(key: &str, v: &Value) -> Result<OsdState, LayoutError> {
        let s: OsdState = serde_json::from_value(v.clone()).map_err(|e| from_serde(key, e))?;
        if s.addresses.is_empty() || s.port == 0 {
            return Err(LayoutError::shape(
                key,
                "an up OSD needs addresses and a port",
            ));
        }
        Ok(s)
    }

    /// True when the OSD says it is up.
    pub fn is_up(&self) -> bool {
        self.state == "up"
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `config/osd/<osd>`: operator settings of one OSD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OsdConfig {
    /// Weight multiplier for placement (0 takes the OSD out).
    #[serde(default = "one", deserialize_with = "tolerant::float")]
    pub reweight: f64,
    /// Tags pools can select OSDs by.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Never take the OSD out when it is down.
    #[serde(default, deserialize_with = "tolerant::flag")]
    pub noout: bool,
}

fn one() -> f64 {
    1.0
}

impl Default for OsdConfig {
    fn default() -> Self {
        OsdConfig {
            reweight: 1.0,
            tags: Vec::new(),
            noout: false,
        }
    }
}

impl OsdConfig {
    /// Parses the value of a `config/osd` key.
    pub fn from_json(key: &str, v: &Value) -> Result<OsdConfig, LayoutError> {
        let c: OsdConfig = serde_json::from_value(v.clone()).map_err(|e| from_serde(key, e))?;
        if !(c.reweight >= 0.0 && c.reweight.is_finite()) {
            return Err(LayoutError::invalid(
                key,
                "reweight",
                format!("{} is not >= 0", c.reweight),
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn osd_state_round_trip() {
        let v = json!({"state":"up","addresses":["127.0.0.1"],"port":43211,"host":"node1"});
        let s = OsdState::from_json("osd/state/1", &v).unwrap();
        assert!(s.is_up() && s.primary_enabled);
        assert_eq!(OsdState::from_json("k", &s.to_json()).unwrap(), s);
        assert!(OsdState::from_json("k", &json!({"state":"up","addresses":[],"port":1})).is_err());
        assert!(OsdConfig::from_json("k", &json!({"reweight":-1})).is_err());
        assert_eq!(
            OsdConfig::from_json("k", &json!({})).unwrap(),
            OsdConfig::default()
        );
    }
}
