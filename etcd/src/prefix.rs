//! `etcd_prefix`: where the cluster's keys live (`/vitastor` by default).

/// An `etcd_prefix` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid etcd prefix {0:?}: it must start with '/'")]
pub struct PrefixError(pub String);

/// The prefix without trailing slashes (`/vitastor/` → `/vitastor`; `/` → the empty prefix,
/// the root of the key space). Anything else must start with `/`: a relative prefix would
/// silently name other keys than every other program of the cluster uses.
pub fn normalize_prefix(value: &str) -> Result<String, PrefixError> {
    let trimmed = value.trim_end_matches('/');
    if !trimmed.is_empty() && !trimmed.starts_with('/') {
        return Err(PrefixError(value.to_string()));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(normalize_prefix("/vitastor").unwrap(), "/vitastor");
        assert_eq!(normalize_prefix("/vitastor//").unwrap(), "/vitastor");
        assert_eq!(normalize_prefix("/a/b/").unwrap(), "/a/b");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        assert_eq!(normalize_prefix("").unwrap(), "");
        for bad in ["vitastor", "vitastor/", "x/y"] {
            assert_eq!(normalize_prefix(bad), Err(PrefixError(bad.into())));
        }
    }
}
