//! The caller's `kmauthtoken` end to end: what Oracle's own clients send
//! (typed values, billing fields, an empty `userToken`) reaches the upstream
//! with its types, under kmproxy's site and tokens.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, HELPDESK_KEY};
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn oracle_clients_typed_fields_reach_the_upstream_with_their_types() {
    let env = Env::start().await;
    // The Digital Assistant sample's and the Customer Portal's shape.
    let sent = json!({"siteName":"ORACLE_KNOWLEDGE","interfaceId":1,"captureAnalytics":true,
        "billableSessionId":"b1","requiresBillable":false,"clientIP":"10.0.0.1","userToken":"",
        "integrationUserToken":null,"localeId":"en_US","referrer":null,"querySource":1.50});
    let a = env
        .get(
            "/srt/api/latest/search/question?question=reset",
            &[("x-kmproxy-key", HELPDESK_KEY), ("kmauthtoken", &sent.to_string())],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(env.simulator().request_count(), 1);
    // What kmproxy sent, from the simulator's record of the call answered.
    let r = env.simulator().request_for(&a.headers).unwrap();
    assert_eq!(r.path, "/srt/api/latest/search/question");
    let k = r.kmauthtoken.as_ref().unwrap();
    for field in [
        "interfaceId",
        "captureAnalytics",
        "billableSessionId",
        "requiresBillable",
        "clientIP",
        "localeId",
        "referrer",
    ] {
        assert_eq!(k[field], sent[field], "{field}");
    }
    assert!(k["querySource"].is_number());
    assert_eq!(
        k["appId"], "kmproxy-tests",
        "kmauthtoken_extra fills what the caller did not send"
    );
    // kmproxy's tokens, not the caller's empty or null ones.
    assert!(env
        .simulator()
        .issued_tokens()
        .iter()
        .any(|t| k["userToken"] == t.as_str()));
    assert!(env
        .simulator()
        .issued_tokens()
        .iter()
        .any(|t| k["integrationUserToken"] == t.as_str()));
    env.stop().await;
}

#[tokio::test]
async fn a_list_or_object_in_a_kept_field_is_refused_before_anything_is_sent() {
    let env = Env::start().await;
    for value in [r#"{"interfaceId":[1]}"#, r#"{"captureAnalytics":{"on":true}}"#] {
        let a = env.get("/km/api/latest/content", &[("kmauthtoken", value)]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{value}");
        assert_eq!(a.error_code(), "KMPROXY-KMAUTHTOKEN");
    }
    assert_eq!(env.simulator().request_count(), 0);
    env.stop().await;
}
