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

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    h.remove(header::TRANSFER_ENCODING);
}

/// Prepares a caller's headers for the upstream.
pub fn for_upstream(h: &mut HeaderMap, caller_key_header: &HeaderName, keep_authorization: bool) {
    strip_hop_by_hop(h);
    h.remove(caller_key_header);
    h.remove(header::HOST);
    // The body is buffered and re-sent with its exact length.
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::EXPECT);
    h.remove("kmauthtoken");
    if !keep_authorization {
        h.remove(header::AUTHORIZATION);
    }
    let own: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-kmproxy-"))
        .cloned()
        .collect();
    for k in own {
        h.remove(k);
    }
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
        for_upstream(&mut h, &HeaderName::from_static("x-kmproxy-key"), false);
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
