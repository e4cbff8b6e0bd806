//! The unauthenticated HTTP test hooks under `/__sim/`, for the demo,
//! docker compose and black-box tests:
//!
//! | request | effect |
//! |---|---|
//! | `POST /__sim/expire` | expire every token and interaction id issued so far |
//! | `POST /__sim/expire-interactions` | expire every interaction id issued so far (tokens stay valid) |
//! | `GET /__sim/stats` | login counters by kind, user, outcome; request count; routed paths; pending faults and modes |
//! | `POST /__sim/fail-logins?status=503&count=3[&retry_after=S]` | answer the next `count` logins with `status` (defaults 503, 1), with `Retry-After: S` when given |
//! | `POST /__sim/session-error?count=1` | answer the next `count` API calls with a session error (default 1) |
//! | `POST /__sim/delay?ms=N` | delay every API answer by N ms (0 turns it off) |
//! | `POST /__sim/login-delay?ms=N[&outcome=ok\|rejected\|failed]` | hold every login answer (or only those of `outcome`) back N ms, after the login is counted |
//! | `POST /__sim/close-connections?on=true` | answer everything with `Connection: close` (`on=false` stops) |
//! | `POST /__sim/servlet-paths?on=true` | route each path's servlet reading (`;params` stripped, decoded, dot segments resolved) |
//! | `POST /__sim/bearer-session-error?on=true` | answer an unaccepted bearer token with a session error instead of `OK-AUTH0005` |
//! | `POST /__sim/session-error-shape?shape=api\|object\|errors\|list\|portal` | shape every API call's session error (JSON) that way; `portal` is the Customer Portal's token error, `{"errors":[{"code":"OK-GEN0003"}]}` with status 200 |
//! | `POST /__sim/reset` | zero the counters and records, and clear injected faults, delays and modes |
//!
//! Hooks answer `{"ok":true}` (stats: the stats object); a bad parameter is a 400.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::SessionShape;
use super::state::Shared;
use super::{LoginKind, LoginOutcome};

/// The `/__sim/` routes; state is supplied by the caller.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/__sim/expire", post(expire))
        .route("/__sim/expire-interactions", post(expire_interactions))
        .route("/__sim/stats", get(stats))
        .route("/__sim/fail-logins", post(fail_logins))
        .route("/__sim/session-error", post(session_error))
        .route("/__sim/delay", post(delay))
        .route("/__sim/close-connections", post(close_connections))
        .route("/__sim/login-delay", post(login_delay))
        .route("/__sim/servlet-paths", post(servlet_paths))
        .route("/__sim/bearer-session-error", post(bearer_session_error))
        .route("/__sim/session-error-shape", post(session_error_shape))
        .route("/__sim/reset", post(reset))
}

fn ok() -> Response {
    Json(json!({ "ok": true })).into_response()
}

async fn expire(State(shared): State<Arc<Shared>>) -> Response {
    shared.expire_all();
    ok()
}

async fn expire_interactions(State(shared): State<Arc<Shared>>) -> Response {
    shared.expire_interactions();
    ok()
}

fn kind_name(kind: LoginKind) -> &'static str {
    match kind {
        LoginKind::Integration => "integration",
        LoginKind::Account => "account",
        LoginKind::Contact => "contact",
    }
}

fn outcome_name(outcome: LoginOutcome) -> &'static str {
    match outcome {
        LoginOutcome::Ok => "ok",
        LoginOutcome::Rejected => "rejected",
        LoginOutcome::Failed => "failed",
    }
}

fn outcome_named(name: &str) -> Option<LoginOutcome> {
    [LoginOutcome::Ok, LoginOutcome::Rejected, LoginOutcome::Failed]
        .into_iter()
        .find(|o| outcome_name(*o) == name)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `{"logins":[{kind,user,outcome,count}], "loginTotals":{kind:{outcome:n}},
/// "totalLogins", "requestCount", "connections", "routedPaths":[{method,path}],
/// "pendingLoginFailures", "pendingLoginFailure":{status,retryAfter}|null,
/// "pendingSessionErrors", "delayMs", "loginDelayMs", "loginDelayMsByOutcome":{outcome:ms},
/// "servletPaths", "sessionErrorShape", "bearerSessionErrors":{on,count}}`.
pub(crate) fn stats_json(shared: &Shared) -> Value {
    let counts = shared.login_counts();
    let mut totals: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for kind in [LoginKind::Integration, LoginKind::Account, LoginKind::Contact] {
        let per = totals.entry(kind_name(kind)).or_default();
        for outcome in [LoginOutcome::Ok, LoginOutcome::Rejected, LoginOutcome::Failed] {
            per.insert(outcome_name(outcome), shared.logins(kind, None, outcome));
        }
    }
    let logins: Vec<Value> = counts
        .into_iter()
        .map(|(kind, user, outcome, count)| {
            json!({
                "kind": kind_name(kind),
                "user": user,
                "outcome": outcome_name(outcome),
                "count": count,
            })
        })
        .collect();
    let (login_faults, session_errors) = shared.pending_faults();
    let routed: Vec<Value> = shared
        .routed_paths()
        .into_iter()
        .map(|(method, path)| json!({ "method": method.as_str(), "path": path }))
        .collect();
    let by_outcome: BTreeMap<&str, u64> = [LoginOutcome::Ok, LoginOutcome::Rejected, LoginOutcome::Failed]
        .into_iter()
        .map(|o| (outcome_name(o), millis(shared.login_delay_for(o))))
        .collect();
    let pending_fault = shared
        .pending_login_fault()
        .map(|f| json!({ "status": f.status.as_u16(), "retryAfter": f.retry_after }));
    json!({
        "logins": logins,
        "loginTotals": totals,
        "totalLogins": shared.total_logins(),
        "requestCount": shared.request_count(),
        "connections": shared.connections(),
        "routedPaths": routed,
        "pendingLoginFailures": login_faults,
        "pendingLoginFailure": pending_fault,
        "pendingSessionErrors": session_errors,
        "delayMs": millis(shared.delay()),
        "loginDelayMs": millis(shared.login_delay()),
        "loginDelayMsByOutcome": by_outcome,
        "servletPaths": shared.servlet_paths(),
        "sessionErrorShape": shared.session_error_shape().name(),
        "bearerSessionErrors": {
            "on": shared.bearer_session_errors_on(),
            "count": shared.bearer_session_error_count(),
        },
    })
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(stats_json(&shared)).into_response()
}

fn bad(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "ok": false, "error": error }))).into_response()
}

#[derive(Deserialize)]
struct FailLogins {
    status: Option<u16>,
    count: Option<u32>,
    /// Seconds, sent as `Retry-After`.
    retry_after: Option<u64>,
}

async fn fail_logins(State(shared): State<Arc<Shared>>, Query(q): Query<FailLogins>) -> Response {
    let status = q.status.unwrap_or(503);
    if StatusCode::from_u16(status).is_err() {
        return bad("status must be an HTTP status (100-999)");
    }
    let retry_after = q.retry_after.map(Duration::from_secs);
    shared.set_login_faults(status, q.count.unwrap_or(1), retry_after);
    ok()
}

#[derive(Deserialize)]
struct Count {
    count: Option<u32>,
}

async fn session_error(State(shared): State<Arc<Shared>>, Query(q): Query<Count>) -> Response {
    shared.set_session_errors(q.count.unwrap_or(1));
    ok()
}

#[derive(Deserialize)]
struct Delay {
    ms: u64,
}

async fn delay(State(shared): State<Arc<Shared>>, Query(q): Query<Delay>) -> Response {
    shared.set_delay(Duration::from_millis(q.ms));
    ok()
}

#[derive(Deserialize)]
struct LoginDelay {
    ms: u64,
    /// `ok`, `rejected` or `failed`: only logins of this outcome.
    outcome: Option<String>,
}

async fn login_delay(State(shared): State<Arc<Shared>>, Query(q): Query<LoginDelay>) -> Response {
    let d = Duration::from_millis(q.ms);
    match q.outcome.as_deref().map(outcome_named) {
        None => shared.set_login_delay(d),
        Some(Some(outcome)) => shared.set_outcome_delay(outcome, d),
        Some(None) => return bad("outcome must be ok, rejected or failed"),
    }
    ok()
}

#[derive(Deserialize)]
struct On {
    on: bool,
}

async fn close_connections(State(shared): State<Arc<Shared>>, Query(q): Query<On>) -> Response {
    shared.set_close_connections(q.on);
    ok()
}

async fn servlet_paths(State(shared): State<Arc<Shared>>, Query(q): Query<On>) -> Response {
    shared.set_servlet_paths(q.on);
    ok()
}

async fn bearer_session_error(State(shared): State<Arc<Shared>>, Query(q): Query<On>) -> Response {
    shared.set_bearer_session_errors(q.on);
    ok()
}

#[derive(Deserialize)]
struct Shape {
    shape: String,
}

async fn session_error_shape(State(shared): State<Arc<Shared>>, Query(q): Query<Shape>) -> Response {
    match SessionShape::ALL.into_iter().find(|s| s.name() == q.shape) {
        Some(shape) => shared.set_session_error_shape(shape),
        None => return bad("shape must be api, object, errors, list or portal"),
    }
    ok()
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset_counters();
    shared.reset_faults();
    ok()
}
