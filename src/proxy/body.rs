//! Answer bodies on the data path (the caller's request body is
//! [`super::request_body`]'s): the upstream's answers, of which only as much is read as tells a session error from an
//! ordinary answer ([`examine`]) before the whole answer is streamed on,
//! byte for byte as the upstream sent it.

use crate::session_error::{self, Opening};
use crate::upstream::PooledBody;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;

/// The first bytes of an upstream answer, and the rest still unread.
pub struct Peeked<B = PooledBody> {
    /// What has been read so far: nothing, the first frame (not copied),
    /// or up to a limit.
    pub prefix: Bytes,
    /// The unread rest; `None` once the body has ended (so its connection
    /// is already free).
    rest: Option<B>,
}

impl<B> Peeked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    /// Nothing read yet.
    pub fn new(body: B) -> Self {
        Self {
            prefix: Bytes::new(),
            rest: Some(body),
        }
    }

    /// Reads up to `limit` bytes of `body`.
    pub async fn read(body: B, limit: usize) -> Result<Self, B::Error> {
        Self::new(body).fill(limit).await
    }

    /// True once the whole body is in `prefix`.
    pub fn is_whole(&self) -> bool {
        self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    /// Reads on until `prefix` holds at least `limit` bytes or the body ends.
    pub async fn fill(mut self, limit: usize) -> Result<Self, B::Error> {
        let mut buf = BytesMut::from(std::mem::take(&mut self.prefix));
        while buf.len() < limit {
            match self.next_data().await? {
                Some(data) => buf.extend_from_slice(&data),
                None => break,
            }
        }
        self.prefix = buf.freeze();
        Ok(self)
    }

    /// Reads one more data frame; the first one is kept as it came, not copied.
    pub async fn read_frame(mut self) -> Result<Self, B::Error> {
        if let Some(data) = self.next_data().await? {
            self.prefix = if self.prefix.is_empty() {
                data
            } else {
                let mut buf = BytesMut::from(std::mem::take(&mut self.prefix));
                buf.extend_from_slice(&data);
                buf.freeze()
            };
        }
        Ok(self)
    }

    /// The next data frame (trailers are not forwarded); `None` at the end,
    /// when the body is dropped so that its connection is free.
    async fn next_data(&mut self) -> Result<Option<Bytes>, B::Error> {
        while let Some(body) = self.rest.as_mut() {
            match body.frame().await {
                None => self.rest = None,
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
        Ok(None)
    }
}

impl<B: http_body::Body> Peeked<B> {
    /// The whole answer again: the prefix, then the unread rest, streamed
    /// (failing if the rest stalls for `idle`).
    pub fn into_answer(self, idle: std::time::Duration) -> Answer<B> {
        Answer {
            prefix: Some(self.prefix).filter(|p| !p.is_empty()),
            // An ended rest is dropped here, freeing its connection now.
            rest: self
                .rest
                .filter(|r| !r.is_end_stream())
                .map(|rest| IdleTimeout::new(rest, idle)),
            slot: None,
        }
    }
}

/// Reads as much of an upstream answer as tells a session error from an
/// ordinary answer, and returns the verdict with the answer, nothing lost:
///
/// - an answer whose headers say it cannot be an error document (HTML,
///   text, an unknown coding) is not read at all;
/// - a non-2xx answer: its first [`session_error::PEEK_LIMIT`] bytes;
/// - a 2xx answer that may be JSON: its first frame, looked at in place
///   (decoded into a small stack buffer when content-encoded), and further
///   frames only while too few bytes have come to tell; only an answer that
///   opens with `{"errors":` is read on to the limit and parsed.
pub async fn examine<B>(
    status: StatusCode,
    headers: &HeaderMap,
    body: B,
    codes: &[String],
) -> Result<(bool, Peeked<B>), B::Error>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let peeked = Peeked::new(body);
    let Some(reading) = session_error::Reading::of(headers) else {
        return Ok((false, peeked));
    };
    if !status.is_success() {
        let peeked = peeked.fill(session_error::PEEK_LIMIT).await?;
        return Ok((reading.is_session_error(&peeked.prefix, codes), peeked));
    }
    if !reading.may_be_json() {
        return Ok((false, peeked));
    }
    let mut peeked = peeked.read_frame().await?;
    loop {
        match reading.opening(&peeked.prefix) {
            Opening::Other => return Ok((false, peeked)),
            Opening::Undecided if peeked.is_whole() => return Ok((false, peeked)),
            Opening::Undecided => peeked = peeked.read_frame().await?,
            Opening::Errors => {
                let peeked = peeked.fill(session_error::PEEK_LIMIT).await?;
                return Ok((reading.is_session_error(&peeked.prefix, codes), peeked));
            }
        }
    }
}

/// An upstream answer on its way to the caller: its first bytes, already
/// read, then the rest of it; and the call's `max_in_flight` slot, held
/// until the answer has been sent whole or dropped (a caller that stops
/// reading is ended by the server's stall watch, which drops it), so that
/// `max_in_flight` bounds the upstream connections answers hold too.
pub struct Answer<B = PooledBody> {
    prefix: Option<Bytes>,
    rest: Option<IdleTimeout<B>>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<B> Answer<B> {
    /// The answer, holding `slot` until it ends.
    pub fn holding(mut self, slot: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        self.slot = slot;
        self
    }

    /// The whole answer, when it came whole with its head (its connection
    /// is then free already).
    pub fn whole(&self) -> Option<&Bytes> {
        static EMPTY: Bytes = Bytes::new();
        self.rest.is_none().then(|| self.prefix.as_ref().unwrap_or(&EMPTY))
    }

    /// The same answer (and slot) with `bytes` for its whole body.
    pub fn with_whole(self, bytes: Bytes) -> Self {
        Self {
            prefix: Some(bytes).filter(|b| !b.is_empty()),
            rest: None,
            slot: self.slot,
        }
    }
}

impl<B> http_body::Body for Answer<B>
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
        use std::task::Poll;
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(prefix))));
        }
        let frame = match self.rest.as_mut() {
            Some(rest) => std::task::ready!(std::pin::Pin::new(rest).poll_frame(cx)),
            None => None,
        };
        // Ended or broken: the slot is free now, whenever the body goes.
        if !matches!(frame, Some(Ok(_))) {
            self.slot = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or(http_body::SizeHint::with_exact(0), |r| r.size_hint());
        let len = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(len));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(len));
        }
        hint
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
    use http::HeaderValue;
    use std::convert::Infallible;
    use std::time::Duration;

    type Frames = http_body_util::StreamBody<
        futures_util::stream::BoxStream<'static, Result<http_body::Frame<Bytes>, Infallible>>,
    >;

    /// A body of `chunks` that then never ends (no more data, no end): any
    /// read past the chunks would hang.
    fn hanging(chunks: &[&'static [u8]]) -> Frames {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c))))
            .collect();
        http_body_util::StreamBody::new(
            futures_util::stream::iter(frames)
                .chain(futures_util::stream::pending())
                .boxed(),
        )
    }

    fn headers(content_type: &'static str, coding: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(c) = coding {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static(c));
        }
        h
    }

    fn codes() -> Vec<String> {
        vec!["OK-SESSION".into(), "OK-GEN0003".into()]
    }

    async fn examine_now(status: u16, h: &HeaderMap, body: Frames) -> (bool, Peeked<Frames>) {
        let status = StatusCode::from_u16(status).expect("a status");
        let codes = codes();
        tokio::time::timeout(Duration::from_secs(5), examine(status, h, body, &codes))
            .await
            .expect("examine must not wait for data it does not need")
            .expect("infallible")
    }

    #[tokio::test]
    async fn an_ordinary_2xx_is_judged_on_its_first_frame_kept_as_it_came() {
        let first: &'static [u8] = br#"{"items":[{"title":"errors"}"#;
        let (expired, peeked) = examine_now(200, &headers("application/json", None), hanging(&[first, b"]}"])).await;
        assert!(!expired);
        assert_eq!(peeked.prefix.as_ptr(), first.as_ptr(), "the first frame, not a copy");
        assert!(!peeked.is_whole());
    }

    #[tokio::test]
    async fn a_2xx_that_is_not_json_or_a_non_2xx_html_page_is_not_read() {
        for (status, ct) in [
            (200, "application/xml"),
            (200, "application/octet-stream"),
            (401, "text/html"),
        ] {
            let (expired, peeked) = examine_now(status, &headers(ct, None), hanging(&[])).await;
            assert!(!expired && peeked.prefix.is_empty(), "{status} {ct}");
        }
    }

    #[tokio::test]
    async fn an_errors_opening_split_across_frames_is_read_on_and_checked() {
        let body = || {
            let frames = [&b" {"[..], b" \"err", b"ors\": [{\"code\":\"OK-", b"GEN0003\"}]}"];
            http_body_util::StreamBody::new(
                futures_util::stream::iter(frames.map(|f| Ok(http_body::Frame::data(Bytes::from_static(f))))).boxed(),
            )
        };
        let (expired, peeked) = examine_now(200, &headers("application/json", None), body()).await;
        assert!(expired);
        assert!(peeked.is_whole());
        assert_eq!(
            peeked.prefix,
            Bytes::from_static(br#" { "errors": [{"code":"OK-GEN0003"}]}"#)
        );
    }

    #[tokio::test]
    async fn a_compressed_2xx_is_judged_on_a_few_decoded_bytes() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&br#"{"items":[],"hasMore":false}"#.repeat(500))
            .expect("in memory");
        let gz: &'static [u8] = Vec::leak(e.finish().expect("in memory"));
        let (head, tail) = gz.split_at(gz.len() / 2);
        let (expired, peeked) =
            examine_now(200, &headers("application/json", Some("gzip")), hanging(&[head, tail])).await;
        assert!(!expired);
        assert_eq!(peeked.prefix.len(), head.len(), "only the first frame was read");
    }

    #[tokio::test]
    async fn the_answer_goes_on_byte_for_byte_with_its_size() {
        let (_, peeked) = examine_now(401, &headers("application/json", None), {
            let frames = [&b"{\"error\":"[..], b"{\"errorCode\":\"OK-SEC0012\"}}"];
            http_body_util::StreamBody::new(
                futures_util::stream::iter(frames.map(|f| Ok(http_body::Frame::data(Bytes::from_static(f))))).boxed(),
            )
        })
        .await;
        let expected = br#"{"error":{"errorCode":"OK-SEC0012"}}"#;
        let body = axum::body::Body::new(peeked.into_answer(Duration::from_secs(1)));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(expected.len() as u64));
        let bytes = body.collect().await.expect("whole").to_bytes();
        assert_eq!(bytes, Bytes::from_static(expected));
    }
}
