//! The common config file, `/etc/vitastor/vitastor.conf`: a JSON object that tells every
//! program of a host which cluster it belongs to (`etcd_address`, `etcd_prefix`) when its
//! command line does not. Written once here so the OSD, the monitor, the CLI and the client
//! library (fio, QEMU, NBD) find the same file by the same rules.
//!
//! Which file: an explicit path (`--config_path`) must exist; otherwise the path in
//! `VITASTOR_CONFIG_PATH`, else `/etc/vitastor/vitastor.conf`, is read only when it exists
//! (tests point the variable at a file of their own instead of touching `/etc`).
//!
//! # What it must never do
//! - Create, rewrite or guess a config file: a host without one is a valid host.
//! - Interpret options other than the cluster address: each program owns its other options.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The file read when no path is given and [`CONFIG_PATH_ENV`] is unset.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vitastor/vitastor.conf";
/// Environment variable naming the file to read instead of [`DEFAULT_CONFIG_PATH`].
pub const CONFIG_PATH_ENV: &str = "VITASTOR_CONFIG_PATH";

/// A config file that exists (or was named explicitly) but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config file {path}: {reason}")]
pub struct ConfigFileError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The implicit config path: [`CONFIG_PATH_ENV`] when set and not empty, else
/// [`DEFAULT_CONFIG_PATH`].
pub fn default_config_path() -> PathBuf {
    match std::env::var_os(CONFIG_PATH_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_CONFIG_PATH),
    }
}

/// Reads the config file: `explicit` when given (it must exist), else the implicit path when
/// it exists (a missing implicit file is an empty object). Returns the file's object.
pub fn read_config(explicit: Option<&Path>) -> Result<Map<String, Value>, ConfigFileError> {
    let (path, must_exist) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => (default_config_path(), false),
    };
    let err = |reason: String| ConfigFileError {
        path: path.display().to_string(),
        reason,
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => return Ok(Map::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(err("not a JSON object".into())),
        Err(e) => Err(err(e.to_string())),
    }
}

/// `etcd_address` from a config object: a string, or (as the original accepts) an array of
/// endpoint strings joined with commas. `None` when absent or empty.
pub fn etcd_address_of(config: &Map<String, Value>) -> Result<Option<String>, String> {
    let joined = match config.get("etcd_address") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str())
            .collect::<Option<Vec<_>>>()
            .ok_or("etcd_address must be a string or an array of strings")?
            .join(","),
        Some(_) => return Err("etcd_address must be a string or an array of strings".into()),
    };
    Ok(Some(joined).filter(|s| !s.trim().is_empty()))
}

/// The cluster address a program uses: its own options first, then the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterAddress {
    /// `etcd_address` as written, when any source gives one.
    pub etcd_address: Option<String>,
    /// `etcd_prefix` as written, when any source gives one.
    pub etcd_prefix: Option<String>,
}

/// Fills what the program's own options leave open from the config file (`explicit` or the
/// implicit one, as [`read_config`]). The file is read only when something is missing, so a
/// fully specified command line never depends on `/etc`.
pub fn cluster_address(
    etcd_address: Option<String>,
    etcd_prefix: Option<String>,
    explicit: Option<&Path>,
) -> Result<ClusterAddress, ConfigFileError> {
    if etcd_address.is_some() && etcd_prefix.is_some() && explicit.is_none() {
        return Ok(ClusterAddress {
            etcd_address,
            etcd_prefix,
        });
    }
    let file = read_config(explicit)?;
    let path = || match explicit {
        Some(p) => p.display().to_string(),
        None => default_config_path().display().to_string(),
    };
    let from_file = etcd_address_of(&file).map_err(|reason| ConfigFileError {
        path: path(),
        reason,
    })?;
    let prefix_from_file = match file.get("etcd_prefix") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ConfigFileError {
                path: path(),
                reason: "etcd_prefix must be a string".into(),
            })
        }
    };
    Ok(ClusterAddress {
        etcd_address: etcd_address.or(from_file),
        etcd_prefix: etcd_prefix.or(prefix_from_file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn explicit_file_fills_what_options_leave_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "v.conf",
            r#"{"etcd_address":["10.0.0.1:2379/v3","10.0.0.2:2379"],"etcd_prefix":"/vs","other":1}"#,
        );
        let a = cluster_address(None, None, Some(&p)).unwrap();
        assert_eq!(
            a.etcd_address.as_deref(),
            Some("10.0.0.1:2379/v3,10.0.0.2:2379")
        );
        assert_eq!(a.etcd_prefix.as_deref(), Some("/vs"));
        let a = cluster_address(Some("e:1".into()), None, Some(&p)).unwrap();
        assert_eq!(a.etcd_address.as_deref(), Some("e:1"));
        assert_eq!(a.etcd_prefix.as_deref(), Some("/vs"));
    }

    #[test]
    fn explicit_file_must_exist_and_be_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.conf");
        let e = cluster_address(None, None, Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("missing.conf"), "{e}");
        for (name, text, why) in [
            ("a.conf", "[1]", "not a JSON object"),
            ("b.conf", "{", "EOF"),
            ("c.conf", r#"{"etcd_address":5}"#, "etcd_address must be"),
            ("d.conf", r#"{"etcd_prefix":[]}"#, "etcd_prefix must be"),
        ] {
            let p = write(dir.path(), name, text);
            let e = cluster_address(None, None, Some(&p)).unwrap_err();
            assert!(e.to_string().contains(why), "{name}: {e}");
        }
    }

    #[test]
    fn empty_address_counts_as_absent() {
        let mut m = Map::new();
        m.insert("etcd_address".into(), Value::String("  ".into()));
        assert_eq!(etcd_address_of(&m), Ok(None));
    }

    /// The only test that touches the process environment (tests run in threads).
    #[test]
    fn implicit_file_comes_from_the_environment_and_may_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "env.conf", r#"{"etcd_address":"h:2379/v3"}"#);
        std::env::set_var(CONFIG_PATH_ENV, &p);
        assert_eq!(default_config_path(), p);
        let a = cluster_address(None, None, None).unwrap();
        assert_eq!(a.etcd_address.as_deref(), Some("h:2379/v3"));
        assert_eq!(a.etcd_prefix, None);
        std::env::set_var(CONFIG_PATH_ENV, dir.path().join("none.conf"));
        assert_eq!(
            cluster_address(None, None, None),
            Ok(ClusterAddress::default())
        );
        std::env::remove_var(CONFIG_PATH_ENV);
        assert_eq!(default_config_path(), PathBuf::from(DEFAULT_CONFIG_PATH));
    }
}
