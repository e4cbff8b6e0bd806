//! Replay once, the product's central decision: send the call with the
//! principal's tokens; if the upstream says the session expired, drop
//! exactly the tokens that call used, log in again (shared with every
//! concurrent caller) and send it once more, with the same body. A second
//! session error in a row reaches the caller unchanged.
//!
//! One [`exchange`] sends the call and reads just enough of the answer to
//! tell an ordinary answer (streamed on untouched) from a session error:
//! 2xx answers are never read here; of any other, the first
//! [`session_error::PEEK_LIMIT`] bytes.

use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Uri};
use http_body_util::Full;

use super::body::{IdleTimeout, Peeked};
use super::{headers, CallInfo, ProxyError};
use crate::app::Live;
use crate::config::{Config, PrincipalId};
use crate::kmauthtoken::{self, CallerFields};
use crate::metrics::Metrics;
use crate::session_error;
use crate::tokens::Credentials;
use crate::upstream::{self, Origin};

/// A call ready to be sent (and sent again): everything but the tokens.
pub struct Call<'a> {
    parts: &'a Parts,
    /// The whole request body, kept for a replay.
    body: Bytes,
    origin: &'a Origin,
    /// The request target on `origin`.
    target: Uri,
    /// A `bearer` principal: the caller's `Authorization` goes along.
    bearer: bool,
    /// The non-secret `kmauthtoken` fields the caller sent.
    caller_fields: Option<CallerFields>,
    request_id: &'a HeaderValue,
    config: &'a Config,
}

/// What one exchange came to.
pub enum Outcome {
    /// An answer for the caller.
    Answer(Response),
    /// The upstream said the session expired; its answer, in case the
    /// caller is to get it after all.
    SessionExpired(Response),
}

impl<'a> Call<'a> {
    pub fn new(
        parts: &'a Parts,
        body: Bytes,
        origin: &'a Origin,
        bearer: bool,
        caller_fields: Option<CallerFields>,
        request_id: &'a HeaderValue,
        config: &'a Config,
    ) -> Result<Self, ProxyError> {
        let pq = parts.uri.path_and_query().ok_or(super::route::Refusal::NotFound)?;
        let target = origin.target(pq).map_err(|_| super::route::Refusal::BadPath)?;
        Ok(Self {
            parts,
            body,
            origin,
            target,
            bearer,
            caller_fields,
            request_id,
            config,
        })
    }

    /// The upstream request carrying `creds`.
    fn request(&self, creds: &Credentials, live: &Live) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.parts.method.clone();
        *req.uri_mut() = self.target.clone();
        *req.headers_mut() = headers::for_upstream(
            &self.parts.headers,
            &self.config.server.caller_key_header,
            self.bearer,
            self.request_id,
        );
        req.headers_mut().insert(
            kmauthtoken::HEADER,
            creds.kmauthtoken(self.caller_fields.as_ref(), live.tokens.defaults()),
        );
        req
    }
}

/// Sends `call` as `principal`, and once more after a session error.
pub async fn send(
    live: &Live,
    metrics: &Metrics,
    call: &Call<'_>,
    principal: PrincipalId,
    info: &mut CallInfo,
) -> Result<Response, ProxyError> {
    loop {
        let creds = live.tokens.credentials(principal).await?;
        let mut res = match exchange(live, metrics, call, &creds, info).await? {
            // No call asks for an upgrade: passed on, a 101 would end the
            // caller's connection with nothing to switch to.
            Outcome::Answer(res) if res.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                return Err(ProxyError::UnexpectedUpgrade)
            }
            Outcome::Answer(res) => res,
            // A second session error in a row reaches the caller.
            Outcome::SessionExpired(res) if info.replayed => res,
            Outcome::SessionExpired(_) => {
                let name = &live.config.principals[principal].name;
                tracing::info!(principal = %name, "session expired upstream; logging in again and replaying");
                live.tokens.invalidate(principal, &creds).await;
                metrics.replays.inc();
                info.replayed = true;
                continue;
            }
        };
        headers::strip_hop_by_hop(res.headers_mut());
        return Ok(res);
    }
}

/// One exchange: sends the call with `creds`, and tells a session error
/// from an answer, within `upstream.timeout` of sending.
async fn exchange(
    live: &Live,
    metrics: &Metrics,
    call: &Call<'_>,
    creds: &Credentials,
    info: &mut CallInfo,
) -> Result<Outcome, ProxyError> {
    let timeout = live.config.upstream.timeout;
    let sent = Instant::now();
    // The deadline from `sent`: no second clock read.
    let deadline = tokio::time::Instant::from_std(sent) + timeout;
    let exchange = async {
        let res = live.client.request(call.origin, call.request(creds, live)).await?;
        let head_after = sent.elapsed();
        metrics.upstream_seconds.observe(head_after.as_secs_f64());
        info.upstream = Some(info.upstream.unwrap_or_default() + head_after);
        if res.status().is_success() {
            return Ok(Outcome::Answer(res.map(|b| Body::new(IdleTimeout::new(b, timeout)))));
        }
        let (head, incoming) = res.into_parts();
        let peeked = Peeked::read(incoming, session_error::PEEK_LIMIT)
            .await
            .map_err(|e| upstream::Error::exchange(std::sync::Arc::clone(call.origin.name()), e))?;
        let expired = session_error::is_session_error(&peeked.prefix, &live.config.tokens.session_error_codes);
        let res = Response::from_parts(head, peeked.into_body(timeout));
        Ok::<_, upstream::Error>(if expired {
            Outcome::SessionExpired(res)
        } else {
            Outcome::Answer(res)
        })
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(outcome) => Ok(outcome?),
        Err(_) => Err(upstream::Error::Timeout {
            origin: std::sync::Arc::clone(call.origin.name()),
            after: timeout,
        }
        .into()),
    }
}
