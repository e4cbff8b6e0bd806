//! Fuzzes the `kmauthtoken` merge: a caller's header value (arbitrary bytes)
//! is parsed with `CallerFields::parse`; when accepted, it is finished with a
//! prefix built from fuzzer-chosen site name and tokens and fuzzer-chosen
//! configured fields, and the upstream value must keep these invariants:
//!
//! - it is marked sensitive and is visible ASCII (bytes 0x20..=0x7e);
//! - it is one JSON object with no duplicate key;
//! - `siteName`, `integrationUserToken` and `userToken` are exactly
//!   kmproxy's (and `userToken` is absent when kmproxy has none);
//! - every other key is in `CALLER_FIELDS` or in `Defaults.extra`;
//! - a caller's kept field keeps its JSON type and value (string, number,
//!   boolean or null), whatever token fields came with it;
//! - precedence: caller's kept field > `kmauthtoken_extra` > `locale`.
//!
//! Input layout (`arbitrary`): the token strings and configured fields
//! first, then the rest of the input, untouched, as the caller's header.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use arbitrary::Arbitrary;
use kmproxy::config::RESERVED_KMAUTHTOKEN_FIELDS;
use kmproxy::kmauthtoken::{
    CallerFields, CallerTokenError, Defaults, Prefix, CALLER_FIELDS, MAX_CALLER_LEN, MAX_INTERACTION_ID,
};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    site_name: &'a str,
    integration: &'a str,
    user: Option<&'a str>,
    /// `kmauthtoken_extra` before config validation; filtered below the
    /// way `config::extra_fields` and the TOML table do (unique keys, no
    /// reserved key).
    extra: Vec<(&'a str, &'a str)>,
    locale: &'a str,
    /// The caller's `kmauthtoken` header value: the rest of the input.
    caller: &'a [u8],
}

/// A JSON object as its entries in order, duplicates kept, so a duplicate
/// key (which a `Map` would silently collapse) is seen.
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

fuzz_target!(|input: Input<'_>| {
    let mut extra: Vec<(String, String)> = Vec::new();
    for (k, v) in &input.extra {
        if RESERVED_KMAUTHTOKEN_FIELDS.contains(k) || extra.iter().any(|(ek, _)| ek == k) {
            continue;
        }
        extra.push(((*k).to_owned(), (*v).to_owned()));
    }
    let defaults = Defaults {
        extra,
        locale: input.locale.to_owned(),
    };
    let prefix = Prefix::new(input.site_name, input.integration, input.user);

    // A principal's own value (no caller fields) keeps the same invariants.
    check(&input, &defaults, &prefix, &CallerFields::default(), &Map::new());

    let raw = input.caller;
    let caller = match CallerFields::parse(raw) {
        Ok(c) => c,
        Err(e) => {
            check_refusal(raw, &e);
            return;
        }
    };
    // The reference model of what the caller sent: its kept fields, read
    // from the text it wrote (other values are skipped unread, as kmproxy does).
    let object: BTreeMap<String, &RawValue> =
        serde_json::from_slice(raw).expect("CallerFields::parse accepted a non-object");
    let sent: Map<String, Value> = CALLER_FIELDS
        .iter()
        .filter_map(|f| object.get(*f).map(|v| ((*f).to_owned(), v.get())))
        .map(|(f, v)| (f, serde_json::from_str(v).expect("a kept value parses")))
        .collect();
    assert!(raw.len() <= MAX_CALLER_LEN, "accepted an over-long header");
    assert_eq!(
        caller.is_empty(),
        !CALLER_FIELDS.iter().any(|f| sent.contains_key(*f)),
        "is_empty disagrees with the kept fields"
    );
    check(&input, &defaults, &prefix, &caller, &sent);
});

/// The refusal matches what the input is.
fn check_refusal(raw: &[u8], e: &CallerTokenError) {
    if raw.len() > MAX_CALLER_LEN {
        assert_eq!(*e, CallerTokenError::TooLong);
        return;
    }
    let sent = serde_json::from_slice::<BTreeMap<String, &RawValue>>(raw);
    match (e, sent) {
        (CallerTokenError::NotJson, Err(_)) => {}
        // A kept value no JSON parser can hold: a lone surrogate, `1e400`.
        (CallerTokenError::NotJson, Ok(m)) => assert!(
            CALLER_FIELDS.iter().any(|f| m
                .get(*f)
                .is_some_and(|v| serde_json::from_str::<Value>(v.get()).is_err())),
            "refused as not JSON: {m:?}"
        ),
        (CallerTokenError::NotScalar(f), Ok(m)) => {
            assert!(CALLER_FIELDS.contains(f));
            assert!(m[*f].get().starts_with(['{', '[']));
        }
        (CallerTokenError::InteractionIdTooLong, Ok(m)) => {
            let raw = m["knowledgeInteractionId"].get();
            let long = match serde_json::from_str::<Value>(raw) {
                Ok(Value::String(id)) => id.chars().count() > MAX_INTERACTION_ID,
                _ => raw.len() > MAX_INTERACTION_ID,
            };
            assert!(long, "refused a short knowledgeInteractionId: {raw}");
        }
        (e, sent) => panic!("refusal {e:?} for input that parses as {sent:?}"),
    }
}

fn check(input: &Input<'_>, defaults: &Defaults, prefix: &Prefix, caller: &CallerFields, sent: &Map<String, Value>) {
    let v = prefix.finish(caller, defaults);
    assert!(v.is_sensitive(), "kmauthtoken not marked sensitive");
    let bytes = v.as_bytes();
    assert!(
        bytes.iter().all(|b| (0x20..=0x7e).contains(b)),
        "not visible ASCII: {:?}",
        String::from_utf8_lossy(bytes)
    );
    assert!(v.to_str().is_ok());

    let m: Map<String, Value> = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {}", String::from_utf8_lossy(bytes)));
    let Entries(entries) = serde_json::from_slice(bytes).expect("parsed as a Map already");
    let mut seen = BTreeSet::new();
    for (k, _) in &entries {
        assert!(seen.insert(k.as_str()), "duplicate key {k:?} in {m:?}");
    }

    assert_eq!(m.get("siteName").and_then(Value::as_str), Some(input.site_name));
    assert_eq!(
        m.get("integrationUserToken").and_then(Value::as_str),
        Some(input.integration)
    );
    assert_eq!(m.get("userToken").and_then(Value::as_str), input.user);
    if input.user.is_none() {
        assert!(!m.contains_key("userToken"));
    }

    for (k, val) in &m {
        if RESERVED_KMAUTHTOKEN_FIELDS.contains(&k.as_str()) {
            continue;
        }
        let configured = defaults.extra.iter().find(|(ek, _)| ek == k);
        assert!(
            CALLER_FIELDS.contains(&k.as_str()) || configured.is_some(),
            "unexpected key {k:?}"
        );
        // Precedence: caller's kept field (its type and value), then configured, then locale.
        let expected = match sent.get(k) {
            Some(v) if CALLER_FIELDS.contains(&k.as_str()) => v.clone(),
            _ => Value::String(match configured {
                Some((_, ev)) => ev.clone(),
                None => {
                    assert_eq!(k, "localeId", "caller field {k:?} the caller did not send");
                    defaults.locale.clone()
                }
            }),
        };
        assert_eq!(*val, expected, "wrong value for {k:?}");
    }
    // Nothing the caller or the config supplied is lost.
    for f in CALLER_FIELDS {
        if sent.contains_key(*f) {
            assert!(m.contains_key(*f), "caller field {f:?} dropped");
        }
    }
    for (k, _) in &defaults.extra {
        assert!(m.contains_key(k), "configured field {k:?} dropped");
    }
    assert!(m.contains_key("localeId"), "no localeId");
}
