//! Fleet mode across processes (PRODUCT.md §8): several real `kmproxy
//! serve` processes (the binary, each with its config file and the fleet's
//! encryption key as secret files in a temp dir of its own, on ephemeral
//! ports), one simulator in this test process and one redis-server of the
//! test's own on a free port. What is counted is what the simulator saw,
//! fleet-wide; the processes are killed on drop (`kmproxy_process`).
//!
//! Skipped, saying so, when redis-server is not installed, unless
//! `KMPROXY_REQUIRE_REDIS=1` (CI), which fails instead.
#![allow(clippy::unwrap_used)]

mod common;
mod fleet_support;
mod kmproxy_process;
mod redis_server;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::HELPDESK_KEY;
use futures_util::future::join_all;
use http::{Method, StatusCode};
use kmproxy::config::sample::{file, ConfigToml};
use kmproxy::sim::{LoginKind, LoginOutcome, SimConfig, SimHandle, Simulator};
use kmproxy_process::KmproxyProcess;
use redis_server::RedisServer;

const KEY: &str = "0303030303030303030303030303030303030303030303030303030303030303";
const PUBLIC: &[(&str, &str)] = &[];
const AGENT: &[(&str, &str)] = &[("x-kmproxy-key", HELPDESK_KEY)];
const WEB: &[(&str, &str)] = &[("x-kmproxy-key", HELPDESK_KEY), ("x-kmproxy-act-as", "web")];

use fleet_support::Http;

/// The config of every process: principals `public`, `agent` (console
/// user okcsuser, password `agent_password`) and `web` (web user), the
/// helpdesk caller, and `[cache]` on `redis_url` with the key in a file.
fn config(dir: &Path, sim_url: &str, redis_url: &str, agent_password: &str) -> String {
    let key = dir.join("cache.key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    ConfigToml::new(sim_url)
        .server("listen", "127.0.0.1:0")
        .server("admin_listen", "127.0.0.1:0")
        .server("default_principal", "public")
        .principal("public", "anonymous")
        .user_principal("agent", "account", "okcsuser", agent_password)
        .user_principal("web", "contact", "webuser", "Password1")
        .caller("helpdesk", HELPDESK_KEY, "agent", &["web"])
        .cache("redis_url", redis_url)
        .cache("encryption_key", file(&key))
        .cache("key_prefix", "kmprocs:")
        .cache("connect_timeout", "500ms")
        .to_string()
}

/// A simulator, a redis-server and `n` kmproxy processes sharing them.
struct Fleet {
    sim: SimHandle,
    procs: Vec<KmproxyProcess>,
    /// Dropped after the processes (fields drop in order).
    _redis: RedisServer,
    http: Http,
}

impl Fleet {
    /// `None` (skipped, said why) when redis-server is not installed.
    async fn start(n: usize, agent_password: &str) -> Option<Fleet> {
        let redis = RedisServer::start()?;
        let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
        let (sim_url, redis_url) = (sim.base_url(), redis.url());
        let procs = join_all((0..n).map(|_| {
            let write = |dir: &Path| config(dir, &sim_url, &redis_url, agent_password);
            KmproxyProcess::start(write, &["serve"], &[])
        }))
        .await;
        let fleet = Fleet {
            sim,
            procs,
            _redis: redis,
            http: fleet_support::http(),
        };
        for p in &fleet.procs {
            fleet.cache_ok(p).await;
        }
        Some(fleet)
    }

    fn sim(&self) -> &Simulator {
        &self.sim.sim
    }

    /// Polls `/status` until its fleet cache is `ok` (10 s at most).
    async fn cache_ok(&self, p: &KmproxyProcess) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status(p).await;
            if s["cache"]["state"] == "ok" {
                return;
            }
            assert!(Instant::now() < deadline, "cache not ok: {s}\n{}", p.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn send(
        &self,
        addr: std::net::SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Bytes) {
        fleet_support::send(&self.http, addr, method, path, headers).await
    }

    async fn status(&self, p: &KmproxyProcess) -> serde_json::Value {
        fleet_support::status(&self.http, p.admin).await
    }

    /// Whether `p`'s `/status` shows the agent's login parked.
    async fn agent_parked(&self, p: &KmproxyProcess) -> bool {
        fleet_support::agent_parked(&self.http, p.admin).await
    }

    /// `n` calls at once, spread over every process, cycling through `who`.
    async fn burst(&self, n: usize, who: &[&[(&str, &str)]]) -> Vec<(StatusCode, Bytes)> {
        let calls = (0..n).map(|i| {
            let p = &self.procs[i % self.procs.len()];
            self.send(p.proxy, Method::GET, "/km/api/latest/content", who[i % who.len()])
        });
        join_all(calls).await
    }

    fn logins(&self, kind: LoginKind, user: Option<&str>, outcome: LoginOutcome) -> u64 {
        self.sim().logins(kind, user, outcome)
    }
}

fn all(answers: &[(StatusCode, Bytes)], code: StatusCode) {
    for (c, body) in answers {
        assert_eq!(*c, code, "{}", String::from_utf8_lossy(body));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_and_300_concurrent_first_calls_make_one_login_per_identity_fleet_wide() {
    let Some(f) = Fleet::start(3, "Password1").await else {
        return;
    };
    all(&f.burst(300, &[PUBLIC, AGENT, WEB]).await, StatusCode::OK);
    let ok = |kind, user| f.logins(kind, user, LoginOutcome::Ok);
    assert_eq!(
        ok(LoginKind::Integration, None),
        1,
        "one integration login for the fleet"
    );
    assert_eq!(
        ok(LoginKind::Account, Some("okcsuser")),
        1,
        "one agent login for the fleet"
    );
    assert_eq!(
        ok(LoginKind::Contact, Some("webuser")),
        1,
        "one web login for the fleet"
    );
    assert_eq!(f.sim().total_logins(), 3, "and nothing else");
    for p in &f.procs {
        let s = f.status(p).await;
        assert_eq!(s["cache"], serde_json::json!({ "state": "ok" }), "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_on_five_processes_is_tried_once_and_a_reset_on_one_allows_exactly_one_more() {
    let Some(f) = Fleet::start(5, "Wr0ng-Passw0rd").await else {
        return;
    };
    let rejected = || f.logins(LoginKind::Account, Some("okcsuser"), LoginOutcome::Rejected);
    all(&f.burst(50, &[AGENT]).await, StatusCode::BAD_GATEWAY);
    assert_eq!(rejected(), 1, "one rejected login for the fleet");
    for p in &f.procs {
        assert!(f.agent_parked(p).await, "parked on every process");
    }

    let reset = [("x-kmproxy-admin", "1")];
    let (code, body) = f
        .send(f.procs[2].admin, Method::POST, "/principals/agent/reset", &reset)
        .await;
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    // Every process hears of it within 2 s (PRODUCT.md §8).
    let deadline = Instant::now() + Duration::from_secs(2);
    for p in &f.procs {
        while f.agent_parked(p).await {
            assert!(Instant::now() < deadline, "not un-parked within 2 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(rejected(), 1, "a reset alone sends nothing");
    all(&f.burst(50, &[AGENT]).await, StatusCode::BAD_GATEWAY);
    assert_eq!(rejected(), 2, "exactly one more attempt, fleet-wide");
    for p in &f.procs {
        assert!(f.agent_parked(p).await, "parked again everywhere");
    }
}
