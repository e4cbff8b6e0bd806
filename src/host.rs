//! The `Host` rule, the same on the data port and the admin port: a
//! request names exactly one host, and that host is a loopback name
//! (`localhost`, `*.localhost`), an IP literal, or one of
//! `server.allowed_hosts` (any letter case, any port from 1 to 65535).
//! Anything else is 400.
//!
//! Why: a web page on the same machine can make a browser send requests to
//! kmproxy. Through DNS rebinding (its own name re-pointed at 127.0.0.1),
//! such a page may even read the answers, since they come from "its" origin,
//! and on the data port they are served as `default_principal`. The
//! browser still sends the page's own name in `Host`, and that name is
//! neither loopback nor an IP literal nor one the operator allowed.
//!
//! HTTP/2 carries the host in `:authority`, which hyper puts in the URI; an
//! HTTP/1 request in absolute form carries it in the target as well as in
//! `Host`. Every name a request presents must pass, and they must agree.

use std::net::{Ipv4Addr, Ipv6Addr};

use http::{header, HeaderMap, Request, Uri, Version};

/// Why a request's host was refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request has no `Host` header")]
    Missing,
    #[error("the request has more than one `Host` header")]
    Repeated,
    #[error("the request names two different hosts (`Host` and the request target)")]
    Conflicting,
    #[error("`{0}` is not a valid `Host` value")]
    Malformed(String),
    #[error("`{0}` is not a loopback name, an IP literal or listed in server.allowed_hosts")]
    NotAllowed(String),
}

/// Longest host value quoted back in a refusal.
const QUOTE_MAX: usize = 100;

/// Judges the host(s) `req` names against `allowed` (lower-case names, as
/// `server.allowed_hosts` holds them).
pub fn check<B>(req: &Request<B>, allowed: &[String]) -> Result<(), Refusal> {
    check_head(req.headers(), req.uri(), req.version(), allowed)
}

/// [`check`] on a request's head.
pub fn check_head(headers: &HeaderMap, uri: &Uri, version: Version, allowed: &[String]) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::Repeated);
    }
    let target = uri.authority().map(|a| a.as_str().as_bytes());
    let named = match (host.map(|h| h.as_bytes()), target) {
        (Some(h), Some(t)) if !h.eq_ignore_ascii_case(t) => return Err(Refusal::Conflicting),
        (Some(h), _) => h,
        // HTTP/2 may name its host in `:authority` alone; HTTP/1 needs `Host`.
        (None, Some(t)) if version >= Version::HTTP_2 => t,
        (None, _) => return Err(Refusal::Missing),
    };
    judge(named, allowed)
}

/// Judges one `host[:port]` value.
fn judge(value: &[u8], allowed: &[String]) -> Result<(), Refusal> {
    let quoted = || {
        let text = String::from_utf8_lossy(value);
        Refusal::Malformed(text.chars().take(QUOTE_MAX).collect())
    };
    let text = std::str::from_utf8(value).map_err(|_| quoted())?;
    let (name, port) = split_port(text).ok_or_else(quoted)?;
    // A port is 1 to 65535: no connection comes to any other.
    let in_range = port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0);
    if !port.is_empty() && !in_range {
        return Err(quoted());
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().map(|_| ()).map_err(|_| quoted());
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(quoted());
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    // `example.com.` is the same name as `example.com`.
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_suffix('.').unwrap_or(&lower);
    if bare == "localhost" || bare.ends_with(".localhost") || allowed.iter().any(|a| a == bare) {
        return Ok(());
    }
    Err(Refusal::NotAllowed(name.chars().take(QUOTE_MAX).collect()))
}

/// `host[:port]` → (host, port digits, possibly empty); `None` when a
/// colon appears where no port can be.
fn split_port(text: &str) -> Option<(&str, &str)> {
    let (name, port) = if text.starts_with('[') {
        let end = text.find(']')? + 1;
        (&text[..end], &text[end..])
    } else {
        match text.find(':') {
            Some(at) => (&text[..at], &text[at..]),
            None => (text, ""),
        }
    };
    match port.strip_prefix(':') {
        Some(digits) if !digits.is_empty() => Some((name, digits)),
        None if port.is_empty() => Some((name, "")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).expect("request")
    }

    fn allowed() -> Vec<String> {
        vec!["kmproxy.internal".to_owned()]
    }

    fn judged(value: &str) -> Result<(), Refusal> {
        check(&request(Version::HTTP_11, "/x", &[value]), &allowed())
    }

    #[test]
    fn loopback_names_ip_literals_and_allowed_names_pass() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "localhost.",
            "app.localhost:1",
            "127.0.0.1",
            "127.1.2.3:8080",
            "10.0.0.7:80",
            "[::1]",
            "[::1]:8080",
            "[fe80::1]:9",
            "localhost:65535",
            "localhost:08080",
            "kmproxy.internal",
            "KMProxy.Internal:9090",
            "kmproxy.internal.",
        ] {
            assert_eq!(judged(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn other_names_are_refused() {
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "evillocalhost",
            "kmproxy.internal.evil.example",
            "127.0.0.1.evil.example",
        ] {
            assert!(matches!(judged(bad), Err(Refusal::NotAllowed(_))), "{bad}");
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            ":8080",
            "localhost:",
            "localhost:80:80",
            "localhost:http",
            "localhost:123456",
            "localhost:99999",
            "127.0.0.1:65536",
            "[::1]:70000",
            "localhost:0",
            "localhost:+80",
            "user@localhost",
            "[::1",
            "[localhost]",
            "::1",
            "local host",
            "[::1]x",
        ] {
            assert!(matches!(judged(bad), Err(Refusal::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn exactly_one_host_is_named() {
        let none = request(Version::HTTP_11, "/x", &[]);
        assert_eq!(check(&none, &allowed()), Err(Refusal::Missing));
        let http10 = request(Version::HTTP_10, "/x", &[]);
        assert_eq!(check(&http10, &allowed()), Err(Refusal::Missing));
        let two = request(Version::HTTP_11, "/x", &["localhost", "localhost"]);
        assert_eq!(check(&two, &allowed()), Err(Refusal::Repeated));
        let absolute = request(Version::HTTP_11, "http://evil.example/x", &["localhost"]);
        assert_eq!(check(&absolute, &allowed()), Err(Refusal::Conflicting));
        let absolute = request(Version::HTTP_11, "http://localhost/x", &["localhost"]);
        assert_eq!(check(&absolute, &allowed()), Ok(()));
        // HTTP/1 needs `Host` even with an absolute target.
        let absolute = request(Version::HTTP_11, "http://localhost/x", &[]);
        assert_eq!(check(&absolute, &allowed()), Err(Refusal::Missing));
    }

    #[test]
    fn http2_authority_counts_as_host() {
        let ok = request(Version::HTTP_2, "http://127.0.0.1:8080/x", &[]);
        assert_eq!(check(&ok, &allowed()), Ok(()));
        let evil = request(Version::HTTP_2, "http://evil.example/x", &[]);
        assert!(matches!(check(&evil, &allowed()), Err(Refusal::NotAllowed(_))));
        let none = request(Version::HTTP_2, "/x", &[]);
        assert_eq!(check(&none, &allowed()), Err(Refusal::Missing));
        let mixed = request(Version::HTTP_2, "http://localhost/x", &["evil.example"]);
        assert_eq!(check(&mixed, &allowed()), Err(Refusal::Conflicting));
    }

    #[test]
    fn a_refusal_quotes_a_bounded_value() {
        let long = "a".repeat(5000);
        let Err(Refusal::NotAllowed(quoted)) = judged(&long) else {
            panic!("refused as not allowed")
        };
        assert_eq!(quoted.len(), QUOTE_MAX);
    }
}
