//! The data path end to end: simulator + kmproxy on loopback, real HTTP.
//! Each test asserts what the caller got and what the simulator saw.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Answer, Env, HELPDESK_KEY, KIOSK_KEY, PORTAL_KEY};
use http::{Method, StatusCode};
use kmproxy::sim::{LoginKind, LoginOutcome, SimConfig, Simulator};
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Whom the simulator found the answered call acted for: (kind, user), read
/// from its record of the request (answers carry no echo of it).
fn principal(env: &Env, a: &Answer) -> (&'static str, Option<String>) {
    let r = env
        .simulator()
        .request_for(&a.headers)
        .expect("the answer names its request");
    let p = r.principal.expect("the call's tokens were accepted");
    (p.kind, p.user)
}

#[tokio::test]
async fn anonymous_call_gets_integration_token_and_configured_fields() {
    let env = Env::start().await;
    let a = env
        .get(
            "/km/api/latest/content?q=title%20eq%20%27a%20b%27&x=%2F&y=%E2%82%AC&z",
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let reqs = env.simulator().requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/km/api/latest/content");
    assert_eq!(
        r.query.as_deref(),
        Some("q=title%20eq%20%27a%20b%27&x=%2F&y=%E2%82%AC&z")
    );
    let k = r.kmauthtoken.as_ref().unwrap();
    assert_eq!(k["siteName"], "ORACLE_KNOWLEDGE");
    assert_eq!(k["localeId"], "en_US");
    assert_eq!(k["interfaceId"], "7");
    assert_eq!(k["appId"], "kmproxy-tests");
    assert!(k.get("userToken").is_none());
    let issued = env.simulator().issued_tokens();
    assert!(issued.iter().any(|t| k["integrationUserToken"] == t.as_str()));
    assert_eq!(principal(&env, &a), ("anonymous", None));
    env.stop().await;
}

#[tokio::test]
async fn caller_key_maps_to_console_user_and_act_as_switches() {
    let env = Env::start().await;
    let a = env.get("/km/api/v1/content", &[("x-kmproxy-key", HELPDESK_KEY)]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(principal(&env, &a), ("account", Some("okcsuser".to_owned())));

    let a = env
        .get(
            "/km/api/v1/content",
            &[("x-kmproxy-key", HELPDESK_KEY), ("x-kmproxy-act-as", "web")],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(principal(&env, &a), ("contact", Some("webuser".to_owned())));

    let a = env.get("/km/api/v1/content", &[("x-kmproxy-key", KIOSK_KEY)]).await;
    assert_eq!(principal(&env, &a), ("anonymous", None));

    let sim = env.simulator();
    assert_eq!(sim.logins(LoginKind::Account, Some("okcsuser"), LoginOutcome::Ok), 1);
    assert_eq!(sim.logins(LoginKind::Contact, Some("webuser"), LoginOutcome::Ok), 1);
    assert_eq!(sim.logins(LoginKind::Integration, None, LoginOutcome::Ok), 1);
    // The console user's token went only to the console user's calls.
    let reqs = sim.requests();
    let user_tokens: Vec<_> = reqs
        .iter()
        .map(|r| r.kmauthtoken.as_ref().unwrap().get("userToken").cloned())
        .collect();
    assert!(user_tokens[0].is_some() && user_tokens[1].is_some() && user_tokens[2].is_none());
    assert_ne!(user_tokens[0], user_tokens[1]);
    env.stop().await;
}

#[tokio::test]
async fn refused_callers_reach_nothing_upstream() {
    let env = Env::start().await;
    type Case<'a> = (&'a [(&'a str, &'a str)], StatusCode, &'a str);
    let cases: &[Case] = &[
        (
            &[("x-kmproxy-key", "not-a-key")],
            StatusCode::UNAUTHORIZED,
            "KMPROXY-CALLER",
        ),
        // An unknown key is refused even though a default principal exists.
        (&[("x-kmproxy-key", "")], StatusCode::UNAUTHORIZED, "KMPROXY-CALLER"),
        (
            &[("x-kmproxy-key", KIOSK_KEY), ("x-kmproxy-act-as", "agent")],
            StatusCode::FORBIDDEN,
            "KMPROXY-ACT-AS",
        ),
        (
            &[("x-kmproxy-key", HELPDESK_KEY), ("x-kmproxy-act-as", "nobody")],
            StatusCode::FORBIDDEN,
            "KMPROXY-ACT-AS",
        ),
        (
            &[("x-kmproxy-act-as", "agent")],
            StatusCode::FORBIDDEN,
            "KMPROXY-ACT-AS",
        ),
        (
            &[("x-kmproxy-key", PORTAL_KEY)],
            StatusCode::UNAUTHORIZED,
            "KMPROXY-BEARER",
        ),
        (
            &[("kmauthtoken", "not json")],
            StatusCode::BAD_REQUEST,
            "KMPROXY-KMAUTHTOKEN",
        ),
        (
            &[("kmauthtoken", r#"{"localeId":{"tag":"en_US"}}"#)],
            StatusCode::BAD_REQUEST,
            "KMPROXY-KMAUTHTOKEN",
        ),
    ];
    for (headers, status, code) in cases {
        let a = env.get("/km/api/latest/content", headers).await;
        assert_eq!(a.status, *status, "{headers:?}: {:?}", a.body);
        assert_eq!(a.error_code(), *code, "{headers:?}");
        assert_eq!(a.json()["error"]["type"], "PROXY");
        assert_eq!(a.headers["content-type"], "application/json");
    }
    assert_eq!(env.simulator().request_count(), 0);
    assert_eq!(
        env.simulator().total_logins(),
        1,
        "the warm-up's integration login only"
    );
    env.stop().await;
}

#[tokio::test]
async fn no_key_without_default_principal_is_401() {
    let env = Env::builder()
        .config(|c| c.server.default_principal = None)
        .start()
        .await;
    let a = env.get("/km/api/latest/content", &[]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.error_code(), "KMPROXY-CALLER");
    let a = env.get("/km/api/latest/content", &[("x-kmproxy-key", KIOSK_KEY)]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(env.simulator().request_count(), 1);
    env.stop().await;
}

#[tokio::test]
async fn forged_tokens_are_ignored_and_non_secret_fields_kept() {
    let env = Env::start().await;
    let forged = r#"{"siteName":"EVIL","integrationUserToken":"forged-int","userToken":"forged-user","localeId":"fr_FR","knowledgeInteractionId":"K-42","interactionIdGenerated":"false","appId":"caller-app","billableSessionId":"x"}"#;
    let a = env
        .get(
            "/km/api/latest/content",
            &[("x-kmproxy-key", HELPDESK_KEY), ("kmauthtoken", forged)],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let r = &env.simulator().requests()[0];
    let k = r.kmauthtoken.as_ref().unwrap();
    assert_eq!(k["siteName"], "ORACLE_KNOWLEDGE");
    assert_ne!(k["integrationUserToken"], "forged-int");
    assert_ne!(k["userToken"], "forged-user");
    let issued = env.simulator().issued_tokens();
    assert!(issued.iter().any(|t| k["userToken"] == t.as_str()));
    assert_eq!(k["localeId"], "fr_FR");
    assert_eq!(k["knowledgeInteractionId"], "K-42");
    assert_eq!(k["appId"], "caller-app"); // the caller's field wins over kmauthtoken_extra
    assert_eq!(k["interfaceId"], "7");
    assert_eq!(k["billableSessionId"], "x"); // one of the kept billing fields
    env.stop().await;
}

#[tokio::test]
async fn interaction_id_from_start_interaction_flows_through() {
    let env = Env::start().await;
    let a = env.get("/km/api/v1/knowledgeInteraction/startInteraction", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    let id = a.json()["knowledgeInteractionId"].as_str().unwrap().to_owned();
    let caller = format!(r#"{{"knowledgeInteractionId":"{id}","interactionIdGenerated":"true"}}"#);
    let a = env.get("/km/api/v1/content", &[("kmauthtoken", &caller)]).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    // A made-up one is the upstream's OK-SEC0012, passed through unchanged.
    let a = env
        .get(
            "/km/api/v1/content",
            &[(
                "kmauthtoken",
                r#"{"knowledgeInteractionId":"nope","interactionIdGenerated":"true"}"#,
            )],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error_code(), "OK-SEC0012");
    env.stop().await;
}

#[tokio::test]
async fn headers_are_cleaned_and_bodies_forwarded_intact() {
    let env = Env::start().await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let a = env
            .send(
                method.clone(),
                "/km/api/latest/content/123?mode=full",
                &[
                    ("x-kmproxy-key", HELPDESK_KEY),
                    ("x-kmproxy-debug", "1"),
                    ("authorization", "Basic c2VjcmV0"),
                    ("connection", "x-hop"),
                    ("x-hop", "1"),
                    ("x-custom", "kept"),
                    ("content-type", "application/json"),
                ],
                body.clone(),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{method}: {:?}", a.body);
    }
    let reqs = env.simulator().requests();
    assert_eq!(reqs.len(), 4);
    for (r, m) in reqs.iter().zip(["POST", "PUT", "PATCH", "DELETE"]) {
        assert_eq!(r.method, m);
        assert_eq!(r.body_len, body.len());
        assert_eq!(r.body_sha256, sha(&body));
        for gone in ["x-kmproxy-key", "x-kmproxy-debug", "authorization", "x-hop"] {
            assert!(!r.headers.contains_key(gone), "{gone} reached the upstream");
        }
        assert_eq!(r.headers["x-custom"], "kept");
        assert_eq!(r.headers["content-type"], "application/json");
    }
    env.stop().await;
}

#[tokio::test]
async fn bearer_principal_forwards_the_callers_bearer_without_user_token() {
    let env = Env::start().await;
    let a = env
        .get(
            "/km/api/latest/content",
            &[("x-kmproxy-key", PORTAL_KEY), ("authorization", "Bearer demo-jwt")],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(principal(&env, &a), ("bearer", None));
    let r = &env.simulator().requests()[0];
    assert_eq!(r.headers["authorization"], "Bearer demo-jwt");
    let k = r.kmauthtoken.as_ref().unwrap();
    assert!(k.get("userToken").is_none());
    assert!(k.get("integrationUserToken").is_some());
    // The simulator refuses an unknown bearer; that answer passes through.
    let a = env
        .get(
            "/km/api/latest/content",
            &[("x-kmproxy-key", PORTAL_KEY), ("authorization", "Bearer other")],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.error_code().starts_with("OK-"));
    env.stop().await;
}

#[tokio::test]
async fn auth_endpoints_and_foreign_paths_are_refused_before_forwarding() {
    let env = Env::start().await;
    for path in [
        "/km/api/latest/auth/integration/authorize",
        "/km/api/v1/auth/authorize",
        "/km/api/auth/integration/authorize",
        "/km/api/latest/AUTH/authorize",
        "/km/api/latest/%61uth/authorize",
        "/srt/api/latest/auth/authorize",
    ] {
        let a = env.send(Method::POST, path, &[], Bytes::from_static(b"{}")).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(a.error_code(), "KMPROXY-AUTH-PATH");
    }
    for path in [
        "/km/api/latest/../auth/authorize",
        "/km/api/latest/%2e%2e/auth/authorize",
        "/km/api//auth/x",
    ] {
        let a = env.get(path, &[]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(a.error_code(), "KMPROXY-PATH");
    }
    for path in ["/", "/km/api", "/healthz", "/api/latest/content", "/kmx/api/latest"] {
        let a = env.get(path, &[]).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(a.error_code(), "KMPROXY-NOT-FOUND");
    }
    assert_eq!(env.simulator().request_count(), 0);
    assert_eq!(
        env.simulator().total_logins(),
        1,
        "the warm-up's integration login only"
    );
    env.stop().await;
}

#[tokio::test]
async fn bodies_over_max_body_get_413_and_nothing_is_forwarded() {
    let env = Env::builder()
        .toml(|t| t.replace("max_body = \"1MiB\"", "max_body = \"1KiB\""))
        .start()
        .await;
    let a = env
        .send(Method::POST, "/km/api/latest/content", &[], vec![b'x'; 1025])
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.error_code(), "KMPROXY-BODY-LIMIT");
    // Exactly at the limit is fine.
    let a = env
        .send(Method::POST, "/km/api/latest/content", &[], vec![b'x'; 1024])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(env.simulator().request_count(), 1);
    env.stop().await;
}

#[tokio::test]
async fn chunked_body_over_max_body_gets_413_and_nothing_is_forwarded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::builder()
        .toml(|t| t.replace("max_body = \"1MiB\"", "max_body = \"1KiB\""))
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(env.proxy).await.unwrap();
    let chunk = "x".repeat(800);
    let req = format!(
        "POST /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("KMPROXY-BODY-LIMIT"));

    // A declared length over the limit is refused before any of the body
    // is sent (none is, here: kmproxy must not wait for it).
    let mut s = tokio::net::TcpStream::connect(env.proxy).await.unwrap();
    s.write_all(b"POST /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000000\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    assert_eq!(env.simulator().request_count(), 0);
    env.stop().await;
}

#[tokio::test]
async fn redirects_are_passed_back_not_followed() {
    let other = Simulator::spawn(SimConfig::default()).await.unwrap();
    let env = Env::start().await;
    let target = format!("{}/km/api/latest/content", other.base_url());
    let a = env
        .get(
            &format!(
                "/km/api/latest/content/redirect?to={}",
                target.replace(':', "%3A").replace('/', "%2F")
            ),
            &[("x-kmproxy-key", HELPDESK_KEY)],
        )
        .await;
    assert_eq!(a.status, StatusCode::FOUND);
    assert_eq!(a.headers["location"], target.as_str());
    assert_eq!(other.sim.request_count(), 0);
    assert_eq!(other.sim.total_logins(), 0);
    env.stop().await;
}

#[tokio::test]
async fn search_calls_go_to_search_base_url() {
    // Same simulator under another host name, so the two origins differ.
    let env = Env::builder()
        .toml(|t| {
            t.replace(
                "base_url = \"SIM_URL\"",
                "base_url = \"SIM_URL\"\nsearch_base_url = \"SEARCH_URL\"",
            )
        })
        .start_with(|toml, sim_url| toml.replace("SEARCH_URL", &sim_url.replace("127.0.0.1", "localhost")))
        .await;
    let a = env
        .get("/srt/api/latest/search/question?question=reset%20password", &[])
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let b = env.get("/km/api/latest/content", &[]).await;
    assert_eq!(b.status, StatusCode::OK);
    let reqs = env.simulator().requests();
    let port = env.sim.addr.port();
    assert_eq!(reqs[0].path, "/srt/api/latest/search/question");
    assert_eq!(reqs[0].headers["host"], format!("localhost:{port}").as_str());
    assert_eq!(reqs[0].kmauthtoken.as_ref().unwrap()["interfaceId"], "7");
    assert_eq!(reqs[1].headers["host"], format!("127.0.0.1:{port}").as_str());
    env.stop().await;
}

#[tokio::test]
async fn large_answers_stream_through_intact() {
    let env = Env::start().await;
    let n: u64 = 10 << 20;
    for chunked in ["", "&chunked=1"] {
        let a = env
            .get(&format!("/km/api/latest/content/blob?bytes={n}{chunked}"), &[])
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body.len() as u64, n);
        assert_eq!(sha(&a.body), kmproxy::sim::blob_sha256(n));
    }
    env.stop().await;
}

#[tokio::test]
async fn a_cut_upstream_body_is_not_a_complete_answer() {
    let env = Env::start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let res = client
        .get(
            env.url("/km/api/latest/content/blob?bytes=20000000&fail_after=8000000")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(res.into_body()).await;
    assert!(body.is_err(), "a truncated body must end abortively");
    env.stop().await;
}

#[tokio::test]
async fn upstream_unreachable_is_502_and_slow_is_504() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let env = Env::builder()
        .toml(move |t| t.replace("base_url = \"SIM_URL\"", &format!("base_url = \"{dead_url}\"")))
        .start()
        .await;
    // The warm-up login failed: readiness says why, calls get 503 while
    // the login backs off, then the next attempt's failure is a 502.
    let ready = env.admin_get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&ready.body).contains("unreachable"),
        "{ready:?}"
    );
    let a = env.get("/km/api/latest/content", &[]).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.error_code(), "KMPROXY-LOGIN-BACKOFF");
    let mut a = a;
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while a.status == StatusCode::SERVICE_UNAVAILABLE && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        a = env.get("/km/api/latest/content", &[]).await;
    }
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.error_code(), "KMPROXY-LOGIN");
    assert!(a.json()["error"]["detail"].as_str().unwrap().contains("unreachable"));
    env.stop().await;

    let env = Env::builder()
        .config(|c| c.upstream.timeout = Duration::from_millis(300))
        .start()
        .await;
    let a = env.get("/km/api/latest/content", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = env.get("/km/api/latest/content/slow?ms=2000", &[]).await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.error_code(), "KMPROXY-TIMEOUT");
    env.stop().await;
}

#[tokio::test]
async fn session_error_in_json_or_xml_is_replayed_after_one_relogin() {
    // Two expiries in a row: no re-login spacing.
    let env = Env::builder()
        .config(|c| c.tokens.min_relogin_interval = std::time::Duration::ZERO)
        .start()
        .await;
    for accept in ["application/json", "application/xml"] {
        let a = env
            .get(
                "/km/api/latest/content",
                &[("x-kmproxy-key", HELPDESK_KEY), ("accept", accept)],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{accept}");
        env.simulator().expire_all_tokens();
        let a = env
            .get(
                "/km/api/latest/content",
                &[("x-kmproxy-key", HELPDESK_KEY), ("accept", accept)],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{accept}: {:?}", a.body);
    }
    let sim = env.simulator();
    assert_eq!(sim.logins(LoginKind::Integration, None, LoginOutcome::Ok), 3);
    assert_eq!(sim.logins(LoginKind::Account, None, LoginOutcome::Ok), 3);
    env.stop().await;
}

#[tokio::test]
async fn upstream_connections_are_kept_and_reused() {
    let env = Env::start().await;
    for _ in 0..20 {
        let a = env.get("/km/api/latest/content", &[]).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    // Login and 20 calls, one after another: one kept-alive connection
    // serves them all (two at most, should a call catch the previous
    // exchange before its connection is idle again).
    let used = env.simulator().connections();
    assert!((1..=2).contains(&used), "{used} upstream connections for 21 exchanges");
    env.stop().await;
}

#[tokio::test]
async fn an_upstream_that_closes_its_connections_costs_no_call() {
    let env = Env::start().await;
    assert_eq!(env.get("/km/api/latest/content", &[]).await.status, StatusCode::OK);
    // From now on every answer says `Connection: close`: the connection
    // kmproxy holds is gone after each exchange, and a fresh one is dialled.
    env.simulator().set_close_connections(true);
    let before = env.simulator().connections();
    for _ in 0..10 {
        let a = env.get("/km/api/latest/content", &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.headers.get("connection").is_none(), "hop-by-hop header passed on");
    }
    assert!(env.simulator().connections() - before >= 9);
    // Keep-alive again: the pool recovers.
    env.simulator().set_close_connections(false);
    for _ in 0..3 {
        assert_eq!(env.get("/km/api/latest/content", &[]).await.status, StatusCode::OK);
    }
    let before = env.simulator().connections();
    for _ in 0..10 {
        assert_eq!(env.get("/km/api/latest/content", &[]).await.status, StatusCode::OK);
    }
    assert!(env.simulator().connections() - before <= 1);
    env.stop().await;
}
