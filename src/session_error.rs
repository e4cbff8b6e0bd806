//! Recognising "log in again" answers from Knowledge Advanced.
//!
//! The upstream reports an expired or invalid session with an error body
//! whose `errorCode` starts with `OK-SESSION` (or `OK-GEN0003` on search),
//! as JSON (`{"error":{"errorCode":..}}`) or XML (`<errorCode>..</errorCode>`),
//! under varying HTTP statuses. Only the first [`PEEK_LIMIT`] bytes of a
//! non-2xx answer are looked at.

/// How much of an error body is read to look for the code.
use std::borrow::Cow;

pub const PEEK_LIMIT: usize = 64 * 1024;

/// Returns the `errorCode` of an Oracle-shaped error body, JSON or XML.
/// A body that starts like JSON is judged as JSON only: text inside it that
/// looks like XML (an echoed query, say) never counts.
pub fn error_code(body: &[u8]) -> Option<Cow<'_, str>> {
    let text = std::str::from_utf8(body).ok()?;
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        json_code(trimmed)
    } else {
        xml_code(text).map(Cow::Borrowed)
    }
}

/// True when `body` carries an `errorCode` starting with one of `prefixes`.
pub fn is_session_error(body: &[u8], prefixes: &[String]) -> bool {
    error_code(body).is_some_and(|code| prefixes.iter().any(|p| code.starts_with(p.as_str())))
}

fn json_code(text: &str) -> Option<Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct Outer<'a> {
        #[serde(borrow)]
        error: Option<Inner<'a>>,
        #[serde(rename = "errorCode", borrow)]
        error_code: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Inner<'a> {
        #[serde(rename = "errorCode", borrow)]
        error_code: Option<Cow<'a, str>>,
    }
    let outer: Outer<'_> = serde_json::from_str(text).ok()?;
    outer.error.and_then(|e| e.error_code).or(outer.error_code)
}

fn xml_code(text: &str) -> Option<&str> {
    let start = text.find("<errorCode>")? + "<errorCode>".len();
    let len = text[start..].find('<')?;
    Some(text[start..start + len].trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codes() -> Vec<String> {
        vec!["OK-SESSION".into(), "OK-GEN0003".into()]
    }

    #[test]
    fn oracle_json_and_xml() {
        let json = br#"{"error":{"title":"Session Token has expired","errorPath":null,"errorCode":"OK-SESSION0003","type":"VALIDATION","detail":null},"errorDetails":[]}"#;
        assert!(is_session_error(json, &codes()));
        let xml = br#"<?xml version="1.0"?><error><title>Session Token has expired</title><errorCode>OK-SESSION0003</errorCode></error>"#;
        assert!(is_session_error(xml, &codes()));
        assert!(is_session_error(br#"{"errorCode":"OK-GEN0003"}"#, &codes()));
        // Escaped characters and a byte-order mark.
        assert!(is_session_error(
            "\u{feff}{\"error\":{\"errorCode\":\"OK-SESSION\\u00300003\"}}".as_bytes(),
            &codes()
        ));
    }

    #[test]
    fn other_errors_and_junk_are_not_session_errors() {
        assert!(!is_session_error(br#"{"error":{"errorCode":"OK-SEC0012"}}"#, &codes()));
        assert!(!is_session_error(b"<html>OK-SESSION0003</html>", &codes()));
        assert!(!is_session_error(br#"{"title":"OK-SESSION0003"}"#, &codes()));
        assert!(!is_session_error(&[0xff, 0xfe], &codes()));
        // XML-looking text inside a JSON body does not count.
        let echoed = br#"{"error":{"title":"No results for <errorCode>OK-SESSION0003</errorCode>","errorCode":null}}"#;
        assert!(!is_session_error(echoed, &codes()));
        assert!(!is_session_error(b"", &codes()));
    }

    proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = is_session_error(&body, &codes());
        }

        #[test]
        fn finds_any_code_in_either_shape(code in "[A-Z]{2}-[A-Z]{3,8}[0-9]{4}", title in "[^<>\"\\\\]{0,30}") {
            let json = serde_json::json!({"error": {"title": title, "errorCode": code}}).to_string();
            prop_assert_eq!(error_code(json.as_bytes()).map(|c| c.into_owned()), Some(code.clone()));
            let xml = format!("<error><title>{title}</title><errorCode>{code}</errorCode></error>");
            prop_assert_eq!(error_code(xml.as_bytes()).map(|c| c.into_owned()), Some(code.clone()));
            prop_assert_eq!(is_session_error(json.as_bytes(), &codes()), code.starts_with("OK-SESSION") || code.starts_with("OK-GEN0003"));
        }
    }
}
