//! Answers kmproxy sends before the request body was read whole (issue 14,
//! PRODUCT.md §4 "Bounded cost"): each refusal kind, on one keep-alive
//! client connection, with a large body (the answer says `Connection:
//! close`, the client reconnects and its next call succeeds) and a small
//! one (drained: the connection is kept); HTTP/1.0 keep-alive alike; HTTP/2
//! refusals readable with the connection going on. Nothing of a refused
//! body reaches the upstream.

#![allow(clippy::unwrap_used)]

mod common;
mod wire;

use std::time::Duration;

use common::{Env, HELPDESK_KEY};
use http::StatusCode;
use kmproxy::proxy::early::DRAIN_LIMIT;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wire::{read_reply, request, KeepAlive, Reply};

const LARGE: usize = 1 << 20;
const SMALL: usize = 1000;

/// max_body 256 KiB, so that a large body is over it.
async fn env() -> Env {
    Env::builder().config(|c| c.server.max_body = 256 << 10).start().await
}

/// A refusal that comes before the body is read: path, name, headers, status.
type Refusal = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    StatusCode,
);

const REFUSALS: &[Refusal] = &[
    (
        "/km/api/latest/content",
        "unknown caller key",
        &[("x-kmproxy-key", "nobody")],
        StatusCode::UNAUTHORIZED,
    ),
    (
        "/km/api/latest/auth/integration/authorize",
        "/auth/ path",
        &[],
        StatusCode::FORBIDDEN,
    ),
    ("/elsewhere", "outside the APIs", &[], StatusCode::NOT_FOUND),
    (
        "/km/api/latest/content",
        "bad kmauthtoken",
        &[("kmauthtoken", "not json")],
        StatusCode::BAD_REQUEST,
    ),
];

/// One refused call with `len` body bytes, then an ordinary call, on one
/// keep-alive client; the refusal's answer and the connections opened.
async fn refused_then_ok(env: &Env, path: &str, headers: &[(&str, &str)], len: usize) -> (Reply, usize) {
    let mut client = KeepAlive::new(env.proxy);
    let refused = client.send(request("POST", path, headers, vec![b'r'; len])).await;
    let ok = client
        .send(request(
            "GET",
            "/km/api/latest/content",
            &[("x-kmproxy-key", HELPDESK_KEY)],
            "",
        ))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "the call after a refusal failed");
    (refused, client.connections)
}

#[tokio::test]
async fn each_refusal_before_the_body_keeps_the_next_call_working() {
    let env = env().await;
    for (path, name, headers, status) in REFUSALS {
        let (large, connections) = refused_then_ok(&env, path, headers, LARGE).await;
        assert_eq!(large.status, *status, "{name}");
        assert!(
            large.says_close(),
            "{name}: a large unread body must close the connection"
        );
        assert_eq!(connections, 2, "{name}");
        let (small, connections) = refused_then_ok(&env, path, headers, SMALL).await;
        assert_eq!(small.status, *status, "{name}");
        assert!(!small.says_close(), "{name}: a small body is drained");
        assert_eq!(connections, 1, "{name}: the drained connection is kept");
    }
    // Only the ordinary calls reached the upstream.
    assert!(env.simulator().requests().iter().all(|r| r.method == "GET"));
    env.stop().await;
}

#[tokio::test]
async fn a_body_over_max_body_is_refused_and_the_next_call_works() {
    let env = env().await;
    let (large, connections) = refused_then_ok(&env, "/km/api/latest/content", &[], LARGE).await;
    assert_eq!(large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(large.says_close());
    assert_eq!(connections, 2);
    assert!(env.simulator().requests().iter().all(|r| r.method == "GET"));
    env.stop().await;
}

/// Holds the only call slot (`max_in_flight = 1`) or the whole body budget
/// with a half-sent body, until dropped.
async fn holder(env: &Env, len: usize) -> TcpStream {
    let mut s = TcpStream::connect(env.proxy).await.unwrap();
    let head = format!("POST /km/api/latest/content HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len}\r\n\r\nx");
    s.write_all(head.as_bytes()).await.unwrap();
    let gauge = env.app.metrics.request_body_bytes.clone();
    let n = len as i64;
    assert!(common::eventually(Duration::from_secs(5), move || gauge.get() >= n).await);
    s
}

#[tokio::test]
async fn overload_refusals_keep_the_next_call_working() {
    let env = Env::builder()
        .config(|c| {
            c.server.max_in_flight = 1;
            c.server.queue_timeout = Duration::ZERO;
            c.server.max_body = 256 << 10;
            c.server.max_buffered = 256 << 10;
        })
        .start()
        .await;
    for len in [LARGE / 8, SMALL] {
        // The slot is taken: 503 before the body is read.
        let slot = holder(&env, 10).await;
        let mut client = KeepAlive::new(env.proxy);
        let refused = client
            .send(request("POST", "/km/api/latest/content", &[], vec![b'r'; len]))
            .await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.says_close(), len as u64 > DRAIN_LIMIT);
        drop(slot);
        let gauge = env.app.metrics.request_body_bytes.clone();
        assert!(common::eventually(Duration::from_secs(5), move || gauge.get() == 0).await);
        let ok = client.send(request("GET", "/km/api/latest/content", &[], "")).await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    env.stop().await;
}

#[tokio::test]
async fn a_408_says_connection_close_and_closes() {
    let env = Env::builder()
        .config(|c| c.server.body_read_timeout = Duration::from_millis(300))
        .start()
        .await;
    let mut s = TcpStream::connect(env.proxy).await.unwrap();
    let head = "POST /km/api/latest/content HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 5000\r\n\r\nsome";
    s.write_all(head.as_bytes()).await.unwrap();
    let reply = read_reply(&mut s).await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert!(reply.says_close());
    assert!(wire::closed_within(&mut s, Duration::from_secs(5)).await);
    assert_eq!(env.simulator().request_count(), 0);
    env.stop().await;
}

fn http10_post(len: usize) -> String {
    format!("POST /elsewhere HTTP/1.0\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\ncontent-length: {len}\r\n\r\n")
}

#[tokio::test]
async fn http10_keep_alive_refusals_drain_a_small_body_and_close_after_a_large_one() {
    let env = env().await;
    // Small: drained, kept alive, and the next call on the socket is served.
    let mut s = TcpStream::connect(env.proxy).await.unwrap();
    s.write_all(http10_post(SMALL).as_bytes()).await.unwrap();
    s.write_all(&vec![b'r'; SMALL]).await.unwrap();
    let refused = read_reply(&mut s).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(refused.headers["connection"], "keep-alive");
    let get = "GET /km/api/latest/content HTTP/1.0\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\n\r\n";
    s.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(read_reply(&mut s).await.status, StatusCode::OK);
    // Large, written whole before reading (as Python's http.client does):
    // the answer says close, and the connection is closed after it.
    let s = TcpStream::connect(env.proxy).await.unwrap();
    let (mut read, _writer) = wire::write_in_background(s, http10_post(LARGE), vec![b'r'; LARGE]);
    let refused = read_reply(&mut read).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert!(refused.says_close(), "{:?}", refused.headers);
    assert!(wire::closed_within(&mut read, Duration::from_secs(5)).await);
    assert!(env.simulator().requests().iter().all(|r| r.method == "GET"));
    env.stop().await;
}

#[tokio::test]
async fn http2_refusals_are_readable_and_the_connection_goes_on() {
    let env = env().await;
    let mut h2 = wire::http2_client(env.proxy).await;
    for (path, name, headers, status) in REFUSALS {
        let refused = wire::send_h2(&mut h2, request("POST", path, headers, vec![b'r'; LARGE])).await;
        assert_eq!(refused.status, *status, "{name}");
    }
    let too_large = wire::send_h2(
        &mut h2,
        request("POST", "/km/api/latest/content", &[], vec![b'r'; LARGE]),
    )
    .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    let ok = wire::send_h2(&mut h2, request("GET", "/km/api/latest/content", &[], "")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(env.simulator().requests().iter().all(|r| r.method == "GET"));
    env.stop().await;
}

#[tokio::test]
async fn an_http2_upload_refused_early_is_read_to_its_end_not_reset() {
    // 4 MiB: past the stream's 1 MiB window, so only reading frees room.
    let upload_len = 4 * LARGE;
    let env = Env::builder().config(|c| c.server.max_body = 4 << 20).start().await;
    let io = TcpStream::connect(env.proxy).await.unwrap();
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post("http://127.0.0.1/elsewhere").body(()).unwrap();
    let (answer, mut upload) = client.send_request(req, false).unwrap();
    assert_eq!(answer.await.unwrap().status(), StatusCode::NOT_FOUND);
    // The client goes on uploading after the answer, as curl does: every
    // byte is taken (a reset would end the capacity), and the stream ends.
    let mut left = upload_len;
    while left > 0 {
        upload.reserve_capacity(left.min(64 << 10));
        let granted = std::future::poll_fn(|cx| upload.poll_capacity(cx)).await;
        let n = granted.expect("the stream is still open").expect("no reset").min(left);
        upload.send_data(bytes::Bytes::from(vec![b'r'; n]), n == left).unwrap();
        left -= n;
    }
    assert_eq!(env.simulator().request_count(), 0);
    env.stop().await;
}
