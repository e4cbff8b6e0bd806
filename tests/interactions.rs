//! Managed interactions end to end: a real kmproxy whose `helpdesk` caller
//! has `interactions = "managed"`, in front of the simulator, over real
//! HTTP. What reached the upstream is read from the simulator's record.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Answer, Env, HELPDESK_KEY, KIOSK_KEY};
use http::StatusCode;
use kmproxy::config::Interactions;
use kmproxy::sim::RecordedRequest;

const PATH: &str = "/km/api/latest/content";
const SESSION: &str = "x-kmproxy-session";

/// The standard setup, with `helpdesk` managed (and no re-login spacing,
/// so a test may expire tokens more than once).
async fn env() -> Env {
    Env::builder()
        .config(|c| {
            c.callers[0].interactions = Interactions::Managed;
            c.tokens.min_relogin_interval = Duration::ZERO;
        })
        .start()
        .await
}

async fn as_helpdesk(env: &Env, extra: &[(&str, &str)]) -> Answer {
    let mut headers = vec![("x-kmproxy-key", HELPDESK_KEY)];
    headers.extend_from_slice(extra);
    env.get(PATH, &headers).await
}

fn is_start(r: &RecordedRequest) -> bool {
    r.path.ends_with("/knowledgeInteraction/startInteraction")
}

fn starts(env: &Env) -> usize {
    env.simulator().requests().iter().filter(|r| is_start(r)).count()
}

/// The calls on `PATH` the upstream saw, in order.
fn calls(env: &Env) -> Vec<RecordedRequest> {
    env.simulator()
        .requests()
        .into_iter()
        .filter(|r| r.path == PATH)
        .collect()
}

/// A recorded call's `knowledgeInteractionId` and `interactionIdGenerated`.
fn interaction(r: &RecordedRequest) -> (Option<String>, Option<String>) {
    let token = r.kmauthtoken.as_ref().unwrap();
    let field = |k: &str| token.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    (field("knowledgeInteractionId"), field("interactionIdGenerated"))
}

#[tokio::test]
async fn fifty_concurrent_first_calls_of_a_session_start_one_interaction() {
    let env = env().await;
    let answers = futures_util::future::join_all((0..50).map(|_| as_helpdesk(&env, &[(SESSION, "s1")]))).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK), "{answers:?}");
    assert_eq!(starts(&env), 1);
    let seen: HashSet<_> = calls(&env).iter().map(interaction).collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (id, generated) = seen.into_iter().next().unwrap();
    assert!(id.is_some_and(|id| !id.is_empty() && id.len() <= 64));
    assert_eq!(generated.as_deref(), Some("true"));
    env.stop().await;
}

#[tokio::test]
async fn each_session_and_each_principal_has_its_own_interaction() {
    let env = env().await;
    for extra in [
        &[(SESSION, "s1")][..],
        &[(SESSION, "s2")],
        &[(SESSION, "s1"), ("x-kmproxy-act-as", "web")],
        &[(SESSION, "s1")],
        &[(SESSION, "s2")],
    ] {
        assert_eq!(as_helpdesk(&env, extra).await.status, StatusCode::OK);
    }
    assert_eq!(starts(&env), 3, "two sessions, and a second principal for one of them");
    let ids: Vec<_> = calls(&env).iter().map(|r| interaction(r).0.unwrap()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3, "{ids:?}");
    assert_eq!((&ids[3], &ids[4]), (&ids[0], &ids[1]), "a session keeps its id");
    env.stop().await;
}

#[tokio::test]
async fn the_callers_own_id_wins_and_is_never_replayed_for() {
    let env = env().await;
    let own = r#"{"knowledgeInteractionId":"mine","interactionIdGenerated":"true"}"#;
    let a = as_helpdesk(&env, &[(SESSION, "s1"), ("kmauthtoken", own)]).await;
    // Never issued by the upstream: OK-SEC0012, passed on as it came.
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error_code(), "OK-SEC0012");
    assert_eq!(starts(&env), 0);
    let sent = calls(&env);
    assert_eq!(sent.len(), 1, "no replay for the caller's own id");
    assert_eq!(interaction(&sent[0]).0.as_deref(), Some("mine"));
    env.stop().await;
}

#[tokio::test]
async fn an_expired_interaction_is_replaced_and_the_call_replayed_once() {
    let env = env().await;
    assert_eq!(as_helpdesk(&env, &[(SESSION, "s1")]).await.status, StatusCode::OK);
    env.simulator().expire_interactions();
    let a = as_helpdesk(&env, &[(SESSION, "s1")]).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(starts(&env), 2);
    let ids: Vec<_> = calls(&env).iter().map(|r| interaction(r).0.unwrap()).collect();
    assert_eq!(ids.len(), 3, "first call, the refused one, its one replay");
    assert_eq!(ids[1], ids[0], "the expired id was sent");
    assert_ne!(ids[2], ids[1], "the replay carries the new one");
    // The new id is kept for the session.
    assert_eq!(as_helpdesk(&env, &[(SESSION, "s1")]).await.status, StatusCode::OK);
    assert_eq!(starts(&env), 2);
    env.stop().await;
}

#[tokio::test]
async fn a_second_expired_interaction_in_a_row_reaches_the_caller_after_one_replay() {
    let env = env().await;
    assert_eq!(as_helpdesk(&env, &[(SESSION, "s1")]).await.status, StatusCode::OK);
    env.simulator().expire_interactions();
    env.simulator().set_interactions_die(true);
    let a = as_helpdesk(&env, &[(SESSION, "s1")]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.body);
    assert_eq!(a.error_code(), "OK-SEC0012", "passed on as it came");
    assert_eq!(
        calls(&env).len(),
        3,
        "first call, the refused one, its one replay: no loop"
    );
    assert_eq!(starts(&env), 2, "one new interaction, not one per refusal");
    // The upstream recovers: the next call starts afresh and is served.
    env.simulator().set_interactions_die(false);
    let a = as_helpdesk(&env, &[(SESSION, "s1")]).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    env.stop().await;
}

#[tokio::test]
async fn expired_tokens_and_interaction_cost_one_relogin_and_one_new_interaction() {
    let env = env().await;
    assert_eq!(as_helpdesk(&env, &[(SESSION, "s1")]).await.status, StatusCode::OK);
    env.simulator().expire_all_tokens();
    let a = as_helpdesk(&env, &[(SESSION, "s1")]).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(starts(&env), 2);
    assert_eq!(calls(&env).len(), 4, "first; session error; OK-SEC0012; 200");
    env.stop().await;
}

#[tokio::test]
async fn a_session_error_on_the_start_call_logs_in_again_once() {
    let env = env().await;
    env.simulator().session_error_next(1);
    let a = as_helpdesk(&env, &[(SESSION, "s1")]).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(starts(&env), 2, "the refused start and its replay");
    assert_eq!(calls(&env).len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn a_start_call_that_meets_a_login_backoff_is_a_503_with_retry_after() {
    let env = env().await;
    // The agent's token is held (a call without a session), so the first
    // login is the one the start call's session error makes; it is throttled.
    assert_eq!(as_helpdesk(&env, &[]).await.status, StatusCode::OK);
    env.simulator().session_error_next(1);
    env.simulator().fail_logins_with(429, 1, Some(Duration::from_secs(3)));
    let a = as_helpdesk(&env, &[(SESSION, "s1")]).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", a.body);
    assert_eq!(a.error_code(), "KMPROXY-LOGIN-BACKOFF");
    let wait: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 3, "Retry-After: {wait}");
    assert!(
        a.json()["error"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("startInteraction failed"),
        "{:?}",
        a.body
    );
    assert_eq!(calls(&env).len(), 1, "the refused call was sent upstream");
    env.stop().await;
}

#[tokio::test]
async fn no_session_header_or_an_unmanaged_caller_adds_no_interaction() {
    let env = env().await;
    assert_eq!(as_helpdesk(&env, &[]).await.status, StatusCode::OK);
    let kiosk = [("x-kmproxy-key", KIOSK_KEY), (SESSION, "s1")];
    assert_eq!(env.get(PATH, &kiosk).await.status, StatusCode::OK);
    assert_eq!(starts(&env), 0);
    for r in calls(&env) {
        assert_eq!(interaction(&r), (None, None));
        assert!(!r.headers.contains_key(SESSION), "x-kmproxy-* is not forwarded");
    }
    env.stop().await;
}

#[tokio::test]
async fn a_bad_session_header_is_refused_in_oracles_shape() {
    let env = env().await;
    let long = "s".repeat(129);
    for bad in [long.as_str(), "a b", ""] {
        let a = as_helpdesk(&env, &[(SESSION, bad)]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(a.error_code(), "KMPROXY-SESSION", "{bad:?}");
    }
    assert_eq!(
        as_helpdesk(&env, &[(SESSION, &long[..128])]).await.status,
        StatusCode::OK
    );
    assert_eq!(calls(&env).len(), 1, "only the good one was forwarded");
    env.stop().await;
}
