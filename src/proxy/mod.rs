//! The data path: identify the caller, attach its principal's tokens,
//! forward the call, stream the answer back, and after a session error log
//! in again and replay the call once.
//!
//! Per call: the path is classified ([`route`]); the caller is identified
//! ([`crate::callers`]); the request body is read (capped in size, time
//! and memory, so it can be replayed: [`request_body`]); headers are
//! cleaned ([`headers`]); a managed caller's session gets its interaction
//! ([`interactions`]); then [`replay`] sends it with the principal's
//! prepared `kmauthtoken`, and sends it once more if the upstream said the
//! session (or the managed interaction) expired. Every refusal and failure is a [`ProxyError`], answered
//! in Oracle's shape ([`error`]); one sent before the body was read whole
//! is settled so the connection stays usable ([`early`]).

pub mod body;
pub mod client_logins;
pub mod early;
pub mod error;
pub mod headers;
pub mod interactions;
pub mod replay;
pub mod request_body;
pub mod route;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use http::request::Parts;
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
use request_body::{Budget, Rules};
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
    let started = tracing::enabled!(target: "kmproxy::access", tracing::Level::INFO).then(Instant::now);
    let live = app.live();
    let (parts, mut body) = req.into_parts();
    // A body must be whole within `body_read_timeout` of its head; a
    // bodyless call reads no clock for it.
    let deadline = (!http_body::Body::is_end_stream(&body))
        .then(|| tokio::time::Instant::now() + live.config.server.body_read_timeout);
    let id = request_id(&parts.headers);
    let span = tracing::info_span!("request", id = %String::from_utf8_lossy(id.as_bytes()));
    let mut info = CallInfo::default();
    let head = Head {
        parts: &parts,
        deadline,
        budget: &app.metrics.request_body_bytes,
    };
    // Boxed: the call's future is then a few hundred bytes, cheap for
    // hyper to move and store, where inline it would be several KiB.
    // (The box is made first and instrumented after: the future is
    // written into its box once, not into an `Instrumented` and again.)
    let forwarding = Box::pin(forward(&app, &live, &head, &mut body, &id, &mut info)).instrument(span.clone());
    let mut res = match forwarding.await {
        Ok(res) => res,
        // Boxed too: a refusal's settling would double this future's size.
        Err(e) => Box::pin(refuse(e, &live, &span, body, parts.version, deadline)).await,
    };
    res.headers_mut().insert(REQUEST_ID, id);
    let status = res.status().as_u16();
    if let Some(started) = started {
        span.in_scope(|| access_line(&live, &app, &parts, &info, status, started));
    }
    count(&live, &app, &info, status);
    res
}

/// The answer to a call refused or failed before it was answered, settled
/// so that the connection stays usable ([`early`]).
async fn refuse(
    e: ProxyError,
    live: &Live,
    span: &tracing::Span,
    body: Incoming,
    version: http::Version,
    deadline: Option<tokio::time::Instant>,
) -> Response {
    span.in_scope(|| log_refusal(&e));
    let mut res = e.into_response();
    // A refused upload is read and thrown away up to twice `max_body` (the
    // rest of a body just over it), no further.
    let linger_max = 2 * live.config.server.max_body as u64;
    early::settle(body, version, deadline, linger_max, &mut res).await;
    res
}

/// The caller's mistakes are not the operator's problem.
fn log_refusal(e: &ProxyError) {
    if e.status().is_server_error() {
        tracing::warn!(status = e.status().as_u16(), error = %e, "call failed");
    } else {
        tracing::debug!(status = e.status().as_u16(), error = %e, "call refused");
    }
}

/// The metrics label of the call's caller.
fn caller_label<'a>(live: &'a Live, app: &'a App, info: &CallInfo) -> &'a Arc<String> {
    match info.caller {
        Caller::None => &app.metrics.no_caller,
        Caller::Unknown => &app.metrics.unknown_caller,
        Caller::Known(i) => &live.caller_labels[i],
    }
}

/// Writes the call's access line.
fn access_line(live: &Live, app: &App, parts: &Parts, info: &CallInfo, status: u16, started: Instant) {
    let principal = info.principal.map_or("-", |p| live.config.principals[p].name.as_str());
    tracing::info!(
        target: "kmproxy::access",
        caller = %caller_label(live, app, info),
        principal,
        method = %parts.method,
        path = parts.uri.path(),
        status,
        upstream_ms = info.upstream.map(|d| d.as_secs_f64() * 1e3),
        replayed = info.replayed,
        total_ms = started.elapsed().as_secs_f64() * 1e3,
        "call"
    )
}

/// Counts the call by caller and status.
fn count(live: &Live, app: &App, info: &CallInfo, status: u16) {
    match (status, info.caller) {
        (200, Caller::Known(i)) => live.ok_counters[i].inc(),
        (200, Caller::None) => live.ok_counters[live.caller_labels.len()].inc(),
        _ => app
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                caller: Arc::clone(caller_label(live, app, info)),
                status,
            })
            .inc(),
    };
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

/// A request's head, and what its body is read under.
struct Head<'a> {
    parts: &'a Parts,
    /// When the body must be whole; `None` for a bodyless request.
    deadline: Option<tokio::time::Instant>,
    budget: &'a Budget,
}

async fn forward(
    app: &App,
    live: &Live,
    head: &Head<'_>,
    body: &mut Incoming,
    request_id: &HeaderValue,
    info: &mut CallInfo,
) -> Result<Response, ProxyError> {
    let parts = head.parts;
    let config = &live.config;
    crate::host::check_head(&parts.headers, &parts.uri, parts.version, &config.server.allowed_hosts)?;
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
            let (body, _held) = match head.deadline {
                None => Default::default(),
                Some(deadline) => Box::pin(read_body(config, head, deadline, body)).await?,
            };
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
    // Callers without managed interactions: one branch, no allocation.
    let session = interactions::session(
        &app.interactions,
        config,
        caller,
        principal,
        &parts.headers,
        caller_fields.as_ref(),
    )?;
    // A slot is taken once the call is known to be forwarded (refusals
    // above never wait) and before its body is read; the answer holds it
    // until it has been sent, so `max_in_flight` bounds upstream
    // connections too, not only calls waiting for an answer head.
    let slot = match Arc::clone(&live.in_flight).try_acquire_owned() {
        Ok(slot) => slot,
        // Boxed: waiting is the exception, and this future stays small.
        Err(_) => Box::pin(wait_for_slot(live)).await?,
    };
    let (body, _held) = match head.deadline {
        None => Default::default(),
        Some(deadline) => Box::pin(read_body(config, head, deadline, body)).await?,
    };
    let origin = match api {
        Api::Content => &live.content,
        Api::Search => &live.search,
    };
    let call = Call::new(parts, body, origin, bearer, caller_fields, request_id, config)?.in_session(session);
    replay::send(live, &app.metrics, &call, principal, info, slot).await
}

/// Reads the request body under the server's rules (boxed by the caller:
/// bodyless calls, the most common, never build this future).
async fn read_body<'a>(
    config: &crate::config::Config,
    head: &Head<'a>,
    deadline: tokio::time::Instant,
    body: &mut Incoming,
) -> Result<(bytes::Bytes, Option<request_body::Reservation<'a>>), ProxyError> {
    let server = &config.server;
    let rules = Rules {
        max_body: server.max_body,
        deadline,
        timeout: server.body_read_timeout,
        budget: head.budget,
        max_buffered: server.max_buffered,
    };
    let (bytes, held) = request_body::read_request(body, &rules).await?;
    Ok((bytes, Some(held)))
}

/// Waits up to `server.queue_timeout` for one of the `max_in_flight` slots.
async fn wait_for_slot(live: &Live) -> Result<tokio::sync::OwnedSemaphorePermit, ProxyError> {
    let server = &live.config.server;
    let slot = Arc::clone(&live.in_flight).acquire_owned();
    match tokio::time::timeout(server.queue_timeout, slot).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ProxyError::Overloaded(server.max_in_flight)),
    }
}
