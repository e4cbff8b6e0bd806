//! Which upstream a request belongs to, and which requests are refused
//! before anything is forwarded: outside the two API roots (404), the
//! authentication endpoints (403), raw non-ASCII bytes in the target, and
//! path shapes whose routing a Java servlet container could change (400).
//!
//! The path is judged as the upstream will read it. A servlet container
//! strips `;parameters` from every segment, percent-decodes, and resolves
//! `.`/`..` and empty segments before routing. Rather than reproduce one
//! container's reading, kmproxy refuses every path on which such a reading
//! could differ from the path as written: then the segment a servlet routes
//! on is the segment kmproxy judged, at the same index.

use http::Uri;

/// The API a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/km/api/...` → `base_url`.
    Content,
    /// `/srt/api/...` → `search_base_url`.
    Search,
}

/// Why a request target is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("only /km/api/ and /srt/api/ are served")]
    NotFound,
    #[error("the path contains dot segments, empty segments or encoded separators")]
    BadPath,
    #[error("authentication endpoints are not reachable through kmproxy")]
    AuthPath,
    #[error("the request target contains raw non-ASCII bytes")]
    RawBytes,
}

/// Classifies a request target (path as received, still percent-encoded,
/// and query).
///
/// `http::Uri` has already refused space, DEL and control bytes, and any
/// target that is not UTF-8; it lets UTF-8 above ASCII through, which is
/// refused here. The fragment never reaches a `Uri`.
pub fn classify(uri: &Uri) -> Result<Api, Refusal> {
    if uri.query().is_some_and(|q| !q.bytes().all(|b| b.is_ascii_graphic())) {
        return Err(Refusal::RawBytes);
    }
    let path = uri.path();
    let api = if path.starts_with("/km/api/") {
        Api::Content
    } else if path.starts_with("/srt/api/") {
        Api::Search
    } else if path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::NotFound);
    } else {
        return Err(Refusal::RawBytes);
    };
    // Segments: "", "km", "api", version, ... One pass over the bytes,
    // classed by a table; a segment with none of `%` `\` `.` `;` in it needs
    // no decoding, and a path without `%` allocates nothing. Callgrind, on a
    // standalone copy, for `/km/api/latest/content/answers/ABC-1?x=1` with
    // `uri.path()` and the query check: 620 instructions a call with the
    // table, 926 with a `match` arm for raw bytes; the version before (path
    // only, no raw-byte check): 726.
    let bytes = path.as_bytes();
    let (mut start, mut index, mut special) = (1, 1, false);
    for end in 1..=bytes.len() {
        match bytes.get(end).map(|&b| BYTE_CLASS[usize::from(b)]) {
            Some(PLAIN) => continue,
            Some(SPECIAL) => {
                special = true;
                continue;
            }
            Some(RAW) => return Err(Refusal::RawBytes),
            _ => {} // SLASH, or the end of the path.
        }
        let raw = &bytes[start..end];
        let auth = if special {
            judge(raw)?
        } else if raw.is_empty() && end < bytes.len() {
            // `//`: merged or refused by the container, shifting every index.
            return Err(Refusal::BadPath);
        } else {
            raw.eq_ignore_ascii_case(b"auth")
        };
        // `/km/api/auth/...` and `/km/api/{version}/auth/...`.
        if auth && (index == 3 || index == 4) {
            return Err(Refusal::AuthPath);
        }
        start = end + 1;
        index += 1;
        special = false;
    }
    Ok(api)
}

// What a path byte asks of the scan: part of an ordinary name; `%` `\`
// `.` `;` (the segment is judged under every reading); the end of a
// segment; space, control bytes, DEL or above ASCII. Plain `u8`s: an enum
// here costs 50 instructions a call (callgrind, as above).
const PLAIN: u8 = 0;
const SPECIAL: u8 = 1;
const SLASH: u8 = 2;
const RAW: u8 = 3;

static BYTE_CLASS: [u8; 256] = {
    let mut table = [RAW; 256];
    let mut b = b'!';
    while b <= b'~' {
        table[b as usize] = match b {
            b'/' => SLASH,
            b'%' | b'\\' | b'.' | b';' => SPECIAL,
            _ => PLAIN,
        };
        b += 1;
    }
    table
};

/// Judges a segment holding `%`, `\`, `.` or `;` under every reading a
/// container could give it: `Ok(true)` when one of them names `auth`, an
/// error when one of them is not an ordinary name (so routing could change).
fn judge(raw: &[u8]) -> Result<bool, Refusal> {
    if raw.contains(&b'\\') {
        // A separator on some containers (and on Windows), refused on others.
        return Err(Refusal::BadPath);
    }
    // The container routes on the name, the segment up to its first `;`
    // (`auth;jsessionid=1` is `auth`; `..;x` is `..`; `;x` is empty).
    let (name, params) = match raw.iter().position(|&b| b == b';') {
        Some(i) => (&raw[..i], &raw[i + 1..]),
        None => (raw, &b""[..]),
    };
    // Parameters are dropped, but a container that decodes before it strips
    // them must not find a separator in them either.
    let mut auth = false;
    readings(params, |params| {
        if params.iter().any(|&b| hides_separator(b)) {
            return Err(Refusal::BadPath);
        }
        Ok(())
    })?;
    readings(name, |name| {
        let trimmed = name.trim_ascii();
        if trimmed.is_empty() || trimmed.iter().all(|&b| b == b'.') {
            // Empty (`/;x/`), or a dot segment in any spelling (`..`, `%2e.`,
            // `..;x`, `.%20`): resolved away by the container.
            return Err(Refusal::BadPath);
        }
        // An encoded `;` (`%3b`) is refused, not read as a literal: Tomcat
        // and Jersey split parameters off before decoding (`auth%3bx` is the
        // name `auth;x`), but a container that decodes first reads `auth`,
        // and Jetty refuses `%3b` as an ambiguous path parameter. No API
        // path has a `;` in a name, so refusing both readings costs nothing.
        if name.iter().any(|&b| b == b';' || hides_separator(b)) {
            return Err(Refusal::BadPath);
        }
        auth |= is_auth(trimmed);
        Ok(())
    })?;
    Ok(auth)
}

/// Calls `judge` on `raw` and on each of its percent-decodings in turn.
///
/// One decoding is the servlet's; a second is what a path read twice (a
/// front server, then the servlet) sees: `%252e%252e` is `..` there. The
/// first decoding must succeed and be UTF-8 (a servlet refuses `%zz`); a
/// later one that fails leaves the reading as it is. A path without `%`
/// allocates nothing.
fn readings(raw: &[u8], mut judge: impl FnMut(&[u8]) -> Result<(), Refusal>) -> Result<(), Refusal> {
    judge(raw)?;
    if !raw.contains(&b'%') {
        return Ok(());
    }
    let mut reading = percent_decode(raw).ok_or(Refusal::BadPath)?;
    std::str::from_utf8(&reading).map_err(|_| Refusal::BadPath)?;
    for _ in 0..MAX_READINGS {
        judge(&reading)?;
        match reading.contains(&b'%').then(|| percent_decode(&reading)).flatten() {
            Some(next) => reading = next,
            None => return Ok(()),
        }
    }
    // Still more to decode: no API path is encoded this many times, and
    // following it further would cost the square of its depth per call.
    Err(Refusal::BadPath)
}

/// Decodings judged: the servlet's, a front server's, and one more.
const MAX_READINGS: usize = 3;

/// A decoded byte that changes where a path is split or cut: `/` and `\`
/// (encoded separators), NUL and the other control bytes (which end a name
/// early in some containers).
fn hides_separator(b: u8) -> bool {
    matches!(b, b'/' | b'\\') || b.is_ascii_control()
}

/// `auth` in any case, also with a suffix (`auth.json`: Jersey's
/// `UriConnegFilter` and Spring's suffix pattern match route it as `auth`).
fn is_auth(name: &[u8]) -> bool {
    let stem = name.split(|&b| b == b'.').next().unwrap_or(name);
    stem.trim_ascii().eq_ignore_ascii_case(b"auth")
}

/// Percent-decodes; `None` for a `%` not followed by exactly two hex digits.
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
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn deeply_nested_encodings_are_refused_at_once() {
        let deep = format!("/km/api/latest/%{}61uth/authorize", "25".repeat(30_000));
        let uri: http::Uri = deep.parse().expect("uri");
        let started = std::time::Instant::now();
        assert_eq!(classify(&uri), Err(Refusal::BadPath));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let uri: http::Uri = "/km/api/latest/content/100%25".parse().expect("uri");
        assert!(classify(&uri).is_ok());
    }

    fn check(target: &str) -> Result<Api, Refusal> {
        classify(&Uri::try_from(target).unwrap_or_else(|e| panic!("{target}: {e}")))
    }

    fn assert_all(expected: Refusal, targets: &[&str]) {
        for t in targets {
            assert_eq!(check(t), Err(expected), "{t}");
        }
    }

    #[test]
    fn roots() {
        assert_eq!(check("/km/api/latest/content"), Ok(Api::Content));
        assert_eq!(check("/srt/api/v1/search/question"), Ok(Api::Search));
        assert_eq!(check("/km/api/latest/content/"), Ok(Api::Content));
        assert_eq!(check("/km/api/"), Ok(Api::Content));
        assert_all(
            Refusal::NotFound,
            &["/", "/km/apix", "/admin", "/km/api", "/KM/api/latest/auth/x"],
        );
        // Not forwarded, so not judged further.
        assert_all(
            Refusal::NotFound,
            &["/x/../km/api/latest/auth/authorize", "/km;x/api/latest/auth"],
        );
    }

    #[test]
    fn ordinary_paths_pass() {
        for t in [
            "/km/api/latest/content/answers/ABC-1?x=1",
            "/km/api/latest/content/auth",
            "/km/api/latest/content/auth/x",
            "/km/api/latest/content/answers/ABC-1;jsessionid=1",
            "/km/api/v1/content/file.pdf",
            "/km/api/v1.0/content/a..b",
            "/km/api/latest/content/%41BC%20x?q=%C3%A9&a=b",
            "/km/api/latest/content/100%25",
            "/km/api/latest/authors",
            "/srt/api/latest/search/question?question=what+is+auth",
            "/km/api/latest/content?auth=../x;y",
        ] {
            assert!(check(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn auth_in_any_spelling_is_refused() {
        assert_all(
            Refusal::AuthPath,
            &[
                "/km/api/latest/auth/integration/authorize",
                "/km/api/v1/AUTH/authorize",
                "/km/api/auth/integration/authorize",
                "/km/api/latest/%61uth/authorize",
                "/km/api/latest/auth;jsessionid=1/authorize",
                "/km/api/latest;x/auth/authorize",
                "/srt/api/latest/auth/authorize",
                "/km/api/latest/auth",
                "/km/api/latest/auth.json",
                "/km/api/latest/auth%20/authorize",
                "/km/api/latest/%2561uth/authorize",
            ],
        );
    }

    #[test]
    fn dot_segments_in_any_spelling_are_refused() {
        assert_all(
            Refusal::BadPath,
            &[
                "/km/api/latest/../auth/authorize",
                "/km/api/latest/%2e%2e/auth/authorize",
                "/km/api/latest/%2E%2e/auth/authorize",
                "/km/api/latest/.%2e/x",
                "/km/api/latest/%2e./x",
                "/km/api/latest/./auth",
                "/km/api/latest/%2e/auth",
                // The attacker's two: `..;/` resolves, `;` shifts the index.
                "/km/api/latest/content/..;/auth/authorize",
                "/km/api/latest/content/..;x/auth/authorize",
                "/km/api/latest/content/.;/auth/authorize",
                "/km/api/latest/content/.;x=1/x",
                "/km/api/latest/content/%2e%2e;/auth/authorize",
                "/km/api/latest/content/..%20/auth/authorize",
                "/km/api/latest/content/.../x",
                "/km/api/latest/content/%252e%252e/auth/authorize",
                "/km/api/latest/x/auth.%252f..%252f..%252fauth/authorize",
                "/km/api/latest/content/..",
            ],
        );
    }

    #[test]
    fn empty_segments_are_refused() {
        assert_all(
            Refusal::BadPath,
            &[
                "/km/api//latest/auth/authorize",
                "/km/api//auth/x",
                "/km/api/latest/;/auth/authorize",
                "/km/api/latest/;x/auth/authorize",
                "/km/api/;/latest/auth/authorize",
                "/km/api/latest/content/;jsessionid=1",
                "/km/api/latest/%20/auth",
                "/km/api/latest/content//",
            ],
        );
    }

    #[test]
    fn encoded_separators_are_refused() {
        assert_all(
            Refusal::BadPath,
            &[
                "/km/api/latest/content/%2F../auth",
                "/km/api/latest/content%2f..%2f..%2fauth/authorize",
                "/km/api/latest\\..\\auth",
                "/km/api/latest/content/%5c..%5cauth",
                "/km/api/latest/%00auth",
                "/km/api/latest/auth%00/authorize",
                "/km/api/latest/a%09",
                "/km/api/latest/auth%3b/authorize",
                "/km/api/latest/x%3bjsessionid=1",
                "/km/api/latest/content/x;a%2f..%2f..%2fauth",
                "/km/api/latest/content/x%252f..",
                "/km/api/latest/%zz",
                "/km/api/latest/%+a",
                "/km/api/latest/%-1",
                "/km/api/latest/%2",
                "/km/api/latest/%c0%ae%c0%ae/auth",
                "/km/api/latest/%ff",
                "/km/api/latest/%u002e%u002e/auth",
            ],
        );
    }

    #[test]
    fn raw_non_ascii_is_refused() {
        // http::Uri takes UTF-8 above ASCII in the path and the query ...
        assert_all(
            Refusal::RawBytes,
            &[
                "/km/api/latest/content/é",
                "/km/api/latest/é/../auth",
                "/km/api/latest/content?q=é",
                "/admin/é",
                "/?é",
            ],
        );
        // ... and refuses everything else a client could send raw: control
        // bytes, DEL, space, and bytes that are not UTF-8.
        for raw in [
            &b"/km/api/latest/a\x00"[..],
            b"/km/api/latest/a\x01",
            b"/km/api/latest/a\x7f",
            b"/km/api/latest/a b",
            b"/km/api/latest/a?q=\x0a",
            b"/km/api/latest/\xff",
            b"/km/api/latest/a?q=\xc3",
        ] {
            assert!(Uri::try_from(raw).is_err(), "{raw:?}");
        }
    }

    // A plain model of a servlet container's reading of a path: the
    // segments it routes on, or `None` where it answers 400 itself.
    #[derive(Debug, Clone, Copy)]
    struct Container {
        /// Tomcat and Jersey strip `;params` before decoding; some decode first.
        decode_first: bool,
        /// 1 for the servlet alone; 2 behind a front server that decodes too.
        decodings: usize,
    }

    const TOMCAT: Container = Container {
        decode_first: false,
        decodings: 1,
    };
    const CONTAINERS: [Container; 3] = [
        TOMCAT,
        Container {
            decode_first: true,
            decodings: 1,
        },
        Container {
            decode_first: false,
            decodings: 2,
        },
    ];

    impl Container {
        /// One segment as the container names it, before dot segments and
        /// empty segments are resolved.
        fn name(self, raw: &str) -> Option<Vec<u8>> {
            let strip = |s: &[u8]| s.split(|&b| b == b';').next().unwrap_or(s).to_vec();
            let mut seg = raw.as_bytes().to_vec();
            if !self.decode_first {
                seg = strip(&seg);
            }
            for round in 0..self.decodings {
                match percent_decode(&seg) {
                    Some(d) => seg = d,
                    None if round == 0 => return None,
                    None => break,
                }
                if seg.iter().any(|&b| matches!(b, b'/' | b'\\' | 0)) {
                    return None;
                }
            }
            if self.decode_first {
                seg = strip(&seg);
            }
            Some(seg)
        }

        /// Each raw segment named, nothing resolved: what routing would be
        /// if normalisation changed nothing.
        fn named(self, path: &str) -> Option<Vec<Vec<u8>>> {
            path.strip_prefix('/')?.split('/').map(|s| self.name(s)).collect()
        }

        /// The path the container routes: named, then `.` and `..`
        /// resolved and empty segments merged (a trailing one kept).
        fn reading(self, path: &str) -> Option<Vec<Vec<u8>>> {
            if path.contains('\\') {
                return None;
            }
            let named = self.named(path)?;
            let last = named.len() - 1;
            let mut out: Vec<Vec<u8>> = Vec::new();
            for (i, seg) in named.into_iter().enumerate() {
                let dot = matches!(&seg[..], b"." | b"..");
                match &seg[..] {
                    b"." => {}
                    b".." => {
                        // Above the root: the container refuses.
                        out.pop()?;
                    }
                    b"" if i < last => {}
                    _ => out.push(seg),
                }
                // `/a/..` is `/`: the trailing slash stays.
                if dot && i == last {
                    out.push(Vec::new());
                }
            }
            Some(out)
        }
    }

    /// `/{km,srt}/api/auth/...` or `/{km,srt}/api/*/auth/...`.
    fn under_auth(segs: &[Vec<u8>]) -> bool {
        let is = |i: usize, s: &str| segs.get(i).is_some_and(|g| g.eq_ignore_ascii_case(s.as_bytes()));
        (is(0, "km") || is(0, "srt")) && is(1, "api") && (is(2, "auth") || is(3, "auth"))
    }

    const PIECES: &[&str] = &[
        "/",
        "/",
        "/",
        "/",
        "..",
        ".",
        ";",
        ";x=1",
        "%2e",
        "%2E",
        "%2f",
        "%5c",
        "\\",
        "%3b",
        "%25",
        "%20",
        "%00",
        "auth",
        "AUTH",
        "%61uth",
        "content",
        "latest",
        "v1",
        "km",
        "api",
        "srt",
        "integration",
        "authorize",
        "a",
        "Z",
        "0",
        "7",
    ];
    const PREFIXES: &[&str] = &["/km/api/", "/srt/api/", "/km/api/latest/", "/", "/km/", "/srt/api", ""];

    fn tricky_path() -> impl Strategy<Value = String> {
        (
            prop::sample::select(PREFIXES),
            prop::collection::vec(prop::sample::select(PIECES), 0..12),
        )
            .prop_map(|(prefix, pieces)| format!("{prefix}{}", pieces.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn classify_agrees_with_the_servlet_reading(path in tricky_path()) {
            let Ok(uri) = Uri::try_from(path.as_str()) else { return Ok(()) };
            let verdict = classify(&uri);
            for container in CONTAINERS {
                let reading = container.reading(&path);
                // (a) What is forwarded routes as written, and not to auth.
                if verdict.is_ok() {
                    prop_assert_eq!(&reading, &container.named(&path), "{:?} {:?}", path, container);
                    prop_assert!(!reading.as_deref().is_some_and(under_auth), "{:?} {:?}", path, container);
                }
                // (b) What a servlet would route to auth is refused.
                if reading.as_deref().is_some_and(under_auth) {
                    let judged = path.starts_with("/km/api/") || path.starts_with("/srt/api/");
                    let expected: &[Refusal] =
                        if judged { &[Refusal::AuthPath, Refusal::BadPath] } else { &[Refusal::NotFound] };
                    prop_assert!(
                        verdict.is_err_and(|r| expected.contains(&r)),
                        "{:?} {:?} {:?}", path, container, verdict
                    );
                }
            }
        }

        #[test]
        fn classify_never_panics_on_bytes(prefix in prop::sample::select(PREFIXES), tail in prop::collection::vec(any::<u8>(), 0..48)) {
            let mut raw = prefix.as_bytes().to_vec();
            raw.extend(tail);
            if let Ok(uri) = Uri::try_from(&raw[..]) {
                let _ = classify(&uri);
            }
        }

        #[test]
        fn classify_never_panics_on_strings(prefix in prop::sample::select(PREFIXES), tail in "\\PC{0,48}") {
            if let Ok(uri) = Uri::try_from(format!("{prefix}{tail}")) {
                let _ = classify(&uri);
            }
        }
    }
}
