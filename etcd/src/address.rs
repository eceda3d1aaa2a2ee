//! `etcd_address`: `host:port[/v3]`, optionally with `http://`, several separated by commas.

/// An `etcd_address` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid etcd address {value:?}: {reason}")]
pub struct AddressError {
    /// The whole option value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One or more etcd endpoints, as URLs `http://host:port` for the gRPC client.
///
/// The `/v3` in vitastor's option value is the HTTP API path of etcd's JSON gateway; the gRPC
/// client has no path, so it is stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdAddress {
    endpoints: Vec<String>,
}

impl EtcdAddress {
    /// Parses an `etcd_address` option value.
    pub fn parse(value: &str) -> Result<EtcdAddress, AddressError> {
        let bad = |reason: String| AddressError {
            value: value.to_string(),
            reason,
        };
        let mut endpoints = Vec::new();
        for item in value.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(bad("empty endpoint".to_string()));
            }
            let rest = match item.strip_prefix("http://") {
                Some(rest) => rest,
                // TLS needs certificate options no program has yet.
                None if item.contains("://") => {
                    return Err(bad(format!("{item:?}: only http:// is supported")))
                }
                None => item,
            };
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            if !matches!(path, "" | "/" | "/v3" | "/v3/") {
                return Err(bad(format!("{item:?}: API path must be /v3, got {path:?}")));
            }
            let Some((host, port)) = authority.rsplit_once(':') else {
                return Err(bad(format!("{item:?}: expected host:port")));
            };
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err(bad(format!("{item:?}: empty or invalid host")));
            }
            if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
                return Err(bad(format!("{item:?}: invalid port {port:?}")));
            }
            endpoints.push(format!("http://{authority}"));
        }
        Ok(EtcdAddress { endpoints })
    }

    /// The endpoints as `http://host:port` URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let a = EtcdAddress::parse("127.0.0.1:2379/v3").unwrap();
        assert_eq!(a.endpoints(), ["http://127.0.0.1:2379"]);
        let a = EtcdAddress::parse("http://10.0.0.1:2379/v3, etcd2:2379,[::1]:23790/v3/").unwrap();
        assert_eq!(
            a.endpoints(),
            [
                "http://10.0.0.1:2379",
                "http://etcd2:2379",
                "http://[::1]:23790"
            ]
        );
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:2379/v2",
            "127.0.0.1:port/v3",
            "127.0.0.1:0/v3",
            "127.0.0.1:70000",
            ":2379/v3",
            "a:1,,b:2",
            "https://a:2379/v3",
            "a b:2379",
        ] {
            let err = EtcdAddress::parse(bad).unwrap_err();
            assert_eq!(err.value, bad);
            assert!(err.to_string().contains("invalid etcd address"), "{err}");
        }
    }
}
