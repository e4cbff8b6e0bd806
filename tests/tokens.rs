//! Tokens end to end (PRODUCT.md §4 "Tokens", session errors, lockout
//! safety, §6 readiness and status): a real kmproxy in front of the
//! simulator, over real HTTP. Every test checks both what the caller got and
//! what the simulator saw (logins by kind/user/outcome, recorded requests).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{eventually, Answer, Env, HELPDESK_KEY};
use futures_util::future::join_all;
use http::{Method, StatusCode};
use kmproxy::config::PrincipalKind;
use kmproxy::secret::Secret;
use kmproxy::sim::{LoginKind, LoginOutcome, RecordedRequest, Simulator};

const PUBLIC: &[(&str, &str)] = &[];
const AGENT: &[(&str, &str)] = &[("x-kmproxy-key", HELPDESK_KEY)];
const WEB: &[(&str, &str)] = &[("x-kmproxy-key", HELPDESK_KEY), ("x-kmproxy-act-as", "web")];
const CONTENT: &str = "/km/api/latest/content";
const WRONG_PASSWORD: &str = "Wr0ng-Passw0rd";

/// Integration logins that ended in `outcome`.
fn integration(sim: &Simulator, outcome: LoginOutcome) -> u64 {
    sim.logins(LoginKind::Integration, None, outcome)
}

/// Console-user (okcsuser) logins that ended in `outcome`.
fn okcsuser(sim: &Simulator, outcome: LoginOutcome) -> u64 {
    sim.logins(LoginKind::Account, Some("okcsuser"), outcome)
}

/// Web-user (webuser) logins that ended in `outcome`.
fn webuser(sim: &Simulator, outcome: LoginOutcome) -> u64 {
    sim.logins(LoginKind::Contact, Some("webuser"), outcome)
}

/// The `integrationUserToken` a recorded request carried.
fn itoken(r: &RecordedRequest) -> String {
    r.kmauthtoken.as_ref().unwrap()["integrationUserToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The `userToken` a recorded request carried, if any.
fn utoken(r: &RecordedRequest) -> Option<String> {
    r.kmauthtoken.as_ref().unwrap()["userToken"].as_str().map(str::to_owned)
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The simulator's record of the request `a` answers (answers carry no echo).
fn answered(sim: &Simulator, a: &Answer) -> RecordedRequest {
    sim.request_for(&a.headers)
        .expect("the answer names a recorded request")
}

fn ok(a: &Answer) {
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.body));
}

/// Gives principal `name` the password `password` (a user principal).
fn set_password(c: &mut kmproxy::config::Config, name: &str, password: &str) {
    let p = c.principals.iter_mut().find(|p| p.name == name).unwrap();
    let PrincipalKind::User {
        external_type, user, ..
    } = &p.kind
    else {
        panic!("{name} is not a user principal");
    };
    p.kind = PrincipalKind::User {
        external_type: *external_type,
        user: user.clone(),
        password: Secret::literal(password),
    };
}

// ---------------------------------------------------------------------------
// Single flight
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_storm_of_200_calls_makes_one_login_per_identity() {
    let env = Env::start().await;
    let sim = env.simulator();
    let principals = [PUBLIC, AGENT, WEB];
    let calls = (0..200).map(|i| env.get(CONTENT, principals[i % 3]));
    let answers = join_all(calls).await;
    for a in &answers {
        ok(a);
    }
    // The caller got the right principal each time.
    for (i, a) in answers.iter().enumerate() {
        let kind = ["anonymous", "account", "contact"][i % 3];
        assert_eq!(answered(sim, a).principal.map(|p| p.kind), Some(kind), "call {i}");
    }
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 1);
    assert_eq!(webuser(sim, LoginOutcome::Ok), 1);
    assert_eq!(sim.total_logins(), 3, "no failed or rejected login either");
    assert_eq!(sim.request_count(), 200);
    // Every request carried the one integration token; users their own token.
    let reqs = sim.requests();
    let integ: HashSet<_> = reqs.iter().map(itoken).collect();
    assert_eq!(integ.len(), 1);
    let users: HashSet<_> = reqs.iter().filter_map(utoken).collect();
    assert_eq!(users.len(), 2);
    assert_eq!(sim.issued_tokens().len(), 3);
    env.stop().await;
}

// ---------------------------------------------------------------------------
// Session errors: detection, replay, pass-through
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_mid_traffic_replays_every_call_with_one_relogin_per_identity() {
    let env = Env::start().await;
    let sim = env.simulator();
    ok(&env.get(CONTENT, PUBLIC).await);
    ok(&env.get(CONTENT, AGENT).await);
    let before_expiry = sim.issued_tokens();
    assert_eq!(before_expiry.len(), 2);
    sim.reset_counters();

    // 100 calls: GETs and POSTs (distinct 10 KiB bodies), agent and public.
    // The simulator holds every answer 2 s after recording the request and
    // before checking its token, so expiring once all 100 are recorded puts
    // the expiry in the middle of every call. (The delay is then lifted, so
    // the replays are quick.)
    sim.set_delay(Duration::from_secs(2));
    let bodies: Vec<Bytes> = (0..50u8)
        .map(|i| Bytes::from(format!("{i:03}").repeat(4096).into_bytes()[..10 * 1024].to_vec()))
        .collect();
    let shas: Vec<String> = bodies.iter().map(|b| sha256_hex(b)).collect();
    assert_eq!(shas.iter().collect::<HashSet<_>>().len(), 50);
    let calls = (0..100).map(|i| {
        let who = if i % 4 < 2 { AGENT } else { PUBLIC };
        if i % 2 == 0 {
            env.send(Method::POST, CONTENT, who, bodies[i / 2].clone())
        } else {
            env.send(Method::GET, CONTENT, who, Bytes::new())
        }
    });
    let started = Instant::now();
    let expire = async {
        assert!(
            eventually(Duration::from_secs(5), || sim.request_count() >= 100).await,
            "only {} calls reached the simulator",
            sim.request_count()
        );
        sim.expire_all_tokens();
        sim.set_delay(Duration::ZERO);
        started.elapsed()
    };
    let (answers, expired_after) = tokio::join!(join_all(calls), expire);
    for (i, a) in answers.iter().enumerate() {
        ok(a);
        if i % 2 == 0 {
            assert_eq!(
                answered(sim, a).body_sha256,
                shas[i / 2],
                "call {i} got another call's answer"
            );
        }
    }

    // Exactly one re-login per identity (counters were zeroed after warm-up).
    assert_eq!(integration(sim, LoginOutcome::Ok), 1, "integration re-logins");
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 1, "okcsuser re-logins");
    assert_eq!(sim.total_logins(), 2);
    // Each call was sent exactly twice: once with the dead tokens, once replayed.
    assert_eq!(
        sim.request_count(),
        200,
        "expired {expired_after:?} after the calls started"
    );
    let fresh: HashSet<String> = sim
        .issued_tokens()
        .into_iter()
        .filter(|t| !before_expiry.contains(t))
        .collect();
    assert_eq!(fresh.len(), 2);
    let reqs = sim.requests();
    for sha in &shas {
        let sent: Vec<_> = reqs.iter().filter(|r| &r.body_sha256 == sha).collect();
        assert_eq!(sent.len(), 2, "body {sha} sent {} times", sent.len());
        assert!(
            sent.iter()
                .any(|r| fresh.contains(&itoken(r)) && r.body_len == 10 * 1024),
            "body {sha} was never sent with a fresh token"
        );
    }
    // The replays all carried the fresh tokens.
    let replays = reqs.iter().filter(|r| fresh.contains(&itoken(r))).count();
    assert_eq!(replays, 100);
    env.stop().await;
}

#[tokio::test]
async fn expiry_reported_in_xml_is_detected() {
    let env = Env::start().await;
    let sim = env.simulator();
    ok(&env.get(CONTENT, PUBLIC).await);
    sim.expire_all_tokens();
    let a = env.get(CONTENT, &[("accept", "application/xml")]).await;
    ok(&a);
    let text = String::from_utf8_lossy(&a.body);
    assert!(text.starts_with("<?xml") && text.contains("<items>"), "{text}");
    assert_eq!(integration(sim, LoginOutcome::Ok), 2, "one re-login");
    assert_eq!(sim.request_count(), 3, "warm-up, expired call, replay");
    let reqs = sim.requests();
    assert_ne!(itoken(&reqs[1]), itoken(&reqs[2]));
    assert_eq!(itoken(&reqs[0]), itoken(&reqs[1]));
    env.stop().await;
}

#[tokio::test]
async fn search_api_token_error_is_detected() {
    // The search API reports a dead token as OK-GEN0003 with a 403.
    let env = Env::start().await;
    let sim = env.simulator();
    ok(&env.get("/srt/api/latest/search/question?question=x", PUBLIC).await);
    sim.expire_all_tokens();
    ok(&env.get("/srt/api/latest/search/question?question=x", PUBLIC).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 2);
    assert_eq!(sim.request_count(), 3);
    env.stop().await;
}

#[tokio::test]
async fn second_session_error_in_a_row_reaches_the_caller_unchanged() {
    let env = Env::start().await;
    let sim = env.simulator();
    ok(&env.get(CONTENT, PUBLIC).await);
    // What the simulator itself answers to a dead token on this path.
    let reference = env
        .send_to(
            env.sim.addr,
            Method::GET,
            CONTENT,
            &[(
                "kmauthtoken",
                r#"{"siteName":"ORACLE_KNOWLEDGE","integrationUserToken":"dead"}"#,
            )],
            Bytes::new(),
        )
        .await;
    assert_eq!(reference.status, StatusCode::UNAUTHORIZED);
    sim.reset_counters();

    sim.session_error_next(2);
    let a = env.get(CONTENT, PUBLIC).await;
    assert_eq!(a.status, reference.status);
    assert_eq!(a.error_code(), "OK-SESSION0003");
    assert_eq!(
        a.body, reference.body,
        "the session error body is passed through unchanged"
    );
    assert_eq!(sim.request_count(), 2, "one replay, no more");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.request_count(), 2, "no third attempt later either");
    assert_eq!(integration(sim, LoginOutcome::Ok), 1, "one re-login for the replay");

    // And the next call is served normally.
    ok(&env.get(CONTENT, PUBLIC).await);
    assert_eq!(sim.request_count(), 3);
    env.stop().await;
}

#[tokio::test]
async fn one_session_error_is_replayed_with_the_same_body() {
    let env = Env::start().await;
    let sim = env.simulator();
    ok(&env.get(CONTENT, AGENT).await);
    sim.reset_counters();
    sim.session_error_next(1);
    let body = Bytes::from_static(b"{\"title\":\"replay me\",\"n\":[1,2,3]}");
    let a = env
        .send(
            Method::POST,
            CONTENT,
            &[AGENT[0], ("content-type", "application/json")],
            body.clone(),
        )
        .await;
    ok(&a);
    let sha = sha256_hex(&body);
    let reqs = sim.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.body_sha256 == sha && r.method == "POST"));
    assert_eq!(answered(sim, &a).id, reqs[1].id, "the caller got the replay's answer");
    assert_eq!(answered(sim, &a).body_sha256, sha);
    // The replay used fresh tokens for both identities the call used.
    assert_ne!(itoken(&reqs[0]), itoken(&reqs[1]));
    assert_ne!(utoken(&reqs[0]), utoken(&reqs[1]));
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 1);
    env.stop().await;
}

#[tokio::test]
async fn session_error_drops_only_the_tokens_that_call_used() {
    // Two session-error re-logins of the API user in a row: no spacing.
    let env = Env::builder()
        .config(|c| c.tokens.min_relogin_interval = Duration::ZERO)
        .start()
        .await;
    let sim = env.simulator();
    for who in [PUBLIC, AGENT, WEB] {
        ok(&env.get(CONTENT, who).await);
    }
    sim.reset_counters();

    // A session error on an agent call: integration + agent's user token go.
    sim.session_error_next(1);
    ok(&env.get(CONTENT, AGENT).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 1);
    // Public and web reuse the new integration token; web keeps its user token.
    ok(&env.get(CONTENT, PUBLIC).await);
    ok(&env.get(CONTENT, WEB).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);
    assert_eq!(webuser(sim, LoginOutcome::Ok), 0);

    // A session error on a public call drops the integration token only:
    // agent's next call does not log okcsuser in again.
    sim.session_error_next(1);
    ok(&env.get(CONTENT, PUBLIC).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 2);
    ok(&env.get(CONTENT, AGENT).await);
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 1);
    assert_eq!(webuser(sim, LoginOutcome::Ok), 0);
    assert_eq!(sim.total_logins(), 3);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_session_error_from_an_old_token_keeps_the_newer_token() {
    let env = Env::start().await;
    let sim = env.simulator();
    ok(&env.get(CONTENT, PUBLIC).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);

    // A and B both carry token 1 and both get a session error, B ~100 ms
    // after A: by then A has already fetched token 2, which B must not drop.
    // (A's replay is checked 500 ms after A's session error, well after B's.)
    sim.set_delay(Duration::from_millis(500));
    sim.session_error_next(2);
    let a = env.get(CONTENT, PUBLIC);
    let b = async {
        assert!(eventually(Duration::from_secs(2), || sim.request_count() >= 2).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        env.get(CONTENT, PUBLIC).await
    };
    let (a, b) = tokio::join!(a, b);
    ok(&a);
    ok(&b);
    assert_eq!(
        integration(sim, LoginOutcome::Ok),
        2,
        "B's late session error must not drop token 2"
    );
    let reqs = sim.requests();
    assert_eq!(reqs.len(), 5, "warm-up, A, B, A's replay, B's replay");
    let tokens: Vec<_> = reqs.iter().map(itoken).collect();
    assert_eq!(tokens[1], tokens[0]);
    assert_eq!(tokens[2], tokens[0]);
    assert_ne!(tokens[3], tokens[0]);
    assert_eq!(tokens[4], tokens[3]);
    env.stop().await;
}

#[tokio::test]
async fn user_login_with_a_stale_integration_token_logs_the_api_user_in_again() {
    let env = Env::start().await;
    let sim = env.simulator();
    ok(&env.get(CONTENT, PUBLIC).await);
    // kmproxy still holds integration token 1, which the upstream now refuses.
    sim.expire_all_tokens();
    let a = env.get(CONTENT, AGENT).await;
    ok(&a);
    assert_eq!(answered(sim, &a).principal.map(|p| p.kind), Some("account"));
    assert_eq!(
        okcsuser(sim, LoginOutcome::Failed),
        1,
        "the user login with the stale token"
    );
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 1);
    assert_eq!(integration(sim, LoginOutcome::Ok), 2);
    assert_eq!(sim.request_count(), 2, "the agent call went out once, with good tokens");
    env.stop().await;
}

// ---------------------------------------------------------------------------
// Lifetime and background renewal
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_renewal_replaces_tokens_before_they_end() {
    let env = Env::builder()
        .config(|c| {
            c.tokens.lifetime = Duration::from_secs(3);
            c.tokens.refresh_before = Duration::from_secs(2);
        })
        .start()
        .await;
    let sim = env.simulator();
    ok(&env.get(CONTENT, AGENT).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 1);
    // Renewal is due 2 s (+ ≤10 % jitter) before the 3 s lifetime ends.
    assert!(
        eventually(Duration::from_millis(2500), || {
            integration(sim, LoginOutcome::Ok) == 2 && okcsuser(sim, LoginOutcome::Ok) == 2
        })
        .await,
        "no background renewal: integration {}, okcsuser {}",
        integration(sim, LoginOutcome::Ok),
        okcsuser(sim, LoginOutcome::Ok)
    );
    assert_eq!(sim.request_count(), 1, "renewal is not driven by calls");

    ok(&env.get(CONTENT, AGENT).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 2, "the call used the renewed token");
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 2);
    let reqs = sim.requests();
    assert_eq!(reqs.len(), 2);
    let issued = sim.issued_tokens();
    assert_eq!(issued.len(), 4);
    assert_ne!(itoken(&reqs[1]), itoken(&reqs[0]));
    assert_ne!(utoken(&reqs[1]), utoken(&reqs[0]));
    // The second call carried the two tokens issued by the renewal.
    assert!(issued[2..].contains(&itoken(&reqs[1])));
    assert!(issued[2..].contains(&utoken(&reqs[1]).unwrap()));
    env.stop().await;
}

#[tokio::test]
async fn a_token_past_its_lifetime_is_never_sent() {
    let env = Env::builder()
        .config(|c| {
            c.tokens.lifetime = Duration::from_secs(1);
            c.tokens.refresh_before = Duration::ZERO;
        })
        .sim(|s| s.token_lifetime = Duration::from_secs(24 * 3600))
        .start()
        .await;
    let sim = env.simulator();
    ok(&env.get(CONTENT, PUBLIC).await);
    // No event to wait for: the point is that time passes.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        integration(sim, LoginOutcome::Ok),
        1,
        "refresh_before = 0: no background renewal"
    );
    ok(&env.get(CONTENT, PUBLIC).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 2);
    let reqs = sim.requests();
    assert_eq!(reqs.len(), 2, "no session error was needed to notice");
    assert_ne!(itoken(&reqs[0]), itoken(&reqs[1]));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_renewal_keeps_the_old_token_until_its_lifetime_ends() {
    let env = Env::builder()
        .config(|c| {
            c.tokens.lifetime = Duration::from_secs(4);
            c.tokens.refresh_before = Duration::from_secs(3);
        })
        .start()
        .await;
    let sim = env.simulator();
    let t0 = Instant::now();
    ok(&env.get(CONTENT, PUBLIC).await);
    let first = itoken(&sim.requests()[0]);
    sim.fail_logins(503, 1000);
    // Renewal is attempted ~1 s after issue, and fails.
    assert!(
        eventually(Duration::from_millis(1900), || integration(sim, LoginOutcome::Failed)
            >= 1)
        .await
    );

    tokio::time::sleep_until((t0 + Duration::from_secs(2)).into()).await;
    for _ in 0..3 {
        ok(&env.get(CONTENT, PUBLIC).await);
    }
    assert!(sim.requests().iter().all(|r| itoken(r) == first));
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);
    let served = sim.request_count();
    assert_eq!(served, 4);

    // Past the lifetime: kmproxy refuses rather than sending the old token.
    tokio::time::sleep_until((t0 + Duration::from_millis(4500)).into()).await;
    for _ in 0..3 {
        let a = env.get(CONTENT, PUBLIC).await;
        assert!(
            a.status == StatusCode::BAD_GATEWAY || a.status == StatusCode::SERVICE_UNAVAILABLE,
            "{} {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        assert!(a.error_code().starts_with("KMPROXY-"), "{}", a.error_code());
    }
    assert_eq!(sim.request_count(), served, "nothing was sent with the expired token");
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);
    env.stop().await;
}

// ---------------------------------------------------------------------------
// Lockout safety and backoff
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_login_parks_the_principal_until_reset() {
    let env = Env::builder()
        .config(|c| set_password(c, "agent", WRONG_PASSWORD))
        .start()
        .await;
    let sim = env.simulator();

    // 10 concurrent, then 20 one after another.
    let mut answers = join_all((0..10).map(|_| env.get(CONTENT, AGENT))).await;
    for _ in 0..20 {
        answers.push(env.get(CONTENT, AGENT).await);
    }
    for a in &answers {
        assert_eq!(
            a.status,
            StatusCode::BAD_GATEWAY,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.error_code(), "KMPROXY-LOGIN-REJECTED");
        assert!(
            !String::from_utf8_lossy(&a.body).contains(WRONG_PASSWORD),
            "the password leaked"
        );
    }
    assert_eq!(
        okcsuser(sim, LoginOutcome::Rejected),
        1,
        "a rejected password is tried once"
    );
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 0);
    assert_eq!(sim.request_count(), 0);

    // Other principals are not affected.
    ok(&env.get(CONTENT, PUBLIC).await);
    ok(&env.get(CONTENT, WEB).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);

    // /status shows it parked, without secrets.
    let status = env.admin_get("/status").await;
    ok(&status);
    let agent = status.json()["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "agent")
        .cloned()
        .unwrap();
    assert_eq!(agent["state"], "parked", "{agent}");
    assert_no_secrets(&env, &status);

    // An operator reset allows exactly one more attempt.
    let r = env
        .send_to(
            env.admin,
            Method::POST,
            "/principals/agent/reset",
            &[("x-kmproxy-admin", "1")],
            Bytes::new(),
        )
        .await;
    ok(&r);
    let again = join_all((0..5).map(|_| env.get(CONTENT, AGENT))).await;
    for a in &again {
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);
        assert_eq!(a.error_code(), "KMPROXY-LOGIN-REJECTED");
    }
    assert_eq!(okcsuser(sim, LoginOutcome::Rejected), 2);
    let unknown = env
        .send_to(
            env.admin,
            Method::POST,
            "/principals/nobody/reset",
            &[("x-kmproxy-admin", "1")],
            Bytes::new(),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    env.stop().await;
}

#[tokio::test]
async fn rejected_api_user_login_parks_every_principal() {
    let env = Env::builder()
        .config(|c| c.api_user.password = Secret::literal("nope"))
        .start()
        .await;
    let sim = env.simulator();
    for who in [PUBLIC, AGENT, WEB, PUBLIC, AGENT] {
        let a = env.get(CONTENT, who).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);
        assert_eq!(a.error_code(), "KMPROXY-LOGIN-REJECTED");
    }
    // /readyz names the reason without starting another login.
    let r = env.admin_get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&r.body).contains("rejected"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(integration(sim, LoginOutcome::Rejected), 1);
    assert_eq!(sim.total_logins(), 1, "no user login without an integration token");
    assert_eq!(sim.request_count(), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_login_failure_backs_off_then_recovers() {
    // First failure: the warm-up login (the harness waits for its end).
    let env = Env::builder().before_start(|sim| sim.fail_logins(503, 2)).start().await;
    let t1_done = Instant::now();
    let sim = env.simulator();
    assert_eq!(integration(sim, LoginOutcome::Failed), 1);

    // Backing off: 503 with Retry-After, and no login attempt.
    let b = env.get(CONTENT, PUBLIC).await;
    assert_backoff(&b);
    assert_eq!(sim.total_logins(), 1);

    // After ~1 s the next call tries once (second injected failure). The
    // gaps are measured from when the earlier attempt's answer came back to
    // when the later call was sent, so they slightly understate the real
    // spacing; hence the small allowance under 0.8 s and 1.6 s.
    let ((t2, second), t2_done) = poll_until_not_backoff(&env, Duration::from_millis(1500)).await;
    assert_eq!(
        second.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    assert_eq!(second.error_code(), "KMPROXY-LOGIN");
    assert_eq!(integration(sim, LoginOutcome::Failed), 2);
    let gap1 = t2.saturating_duration_since(t1_done);
    assert!(
        gap1 >= Duration::from_millis(750),
        "second attempt only {gap1:?} after the first"
    );

    // Then ~2 s of backoff, then recovery without a restart.
    let ((t3, third), _) = poll_until_not_backoff(&env, Duration::from_millis(2600)).await;
    ok(&third);
    let gap2 = t3.saturating_duration_since(t2_done);
    assert!(
        gap2 >= Duration::from_millis(1550),
        "third attempt only {gap2:?} after the second"
    );
    assert_eq!(integration(sim, LoginOutcome::Failed), 2);
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);
    assert_eq!(sim.total_logins(), 3);
    assert_eq!(sim.request_count(), 1);
    env.stop().await;
}

/// Asserts `a` is kmproxy's backoff answer.
fn assert_backoff(a: &Answer) {
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.error_code(), "KMPROXY-LOGIN-BACKOFF");
    let secs: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&secs), "Retry-After {secs}");
}

/// Calls every 200 ms while kmproxy answers "backing off" (checking that no
/// login is attempted meanwhile); returns (when the first other answer's call
/// was sent, that answer) and when it came back.
async fn poll_until_not_backoff(env: &Env, within: Duration) -> ((Instant, Answer), Instant) {
    let sim = env.simulator();
    let end = Instant::now() + within;
    loop {
        let logins = sim.total_logins();
        let sent = Instant::now();
        let a = env.get(CONTENT, PUBLIC).await;
        let done = Instant::now();
        if a.status != StatusCode::SERVICE_UNAVAILABLE {
            return ((sent, a), done);
        }
        assert_backoff(&a);
        assert_eq!(sim.total_logins(), logins, "a login was attempted during the backoff");
        assert!(done < end, "still backing off after {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// Readiness and status
// ---------------------------------------------------------------------------

#[tokio::test]
async fn readyz_turns_ready_after_the_warm_up_login_without_any_call() {
    // The harness waits for the warm-up login to end, as an orchestrator
    // polls /readyz.
    let env = Env::start().await;
    let sim = env.simulator();
    let r = env.admin_get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(sim.request_count(), 0, "no call was needed");
    ok(&env.get(CONTENT, PUBLIC).await);
    // /readyz may start a login of its own, but single flight keeps it to one.
    assert_eq!(integration(sim, LoginOutcome::Ok), 1);
    ok(&env.admin_get("/healthz").await);
    env.stop().await;
}

#[tokio::test]
async fn status_and_metrics_never_show_tokens_or_passwords() {
    let env = Env::start().await;
    let sim = env.simulator();
    for who in [PUBLIC, AGENT, WEB] {
        ok(&env.get(CONTENT, who).await);
    }
    let status = env.admin_get("/status").await;
    ok(&status);
    let json = status.json();
    for p in json["principals"].as_array().unwrap() {
        if p["kind"] != "bearer" {
            assert_eq!(p["state"], "fresh", "{p}");
        }
    }
    assert_eq!(json["api_user"]["state"], "fresh");
    assert_eq!(sim.issued_tokens().len(), 3);
    assert_no_secrets(&env, &status);
    let metrics = env.admin_get("/metrics").await;
    ok(&metrics);
    assert_no_secrets(&env, &metrics);
    env.stop().await;
}

/// No token the simulator issued and no configured password in `a`'s body.
fn assert_no_secrets(env: &Env, a: &Answer) {
    let text = String::from_utf8_lossy(&a.body);
    for t in env.simulator().issued_tokens() {
        assert!(!text.contains(&t), "token leaked: {text}");
        // Also a recognisable piece of it (e.g. after escaping).
        assert!(!text.contains(&t[..24]), "token leaked: {text}");
    }
    for pw in ["apipass1", "Password1", WRONG_PASSWORD] {
        assert!(!text.contains(pw), "password {pw} leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_mid_login_does_not_restart_the_login() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start().await;
    env.simulator().set_login_delay(Duration::from_millis(800));
    // A caller that hangs up while the login it started is under way.
    let mut tcp = tokio::net::TcpStream::connect(env.proxy).await.unwrap();
    tcp.write_all(b"GET /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let sim = env.simulator().clone();
    assert!(
        eventually(Duration::from_secs(5), || sim.logins(
            LoginKind::Integration,
            None,
            LoginOutcome::Ok
        ) == 1)
        .await
    );
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The next caller waits for that same login instead of starting another.
    let a = env.get("/km/api/latest/content", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        env.simulator().logins(LoginKind::Integration, None, LoginOutcome::Ok),
        1
    );
    env.stop().await;
}
