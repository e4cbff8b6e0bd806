//! The two upstream login calls: the API user's (→ integration token) and a
//! console or web user's (→ user token), and how their answers are read.
//!
//! A 4xx answer is a rejection ([`LoginError::Rejected`]), never retried
//! with the same password by the caller of these functions; a user login
//! answered with a session error means the integration token it carried is
//! stale ([`LoginError::StaleIntegration`]).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use secrecy::SecretString;

use crate::config::{Config, ExternalType};
use crate::kmauthtoken::{Defaults, Prefix};
use crate::session_error;
use crate::upstream::{HttpClient, Origin};

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
    /// Network failure, 5xx or an unreadable answer: worth trying later.
    #[error("{0}")]
    Transient(String),
    /// No answer within `upstream.timeout`.
    #[error("login timed out after {0:?}")]
    Timeout(Duration),
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
        let res = client.request(origin, req).await.map_err(|e| {
            if let crate::upstream::Error::ConnectTimeout { after, .. } = e {
                LoginError::Timeout(after)
            } else {
                LoginError::Transient(format!("upstream unreachable: {e}"))
            }
        })?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| LoginError::Transient(format!("login answer unreadable: {e}")))?
            .to_bytes();
        if status.is_success() {
            Ok(body)
        } else if status.is_client_error() {
            let code = session_error::error_code(&body).unwrap_or(std::borrow::Cow::Borrowed("no errorCode"));
            if session_codes.iter().any(|p| code.starts_with(p.as_str())) {
                Err(LoginError::StaleIntegration)
            } else {
                Err(LoginError::Rejected(format!("HTTP {} {code}", status.as_u16())))
            }
        } else {
            Err(LoginError::Transient(format!(
                "upstream answered HTTP {}",
                status.as_u16()
            )))
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(LoginError::Timeout(timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

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
