//! The `kmauthtoken` header: parsing what a caller sent and writing what the
//! upstream gets.
//!
//! The upstream value is a JSON object. Precedence, highest first: kmproxy's
//! `siteName` and tokens; the caller's non-secret fields ([`CALLER_FIELDS`],
//! each with the JSON type the caller gave it: Oracle's own clients send
//! `interfaceId` as a number and `captureAnalytics` as a boolean); the
//! configured `kmauthtoken_extra`; the configured `locale` as `localeId`.
//! A principal's value is built once per token ([`Prefix::finish`] with no
//! caller fields); only a call that brings its own `kmauthtoken` pays for a
//! merge, and the caller's values are turned into JSON text once, when
//! parsed, so the merge only appends strings.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::value::RawValue;

/// The header's name.
pub const HEADER: HeaderName = HeaderName::from_static("kmauthtoken");

/// Caller fields kmproxy keeps, each with the JSON type the caller gave it;
/// every other field a caller sends (tokens above all) is dropped.
pub const CALLER_FIELDS: &[&str] = &[
    "localeId",
    "knowledgeInteractionId",
    "interactionIdGenerated",
    "referrer",
    "querySource",
    "appId",
    "interfaceId",
    "captureAnalytics",
    "billableSessionId",
    "requiresBillable",
    "clientIP",
];

/// Largest caller `kmauthtoken` accepted, in bytes.
pub const MAX_CALLER_LEN: usize = 8 * 1024;

/// Longest `knowledgeInteractionId` the upstream accepts.
pub const MAX_INTERACTION_ID: usize = 64;

/// Why a caller's `kmauthtoken` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallerTokenError {
    #[error("kmauthtoken is longer than {MAX_CALLER_LEN} bytes")]
    TooLong,
    #[error("kmauthtoken is not a JSON object")]
    NotJson,
    #[error("kmauthtoken field `{0}` must be a string, number, boolean or null")]
    NotScalar(&'static str),
    #[error("knowledgeInteractionId is longer than {MAX_INTERACTION_ID} characters")]
    InteractionIdTooLong,
}

/// The non-secret fields a caller sent, in [`CALLER_FIELDS`] order, each
/// as the JSON text of its value (visible ASCII, ready to be written).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallerFields(Vec<(&'static str, Box<str>)>);

impl CallerFields {
    /// Parses a caller's header value, keeping only [`CALLER_FIELDS`], each
    /// a string, number, boolean or `null` as sent; an object or a list
    /// there is refused. Token fields are ignored (logged at debug when
    /// they carry a value; an empty or `null` one, as the Customer Portal
    /// sends, silently).
    pub fn parse(raw: &[u8]) -> Result<Self, CallerTokenError> {
        if raw.len() > MAX_CALLER_LEN {
            return Err(CallerTokenError::TooLong);
        }
        // Values as the caller wrote them: a number keeps its exact text.
        let map: BTreeMap<String, &RawValue> = serde_json::from_slice(raw).map_err(|_| CallerTokenError::NotJson)?;
        let mut out = Vec::new();
        for &name in CALLER_FIELDS {
            if let Some(value) = map.get(name) {
                out.push((name, json_text(name, value)?));
            }
        }
        let ignored = || {
            TOKEN_FIELDS
                .iter()
                .filter(|f| map.get(**f).is_some_and(|v| carries_value(v)))
        };
        if ignored().next().is_some() {
            tracing::debug!(fields = ?ignored().collect::<Vec<_>>(), "ignored the caller's own kmauthtoken token fields");
        }
        Ok(Self(out))
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| *k == name)
    }

    /// True when the caller sent its own `knowledgeInteractionId` (which
    /// then always wins over a managed one).
    pub fn has_interaction(&self) -> bool {
        self.has("knowledgeInteractionId")
    }

    /// These fields plus a managed interaction: `knowledgeInteractionId`
    /// and `interactionIdGenerated: "true"`, replacing any flag the caller
    /// sent, still in [`CALLER_FIELDS`] order.
    pub fn with_interaction(mut self, id: &str) -> Self {
        self.0
            .retain(|(k, _)| !matches!(*k, "knowledgeInteractionId" | "interactionIdGenerated"));
        let mut quoted = String::with_capacity(id.len() + 2);
        push_json_str(&mut quoted, id);
        self.0.push(("knowledgeInteractionId", quoted.into_boxed_str()));
        self.0.push(("interactionIdGenerated", "\"true\"".into()));
        let rank = |k: &str| CALLER_FIELDS.iter().position(|f| *f == k);
        self.0.sort_by_key(|(k, _)| rank(k));
        self
    }

    /// True when the caller sent none of the kept fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The fields that carry kmproxy's site and tokens: never taken from a caller.
const TOKEN_FIELDS: &[&str] = crate::config::RESERVED_KMAUTHTOKEN_FIELDS;

/// A token field worth a debug line: anything but `""` and `null`.
fn carries_value(v: &RawValue) -> bool {
    !matches!(v.get(), "null" | "\"\"")
}

/// The JSON text of a kept field's value (visible ASCII), or why it is refused.
fn json_text(name: &'static str, value: &RawValue) -> Result<Box<str>, CallerTokenError> {
    let raw = value.get();
    match raw.as_bytes().first() {
        Some(b'"') => {
            let s: String = serde_json::from_str(raw).map_err(|_| CallerTokenError::NotJson)?;
            if name == "knowledgeInteractionId" && s.chars().count() > MAX_INTERACTION_ID {
                return Err(CallerTokenError::InteractionIdTooLong);
            }
            // Re-escaped, so that the header stays visible ASCII.
            let mut out = String::with_capacity(s.len() + 2);
            push_json_str(&mut out, &s);
            Ok(out.into_boxed_str())
        }
        Some(b'{' | b'[') | None => Err(CallerTokenError::NotScalar(name)),
        Some(_) if name == "knowledgeInteractionId" && raw.len() > MAX_INTERACTION_ID => {
            Err(CallerTokenError::InteractionIdTooLong)
        }
        // A number, `true`, `false` or `null`: ASCII, kept as written, once
        // it is known to be one a JSON parser can hold (not `1e400`).
        Some(_) => match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(_) => Ok(raw.into()),
            Err(_) => Err(CallerTokenError::NotJson),
        },
    }
}

/// The token part of a principal's `kmauthtoken`: `{"siteName":..,` plus
/// the tokens, not yet closed. Secret, since it holds tokens.
pub struct Prefix(SecretString);

impl std::fmt::Debug for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prefix([REDACTED])")
    }
}

/// The configured, token-independent fields.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// `kmauthtoken_extra`, in config order.
    pub extra: Vec<(String, String)>,
    /// The configured `locale`.
    pub locale: String,
}

impl Prefix {
    /// Starts a value holding `siteName` and the tokens.
    pub fn new(site_name: &str, integration: &str, user: Option<&str>) -> Self {
        let mut s = String::with_capacity(64 + integration.len() + user.map_or(0, str::len));
        s.push('{');
        push_field(&mut s, "siteName", site_name);
        push_field(&mut s, "integrationUserToken", integration);
        if let Some(u) = user {
            push_field(&mut s, "userToken", u);
        }
        Self(SecretString::from(s))
    }

    /// Completes the value with the caller's fields, then the configured ones.
    pub fn finish(&self, caller: &CallerFields, defaults: &Defaults) -> HeaderValue {
        let prefix = self.0.expose_secret();
        let mut s = String::with_capacity(prefix.len() + 128);
        s.push_str(prefix);
        for (k, v) in &caller.0 {
            push_json_str(&mut s, k);
            s.push(':');
            s.push_str(v);
            s.push(',');
        }
        for (k, v) in &defaults.extra {
            if !caller.has(k) {
                push_field(&mut s, k, v);
            }
        }
        let has_locale = caller.has("localeId") || defaults.extra.iter().any(|(k, _)| k == "localeId");
        if !has_locale {
            push_field(&mut s, "localeId", &defaults.locale);
        }
        s.pop(); // the trailing comma
        s.push('}');
        // JSON from serde_json escapes every control character, so the
        // value is always a valid header value; fall back defensively.
        let mut v = HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("{}"));
        v.set_sensitive(true);
        v
    }
}

/// Appends `"key":"value",` with JSON escaping (non-ASCII escaped too, so
/// the header stays visible ASCII).
fn push_field(s: &mut String, key: &str, value: &str) {
    push_json_str(s, key);
    s.push(':');
    push_json_str(s, value);
    s.push(',');
}

fn push_json_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 || (c as u32) >= 0x7f => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(s, "\\u{unit:04x}");
                }
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn defaults() -> Defaults {
        Defaults {
            extra: vec![("interfaceId".into(), "1".into()), ("appId".into(), "cfg".into())],
            locale: "en_US".into(),
        }
    }

    fn parse(v: &HeaderValue) -> serde_json::Map<String, Value> {
        serde_json::from_slice(v.as_bytes()).expect("valid JSON")
    }

    #[test]
    fn caller_tokens_are_dropped_and_fields_kept() {
        let caller = CallerFields::parse(
            br#"{"integrationUserToken":"forged","userToken":"forged","siteName":"evil","localeId":"fr_FR","knowledgeInteractionId":"K1","other":"x"}"#,
        )
        .expect("parses");
        let v = Prefix::new("SITE", "INT", Some("USR")).finish(&caller, &defaults());
        let m = parse(&v);
        assert_eq!(m["siteName"], "SITE");
        assert_eq!(m["integrationUserToken"], "INT");
        assert_eq!(m["userToken"], "USR");
        assert_eq!(m["localeId"], "fr_FR");
        assert_eq!(m["knowledgeInteractionId"], "K1");
        assert_eq!(m["interfaceId"], "1");
        assert!(!m.contains_key("other"));
        assert!(v.is_sensitive());
    }

    #[test]
    fn oracle_clients_typed_fields_keep_their_types() {
        let sent = json!({"interfaceId":1,"captureAnalytics":true,"billableSessionId":"b1","requiresBillable":false,
            "clientIP":"10.0.0.1","userToken":"","integrationUserToken":null,"referrer":null,"querySource":2.5});
        let caller = CallerFields::parse(sent.to_string().as_bytes()).expect("parses");
        let m = parse(&Prefix::new("S", "I", None).finish(&caller, &defaults()));
        for k in [
            "interfaceId",
            "captureAnalytics",
            "billableSessionId",
            "requiresBillable",
            "clientIP",
            "referrer",
            "querySource",
        ] {
            assert_eq!(m[k], sent[k], "{k}");
        }
        assert!(!m.contains_key("userToken"));
        assert_eq!(m["integrationUserToken"], "I");
        assert_eq!(m["appId"], "cfg");
        assert_eq!(m["localeId"], "en_US");
        // A number keeps the text it was written with.
        let caller = CallerFields::parse(br#"{"interfaceId": 1.50, "clientIP":"\u00e9"}"#).expect("parses");
        let v = Prefix::new("S", "I", None).finish(&caller, &defaults());
        let text = v.to_str().expect("visible ASCII");
        assert!(
            text.contains(r#""interfaceId":1.50,"#) && text.contains(r#""clientIP":"\u00e9""#),
            "{text}"
        );
    }

    #[test]
    fn caller_fields_win_over_extra_and_locale_is_last() {
        let caller = CallerFields::parse(br#"{"appId":"mine"}"#).expect("parses");
        let m = parse(&Prefix::new("S", "I", None).finish(&caller, &defaults()));
        assert_eq!(m["appId"], "mine");
        assert_eq!(m["localeId"], "en_US");
        assert!(!m.contains_key("userToken"));
        // A caller's null is the caller's value too.
        let caller = CallerFields::parse(br#"{"localeId":null}"#).expect("parses");
        assert_eq!(
            parse(&Prefix::new("S", "I", None).finish(&caller, &defaults()))["localeId"],
            Value::Null
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(CallerFields::parse(b"not json"), Err(CallerTokenError::NotJson));
        assert_eq!(CallerFields::parse(b"[1]"), Err(CallerTokenError::NotJson));
        assert_eq!(
            CallerFields::parse(br#"{"localeId":{"a":1}}"#),
            Err(CallerTokenError::NotScalar("localeId"))
        );
        assert_eq!(
            CallerFields::parse(br#"{"interfaceId":[1]}"#),
            Err(CallerTokenError::NotScalar("interfaceId"))
        );
        let long = format!(r#"{{"knowledgeInteractionId":"{}"}}"#, "k".repeat(65));
        assert_eq!(
            CallerFields::parse(long.as_bytes()),
            Err(CallerTokenError::InteractionIdTooLong)
        );
        let huge = vec![b' '; MAX_CALLER_LEN + 1];
        assert_eq!(CallerFields::parse(&huge), Err(CallerTokenError::TooLong));
        assert_eq!(
            CallerFields::parse(br#"{"interfaceId":1e400}"#),
            Err(CallerTokenError::NotJson)
        );
        let deep = "[".repeat(5000);
        assert_eq!(CallerFields::parse(deep.as_bytes()), Err(CallerTokenError::NotJson));
        // Token fields, whatever they hold, are ignored, not refused.
        assert!(CallerFields::parse(br#"{"userToken":{"a":[1]},"siteName":7}"#).is_ok_and(|c| c.is_empty()));
    }

    #[test]
    fn a_managed_interaction_joins_the_callers_fields() {
        let caller =
            CallerFields::parse(br#"{"interactionIdGenerated":false,"appId":"a","clientIP":"1"}"#).expect("parses");
        assert!(!caller.has_interaction());
        let v = Prefix::new("S", "I", None).finish(&caller.with_interaction("K\"1"), &defaults());
        let m = parse(&v);
        assert_eq!(m["knowledgeInteractionId"], "K\"1");
        assert_eq!(m["interactionIdGenerated"], "true");
        assert_eq!(m["appId"], "a");
        assert_eq!(m["clientIP"], "1");
        let text = v.to_str().expect("visible ASCII");
        assert!(text.find("knowledgeInteractionId") < text.find("appId"), "{text}");
        let own = CallerFields::parse(br#"{"knowledgeInteractionId":"mine"}"#).expect("parses");
        assert!(own.has_interaction());
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            "\\PC{0,20}".prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ]
    }

    proptest! {
        /// Whatever the caller sends, the result is valid JSON whose tokens
        /// and site are kmproxy's, and whose other fields are the caller's
        /// kept values, of the caller's type, or the configured ones.
        #[test]
        fn merge_never_lets_caller_set_tokens(
            fields in proptest::collection::vec(
                (prop_oneof![
                    Just("integrationUserToken".to_string()), Just("userToken".to_string()),
                    Just("siteName".to_string()), Just("localeId".to_string()), Just("interfaceId".to_string()),
                    Just("captureAnalytics".to_string()), Just("appId".to_string()), Just("clientIP".to_string()),
                    "[a-zA-Z]{1,8}"
                ], scalar()),
                0..8),
            user in proptest::option::of("[A-Za-z0-9+/=]{1,40}"),
        ) {
            let obj: serde_json::Map<String, Value> = fields.into_iter().collect();
            let raw = serde_json::to_vec(&obj).expect("serialises");
            let caller = CallerFields::parse(&raw).expect("scalars only");
            // Read back with the same parser: a number's text is kept exactly.
            let obj: serde_json::Map<String, Value> = serde_json::from_slice(&raw).expect("parses");
            let v = Prefix::new("SITE", "INT+/=", user.as_deref()).finish(&caller, &defaults());
            prop_assert!(v.as_bytes().iter().all(|b| (0x20..0x7f).contains(b)));
            let m = parse(&v);
            prop_assert_eq!(&m["siteName"], "SITE");
            prop_assert_eq!(&m["integrationUserToken"], "INT+/=");
            prop_assert_eq!(m.get("userToken").and_then(|u| u.as_str()), user.as_deref());
            for (k, val) in &m {
                if RESERVED.contains(&k.as_str()) { continue; }
                prop_assert!(CALLER_FIELDS.contains(&k.as_str()), "unexpected field {}", k);
                match obj.get(k) {
                    Some(sent) => prop_assert_eq!(val, sent),
                    None => prop_assert!(k == "localeId" || defaults().extra.iter().any(|(ek, _)| ek == k)),
                }
            }
        }
    }

    const RESERVED: &[&str] = crate::config::RESERVED_KMAUTHTOKEN_FIELDS;
}
