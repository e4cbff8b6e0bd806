//! Lockout safety and bounded re-logins (PRODUCT.md §4 "Lockout safety",
//! session errors): verdicts per credential, at most 3 attempts of unknown
//! outcome, 408/429 transient, scoped resets, and at most one session-error
//! re-login per identity per `min_relogin_interval`. A real kmproxy in front
//! of the simulator, over real HTTP; each test checks what the caller got
//! and the simulator's logins by outcome.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{eventually, Answer, Env, HELPDESK_KEY, PORTAL_KEY};
use futures_util::future::join_all;
use http::{Method, StatusCode};
use kmproxy::config::sample::ConfigToml;
use kmproxy::config::{Config, PrincipalKind};
use kmproxy::secret::Secret;
use kmproxy::sim::{LoginKind, LoginOutcome, Simulator};

const PUBLIC: &[(&str, &str)] = &[];
const AGENT: &[(&str, &str)] = &[("x-kmproxy-key", HELPDESK_KEY)];
const WEB: &[(&str, &str)] = &[("x-kmproxy-key", HELPDESK_KEY), ("x-kmproxy-act-as", "web")];
const PORTAL_KEY_HEADER: (&str, &str) = ("x-kmproxy-key", PORTAL_KEY);
const BEARER: &[(&str, &str)] = &[PORTAL_KEY_HEADER, ("authorization", "Bearer demo-jwt")];
const CONTENT: &str = "/km/api/latest/content";
const WRONG: &str = "Wr0ng-Passw0rd";

fn integration(sim: &Simulator, outcome: LoginOutcome) -> u64 {
    sim.logins(LoginKind::Integration, None, outcome)
}

fn okcsuser(sim: &Simulator, outcome: LoginOutcome) -> u64 {
    sim.logins(LoginKind::Account, Some("okcsuser"), outcome)
}

fn ok(a: &Answer) {
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.body));
}

/// kmproxy's answer for a parked login; returns its detail.
fn parked(a: &Answer) -> String {
    assert_eq!(
        a.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.error_code(), "KMPROXY-LOGIN-REJECTED");
    let detail = a.json()["error"]["detail"].as_str().unwrap().to_owned();
    assert!(!detail.contains(WRONG), "the password leaked: {detail}");
    detail
}

/// Gives principal `name` the password `password` (a user principal).
fn set_password(c: &mut Config, name: &str, password: &str) {
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

/// Reloads the running kmproxy with its config changed by `change`, as
/// SIGHUP does.
async fn reload(env: &Env, change: impl FnOnce(&mut Config)) {
    let mut config = (*env.app.live().config).clone();
    change(&mut config);
    env.app.reload(config).await.unwrap();
}

/// POST on the admin port, shaped as an operator's (not a web page's).
async fn admin_post(env: &Env, path: &str) -> Answer {
    let headers = [("x-kmproxy-admin", "1")];
    env.send_to(env.admin, Method::POST, path, &headers, Bytes::new()).await
}

// ---------------------------------------------------------------------------
// Verdicts per credential
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_password_is_never_tried_again_under_any_name_version_or_reload() {
    let env = Env::builder().config(|c| set_password(c, "agent", WRONG)).start().await;
    let sim = env.simulator();
    parked(&env.get(CONTENT, AGENT).await);
    assert_eq!(okcsuser(sim, LoginOutcome::Rejected), 1);

    // Renamed, then another api_version: the same credential, still parked.
    reload(&env, |c| c.principals[1].name = "agent-renamed".into()).await;
    assert!(parked(&env.get(CONTENT, AGENT).await).contains("/principals/agent-renamed/reset"));
    reload(&env, |c| c.upstream.api_version = "v1".into()).await;
    parked(&env.get(CONTENT, AGENT).await);
    // A second principal for the same user and password shares the verdict.
    reload(&env, |c| {
        let mut twin = c.principals[1].clone();
        twin.name = "agent-twin".into();
        c.principals.push(twin);
        c.callers[0].act_as.push(c.principals.len() - 1);
    })
    .await;
    let twin = [AGENT[0], ("x-kmproxy-act-as", "agent-twin")];
    parked(&env.get(CONTENT, &twin).await);
    assert_eq!(okcsuser(sim, LoginOutcome::Rejected), 1, "never tried again");

    // The right password: one login serves both principals of that user.
    reload(&env, |c| {
        set_password(c, "agent-renamed", "Password1");
        set_password(c, "agent-twin", "Password1");
    })
    .await;
    ok(&env.get(CONTENT, AGENT).await);
    ok(&env.get(CONTENT, &twin).await);
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 1, "one login per distinct credential");
    let users: std::collections::HashSet<_> = sim.requests()[sim.requests().len() - 2..]
        .iter()
        .map(|r| r.kmauthtoken.as_ref().unwrap()["userToken"].clone())
        .collect();
    assert_eq!(users.len(), 1, "and one token");

    // Back to the old wrong password: its verdict outlived the reloads.
    reload(&env, |c| set_password(c, "agent-renamed", WRONG)).await;
    parked(&env.get(CONTENT, AGENT).await);
    assert_eq!(okcsuser(sim, LoginOutcome::Rejected), 1);
    // The status shows it parked by fingerprint, never by password.
    let status = env.admin_get("/status").await;
    let listed = status.json()["parked_credentials"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["user"], "okcsuser");
    assert!(listed[0]["fingerprint"].as_str().unwrap().starts_with("v1:"));
    assert!(!String::from_utf8_lossy(&status.body).contains(WRONG));
    env.stop().await;
}

// ---------------------------------------------------------------------------
// Logins of unknown outcome; 408 and 429
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_slower_than_the_timeout_are_tried_at_most_three_times() {
    // Each wrong-password login is answered after 600 ms, the timeout is
    // 300 ms: kmproxy never sees the rejection. Without the limit, the
    // backoff (1 s, 2 s, 4 s, 8 s) sends the 5th attempt (a locked
    // account) about 15 s in; the calls go on for 20 s.
    let env = Env::builder()
        .config(|c| {
            c.upstream.timeout = Duration::from_millis(300);
            c.api_user.password = Secret::literal(WRONG);
        })
        .before_start(|sim| sim.set_login_delay_on(LoginOutcome::Rejected, Duration::from_millis(600)))
        .start()
        .await;
    let sim = env.simulator();
    let end = Instant::now() + Duration::from_secs(20);
    let mut last = env.get(CONTENT, PUBLIC).await;
    while Instant::now() < end {
        assert!(integration(sim, LoginOutcome::Rejected) <= 3);
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = env.get(CONTENT, PUBLIC).await;
    }
    assert_eq!(integration(sim, LoginOutcome::Rejected), 3);
    assert_eq!(sim.total_logins(), 3);
    let detail = parked(&last);
    assert!(detail.contains("outcome unknown"), "{detail}");
    assert!(detail.contains("POST /api-user/reset"), "{detail}");
    assert_eq!(env.admin_get("/status").await.json()["api_user"]["state"], "parked");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_backs_off_at_least_its_retry_after_and_never_parks() {
    let env = Env::builder()
        .before_start(|sim| sim.fail_logins_with(429, 2, Some(Duration::from_secs(2))))
        .start()
        .await;
    let first_done = Instant::now();
    let sim = env.simulator();
    assert_eq!(integration(sim, LoginOutcome::Failed), 1);
    let status = env.admin_get("/status").await.json();
    assert_eq!(status["api_user"]["state"], "backoff", "{status}");
    // Callers wait, told how long; the second attempt comes after >= 2 s.
    let mut second_at = None;
    while integration(sim, LoginOutcome::Ok) == 0 {
        let a = env.get(CONTENT, PUBLIC).await;
        if integration(sim, LoginOutcome::Failed) == 2 && second_at.is_none() {
            second_at = Some(Instant::now());
        }
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(a.error_code(), "KMPROXY-LOGIN-BACKOFF");
            assert!(a.headers.contains_key("retry-after"));
        } else {
            ok(&a);
        }
        assert!(first_done.elapsed() < Duration::from_secs(8), "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gap = second_at.unwrap().duration_since(first_done);
    assert!(
        gap >= Duration::from_millis(1900),
        "second attempt {gap:?} after the first"
    );
    assert_eq!(integration(sim, LoginOutcome::Failed), 2);
    assert_eq!(sim.total_logins(), 3, "two 429s, then the login");
    ok(&env.get(CONTENT, PUBLIC).await);

    // A 408 on a user login: transient as well.
    sim.fail_logins_with(408, 1, Some(Duration::from_secs(1)));
    let a = env.get(CONTENT, AGENT).await;
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(eventually(Duration::from_secs(4), || okcsuser(sim, LoginOutcome::Failed) == 1).await);
    let recovered = async {
        loop {
            let a = env.get(CONTENT, AGENT).await;
            if a.status == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(4), recovered).await.unwrap();
    assert_eq!(okcsuser(sim, LoginOutcome::Ok), 1);
    assert_eq!(okcsuser(sim, LoginOutcome::Rejected), 0);
    assert_eq!(
        env.admin_get("/status").await.json()["parked_credentials"],
        serde_json::json!([])
    );
    env.stop().await;
}

// ---------------------------------------------------------------------------
// Resets and their messages
// ---------------------------------------------------------------------------

#[tokio::test]
async fn resetting_a_principal_does_not_unpark_the_api_user() {
    let env = Env::builder()
        .config(|c| c.api_user.password = Secret::literal(WRONG))
        .start()
        .await;
    let sim = env.simulator();
    let detail = parked(&env.get(CONTENT, PUBLIC).await);
    assert!(detail.contains("POST /api-user/reset"), "{detail}");
    assert!(!detail.contains("/principals/"), "{detail}");
    ok(&admin_post(&env, "/principals/agent/reset").await);
    parked(&env.get(CONTENT, AGENT).await);
    let tokens = env.app.live().tokens.clone();
    assert!(!tokens.reset_principal(0).await, "`public` has no login of its own");
    parked(&env.get(CONTENT, PUBLIC).await);
    assert_eq!(
        integration(sim, LoginOutcome::Rejected),
        1,
        "no principal's reset reached the API user"
    );
    // The API user's own reset allows exactly one more attempt.
    tokens.reset_api_user().await;
    parked(&env.get(CONTENT, PUBLIC).await);
    parked(&env.get(CONTENT, PUBLIC).await);
    assert_eq!(integration(sim, LoginOutcome::Rejected), 2);
    env.stop().await;
}

#[tokio::test]
async fn a_parked_principal_names_its_own_reset() {
    let env = Env::builder().config(|c| set_password(c, "agent", WRONG)).start().await;
    let detail = parked(&env.get(CONTENT, AGENT).await);
    assert!(detail.contains("POST /principals/agent/reset"), "{detail}");
    ok(&env.get(CONTENT, PUBLIC).await);
    env.stop().await;
}

// ---------------------------------------------------------------------------
// Session-error re-logins
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_calls_the_upstream_calls_invalid_cost_at_most_one_login() {
    let env = Env::start().await;
    let sim = env.simulator();
    sim.set_bearer_session_errors(true);
    sim.reset_counters();
    let bad = [PORTAL_KEY_HEADER, ("authorization", "Bearer not-a-valid-jwt")];
    let mut answers = join_all((0..10).map(|_| env.get(CONTENT, &bad))).await;
    for _ in 0..10 {
        answers.push(env.get(CONTENT, &bad).await);
    }
    for a in &answers {
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.error_code(), "OK-SESSION0003", "passed on unchanged");
    }
    assert!(
        integration(sim, LoginOutcome::Ok) <= 1,
        "{} logins",
        integration(sim, LoginOutcome::Ok)
    );
    assert_eq!(sim.total_logins(), integration(sim, LoginOutcome::Ok));
    assert!(sim.request_count() <= 40, "{} calls upstream", sim.request_count());
    env.stop().await;
}

#[tokio::test]
async fn a_second_session_error_within_min_relogin_interval_reaches_the_caller() {
    let env = Env::builder()
        .config(|c| c.tokens.min_relogin_interval = Duration::from_secs(1))
        .start()
        .await;
    let sim = env.simulator();
    ok(&env.get(CONTENT, PUBLIC).await);
    sim.reset_counters();
    sim.session_error_next(1);
    ok(&env.get(CONTENT, PUBLIC).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 1, "re-logged in and replayed");
    let relogin = Instant::now();
    sim.session_error_next(1);
    let a = env.get(CONTENT, PUBLIC).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.error_code(), "OK-SESSION0003");
    assert_eq!(integration(sim, LoginOutcome::Ok), 1, "no second re-login within 1 s");
    assert_eq!(sim.request_count(), 3, "and no replay");
    // Past the interval, the next session error re-logs in again.
    tokio::time::sleep_until((relogin + Duration::from_millis(1100)).into()).await;
    sim.session_error_next(1);
    ok(&env.get(CONTENT, PUBLIC).await);
    assert_eq!(integration(sim, LoginOutcome::Ok), 2);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_expiry_under_mixed_principals_costs_one_login_per_identity() {
    let env = Env::start().await;
    let sim = env.simulator();
    for who in [PUBLIC, AGENT, WEB, BEARER] {
        ok(&env.get(CONTENT, who).await);
    }
    sim.reset_counters();
    sim.expire_all_tokens();
    let mix = [PUBLIC, AGENT, WEB, BEARER];
    let answers = join_all((0..40).map(|i| env.get(CONTENT, mix[i % 4]))).await;
    for a in &answers {
        ok(a);
    }
    assert_eq!(integration(sim, LoginOutcome::Ok), 1, "integration logins");
    assert_eq!(sim.logins(LoginKind::Account, Some("okcsuser"), LoginOutcome::Ok), 1);
    assert_eq!(sim.logins(LoginKind::Contact, Some("webuser"), LoginOutcome::Ok), 1);
    assert_eq!(sim.total_logins(), 3, "no failed login either");
    env.stop().await;
}

// ---------------------------------------------------------------------------
// check --login
// ---------------------------------------------------------------------------

/// `kmproxy check --login` on a config file written from `toml`.
async fn check_login(toml: ConfigToml) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kmproxy.toml");
    std::fs::write(&path, toml.to_string()).unwrap();
    tokio::task::spawn_blocking(move || {
        let o = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
            .args(["--config", path.to_str().unwrap(), "check", "--login"])
            .env_remove("KMPROXY_CONFIG")
            .output()
            .unwrap();
        drop(dir);
        o
    })
    .await
    .unwrap()
}

/// The `check --login` line for principal `name`.
fn login_line(o: &Output, name: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    out.lines()
        .skip_while(|l| !l.starts_with("logging in:"))
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no login line for {name} in {out}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_login_logs_in_once_per_distinct_credential() {
    let sim = Simulator::spawn(Default::default()).await.unwrap();
    let toml = ConfigToml::new(&sim.base_url())
        .server("admin_listen", "off")
        .principal("public", "anonymous")
        .user_principal("agent", "account", "okcsuser", "Password1")
        .user_principal("agent2", "account", "okcsuser", "Password1")
        .caller("helpdesk", "k", "agent", &[]);
    let o = check_login(toml).await;
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    for name in ["public", "agent", "agent2"] {
        assert!(login_line(&o, name).trim_end().ends_with(" ok"));
    }
    assert_eq!(integration(&sim.sim, LoginOutcome::Ok), 1);
    assert_eq!(
        okcsuser(&sim.sim, LoginOutcome::Ok),
        1,
        "agent and agent2 share one login"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_login_never_tries_a_credential_the_running_serve_parked() {
    let env = Env::builder().config(|c| set_password(c, "agent", WRONG)).start().await;
    let sim = env.simulator();
    parked(&env.get(CONTENT, AGENT).await);
    // check --login with the same config as the running serve.
    let toml = ConfigToml::new(&env.sim.base_url())
        .server("admin_listen", env.admin.to_string())
        .principal("public", "anonymous")
        .user_principal("agent", "account", "okcsuser", WRONG)
        .caller("helpdesk", "k", "agent", &[]);
    let o = check_login(toml.clone()).await;
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    let agent = login_line(&o, "agent");
    assert!(agent.contains("parked by the running serve"), "{agent}");
    assert!(login_line(&o, "public").trim_end().ends_with(" ok"));
    assert_eq!(okcsuser(sim, LoginOutcome::Rejected), 1, "check did not try it");
    assert!(!String::from_utf8_lossy(&o.stdout).contains(WRONG));

    // The serve moved on to the right password; the old one is still parked.
    reload(&env, |c| set_password(c, "agent", "Password1")).await;
    ok(&env.get(CONTENT, AGENT).await);
    let o = check_login(toml).await;
    assert!(login_line(&o, "agent").contains("parked by the running serve"));
    assert_eq!(okcsuser(sim, LoginOutcome::Rejected), 1);
    env.stop().await;
}
