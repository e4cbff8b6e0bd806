//! Fuzzes session-error recognition on arbitrary upstream error bodies:
//!
//! - `error_code` and `is_session_error` never panic;
//! - a code `error_code` returns unescaped (borrowed) appears verbatim in
//!   the body;
//! - `is_session_error` with the default prefixes agrees with
//!   `error_code(..)` starting with one of them.
//!
//! Input: the raw body bytes.
#![no_main]

use kmproxy::session_error::{error_code, is_session_error};
use libfuzzer_sys::fuzz_target;

/// The default `session_error_codes`.
const PREFIXES: [&str; 2] = ["OK-SESSION", "OK-GEN0003"];

fuzz_target!(|body: &[u8]| {
    let prefixes: Vec<String> = PREFIXES.iter().map(|p| (*p).to_owned()).collect();
    let code = error_code(body);
    if let Some(std::borrow::Cow::Borrowed(code)) = &code {
        let needle = code.as_bytes();
        assert!(
            needle.is_empty() || body.windows(needle.len()).any(|w| w == needle),
            "code {code:?} is not in the body"
        );
    }
    let expected = code.as_deref().is_some_and(|c| PREFIXES.iter().any(|p| c.starts_with(p)));
    assert_eq!(
        is_session_error(body, &prefixes),
        expected,
        "is_session_error disagrees with error_code = {code:?}"
    );
});
