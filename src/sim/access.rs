//! The token check every API call (other than the logins) passes: the
//! `kmauthtoken` header (site, integration token, optional user token,
//! optional knowledge interaction, `interfaceId` for search) or an OAuth
//! bearer token together with the integration token.
//!
//! Checks run in this order, and the first failure is the answer: header
//! present and a JSON object → `siteName` → injected session error →
//! integration token → bearer or user token → interaction id → `interfaceId`
//! (search only). An unaccepted bearer token is `OK-AUTH0005`, or, with
//! `Simulator::set_bearer_session_errors`, the session error of its API
//! (counted); a non-bearer `Authorization` is always `OK-AUTH0005`.

use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};

use super::errors::{Api, Format, OracleError};
use super::state::{Shared, Subject};
use super::{Principal, UserKind};

/// Parse a `kmauthtoken` header: it must be a JSON object.
pub(crate) fn parse_kmauthtoken(headers: &HeaderMap) -> Result<Map<String, Value>, OracleError> {
    let raw = headers
        .get("kmauthtoken")
        .ok_or_else(|| OracleError::bad_kmauthtoken("the kmauthtoken header is missing"))?;
    let text =
        std::str::from_utf8(raw.as_bytes()).map_err(|_| OracleError::bad_kmauthtoken("kmauthtoken is not UTF-8"))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(OracleError::bad_kmauthtoken("kmauthtoken is not a JSON object")),
    }
}

pub(crate) fn site_matches(shared: &Shared, site: Option<&Value>) -> bool {
    site.and_then(Value::as_str)
        .is_some_and(|s| s.trim() == shared.config.site_name)
}

/// A string field that is present and not `null`.
pub(crate) fn field<'a>(token: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    token.get(name).filter(|v| !v.is_null())
}

/// Check the tokens of an API call; `check_interaction` also validates a
/// generated `knowledgeInteractionId`. Consumes one injected session error.
pub(crate) fn authorize_call(
    shared: &Shared,
    api: Api,
    headers: &HeaderMap,
    check_interaction: bool,
) -> Result<Principal, OracleError> {
    let format = Format::for_errors(headers);
    let token = parse_kmauthtoken(headers)?;
    if !site_matches(shared, token.get("siteName")) {
        return Err(OracleError::wrong_site());
    }
    let expired = || OracleError::session_expired_as(api, format, shared.session_error_shape());
    if shared.take_session_error() {
        return Err(expired());
    }
    let integration = field(&token, "integrationUserToken").and_then(Value::as_str);
    if integration.and_then(|t| shared.lookup(t)) != Some(Subject::Integration) {
        return Err(expired());
    }
    let user_token = field(&token, "userToken");
    let principal = if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let bearer = auth
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, jwt)| jwt.trim());
        if !bearer.is_some_and(|jwt| shared.config.bearer_tokens.iter().any(|t| t == jwt)) {
            if bearer.is_some() && shared.bearer_session_errors_on() {
                shared.count_bearer_session_error();
                return Err(expired());
            }
            return Err(OracleError::invalid_bearer());
        }
        if user_token.is_some() {
            return Err(OracleError::bearer_with_user_token());
        }
        Principal {
            kind: "bearer",
            user: None,
        }
    } else if let Some(user_token) = user_token {
        match user_token.as_str().and_then(|t| shared.lookup(t)) {
            Some(Subject::User { name, kind }) => Principal {
                kind: match kind {
                    UserKind::Account => "account",
                    UserKind::Contact => "contact",
                },
                user: Some(name),
            },
            _ => return Err(expired()),
        }
    } else {
        Principal {
            kind: "anonymous",
            user: None,
        }
    };
    if check_interaction && interaction_generated(&token) {
        let id = field(&token, "knowledgeInteractionId").and_then(Value::as_str);
        if !id.is_some_and(|id| shared.interaction_valid(id)) {
            return Err(OracleError::interaction_invalid());
        }
    }
    if api == Api::Srt && field(&token, "interfaceId").is_none() {
        return Err(OracleError::interface_required());
    }
    Ok(principal)
}

fn interaction_generated(token: &Map<String, Value>) -> bool {
    match token.get("interactionIdGenerated") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn interaction_flag_accepts_string_and_bool() {
        let t = |v: Value| {
            let mut m = Map::new();
            m.insert("interactionIdGenerated".into(), v);
            interaction_generated(&m)
        };
        assert!(t(json!("true")));
        assert!(t(json!(true)));
        assert!(!t(json!("false")));
        assert!(!t(Value::Null));
    }

    #[test]
    fn kmauthtoken_must_be_a_json_object() {
        let mut h = HeaderMap::new();
        assert!(parse_kmauthtoken(&h).is_err());
        h.insert("kmauthtoken", "[1,2]".parse().expect("header value"));
        assert!(parse_kmauthtoken(&h).is_err());
        h.insert("kmauthtoken", r#"{"siteName":"S"}"#.parse().expect("header value"));
        assert_eq!(parse_kmauthtoken(&h).map(|m| m.len()), Ok(1));
    }
}
