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

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::HeaderName;
use http_body_util::Full;

use crate::callers;
use crate::config::{Config, PrincipalKind};
use crate::error::ProxyError;
use crate::kmauthtoken::CallerFields;
use crate::session_error;
use crate::tokens::TokenStore;
use crate::upstream::{HttpClient, Origin};
use body::Peeked;
use route::Api;

/// The `kmauthtoken` header name.
pub const KMAUTHTOKEN: HeaderName = HeaderName::from_static("kmauthtoken");

/// Everything the data path needs; shared by every call.
pub struct App {
    pub config: Arc<Config>,
    pub tokens: TokenStore,
    client: HttpClient,
    /// `base_url`, for `/km/api/`.
    content: Origin,
    /// `search_base_url`, for `/srt/api/`.
    search: Origin,
}

impl App {
    /// Builds the shared state for `config`.
    pub fn new(config: Arc<Config>) -> Result<Arc<Self>, String> {
        let client = crate::upstream::client(&config.upstream).map_err(|e| e.to_string())?;
        Ok(Arc::new(Self {
            tokens: TokenStore::new(Arc::clone(&config), client.clone())?,
            content: Origin::parse(&config.upstream.base_url)?,
            search: Origin::parse(&config.upstream.search_base_url)?,
            client,
            config,
        }))
    }
}

/// The axum handler for every data-plane request.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    match forward(&app, req).await {
        Ok(res) => res,
        Err(e) => {
            tracing::warn!(status = e.status().as_u16(), error = %e, "call refused");
            e.into_response()
        }
    }
}

async fn forward(app: &App, req: Request) -> Result<Response, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let api = route::classify(parts.uri.path())?;
    let config = &app.config;
    let id = callers::identify(config, &parts.headers)?;
    let bearer = matches!(config.principals[id.principal].kind, PrincipalKind::Bearer);
    if bearer && !headers::has_bearer(&parts.headers) {
        return Err(ProxyError::MissingBearer(
            config.principals[id.principal].name.clone(),
        ));
    }
    let caller_fields = parts
        .headers
        .get(&KMAUTHTOKEN)
        .map(|v| CallerFields::parse(v.as_bytes()))
        .transpose()?;
    let body = body::read_request(&parts.headers, body, config.server.max_body).await?;
    headers::for_upstream(&mut parts.headers, &config.server.caller_key_header, bearer);
    let origin = match api {
        Api::Content => &app.content,
        Api::Search => &app.search,
    };
    let pq = parts.uri.path_and_query().ok_or(ProxyError::NotFound)?;
    let uri = origin
        .uri(pq)
        .map_err(|e| ProxyError::Upstream(e.to_string()))?;

    let mut replayed = false;
    loop {
        let creds = app.tokens.credentials(id.principal).await?;
        let mut req = http::Request::new(Full::new(body.clone()));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = parts.headers.clone();
        req.headers_mut().insert(
            KMAUTHTOKEN,
            creds.kmauthtoken(caller_fields.as_ref(), app.tokens.defaults()),
        );

        let exchange = async {
            let res = app
                .client
                .request(req)
                .await
                .map_err(|e| ProxyError::Upstream(error_chain(&e)))?;
            if res.status().is_success() {
                return Ok::<_, ProxyError>((res.map(Body::new), false));
            }
            let (head, incoming) = res.into_parts();
            let peeked = Peeked::read(incoming, session_error::PEEK_LIMIT)
                .await
                .map_err(|e| ProxyError::Upstream(error_chain(&e)))?;
            let expired =
                session_error::is_session_error(&peeked.prefix, &config.tokens.session_error_codes);
            Ok((Response::from_parts(head, peeked.into_body()), expired))
        };
        let (mut res, expired) = tokio::time::timeout(config.upstream.timeout, exchange)
            .await
            .map_err(|_| ProxyError::UpstreamTimeout(config.upstream.timeout))??;
        if expired && !replayed {
            tracing::info!(principal = %config.principals[id.principal].name, "session expired upstream; logging in again and replaying");
            app.tokens.invalidate(id.principal, &creds).await;
            replayed = true;
            continue;
        }
        headers::strip_hop_by_hop(res.headers_mut());
        return Ok(res);
    }
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
