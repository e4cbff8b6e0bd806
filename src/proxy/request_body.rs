//! The caller's request body, read whole before it is forwarded (it must be
//! replayable after a session error, and a body over `max_body` must not
//! reach the upstream at all), at bounded cost:
//!
//! - **size**: over `max_body` is 413, refused before reading anything when
//!   `Content-Length` says so;
//! - **time**: a body not whole within `body_read_timeout` of its head is
//!   408, so a trickle holds no `max_in_flight` slot past it;
//! - **memory**: the bytes held across all calls are counted in one
//!   [`Budget`] and never exceed `max_buffered` (503 past it): a declared
//!   length is reserved before its first byte is read, a chunked body as it
//!   grows. A body costs about its size: with a `Content-Length` it is read
//!   into one buffer of exactly that capacity; without, its chunks are kept
//!   as they came and joined once at the end (both counted while joining).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use super::ProxyError;

/// Request-body bytes held at once across all calls: the gauge
/// `kmproxy_request_body_bytes`, reserved against directly (one atomic,
/// no lock, no second count to keep in step).
pub type Budget = Gauge;

/// Bytes of a [`Budget`] held by one call; given back when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl<'a> Reservation<'a> {
    fn empty(budget: &'a Budget) -> Self {
        Self { budget, bytes: 0 }
    }

    /// Holds `n` more bytes, if the budget's total stays within `max`.
    fn grow(&mut self, n: usize, max: usize) -> Result<(), ProxyError> {
        let (n64, max64) = (
            i64::try_from(n).unwrap_or(i64::MAX),
            i64::try_from(max).unwrap_or(i64::MAX),
        );
        let fits = |held: i64| held.checked_add(n64).filter(|total| *total <= max64);
        match self
            .budget
            .inner()
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, fits)
        {
            Ok(_) => {
                self.bytes += n;
                Ok(())
            }
            Err(_) => Err(ProxyError::BufferFull(max)),
        }
    }

    /// Gives `n` bytes back early.
    fn shrink(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        self.budget.dec_by(n as i64);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.dec_by(self.bytes as i64);
        }
    }
}

/// How one request body may be read.
pub struct Rules<'a> {
    /// Largest body accepted (`server.max_body`).
    pub max_body: usize,
    /// The body must be whole by then (head + `server.body_read_timeout`).
    pub deadline: Instant,
    /// `server.body_read_timeout`, for the 408's message.
    pub timeout: Duration,
    /// Where its bytes are counted, and the cap (`server.max_buffered`).
    pub budget: &'a Budget,
    pub max_buffered: usize,
}

/// Reads a request body whole under `rules`, returning it with the
/// reservation that holds its bytes. A bodyless request costs nothing
/// here: no clock, no reservation. `body` is borrowed, so that a caller
/// answering early still has its unread rest (see [`super::early`]).
pub async fn read_request<'a, B>(body: &mut B, rules: &Rules<'a>) -> Result<(Bytes, Reservation<'a>), ProxyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut held = Reservation::empty(rules.budget);
    if body.is_end_stream() {
        return Ok((Bytes::new(), held));
    }
    // hyper has parsed `Content-Length` already: it is the exact size hint.
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > rules.max_body as u64) {
        return Err(ProxyError::BodyTooLarge(rules.max_body));
    }
    let read = async {
        match declared {
            Some(n) => {
                held.grow(n as usize, rules.max_buffered)?;
                read_sized(body, n as usize).await
            }
            None => read_chunked(body, rules, &mut held).await,
        }
    };
    match tokio::time::timeout_at(rules.deadline, read).await {
        Ok(bytes) => Ok((bytes?, held)),
        Err(_) => Err(ProxyError::BodyTimeout(rules.timeout)),
    }
}

/// A body of declared length `n` (already reserved), into one buffer of
/// exactly that capacity: each piece is copied in as it comes, so the
/// connection's read buffer is reused and nothing grows by doubling.
async fn read_sized<B>(body: &mut B, n: usize) -> Result<Bytes, ProxyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut buf = BytesMut::with_capacity(n);
    while let Some(data) = next_data(body).await? {
        if data.len() > n - buf.len() {
            return Err(ProxyError::BodyRead); // more than declared
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// A body of unknown length: its pieces kept as they came (each counted as
/// it arrives), joined into one buffer at the end.
async fn read_chunked<B>(body: &mut B, rules: &Rules<'_>, held: &mut Reservation<'_>) -> Result<Bytes, ProxyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(data) = next_data(body).await? {
        total += data.len();
        if total > rules.max_body {
            return Err(ProxyError::BodyTooLarge(rules.max_body));
        }
        held.grow(data.len(), rules.max_buffered)?;
        chunks.push(data);
    }
    if chunks.len() <= 1 {
        return Ok(chunks.pop().unwrap_or_default());
    }
    // Joining holds the pieces and the whole at once: count both.
    held.grow(total, rules.max_buffered)?;
    let mut whole = BytesMut::with_capacity(total);
    for c in chunks.drain(..) {
        whole.extend_from_slice(&c);
    }
    drop(chunks);
    held.shrink(total);
    Ok(whole.freeze())
}

/// The next data of `body` (trailers are skipped), `None` at its end.
async fn next_data<B>(body: &mut B) -> Result<Option<Bytes>, ProxyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(_)) => return Err(ProxyError::BodyRead),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn rules(budget: &Budget, max_body: usize, max_buffered: usize) -> Rules<'_> {
        Rules {
            max_body,
            deadline: Instant::now() + Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            budget,
            max_buffered,
        }
    }

    fn chunked(
        pieces: &[&'static [u8]],
    ) -> StreamBody<impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> + Unpin> {
        let frames: Vec<_> = pieces
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_sized_body_is_held_against_the_budget_until_dropped() {
        let budget = Budget::default();
        let mut body = Full::new(Bytes::from_static(b"hello"));
        let (bytes, held) = read_request(&mut body, &rules(&budget, 10, 100)).await.unwrap();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(budget.get(), 5);
        drop(held);
        assert_eq!(budget.get(), 0);
    }

    #[tokio::test]
    async fn a_chunked_body_is_joined_and_counted_once_held() {
        let budget = Budget::default();
        let mut body = chunked(&[b"ab", b"cd", b"e"]);
        let (bytes, _held) = read_request(&mut body, &rules(&budget, 10, 100)).await.unwrap();
        assert_eq!(&bytes[..], b"abcde");
        assert_eq!(budget.get(), 5);
    }

    #[tokio::test]
    async fn the_budget_refuses_what_would_pass_its_cap() {
        let budget = Budget::default();
        let mut first = Full::new(Bytes::from_static(b"12345678"));
        let (_, _held) = read_request(&mut first, &rules(&budget, 10, 10)).await.unwrap();
        let mut second = Full::new(Bytes::from_static(b"123"));
        let refused = read_request(&mut second, &rules(&budget, 10, 10)).await;
        assert!(matches!(refused, Err(ProxyError::BufferFull(10))));
        // Joining 6 chunked bytes needs 12 of the budget at once.
        let mut chunked = chunked(&[b"123", b"456"]);
        let other = Budget::default();
        let refused = read_request(&mut chunked, &rules(&other, 10, 10)).await;
        assert!(matches!(refused, Err(ProxyError::BufferFull(10))));
        assert_eq!(budget.get(), 8);
    }

    #[tokio::test]
    async fn a_chunked_body_over_max_body_is_413() {
        let budget = Budget::default();
        let mut body = chunked(&[b"123456", b"789012"]);
        let refused = read_request(&mut body, &rules(&budget, 10, 100)).await;
        assert!(matches!(refused, Err(ProxyError::BodyTooLarge(10))));
        assert_eq!(budget.get(), 0);
    }
}
