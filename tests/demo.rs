//! `kmproxy demo`: its printed curl lines work as printed. Each line is
//! parsed (the small curl subset the demo prints) and sent for real.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kmproxy::demo::{Demo, DemoAddrs};

/// Splits a shell line of single-quoted words (all the demo prints).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

async fn run_curl(line: &str) -> (StatusCode, Bytes) {
    let w = words(line);
    assert_eq!(w[0], "curl", "{line}");
    let mut req = Request::builder();
    let mut url = None;
    let mut i = 1;
    while i < w.len() {
        match w[i].as_str() {
            "-s" => {}
            "-X" => {
                i += 1;
                req = req.method(Method::from_bytes(w[i].as_bytes()).unwrap());
            }
            "-H" => {
                i += 1;
                let (k, v) = w[i].split_once(": ").unwrap();
                req = req.header(k, v);
            }
            u if u.starts_with("http://") => url = Some(u.to_owned()),
            other => panic!("unexpected curl argument {other} in {line}"),
        }
        i += 1;
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let res = client
        .request(req.uri(url.unwrap()).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn demo_curl_lines_work_as_printed() {
    let any = "127.0.0.1:0".parse().unwrap();
    let demo = Demo::start(DemoAddrs {
        proxy: any,
        admin: any,
        sim: any,
    })
    .await
    .unwrap();
    let banner = demo.banner();
    let lines = demo.curl_lines();
    assert!(lines.len() >= 8);
    for (comment, line) in &lines {
        assert!(banner.contains(line.as_str()), "banner lacks {line}");
        let (status, body) = run_curl(line).await;
        let text = String::from_utf8_lossy(&body);
        if comment.contains("refused") {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{line}: {text}");
            assert!(text.contains("KMPROXY-CALLER"));
        } else {
            assert_eq!(status, StatusCode::OK, "{line}: {text}");
        }
        // Whom the call acted for, from the simulator's record of it (answers
        // carry no echo); console users also see the staff-only articles.
        let user = || {
            demo.sim
                .requests()
                .last()
                .and_then(|r| r.principal.clone())
                .and_then(|p| p.user)
        };
        if line.contains("act-as: web") {
            assert_eq!(user().as_deref(), Some("webuser"), "{line}");
            assert!(!text.contains("(agents)"), "{text}");
        } else if line.contains("demo-helpdesk-key") && !comment.contains("refused") {
            assert_eq!(user().as_deref(), Some("okcsuser"), "{line}");
            assert!(text.contains("(agents)"), "{text}");
        }
        if line.contains("/srt/api/") {
            assert!(text.contains("resultItems"), "{text}");
        }
    }
    // The line after the upstream expiry succeeded through one re-login.
    assert_eq!(
        demo.sim.logins(
            kmproxy::sim::LoginKind::Integration,
            None,
            kmproxy::sim::LoginOutcome::Ok
        ),
        2
    );
    demo.stop().await;
}
