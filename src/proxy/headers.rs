//! Header hygiene in both directions: hop-by-hop headers never cross the
//! proxy; kmproxy's own headers, the caller key and (unless the principal
//! is `bearer`) `Authorization` never reach the upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The hop-by-hop header `name` is (RFC 9110 §7.6.1, plus
/// `Transfer-Encoding`, which a proxy recomputes), if it is one: a match on
/// the name's text, so a header that is not one costs a length check.
fn hop_by_hop(name: &HeaderName) -> Option<HeaderName> {
    Some(match name.as_str() {
        "connection" => header::CONNECTION,
        "keep-alive" => HeaderName::from_static("keep-alive"),
        "proxy-connection" => HeaderName::from_static("proxy-connection"),
        "proxy-authenticate" => header::PROXY_AUTHENTICATE,
        "proxy-authorization" => header::PROXY_AUTHORIZATION,
        "te" => header::TE,
        "trailer" => header::TRAILER,
        "transfer-encoding" => header::TRANSFER_ENCODING,
        "upgrade" => header::UPGRADE,
        _ => return None,
    })
}

/// Headers the `Connection` header names (hop-by-hop by declaration);
/// empty, without allocating, when it names none beyond the usual
/// `keep-alive` and `close` (which go anyway).
fn named_by_connection(h: &HeaderMap) -> Vec<HeaderName> {
    let usual = |v: &HeaderValue| {
        let v = v.as_bytes();
        v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
    };
    if h.get_all(header::CONNECTION).iter().all(usual) {
        return Vec::new();
    }
    let tokens = || {
        h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close"))
    };
    if tokens().next().is_none() {
        return Vec::new();
    }
    tokens().filter_map(|n| HeaderName::try_from(n).ok()).collect()
}

/// Removes hop-by-hop headers, including those the `Connection` header
/// names. Most answers carry none, or just `Connection: keep-alive`, so it
/// finds the ones present in one look over the names, without
/// allocating, and removes only those.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    const NONE: Option<HeaderName> = None;
    let mut present = [NONE; 9];
    let mut n = 0;
    for k in h.keys() {
        if let Some(known) = hop_by_hop(k) {
            if n < present.len() && !present[..n].contains(&Some(known.clone())) {
                present[n] = Some(known);
                n += 1;
            }
        }
    }
    if n == 0 {
        return;
    }
    if present[..n].contains(&Some(header::CONNECTION)) {
        for named in named_by_connection(h) {
            h.remove(named);
        }
    }
    for name in present.into_iter().flatten() {
        h.remove(name);
    }
}

/// The headers to send upstream, built in one pass from the caller's
/// (which stay as they are, for a replay): without hop-by-hop headers,
/// `Host` and the framing headers (the body is re-sent with its exact
/// length), the caller's `kmauthtoken`, the caller key, `x-kmproxy-*`, and
/// `Authorization` unless `keep_authorization`; with the call's
/// `x-request-id` (the caller's, if it sent a sane one).
pub fn for_upstream(
    src: &HeaderMap,
    caller_key_header: &HeaderName,
    keep_authorization: bool,
    request_id: &HeaderValue,
) -> HeaderMap {
    let named = named_by_connection(src);
    let mut out = HeaderMap::with_capacity(src.keys_len() + 2);
    for (name, value) in src {
        let drop = hop_by_hop(name).is_some()
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT
            || (name == header::AUTHORIZATION && !keep_authorization)
            || name == caller_key_header
            || name == crate::kmauthtoken::HEADER
            || name.as_str().starts_with("x-kmproxy-")
            || name == super::REQUEST_ID
            || named.contains(name);
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(super::REQUEST_ID, request_id.clone());
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
        let h = for_upstream(
            &h,
            &HeaderName::from_static("x-kmproxy-key"),
            false,
            &HeaderValue::from_static("r2"),
        );
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept", "x-request-id"]);
        assert_eq!(h["x-request-id"], "r2");
    }

    #[test]
    fn answers_lose_their_hop_by_hop_headers_only() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-hop"),
            ("connection", "close"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
            ("x-kept", "2"),
        ] {
            h.append(k, v.parse().expect("value"));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-type", "x-kept"]);
        let mut plain = HeaderMap::new();
        plain.insert(header::CONTENT_LENGTH, "3".parse().expect("value"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
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
