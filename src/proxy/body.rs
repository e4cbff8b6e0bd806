//! Bodies on the data path: the caller's request body, read whole up to
//! `max_body` (it must be replayable after a session error, and a body over
//! the limit must not reach the upstream at all); and the upstream's error
//! answers, of which only a bounded prefix is read to look for a session
//! error before the whole answer is streamed on.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{header, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::error::ProxyError;

/// Reads a request body whole, refusing one over `max` bytes; a declared
/// `Content-Length` over the limit is refused before reading anything.
pub async fn read_request<B>(headers: &HeaderMap, body: B, max: usize) -> Result<Bytes, ProxyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.is_end_stream() {
        return Ok(Bytes::new()); // no body at all: nothing to read
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ProxyError::BodyTooLarge(max));
    }
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ProxyError::BodyTooLarge(max)),
        Err(_) => Err(ProxyError::BodyRead),
    }
}

/// The first bytes of an upstream answer, and the rest still unread.
pub struct Peeked {
    /// Up to the limit (or the whole body, when it was shorter).
    pub prefix: Bytes,
    rest: Option<Incoming>,
}

impl Peeked {
    /// Reads up to `limit` bytes of `body`.
    pub async fn read(mut body: Incoming, limit: usize) -> Result<Self, hyper::Error> {
        let mut buf = BytesMut::new();
        while buf.len() < limit {
            match body.frame().await {
                None => {
                    return Ok(Self {
                        prefix: buf.freeze(),
                        rest: None,
                    })
                }
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
        Ok(Self {
            prefix: buf.freeze(),
            rest: Some(body),
        })
    }

    /// The whole answer again: the prefix, then the unread rest, streamed.
    pub fn into_body(self) -> Body {
        match self.rest {
            None => Body::from(self.prefix),
            Some(rest) => {
                let head = futures_util::stream::once(std::future::ready(Ok::<_, axum::Error>(self.prefix)));
                let tail = rest.into_data_stream().map(|r| r.map_err(axum::Error::new));
                Body::from_stream(head.chain(tail))
            }
        }
    }
}
