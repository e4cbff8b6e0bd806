//! The two logins: the API user login (integration token) and the
//! console/web user login (user token).
//!
//! Login attempts are counted (by kind, user name as sent, outcome) before
//! the answer is built, so a test reading the counters right after the
//! response sees them. The answer is then held back by the login delay for
//! its outcome (`Shared::login_delay_for`): rejections and injected faults
//! as well as successes, as a slow identity service would.

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::access::{field, parse_kmauthtoken, site_matches};
use super::errors::{Api, Format, OracleError};
use super::state::{Shared, Subject};
use super::{LoginKind, LoginOutcome, UserKind};

/// Largest login body read.
const LOGIN_BODY_LIMIT: usize = 64 * 1024;

/// The body of `auth/integration/authorize` (Oracle's `RequestIntegrationAuth`).
#[derive(Deserialize)]
struct IntegrationLogin {
    login: String,
    password: String,
    #[serde(rename = "siteName")]
    site_name: String,
}

/// The form of `auth/authorize`.
#[derive(Deserialize)]
struct UserLogin {
    #[serde(rename = "userName")]
    user_name: String,
    password: String,
    #[serde(rename = "siteName")]
    site_name: String,
    #[serde(rename = "userExternalType")]
    user_external_type: String,
}

/// The object Oracle serialises into the user login's `authenticationToken`,
/// fields in Oracle's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserSessionToken<'a> {
    locale_id: &'a str,
    knowledge_interaction_id: Option<&'a str>,
    billable_session_id: Option<&'a str>,
    app_id: Option<&'a str>,
    site_name: &'a str,
    interface_id: Option<&'a str>,
    requires_billable: Option<bool>,
    capture_analytics: Option<bool>,
    integration_user_token: Option<&'a str>,
    user_token: &'a str,
    referrer: Option<&'a str>,
    query_source: Option<&'a str>,
}

/// Read a login body, refusing bodies over the limit.
async fn login_body(body: Body) -> Result<bytes::Bytes, OracleError> {
    to_bytes(body, LOGIN_BODY_LIMIT)
        .await
        .map_err(|_| OracleError::invalid_input("the login body could not be read"))
}

/// Count the attempt, log it, and answer with `result`.
fn finish(
    shared: &Shared,
    kind: LoginKind,
    user: &str,
    format: Format,
    result: Result<Response, (LoginOutcome, OracleError)>,
) -> (LoginOutcome, Response) {
    let outcome = match &result {
        Ok(_) => LoginOutcome::Ok,
        Err((outcome, _)) => *outcome,
    };
    shared.count_login(kind, user, outcome);
    tracing::debug!(?kind, ?outcome, "simulator login");
    let response = match result {
        Ok(response) => response,
        Err((_, error)) => error.respond(format),
    };
    (outcome, response)
}

/// Hold a counted login's answer back by the delay for its outcome.
async fn held((outcome, response): (LoginOutcome, Response), shared: &Shared) -> Response {
    let delay = shared.login_delay_for(outcome);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

/// `POST /km/api/{ver}/auth/integration/authorize`.
pub(crate) async fn integration_login(shared: &Shared, headers: &HeaderMap, body: Body) -> Response {
    held(integration_attempt(shared, headers, body).await, shared).await
}

/// `POST /km/api/{ver}/auth/authorize`.
pub(crate) async fn user_login(shared: &Shared, headers: &HeaderMap, body: Body) -> Response {
    held(user_attempt(shared, headers, body).await, shared).await
}

async fn integration_attempt(shared: &Shared, headers: &HeaderMap, body: Body) -> (LoginOutcome, Response) {
    let format = Format::for_errors(headers);
    let rejected = |e| (LoginOutcome::Rejected, e);
    let bytes = match login_body(body).await {
        Ok(b) => b,
        Err(e) => return finish(shared, LoginKind::Integration, "", format, Err(rejected(e))),
    };
    let parsed = serde_json::from_slice::<IntegrationLogin>(&bytes);
    let user = parsed.as_ref().map(|p| p.login.clone()).unwrap_or_default();
    let result = (|| {
        if let Some(fault) = shared.take_login_fault() {
            let error = OracleError::injected(fault.status, fault.retry_after);
            return Err((LoginOutcome::Failed, error));
        }
        if headers.contains_key("kmauthtoken") {
            let token = parse_kmauthtoken(headers).map_err(rejected)?;
            if !site_matches(shared, token.get("siteName")) {
                return Err(rejected(OracleError::invalid_credentials()));
            }
        }
        let login = parsed.map_err(|e| rejected(OracleError::invalid_input(e.to_string())))?;
        let known = shared
            .config
            .api_users
            .iter()
            .any(|a| a.login == login.login && a.password == login.password);
        if !known || login.site_name.trim() != shared.config.site_name {
            return Err(rejected(OracleError::invalid_credentials()));
        }
        let token = shared.issue(Subject::Integration);
        Ok(axum::Json(json!({ "authenticationToken": token })).into_response())
    })();
    finish(shared, LoginKind::Integration, &user, format, result)
}

/// `userName` and `userExternalType` from a form or JSON body, for counting.
fn login_identity(bytes: &[u8]) -> (LoginKind, String) {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
        .ok()
        .filter(|f: &Vec<(String, String)>| f.iter().any(|(k, _)| k == "userName"))
        .or_else(|| {
            let map = serde_json::from_slice::<Map<String, Value>>(bytes).ok()?;
            Some(
                map.into_iter()
                    .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                    .collect(),
            )
        })
        .unwrap_or_default();
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let kind = match get("userExternalType").as_deref() {
        Some(t) if t.eq_ignore_ascii_case("CONTACT") => LoginKind::Contact,
        _ => LoginKind::Account,
    };
    (kind, get("userName").unwrap_or_default())
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

async fn user_attempt(shared: &Shared, headers: &HeaderMap, body: Body) -> (LoginOutcome, Response) {
    let format = Format::for_errors(headers);
    let rejected = |e| (LoginOutcome::Rejected, e);
    let bytes = match login_body(body).await {
        Ok(b) => b,
        Err(e) => return finish(shared, LoginKind::Account, "", format, Err(rejected(e))),
    };
    let (kind, user) = login_identity(&bytes);
    let result = (|| {
        if let Some(fault) = shared.take_login_fault() {
            let error = OracleError::injected(fault.status, fault.retry_after);
            return Err((LoginOutcome::Failed, error));
        }
        let token = parse_kmauthtoken(headers).map_err(rejected)?;
        if !site_matches(shared, token.get("siteName")) {
            return Err(rejected(OracleError::wrong_site()));
        }
        let integration = field(&token, "integrationUserToken").and_then(Value::as_str);
        if integration.and_then(|t| shared.lookup(t)) != Some(Subject::Integration) {
            let e = OracleError::session_expired(Api::Km, format);
            return Err((LoginOutcome::Failed, e));
        }
        if !is_form(headers) {
            return Err(rejected(OracleError::invalid_input(
                "the user login takes a form (application/x-www-form-urlencoded)",
            )));
        }
        let form: UserLogin =
            serde_urlencoded::from_bytes(&bytes).map_err(|e| rejected(OracleError::invalid_input(e.to_string())))?;
        let wanted = match form.user_external_type.as_str() {
            "ACCOUNT" => UserKind::Account,
            "CONTACT" => UserKind::Contact,
            _ => {
                return Err(rejected(OracleError::invalid_input(
                    "userExternalType must be ACCOUNT or CONTACT",
                )))
            }
        };
        if form.site_name.trim() != shared.config.site_name {
            return Err(rejected(OracleError::invalid_credentials()));
        }
        // Oracle: when an account and a contact share a user name, the
        // account is authenticated, even for a CONTACT login.
        let users = &shared.config.users;
        let named = |k: UserKind| users.iter().find(|u| u.name == form.user_name && u.kind == k);
        let found = match wanted {
            UserKind::Account => named(UserKind::Account),
            UserKind::Contact => named(UserKind::Contact).map(|contact| named(UserKind::Account).unwrap_or(contact)),
        };
        let found = found
            .filter(|u| u.password == form.password)
            .ok_or_else(|| rejected(OracleError::invalid_credentials()))?;
        let user_token = shared.issue(Subject::User {
            name: found.name.clone(),
            kind: found.kind,
        });
        let locale = token.get("localeId").and_then(Value::as_str).unwrap_or("en_US");
        Ok(user_login_answer(shared, locale, &user_token, &found.name, found.kind))
    })();
    finish(shared, kind, &user, format, result)
}

fn user_login_answer(shared: &Shared, locale: &str, user_token: &str, name: &str, kind: UserKind) -> Response {
    let session = UserSessionToken {
        locale_id: locale,
        knowledge_interaction_id: None,
        billable_session_id: None,
        app_id: None,
        site_name: &shared.config.site_name,
        interface_id: None,
        requires_billable: None,
        capture_analytics: None,
        integration_user_token: None,
        user_token,
        referrer: None,
        query_source: None,
    };
    let session = match serde_json::to_string(&session) {
        Ok(s) => s,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let external_type = match kind {
        UserKind::Account => "ACCOUNT",
        UserKind::Contact => "CONTACT",
    };
    let record_id = hex::encode(Sha256::digest(format!("{external_type}:{name}")));
    axum::Json(json!({
        "authenticationToken": session,
        "user": {
            "recordId": &record_id[..32],
            "login": name,
            "name": name,
            "externalType": external_type,
            "isActive": true,
            "isLocked": false,
            "email": format!("{name}@example.invalid"),
        }
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_read_from_form_or_json() {
        let (k, u) = login_identity(b"userName=web%20user&userExternalType=CONTACT");
        assert_eq!((k, u.as_str()), (LoginKind::Contact, "web user"));
        let (k, u) = login_identity(br#"{"userName":"x","userExternalType":"ACCOUNT"}"#);
        assert_eq!((k, u.as_str()), (LoginKind::Account, "x"));
        let (k, u) = login_identity(b"\xff");
        assert_eq!((k, u.as_str()), (LoginKind::Account, ""));
    }
}
