//! The admin listener: liveness, readiness, status per principal, metrics,
//! and the operator's un-park switches. Never shows a token or a secret.
//!
//! It is served by the same accept loop as the data port
//! ([`crate::server::serve_service`]: head deadline, connection cap,
//! bounded drain), and every request first passes [`Guard`]: the `Host`
//! rule of both ports ([`crate::host`]), and for anything but `GET`/`HEAD`
//! the header `x-kmproxy-admin: 1` (a cross-site browser request cannot
//! send a custom header without a CORS preflight, which kmproxy never
//! answers) and, when `server.admin_token` is set, `Authorization: Bearer`
//! with that token.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

use crate::app::App;
use crate::config::{PrincipalKind, ServerConfig};
use crate::proxy::error::error_body;
use crate::server::{serve_service, Limits};
use crate::tokens::{Identity, TokenStore};

/// The header every admin `POST` carries.
pub const ADMIN_HEADER: &str = "x-kmproxy-admin";
/// Longest an admin call may take (its handlers are quick; this bounds a
/// stuck one).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest admin request body: no endpoint reads one.
const MAX_BODY: usize = 4 * 1024;

/// The admin router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/principals/{name}/reset", post(reset_principal))
        .route("/api-user/reset", post(reset_api_user))
        .fallback(|| async {
            refusal(
                StatusCode::NOT_FOUND,
                "Not found",
                "KMPROXY-NOT-FOUND",
                "no such admin endpoint",
            )
        })
        // Layers run from the last added inwards: the timeout bounds the
        // whole call, the body cap answers 413 from `Content-Length`, and
        // the guard judges `Host` and an admin POST's headers before any
        // handler runs.
        .layer(ValidateRequestHeaderLayer::custom(Guard(Arc::clone(&app))))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .with_state(app)
}

/// Serves the admin endpoints until `shutdown` resolves, with the data
/// port's connection limits (`header_read_timeout`, `max_connections`,
/// `drain_timeout`, the send timeout; the cap is per listener).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Limits::of(&app);
    serve_service(router(app), listener, limits, shutdown).await
}

/// Why the guard refused an admin request.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Host(#[from] crate::host::Refusal),
    #[error("an admin POST needs the header `x-kmproxy-admin: 1`")]
    NoAdminHeader,
    #[error("an admin POST needs `Authorization: Bearer <server.admin_token>`")]
    BadToken,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        match self {
            Refusal::Host(_) => refusal(StatusCode::BAD_REQUEST, "Host not allowed", "KMPROXY-HOST", &detail),
            Refusal::NoAdminHeader => refusal(StatusCode::FORBIDDEN, "Admin header required", "KMPROXY-ADMIN", &detail),
            Refusal::BadToken => {
                let mut res = refusal(
                    StatusCode::UNAUTHORIZED,
                    "Admin token required",
                    "KMPROXY-ADMIN-TOKEN",
                    &detail,
                );
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                res
            }
        }
    }
}

/// An answer in Oracle's error shape.
fn refusal(status: StatusCode, title: &str, code: &str, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        error_body(title, code, detail),
    )
        .into_response()
}

/// Judges every admin request against the current config (so a reload
/// that changes `allowed_hosts` or `admin_token` applies at once).
#[derive(Clone)]
struct Guard(Arc<App>);

impl<B> ValidateRequest<B> for Guard {
    type ResponseBody = Body;

    fn validate(&mut self, req: &mut Request<B>) -> Result<(), Response> {
        let live = self.0.live();
        admit(&live.config.server, req).map_err(|refusal| {
            tracing::debug!(error = %refusal, method = %req.method(), path = req.uri().path(), "admin call refused");
            refusal.into_response()
        })
    }
}

/// The `Host` rule; then, for anything that may change state (not `GET`
/// or `HEAD`), the admin header and the admin token.
fn admit<B>(server: &ServerConfig, req: &Request<B>) -> Result<(), Refusal> {
    crate::host::check(req, &server.allowed_hosts)?;
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    if req.headers().get(ADMIN_HEADER).map(HeaderValue::as_bytes) != Some(b"1") {
        return Err(Refusal::NoAdminHeader);
    }
    let Some(token) = &server.admin_token else {
        return Ok(());
    };
    match bearer(req.headers()) {
        Some(presented) if token.matches(presented) => Ok(()),
        _ => Err(Refusal::BadToken),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &header::HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?.as_bytes();
    if values.next().is_some() || value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(&value[7..])
}

/// 200 once the integration token is held; else 503 with the reason (and a
/// background login attempt, which the login gate keeps bounded).
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let live = app.live();
    if live.tokens.token_times(Identity::ApiUser).await.is_some() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let gate = live.tokens.login_status(Identity::ApiUser);
    let reason = match (&gate.parked, gate.backoff_remaining_secs, &gate.last_error) {
        (Some(r), _, _) => format!("API user login rejected: {r}"),
        (None, Some(s), e) => format!(
            "API user login backing off ({s:.0}s left) after: {}",
            e.as_deref().unwrap_or("a failure")
        ),
        _ => {
            let tokens = live.tokens.clone();
            tokio::spawn(async move {
                let _ = tokens.warm().await;
            });
            "no integration token yet".to_owned()
        }
    };
    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[derive(serde::Serialize)]
struct PrincipalStatus {
    name: String,
    kind: &'static str,
    /// fresh, empty, backoff or parked.
    state: &'static str,
    issued_at: Option<String>,
    expires_at: Option<String>,
    #[serde(flatten)]
    gate: crate::tokens::gate::GateStatus,
}

async fn one_status(tokens: &TokenStore, name: String, kind: &'static str, who: Identity) -> PrincipalStatus {
    let times = tokens.token_times(who).await;
    let gate = tokens.login_status(who);
    let state = if gate.parked.is_some() {
        "parked"
    } else if gate.backoff_remaining_secs.is_some() {
        "backoff"
    } else if times.is_some() {
        "fresh"
    } else {
        "empty"
    };
    PrincipalStatus {
        name,
        kind,
        state,
        issued_at: times.map(|t| rfc3339(t.0)),
        expires_at: times.map(|t| rfc3339(t.1)),
        gate,
    }
}

async fn status(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let live = app.live();
    let tokens = &live.tokens;
    let api_user = one_status(
        tokens,
        live.config.api_user.login.clone(),
        "api_user",
        Identity::ApiUser,
    )
    .await;
    let mut principals = Vec::with_capacity(live.config.principals.len());
    for (i, p) in live.config.principals.iter().enumerate() {
        let kind = match &p.kind {
            PrincipalKind::User { external_type, .. } => external_type.kind_name(),
            PrincipalKind::Anonymous => "anonymous",
            PrincipalKind::Bearer => "bearer",
        };
        principals.push(one_status(tokens, p.name.clone(), kind, Identity::of(&live.config, i)).await);
    }
    Json(serde_json::json!({
        "api_user": api_user,
        "principals": principals,
        "cached_tokens": tokens.cached_tokens().await,
        // Kind, user, fingerprint and reason, never a password: what
        // `kmproxy check --login` matches to skip them.
        "parked_credentials": tokens.parked_credentials(),
        "cache": cache_status(tokens.cache_state()),
    }))
}

/// Fleet mode's part of `/status`: `"off"` without `[cache]`, else its
/// state and, while degraded, why (the reason never holds a password).
fn cache_status(state: Option<crate::fleet::CacheState>) -> serde_json::Value {
    use crate::fleet::CacheState;
    match state {
        None => serde_json::json!("off"),
        Some(CacheState::Ok) => serde_json::json!({ "state": "ok" }),
        Some(CacheState::Degraded(reason)) => {
            serde_json::json!({ "state": "degraded", "reason": reason.to_string() })
        }
    }
}

/// `POST /principals/NAME/reset`: un-parks that principal's own login
/// (a user principal's); the API user's state is not touched. A principal
/// without a login of its own (anonymous, bearer) logs in as the API user:
/// that is `POST /api-user/reset`, and asking here changes nothing.
async fn reset_principal(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let live = app.live();
    let Some(p) = live.config.principal_id(&name) else {
        let detail = format!("no principal named `{name}`");
        return refusal(StatusCode::NOT_FOUND, "Unknown principal", "KMPROXY-PRINCIPAL", &detail);
    };
    if !matches!(live.config.principals[p].kind, PrincipalKind::User { .. }) {
        let detail =
            format!("principal `{name}` has no login of its own: it uses the API user's (POST /api-user/reset)");
        return refusal(StatusCode::CONFLICT, "No login to reset", "KMPROXY-PRINCIPAL", &detail);
    }
    live.tokens.reset_principal(p).await;
    tracing::info!(principal = %name, "reset by operator");
    (StatusCode::OK, Json(serde_json::json!({"reset": name}))).into_response()
}

/// `POST /api-user/reset`: un-parks the API user (whose integration token
/// every principal carries), and nothing else.
async fn reset_api_user(State(app): State<Arc<App>>) -> Response {
    let live = app.live();
    live.tokens.reset_api_user().await;
    tracing::info!(api_user = %live.config.api_user.login, "API user reset by operator");
    (StatusCode::OK, Json(serde_json::json!({"reset": "api_user"}))).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let live = app.live();
    app.metrics.cached_tokens.set(live.tokens.cached_tokens().await as i64);
    app.metrics.parked_principals.set(live.tokens.parked() as i64);
    app.metrics.calls_in_flight.set(live.calls_in_flight() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
