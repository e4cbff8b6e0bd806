//! The admin port under attack: cross-site POSTs from a web page on the
//! same host, the admin token, scoped resets, the `Host` rule (on both
//! ports, over HTTP/1 and HTTP/2), and the admin port's head timeout and
//! connection cap. Every test speaks real HTTP to a real kmproxy, and counts
//! what reached the simulator.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Answer, Env, HELPDESK_KEY};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kmproxy::config::Config;
use kmproxy::secret::Secret;
use kmproxy::sim::{LoginKind, LoginOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: (&str, &str) = ("x-kmproxy-admin", "1");
const CONTENT: &str = "/km/api/latest/content";

fn wrong_password(c: &mut Config, principal: &str) {
    let p = c.principal_id(principal).unwrap();
    if let kmproxy::config::PrincipalKind::User { password, .. } = &mut c.principals[p].kind {
        *password = Secret::literal("wrong-password");
    }
}

/// Rejected logins of the console user (`okcsuser`, principal `agent`) or
/// the web user (`webuser`, principal `web`).
fn rejected(env: &Env, user: &str) -> u64 {
    let kind = if user == "webuser" {
        LoginKind::Contact
    } else {
        LoginKind::Account
    };
    env.simulator().logins(kind, Some(user), LoginOutcome::Rejected)
}

fn api_user_rejected(env: &Env) -> u64 {
    env.simulator()
        .logins(LoginKind::Integration, None, LoginOutcome::Rejected)
}

async fn admin_post(env: &Env, path: &str, headers: &[(&str, &str)], body: &'static str) -> Answer {
    env.send_to(
        env.admin,
        Method::POST,
        path,
        headers,
        Bytes::from_static(body.as_bytes()),
    )
    .await
}

/// Sends `request` on a fresh connection and reads until the server closes.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer to {request:?}");
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

// ---------------------------------------------------------------------------
// Cross-site POSTs and the admin token
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_shaped_admin_posts_are_refused_and_log_nobody_in() {
    let env = Env::builder().config(|c| wrong_password(c, "agent")).start().await;
    let agent = [("x-kmproxy-key", HELPDESK_KEY)];
    assert_eq!(env.get(CONTENT, &agent).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(rejected(&env, "okcsuser"), 1, "agent parked");
    let logins = env.simulator().total_logins();
    // What a page can send without a preflight: a "simple" request.
    let shapes: [&[(&str, &str)]; 6] = [
        &[("content-type", "text/plain")],
        &[("content-type", "application/x-www-form-urlencoded")],
        &[("content-type", "multipart/form-data; boundary=x")],
        &[("content-type", "text/plain"), ("origin", "http://evil.example")],
        &[("origin", "null")],
        // Only the exact value counts.
        &[("x-kmproxy-admin", "true")],
    ];
    for path in ["/principals/public/reset", "/principals/agent/reset", "/api-user/reset"] {
        for headers in shapes {
            let a = admin_post(&env, path, headers, "a=b").await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{path} {headers:?}");
            assert_eq!(a.error_code(), "KMPROXY-ADMIN");
            assert!(a.headers.get("access-control-allow-origin").is_none());
        }
    }
    // A preflight is never answered with a CORS grant either.
    let preflight = env
        .send_to(
            env.admin,
            Method::OPTIONS,
            "/principals/agent/reset",
            &[
                ("origin", "http://evil.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-kmproxy-admin"),
            ],
            Bytes::new(),
        )
        .await;
    assert!(!preflight.status.is_success());
    assert!(preflight.headers.get("access-control-allow-origin").is_none());
    assert!(preflight.headers.get("access-control-allow-headers").is_none());
    // Nothing was reset: the agent is still parked, and nobody logged in.
    assert_eq!(env.get(CONTENT, &agent).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(env.simulator().total_logins(), logins, "a refused POST caused a login");
    assert_eq!(rejected(&env, "okcsuser"), 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_a_post_needs_the_bearer_too() {
    let env = Env::builder()
        .config(|c| {
            wrong_password(c, "agent");
            c.server.admin_token = Some(Secret::literal("admin-s3cret"));
        })
        .start()
        .await;
    let agent = [("x-kmproxy-key", HELPDESK_KEY)];
    assert_eq!(env.get(CONTENT, &agent).await.status, StatusCode::BAD_GATEWAY);
    let path = "/principals/agent/reset";
    for auth in [
        None,
        Some("Bearer admin-s3cre"),
        Some("Bearer admin-s3cret2"),
        Some("Basic admin-s3cret"),
        Some("admin-s3cret"),
    ] {
        let mut headers = vec![ADMIN];
        headers.extend(auth.map(|a| ("authorization", a)));
        let a = admin_post(&env, path, &headers, "").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(a.error_code(), "KMPROXY-ADMIN-TOKEN");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
        assert!(!String::from_utf8_lossy(&a.body).contains("admin-s3cret"));
    }
    // The token without the header is still a cross-site shape.
    let a = admin_post(&env, path, &[("authorization", "Bearer admin-s3cret")], "").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(rejected(&env, "okcsuser"), 1, "no refused POST reset the agent");
    // Reads need neither.
    assert_eq!(env.admin_get("/status").await.status, StatusCode::OK);
    // Header and token: the reset happens, and allows one more attempt.
    let a = admin_post(&env, path, &[ADMIN, ("authorization", "bearer admin-s3cret")], "").await;
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(env.get(CONTENT, &agent).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(rejected(&env, "okcsuser"), 2);
    env.stop().await;
}

#[tokio::test]
async fn admin_bodies_are_capped() {
    let env = Env::start().await;
    let big = "x".repeat(64 * 1024);
    let a = env
        .send_to(env.admin, Method::POST, "/api-user/reset", &[ADMIN], Bytes::from(big))
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    env.stop().await;
}

// ---------------------------------------------------------------------------
// Scoped resets
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_reset_unparks_that_principal_and_no_other() {
    let env = Env::builder()
        .config(|c| {
            wrong_password(c, "agent");
            wrong_password(c, "web");
        })
        .start()
        .await;
    let agent = [("x-kmproxy-key", HELPDESK_KEY)];
    let web = [("x-kmproxy-key", HELPDESK_KEY), ("x-kmproxy-act-as", "web")];
    assert_eq!(env.get(CONTENT, &agent).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(env.get(CONTENT, &web).await.status, StatusCode::BAD_GATEWAY);
    let a = admin_post(&env, "/principals/agent/reset", &[ADMIN], "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["reset"], "agent");
    for _ in 0..3 {
        env.get(CONTENT, &agent).await;
        env.get(CONTENT, &web).await;
    }
    assert_eq!(rejected(&env, "okcsuser"), 2, "the agent got one more attempt");
    assert_eq!(rejected(&env, "webuser"), 1, "the web user stayed parked");
    let unknown = admin_post(&env, "/principals/nobody/reset", &[ADMIN], "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "KMPROXY-PRINCIPAL");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_api_user_reset_unparks_the_api_user() {
    let env = Env::builder()
        .config(|c| c.api_user.password = Secret::literal("wrong-api-password"))
        .start()
        .await;
    assert_eq!(env.get(CONTENT, &[]).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(api_user_rejected(&env), 1);
    // `public` is anonymous: it has no login of its own to reset.
    let a = admin_post(&env, "/principals/public/reset", &[ADMIN], "").await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(a.json()["error"]["detail"]
        .as_str()
        .unwrap()
        .contains("/api-user/reset"));
    assert_eq!(env.get(CONTENT, &[]).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(api_user_rejected(&env), 1, "resetting `public` un-parked the API user");
    let a = admin_post(&env, "/api-user/reset", &[ADMIN], "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(env.get(CONTENT, &[]).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(env.get(CONTENT, &[]).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(api_user_rejected(&env), 2, "one more attempt, then parked again");
    env.stop().await;
}

/// A user principal's reset leaves the API user parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_principal_reset_leaves_the_api_user_parked() {
    let env = Env::builder()
        .config(|c| c.api_user.password = Secret::literal("wrong-api-password"))
        .start()
        .await;
    assert_eq!(env.get(CONTENT, &[]).await.status, StatusCode::BAD_GATEWAY);
    let a = admin_post(&env, "/principals/agent/reset", &[ADMIN], "").await;
    assert_eq!(a.status, StatusCode::OK);
    env.get(CONTENT, &[]).await;
    env.get(CONTENT, &[("x-kmproxy-key", HELPDESK_KEY)]).await;
    assert_eq!(api_user_rejected(&env), 1, "the agent's reset un-parked the API user");
    env.stop().await;
}

// ---------------------------------------------------------------------------
// The Host rule, on both ports
// ---------------------------------------------------------------------------

/// `Host` values that must be refused, as raw header lines.
const BAD_HOSTS: &[(&str, &str)] = &[
    ("no Host", ""),
    ("two Host headers", "host: localhost\r\nhost: localhost\r\n"),
    ("a rebinding name", "host: evil.example\r\n"),
    ("a rebinding name with a port", "host: evil.example:8080\r\n"),
    ("a name ending in localhost", "host: evillocalhost\r\n"),
    ("localhost as a subdomain", "host: localhost.evil.example\r\n"),
    ("userinfo", "host: user@localhost\r\n"),
    ("an empty Host", "host: \r\n"),
    ("a port out of range", "host: localhost:99999\r\n"),
    ("port 65536", "host: 127.0.0.1:65536\r\n"),
    ("port 0", "host: [::1]:0\r\n"),
];

fn allowing_kmproxy_internal() -> common::Builder {
    Env::builder().config(|c| c.server.allowed_hosts = vec!["kmproxy.internal".into()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_naming_no_host_two_hosts_or_a_foreign_host_get_400_on_both_ports() {
    let env = allowing_kmproxy_internal().start().await;
    for (port, target) in [(env.proxy, CONTENT), (env.admin, "/status")] {
        for (what, host) in BAD_HOSTS {
            let answer = raw(
                port,
                &format!("GET {target} HTTP/1.1\r\n{host}connection: close\r\n\r\n"),
            )
            .await;
            assert_eq!(status_of(&answer), 400, "{what} on {target}: {answer}");
            assert!(answer.contains("\"errorCode\":\"KMPROXY-HOST\""), "{what}: {answer}");
        }
        let http10 = raw(port, &format!("GET {target} HTTP/1.0\r\n\r\n")).await;
        assert_eq!(status_of(&http10), 400, "HTTP/1.0 without Host: {http10}");
        // A state-changing call is judged by its Host first, too.
        let post = raw(
            port,
            "POST /api-user/reset HTTP/1.1\r\nhost: evil.example\r\nx-kmproxy-admin: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&post), 400, "{post}");
    }
    assert_eq!(
        env.simulator().request_count(),
        0,
        "a refused call reached the upstream"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_names_ip_literals_and_allowed_hosts_pass_on_both_ports() {
    let env = allowing_kmproxy_internal().start().await;
    let good = [
        "localhost",
        "LocalHost:8080",
        "app.localhost",
        "127.0.0.1",
        "127.0.0.2:1",
        "[::1]:8080",
        "10.20.30.40",
        "[2001:db8::1]",
        "kmproxy.internal",
        "KMPROXY.INTERNAL:9090",
    ];
    for (port, target) in [(env.proxy, CONTENT), (env.admin, "/status")] {
        for host in good {
            let answer = raw(
                port,
                &format!("GET {target} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"),
            )
            .await;
            assert_eq!(status_of(&answer), 200, "Host: {host} on {target}: {answer}");
        }
    }
    assert_eq!(env.simulator().request_count(), good.len() as u64);
    env.stop().await;
}

/// Sends one HTTP/2 (prior knowledge) GET whose `:authority` is `authority`.
async fn h2_get(addr: SocketAddr, authority: &str, path: &str) -> StatusCode {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    let _ = res.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_counts_as_host() {
    let env = Env::start().await;
    for (port, target) in [(env.proxy, CONTENT), (env.admin, "/status")] {
        assert_eq!(
            h2_get(port, "evil.example", target).await,
            StatusCode::BAD_REQUEST,
            "{target}"
        );
        assert_eq!(
            h2_get(port, "evil.example:80", target).await,
            StatusCode::BAD_REQUEST,
            "{target}"
        );
        assert_eq!(
            h2_get(port, "localhost:99999", target).await,
            StatusCode::BAD_REQUEST,
            "{target}"
        );
        assert_eq!(
            h2_get(port, &port.to_string(), target).await,
            StatusCode::OK,
            "{target}"
        );
        assert_eq!(h2_get(port, "localhost", target).await, StatusCode::OK, "{target}");
    }
    assert_eq!(env.simulator().request_count(), 2);
    env.stop().await;
}

// ---------------------------------------------------------------------------
// The admin port's head timeout and connection cap
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_are_closed_and_cannot_hold_the_admin_port() {
    const CAP: usize = 4;
    let env = Env::builder()
        .config(|c| {
            c.server.max_connections = CAP;
            c.server.header_read_timeout = Duration::from_secs(2);
        })
        .start()
        .await;
    // The harness keeps one idle admin connection from its warm-up; this
    // fills the cap whatever it holds.
    let mut hogs = Vec::new();
    for _ in 0..=CAP {
        let mut tcp = TcpStream::connect(env.admin).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-half: ")
            .await
            .unwrap();
        hogs.push(tcp);
    }
    // The cap holds: one more connection is accepted by the kernel, not served.
    let mut late = TcpStream::connect(env.admin).await.unwrap();
    late.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(800), late.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "served past the cap: {}",
        String::from_utf8_lossy(&answer)
    );
    // The data port has a cap of its own: unaffected.
    assert_eq!(env.get(CONTENT, &[]).await.status, StatusCode::OK);
    // The head timeout closes the hogs, and the waiting call is then served.
    let served = tokio::time::timeout(Duration::from_secs(8), late.read_to_end(&mut answer)).await;
    assert!(served.is_ok(), "the admin port stayed full");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    for mut hog in hogs {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(8), hog.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a half-sent head was never closed");
    }
    assert_eq!(env.admin_get("/healthz").await.status, StatusCode::OK);
    env.stop().await;
}
