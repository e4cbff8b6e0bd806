//! Fuzzes session-error recognition on arbitrary upstream answers:
//!
//! - `error_code`, `is_session_error`, `Reading::is_session_error` and
//!   `Reading::opening` never panic, whatever the body, `Content-Type` and
//!   `Content-Encoding` (so a corrupt or hostile gzip, deflate or brotli
//!   stream is harmless);
//! - a code `error_code` returns unescaped (borrowed) appears verbatim in
//!   the body;
//! - `is_session_error` with the default prefixes agrees with
//!   `error_code(..)` starting with one of them, and with a `Reading` of an
//!   untyped, unencoded answer;
//! - an identity body said to open an `errors` document starts with `{`.
//!
//! Input: one byte choosing the content type (low nibble) and the coding
//! (high nibble), then the raw body bytes.
#![no_main]

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use kmproxy::session_error::{error_code, is_session_error, Opening, Reading};
use libfuzzer_sys::fuzz_target;

/// The default `session_error_codes`.
const PREFIXES: [&str; 2] = ["OK-SESSION", "OK-GEN0003"];

const TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/xml"),
    Some("text/html"),
];
const CODINGS: [Option<&str>; 4] = [None, Some("gzip"), Some("deflate"), Some("br")];

fuzz_target!(|input: &[u8]| {
    let Some((&choice, body)) = input.split_first() else {
        return;
    };
    let prefixes: Vec<String> = PREFIXES.iter().map(|p| (*p).to_owned()).collect();
    let code = error_code(body);
    if let Some(std::borrow::Cow::Borrowed(code)) = &code {
        let needle = code.as_bytes();
        assert!(
            needle.is_empty() || body.windows(needle.len()).any(|w| w == needle),
            "code {code:?} is not in the body"
        );
    }
    let expected = code
        .as_deref()
        .is_some_and(|c| PREFIXES.iter().any(|p| c.starts_with(p)));
    assert_eq!(
        is_session_error(body, &prefixes),
        expected,
        "is_session_error disagrees with error_code = {code:?}"
    );
    let untyped = Reading::of(&HeaderMap::new()).expect("an untyped answer is read");
    assert_eq!(untyped.is_session_error(body, &prefixes), expected);

    let mut headers = HeaderMap::new();
    let (ty, coding) = (TYPES[usize::from(choice & 3)], CODINGS[usize::from(choice >> 4 & 3)]);
    if let Some(t) = ty {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(t));
    }
    if let Some(c) = coding {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(c));
    }
    let Some(reading) = Reading::of(&headers) else {
        assert_eq!(ty, Some("text/html"), "only HTML is refused here");
        return;
    };
    let _ = reading.is_session_error(body, &prefixes);
    let opening = reading.opening(body);
    if coding.is_none() && opening == Opening::Errors {
        let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
        assert!(body.trim_ascii_start().starts_with(b"{"));
    }
});
