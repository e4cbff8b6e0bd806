//! The data path: identify the caller, attach its principal's tokens,
//! forward the call, stream the answer back, and after a session error log
//! in again and replay the call once.
//!
//! Per call: the path is classified ([`route`]); the caller is identified
//! ([`crate::callers`]); the request body is read (capped, so it can be
//! replayed: [`body`]); headers are cleaned ([`headers`]); then
//! [`replay`] sends it with the principal's prepared `kmauthtoken`, and
//! sends it once more if the upstream said the session expired. Every
//! refusal and failure is a [`ProxyError`], answered in Oracle's shape
//! ([`error`]).

pub mod body;
pub mod client_logins;
pub mod error;
pub mod headers;
pub mod replay;
pub mod route;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Request};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::app::{App, Live};
use crate::callers::{self, Caller};
use crate::config::{ClientLogins, PrincipalKind};
use crate::kmauthtoken::{self, CallerFields};
use crate::metrics::RequestLabels;
pub use error::ProxyError;
use replay::Call;
use route::Api;

/// The request id header, kept from the caller or made.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the access line and metrics say about a call.
#[derive(Default)]
pub struct CallInfo {
    caller: Caller,
    principal: Option<usize>,
    /// Time to the upstream's answer head, summed over the exchanges.
    pub upstream: Option<Duration>,
    /// The call was sent a second time after a session error.
    pub replayed: bool,
}

/// Answers one data-plane request (every path: forwarding and kmproxy's
/// own errors alike).
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response {
    // What the access line needs is taken only when it is written.
    let access = tracing::enabled!(target: "kmproxy::access", tracing::Level::INFO)
        .then(|| (Instant::now(), req.method().clone(), req.uri().clone()));
    let live = app.live();
    let id = request_id(req.headers());
    let span = tracing::info_span!("request", id = %String::from_utf8_lossy(id.as_bytes()));
    let mut info = CallInfo::default();
    // Boxed: the call's future is then a few hundred bytes, cheap for
    // hyper to move and store, where inline it would be several KiB.
    let forwarding = Box::pin(forward(&app, &live, req, &id, &mut info).instrument(span.clone()));
    let mut res = match forwarding.await {
        Ok(res) => res,
        Err(e) => {
            // The caller's mistakes are not the operator's problem.
            span.in_scope(|| {
                if e.status().is_server_error() {
                    tracing::warn!(status = e.status().as_u16(), error = %e, "call failed");
                } else {
                    tracing::debug!(status = e.status().as_u16(), error = %e, "call refused");
                }
            });
            e.into_response()
        }
    };
    res.headers_mut().insert(REQUEST_ID, id);
    let status = res.status().as_u16();
    let label = || match info.caller {
        Caller::None => &app.metrics.no_caller,
        Caller::Unknown => &app.metrics.unknown_caller,
        Caller::Known(i) => &live.caller_labels[i],
    };
    if let Some((started, method, uri)) = access {
        let principal = info.principal.map_or("-", |p| live.config.principals[p].name.as_str());
        span.in_scope(|| {
            tracing::info!(
                target: "kmproxy::access",
                caller = %label(),
                principal,
                method = %method,
                path = uri.path(),
                status,
                upstream_ms = info.upstream.map(|d| d.as_secs_f64() * 1e3),
                replayed = info.replayed,
                total_ms = started.elapsed().as_secs_f64() * 1e3,
                "call"
            )
        });
    }
    match (status, info.caller) {
        (200, Caller::Known(i)) => live.ok_counters[i].inc(),
        (200, Caller::None) => live.ok_counters[live.caller_labels.len()].inc(),
        _ => app
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                caller: Arc::clone(label()),
                status,
            })
            .inc(),
    };
    res
}

/// The caller's `x-request-id` when it is a sane token, else a new one.
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    match headers.get(&REQUEST_ID) {
        Some(v) if !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()) => v.clone(),
        _ => new_request_id(),
    }
}

/// A new request id: 16 hex digits drawn at random once per process, then
/// 16 of a counter, so ids are unique within a process and unlikely to
/// collide across sidecars, without a random draw per call.
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&prefix.to_be_bytes());
    raw[8..].copy_from_slice(&n.to_be_bytes());
    let mut buf = [0u8; 32];
    // 16 bytes as 32 hex digits: always a valid header value.
    let _ = hex::encode_to_slice(raw, &mut buf);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

async fn forward(
    app: &App,
    live: &Live,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    info: &mut CallInfo,
) -> Result<Response, ProxyError> {
    crate::host::check(&req, &live.config.server.allowed_hosts)?;
    let (parts, body) = req.into_parts();
    let config = &live.config;
    let client_logins = config.server.client_logins == ClientLogins::Answer;
    // The caller is learnt first, so that even a refused call is counted
    // under it; the path's verdict still comes first.
    let (caller, principal) = match client_logins {
        false => callers::identify(config, &parts.headers),
        true => client_logins::identify(config, &app.placeholders, &parts.headers)?,
    };
    info.caller = caller;
    let api = match route::classify(&parts.uri) {
        Err(route::Refusal::AuthPath) if client_logins => {
            let endpoint = client_logins::endpoint(&parts.method, parts.uri.path()).ok_or(route::Refusal::AuthPath)?;
            let body = body::read_request(body, client_logins::MAX_BODY).await?;
            return client_logins::answer(config, &app.placeholders, endpoint, caller, &parts.headers, &body);
        }
        api => api?,
    };
    let principal = principal?;
    info.principal = Some(principal);
    let bearer = matches!(config.principals[principal].kind, PrincipalKind::Bearer);
    if bearer && !headers::has_bearer(&parts.headers) {
        return Err(ProxyError::MissingBearer(config.principals[principal].name.clone()));
    }
    let caller_fields = parts
        .headers
        .get(&kmauthtoken::HEADER)
        .map(|v| CallerFields::parse(v.as_bytes()))
        .transpose()?;
    // A slot is taken once the call is known to be forwarded (refusals
    // above never wait) and before its body is read.
    let _permit = match live.in_flight.try_acquire() {
        Ok(permit) => permit,
        // Boxed: waiting is the exception, and this future stays small.
        Err(_) => Box::pin(wait_for_slot(live)).await?,
    };
    let body = body::read_request(body, config.server.max_body).await?;
    let origin = match api {
        Api::Content => &live.content,
        Api::Search => &live.search,
    };
    let call = Call::new(&parts, body, origin, bearer, caller_fields, request_id, config)?;
    replay::send(live, &app.metrics, &call, principal, info).await
}

/// Waits up to `server.queue_timeout` for one of the `max_in_flight` slots.
async fn wait_for_slot(live: &Live) -> Result<tokio::sync::SemaphorePermit<'_>, ProxyError> {
    let server = &live.config.server;
    match tokio::time::timeout(server.queue_timeout, live.in_flight.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ProxyError::Overloaded(server.max_in_flight)),
    }
}
