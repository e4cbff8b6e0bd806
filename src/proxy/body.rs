//! Answer bodies on the data path: the upstream's error answers, of which
//! only a bounded prefix is read to look for a session error before the
//! whole answer is streamed on, and the idle timeout of a streamed answer.
//! (The caller's request body is [`super::request_body`]'s.)

use crate::upstream::PooledBody;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::BodyExt;

/// The first bytes of an upstream answer, and the rest still unread.
pub struct Peeked {
    /// Up to the limit (or the whole body, when it was shorter).
    pub prefix: Bytes,
    rest: Option<PooledBody>,
}

impl Peeked {
    /// Reads up to `limit` bytes of `body`.
    pub async fn read(mut body: PooledBody, limit: usize) -> Result<Self, hyper::Error> {
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

    /// The whole answer again: the prefix, then the unread rest, streamed
    /// (failing if the rest stalls for `idle`).
    pub fn into_body(self, idle: std::time::Duration) -> Body {
        match self.rest {
            None => Body::from(self.prefix),
            Some(rest) => {
                let rest = IdleTimeout::new(rest, idle);
                let head = futures_util::stream::once(std::future::ready(Ok::<_, axum::Error>(self.prefix)));
                let tail = rest.into_data_stream().map(|r| r.map_err(axum::Error::new));
                Body::from_stream(head.chain(tail))
            }
        }
    }
}

/// An upstream answer's body that fails when no data arrives for
/// `timeout` (a stalled upstream), ending the caller's answer abortively
/// instead of holding its connection for ever. The timer is only armed
/// when the body first has to wait (an answer that arrives whole with its
/// head costs none), and then one timer serves the whole body: data only
/// marks progress, and when the timer fires after progress it is re-armed.
/// So a stall is caught after between one and two `timeout`s, and a
/// streamed answer costs no timer work per piece.
pub struct IdleTimeout<B> {
    inner: B,
    timeout: std::time::Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Data arrived since the timer was last armed.
    progressed: bool,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, timeout: std::time::Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
            progressed: false,
        }
    }
}

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent no data for {0:?}")]
pub struct BodyStalled(std::time::Duration);

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            this.progressed = true;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        if this.sleep.is_none() {
            this.progressed = false; // the first wait: time it from now
        }
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        while sleep.as_mut().poll(cx).is_ready() {
            if !std::mem::take(&mut this.progressed) {
                return Poll::Ready(Some(Err(Box::new(BodyStalled(timeout)))));
            }
            sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
