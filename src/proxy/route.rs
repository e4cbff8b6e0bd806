//! Which upstream a path belongs to, and which paths are refused before
//! anything is forwarded: outside the two API roots (404), the
//! authentication endpoints (403), and path shapes that could reach them
//! by another spelling (dot segments, empty segments, encoded separators,
//! backslashes: 400).

use std::borrow::Cow;

/// Why a path is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Outside `/km/api/` and `/srt/api/` (404).
    #[error("only /km/api/ and /srt/api/ are served")]
    NotFound,
    /// Dot segments, empty segments or encoded separators (400).
    #[error("the path contains dot segments, empty segments or encoded separators")]
    BadPath,
    /// The authentication endpoints (403).
    #[error("authentication endpoints are not reachable through kmproxy")]
    AuthPath,
}

/// The API a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/km/api/...` → `base_url`.
    Content,
    /// `/srt/api/...` → `search_base_url`.
    Search,
}

/// Classifies a request path (as received, still percent-encoded).
pub fn classify(path: &str) -> Result<Api, Refusal> {
    let api = if path.starts_with("/km/api/") {
        Api::Content
    } else if path.starts_with("/srt/api/") {
        Api::Search
    } else {
        return Err(Refusal::NotFound);
    };
    // Segments: "", "km", "api", version, ... One pass over the bytes; a
    // segment with none of `%` `\\` `.` `;` in it needs no decoding.
    let bytes = path.as_bytes();
    let (mut start, mut index, mut special) = (1, 1, false);
    for end in 1..=bytes.len() {
        match bytes.get(end) {
            Some(b'/') | None => {}
            Some(b'%' | b'\\' | b'.' | b';') => {
                special = true;
                continue;
            }
            Some(_) => continue,
        }
        let raw = &path[start..end];
        if raw.is_empty() && end < bytes.len() {
            return Err(Refusal::BadPath);
        }
        let auth = if special {
            let seg = decode(raw).ok_or(Refusal::BadPath)?;
            if seg == "." || seg == ".." {
                return Err(Refusal::BadPath);
            }
            // Java servers drop `;params` from a segment: judge what they see.
            let name = seg.split(';').next().unwrap_or("");
            name.eq_ignore_ascii_case("auth")
        } else {
            raw.eq_ignore_ascii_case("auth")
        };
        if auth && (index == 3 || index == 4) {
            return Err(Refusal::AuthPath);
        }
        start = end + 1;
        index += 1;
        special = false;
    }
    Ok(api)
}

/// Percent-decodes a segment (without allocating when there is nothing to
/// decode); `None` if it hides a separator (`/`, `\`), a NUL, or is not
/// valid UTF-8.
fn decode(raw: &str) -> Option<Cow<'_, str>> {
    if raw.contains('\\') {
        return None;
    }
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let s = String::from_utf8(percent_decode(raw.as_bytes())?).ok()?;
    if s.contains(['/', '\\', '\0']) {
        return None;
    }
    Some(Cow::Owned(s))
}

fn percent_decode(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Exactly two hex digits (`u8::from_str_radix` would take `+a`).
            let mut v = [0u8; 1];
            hex::decode_to_slice(b.get(i + 1..i + 3)?, &mut v).ok()?;
            out.push(v[0]);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots() {
        assert_eq!(classify("/km/api/latest/content").ok(), Some(Api::Content));
        assert_eq!(classify("/srt/api/v1/search/question").ok(), Some(Api::Search));
        assert_eq!(classify("/km/api/latest/content/").ok(), Some(Api::Content));
        assert!(matches!(classify("/"), Err(Refusal::NotFound)));
        assert!(matches!(classify("/km/apix"), Err(Refusal::NotFound)));
        assert!(matches!(classify("/admin"), Err(Refusal::NotFound)));
    }

    #[test]
    fn auth_in_any_spelling_is_refused() {
        for p in [
            "/km/api/latest/auth/integration/authorize",
            "/km/api/v1/AUTH/authorize",
            "/km/api/auth/integration/authorize",
            "/km/api/latest/%61uth/authorize",
            "/km/api/latest/auth;jsessionid=1/authorize",
        ] {
            assert!(matches!(classify(p), Err(Refusal::AuthPath)), "{p}");
        }
        for p in [
            "/km/api/latest/../auth/authorize",
            "/km/api/latest/%2e%2e/auth/authorize",
            "/km/api/latest/content/%2F../auth",
            "/km/api//latest/auth/authorize",
            "/km/api/latest/.%2e/x",
            "/km/api/latest\\..\\auth",
            "/km/api/latest/%zz",
            "/km/api/latest/%+a",
            "/km/api/latest/%-1",
        ] {
            assert!(matches!(classify(p), Err(Refusal::BadPath)), "{p}");
        }
        assert!(classify("/km/api/latest/content/auth").is_ok());
    }
}
