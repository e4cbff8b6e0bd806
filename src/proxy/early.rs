//! Answers sent before the request body was read whole (a refusal: 401,
//! 403, 404, 400, 413, 408, 503), settled so that the client's next call
//! never meets a dead connection.
//!
//! On HTTP/1 the unread rest of a body stands between this answer and the
//! next request on the connection. hyper gives up on it once the service
//! drops the body, and closes the connection after the answer; an answer
//! that did not say `Connection: close` then leaves a keep-alive client
//! writing its next call into a closed socket. So either the rest is read
//! and thrown away here (when it is at most [`DRAIN_LIMIT`] bytes and comes
//! within [`DRAIN_WAIT`]) and the connection stays usable, or the answer
//! says `Connection: close`.
//!
//! On HTTP/2 only the stream is at stake. Dropping its body unread makes
//! hyper send `RST_STREAM(NO_ERROR)` after the answer, which RFC 9113 §8.1
//! allows, but a client still uploading may fail on the reset before it
//! reads the answer (curl 7.88: `(92) Stream error`). So on both protocols
//! a refused rest of bounded size is read and thrown away in the background
//! (until the body's deadline), and the upload ends normally: the stream
//! closes cleanly, or the HTTP/1 connection closes after the whole request.
//! Nothing read here is kept or forwarded.

use bytes::Bytes;
use http::{header, HeaderValue, Version};
use http_body_util::BodyExt;
use tokio::time::Instant;

/// The most of a refused body read to keep its connection, in bytes.
/// 64 KiB is about what a client has already written into the socket
/// buffers by the time the answer comes (loopback's, and a TCP window), so
/// it is the rest a write-then-read client (Python's `http.client`) has in
/// flight; reading it costs little (it is thrown away as it comes, nothing
/// is held), and anything larger is cheaper to end by closing.
pub const DRAIN_LIMIT: u64 = 64 * 1024;

/// The longest a drain waits for the rest (or less, when the body's own
/// deadline comes first): a rest the client has already sent is in the
/// socket by then, and a client that stalls gets its answer this late at
/// most, with `Connection: close`.
pub const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Settles `res`, an answer to a request whose body (`body`) may be unread.
/// HTTP/1: drains a rest of at most [`DRAIN_LIMIT`] within [`DRAIN_WAIT`]
/// (and by `deadline`, the body's own) and keeps the connection; else the
/// answer says `Connection: close`. Then, on either protocol, a rest still
/// unread (of at most `linger_max` bytes) is read and thrown away in the
/// background until its end or `deadline`, so that a client still uploading
/// reads the answer instead of meeting a reset: on HTTP/2 the stream then
/// ends cleanly, and curl 7.x, which fails a stream reset while it uploads
/// (`(92) Stream error`), sees the status too.
pub async fn settle<B>(
    mut body: B,
    version: Version,
    deadline: Option<Instant>,
    linger_max: u64,
    res: &mut http::Response<axum::body::Body>,
) where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
{
    let Some(deadline) = deadline.filter(|_| !body.is_end_stream()) else {
        return; // read whole, or no body at all
    };
    // A 408 says close already: the rest of a slow body is not waited for.
    let slow = res.headers().get(header::CONNECTION).is_some_and(|v| v == "close");
    let http2 = version >= Version::HTTP_2;
    if !http2 && !slow {
        let by = deadline.min(Instant::now() + DRAIN_WAIT);
        if tokio::time::timeout_at(by, drain(&mut body, DRAIN_LIMIT)).await == Ok(true) {
            return;
        }
    }
    if !http2 {
        close(res, version);
    }
    if !slow && body.size_hint().lower() <= linger_max {
        tokio::spawn(tokio::time::timeout_at(deadline, async move {
            drain(&mut body, linger_max).await
        }));
    }
}

/// Marks `res` as the connection's last answer.
fn close(res: &mut http::Response<axum::body::Body>, version: Version) {
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    // To an HTTP/1.0 keep-alive request, hyper would add `keep-alive` to an
    // HTTP/1.1 answer's `Connection`; a 1.0 answer it leaves be.
    if version == Version::HTTP_10 {
        *res.version_mut() = Version::HTTP_10;
    }
}

/// Reads `body` to its end, throwing it away; `false` if it is (or turns
/// out to be) longer than `limit` bytes, or fails.
async fn drain<B>(body: &mut B, limit: u64) -> bool
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    if body.size_hint().lower() > limit {
        return false; // a declared length says so before reading anything
    }
    let mut left = limit;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        let n = frame.data_ref().map_or(0, |d| d.len() as u64);
        match left.checked_sub(n) {
            Some(rest) => left = rest,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    async fn settled(body: Full<Bytes>, version: Version) -> Option<HeaderValue> {
        let mut res = http::Response::new(axum::body::Body::empty());
        let deadline = Some(Instant::now() + std::time::Duration::from_secs(5));
        settle(body, version, deadline, 1 << 30, &mut res).await;
        res.headers().get(header::CONNECTION).cloned()
    }

    #[tokio::test]
    async fn a_small_rest_is_drained_and_the_connection_kept() {
        let small = Full::new(Bytes::from(vec![0u8; DRAIN_LIMIT as usize]));
        assert_eq!(settled(small, Version::HTTP_11).await, None);
        assert_eq!(settled(Full::new(Bytes::new()), Version::HTTP_10).await, None);
    }

    #[tokio::test]
    async fn a_large_rest_closes_the_connection_on_http1_only() {
        let large = || Full::new(Bytes::from(vec![0u8; DRAIN_LIMIT as usize + 1]));
        assert_eq!(settled(large(), Version::HTTP_11).await.unwrap(), "close");
        assert_eq!(settled(large(), Version::HTTP_10).await.unwrap(), "close");
        assert_eq!(settled(large(), Version::HTTP_2).await, None);
    }
}
