//! Managed interactions: for a caller with `interactions = "managed"`,
//! kmproxy starts one Knowledge Advanced interaction per (caller,
//! principal, end-user session), keeps its id while the session is used,
//! and adds it to the call's `kmauthtoken` as `knowledgeInteractionId`
//! with `interactionIdGenerated: "true"`.
//!
//! The caller names the session in [`SESSION_HEADER`]; without it, or when
//! the caller sent its own `knowledgeInteractionId` (which always wins), no
//! interaction is added ([`session`] says `None`). Concurrent first calls
//! of one session share one `startInteraction` (moka's `try_get_with`). An
//! `OK-SEC0012` answer to a call that carried a managed interaction
//! ([`expired`]) drops exactly that id ([`Session::forget`]); the replay
//! then starts a new one.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::Full;

use super::body::Peeked;
use crate::app::Live;
use crate::callers::Caller;
use crate::config::{Config, PrincipalId};
use crate::interactions::Interactions;
use crate::kmauthtoken::{self, CallerFields, MAX_INTERACTION_ID};
use crate::session_error::Reading;
use crate::tokens::{Credentials, TokenError};
use crate::upstream;

/// The header naming the caller's end-user session.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("x-kmproxy-session");

/// Longest session id accepted, in characters (visible ASCII only).
pub const MAX_SESSION: usize = 128;

/// The code of an expired or unknown interaction.
pub const EXPIRED_CODE: &str = "OK-SEC0012";

/// The most of a `startInteraction` answer read.
const MAX_ANSWER: usize = 16 * 1024;

/// Why a call's interaction could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("x-kmproxy-session must be 1 to {MAX_SESSION} visible ASCII characters")]
    BadSession,
    #[error("startInteraction failed: {0}")]
    Start(Arc<StartError>),
}

/// Why `startInteraction` gave no id.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Upstream(#[from] upstream::Error),
    #[error("the upstream answered {0}")]
    Status(StatusCode),
    #[error("`{0}` is not a request path (upstream.api_version)")]
    Path(String),
    #[error("the answer holds no knowledgeInteractionId")]
    NoId,
    #[error("the knowledgeInteractionId is longer than {MAX_INTERACTION_ID} characters")]
    IdTooLong,
}

/// A call's managed session.
pub struct Session<'a> {
    store: &'a Interactions,
    /// Caller, principal and session ([`Interactions::key`]).
    key: String,
    /// A `bearer` principal's `Authorization`, for the start call too.
    authorization: Option<HeaderValue>,
}

/// The interaction a call carries: its id, and the caller's fields with it.
pub struct Carried {
    pub id: Arc<str>,
    pub fields: CallerFields,
}

/// The call's managed session, if it has one: a managed caller that sent
/// [`SESSION_HEADER`] and no `knowledgeInteractionId` of its own.
pub fn session<'a>(
    store: &'a Interactions,
    config: &Config,
    caller: Caller,
    principal: PrincipalId,
    headers: &HeaderMap,
    fields: Option<&CallerFields>,
) -> Result<Option<Session<'a>>, Error> {
    let Some(c) = caller
        .known()
        .filter(|&c| config.callers[c].interactions == crate::config::Interactions::Managed)
    else {
        return Ok(None);
    };
    let Some(raw) = headers.get(SESSION_HEADER) else {
        return Ok(None);
    };
    let id = raw.to_str().map_err(|_| Error::BadSession)?;
    if id.is_empty() || id.len() > MAX_SESSION || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::BadSession);
    }
    if fields.is_some_and(CallerFields::has_interaction) {
        return Ok(None);
    }
    let (caller, principal) = (&config.callers[c].name, &config.principals[principal].name);
    Ok(Some(Session {
        store,
        key: Interactions::key(caller, principal, id),
        authorization: headers.get(header::AUTHORIZATION).cloned(),
    }))
}

impl Session<'_> {
    /// The session's interaction (started by the first call that needs it,
    /// joined by every concurrent one), added to the caller's fields.
    pub async fn carried(
        &self,
        live: &Live,
        principal: PrincipalId,
        fields: Option<&CallerFields>,
    ) -> Result<Carried, Error> {
        let start = start(live, principal, self.authorization.as_ref());
        let id = self.store.get_or_start(&self.key, start).await.map_err(Error::Start)?;
        let fields = fields.cloned().unwrap_or_default().with_interaction(&id);
        Ok(Carried { id, fields })
    }

    /// Drops `used`, the id an `OK-SEC0012` answer refused, unless another
    /// call has replaced it already (that newer one is kept).
    pub async fn forget(&self, used: &Arc<str>) {
        self.store.forget(&self.key, used).await;
    }
}

/// True when an answer is `OK-SEC0012` (the interaction the call carried
/// has ended). Looked for only in non-2xx answers of calls that carried a
/// managed interaction, in the bytes [`super::body::examine`] read.
pub fn expired(status: StatusCode, headers: &HeaderMap, prefix: &[u8]) -> bool {
    static CODES: LazyLock<[String; 1]> = LazyLock::new(|| [EXPIRED_CODE.to_owned()]);
    !status.is_success() && Reading::of(headers).is_some_and(|r| r.is_session_error(prefix, &CODES[..]))
}

/// Starts an interaction as `principal`; a session error on the way is
/// met as on any call: drop the tokens used, log in again, once.
async fn start(live: &Live, principal: PrincipalId, auth: Option<&HeaderValue>) -> Result<Arc<str>, StartError> {
    let mut relogged = false;
    loop {
        let creds = live.tokens.credentials(principal).await?;
        let (status, headers, body) = start_once(live, &creds, auth).await?;
        let codes = &live.config.tokens.session_error_codes;
        let session_error = Reading::of(&headers).is_some_and(|r| r.is_session_error(&body, codes));
        if session_error && !relogged && live.tokens.invalidate(principal, &creds).await {
            tracing::info!("session expired upstream on startInteraction; logging in again");
            relogged = true;
            continue;
        }
        if !status.is_success() || session_error {
            return Err(StartError::Status(status));
        }
        return interaction_id(&body);
    }
}

/// One `GET {base_url}/km/api/{api_version}/knowledgeInteraction/startInteraction`,
/// its answer read (up to [`MAX_ANSWER`]) within `upstream.timeout`.
async fn start_once(
    live: &Live,
    creds: &Credentials,
    auth: Option<&HeaderValue>,
) -> Result<(StatusCode, HeaderMap, Bytes), StartError> {
    let origin = &live.content;
    let path = format!(
        "/km/api/{}/knowledgeInteraction/startInteraction",
        live.config.upstream.api_version
    );
    let target = http::uri::PathAndQuery::try_from(path.as_str())
        .ok()
        .and_then(|pq| origin.target(&pq).ok())
        .ok_or(StartError::Path(path))?;
    let timeout = live.config.upstream.timeout;
    let exchange = async {
        let mut req = http::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = target;
        let headers = req.headers_mut();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(kmauthtoken::HEADER, creds.kmauthtoken(None, live.tokens.defaults()));
        if let Some(auth) = auth {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        let (head, body) = live.client.request(origin, req).await?.into_parts();
        let peeked = Peeked::read(body, MAX_ANSWER)
            .await
            .map_err(|e| upstream::Error::exchange(Arc::clone(origin.name()), e))?;
        Ok::<_, upstream::Error>((head.status, head.headers, peeked.prefix))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(StartError::Upstream(upstream::Error::Timeout {
            origin: Arc::clone(origin.name()),
            after: timeout,
        })),
    }
}

/// The id in a `startInteraction` answer: its `knowledgeInteractionId`
/// field, or the whole answer when it is a bare JSON string.
fn interaction_id(body: &[u8]) -> Result<Arc<str>, StartError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| StartError::NoId)?;
    let id = match &value {
        serde_json::Value::String(s) => s,
        serde_json::Value::Object(o) => match o.get("knowledgeInteractionId") {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err(StartError::NoId),
        },
        _ => return Err(StartError::NoId),
    };
    match id.chars().count() {
        0 => Err(StartError::NoId),
        n if n > MAX_INTERACTION_ID => Err(StartError::IdTooLong),
        _ => Ok(Arc::from(id.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_field_or_a_bare_string() {
        assert_eq!(
            &*interaction_id(br#"{"knowledgeInteractionId":"K1"}"#).expect("an id"),
            "K1"
        );
        assert_eq!(&*interaction_id(br#""K2""#).expect("an id"), "K2");
        for bad in [
            &br#"{"id":"K"}"#[..],
            b"7",
            b"",
            br#""""#,
            br#"{"knowledgeInteractionId":7}"#,
            b"<x/>",
        ] {
            assert!(matches!(interaction_id(bad), Err(StartError::NoId)), "{bad:?}");
        }
        let long = format!("\"{}\"", "k".repeat(65));
        assert!(matches!(interaction_id(long.as_bytes()), Err(StartError::IdTooLong)));
        assert!(interaction_id(format!("\"{}\"", "k".repeat(64)).as_bytes()).is_ok());
    }

    #[test]
    fn sec0012_is_looked_for_in_error_answers_only() {
        let mut json = HeaderMap::new();
        json.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = br#"{"error":{"errorCode":"OK-SEC0012","title":"x"}}"#;
        assert!(expired(StatusCode::BAD_REQUEST, &json, body));
        assert!(!expired(StatusCode::OK, &json, body));
        assert!(!expired(
            StatusCode::BAD_REQUEST,
            &json,
            br#"{"error":{"errorCode":"OK-GEN0001"}}"#
        ));
        let xml = b"<error><errorCode>OK-SEC0012</errorCode></error>";
        assert!(expired(StatusCode::BAD_REQUEST, &HeaderMap::new(), xml));
    }
}
