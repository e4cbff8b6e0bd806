//! The data path: identify the caller, attach its principal's tokens,
//! forward the call, stream the answer back, and after a session error log
//! in again and replay the call once.
//!
//! Per call: the path is classified ([`route`]); the caller is identified
//! ([`crate::callers`]); the request body is read (capped, so it can be
//! replayed); headers are cleaned ([`headers`]); the principal's prepared
//! `kmauthtoken` is attached; the answer streams back untouched unless it
//! is a non-2xx whose first bytes carry a session error code, in which case
//! exactly the tokens used are dropped and the call is sent once more.

pub mod body;
pub mod headers;
pub mod route;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{HeaderValue, Request};
use hyper::body::Incoming;
use tracing::Instrument;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::HeaderName;
use http_body_util::Full;

use crate::callers;
use crate::config::{Config, PrincipalKind};
use crate::error::ProxyError;
use crate::kmauthtoken::CallerFields;
use crate::metrics::{Metrics, RequestLabels};
use crate::session_error;
use crate::tokens::TokenStore;
use crate::upstream::{HttpClient, Origin};
use body::{IdleTimeout, Peeked};
use prometheus_client::metrics::counter::Counter;
use route::Api;

/// The `kmauthtoken` header name.
pub const KMAUTHTOKEN: HeaderName = HeaderName::from_static("kmauthtoken");
/// The request id header, kept from the caller or made.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Everything the data path needs, shared by every call. The part that
/// follows the config is swapped as a whole on reload; calls in flight
/// finish with the one they started with.
pub struct App {
    live: ArcSwap<Live>,
    pub metrics: Arc<Metrics>,
}

/// The state built from one config.
pub struct Live {
    pub config: Arc<Config>,
    pub tokens: TokenStore,
    client: HttpClient,
    /// `base_url`, for `/km/api/`.
    content: Origin,
    /// `search_base_url`, for `/srt/api/`.
    search: Origin,
    /// Metric label per caller.
    caller_labels: Box<[Arc<String>]>,
    /// `kmproxy_requests_total{status="200"}` per caller, then for calls
    /// without a key: the usual answer is counted without a label lookup.
    ok_counters: Box<[Counter]>,
    /// One permit per call being handled (`server.max_in_flight`).
    in_flight: tokio::sync::Semaphore,
}

impl Live {
    fn build(config: Arc<Config>, tokens: TokenStore, client: HttpClient, metrics: &Metrics) -> Result<Self, String> {
        let caller_labels: Box<[Arc<String>]> = config.callers.iter().map(|c| Arc::new(c.name.clone())).collect();
        let ok_counters = caller_labels
            .iter()
            .chain(std::iter::once(&metrics.no_caller))
            .map(|caller| {
                metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        caller: Arc::clone(caller),
                        status: 200,
                    })
                    .clone()
            })
            .collect();
        Ok(Self {
            ok_counters,
            content: client.origin(&config.upstream.base_url)?,
            search: client.origin(&config.upstream.search_base_url)?,
            in_flight: tokio::sync::Semaphore::new(config.server.max_in_flight),
            caller_labels,
            tokens,
            client,
            config,
        })
    }
}

impl App {
    /// Builds the shared state for `config`.
    pub fn new(config: Arc<Config>) -> Result<Arc<Self>, String> {
        let metrics = Arc::new(Metrics::new());
        let client = crate::upstream::client(&config.upstream).map_err(|e| e.to_string())?;
        let tokens = TokenStore::new(Arc::clone(&config), client.clone(), Arc::clone(&metrics))?;
        Ok(Arc::new(Self {
            live: ArcSwap::from_pointee(Live::build(config, tokens, client, &metrics)?),
            metrics,
        }))
    }

    /// The current state.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Swaps in a new config. Identities whose credentials are unchanged
    /// keep their tokens (and lockout state); returns the names of those
    /// that start afresh.
    pub async fn reload(&self, config: Config) -> Result<Vec<String>, String> {
        let old = self.live();
        let config = Arc::new(config);
        let client = crate::upstream::client(&config.upstream).map_err(|e| e.to_string())?;
        let (tokens, restarted) = TokenStore::succeed(
            Arc::clone(&config),
            client.clone(),
            Arc::clone(&self.metrics),
            &old.tokens,
        )
        .await?;
        self.live
            .store(Arc::new(Live::build(config, tokens, client, &self.metrics)?));
        // Only now: had the build failed, the old store would still serve.
        old.tokens.retire();
        Ok(restarted)
    }
}

/// Who called, as far as kmproxy could tell.
#[derive(Clone, Copy, Default)]
enum Caller {
    /// No caller key.
    #[default]
    None,
    /// A key that matched no caller.
    Unknown,
    /// `config.callers[i]`.
    Known(usize),
}

/// What the access line and metrics say about a call.
#[derive(Default)]
struct CallInfo {
    caller: Caller,
    principal: Option<usize>,
    upstream: Option<Duration>,
    replayed: bool,
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
    let forwarding = Box::pin(forward(&live, &app.metrics, req, &id, &mut info).instrument(span.clone()));
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
    live: &Live,
    metrics: &Metrics,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    info: &mut CallInfo,
) -> Result<Response, ProxyError> {
    let (parts, body) = req.into_parts();
    let api = route::classify(&parts.uri).map_err(|refusal| match refusal {
        route::Refusal::NotFound => ProxyError::NotFound,
        route::Refusal::AuthPath => ProxyError::AuthPath,
        route::Refusal::BadPath | route::Refusal::RawBytes => ProxyError::BadPath,
    })?;
    let config = &live.config;
    let id = callers::identify(config, &parts.headers).inspect_err(|e| {
        if matches!(e, ProxyError::UnknownCaller) {
            info.caller = Caller::Unknown;
        }
    })?;
    info.caller = id.caller.map_or(Caller::None, Caller::Known);
    info.principal = Some(id.principal);
    let bearer = matches!(config.principals[id.principal].kind, PrincipalKind::Bearer);
    if bearer && !headers::has_bearer(&parts.headers) {
        return Err(ProxyError::MissingBearer(config.principals[id.principal].name.clone()));
    }
    let caller_fields = parts
        .headers
        .get(&KMAUTHTOKEN)
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
    let pq = parts.uri.path_and_query().ok_or(ProxyError::NotFound)?;
    let target = origin.target(pq).map_err(|e| ProxyError::Upstream(e.to_string()))?;

    loop {
        let creds = live.tokens.credentials(id.principal).await?;
        let mut req = http::Request::new(Full::new(body.clone()));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = target.clone();
        *req.headers_mut() =
            headers::for_upstream(&parts.headers, &config.server.caller_key_header, bearer, request_id);
        req.headers_mut().insert(
            KMAUTHTOKEN,
            creds.kmauthtoken(caller_fields.as_ref(), live.tokens.defaults()),
        );

        let sent = Instant::now();
        let exchange = async {
            let res = live.client.request(origin, req).await.map_err(|e| {
                if is_timeout(&e) {
                    ProxyError::UpstreamTimeout(config.upstream.connect_timeout)
                } else {
                    ProxyError::Upstream(error_chain(&e))
                }
            })?;
            let head_after = sent.elapsed();
            if res.status().is_success() {
                let idle = config.upstream.timeout;
                return Ok::<_, ProxyError>((res.map(|b| Body::new(IdleTimeout::new(b, idle))), false, head_after));
            }
            let (head, incoming) = res.into_parts();
            let peeked = Peeked::read(incoming, session_error::PEEK_LIMIT)
                .await
                .map_err(|e| ProxyError::Upstream(error_chain(&e)))?;
            let expired = session_error::is_session_error(&peeked.prefix, &config.tokens.session_error_codes);
            Ok((
                Response::from_parts(head, peeked.into_body(config.upstream.timeout)),
                expired,
                head_after,
            ))
        };
        // The deadline from `sent`: no second clock read.
        let deadline = tokio::time::Instant::from_std(sent) + config.upstream.timeout;
        let outcome = tokio::time::timeout_at(deadline, exchange).await;
        let (mut res, expired, head_after) =
            outcome.map_err(|_| ProxyError::UpstreamTimeout(config.upstream.timeout))??;
        metrics.upstream_seconds.observe(head_after.as_secs_f64());
        info.upstream = Some(info.upstream.unwrap_or_default() + head_after);
        if expired && !info.replayed {
            tracing::info!(principal = %config.principals[id.principal].name, "session expired upstream; logging in again and replaying");
            live.tokens.invalidate(id.principal, &creds).await;
            metrics.replays.inc();
            info.replayed = true;
            continue;
        }
        headers::strip_hop_by_hop(res.headers_mut());
        return Ok(res);
    }
}

/// Waits up to `server.queue_timeout` for one of the `max_in_flight` slots.
async fn wait_for_slot(live: &Live) -> Result<tokio::sync::SemaphorePermit<'_>, ProxyError> {
    let server = &live.config.server;
    match tokio::time::timeout(server.queue_timeout, live.in_flight.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ProxyError::Overloaded(server.max_in_flight)),
    }
}

/// True when an error or one of its sources is an I/O timeout (such as the
/// connector's `connect_timeout`).
pub fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// A one-line description of an error and its sources (hyper's errors hide
/// the useful part, such as "connection refused", in their source chain).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
