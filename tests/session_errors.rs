//! Session errors end to end: simulator + kmproxy on loopback, real HTTP.
//! Every shape Oracle uses, compressed or not, at any status, triggers one
//! re-login and one replay; caller text that merely contains a code
//! triggers none; the caller gets the upstream's bytes as they were sent.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;

use bytes::Bytes;
use common::{Answer, Env};
use http::{Method, StatusCode};
use kmproxy::sim::RecordedRequest;
use kmproxy::sim::{LoginKind, LoginOutcome, SessionShape};
use sha2::{Digest, Sha256};

type Headers<'a> = &'a [(&'a str, &'a str)];

/// The allocations `f` makes on this thread (`allocation-counter`
/// replaces this test binary's global allocator with a counting one).
fn allocations_in(f: impl FnOnce()) -> u64 {
    allocation_counter::measure(f).count_total
}

/// An `Env` for tests that expire tokens back to back: a second
/// session-error re-login within `tokens.min_relogin_interval` (10 s by
/// default) is refused and the error reaches the caller (README, "at most
/// once per `tokens.min_relogin_interval`"), so these opt out.
async fn env_without_relogin_spacing() -> Env {
    Env::builder()
        .config(|c| c.tokens.min_relogin_interval = std::time::Duration::ZERO)
        .start()
        .await
}

/// The request the simulator recorded for `a`, checked to be the last it
/// received (the replay, after a session error).
fn last_request_answered(env: &Env, a: &Answer) -> RecordedRequest {
    let r = env
        .simulator()
        .request_for(&a.headers)
        .expect("the answer names its recorded request");
    let last = env.simulator().requests().last().map(|l| l.id);
    assert_eq!(Some(r.id), last, "the caller got the answer to the last request sent");
    r
}

fn integration_logins(env: &Env) -> u64 {
    env.simulator().logins(LoginKind::Integration, None, LoginOutcome::Ok)
}

/// The answer's body decoded per its `Content-Encoding`.
fn decoded(a: &Answer) -> Vec<u8> {
    let coding = a
        .headers
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut out = Vec::new();
    match coding.as_deref() {
        None => out.extend_from_slice(&a.body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(&a.body[..]).read_to_end(&mut out).unwrap();
        }
        Some("deflate") => {
            flate2::read::ZlibDecoder::new(&a.body[..])
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(&a.body[..], 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some(other) => panic!("unexpected coding {other}"),
    }
    out
}

/// One call across an expiry: returns the answer and what it cost upstream
/// (integration logins, requests received).
async fn across_expiry(
    env: &Env,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> (Answer, u64, u64) {
    let (logins, requests) = (integration_logins(env), env.simulator().request_count());
    env.simulator().expire_all_tokens();
    let a = env.send(method, path, headers, Bytes::from_static(body)).await;
    let cost = (
        integration_logins(env) - logins,
        env.simulator().request_count() - requests,
    );
    (a, cost.0, cost.1)
}

#[test]
fn an_ordinary_2xx_costs_the_check_no_allocation() {
    use kmproxy::session_error::{Opening, Reading};
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json; charset=UTF-8".parse().unwrap());
    let first = br#"{"items":[{"answerId":1000077,"title":"Registration"}],"hasMore":false}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &first.repeat(100)).unwrap();
    let gz = gz.finish().unwrap();
    let identity = allocations_in(|| {
        let reading = Reading::of(&headers).unwrap();
        assert_eq!(reading.opening(first), Opening::Other);
    });
    assert_eq!(identity, 0, "identity");
    headers.insert("content-encoding", "gzip".parse().unwrap());
    let gzip = allocations_in(|| {
        let reading = Reading::of(&headers).unwrap();
        assert_eq!(reading.opening(&gz), Opening::Other);
    });
    assert_eq!(gzip, 0, "gzip: inflated into a buffer on the stack");
    // brotli's decoder allocates its tables (within its budget): a few
    // allocations, counted here so that the counter is seen to count.
    let mut br = Vec::new();
    std::io::Write::write_all(
        &mut brotli::CompressorWriter::new(&mut br, 4096, 5, 22),
        &first.repeat(100),
    )
    .unwrap();
    headers.insert("content-encoding", "br".parse().unwrap());
    let brotli = allocations_in(|| {
        let reading = Reading::of(&headers).unwrap();
        assert_eq!(reading.opening(&br), Opening::Other);
    });
    eprintln!("brotli opening: {brotli} allocations");
    assert!((1..=64).contains(&brotli), "{brotli}");
}

#[tokio::test]
async fn a_compressed_session_error_is_replayed_and_the_caller_gets_the_upstreams_bytes() {
    let env = env_without_relogin_spacing().await;
    for coding in ["gzip", "deflate", "br"] {
        // The simulator compresses its 401 too: kmproxy decodes it for the check.
        let direct = env
            .send_to(
                env.sim.addr,
                Method::GET,
                "/km/api/latest/content",
                &[("accept-encoding", coding)],
                Bytes::new(),
            )
            .await;
        assert_eq!(direct.status, StatusCode::BAD_REQUEST); // no kmauthtoken at all
        assert_eq!(direct.headers["content-encoding"], coding);

        let (a, logins, requests) = across_expiry(
            &env,
            Method::GET,
            "/km/api/latest/content",
            &[("accept-encoding", coding)],
            b"",
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{coding}");
        assert_eq!((logins, requests), (1, 2), "{coding}: one login, one replay");
        assert_eq!(a.headers["content-encoding"], coding, "the upstream's coding is kept");
        let json: serde_json::Value = serde_json::from_slice(&decoded(&a)).unwrap();
        assert!(
            json["items"].as_array().is_some_and(|i| !i.is_empty()),
            "{coding}: the content list: {json}"
        );
        let replay = last_request_answered(&env, &a);
        assert_eq!(
            (replay.method.as_str(), replay.path.as_str()),
            ("GET", "/km/api/latest/content"),
            "{coding}"
        );
        assert_eq!(replay.headers["accept-encoding"], coding, "{coding}");
    }
    env.stop().await;
}

#[tokio::test]
async fn every_error_shape_costs_one_login_and_one_replay_of_the_same_body() {
    let env = env_without_relogin_spacing().await;
    // Endpoints that take a body: a content write, a search (the Digital
    // Assistant sample POSTs its question), and a batch, whose answer
    // depends on the body it got.
    let write: &'static [u8] = br#"{"title":"How do I reset my password?","contentType":{"referenceKey":"FAQ"}}"#;
    let search: &'static [u8] = br#"{"question":"how do I reset my password?"}"#;
    let batch: &'static [u8] =
        br#"{"asynchronous":false,"requests":[{"id":"a1","method":"GET","relativeUrl":"content/answers/1000078"}]}"#;
    let content = "/km/api/latest/content";
    let question = "/srt/api/latest/search/question?question=reset";
    let batched = "/km/api/latest/batch";
    let json = [("content-type", "application/json"), ("accept", "application/json")];
    let xml = [("content-type", "application/json"), ("accept", "application/xml")];
    let gzip_json = [("content-type", "application/json"), ("accept-encoding", "gzip")];
    let cases: [(SessionShape, &str, Headers, &'static [u8]); 8] = [
        (SessionShape::ByApi, content, &json, write),
        (SessionShape::ByApi, content, &xml, write),
        (SessionShape::ByApi, question, &json, search),
        (SessionShape::ByApi, question, &gzip_json, search),
        (SessionShape::Object, question, &json, search),
        (SessionShape::Errors, batched, &json, batch),
        (SessionShape::List, content, &json, write),
        (SessionShape::List, batched, &gzip_json, batch),
    ];
    for (shape, path, headers, body) in cases {
        env.simulator().set_session_error_shape(shape);
        let (a, logins, requests) = across_expiry(&env, Method::POST, path, headers, body).await;
        let case = format!("{shape:?} {path} {headers:?}");
        assert_eq!(a.status, StatusCode::OK, "{case}: {:?}", a.body);
        assert_eq!((logins, requests), (1, 2), "{case}");
        let sent = env.simulator().requests();
        let [.., first, replay] = &sent[..] else {
            panic!("two requests")
        };
        let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        for r in [first, replay] {
            assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", path), "{case}");
            assert_eq!(r.query.as_deref(), query, "{case}");
        }
        assert_eq!(first.body_sha256, hex::encode(Sha256::digest(body)), "{case}");
        assert_eq!(replay.body_sha256, first.body_sha256, "{case}");
        assert_eq!(last_request_answered(&env, &a).id, replay.id, "{case}");
        if body == batch {
            let answer: serde_json::Value = serde_json::from_slice(&decoded(&a)).unwrap();
            let response = &answer["responses"][0];
            assert_eq!(
                (&response["id"], &response["status"]),
                (&"a1".into(), &200.into()),
                "{case}"
            );
            assert_eq!(response["body"]["answerId"], 1000078, "{case}: the batch sent was run");
        }
    }
    env.stop().await;
}

#[tokio::test]
async fn a_2xx_errors_document_is_a_session_error_too() {
    let env = env_without_relogin_spacing().await;
    env.simulator().set_session_error_shape(SessionShape::Portal);
    for headers in [
        &[][..],
        &[("accept-encoding", "gzip")][..],
        &[("accept-encoding", "br")][..],
    ] {
        // What the Customer Portal reads at any status.
        env.simulator().expire_all_tokens();
        let direct_token = r#"{"siteName":"ORACLE_KNOWLEDGE","integrationUserToken":"stale"}"#;
        let mut direct_headers = headers.to_vec();
        direct_headers.push(("kmauthtoken", direct_token));
        let direct = env
            .send_to(
                env.sim.addr,
                Method::GET,
                "/km/api/latest/content",
                &direct_headers,
                Bytes::new(),
            )
            .await;
        assert_eq!(direct.status, StatusCode::OK);
        let doc: serde_json::Value = serde_json::from_slice(&decoded(&direct)).unwrap();
        assert_eq!(doc["errors"][0]["code"], "OK-GEN0003");

        let (a, logins, requests) = across_expiry(&env, Method::GET, "/km/api/latest/content", headers, b"").await;
        assert_eq!(a.status, StatusCode::OK, "{headers:?}");
        assert_eq!((logins, requests), (1, 2), "{headers:?}");
        let answer: serde_json::Value = serde_json::from_slice(&decoded(&a)).unwrap();
        assert!(
            answer.get("errors").is_none(),
            "the replay's answer, not the error: {answer}"
        );
        assert!(
            answer["items"].as_array().is_some_and(|i| !i.is_empty()),
            "{headers:?}: {answer}"
        );
        let replay = last_request_answered(&env, &a);
        assert_eq!(replay.path, "/km/api/latest/content", "{headers:?}");
    }
    env.stop().await;
}

#[tokio::test]
async fn caller_text_that_contains_a_code_triggers_no_relogin() {
    let env = Env::start().await;
    let query = "q=%3CerrorCode%3EOK-SESSION0003%3C%2FerrorCode%3E";
    let (logins, requests) = (integration_logins(&env), env.simulator().request_count());
    for endpoint in ["echo-error", "echo-error-json"] {
        for coding in ["identity", "gzip"] {
            let a = env
                .get(
                    &format!("/km/api/latest/content/{endpoint}?{query}"),
                    &[("accept-encoding", coding)],
                )
                .await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{endpoint} {coding}");
            let text = String::from_utf8(decoded(&a)).unwrap();
            assert!(
                text.contains("<errorCode>OK-SESSION0003</errorCode>"),
                "{endpoint}: the echo is there: {text}"
            );
        }
    }
    assert_eq!(integration_logins(&env), logins, "no login for echoed text");
    assert_eq!(
        env.simulator().request_count(),
        requests + 4,
        "each call reached the upstream once"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_python_requests_call_with_a_typed_kmauthtoken_is_forwarded_with_its_types() {
    let env = Env::start().await;
    let typed = r#"{"interfaceId":1,"captureAnalytics":true,"billableSessionId":"b1","requiresBillable":false,"clientIP":"10.0.0.1","userToken":""}"#;
    let headers = [
        ("user-agent", "python-requests/2.32.3"),
        ("accept-encoding", "gzip, deflate"),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
        ("kmauthtoken", typed),
    ];
    let ok = env.get("/km/api/latest/content", &headers).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    // And across an expiry: the replay carries the same types.
    let (a, logins, requests) = across_expiry(
        &env,
        Method::GET,
        "/srt/api/latest/search/question?question=reset",
        &headers,
        b"",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!((logins, requests), (1, 2));
    assert_eq!(a.headers["content-encoding"], "gzip");
    let answer: serde_json::Value = serde_json::from_slice(&decoded(&a)).unwrap();
    assert!(answer["results"]["results"].is_array(), "a search answer: {answer}");
    let replay = last_request_answered(&env, &a);
    assert_eq!(
        (replay.path.as_str(), replay.query.as_deref()),
        ("/srt/api/latest/search/question", Some("question=reset"))
    );
    let sent = env.simulator().requests();
    assert_eq!(sent.len(), 3, "the plain call, the expired one, its replay");
    for r in sent {
        assert_eq!(r.headers["accept-encoding"], "gzip, deflate");
        assert_eq!(r.headers["accept"], "*/*");
        let k = r.kmauthtoken.as_ref().unwrap();
        assert_eq!(
            k["interfaceId"], 1,
            "a number, and the caller's over kmauthtoken_extra's \"7\""
        );
        assert_eq!(k["captureAnalytics"], true);
        assert_eq!(k["billableSessionId"], "b1");
        assert_eq!(k["requiresBillable"], false);
        assert_eq!(k["clientIP"], "10.0.0.1");
        assert!(k.get("userToken").is_none(), "the caller's empty userToken is dropped");
        assert_eq!(k["siteName"], "ORACLE_KNOWLEDGE");
        assert!(env
            .simulator()
            .issued_tokens()
            .iter()
            .any(|t| k["integrationUserToken"] == t.as_str()));
    }
    env.stop().await;
}
