//! The value parsers: one raw value (or its absence) in, one typed value
//! out. A bad value is recorded in [`Problems`] under its key and replaced
//! by a placeholder, so checking goes on and every problem is reported.

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::Problems;
use super::RESERVED_KMAUTHTOKEN_FIELDS;
use crate::secret::Secret;

/// Hex sha256 of a caller key (what `key_sha256` holds).
pub fn hash_key(key: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(key))
}

/// A count that must be at least 1; `default` when unset.
pub(super) fn positive(p: &mut Problems, key: &str, v: Option<usize>, default: usize) -> usize {
    match v {
        Some(0) => {
            p.add(key, "must be at least 1");
            default
        }
        Some(n) => n,
        None => default,
    }
}

/// A string that must be set and not empty.
pub(super) fn required(p: &mut Problems, key: &str, v: Option<String>) -> String {
    match v {
        Some(s) if !s.is_empty() => s,
        Some(_) => {
            p.add(key, "must not be empty");
            String::new()
        }
        None => {
            p.add(key, "missing");
            String::new()
        }
    }
}

/// A secret that must be set: a literal, `{ env = … }` or `{ file = … }`.
pub(super) fn secret(p: &mut Problems, key: &str, v: Option<&toml::Value>) -> Secret {
    match v.map(Secret::from_toml) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            p.add(key, e);
            Secret::literal("-")
        }
        None => {
            p.add(key, "missing");
            Secret::literal("-")
        }
    }
}

/// A socket address like `127.0.0.1:8080`.
pub(super) fn addr(p: &mut Problems, key: &str, v: &str) -> SocketAddr {
    v.parse().unwrap_or_else(|_| {
        p.add(key, format!("`{v}` is not an address like 127.0.0.1:8080"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// A humantime duration; `default` (also humantime) when unset.
pub(super) fn duration(p: &mut Problems, key: &str, v: Option<&str>, default: &str) -> Duration {
    let v = v.unwrap_or(default);
    humantime::parse_duration(v).unwrap_or_else(|e| {
        p.add(key, format!("`{v}` is not a duration like 90s, 10m or 24h ({e})"));
        Duration::ZERO
    })
}

/// Parses `1048576`, `"512KiB"`, `"10MiB"`, `"1GiB"`, `"10MB"`.
pub fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A size: a number of bytes, or a string for [`parse_size`].
pub(super) fn size(p: &mut Problems, key: &str, v: &toml::Value) -> usize {
    let parsed = match v {
        toml::Value::Integer(i) => usize::try_from(*i).ok(),
        toml::Value::String(s) => parse_size(s),
        _ => None,
    };
    parsed.unwrap_or_else(|| {
        p.add(key, format!("`{v}` is not a size like 10MiB, 512KiB or 1048576"));
        0
    })
}

/// An http(s) URL with a host and no query or fragment, without its
/// trailing slashes.
pub(super) fn url(p: &mut Problems, key: &str, v: Option<&str>) -> String {
    let Some(v) = v else {
        p.add(key, "missing");
        return String::new();
    };
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if u.query().is_some() || u.fragment().is_some() {
                p.add(key, "must not have a query or fragment");
            }
            v.trim_end_matches('/').to_owned()
        }
        Ok(_) => {
            p.add(key, format!("`{v}` must be an http:// or https:// URL with a host"));
            String::new()
        }
        Err(e) => {
            p.add(key, format!("`{v}` is not a URL ({e})"));
            String::new()
        }
    }
}

/// `upstream.kmauthtoken_extra`: string fields, none of the reserved ones.
pub(super) fn extra_fields(p: &mut Problems, table: toml::Table) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in table {
        let key = format!("upstream.kmauthtoken_extra.{k}");
        if RESERVED_KMAUTHTOKEN_FIELDS.contains(&k.as_str()) {
            p.add(key, "is set by kmproxy and cannot be configured");
        } else if let toml::Value::String(s) = v {
            out.push((k, s));
        } else {
            p.add(key, "must be a string");
        }
    }
    out
}

/// A caller's `key_sha256`: 64 hex characters.
pub(super) fn decode_sha256(v: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.trim(), &mut out)
        .map_err(|_| "must be 64 hex characters (the sha256 of the key; see `kmproxy hash-key`)".to_owned())?;
    Ok(out)
}

/// `server.allowed_hosts`: host names (no port, no scheme), lower-cased.
pub(super) fn allowed_hosts(p: &mut Problems, names: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if ok {
            out.push(name.to_ascii_lowercase());
        } else {
            p.add(
                format!("server.allowed_hosts[{i}]"),
                format!("`{name}` is not a host name (letters, digits, `-` and `.`; no port or scheme)"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("42"), Some(42));
        assert_eq!(parse_size("1 MB"), Some(1_000_000));
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("3 parsecs"), None);
    }
}
