//! Faults and hostile input: slow and greedy clients, request smuggling
//! shapes, oversized heads, broken upstreams, lockout safety under load.
//! Each test asserts what the caller got and what the simulator saw.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{eventually, Env, HELPDESK_KEY};
use http::StatusCode;
use kmproxy::config::PrincipalKind;
use kmproxy::secret::Secret;
use kmproxy::sim::{LoginKind, LoginOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes raw bytes to the proxy and reads until it closes (or `wait` passes).
async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn still_serving(env: &Env) {
    let a = env.get("/km/api/latest/content", &[]).await;
    assert_eq!(a.status, StatusCode::OK, "the proxy stopped serving");
}

fn wrong_agent_password(c: &mut kmproxy::config::Config) {
    if let PrincipalKind::User { password, .. } = &mut c.principals[1].kind {
        *password = Secret::literal("not-the-password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_under_load_is_tried_exactly_once() {
    let env = Env::builder().config(wrong_agent_password).start().await;
    // 50 calls a second for 10 seconds.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let at = start + Duration::from_millis(20 * i as u64);
        let url = env.url("/km/api/latest/content");
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
            let req = http::Request::get(url)
                .header("x-kmproxy-key", HELPDESK_KEY)
                .body(http_body_util::Empty::new())
                .unwrap();
            let res = client.request(req).await.unwrap();
            let status = res.status();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, body)
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["errorCode"], "KMPROXY-LOGIN-REJECTED");
        assert!(v["error"]["detail"].as_str().unwrap().contains("agent"));
    }
    let sim = env.simulator();
    assert_eq!(sim.logins(LoginKind::Account, None, LoginOutcome::Rejected), 1);
    assert_eq!(sim.logins(LoginKind::Account, None, LoginOutcome::Ok), 0);
    assert_eq!(sim.request_count(), 0, "no call went upstream without its user token");
    // Other principals are unaffected.
    still_serving(&env).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_logins_back_off_then_recover_without_restart() {
    // The warm-up login is the first attempt.
    let start = Instant::now();
    let env = Env::builder()
        .before_start(|sim| sim.fail_logins(503, 1_000_000))
        .start()
        .await;
    while start.elapsed() < Duration::from_secs(5) {
        let a = env.get("/km/api/latest/content", &[]).await;
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(a.error_code(), "KMPROXY-LOGIN-BACKOFF");
            let secs: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=300).contains(&secs));
        } else {
            assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{:?}", a.body);
            assert_eq!(a.error_code(), "KMPROXY-LOGIN");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Backoff 1 s, 2 s, 4 s (each up to 20 % shorter): attempts near 0, 1, 3 s.
    let failed = env
        .simulator()
        .logins(LoginKind::Integration, None, LoginOutcome::Failed);
    assert!((3..=4).contains(&failed), "{failed} attempts in 5 s");
    // The upstream recovers: kmproxy does too, once the backoff runs out.
    env.simulator().reset_faults();
    let recovered = Instant::now();
    loop {
        let a = env.get("/km/api/latest/content", &[]).await;
        if a.status == StatusCode::OK {
            break;
        }
        assert!(recovered.elapsed() < Duration::from_secs(6), "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        env.simulator().logins(LoginKind::Integration, None, LoginOutcome::Ok),
        1
    );
    env.stop().await;
}

#[tokio::test]
async fn slow_client_head_is_cut_off_and_idle_connections_closed() {
    let env = Env::builder()
        .config(|c| c.server.header_read_timeout = Duration::from_millis(300))
        .start()
        .await;
    let t = Instant::now();
    let out = raw(
        env.proxy,
        b"GET /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "connection held {:?}",
        t.elapsed()
    );
    assert!(!out.contains("200 OK"), "{out}");
    // An idle keep-alive connection is closed too.
    let mut s = TcpStream::connect(env.proxy).await.unwrap();
    s.write_all(b"GET /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "idle connection not closed");
    assert!(t.elapsed() < Duration::from_secs(3));
    still_serving(&env).await;
    env.stop().await;
}

/// `n` calls to the content API at once, each on its own connection: their
/// statuses and `Retry-After` headers.
fn fire(env: &Env, n: usize) -> Vec<tokio::task::JoinHandle<(StatusCode, Option<http::HeaderValue>)>> {
    (0..n)
        .map(|_| {
            let url = env.url("/km/api/latest/content");
            tokio::spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<bytes::Bytes>>();
                let res = client.get(url.parse().unwrap()).await.unwrap();
                (res.status(), res.headers().get("retry-after").cloned())
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_max_in_flight_get_503() {
    let env = Env::builder()
        .config(|c| {
            c.server.max_in_flight = 2;
            c.server.queue_timeout = Duration::ZERO;
        })
        .start()
        .await;
    still_serving(&env).await;
    env.simulator().set_delay(Duration::from_millis(600));
    let calls = fire(&env, 6);
    let mut ok = 0;
    let mut busy = 0;
    for c in calls {
        match c.await.unwrap() {
            (StatusCode::OK, _) => ok += 1,
            (StatusCode::SERVICE_UNAVAILABLE, Some(retry)) => {
                assert_eq!(retry, "1");
                busy += 1
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, busy), (2, 4));
    assert_eq!(env.simulator().request_count(), 3, "refused calls never went upstream");
    env.simulator().set_delay(Duration::ZERO);
    still_serving(&env).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_max_in_flight_wait_for_a_slot_up_to_queue_timeout() {
    let env = Env::builder()
        .config(|c| {
            c.server.max_in_flight = 2;
            c.server.queue_timeout = Duration::from_secs(10);
        })
        .start()
        .await;
    still_serving(&env).await;
    env.simulator().set_delay(Duration::from_millis(300));
    let t = Instant::now();
    let calls = fire(&env, 6);
    for c in calls {
        assert_eq!(c.await.unwrap().0, StatusCode::OK);
    }
    // Two at a time: three waves of 300 ms.
    assert!(t.elapsed() >= Duration::from_millis(850), "{:?}", t.elapsed());
    assert_eq!(env.simulator().request_count(), 7);
    env.stop().await;

    // A slot that does not free up in time: 503.
    let env = Env::builder()
        .config(|c| {
            c.server.max_in_flight = 1;
            c.server.queue_timeout = Duration::from_millis(200);
        })
        .start()
        .await;
    still_serving(&env).await;
    env.simulator().set_delay(Duration::from_millis(1500));
    let t = Instant::now();
    let calls = fire(&env, 2);
    // Calls that will be refused anyway never queue for a slot.
    assert!(eventually(Duration::from_secs(2), || env.simulator().request_count() == 2).await);
    let refused = Instant::now();
    assert_eq!(env.get("/elsewhere", &[]).await.status, StatusCode::NOT_FOUND);
    let wrong_key = env.get("/km/api/latest/content", &[("x-kmproxy-key", "nope")]).await;
    assert_eq!(wrong_key.status, StatusCode::UNAUTHORIZED);
    assert!(refused.elapsed() < Duration::from_secs(1), "{:?}", refused.elapsed());
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap().0);
    }
    answers.sort();
    assert_eq!(answers, vec![StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE]);
    assert!(t.elapsed() >= Duration::from_millis(1400));
    assert_eq!(
        env.simulator().request_count(),
        2,
        "the refused call never went upstream"
    );
    env.stop().await;
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let env = Env::start().await;
    let big = format!(
        "GET /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let out = raw(env.proxy, big.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{}", &out[..out.len().min(200)]);
    let mut many = String::from("GET /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\n");
    for i in 0..150 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let out = raw(env.proxy, many.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{}", &out[..out.len().min(200)]);
    let long_uri = format!(
        "GET /km/api/latest/content?q={} HTTP/1.1\r\nhost: localhost\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let out = raw(env.proxy, long_uri.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        out.starts_with("HTTP/1.1 414") || out.starts_with("HTTP/1.1 431"),
        "{}",
        &out[..out.len().min(200)]
    );
    assert_eq!(env.simulator().request_count(), 0);
    still_serving(&env).await;
    env.stop().await;
}

#[tokio::test]
async fn smuggling_shapes_never_desync_the_upstream() {
    let env = Env::start().await;
    // Content-Length and Transfer-Encoding together, with a second request
    // hidden in what a CL-framing peer would read as the body.
    // The hidden request is one kmproxy would forward: only framing keeps
    // it from the upstream.
    let smuggle = "POST /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\ncontent-length: 64\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\nGET /km/api/latest/content?smuggled=1 HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let out = raw(env.proxy, smuggle.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        out.starts_with("HTTP/1.1 400") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    assert_eq!(
        out.matches("HTTP/1.1 ").count(),
        1,
        "one answer on a closing connection: {out}"
    );
    // Two different Content-Lengths.
    let dup = "POST /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\ncontent-length: 3\r\ncontent-length: 5\r\nconnection: close\r\n\r\nabcde";
    let out = raw(env.proxy, dup.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // CR inside a header value.
    let cr = "GET /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\nx-a: one\rtwo\r\nconnection: close\r\n\r\n";
    let out = raw(env.proxy, cr.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // Whatever reached the simulator was framed by kmproxy alone: no auth
    // path, and any POST carried an empty body.
    for r in env.simulator().requests() {
        assert_ne!(r.query.as_deref(), Some("smuggled=1"), "{r:?}");
        if r.method == "POST" {
            assert_eq!(r.body_len, 0);
        }
    }
    still_serving(&env).await;
    env.stop().await;
}

#[tokio::test]
async fn absolute_form_uri_naming_another_host_goes_to_the_configured_one() {
    let other = kmproxy::sim::Simulator::spawn(kmproxy::sim::SimConfig::default())
        .await
        .unwrap();
    let env = Env::start().await;
    let req = format!(
        "GET http://{}/km/api/latest/content?x=1 HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        other.addr, other.addr
    );
    let out = raw(env.proxy, req.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(
        other.sim.request_count() + other.sim.total_logins(),
        0,
        "the named host was contacted"
    );
    let reqs = env.simulator().requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].query.as_deref(), Some("x=1"));
    assert_eq!(
        reqs[0].headers["host"],
        format!("127.0.0.1:{}", env.sim.addr.port()).as_str()
    );
    env.stop().await;
}

#[tokio::test]
async fn hostile_kmauthtoken_values_get_400() {
    let env = Env::start().await;
    let huge = format!(r#"{{"localeId":"{}"}}"#, "x".repeat(20_000));
    let nested = format!("{}{}", "{\"a\":".repeat(1000), "}".repeat(1000));
    for (value, why) in [
        (huge.as_str(), "huge"),
        ("not json at all", "not JSON"),
        (nested.as_str(), "deeply nested"),
        (r#"{"localeId":["en_US"]}"#, "a list value"),
        (r#"{"captureAnalytics":{"on":true}}"#, "an object value"),
        ("[]", "not an object"),
    ] {
        let a = env.get("/km/api/latest/content", &[("kmauthtoken", value)]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(a.error_code(), "KMPROXY-KMAUTHTOKEN", "{why}");
    }
    assert_eq!(env.simulator().request_count(), 0);
    still_serving(&env).await;
    env.stop().await;
}

#[tokio::test]
async fn upstream_reset_before_the_answer_is_502_and_recovers() {
    // A fake upstream that answers logins, and resets every other call
    // until told to behave.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&healthy);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let flag = std::sync::Arc::clone(&flag);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let body = if head.contains("/auth/integration/authorize") {
                    r#"{"authenticationToken":"fake-int"}"#
                } else if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    r#"{"items":[]}"#
                } else {
                    return; // dropped: closed before any answer
                };
                let res = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(res.as_bytes()).await;
            });
        }
    });
    let env = Env::builder()
        .toml(move |t| t.replace("base_url = \"SIM_URL\"", &format!("base_url = \"http://{addr}\"")))
        .start()
        .await;
    for _ in 0..3 {
        let a = env.get("/km/api/latest/content", &[]).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{:?}", a.body);
        assert_eq!(a.error_code(), "KMPROXY-UPSTREAM");
    }
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let a = env.get("/km/api/latest/content", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(&a.body[..], br#"{"items":[]}"#);
    env.stop().await;
}

#[tokio::test]
async fn unresolvable_upstream_host_is_a_clear_error_and_bounded() {
    // `.invalid` never resolves (RFC 6761); whether the resolver answers at
    // once or not at all here, the login's timeout bounds the wait.
    let t = Instant::now();
    let env = Env::builder()
        .toml(|t| t.replace("base_url = \"SIM_URL\"", "base_url = \"http://kmproxy-test.invalid\""))
        .config(|c| {
            c.upstream.timeout = Duration::from_secs(2);
            c.upstream.connect_timeout = Duration::from_secs(1);
        })
        .start()
        .await;
    // The harness waited for the warm-up login to fail: bounded.
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    let ready = env.admin_get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = String::from_utf8_lossy(&ready.body);
    assert!(
        reason.contains("unreachable") || reason.contains("timed out"),
        "{reason}"
    );
    // A call inside the backoff is answered at once, without a lookup.
    let t = Instant::now();
    let a = env.get("/km/api/latest/content", &[]).await;
    assert!(t.elapsed() < Duration::from_millis(500), "took {:?}", t.elapsed());
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.error_code(), "KMPROXY-LOGIN-BACKOFF");
    env.stop().await;
}

#[tokio::test]
async fn a_stalled_upstream_body_is_cut_after_the_timeout() {
    // The simulator promises 100,000 bytes, sends 1,000, then stalls
    // without closing.
    let env = Env::builder()
        .config(|c| c.upstream.timeout = Duration::from_millis(500))
        .start()
        .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let res = client
        .get(
            env.url("/km/api/latest/content/blob?bytes=100000&stall_after=1000")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let t = Instant::now();
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        http_body_util::BodyExt::collect(res.into_body()),
    )
    .await
    .expect("the stalled answer was not cut");
    assert!(body.is_err(), "a stalled body must end abortively");
    assert!(t.elapsed() < Duration::from_secs(3), "cut after {:?}", t.elapsed());
    env.stop().await;
}
