//! Operating kmproxy as a process: logs (no secret at any level, request
//! ids, access lines, JSON format), metrics, SIGTERM drain, SIGHUP reload.
//! kmproxy runs as the real binary; the simulator runs in the test.
#![allow(clippy::unwrap_used)]

mod common;
mod kmproxy_process;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, Env, HELPDESK_KEY};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kmproxy::config::sample::{env, file, ConfigToml};
use kmproxy::sim::{LoginKind, LoginOutcome, SimConfig, SimHandle, Simulator};
use kmproxy_process::KmproxyProcess;

/// A kmproxy process (see `kmproxy_process`) with this file's config: the
/// agent's password in a file beside it, the API user's in the environment.
struct Proc(KmproxyProcess);

impl std::ops::Deref for Proc {
    type Target = KmproxyProcess;
    fn deref(&self) -> &KmproxyProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut KmproxyProcess {
        &mut self.0
    }
}

fn config_text(sim_url: &str, agent_password_file: &str) -> String {
    ConfigToml::new(sim_url)
        .server("listen", "127.0.0.1:0")
        .server("admin_listen", "127.0.0.1:0")
        .server("default_principal", "public")
        .server("drain_timeout", "5s")
        .api_user("password", env("KMPROXY_TEST_API_PW"))
        // These scenarios expire tokens back to back: no re-login spacing.
        .tokens("min_relogin_interval", "0s")
        .principal("public", "anonymous")
        .user_principal("agent", "account", "okcsuser", file(agent_password_file))
        .caller("helpdesk", HELPDESK_KEY, "agent", &[])
        .to_string()
}

impl Proc {
    async fn start(sim: &SimHandle, args: &[&str]) -> Proc {
        Self::start_env(sim, args, &[]).await
    }

    async fn start_env(sim: &SimHandle, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let write = |dir: &std::path::Path| {
            let pw = dir.join("agent.pw");
            std::fs::write(&pw, "Password1\n").unwrap();
            config_text(&sim.base_url(), &pw.to_string_lossy())
        };
        let mut vars = vec![("KMPROXY_TEST_API_PW", "apipass1"), ("RUST_LOG", "trace")];
        vars.extend_from_slice(env);
        Proc(KmproxyProcess::start(write, args, &vars).await)
    }

    /// Sends SIGHUP and waits for the `nth` successful reload.
    async fn reload(&self, nth: usize) {
        self.signal("-HUP");
        let done = eventually(Duration::from_secs(5), || {
            self.log().matches("config reloaded").count() == nth
        })
        .await;
        assert!(done, "reload {nth} not logged:\n{}", self.log());
    }

    /// A call as the helpdesk app (principal `agent`).
    async fn as_agent(&self) -> (StatusCode, Bytes) {
        let (s, _, body) = call(
            self.proxy,
            Method::GET,
            "/km/api/latest/content",
            &[("x-kmproxy-key", HELPDESK_KEY)],
        )
        .await;
        (s, body)
    }
}

async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::new(Bytes::from_static(b"{\"q\":1}"))).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_in_logs_even_at_trace_level() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let p = Proc::start(&sim, &["serve"]).await;
    for _ in 0..3 {
        let (s, _, _) = call(
            p.proxy,
            Method::POST,
            "/km/api/latest/content",
            &[("x-kmproxy-key", HELPDESK_KEY)],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, _) = call(p.proxy, Method::GET, "/km/api/latest/content", &[]).await;
        assert_eq!(s, StatusCode::OK);
        sim.sim.expire_all_tokens();
    }
    let forged = r#"{"integrationUserToken":"FORGED-INT-TOKEN","userToken":"FORGED-USER-TOKEN"}"#;
    let (s, _, _) = call(
        p.proxy,
        Method::GET,
        "/km/api/latest/content",
        &[("kmauthtoken", forged)],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(
        p.proxy,
        Method::GET,
        "/km/api/latest/content",
        &[("x-kmproxy-key", "wrong-key-123")],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Every call's access line is written before the log is read.
    assert!(
        eventually(Duration::from_secs(5), || p
            .log()
            .lines()
            .filter(|l| l.contains("kmproxy::access"))
            .count()
            >= 8)
        .await
    );

    let (s, _, status) = call(p.admin, Method::GET, "/status", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, metrics) = call(p.admin, Method::GET, "/metrics", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let log = p.log();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "not at trace level?");
    let admin = format!(
        "{}{}",
        String::from_utf8_lossy(&status),
        String::from_utf8_lossy(&metrics)
    );
    assert!(admin.contains("\"agent\"") && admin.contains("kmproxy_requests_total"));
    let issued = sim.sim.issued_tokens();
    assert!(issued.len() >= 6);
    let secrets = [
        "apipass1",
        "Password1",
        HELPDESK_KEY,
        "wrong-key-123",
        "FORGED-INT-TOKEN",
        "FORGED-USER-TOKEN",
    ];
    for s in issued.iter().map(String::as_str).chain(secrets) {
        assert!(!log.contains(s), "log leaks {s}");
        assert!(!admin.contains(s), "/status or /metrics leaks {s}");
    }
    // One access line per call, each with its request id.
    let access: Vec<&str> = log.lines().filter(|l| l.contains("kmproxy::access")).collect();
    assert_eq!(access.len(), 8, "{access:#?}");
    assert!(access.iter().all(|l| l.contains("request{id=")), "{access:#?}");
    assert!(
        access
            .iter()
            .any(|l| l.contains("caller=helpdesk")
                && (l.contains("principal=\"agent\"") || l.contains("principal=agent")))
    );
    assert!(access.iter().any(|l| l.contains("replayed=true")));
    assert!(access
        .iter()
        .any(|l| l.contains("status=401") && l.contains("caller=unknown")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let p = Proc::start(&sim, &["--log-format", "json", "serve"]).await;
    let (s, h, _) = call(
        p.proxy,
        Method::GET,
        "/km/api/latest/content",
        &[("x-request-id", "req-abc-123")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-request-id"], "req-abc-123");
    assert!(eventually(Duration::from_secs(5), || p.log().contains("\"kmproxy::access\"")).await);
    let log = p.log();
    let mut access = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["target"] == "kmproxy::access" {
            access += 1;
            assert_eq!(v["span"]["id"], "req-abc-123", "{line}");
            assert_eq!(v["fields"]["status"], 200);
            assert_eq!(v["fields"]["path"], "/km/api/latest/content");
        }
    }
    assert_eq!(access, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_call_in_flight_finish_then_exits_0() {
    // Both runtimes: one thread (a one-CPU sidecar) and several.
    for workers in ["1", "2"] {
        sigterm_drains(workers).await;
    }
}

async fn sigterm_drains(workers: &str) {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let mut p = Proc::start_env(&sim, &["serve"], &[("TOKIO_WORKER_THREADS", workers)]).await;
    assert!(p.log().contains(&format!("worker_threads={workers}")), "{}", p.log());
    let (s, _, _) = call(p.proxy, Method::GET, "/km/api/latest/content", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let addr = p.proxy;
    let slow = tokio::spawn(async move { call(addr, Method::GET, "/km/api/latest/content/slow?ms=1500", &[]).await });
    assert!(eventually(Duration::from_secs(5), || sim.sim.request_count() == 2).await);
    p.signal("-TERM");
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await, Some(0), "{}", p.log());
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_changed_credentials_and_refuses_a_bad_config() {
    let sim = Simulator::spawn(SimConfig {
        users: vec![kmproxy::sim::SimUser {
            name: "okcsuser".into(),
            password: "Password1".into(),
            kind: kmproxy::sim::UserKind::Account,
        }],
        api_users: ["apiuser", "apiuser2"]
            .map(|login| kmproxy::sim::SimAccount {
                login: login.into(),
                password: "apipass1".into(),
            })
            .into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let p = Proc::start(&sim, &["serve"]).await;
    for headers in [&[][..], &[("x-kmproxy-key", HELPDESK_KEY)][..]] {
        let (s, _, _) = call(p.proxy, Method::GET, "/km/api/latest/content", headers).await;
        assert_eq!(s, StatusCode::OK);
    }
    let logins = |kind| sim.sim.logins(kind, None, LoginOutcome::Ok);
    assert_eq!((logins(LoginKind::Integration), logins(LoginKind::Account)), (1, 1));

    // 1. An invalid config is refused; the old one keeps serving.
    let good = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, good.replace("kind = \"account\"", "kind = \"wizard\"")).unwrap();
    p.signal("-HUP");
    assert!(eventually(Duration::from_secs(5), || p.log().contains("reload refused")).await);
    assert!(p.log().contains("principals[1].kind"), "the reason is logged");
    assert_eq!(p.as_agent().await.0, StatusCode::OK);
    assert_eq!(sim.sim.total_logins(), 2);

    // 2. The same config again (secrets re-read, same values): nothing logs in again.
    std::fs::write(&p.config, &good).unwrap();
    p.reload(1).await;
    let (s, _, _) = call(p.proxy, Method::GET, "/km/api/latest/content", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p.as_agent().await.0, StatusCode::OK);
    assert_eq!(sim.sim.total_logins(), 2, "unchanged identities keep their tokens");

    // 3. A new agent password: the agent logs in again, the API user does not.
    let pw_file = p.config.with_file_name("agent.pw");
    std::fs::write(&pw_file, "Changed1\n").unwrap();
    p.reload(2).await;
    let (s, body) = p.as_agent().await;
    // The simulator only knows Password1: the new secret is tried once and rejected.
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body:?}");
    assert_eq!(sim.sim.logins(LoginKind::Account, None, LoginOutcome::Rejected), 1);
    assert_eq!(logins(LoginKind::Integration), 1);

    // 4. Another API user: the agent's secret is still the wrong one, so it
    //    stays parked and is not tried again.
    let changed = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(
        &p.config,
        changed.replace("login = \"apiuser\"", "login = \"apiuser2\""),
    )
    .unwrap();
    p.reload(3).await;
    assert_eq!(p.as_agent().await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(sim.sim.logins(LoginKind::Account, None, LoginOutcome::Rejected), 1);

    // 5. Fixing the secret un-parks the principal without a restart.
    std::fs::write(&pw_file, "Password1\n").unwrap();
    p.reload(4).await;
    assert_eq!(p.as_agent().await.0, StatusCode::OK);
    assert_eq!(logins(LoginKind::Account), 2);
    assert_eq!(logins(LoginKind::Integration), 2, "apiuser, then apiuser2");
}

#[tokio::test]
async fn metrics_count_requests_logins_replays_and_tokens() {
    let env = Env::start().await;
    for _ in 0..3 {
        assert_eq!(
            env.get("/km/api/latest/content", &[("x-kmproxy-key", HELPDESK_KEY)])
                .await
                .status,
            StatusCode::OK
        );
    }
    env.simulator().expire_all_tokens();
    assert_eq!(env.get("/km/api/latest/content", &[]).await.status, StatusCode::OK);
    assert_eq!(
        env.get("/km/api/latest/content", &[("x-kmproxy-key", "nope")])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let m = env.admin_get("/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    for line in [
        "kmproxy_requests_total{caller=\"helpdesk\",status=\"200\"} 3",
        "kmproxy_requests_total{caller=\"-\",status=\"200\"} 1",
        "kmproxy_requests_total{caller=\"unknown\",status=\"401\"} 1",
        "kmproxy_logins_total{principal=\"api_user\",outcome=\"ok\"} 2",
        "kmproxy_logins_total{principal=\"agent\",outcome=\"ok\"} 1",
        "kmproxy_replays_total 1",
        "kmproxy_token_renewals_total{reason=\"session_error\"} 1",
        "kmproxy_upstream_duration_seconds_count 5",
        "kmproxy_upstream_duration_seconds_bucket{le=\"0.0005\"}",
        "kmproxy_parked_principals 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    let cached: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("kmproxy_cached_tokens "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(cached, 2, "the integration token and agent's user token");
    env.stop().await;
}

#[tokio::test]
async fn request_id_is_kept_or_made_and_forwarded() {
    let env = Env::start().await;
    let a = env.get("/km/api/latest/content", &[("x-request-id", "abc-123")]).await;
    assert_eq!(a.headers["x-request-id"], "abc-123");
    let b = env.get("/km/api/latest/content", &[]).await;
    let c = env.get("/nope", &[]).await;
    let (b_id, c_id) = (
        b.headers["x-request-id"].to_str().unwrap(),
        c.headers["x-request-id"].to_str().unwrap(),
    );
    assert_eq!(b_id.len(), 32);
    assert_ne!(b_id, c_id);
    let reqs = env.simulator().requests();
    assert_eq!(reqs[0].headers["x-request-id"], "abc-123");
    assert_eq!(reqs[1].headers["x-request-id"], b_id);
    env.stop().await;
}

#[tokio::test]
async fn readyz_and_healthz() {
    // The warm-up login meets a transient failure.
    let env = Env::builder().before_start(|sim| sim.fail_logins(503, 1)).start().await;
    assert_eq!(env.admin_get("/healthz").await.status, StatusCode::OK);
    let r = env.admin_get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&r.body).contains("backing off"), "{r:?}");
    // Once the backoff is over, readyz kicks off a login in the
    // background: it turns ready by itself.
    let mut ready = false;
    for _ in 0..200 {
        if env.admin_get("/readyz").await.status == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready);
    assert_eq!(env.simulator().request_count(), 0, "readiness needs no API call");
    env.stop().await;
}
