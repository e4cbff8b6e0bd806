//! The admin listener: liveness, readiness, status per principal, metrics,
//! and the operator's un-park switch. Never shows a token or a secret.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::PrincipalKind;
use crate::proxy::error::error_body;
use crate::tokens::{Identity, TokenStore};

/// The admin router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/principals/{name}/reset", post(reset))
        .with_state(app)
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
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
    }))
}

async fn reset(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let live = app.live();
    match live.config.principal_id(&name) {
        Some(p) => {
            live.tokens.reset(Identity::of(&live.config, p)).await;
            tracing::info!(principal = %name, "reset by operator");
            (StatusCode::OK, Json(serde_json::json!({"reset": name}))).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            error_body(
                "Unknown principal",
                "KMPROXY-PRINCIPAL",
                &format!("no principal named `{name}`"),
            ),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let live = app.live();
    app.metrics.cached_tokens.set(live.tokens.cached_tokens().await as i64);
    app.metrics.parked_principals.set(live.tokens.parked() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
