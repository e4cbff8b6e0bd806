//! Errors kmproxy answers itself, and their one mapping to an HTTP answer in
//! Oracle's error shape, so clients' existing error handling keeps working:
//! `{"error":{"title":..,"errorCode":"KMPROXY-..","type":"PROXY","detail":..},"errorDetails":[]}`.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use super::interactions::{self, StartError};
use super::route;
use crate::callers;
use crate::kmauthtoken::CallerTokenError;
use crate::tokens::TokenError;
use crate::upstream;

/// A failure on the data path, named after its cause.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Caller(#[from] callers::Refusal),
    #[error(transparent)]
    Route(#[from] route::Refusal),
    #[error(transparent)]
    Host(#[from] crate::host::Refusal),
    #[error("principal `{0}` needs an `Authorization: Bearer` header from the caller")]
    MissingBearer(String),
    #[error("{0}")]
    BadKmauthtoken(#[from] CallerTokenError),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request body could not be read")]
    BodyRead,
    #[error("the request body did not arrive whole within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("kmproxy holds {0} bytes of request bodies already; retry shortly")]
    BufferFull(usize),
    #[error("the upstream answered 101 Switching Protocols to a call that asked for no upgrade")]
    UnexpectedUpgrade,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Upstream(#[from] upstream::Error),
    #[error(transparent)]
    StalePlaceholder(#[from] callers::placeholder::Stale),
    #[error("{}", .0.as_ref().map_or("the login form is not readable".to_owned(), |u| format!("no principal this caller may use logs in as `{u}`")))]
    ClientLogin(Option<String>),
    #[error("kmproxy is handling {0} calls already; retry shortly")]
    Overloaded(usize),
    #[error(transparent)]
    Interaction(#[from] interactions::Error),
}

impl ProxyError {
    /// Status, title and `errorCode` of the answer.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ProxyError::*;
        match self {
            Caller(callers::Refusal::UnknownCaller) => {
                (StatusCode::UNAUTHORIZED, "Unknown caller key", "KMPROXY-CALLER")
            }
            Caller(callers::Refusal::NoCallerKey) => {
                (StatusCode::UNAUTHORIZED, "Caller key required", "KMPROXY-CALLER")
            }
            Caller(callers::Refusal::ActAsDenied { .. }) => {
                (StatusCode::FORBIDDEN, "Act-as not allowed", "KMPROXY-ACT-AS")
            }
            MissingBearer(_) => (StatusCode::UNAUTHORIZED, "Bearer token required", "KMPROXY-BEARER"),
            Route(route::Refusal::AuthPath) => (
                StatusCode::FORBIDDEN,
                "Authentication is kmproxy's job",
                "KMPROXY-AUTH-PATH",
            ),
            Route(route::Refusal::NotFound) => (
                StatusCode::NOT_FOUND,
                "Not a Knowledge Advanced API path",
                "KMPROXY-NOT-FOUND",
            ),
            Route(_) => (StatusCode::BAD_REQUEST, "Path not allowed", "KMPROXY-PATH"),
            Host(_) => (StatusCode::BAD_REQUEST, "Host not allowed", "KMPROXY-HOST"),
            BadKmauthtoken(_) => (StatusCode::BAD_REQUEST, "Invalid kmauthtoken", "KMPROXY-KMAUTHTOKEN"),
            BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
                "KMPROXY-BODY-LIMIT",
            ),
            BodyRead => (StatusCode::BAD_REQUEST, "Request body unreadable", "KMPROXY-BODY"),
            BodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "Request body too slow",
                "KMPROXY-BODY-TIMEOUT",
            ),
            // The same code as `Overloaded`: to a client, both say "retry shortly".
            BufferFull(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many request bodies buffered",
                "KMPROXY-OVERLOADED",
            ),
            UnexpectedUpgrade => (StatusCode::BAD_GATEWAY, "Upstream unavailable", "KMPROXY-UPSTREAM"),
            Token(TokenError::Parked { .. }) => (StatusCode::BAD_GATEWAY, "Login rejected", "KMPROXY-LOGIN-REJECTED"),
            Token(TokenError::Backoff { .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Login backing off",
                "KMPROXY-LOGIN-BACKOFF",
            ),
            Token(TokenError::Timeout { .. }) => (StatusCode::GATEWAY_TIMEOUT, "Login timed out", "KMPROXY-TIMEOUT"),
            Token(TokenError::Failed { .. }) => (StatusCode::BAD_GATEWAY, "Login failed", "KMPROXY-LOGIN"),
            Upstream(e) if e.is_timeout() => (StatusCode::GATEWAY_TIMEOUT, "Upstream timeout", "KMPROXY-TIMEOUT"),
            Upstream(_) => (StatusCode::BAD_GATEWAY, "Upstream unavailable", "KMPROXY-UPSTREAM"),
            // Oracle's own answer, so that the client's re-login code runs.
            StalePlaceholder(_) => (StatusCode::UNAUTHORIZED, "Session Token has expired", "OK-SESSION0003"),
            ClientLogin(_) => (StatusCode::FORBIDDEN, "Login not allowed", "KMPROXY-CLIENT-LOGIN"),
            Overloaded(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many calls in flight",
                "KMPROXY-OVERLOADED",
            ),
            Interaction(e) => interaction_parts(e),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// How long a login backoff this error met has still to run: the
    /// call's own login, or the one a managed interaction's start needed.
    fn backoff(&self) -> Option<std::time::Duration> {
        let token = match self {
            ProxyError::Token(t) => t,
            ProxyError::Interaction(interactions::Error::Start(start)) => match &**start {
                StartError::Token(t) => t,
                _ => return None,
            },
            _ => return None,
        };
        match token {
            TokenError::Backoff { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A managed interaction's failure: a bad session header is the caller's;
/// a failed start is answered as the login or exchange that failed.
fn interaction_parts(e: &interactions::Error) -> (StatusCode, &'static str, &'static str) {
    let start = match e {
        interactions::Error::BadSession => {
            return (StatusCode::BAD_REQUEST, "Invalid x-kmproxy-session", "KMPROXY-SESSION")
        }
        interactions::Error::Start(start) => &**start,
    };
    match start {
        StartError::Token(t) => ProxyError::Token(t.clone()).parts(),
        StartError::Upstream(u) if u.is_timeout() => {
            (StatusCode::GATEWAY_TIMEOUT, "Upstream timeout", "KMPROXY-TIMEOUT")
        }
        _ => (
            StatusCode::BAD_GATEWAY,
            "Interaction not started",
            "KMPROXY-INTERACTION",
        ),
    }
}

/// The Oracle-shaped JSON error body.
pub fn error_body(title: &str, code: &str, detail: &str) -> String {
    serde_json::json!({
        "error": {"title": title, "errorPath": null, "errorCode": code, "type": "PROXY", "detail": detail},
        "errorDetails": [],
    })
    .to_string()
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let (status, title, code) = self.parts();
        let mut res = (status, error_body(title, code, &self.to_string())).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Every 503 says when to come back: a backoff its own wait, others 1 s.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = self.backoff().map_or(1, |wait| wait.as_secs().max(1));
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // The rest of a body that came too slowly is not waited for.
        if matches!(self, ProxyError::BodyTimeout(_)) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}
