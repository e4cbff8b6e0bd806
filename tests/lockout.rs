//! Lockout safety and bounded re-logins (PRODUCT.md §4 "Lockout safety",
//! session errors): verdicts per credential, at most 3 attempts of unknown
//! outcome, 408/429 transient, scoped resets, and at most one session-error
//! re-login per identity per `min_relogin_interval`. A real kmproxy in front
//! of the simulator, over real HTTP; each test checks what the caller got
//! and the simulator's logins by outcome.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Answer, Env, HELPDESK_KEY, PORTAL_KEY};
use futures_util::future::join_all;
use http::StatusCode;
use kmproxy::sim::{LoginKind, LoginOutcome, Simulator};

const PUBLIC: &[(&str, &str)] = &[];
const AGENT: &[(&str, &str)] = &[("x-kmproxy-key", HELPDESK_KEY)];
const WEB: &[(&str, &str)] = &[("x-kmproxy-key", HELPDESK_KEY), ("x-kmproxy-act-as", "web")];
const BEARER: &[(&str, &str)] = &[("x-kmproxy-key", PORTAL_KEY), ("authorization", "Bearer demo-jwt")];
const CONTENT: &str = "/km/api/latest/content";

fn integration(sim: &Simulator, outcome: LoginOutcome) -> u64 {
    sim.logins(LoginKind::Integration, None, outcome)
}

fn ok(a: &Answer) {
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.body));
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
