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

/// A count from 1 to `max`; `default` when unset.
pub(super) fn count(p: &mut Problems, key: &str, v: Option<usize>, default: usize, max: usize) -> usize {
    match v {
        Some(0) => {
            p.add(key, "must be at least 1");
            default
        }
        Some(n) if n > max => {
            p.add(key, format!("must be at most {max}"));
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
    try_secret(p, key, v).unwrap_or_else(|| Secret::literal("-"))
}

/// [`secret`], or `None` once the problem is recorded, for a value that is
/// judged further only when it could be read (so one problem is said once).
pub(super) fn try_secret(p: &mut Problems, key: &str, v: Option<&toml::Value>) -> Option<Secret> {
    match v.map(Secret::from_toml) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            p.add(key, e);
            None
        }
        None => {
            p.add(key, "missing");
            None
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

/// The durations a key accepts: from `min` to `max`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Span {
    min: Duration,
    max: Duration,
}

impl Span {
    /// From zero to `max`.
    pub const fn up_to(max: Duration) -> Self {
        Span {
            min: Duration::ZERO,
            max,
        }
    }

    /// Greater than zero, at most `max`.
    pub const fn positive(max: Duration) -> Self {
        Span {
            min: Duration::from_nanos(1),
            max,
        }
    }

    /// From `min` to `max`.
    pub const fn between(min: Duration, max: Duration) -> Self {
        Span { min, max }
    }
}

/// A humantime duration within `span`; `default` (also humantime) when
/// unset. Out of its span, the problem names the bound, and the default
/// stands in, so nothing downstream meets the bad value.
pub(super) fn duration(p: &mut Problems, key: &str, v: Option<&str>, default: &str, span: Span) -> Duration {
    let fallback = humantime::parse_duration(default).unwrap_or(Duration::from_secs(1));
    let Some(v) = v else { return fallback };
    let show = |d| humantime::format_duration(d);
    match humantime::parse_duration(v) {
        Ok(d) if d < span.min && span.min <= Duration::from_nanos(1) => p.add(key, "must be greater than zero"),
        Ok(d) if d < span.min => p.add(key, format!("`{v}` is too short: at least {}", show(span.min))),
        Ok(d) if d > span.max => p.add(key, format!("`{v}` is too long: at most {}", show(span.max))),
        Ok(d) => return d,
        Err(e) => p.add(key, format!("`{v}` is not a duration like 90s, 10m or 24h ({e})")),
    }
    fallback
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

/// A size of at most `max` bytes: a number of bytes, or a string for
/// [`parse_size`]; `default` when unset (or when the value is bad, so
/// nothing downstream meets it).
pub(super) fn size(p: &mut Problems, key: &str, v: Option<&toml::Value>, default: usize, max: usize) -> usize {
    let Some(v) = v else { return default };
    let parsed = match v {
        toml::Value::Integer(i) => usize::try_from(*i).ok(),
        toml::Value::String(s) => parse_size(s),
        _ => None,
    };
    match parsed {
        Some(n) if n <= max => return n,
        Some(_) => p.add(key, format!("`{v}` is too large: at most {}", show_size(max))),
        None => p.add(key, format!("`{v}` is not a size like 10MiB, 512KiB or 1048576")),
    }
    default
}

/// `n` bytes in the largest binary unit that divides it.
fn show_size(n: usize) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// An http(s) URL with a host, no credentials and no query or fragment,
/// without its trailing slashes. A message never quotes the URL's
/// userinfo: a password written there stays out of `check` and the logs.
pub(super) fn url(p: &mut Problems, key: &str, v: Option<&str>) -> String {
    let Some(v) = v else {
        p.add(key, "missing");
        return String::new();
    };
    let shown = without_userinfo(v);
    match url::Url::parse(v) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            p.add(
                key,
                format!("`{shown}` must not carry credentials (`user:password@`): kmproxy logs in itself"),
            );
            String::new()
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if u.query().is_some() || u.fragment().is_some() {
                p.add(key, "must not have a query or fragment");
            }
            // The parsed form: one spelling per site (scheme and host in
            // lower case, IPv4 in dotted decimal, no default port), so a
            // lockout verdict keyed by it cannot be dodged by re-spelling
            // the URL in a reload.
            u.as_str().trim_end_matches('/').to_owned()
        }
        Ok(_) => {
            p.add(key, format!("`{shown}` must be an http:// or https:// URL with a host"));
            String::new()
        }
        Err(e) => {
            p.add(key, format!("`{shown}` is not a URL ({e})"));
            String::new()
        }
    }
}

/// `v` with anything that may be userinfo (up to the last `@` of the
/// authority) replaced by `***`; parsed or not, so it also covers a URL
/// the parser refused.
fn without_userinfo(v: &str) -> std::borrow::Cow<'_, str> {
    let authority_at = v.find("://").map_or(0, |i| i + 3);
    let rest = &v[authority_at..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &v[..authority_at], &rest[at..]).into(),
        None => v.into(),
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

    #[test]
    fn urls_are_kept_in_one_spelling() {
        for spelling in [
            "HTTP://127.0.0.1:7002",
            "http://0x7f.0.0.1:7002/",
            "http://127.0.0.1:7002",
            "Http://127.1:7002",
        ] {
            let mut p = Problems::default();
            assert_eq!(
                url(&mut p, "upstream.base_url", Some(spelling)),
                "http://127.0.0.1:7002",
                "{spelling}"
            );
        }
        let mut p = Problems::default();
        assert_eq!(
            url(&mut p, "upstream.base_url", Some("https://Site-IRS.custhelp.com:443/")),
            "https://site-irs.custhelp.com"
        );
        assert_eq!(
            url(&mut p, "k", Some("http://gw.local:8000/oracle/")),
            "http://gw.local:8000/oracle"
        );
        assert!(p.into_vec().is_empty());
    }

    #[test]
    fn userinfo_is_never_quoted() {
        assert_eq!(without_userinfo("https://u:pw@h.example/x"), "https://***@h.example/x");
        assert_eq!(without_userinfo("ftp://u:p@w@h/x@y"), "ftp://***@h/x@y");
        assert_eq!(without_userinfo("u:pw@h.example"), "***@h.example");
        assert_eq!(without_userinfo("https://h.example/a@b"), "https://h.example/a@b");
        for bad in [
            "https://u:pw@h.example",
            "https://u@h.example",
            "https://:pw@h",
            "ftp://u:pw@h",
            "https://u:pw@[::1",
        ] {
            let mut p = Problems::default();
            url(&mut p, "upstream.base_url", Some(bad));
            let problems = p.into_vec();
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(problems[0].0, "upstream.base_url");
            assert!(!problems[0].1.contains("pw"), "{bad}: {}", problems[0].1);
        }
    }

    #[test]
    fn out_of_span_durations_name_their_bound() {
        let mut p = Problems::default();
        let hour = Span::positive(Duration::from_secs(3600));
        assert_eq!(duration(&mut p, "k", Some("2h"), "5s", hour), Duration::from_secs(5));
        assert_eq!(duration(&mut p, "k", Some("0s"), "5s", hour), Duration::from_secs(5));
        assert_eq!(duration(&mut p, "k", Some("1h"), "5s", hour), Duration::from_secs(3600));
        assert_eq!(
            duration(&mut p, "k", Some("0s"), "5s", Span::up_to(Duration::from_secs(1))),
            Duration::ZERO
        );
        let problems = p.into_vec();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].1.contains("at most 1h"), "{problems:?}");
        assert!(problems[1].1.contains("greater than zero"), "{problems:?}");
    }
}
