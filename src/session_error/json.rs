//! Oracle's JSON error documents. The code is read only from the places a
//! document of one of these shapes keeps it, never from text elsewhere:
//!
//! | shape | code |
//! |---|---|
//! | `{"error":{"errorCode":C,..},..}` (content API) | `error.errorCode` |
//! | `{"error":[{"code":C,..},..]}` | `error[0].code` |
//! | `{"errors":[{"code":C,..},..]}` (search API, Customer Portal) | `errors[0].code` |
//! | `{"errorCode":C,..}` | `errorCode` |
//!
//! Only the first element of a list is read, as Oracle's Customer Portal
//! reads `errors[0].code`.

use serde_json::Value;

/// The code of a JSON error document, or `None` when `text` is not one.
pub fn code(text: &[u8]) -> Option<String> {
    let text = trim_start(text);
    if text.first() != Some(&b'{') {
        return None;
    }
    let doc: Value = serde_json::from_slice(text).ok()?;
    let error = doc.get("error");
    error
        .and_then(|e| e.get("errorCode")?.as_str())
        .or_else(|| error.and_then(first_code))
        .or_else(|| doc.get("errors").and_then(first_code))
        .or_else(|| doc.get("errorCode")?.as_str())
        .map(str::to_owned)
}

/// `list[0].code`, when `list` is a list.
fn first_code(list: &Value) -> Option<&str> {
    list.get(0)?.get("code")?.as_str()
}

/// `text` without a leading byte-order mark and JSON whitespace.
pub fn trim_start(text: &[u8]) -> &[u8] {
    let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
    let skip = text
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    &text[skip..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape() {
        let c = |s: &str| code(s.as_bytes());
        assert_eq!(
            c(r#"{"error":{"title":"t","errorCode":"OK-SESSION0003"}}"#).as_deref(),
            Some("OK-SESSION0003")
        );
        assert_eq!(
            c(r#"{"errors":[{"code":"OK-GEN0003","title":"x"}]}"#).as_deref(),
            Some("OK-GEN0003")
        );
        assert_eq!(c(r#"{"error":[{"code":"OK-GEN0003"}]}"#).as_deref(), Some("OK-GEN0003"));
        assert_eq!(c(r#" {"errorCode":"OK-GEN0003"}"#).as_deref(), Some("OK-GEN0003"));
        assert_eq!(
            c("\u{feff}{\"error\":{\"errorCode\":\"OK-SESSION\\u0030003\"}}").as_deref(),
            Some("OK-SESSION0003")
        );
    }

    #[test]
    fn text_elsewhere_never_counts() {
        let c = |s: &str| code(s.as_bytes());
        assert_eq!(c(r#"{"title":"OK-SESSION0003","items":[]}"#), None);
        assert_eq!(
            c(r#"{"error":{"title":"<errorCode>OK-SESSION0003</errorCode>"}}"#),
            None
        );
        assert_eq!(c(r#"{"errors":[{"title":"OK-GEN0003"}]}"#), None);
        assert_eq!(c(r#"{"errors":[{"code":7}]}"#), None);
        assert_eq!(c(r#"{"items":[{"errors":[{"code":"OK-GEN0003"}]}]}"#), None);
        assert_eq!(c(r#""OK-SESSION0003""#), None);
        assert_eq!(c(r#"{"errors":[{"code":"OK-GEN0003""#), None); // not a whole document
    }
}
