use std::io::Write;

use http::HeaderValue;
use proptest::prelude::*;

use super::*;

fn codes() -> Vec<String> {
    vec!["OK-SESSION".into(), "OK-GEN0003".into()]
}

fn reading(content_type: Option<&'static str>, encoding: Option<&'static str>) -> Option<Reading> {
    let mut h = HeaderMap::new();
    if let Some(t) = content_type {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(t));
    }
    if let Some(e) = encoding {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static(e));
    }
    Reading::of(&h)
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Identity => data.to_vec(),
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).expect("in memory");
            e.finish().expect("in memory")
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).expect("in memory");
            e.finish().expect("in memory")
        }
        Coding::Br => {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).expect("in memory");
            drop(w);
            out
        }
    }
}

const CODINGS: [(Coding, Option<&str>); 4] = [
    (Coding::Identity, None),
    (Coding::Gzip, Some("gzip")),
    (Coding::Deflate, Some("deflate")),
    (Coding::Br, Some("br")),
];

const SHAPES: [&str; 5] = [
    r#"{"error":{"title":"Session Token has expired","errorPath":null,"errorCode":"OK-SESSION0003","type":"VALIDATION","detail":null},"errorDetails":[]}"#,
    r#"{"errors":[{"code":"OK-GEN0003","title":"The token is invalid or has expired"}]}"#,
    r#"{"error":[{"code":"OK-GEN0003","title":"The token is invalid or has expired"}]}"#,
    r#"{"errorCode":"OK-SESSION0003"}"#,
    r#"<?xml version="1.0" encoding="UTF-8"?><error><title>Session Token has expired</title><errorCode>OK-SESSION0003</errorCode><type>VALIDATION</type></error>"#,
];

#[test]
fn every_shape_in_every_coding() {
    for shape in SHAPES {
        let ct = if shape.starts_with('<') {
            "application/xml"
        } else {
            "application/json; charset=utf-8"
        };
        for (coding, encoding) in CODINGS {
            let body = encode(coding, shape.as_bytes());
            for r in [reading(Some(ct), encoding), reading(None, encoding)] {
                let r = r.expect("readable");
                assert!(r.is_session_error(&body, &codes()), "{shape} as {coding:?}");
            }
        }
        assert!(is_session_error(shape.as_bytes(), &codes()), "{shape}");
    }
}

#[test]
fn other_errors_and_junk_are_not_session_errors() {
    assert!(!is_session_error(br#"{"error":{"errorCode":"OK-SEC0012"}}"#, &codes()));
    assert!(!is_session_error(b"<html>OK-SESSION0003</html>", &codes()));
    assert!(!is_session_error(br#"{"title":"OK-SESSION0003"}"#, &codes()));
    assert!(!is_session_error(&[0xff, 0xfe], &codes()));
    let echoed = br#"{"error":{"title":"No results for <errorCode>OK-SESSION0003</errorCode>","errorCode":null}}"#;
    assert!(!is_session_error(echoed, &codes()));
    assert!(!is_session_error(b"", &codes()));
}

#[test]
fn content_type_decides_the_syntax_and_excludes_the_rest() {
    let xml = SHAPES[4].as_bytes();
    let json = SHAPES[0].as_bytes();
    assert!(reading(Some("text/html; charset=utf-8"), None).is_none());
    assert!(reading(Some("application/xhtml+xml"), None).is_none());
    assert!(reading(Some("text/plain"), None).is_none());
    assert!(reading(Some("application/octet-stream"), None).is_none());
    let as_json = reading(Some("application/json"), None).expect("json");
    assert!(!as_json.is_session_error(xml, &codes()));
    let as_xml = reading(Some("text/xml"), None).expect("xml");
    assert!(!as_xml.is_session_error(json, &codes()));
    assert!(reading(Some("application/problem+json"), None)
        .expect("json")
        .is_session_error(json, &codes()));
    // An echo page, even one that looks like an error, served as HTML.
    let page = b"<!doctype html><html><body><p>The query could not be read: q=<errorCode>OK-SESSION0003</errorCode></p></body></html>";
    assert!(!reading(None, None).expect("untyped").is_session_error(page, &codes()));
}

#[test]
fn unknown_or_stacked_codings_are_not_read() {
    assert!(reading(None, Some("zstd")).is_none());
    assert!(reading(None, Some("gzip, br")).is_none());
    assert_eq!(
        reading(None, Some("identity")).map(|r| r.coding()),
        Some(Coding::Identity)
    );
    assert_eq!(reading(None, Some("X-Gzip")).map(|r| r.coding()), Some(Coding::Gzip));
}

#[test]
fn a_gzip_bomb_is_bounded() {
    // 32 MiB of spaces after an opening brace (a few dozen KiB of gzip), of
    // which only the peeked prefix is ever read, and only DECODED_LIMIT decoded.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b"{").expect("in memory");
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..32 {
        e.write_all(&chunk).expect("in memory");
    }
    let bomb = e.finish().expect("in memory");
    let prefix = &bomb[..bomb.len().min(PEEK_LIMIT)];
    let r = reading(Some("application/json"), Some("gzip")).expect("readable");
    let started = std::time::Instant::now();
    assert!(!r.is_session_error(prefix, &codes()));
    assert_eq!(r.opening(prefix), Opening::Other);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn openings() {
    let id = reading(Some("application/json"), None).expect("json");
    assert_eq!(id.opening(br#"{"errors":[{"code":"OK-GEN0003"}]}"#), Opening::Errors);
    assert_eq!(id.opening(b" \r\n{ \"errors\" \t: ["), Opening::Errors);
    assert_eq!(id.opening(b"{\"err"), Opening::Undecided);
    assert_eq!(id.opening(b"   "), Opening::Undecided);
    assert_eq!(id.opening(b""), Opening::Undecided);
    assert_eq!(id.opening(br#"{"items":[]}"#), Opening::Other);
    assert_eq!(id.opening(br#"{"errorsCount":0}"#), Opening::Other);
    assert_eq!(id.opening(br#"["errors"]"#), Opening::Other);
    assert_eq!(id.opening(&[b' '; OPENING_LIMIT]), Opening::Other);
    for (coding, encoding) in CODINGS {
        let r = reading(Some("application/json"), encoding).expect("json");
        let body = encode(coding, br#"{ "errors": [{"code":"OK-GEN0003"}]}"#);
        assert_eq!(r.opening(&body), Opening::Errors, "{coding:?}");
        let ordinary = encode(
            coding,
            &br#"{"items":[{"title":"errors"}],"hasMore":false}"#.repeat(100),
        );
        assert_eq!(r.opening(&ordinary), Opening::Other, "{coding:?}");
        // Only the compressed header has arrived.
        assert_eq!(r.opening(&body[..2]), Opening::Undecided, "{coding:?}");
    }
}

proptest! {
    #[test]
    fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = is_session_error(&body, &codes());
        for (_, encoding) in CODINGS {
            for ct in [None, Some("application/json"), Some("application/xml")] {
                let r = reading(ct, encoding).expect("readable");
                let _ = r.is_session_error(&body, &codes());
                let _ = r.opening(&body);
            }
        }
    }

    #[test]
    fn finds_any_code_in_every_shape(code in "[A-Z]{2}-[A-Z]{3,8}[0-9]{4}", title in "[^<>&\"\\\\]{0,30}") {
        let docs = [
            serde_json::json!({"error": {"title": title, "errorCode": code}}).to_string(),
            serde_json::json!({"errors": [{"title": title, "code": code}]}).to_string(),
            serde_json::json!({"error": [{"code": code, "title": title}]}).to_string(),
            format!("<error><title>{title}</title><errorCode>{code}</errorCode></error>"),
        ];
        let session = code.starts_with("OK-SESSION") || code.starts_with("OK-GEN0003");
        for doc in &docs {
            prop_assert_eq!(error_code(doc.as_bytes()).map(|c| c.into_owned()), Some(code.clone()));
            prop_assert_eq!(is_session_error(doc.as_bytes(), &codes()), session);
        }
    }

    /// A code anywhere but in an error document's code field never counts.
    #[test]
    fn echoed_codes_never_count(before in "[a-z <>/=]{0,20}", after in "[a-z <>/=]{0,20}") {
        let echo = format!("{before}<errorCode>OK-SESSION0003</errorCode>{after}");
        let docs = [
            serde_json::json!({"title": echo, "items": []}).to_string(),
            serde_json::json!({"error": {"title": echo, "errorCode": "OK-GEN0001"}}).to_string(),
            format!("<!doctype html><html><body>{echo}</body></html>"),
        ];
        for doc in &docs {
            prop_assert!(!is_session_error(doc.as_bytes(), &codes()), "{}", doc);
        }
    }
}
