//! Header hygiene in both directions: hop-by-hop headers never cross the
//! proxy; kmproxy's own headers, the caller key and (unless the principal
//! is `bearer`) `Authorization` never reach the upstream.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus ones a buffering proxy must
/// recompute itself.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Headers the `Connection` header names (hop-by-hop by declaration);
/// empty, without allocating, when there is none.
fn named_by_connection(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // The usual values name no header beyond the hop-by-hop ones,
        // which go anyway: skip parsing them into names.
        .filter(|n| !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close"))
        .filter_map(|n| HeaderName::try_from(n).ok())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::TRANSFER_ENCODING
}

/// Removes hop-by-hop headers, including those the `Connection` header
/// names. Most answers carry none, or just `Connection`, so it finds the
/// ones present in one look over the names and removes only those.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let present: Vec<HeaderName> = h.keys().filter(|k| is_hop_by_hop(k)).cloned().collect();
    if present.is_empty() {
        return;
    }
    if present.contains(&header::CONNECTION) {
        for n in named_by_connection(h) {
            h.remove(n);
        }
    }
    for n in present {
        h.remove(n);
    }
}

/// The headers to send upstream, built in one pass from the caller's
/// (which stay as they are, for a replay): without hop-by-hop headers,
/// `Host` and the framing headers (the body is re-sent with its exact
/// length), the caller's `kmauthtoken`, the caller key, `x-kmproxy-*`, and
/// `Authorization` unless `keep_authorization`.
pub fn for_upstream(src: &HeaderMap, caller_key_header: &HeaderName, keep_authorization: bool) -> HeaderMap {
    let named = named_by_connection(src);
    let mut out = HeaderMap::with_capacity(src.keys_len() + 1);
    for (name, value) in src {
        let drop = is_hop_by_hop(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT
            || (name == header::AUTHORIZATION && !keep_authorization)
            || name == caller_key_header
            || name.as_str() == "kmauthtoken"
            || name.as_str().starts_with("x-kmproxy-")
            || named.contains(name);
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// True when the headers carry `Authorization: Bearer <token>`.
pub fn has_bearer(h: &HeaderMap) -> bool {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_what_must_not_cross() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "5"),
            ("x-kmproxy-key", "k"),
            ("x-kmproxy-act-as", "agent"),
            ("authorization", "Bearer x"),
            ("kmauthtoken", "{}"),
            ("accept", "application/json"),
            ("x-request-id", "r1"),
        ] {
            h.append(k, v.parse().expect("value"));
        }
        let h = for_upstream(&h, &HeaderName::from_static("x-kmproxy-key"), false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept", "x-request-id"]);
    }

    #[test]
    fn bearer_detection() {
        let mut h = HeaderMap::new();
        assert!(!has_bearer(&h));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("value"));
        assert!(!has_bearer(&h));
        h.insert(header::AUTHORIZATION, "bearer eyJ".parse().expect("value"));
        assert!(has_bearer(&h));
    }
}
