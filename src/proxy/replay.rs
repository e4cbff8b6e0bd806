//! Replay once, the product's central decision: send the call with the
//! principal's tokens; if the upstream says the session expired, drop
//! exactly the tokens that call used, log in again (shared with every
//! concurrent caller) and send it once more, with the same body. A second
//! session error in a row reaches the caller unchanged, and so does one
//! that would re-login an identity within `min_relogin_interval` of its
//! last session-error re-login.
//!
//! A call that carries a managed interaction ([`super::interactions`]) and
//! is answered `OK-SEC0012` (the interaction expired) has its own replay:
//! that interaction is dropped, a new one started, and the call sent once
//! more; a second `OK-SEC0012` reaches the caller. A caller's own
//! `knowledgeInteractionId` is never replaced, so never replayed for.
//!
//! One [`exchange`] sends the call and reads just enough of the answer to
//! tell an ordinary answer (streamed on untouched) from a session error
//! ([`body::examine`]): of a non-2xx answer, the first
//! [`crate::session_error::PEEK_LIMIT`] bytes; of a 2xx answer, its first frame,
//! and more only when it opens an `errors` document.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Uri};
use http_body_util::Full;

use super::body;
use super::interactions::{self, Carried, Session};
use super::{headers, CallInfo, ProxyError};
use crate::app::Live;
use crate::config::{Config, PrincipalId};
use crate::kmauthtoken::{self, CallerFields};
use crate::metrics::Metrics;
use crate::tokens::Credentials;
use crate::upstream::links::{self, Rewritten, Target};
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
    /// A managed caller's end-user session: the call carries its interaction.
    session: Option<Session<'a>>,
}

/// An upstream answer as one exchange read it, not yet holding a slot.
type Upstream = http::Response<body::Answer>;

/// What one exchange came to.
pub enum Outcome {
    /// An answer for the caller, holding the call's `max_in_flight` slot.
    Answer(Response),
    /// The upstream said the session expired; its answer, in case the
    /// caller is to get it after all (boxed: the rare case keeps the
    /// call's future small).
    SessionExpired(Box<Upstream>),
    /// `OK-SEC0012` to a call carrying a managed interaction; its answer,
    /// in case the caller is to get it after all.
    InteractionExpired(Box<Upstream>),
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
            session: None,
        })
    }

    /// The call as one of `session`'s (`None`: no managed interaction).
    pub fn in_session(self, session: Option<Session<'a>>) -> Self {
        Self { session, ..self }
    }

    /// kmproxy's address as the caller reached it: its `Host` (or, over
    /// HTTP/2, the `:authority`), checked already.
    fn host(&self) -> Option<&str> {
        match self.parts.headers.get(header::HOST) {
            Some(h) => h.to_str().ok(),
            None => self.parts.uri.authority().map(|a| a.as_str()),
        }
    }

    /// The upstream request carrying `creds` and the caller's `fields`.
    fn request(&self, creds: &Credentials, fields: Option<&CallerFields>, live: &Live) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.parts.method.clone();
        *req.uri_mut() = self.target.clone();
        *req.headers_mut() = headers::for_upstream(
            &self.parts.headers,
            &self.config.server.caller_key_header,
            self.bearer,
            self.request_id,
        );
        req.headers_mut()
            .insert(kmauthtoken::HEADER, creds.kmauthtoken(fields, live.tokens.defaults()));
        req
    }
}

/// Sends `call` as `principal`, and once more after a session error; a
/// call carrying a managed interaction, also once more after `OK-SEC0012`.
/// The answer the caller gets holds `slot` (the call's `max_in_flight`
/// permit) until it has been sent whole or dropped.
pub async fn send(
    live: &Live,
    metrics: &Metrics,
    call: &Call<'_>,
    principal: PrincipalId,
    info: &mut CallInfo,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<Response, ProxyError> {
    // The managed interaction the call carries (`None`: none, or not yet had).
    let mut carried: Option<Carried> = None;
    let mut interaction_replayed = false;
    // Taken by the answer the caller gets.
    let mut slot = Some(slot);
    // An expired answer the caller is to get after all.
    let to_caller = |res: Box<Upstream>, slot: &mut Option<_>| {
        let (mut head, answer) = res.into_parts();
        let body = answer_body(&mut head, answer.holding(slot.take()), live, call);
        Response::from_parts(head, body)
    };
    loop {
        let creds = live.tokens.credentials(principal).await?;
        // The rarer awaits below are boxed: inline, their futures (a cache
        // lookup that may start an interaction, a re-login) would make every
        // call's future several KiB, copied whole each time a call starts.
        if let (Some(session), None) = (&call.session, &carried) {
            carried = Some(Box::pin(session.carried(live, principal, call.caller_fields.as_ref())).await?);
        }
        let fields = carried.as_ref().map(|c| &c.fields).or(call.caller_fields.as_ref());
        let mut res = match exchange(live, metrics, call, &creds, fields, info, &mut slot).await? {
            // No call asks for an upgrade: passed on, a 101 would end the
            // caller's connection with nothing to switch to.
            Outcome::Answer(res) if res.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                return Err(ProxyError::UnexpectedUpgrade)
            }
            Outcome::Answer(res) => res,
            // A second session error in a row reaches the caller.
            Outcome::SessionExpired(res) if info.replayed => to_caller(res, &mut slot),
            Outcome::SessionExpired(res) => match Box::pin(relogin(live, metrics, principal, &creds, info)).await {
                true => continue,
                // Within `min_relogin_interval` of the last re-login.
                false => to_caller(res, &mut slot),
            },
            // A second expired interaction reaches the caller too.
            Outcome::InteractionExpired(res) if interaction_replayed => to_caller(res, &mut slot),
            Outcome::InteractionExpired(res) => match Box::pin(forget_interaction(call, carried.take())).await {
                true => {
                    interaction_replayed = true;
                    continue;
                }
                false => to_caller(res, &mut slot),
            },
        };
        headers::strip_hop_by_hop(res.headers_mut());
        return Ok(res);
    }
}

/// After `OK-SEC0012`: drops the interaction the call carried (the next
/// send starts a new one) and says whether the call is to be sent again.
async fn forget_interaction(call: &Call<'_>, carried: Option<Carried>) -> bool {
    let (Some(session), Some(ended)) = (&call.session, carried) else {
        return false;
    };
    tracing::info!("interaction expired upstream (OK-SEC0012); starting a new one and replaying");
    session.forget(&ended.id).await;
    true
}

/// After a session error: drops the tokens `creds` held and says whether
/// the call is to be sent again (not within `min_relogin_interval` of the
/// identity's last re-login).
async fn relogin(
    live: &Live,
    metrics: &Metrics,
    principal: PrincipalId,
    creds: &Credentials,
    info: &mut CallInfo,
) -> bool {
    if !live.tokens.invalidate(principal, creds).await {
        return false;
    }
    let name = &live.config.principals[principal].name;
    tracing::info!(principal = %name, "session expired upstream; logging in again and replaying");
    metrics.replays.inc();
    info.replayed = true;
    true
}

/// The answer's body, its links pointing back at kmproxy (`Location`,
/// `Content-Location` and a JSON answer's strings on an upstream origin,
/// as the caller reached kmproxy). An answer with neither costs two header
/// lookups and one look at the content type; a JSON answer that came whole
/// with its head is rewritten at once, keeping an exact `Content-Length`,
/// or passed on untouched when it names no upstream base.
fn answer_body(head: &mut http::response::Parts, answer: body::Answer, live: &Live, call: &Call<'_>) -> Body {
    let Some(links) = &live.links else {
        return Body::new(answer);
    };
    let headers = &head.headers;
    let located = headers.contains_key(header::LOCATION) || headers.contains_key(header::CONTENT_LOCATION);
    let json = call.parts.method != http::Method::HEAD && links::is_plain_json(headers);
    let host = match call.host() {
        Some(host) if located || json => host,
        _ => return Body::new(answer),
    };
    if located {
        links.rewrite_headers(&mut head.headers, &Target::at(host));
    }
    if !json {
        return Body::new(answer);
    }
    match answer.whole() {
        Some(whole) => match links.rewrite_whole(whole, host) {
            None => Body::new(answer),
            Some(rewritten) => {
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
                Body::new(answer.with_whole(rewritten))
            }
        },
        None => {
            // The length changes: the answer goes out chunked.
            head.headers.remove(header::CONTENT_LENGTH);
            Body::new(Rewritten::new(answer, Arc::clone(links), Target::at(host)))
        }
    }
}

/// One exchange: sends the call with `creds`, and tells a session error
/// from an answer, within `upstream.timeout` of sending. An answer for the
/// caller takes `slot`; an expired one leaves it for the replay.
async fn exchange(
    live: &Live,
    metrics: &Metrics,
    call: &Call<'_>,
    creds: &Credentials,
    fields: Option<&CallerFields>,
    info: &mut CallInfo,
    slot: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Outcome, ProxyError> {
    let timeout = live.config.upstream.timeout;
    let sent = Instant::now();
    // The deadline from `sent`: no second clock read.
    let deadline = tokio::time::Instant::from_std(sent) + timeout;
    let exchange = async {
        let res = live
            .client
            .request(call.origin, call.request(creds, fields, live))
            .await?;
        let head_after = sent.elapsed();
        metrics.upstream_seconds.observe(head_after.as_secs_f64());
        info.upstream = Some(info.upstream.unwrap_or_default() + head_after);
        let (head, incoming) = res.into_parts();
        let codes = &live.config.tokens.session_error_codes;
        let (expired, peeked) = body::examine(head.status, &head.headers, incoming, codes)
            .await
            .map_err(|e| upstream::Error::exchange(std::sync::Arc::clone(call.origin.name()), e))?;
        // Only a call carrying a managed interaction looks for `OK-SEC0012`.
        let ended =
            !expired && call.session.is_some() && interactions::expired(head.status, &head.headers, &peeked.prefix);
        let answer = peeked.into_answer(timeout);
        Ok::<_, upstream::Error>(match (expired, ended) {
            (true, _) => Outcome::SessionExpired(Box::new(Response::from_parts(head, answer))),
            (false, true) => Outcome::InteractionExpired(Box::new(Response::from_parts(head, answer))),
            (false, false) => {
                let mut head = head;
                let body = answer_body(&mut head, answer.holding(slot.take()), live, call);
                Outcome::Answer(Response::from_parts(head, body))
            }
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
