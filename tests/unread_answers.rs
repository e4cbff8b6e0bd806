//! Answers the caller never reads (SECURITY.md, "A client cannot hold
//! kmproxy's resources beyond its bounds"), attacked over real sockets: an
//! HTTP/2 caller that opens many streams and takes nothing of their
//! answers, and HTTP/1 callers that never read. Their answers hold at most
//! `max_in_flight` upstream connections, and only until the send timeout
//! (`upstream.timeout`) has passed with nothing taken; meanwhile other
//! callers are served. What the upstream holds is read from the
//! simulator's count of open connections.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{eventually, Env};
use http::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `upstream.timeout`, and so the send timeout.
const STALL: Duration = Duration::from_secs(1);
/// An answer larger than an HTTP/2 stream's default window (64 KiB).
const BLOB: &str = "/km/api/latest/content/blob?bytes=1048576";
const CONTENT: &str = "/km/api/latest/content";

async fn env(max_in_flight: usize) -> Env {
    Env::builder()
        .config(move |c| {
            c.upstream.timeout = STALL;
            c.server.max_in_flight = max_in_flight;
            c.server.queue_timeout = Duration::from_millis(300);
        })
        .start()
        .await
}

/// An HTTP/2 caller that never reads: the h2 crate's client with its
/// default windows (64 KiB per stream and per connection), which it never
/// gives back, so kmproxy may send no more than that in all.
struct Unread {
    answers: Vec<http::Response<h2::RecvStream>>,
}

impl Unread {
    /// Opens `n` streams for `path` on one connection; returns once every
    /// answer head has come.
    async fn open(env: &Env, path: &str, n: usize) -> Self {
        let tcp = TcpStream::connect(env.proxy).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let mut heads = Vec::new();
        for _ in 0..n {
            client = client.ready().await.unwrap();
            let req = http::Request::get(format!("http://127.0.0.1{path}")).body(()).unwrap();
            heads.push(client.send_request(req, true).unwrap().0);
        }
        let answers = futures_util::future::try_join_all(heads).await.unwrap();
        Self { answers }
    }

    fn statuses(&self, status: StatusCode) -> usize {
        self.answers.iter().filter(|a| a.status() == status).count()
    }

    /// True when every answer of `status` ended in a reset: none of them
    /// was sent whole.
    async fn all_reset(self, status: StatusCode) -> bool {
        let mut all = true;
        for answer in self.answers.into_iter().filter(|a| a.status() == status) {
            let mut body = answer.into_body();
            let ended = loop {
                match body.data().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e.is_reset(),
                    None => break false,
                }
            };
            all &= ended;
        }
        all
    }
}

/// Waits (at most `within`) until no call holds a slot and the upstream
/// has at most `upstream` connections open; whether that came.
async fn freed(env: &Env, upstream: u64, within: Duration) -> bool {
    let (app, sim) = (env.app.clone(), env.simulator().clone());
    eventually(within, move || {
        app.live().calls_in_flight() == 0 && sim.open_connections() <= upstream
    })
    .await
}

/// `kmproxy_calls_in_flight` as the admin port reports it.
async fn calls_in_flight(env: &Env) -> i64 {
    let metrics = env.admin_get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("kmproxy_calls_in_flight "))
        .unwrap_or_else(|| panic!("no kmproxy_calls_in_flight in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_http2_answers_hold_at_most_max_in_flight_upstream_connections() {
    let env = env(8).await;
    env.simulator().reset_counters();
    let idle = env.simulator().open_connections();
    // 40 streams, none read: 8 hold slots (and upstream connections), the
    // rest wait `queue_timeout` and are refused.
    let unread = Unread::open(&env, BLOB, 40).await;
    assert_eq!(unread.statuses(StatusCode::OK), 8);
    assert_eq!(unread.statuses(StatusCode::SERVICE_UNAVAILABLE), 32);
    assert!(unread
        .answers
        .iter()
        .filter(|a| a.status() == StatusCode::SERVICE_UNAVAILABLE)
        .all(|a| a.headers()["retry-after"] == "1"));
    let peak = env.simulator().peak_open_connections();
    assert!(peak <= idle + 8, "the upstream saw {peak} connections open at once");
    assert_eq!(calls_in_flight(&env).await, 8);
    // Past the send timeout the streams are reset and every slot is back.
    assert!(
        freed(&env, idle, 4 * STALL).await,
        "{} upstream connections open, {} calls in flight",
        env.simulator().open_connections(),
        env.app.live().calls_in_flight()
    );
    assert_eq!(calls_in_flight(&env).await, 0);
    assert!(unread.all_reset(StatusCode::OK).await, "an unread answer was not ended");
    assert_eq!(env.get(CONTENT, &[]).await.status, StatusCode::OK);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_http2_answers_end_after_the_send_timeout_while_other_callers_are_served() {
    let env = env(512).await;
    let idle = env.simulator().open_connections();
    let streams = kmproxy::server::MAX_STREAMS as usize;
    let unread = Unread::open(&env, BLOB, streams).await;
    let stalled = Instant::now();
    assert_eq!(unread.statuses(StatusCode::OK), streams);
    assert!(env.simulator().open_connections() >= streams as u64);
    // Held before the timeout: each unread answer keeps its slot.
    assert_eq!(calls_in_flight(&env).await, streams as i64);
    // Meanwhile an ordinary caller is served at once, a whole blob too.
    let started = Instant::now();
    assert_eq!(env.get(CONTENT, &[]).await.status, StatusCode::OK);
    assert!(started.elapsed() < STALL, "served after {:?}", started.elapsed());
    let blob = env.get(BLOB, &[]).await;
    assert_eq!(blob.status, StatusCode::OK);
    assert_eq!(
        hex::encode(Sha256::digest(&blob.body)),
        kmproxy::sim::blob_sha256(1 << 20)
    );
    // The unread ones end after the send timeout, and free what they held.
    assert!(
        freed(&env, idle + 2, 4 * STALL).await,
        "{} upstream connections open, {} calls in flight",
        env.simulator().open_connections(),
        env.app.live().calls_in_flight()
    );
    assert!(stalled.elapsed() >= STALL / 2, "ended after {:?}", stalled.elapsed());
    assert_eq!(calls_in_flight(&env).await, 0);
    assert!(unread.all_reset(StatusCode::OK).await, "an unread answer was not ended");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_http1_answers_end_after_the_send_timeout_while_other_callers_are_served() {
    let env = env(512).await;
    let idle = env.simulator().open_connections();
    // 64 MiB: far more than the sockets between kmproxy and the caller hold.
    let head = "GET /km/api/latest/content/blob?bytes=67108864 HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
    let mut unread = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(env.proxy).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        // The answer's first bytes say it began; then nothing more is read.
        let mut first = [0u8; 12];
        s.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        unread.push(s);
    }
    assert!(env.simulator().open_connections() >= 8);
    assert_eq!(calls_in_flight(&env).await, 8);
    let started = Instant::now();
    assert_eq!(env.get(CONTENT, &[]).await.status, StatusCode::OK);
    assert!(started.elapsed() < STALL, "served after {:?}", started.elapsed());
    assert!(
        freed(&env, idle + 1, 4 * STALL).await,
        "{} upstream connections open, {} calls in flight",
        env.simulator().open_connections(),
        env.app.live().calls_in_flight()
    );
    assert_eq!(calls_in_flight(&env).await, 0);
    for mut s in unread {
        let mut sink = vec![0u8; 1 << 16];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut got = 0usize;
            loop {
                match s.read(&mut sink).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        })
        .await;
        let got = closed.expect("kmproxy closed the connection");
        assert!(got < 64 << 20, "the whole answer went");
    }
    env.stop().await;
}
