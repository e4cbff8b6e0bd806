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
//! within the body's deadline) and the connection stays usable, or the
//! answer says `Connection: close`. Nothing read here is kept or forwarded.
//!
//! On HTTP/2 a stream ends on its own: hyper sends the answer, then
//! `RST_STREAM(NO_ERROR)` for the unread rest (RFC 9113 §8.1), and the
//! connection carries on; nothing is drained.

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

/// Settles `res`, an answer to a request whose body (`body`) may be unread:
/// drains a small rest within [`DRAIN_WAIT`] and by `deadline` (the
/// body's own), or marks the answer `Connection: close`.
pub async fn settle<B>(body: B, version: Version, deadline: Option<Instant>, res: &mut http::Response<axum::body::Body>)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    if body.is_end_stream() || version == Version::HTTP_2 || version == Version::HTTP_3 {
        return;
    }
    // A 408 says close already: the rest of a slow body is not waited for.
    let closing = res.headers().get(header::CONNECTION).is_some_and(|v| v == "close");
    let drained = match deadline {
        Some(deadline) if !closing => {
            let by = deadline.min(Instant::now() + DRAIN_WAIT);
            tokio::time::timeout_at(by, drain(body)).await.unwrap_or(false)
        }
        _ => false,
    };
    if !drained {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        // To an HTTP/1.0 keep-alive request, hyper would add `keep-alive`
        // to an HTTP/1.1 answer's `Connection`; a 1.0 answer it leaves be.
        if version == Version::HTTP_10 {
            *res.version_mut() = Version::HTTP_10;
        }
    }
}

/// Reads `body` to its end, throwing it away; `false` if it is (or turns
/// out to be) longer than [`DRAIN_LIMIT`] or fails.
async fn drain<B>(mut body: B) -> bool
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    if body.size_hint().lower() > DRAIN_LIMIT {
        return false; // a declared length says so before reading anything
    }
    let mut left = DRAIN_LIMIT;
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
        settle(body, version, deadline, &mut res).await;
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
