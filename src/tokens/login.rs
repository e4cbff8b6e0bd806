//! The two upstream login calls: the API user's (→ integration token) and a
//! console or web user's (→ user token), and how their answers are read.
//!
//! Each outcome is classified once, here, by what it says about the
//! password: a 4xx answer other than 408 and 429 is a rejection
//! ([`LoginError::Rejected`]), never retried with the same password by the
//! caller of these functions; 408 and 429 are the upstream asking to wait
//! ([`LoginError::Throttled`], with its `Retry-After`); a login sent whose
//! answer never came may have been a rejection ([`LoginError::Timeout`],
//! [`LoginError::Unanswered`]); one that was never sent, or answered 5xx,
//! says nothing about the password ([`LoginError::Transient`]). A user
//! login answered with a session error means the integration token it
//! carried is stale ([`LoginError::StaleIntegration`]).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use secrecy::SecretString;

use crate::config::{Config, ExternalType};
use crate::kmauthtoken::{Defaults, Prefix};
use crate::session_error;
use crate::upstream::{self, HttpClient, Origin};

/// Largest login answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a login did not produce a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoginError {
    /// The upstream refused the credentials (a 4xx answer).
    #[error("login rejected: {0}")]
    Rejected(String),
    /// A user login was refused because the integration token is stale.
    #[error("the integration token was refused")]
    StaleIntegration,
    /// Not sent (no connection), 5xx, or an answer that says nothing
    /// about the password: worth trying later.
    #[error("{0}")]
    Transient(String),
    /// 408 or 429: the upstream asks to wait, at least `retry_after` if given.
    #[error("upstream answered HTTP {status}{}", retry_after.map(|d| format!(" (Retry-After {}s)", d.as_secs())).unwrap_or_default())]
    Throttled { status: u16, retry_after: Option<Duration> },
    /// Sent, and no answer within `upstream.timeout`: it may have been
    /// a rejection.
    #[error("login timed out after {0:?}")]
    Timeout(Duration),
    /// Sent, and the connection ended before the answer came: it may have
    /// been a rejection.
    #[error("{0}")]
    Unanswered(String),
}

/// Logs the API user in; returns the integration token.
pub async fn integration(client: &HttpClient, origin: &Origin, cfg: &Config) -> Result<SecretString, LoginError> {
    let body = serde_json::json!({
        "login": cfg.api_user.login,
        "password": cfg.api_user.password.expose(),
        "siteName": cfg.upstream.site_name,
    });
    let kmauthtoken = serde_json::json!({"siteName": cfg.upstream.site_name, "localeId": cfg.upstream.locale});
    let req = request(
        origin,
        &format!("/km/api/{}/auth/integration/authorize", cfg.upstream.api_version),
        "application/json",
        kmauthtoken.to_string(),
        body.to_string(),
    )?;
    let answer = match exchange(
        client,
        origin,
        req,
        cfg.upstream.timeout,
        &cfg.tokens.session_error_codes,
    )
    .await
    {
        Err(LoginError::StaleIntegration) => {
            return Err(LoginError::Transient(
                "the API user login was answered with a session error".into(),
            ))
        }
        other => other?,
    };
    let parsed: serde_json::Value = serde_json::from_slice(&answer)
        .map_err(|_| LoginError::Transient("the API user login answer is not JSON".into()))?;
    match parsed.get("authenticationToken") {
        Some(serde_json::Value::String(t)) if !t.is_empty() => Ok(SecretString::from(t.clone())),
        _ => Err(LoginError::Transient(
            "the API user login answer has no authenticationToken".into(),
        )),
    }
}

/// Logs a console (ACCOUNT) or web (CONTACT) user in; returns the user token.
pub async fn user(
    client: &HttpClient,
    origin: &Origin,
    cfg: &Config,
    integration_token: &str,
    external_type: ExternalType,
    user: &str,
    password: &str,
) -> Result<SecretString, LoginError> {
    let form = serde_urlencoded::to_string([
        ("userName", user),
        ("password", password),
        ("siteName", cfg.upstream.site_name.as_str()),
        ("userExternalType", external_type.as_str()),
    ])
    .map_err(|e| LoginError::Transient(format!("cannot encode the login form: {e}")))?;
    let defaults = Defaults {
        extra: Vec::new(),
        locale: cfg.upstream.locale.clone(),
    };
    let kmauthtoken =
        Prefix::new(&cfg.upstream.site_name, integration_token, None).finish(&Default::default(), &defaults);
    let mut req = request(
        origin,
        &format!("/km/api/{}/auth/authorize", cfg.upstream.api_version),
        "application/x-www-form-urlencoded",
        String::new(),
        form,
    )?;
    req.headers_mut().insert(crate::kmauthtoken::HEADER, kmauthtoken);
    let answer = exchange(
        client,
        origin,
        req,
        cfg.upstream.timeout,
        &cfg.tokens.session_error_codes,
    )
    .await?;
    user_token(&answer).ok_or_else(|| LoginError::Transient("the user login answer has no userToken".into()))
}

/// Extracts `userToken` from a user login answer: `authenticationToken` is a
/// JSON object serialised as a string, or (accepted too) the object itself.
pub fn user_token(answer: &[u8]) -> Option<SecretString> {
    let parsed: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let auth = parsed.get("authenticationToken")?;
    let inner: serde_json::Value = match auth {
        serde_json::Value::String(s) => serde_json::from_str(s).ok()?,
        obj @ serde_json::Value::Object(_) => obj.clone(),
        _ => return None,
    };
    match inner.get("userToken")? {
        serde_json::Value::String(t) if !t.is_empty() => Some(SecretString::from(t.clone())),
        _ => None,
    }
}

fn request(
    origin: &Origin,
    path: &str,
    content_type: &'static str,
    kmauthtoken: String,
    body: String,
) -> Result<Request<Full<Bytes>>, LoginError> {
    let pq =
        http::uri::PathAndQuery::try_from(path).map_err(|e| LoginError::Transient(format!("bad login path: {e}")))?;
    let uri = origin
        .target(&pq)
        .map_err(|e| LoginError::Transient(format!("bad login URL: {e}")))?;
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| LoginError::Transient(format!("cannot build the login request: {e}")))?;
    if !kmauthtoken.is_empty() {
        if let Ok(v) = HeaderValue::try_from(kmauthtoken) {
            req.headers_mut().insert(crate::kmauthtoken::HEADER, v);
        }
    }
    Ok(req)
}

/// Sends a login request and reads its answer (bounded), sorting failures.
async fn exchange(
    client: &HttpClient,
    origin: &Origin,
    req: Request<Full<Bytes>>,
    timeout: Duration,
    session_codes: &[String],
) -> Result<Bytes, LoginError> {
    let work = async {
        let res = client.request(origin, req).await.map_err(unsent_or_unanswered)?;
        let (head, body) = res.into_parts();
        let body = Limited::new(body, MAX_ANSWER).collect().await.map(|b| b.to_bytes());
        judge(
            head.status,
            &head.headers,
            body.map_err(|e| e.to_string()),
            session_codes,
        )
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(LoginError::Timeout(timeout)))
}

/// A login the client could not exchange: never sent (no connection:
/// nothing learnt about the password), or sent and cut off.
fn unsent_or_unanswered(e: upstream::Error) -> LoginError {
    use upstream::Error::*;
    match e {
        ConnectTimeout { .. } | Refused { .. } | Tls { .. } | Connect { .. } => {
            LoginError::Transient(format!("upstream unreachable: {e}"))
        }
        Protocol { .. } | ClosedEarly { .. } | Timeout { .. } => LoginError::Unanswered(format!("no answer: {e}")),
    }
}

/// What a login answer says: `body` is its (bounded) body, or why it could
/// not be read. The status decides; the body only tells a rejection from a
/// stale integration token.
fn judge(
    status: StatusCode,
    headers: &HeaderMap,
    body: Result<Bytes, String>,
    session_codes: &[String],
) -> Result<Bytes, LoginError> {
    if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = retry_after(headers, SystemTime::now());
        return Err(LoginError::Throttled {
            status: status.as_u16(),
            retry_after,
        });
    }
    if status.is_client_error() {
        // Unreadable or not: a 4xx is about the login, never worth repeating.
        let body = body.unwrap_or_default();
        let code = session_error::error_code(&body).unwrap_or(std::borrow::Cow::Borrowed("no errorCode"));
        if session_codes.iter().any(|p| code.starts_with(p.as_str())) {
            return Err(LoginError::StaleIntegration);
        }
        return Err(LoginError::Rejected(format!("HTTP {} {code}", status.as_u16())));
    }
    if !status.is_success() {
        return Err(LoginError::Transient(format!(
            "upstream answered HTTP {}",
            status.as_u16()
        )));
    }
    body.map_err(|e| LoginError::Transient(format!("login answer unreadable: {e}")))
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3),
/// relative to `now`; `None` if absent or unreadable.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn judged(status: u16, headers: &[(&str, &str)], body: &str) -> Result<Bytes, LoginError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        let status = StatusCode::from_u16(status).expect("status");
        judge(status, &h, Ok(Bytes::from(body.to_owned())), &["OK-SESSION".to_owned()])
    }

    #[test]
    fn answers_are_classified_by_what_they_say_about_the_password() {
        let session = r#"{"error":{"errorCode":"OK-SESSION0003"}}"#;
        let auth = r#"{"error":{"errorCode":"OK-AUTH0001"}}"#;
        assert!(judged(200, &[], "{}").is_ok());
        assert!(matches!(judged(401, &[], auth), Err(LoginError::Rejected(r)) if r == "HTTP 401 OK-AUTH0001"));
        assert!(matches!(judged(403, &[], "<html>"), Err(LoginError::Rejected(_))));
        assert!(matches!(judged(401, &[], session), Err(LoginError::StaleIntegration)));
        assert!(matches!(judged(503, &[], auth), Err(LoginError::Transient(_))));
        for status in [408, 429] {
            assert!(matches!(
                judged(status, &[("retry-after", "7")], auth),
                Err(LoginError::Throttled { status: s, retry_after: Some(d) }) if s == status && d == Duration::from_secs(7)
            ));
        }
        assert!(matches!(
            judged(429, &[], ""),
            Err(LoginError::Throttled { retry_after: None, .. })
        ));
        // An unreadable 4xx is still a rejection.
        let unreadable = judge(StatusCode::UNAUTHORIZED, &HeaderMap::new(), Err("reset".into()), &[]);
        assert!(matches!(unreadable, Err(LoginError::Rejected(_))));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let at = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::RETRY_AFTER, v.parse().expect("value"));
            let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
            retry_after(&h, now)
        };
        assert_eq!(at("120"), Some(Duration::from_secs(120)));
        assert_eq!(at("Sun, 06 Nov 1994 08:50:37 GMT"), Some(Duration::from_secs(60)));
        assert_eq!(at("Sun, 06 Nov 1994 08:40:00 GMT"), Some(Duration::ZERO));
        assert_eq!(at("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), SystemTime::now()), None);
    }

    #[test]
    fn user_token_from_string_and_object_forms() {
        let s = br#"{"authenticationToken":"{\"localeId\":\"en_US\",\"userToken\":\"U+1/=\",\"integrationUserToken\":null}","user":{"isActive":true}}"#;
        assert_eq!(
            user_token(s).map(|t| t.expose_secret().to_owned()).as_deref(),
            Some("U+1/=")
        );
        let o = br#"{"authenticationToken":{"userToken":"U2"}}"#;
        assert_eq!(
            user_token(o).map(|t| t.expose_secret().to_owned()).as_deref(),
            Some("U2")
        );
        assert!(user_token(br#"{"authenticationToken":"{}"}"#).is_none());
        assert!(user_token(b"nope").is_none());
    }
}
