//! The admin listener: liveness, readiness, status per principal, metrics,
//! and the operator's un-park switch. Never shows a token or a secret.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::config::PrincipalKind;
use crate::error::error_body;
use crate::proxy::App;
use crate::tokens::Key;

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
    if app.tokens.token_times(Key::Integration).await.is_some() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let gate = app.tokens.gate(None).status(Instant::now());
    let reason = match (&gate.parked, gate.backoff_remaining_secs, &gate.last_error) {
        (Some(r), _, _) => format!("API user login rejected: {r}"),
        (None, Some(s), e) => format!(
            "API user login backing off ({s:.0}s left) after: {}",
            e.as_deref().unwrap_or("a failure")
        ),
        _ => {
            let tokens = app.tokens.clone();
            if let Some(p) = (0..app.config.principals.len()).next() {
                tokio::spawn(async move {
                    let _ = tokens.credentials(p).await;
                });
            }
            "no integration token yet".to_owned()
        }
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {reason}\n"),
    )
        .into_response()
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

async fn one_status(
    app: &App,
    name: String,
    kind: &'static str,
    key: Key,
    gate_of: Option<usize>,
) -> PrincipalStatus {
    let times = app.tokens.token_times(key).await;
    let gate = app.tokens.gate(gate_of).status(Instant::now());
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
    let api_user = one_status(
        &app,
        app.config.api_user.login.clone(),
        "api_user",
        Key::Integration,
        None,
    )
    .await;
    let mut principals = Vec::with_capacity(app.config.principals.len());
    for (i, p) in app.config.principals.iter().enumerate() {
        let s = match &p.kind {
            PrincipalKind::User { external_type, .. } => {
                let kind = match external_type {
                    crate::config::ExternalType::Account => "account",
                    crate::config::ExternalType::Contact => "contact",
                };
                one_status(&app, p.name.clone(), kind, Key::User(i), Some(i)).await
            }
            PrincipalKind::Anonymous => {
                one_status(&app, p.name.clone(), "anonymous", Key::Integration, None).await
            }
            PrincipalKind::Bearer => {
                one_status(&app, p.name.clone(), "bearer", Key::Integration, None).await
            }
        };
        principals.push(s);
    }
    Json(serde_json::json!({
        "api_user": api_user,
        "principals": principals,
        "cached_tokens": app.tokens.cached_tokens().await,
    }))
}

async fn reset(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match app.config.principal_id(&name) {
        Some(p) => {
            app.tokens.reset(p);
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
    let mut s = String::new();
    let now = Instant::now();
    let _ = writeln!(
        s,
        "# HELP kmproxy_logins_total Upstream logins by principal and outcome."
    );
    let _ = writeln!(s, "# TYPE kmproxy_logins_total counter");
    let mut gates = vec![("api_user".to_owned(), app.tokens.gate(None).status(now))];
    for (i, p) in app.config.principals.iter().enumerate() {
        if matches!(p.kind, PrincipalKind::User { .. }) {
            gates.push((p.name.clone(), app.tokens.gate(Some(i)).status(now)));
        }
    }
    for (name, g) in &gates {
        for (outcome, n) in [
            ("ok", g.logins_ok),
            ("rejected", g.logins_rejected),
            ("failed", g.logins_failed),
        ] {
            let _ = writeln!(
                s,
                "kmproxy_logins_total{{principal=\"{name}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        s,
        "# HELP kmproxy_parked_principals Principals whose login was rejected."
    );
    let _ = writeln!(s, "# TYPE kmproxy_parked_principals gauge");
    let parked = gates.iter().filter(|(_, g)| g.parked.is_some()).count();
    let _ = writeln!(s, "kmproxy_parked_principals {parked}");
    let (scheduled, session) = app.tokens.renewal_counts();
    let _ = writeln!(
        s,
        "# HELP kmproxy_token_renewals_total Token renewals by reason."
    );
    let _ = writeln!(s, "# TYPE kmproxy_token_renewals_total counter");
    let _ = writeln!(
        s,
        "kmproxy_token_renewals_total{{reason=\"scheduled\"}} {scheduled}"
    );
    let _ = writeln!(
        s,
        "kmproxy_token_renewals_total{{reason=\"session_error\"}} {session}"
    );
    let _ = writeln!(s, "# HELP kmproxy_cached_tokens Tokens held in the cache.");
    let _ = writeln!(s, "# TYPE kmproxy_cached_tokens gauge");
    let _ = writeln!(
        s,
        "kmproxy_cached_tokens {}",
        app.tokens.cached_tokens().await
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response()
}
