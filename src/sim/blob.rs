//! The large streamed body of `GET /km/api/{ver}/content/blob?bytes=N`.
//!
//! Byte `i` of the body is `i % 251`. It is produced in 64 KiB chunks sliced
//! from one shared pattern buffer, so a body of any size costs no memory.
//! With a known length the answer carries `content-length: N`; with
//! `chunked=1` it does not. With `fail_after=M` (M < N) the body stream pauses
//! for [`ABORT_GRACE`] after M bytes, so that hyper flushes them to the client,
//! and then fails, which makes the server abort the connection mid-body.
//! With `stall_after=M` (M < N) it sends M bytes and then nothing, holding
//! the connection open: a stalled upstream.
//!
//! [`JsonListBody`] is the same idea for a JSON answer
//! (`GET /km/api/{ver}/content/large?items=N`): a content list of N items,
//! each with a link on the simulator's origin, made as it is sent, in
//! pieces of an odd size so links fall across piece boundaries; with
//! `stall_after=M` it stalls after M bytes. It lets tests drive link
//! rewriting over an answer of many MiB.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use sha2::{Digest, Sha256};
use tokio::time::Sleep;

/// Size of each streamed chunk.
const CHUNK: u64 = 64 * 1024;
/// The pattern's period.
const PERIOD: u64 = 251;
/// How long the body pauses before a `fail_after` abort: hyper drops what it
/// has buffered but not yet written when a body fails.
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// The pattern from offset 0, one chunk plus one period long, so any chunk
/// can be sliced from it without copying.
fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..CHUNK + PERIOD)
            .map(|i| (i % PERIOD) as u8)
            .collect::<Vec<u8>>()
            .into()
    })
}

/// `len` (at most one chunk) pattern bytes starting at body offset `offset`.
fn chunk_at(offset: u64, len: u64) -> Bytes {
    let start = (offset % PERIOD) as usize;
    pattern().slice(start..start + len.min(CHUNK) as usize)
}

/// Lowercase hex SHA-256 of the first `n` bytes of the blob pattern, for
/// tests that check a blob went through intact.
pub fn blob_sha256(n: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < n {
        let len = CHUNK.min(n - offset);
        hasher.update(chunk_at(offset, len));
        offset += len;
    }
    hex::encode(hasher.finalize())
}

/// A response body streaming the pattern.
#[derive(Debug)]
pub(crate) struct PatternBody {
    sent: u64,
    total: u64,
    /// Fail the stream once this many bytes have gone out.
    fail_after: Option<u64>,
    /// Send nothing more, for ever, once this many bytes have gone out.
    stall_after: Option<u64>,
    /// Whether the length is announced (`content-length`).
    exact: bool,
    /// The pause before the abort, once started.
    grace: Option<Pin<Box<Sleep>>>,
}

impl PatternBody {
    pub(crate) fn new(total: u64, chunked: bool, fail_after: Option<u64>) -> Self {
        Self {
            sent: 0,
            total,
            fail_after: fail_after.filter(|m| *m < total),
            stall_after: None,
            exact: !chunked,
            grace: None,
        }
    }

    /// Stall (stay pending, never waking) after `m` bytes, if `m` < total.
    pub(crate) fn stall_after(mut self, m: Option<u64>) -> Self {
        self.stall_after = m.filter(|m| *m < self.total);
        self
    }
}

impl http_body::Body for PatternBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let mut limit = this.total;
        if let Some(m) = this.fail_after {
            if this.sent >= m {
                let grace = this
                    .grace
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(ABORT_GRACE)));
                if grace.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "simulated upstream abort (fail_after)",
                ))));
            }
            limit = m;
        }
        if let Some(m) = this.stall_after {
            if this.sent >= m {
                return Poll::Pending; // no waker: nothing will ever come
            }
            limit = limit.min(m);
        }
        if this.sent >= this.total {
            return Poll::Ready(None);
        }
        let len = CHUNK.min(limit - this.sent);
        let chunk = chunk_at(this.sent, len);
        this.sent += len;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.fail_after.is_none() && self.stall_after.is_none() && self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.total - self.sent)
        } else {
            SizeHint::default()
        }
    }
}

/// Size of each piece of a [`JsonListBody`]: odd and prime, so the links
/// fall across piece boundaries at every offset.
const JSON_PIECE: usize = 65_521;

/// A content list of `items` items, made as it is sent.
#[derive(Debug)]
pub(crate) struct JsonListBody {
    origin: String,
    version: String,
    next: u64,
    items: u64,
    sent: u64,
    stall_after: Option<u64>,
    pending: bytes::BytesMut,
    ended: bool,
}

impl JsonListBody {
    pub(crate) fn new(origin: String, version: String, items: u64, stall_after: Option<u64>) -> Self {
        let mut pending = bytes::BytesMut::new();
        pending.extend_from_slice(b"{\"items\":[");
        Self {
            origin,
            version,
            next: 0,
            items,
            sent: 0,
            stall_after,
            pending,
            ended: false,
        }
    }

    /// Appends items (then the list's end) until a piece's worth is pending.
    fn fill(&mut self) {
        use std::fmt::Write as _;
        while self.pending.len() < JSON_PIECE && !self.ended {
            if self.next == self.items {
                let end = format!(
                    "],\"hasMore\":false,\"count\":{},\"links\":[{{\"rel\":\"canonical\",\"href\":\"{}/km/api/{}/content/large\"}}]}}",
                    self.items, self.origin, self.version
                );
                self.pending.extend_from_slice(end.as_bytes());
                self.ended = true;
                break;
            }
            let mut item = String::with_capacity(160);
            let comma = if self.next == 0 { "" } else { "," };
            let id = 2_000_000 + self.next;
            let _ = write!(
                item,
                "{comma}{{\"answerId\":{id},\"title\":\"Item {id}\",\"links\":[{{\"rel\":\"canonical\",\"href\":\"{}/km/api/{}/content/answers/{id}\"}}]}}",
                self.origin, self.version
            );
            self.pending.extend_from_slice(item.as_bytes());
            self.next += 1;
        }
    }
}

impl http_body::Body for JsonListBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.stall_after.is_some_and(|m| this.sent >= m) {
            return Poll::Pending; // no waker: nothing will ever come
        }
        this.fill();
        if this.pending.is_empty() {
            return Poll::Ready(None);
        }
        let piece = this.pending.split_to(JSON_PIECE.min(this.pending.len())).freeze();
        this.sent += piece.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn streams_the_pattern_in_chunks() {
        let n = 3 * CHUNK + 1000;
        let mut body = PatternBody::new(n, false, None);
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.expect("no error").into_data().expect("data frame");
            assert!(data.len() as u64 <= CHUNK);
            all.extend_from_slice(&data);
        }
        assert_eq!(all.len() as u64, n);
        assert!(all.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        assert_eq!(hex::encode(Sha256::digest(&all)), blob_sha256(n));
    }

    #[tokio::test]
    async fn fails_after_m_bytes() {
        let mut body = PatternBody::new(1_000_000, false, Some(100_000));
        let mut got = 0u64;
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.into_data().map(|d| d.len() as u64).unwrap_or(0),
                Some(Err(e)) => break e,
                None => panic!("stream ended without the injected error"),
            }
        };
        assert_eq!(got, 100_000);
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn stalls_after_m_bytes() {
        let mut body = PatternBody::new(1_000_000, false, None).stall_after(Some(100_000));
        let mut got = 0u64;
        while got < 100_000 {
            let f = body.frame().await.expect("data").expect("no error");
            got += f.into_data().map(|d| d.len() as u64).unwrap_or(0);
        }
        assert_eq!(got, 100_000);
        let more = tokio::time::timeout(Duration::from_millis(100), body.frame()).await;
        assert!(more.is_err(), "nothing after the stall point");
    }

    #[tokio::test]
    async fn the_json_list_is_one_document_with_a_link_per_item() {
        let body = JsonListBody::new("http://h:1".into(), "latest".into(), 3000, None);
        let all = body.collect().await.expect("no error").to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&all).expect("JSON");
        assert_eq!(doc["items"].as_array().map(Vec::len), Some(3000));
        assert_eq!(
            doc["items"][7]["links"][0]["href"],
            "http://h:1/km/api/latest/content/answers/2000007"
        );
    }

    #[test]
    fn size_hint_follows_chunked_flag() {
        assert_eq!(PatternBody::new(10, false, None).size_hint().exact(), Some(10));
        assert_eq!(PatternBody::new(10, true, None).size_hint().exact(), None);
    }
}
