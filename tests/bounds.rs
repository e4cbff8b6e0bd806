//! Bounded cost (PRODUCT.md §4 "Bounded cost"), attacked over real sockets:
//! silent and half-sent connections are closed after the head timeout from
//! accept (HTTP/1 and HTTP/2 alike), slow bodies end with 408 without
//! holding call slots, buffered bodies stay within `max_buffered`, HTTP/2
//! streams are capped and bounded like HTTP/1 calls, heads over 64 KiB are
//! 431 (HTTP/2: on a connection that carries on, up to h2's flood guard),
//! and an upstream 101 is a 502 that leaves the caller's connection usable.

#![allow(clippy::unwrap_used)]

mod common;
mod wire;

use std::time::{Duration, Instant};

use common::Env;
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wire::{closed_within, read_reply, request, KeepAlive};

const HEAD_TIMEOUT: Duration = Duration::from_millis(500);

/// A kmproxy with 8 connections at most and a 500 ms head timeout.
async fn tight() -> Env {
    Env::builder()
        .config(|c| {
            c.server.max_connections = 8;
            c.server.header_read_timeout = HEAD_TIMEOUT;
        })
        .start()
        .await
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_head_timeout_and_calls_go_on() {
    let env = tight().await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(env.proxy).await.unwrap());
    }
    // Every slot is taken by a socket that sends nothing: the call waits in
    // the backlog until the head timeout frees them, then is served.
    let started = Instant::now();
    let a = env.get("/km/api/latest/content", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        started.elapsed() < 4 * HEAD_TIMEOUT,
        "served after {:?}",
        started.elapsed()
    );
    for s in &mut silent {
        assert!(
            closed_within(s, 2 * HEAD_TIMEOUT).await,
            "a silent connection stayed open"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn half_sent_http2_prefaces_and_http1_heads_are_closed() {
    let env = tight().await;
    let mut preface = TcpStream::connect(env.proxy).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut head = TcpStream::connect(env.proxy).await.unwrap();
    head.write_all(b"GET /km/api/latest/content HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut preface, 4 * HEAD_TIMEOUT).await,
        "half a preface kept its connection"
    );
    assert!(
        closed_within(&mut head, 4 * HEAD_TIMEOUT).await,
        "half a head kept its connection"
    );
    env.stop().await;
}

#[tokio::test]
async fn an_http2_connection_that_carries_no_call_is_closed() {
    let env = tight().await;
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(env.proxy).await.unwrap());
    let (_sender, conn) = hyper::client::conn::http2::handshake::<_, _, http_body_util::Full<bytes::Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        io,
    )
    .await
    .unwrap();
    // The connection's own future ends when kmproxy closes it (GOAWAY).
    let ended = tokio::time::timeout(6 * HEAD_TIMEOUT, conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
    // One that carries calls is kept meanwhile.
    let mut h2 = wire::http2_client(env.proxy).await;
    for _ in 0..3 {
        let a = wire::send_h2(&mut h2, request("GET", "/km/api/latest/content", &[], "")).await;
        assert_eq!(a.status, StatusCode::OK);
        tokio::time::sleep(HEAD_TIMEOUT / 2).await; // pacing between calls, not synchronisation
    }
    env.stop().await;
}

/// Waits until kmproxy holds `n` request-body bytes (its gauge).
async fn buffered_reaches(env: &Env, n: i64) -> bool {
    let gauge = env.app.metrics.request_body_bytes.clone();
    common::eventually(Duration::from_secs(5), move || gauge.get() == n).await
}

/// A raw connection that sends a head declaring `len` body bytes, then
/// `sent` of them, and keeps the socket open.
async fn partial_body(env: &Env, len: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(env.proxy).await.unwrap();
    let head = format!("POST /km/api/latest/content HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'x'; sent]).await.unwrap();
    s
}

#[tokio::test]
async fn slow_bodies_get_408_and_free_their_slots_while_other_calls_get_200() {
    let body_timeout = Duration::from_millis(600);
    let env = Env::builder()
        .config(move |c| {
            c.server.max_in_flight = 2;
            c.server.queue_timeout = Duration::from_secs(5);
            c.server.body_read_timeout = body_timeout;
        })
        .start()
        .await;
    // Two trickles take both slots: a byte every 50 ms of a 1000-byte body.
    let trickles: Vec<_> = (0..2)
        .map(|_| {
            let addr = env.proxy;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let head = "POST /km/api/latest/content HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1000\r\n\r\n";
                s.write_all(head.as_bytes()).await.unwrap();
                let (mut read, mut write) = s.into_split();
                let trickle = async {
                    while write.write_all(b"x").await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    std::future::pending::<()>().await
                };
                let started = Instant::now();
                let reply = tokio::select! {
                    reply = read_reply(&mut read) => reply,
                    _ = trickle => unreachable!(),
                };
                (reply, started.elapsed())
            })
        })
        .collect();
    // Both trickles hold their slots once their bodies are reserved.
    assert!(buffered_reaches(&env, 2000).await, "the trickles did not start");
    let others: Vec<_> = (0..4).map(|_| env.get("/km/api/latest/content", &[])).collect();
    for a in futures_util::future::join_all(others).await {
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    }
    for t in trickles {
        let (reply, after) = t.await.unwrap();
        assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(reply.error_code(), "KMPROXY-BODY-TIMEOUT");
        assert!(reply.says_close());
        assert!(after < body_timeout * 3, "408 after {after:?}");
    }
    assert_eq!(env.app.metrics.request_body_bytes.get(), 0);
    // Nothing of a slow body reached the upstream.
    assert!(env.simulator().requests().iter().all(|r| r.method == "GET"));
    env.stop().await;
}

#[tokio::test]
async fn declared_bodies_past_max_buffered_get_503_before_anything_is_read() {
    let env = Env::builder()
        .config(|c| {
            c.server.max_body = 1 << 20;
            c.server.max_buffered = 1 << 20;
        })
        .start()
        .await;
    // One call holds 900 KiB of the 1 MiB budget, half sent.
    let mut holder = partial_body(&env, 900 << 10, 1000).await;
    assert!(buffered_reaches(&env, 900 << 10).await);
    // The next declares 200 KiB and sends none of it: refused at once.
    let mut client = KeepAlive::new(env.proxy);
    let mut next = TcpStream::connect(env.proxy).await.unwrap();
    let head = "POST /km/api/latest/content HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 204800\r\n\r\n";
    next.write_all(head.as_bytes()).await.unwrap();
    let refused = read_reply(&mut next).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error_code(), "KMPROXY-OVERLOADED");
    assert_eq!(refused.headers["retry-after"], "1");
    // A small body still fits.
    let small = client
        .send(request("POST", "/km/api/latest/content", &[], vec![b'y'; 10_000]))
        .await;
    assert_eq!(small.status, StatusCode::OK);
    // Once the holder ends its body, its bytes are given back.
    holder.write_all(&vec![b'x'; (900 << 10) - 1000]).await.unwrap();
    assert_eq!(read_reply(&mut holder).await.status, StatusCode::OK);
    let big = client
        .send(request("POST", "/km/api/latest/content", &[], vec![b'z'; 1 << 20]))
        .await;
    assert_eq!(big.status, StatusCode::OK);
    env.stop().await;
}

#[tokio::test]
async fn chunked_bodies_are_counted_as_they_grow() {
    let env = Env::builder()
        .config(|c| {
            c.server.max_body = 1 << 20;
            c.server.max_buffered = 1 << 20;
        })
        .start()
        .await;
    let mut holder = partial_body(&env, 900 << 10, 1000).await;
    assert!(buffered_reaches(&env, 900 << 10).await);
    let mut s = TcpStream::connect(env.proxy).await.unwrap();
    let head = "POST /km/api/latest/content HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    // 100 KiB fit beside the holder's 900; the next 100 KiB do not.
    let chunk = format!("19000\r\n{}\r\n", "c".repeat(0x19000));
    s.write_all(chunk.as_bytes()).await.unwrap();
    s.write_all(chunk.as_bytes()).await.unwrap();
    let refused = read_reply(&mut s).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error_code(), "KMPROXY-OVERLOADED");
    holder.write_all(&vec![b'x'; (900 << 10) - 1000]).await.unwrap();
    assert_eq!(read_reply(&mut holder).await.status, StatusCode::OK);
    assert_eq!(env.simulator().request_count(), 1);
    env.stop().await;
}

#[tokio::test]
async fn http2_streams_are_capped_and_their_bodies_bounded_like_http1() {
    let env = Env::builder()
        .config(|c| {
            c.server.max_body = 64 << 10;
            c.server.body_read_timeout = Duration::from_millis(500);
        })
        .start()
        .await;
    let io = TcpStream::connect(env.proxy).await.unwrap();
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // A stream whose body never ends: 408, and the connection goes on.
    let req = http::Request::post("http://127.0.0.1/km/api/latest/content")
        .body(())
        .unwrap();
    let (answer, mut stream) = client.send_request(req, false).unwrap();
    stream.send_data(bytes::Bytes::from_static(b"partial"), false).unwrap();
    let slow = answer.await.unwrap();
    assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
    // kmproxy's SETTINGS have arrived by now.
    assert_eq!(client.current_max_send_streams(), kmproxy::server::MAX_STREAMS as usize);
    // A body over max_body: a readable 413.
    let mut h2c = wire::http2_client(env.proxy).await;
    let big = wire::send_h2(
        &mut h2c,
        request("POST", "/km/api/latest/content", &[], vec![b'x'; 1 << 20]),
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(big.error_code(), "KMPROXY-BODY-LIMIT");
    let after = wire::send_h2(&mut h2c, request("GET", "/km/api/latest/content", &[], "")).await;
    assert_eq!(after.status, StatusCode::OK);
    env.stop().await;
}

#[tokio::test]
async fn an_unsolicited_upstream_101_is_a_502_and_the_connection_survives() {
    let env = Env::start().await;
    let mut client = KeepAlive::new(env.proxy);
    let a = client
        .send(request("GET", "/km/api/latest/content/upgrade", &[], ""))
        .await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.error_code(), "KMPROXY-UPSTREAM");
    let b = client.send(request("GET", "/km/api/latest/content", &[], "")).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(client.connections, 1);
    env.stop().await;
}

/// `n` visible ASCII characters that HPACK's Huffman code barely shrinks.
fn noise(n: usize) -> String {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            char::from(b'0' + (x % 75) as u8)
        })
        .collect()
}

#[tokio::test]
async fn heads_over_64_kib_get_431_and_an_http2_connection_carries_on() {
    let env = Env::start().await;
    let big = noise(70_000);
    // HTTP/1: hyper's 431, then the connection closes.
    let mut s = TcpStream::connect(env.proxy).await.unwrap();
    let head = format!("GET /km/api/latest/content HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: {big}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let refused = read_reply(&mut s).await;
    assert_eq!(refused.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(refused.says_close());
    // HTTP/2: kmproxy advertises the limit; a client that sends past it
    // anyway gets h2's 431, and the connection serves the next call.
    let mut h2 = wire::http2_client(env.proxy).await;
    let over = request("GET", "/km/api/latest/content", &[("x-big", big.as_str())], "");
    assert_eq!(
        wire::send_h2(&mut h2, over).await.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let next = wire::send_h2(&mut h2, request("GET", "/km/api/latest/content", &[], "")).await;
    assert_eq!(next.status, StatusCode::OK);
    // Far past it (over 5 CONTINUATION frames): h2's flood guard ends the
    // connection (GOAWAY); a new one is served.
    let mut flood = wire::http2_client(env.proxy).await;
    let huge = noise(300_000);
    let mut req = request("GET", "/km/api/latest/content", &[("x-big", huge.as_str())], "");
    *req.uri_mut() = "http://127.0.0.1/km/api/latest/content".parse().unwrap();
    req.headers_mut().remove(http::header::HOST);
    flood.ready().await.unwrap();
    assert!(
        flood.send_request(req).await.is_err(),
        "a flood of CONTINUATION frames was served"
    );
    let mut fresh = wire::http2_client(env.proxy).await;
    let again = wire::send_h2(&mut fresh, request("GET", "/km/api/latest/content", &[], "")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        env.simulator().request_count(),
        2,
        "an oversized head reached the upstream"
    );
    env.stop().await;
}
