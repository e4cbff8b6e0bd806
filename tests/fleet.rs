//! Fleet mode end to end (PRODUCT.md §8): several kmproxy replicas in this
//! process, each the real `kmproxy::run` on ephemeral ports, sharing one
//! simulator and one redis-server that the test starts on a free port.
//! Each test checks what callers got and what the simulator saw (logins by
//! outcome), and what Redis holds.
#![allow(clippy::unwrap_used)]

mod common;
mod fleet_support;
mod redis_server;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::future::join_all;
use http::{Method, StatusCode};
use kmproxy::app::App;
use kmproxy::config::Config;
use kmproxy::fleet::CacheState;
use kmproxy::run::Listeners;
use kmproxy::server::Stop;
use kmproxy::sim::{LoginKind, LoginOutcome, SimConfig, SimHandle, Simulator};
use redis::AsyncCommands as _;
use redis_server::RedisServer;
use tokio::net::TcpListener;

const KEY_A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const KEY_B: &str = "0202020202020202020202020202020202020202020202020202020202020202";
const PREFIX: &str = "kmtest:";
const PUBLIC: &[(&str, &str)] = &[];
const AGENT: &[(&str, &str)] = &[("x-kmproxy-key", common::HELPDESK_KEY)];
const WEB: &[(&str, &str)] = &[("x-kmproxy-key", common::HELPDESK_KEY), ("x-kmproxy-act-as", "web")];
const CONTENT: &str = "/km/api/latest/content";

use fleet_support::{send, Http};

/// One kmproxy replica.
struct Replica {
    app: Arc<App>,
    proxy: SocketAddr,
    admin: SocketAddr,
    stop: Stop,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Replica {
    /// The standard test config plus `[cache]` (`cache` holds its extra
    /// lines), changed by `tweak`, run as `serve` runs it.
    async fn start(sim: &SimHandle, redis_url: &str, key: &str, cache: &str, tweak: fn(&mut Config)) -> Self {
        let text = format!(
            "{}\n[cache]\nredis_url = \"{}\"\nencryption_key = \"{key}\"\nkey_prefix = \"{PREFIX}\"\n\
             connect_timeout = \"500ms\"\ncommand_timeout = \"200ms\"\n{cache}\n",
            common::standard_toml().replace("SIM_URL", &sim.base_url()),
            redis_url,
        );
        let mut config = Config::parse(&text, Path::new("fleet.toml")).unwrap_or_else(|e| panic!("{e}"));
        tweak(&mut config);
        let data = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy, admin_addr) = (data.local_addr().unwrap(), admin.local_addr().unwrap());
        let app = App::new(Arc::new(config)).unwrap();
        let stop = Stop::new();
        let listeners = Listeners {
            data,
            admin: Some(admin),
        };
        let task = tokio::spawn(kmproxy::run(Arc::clone(&app), listeners, stop.wait()));
        Replica {
            app,
            proxy,
            admin: admin_addr,
            stop,
            task,
        }
    }

    /// Waits (on the state's changes) until the fleet cache is `pred`.
    async fn cache_becomes(&self, within: Duration, pred: impl Fn(&CacheState) -> bool) {
        let live = self.app.live();
        let fleet = live.tokens.fleet().unwrap();
        let mut rx = fleet.watch_state();
        let reached = tokio::time::timeout(within, rx.wait_for(|s| pred(s))).await;
        assert!(
            reached.is_ok(),
            "cache state still {:?} after {within:?}",
            fleet.state()
        );
    }

    async fn stop(self) {
        self.stop.signal();
        let _ = self.task.await;
    }
}

/// A simulator, a redis-server, and `n` replicas (all with `KEY_A`).
struct Fleet {
    sim: SimHandle,
    /// Locked only to kill, restart, stop or resume it (never across an await).
    redis: Mutex<RedisServer>,
    /// Its URL, for the test's own client.
    url: String,
    replicas: Vec<Replica>,
    http: Http,
}

impl Fleet {
    /// `None` (skipped, said why) when redis-server is not installed.
    async fn start(n: usize, tweak: fn(&mut Config)) -> Option<Self> {
        let redis = RedisServer::start()?;
        Some(Self::with(redis, n, tweak, SimConfig::default()).await)
    }

    async fn with(redis: RedisServer, n: usize, tweak: fn(&mut Config), sim: SimConfig) -> Self {
        let sim = Simulator::spawn(sim).await.unwrap();
        let url = redis.url();
        let replicas = join_all((0..n).map(|_| Replica::start(&sim, &url, KEY_A, "", tweak))).await;
        for r in replicas.iter().filter(|r| r.app.live().tokens.fleet().is_some()) {
            r.cache_becomes(Duration::from_secs(5), |s| *s == CacheState::Ok).await;
        }
        Fleet {
            sim,
            url: redis.url(),
            redis: Mutex::new(redis),
            replicas,
            http: fleet_support::http(),
        }
    }

    fn sim(&self) -> &Simulator {
        &self.sim.sim
    }

    async fn stop(self) {
        for r in self.replicas {
            r.stop().await;
        }
    }
}

async fn call(f: &Fleet, replica: usize, headers: &[(&str, &str)]) -> (StatusCode, Bytes) {
    send(&f.http, f.replicas[replica].proxy, Method::GET, CONTENT, headers).await
}

async fn status(http: &Http, r: &Replica) -> serde_json::Value {
    fleet_support::status(http, r.admin).await
}

fn logins(sim: &Simulator, kind: LoginKind, user: Option<&str>, outcome: LoginOutcome) -> u64 {
    sim.logins(kind, user, outcome)
}

fn integration_ok(sim: &Simulator) -> u64 {
    logins(sim, LoginKind::Integration, None, LoginOutcome::Ok)
}

fn all_ok(answers: &[(StatusCode, Bytes)]) {
    for (code, body) in answers {
        assert_eq!(*code, StatusCode::OK, "{}", String::from_utf8_lossy(body));
    }
}

/// `n` calls spread over every replica, cycling through `who`, all at once.
async fn burst(f: &Fleet, n: usize, who: &[&[(&str, &str)]]) -> Vec<(StatusCode, Bytes)> {
    let calls = (0..n).map(|i| call(f, i % f.replicas.len(), who[i % who.len()]));
    join_all(calls).await
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

async fn keys(url: &str, pattern: &str) -> Vec<String> {
    raw(url).await.keys(format!("{PREFIX}{pattern}")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_and_300_first_calls_make_one_login_per_identity_and_redis_holds_no_secret() {
    let Some(f) = Fleet::start(3, |_| {}).await else { return };
    all_ok(&burst(&f, 300, &[PUBLIC, AGENT, WEB]).await);
    let sim = f.sim();
    assert_eq!(integration_ok(sim), 1, "one integration login for the fleet");
    assert_eq!(logins(sim, LoginKind::Account, Some("okcsuser"), LoginOutcome::Ok), 1);
    assert_eq!(logins(sim, LoginKind::Contact, Some("webuser"), LoginOutcome::Ok), 1);
    for r in &f.replicas {
        assert_eq!(status(&f.http, r).await["cache"], serde_json::json!({ "state": "ok" }));
    }
    // Nothing under the prefix reveals a token, a password or a user name.
    let mut secrets = sim.issued_tokens();
    secrets.extend(["Password1", "okcsuser", "webuser", "apiuser"].map(String::from));
    let mut conn = raw(&f.url).await;
    let all = keys(&f.url, "*").await;
    assert!(all.iter().any(|k| k.starts_with("kmtest:token:")), "{all:?}");
    for k in &all {
        let value: Vec<u8> = conn.get(k).await.unwrap_or_default();
        let (key_text, value_text) = (k.as_bytes(), value.as_slice());
        for s in &secrets {
            for form in encodings(s) {
                assert!(
                    !contains(value_text, &form) && !contains(key_text, &form),
                    "{k} holds {s}"
                );
            }
        }
    }
    f.stop().await;
}

/// `s` as it might be written: plain, hex, base64 (standard and URL-safe).
fn encodings(s: &str) -> Vec<Vec<u8>> {
    let b = s.as_bytes();
    let b64 = base64::engine::general_purpose::STANDARD.encode(b);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    vec![
        b.to_vec(),
        hex::encode(b).into_bytes(),
        b64.into_bytes(),
        b64url.into_bytes(),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_under_load_costs_the_fleet_one_login() {
    let Some(f) = Fleet::start(3, |_| {}).await else { return };
    all_ok(&burst(&f, 30, &[PUBLIC]).await);
    assert_eq!(integration_ok(f.sim()), 1);
    f.sim().expire_all_tokens();
    all_ok(&burst(&f, 300, &[PUBLIC]).await);
    assert_eq!(integration_ok(f.sim()), 2, "one re-login for the whole fleet");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lifetimes_renew_about_once_per_lifetime_for_the_fleet() {
    let Some(f) = Fleet::start(3, |c| {
        c.tokens.lifetime = Duration::from_secs(4);
        c.tokens.refresh_before = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    let traffic = Duration::from_secs(12);
    let end = Instant::now() + traffic;
    let mut answers = Vec::new();
    while Instant::now() < end {
        answers.extend(burst(&f, 6, &[PUBLIC, AGENT]).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all_ok(&answers);
    // Renewal every `lifetime - refresh_before` (2 s) for the fleet: about
    // 1 + 6 logins per identity; one per replica would be about 3 x 6.
    let per_lifetime = traffic.as_secs() / 2 + 1;
    let integration = integration_ok(f.sim());
    let agent = logins(f.sim(), LoginKind::Account, Some("okcsuser"), LoginOutcome::Ok);
    for (who, n) in [("integration", integration), ("agent", agent)] {
        assert!(
            n >= per_lifetime - 2 && n <= per_lifetime + 3,
            "{who}: {n} logins in {traffic:?}"
        );
    }
    f.stop().await;
}

fn wrong_agent_password(c: &mut Config) {
    use kmproxy::config::PrincipalKind;
    let p = c.principals.iter_mut().find(|p| p.name == "agent").unwrap();
    if let PrincipalKind::User { password, .. } = &mut p.kind {
        *password = kmproxy::secret::Secret::literal("Wr0ng-Passw0rd");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_on_four_replicas_is_tried_once_and_a_reset_allows_one_more_try() {
    let Some(f) = Fleet::start(4, wrong_agent_password).await else {
        return;
    };
    let rejected = |f: &Fleet| logins(f.sim(), LoginKind::Account, Some("okcsuser"), LoginOutcome::Rejected);
    let parked_everywhere = |answers: &[(StatusCode, Bytes)]| {
        assert!(
            answers.iter().all(|(c, _)| *c == StatusCode::BAD_GATEWAY),
            "{answers:?}"
        );
    };
    parked_everywhere(&burst(&f, 40, &[AGENT]).await);
    assert_eq!(rejected(&f), 1, "one rejected login for the fleet");
    let (code, _) = send(
        &f.http,
        f.replicas[0].admin,
        Method::POST,
        "/principals/agent/reset",
        &[("x-kmproxy-admin", "1")],
    )
    .await;
    assert!(code.is_success(), "{code}");
    // Every replica hears of the reset (within 2 s).
    for r in &f.replicas {
        agent_parked_becomes(&f.http, r, false, Duration::from_secs(2)).await;
    }
    parked_everywhere(&burst(&f, 40, &[AGENT]).await);
    assert_eq!(rejected(&f), 2, "exactly one more attempt after the reset");
    f.stop().await;
}

/// Whether `r`'s `/status` shows the agent's login parked.
async fn agent_parked(http: &Http, r: &Replica) -> bool {
    fleet_support::agent_parked(http, r.admin).await
}

/// Polls `r`'s `/status` until the agent is `parked` (or not); fails after `within`.
async fn agent_parked_becomes(http: &Http, r: &Replica, parked: bool, within: Duration) {
    let deadline = Instant::now() + within;
    while agent_parked(http, r).await != parked {
        assert!(
            Instant::now() < deadline,
            "agent parked still {} after {within:?}: {}",
            !parked,
            status(http, r).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// ACL users for the missed-reset test: one per replica's link to cut.
const USER_A: &str = "kmproxy-a on >pw-a ~kmtest:* &kmtest:* +@all";
const USER_B: &str = "kmproxy-b on >pw-b ~kmtest:* &kmtest:* +@all";

fn acl_login(user: &str) -> String {
    format!("username = \"{user}\"\npassword = \"pw-{}\"", &user[user.len() - 1..])
}

/// Runs an admin command (`ACL SETUSER …`, `CLIENT KILL …`) on the test's own connection.
async fn admin(url: &str, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(&mut raw(url).await).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_said_while_a_replica_is_away_from_redis_reaches_it_when_it_rejoins_and_it_tries_once() {
    let Some(redis) = RedisServer::with_users(&[USER_A, USER_B]) else {
        return;
    };
    let (url, sim) = (redis.admin_url(), Simulator::spawn(SimConfig::default()).await.unwrap());
    let a = acl_login("kmproxy-a");
    let mut replicas = Vec::new();
    for login in [&a, &a, &acl_login("kmproxy-b")] {
        replicas.push(Replica::start(&sim, &redis.url(), KEY_A, login, wrong_agent_password).await);
    }
    for r in &replicas {
        r.cache_becomes(Duration::from_secs(5), |s| *s == CacheState::Ok).await;
    }
    let f = Fleet {
        sim,
        redis: Mutex::new(redis),
        url,
        replicas,
        http: fleet_support::http(),
    };
    let rejected = |f: &Fleet| logins(f.sim(), LoginKind::Account, Some("okcsuser"), LoginOutcome::Rejected);
    let parked_answers = |answers: Vec<(StatusCode, Bytes)>| {
        assert!(
            answers.iter().all(|(c, _)| *c == StatusCode::BAD_GATEWAY),
            "{answers:?}"
        );
    };
    parked_answers(burst(&f, 30, &[AGENT]).await);
    assert_eq!(rejected(&f), 1);
    let (left, away) = (&f.replicas[..2], &f.replicas[2]);

    // Replica 2 loses Redis: its ACL user is switched off and its connection killed.
    admin(&f.url, &["ACL", "SETUSER", "kmproxy-b", "off"]).await;
    admin(&f.url, &["CLIENT", "KILL", "USER", "kmproxy-b"]).await;
    away.cache_becomes(Duration::from_secs(5), |s| *s != CacheState::Ok)
        .await;

    // The reset, on replica 0: replica 1 hears it; replica 2 cannot.
    let (code, _) = send(
        &f.http,
        left[0].admin,
        Method::POST,
        "/principals/agent/reset",
        &[("x-kmproxy-admin", "1")],
    )
    .await;
    assert!(code.is_success(), "{code}");
    for r in left {
        agent_parked_becomes(&f.http, r, false, Duration::from_secs(2)).await;
    }
    assert!(agent_parked(&f.http, away).await, "the event never reached it");
    parked_answers(join_all((0..5).map(|_| call(&f, 2, AGENT))).await);
    assert_eq!(rejected(&f), 1, "still parked while away: no attempt");

    // Back: it rejoins, reads the verdict and the reset's marker, un-parks.
    admin(&f.url, &["ACL", "SETUSER", "kmproxy-b", "on"]).await;
    away.cache_becomes(Duration::from_secs(10), |s| *s == CacheState::Ok)
        .await;
    agent_parked_becomes(&f.http, away, false, Duration::from_secs(5)).await;
    parked_answers(join_all((0..10).map(|_| call(&f, 2, AGENT))).await);
    assert_eq!(
        rejected(&f),
        2,
        "exactly one more attempt, on the replica that rejoined"
    );
    // Its rejection is the fleet's again: nobody tries a third time.
    parked_answers(burst(&f, 30, &[AGENT]).await);
    assert_eq!(rejected(&f), 2);
    for r in &f.replicas {
        assert!(agent_parked(&f.http, r).await);
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_gets_the_replicas_parks_back_and_a_new_replica_does_not_try() {
    let Some(mut f) = Fleet::start(3, wrong_agent_password).await else {
        return;
    };
    let rejected = |f: &Fleet| logins(f.sim(), LoginKind::Account, Some("okcsuser"), LoginOutcome::Rejected);
    burst(&f, 30, &[AGENT]).await;
    assert_eq!(rejected(&f), 1);
    f.redis.lock().unwrap().restart();
    for r in &f.replicas {
        r.cache_becomes(Duration::from_secs(10), |s| *s == CacheState::Ok).await;
    }
    // Parked on every replica still (the empty Redis is no reset), and written back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while keys(&f.url, "verdict:*").await.is_empty() {
        assert!(Instant::now() < deadline, "no park written back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in &f.replicas {
        assert!(agent_parked(&f.http, r).await);
    }
    f.replicas
        .push(Replica::start(&f.sim, &f.url, KEY_A, "", wrong_agent_password).await);
    f.replicas[3]
        .cache_becomes(Duration::from_secs(5), |s| *s == CacheState::Ok)
        .await;
    let answers = burst(&f, 40, &[AGENT]).await;
    assert!(
        answers.iter().all(|(c, _)| *c == StatusCode::BAD_GATEWAY),
        "{answers:?}"
    );
    assert_eq!(rejected(&f), 1, "the new replica met the written-back park");
    f.stop().await;
}

/// Calls on every replica, in waves, until `stop` is set; every answer.
async fn load(f: &Fleet, until: &tokio::sync::Notify) -> Vec<(StatusCode, Bytes)> {
    let mut answers = Vec::new();
    let mut stopped = std::pin::pin!(until.notified());
    loop {
        tokio::select! {
            _ = &mut stopped => return answers,
            wave = burst(f, 6, &[PUBLIC, AGENT, WEB]) => answers.extend(wave),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_fails_no_call_and_the_replicas_rejoin_and_write_their_tokens_back() {
    let Some(f) = Fleet::start(3, |_| {}).await else { return };
    all_ok(&burst(&f, 30, &[PUBLIC, AGENT, WEB]).await);
    let done = tokio::sync::Notify::new();
    let answers = {
        let running = load(&f, &done);
        let kill = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            f.redis.lock().unwrap().kill();
            for r in &f.replicas {
                r.cache_becomes(Duration::from_secs(3), |s| *s != CacheState::Ok).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            done.notify_one();
        };
        tokio::join!(running, kill).0
    };
    assert!(answers.len() > 30);
    all_ok(&answers);
    for r in &f.replicas {
        let s = status(&f.http, r).await;
        assert_eq!(s["cache"]["state"], "degraded", "{s}");
        assert!(s["cache"]["reason"].as_str().unwrap().contains("127.0.0.1"), "{s}");
    }
    f.redis.lock().unwrap().restart();
    for r in &f.replicas {
        r.cache_becomes(Duration::from_secs(10), |s| *s == CacheState::Ok).await;
    }
    // The new, empty Redis gets the replicas' live tokens back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while keys(&f.url, "token:*").await.len() < 3 {
        assert!(Instant::now() < deadline, "tokens not written back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all_ok(&burst(&f, 30, &[PUBLIC, AGENT, WEB]).await);
    assert_eq!(integration_ok(f.sim()), 1, "no login because of Redis");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_does_not_slow_calls_served_from_live_local_tokens() {
    let Some(f) = Fleet::start(3, |_| {}).await else { return };
    all_ok(&burst(&f, 30, &[PUBLIC, AGENT, WEB]).await);
    f.redis.lock().unwrap().pause();
    for i in 0..60 {
        let started = Instant::now();
        let answer = call(&f, i % 3, [PUBLIC, AGENT, WEB][i % 3]).await;
        all_ok(&[answer]);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(100), "call {i} took {took:?}");
    }
    f.redis.lock().unwrap().resume();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecryptable_value_is_never_sent_upstream_the_replica_logs_in_under_the_lease_and_overwrites() {
    let Some(mut f) = Fleet::start(1, |_| {}).await else {
        return;
    };
    all_ok(&burst(&f, 3, &[PUBLIC]).await);
    let name = keys(&f.url, "token:*").await.pop().unwrap();
    let mut conn = raw(&f.url).await;
    let mut value: Vec<u8> = conn.get(&name).await.unwrap();
    let last = value.len() - 1;
    value[last] ^= 1;
    let _: () = conn.set_ex(&name, &value, 3600).await.unwrap();
    // A new replica meets the corrupted entry: a miss, so one login of its own.
    f.replicas.push(Replica::start(&f.sim, &f.url, KEY_A, "", |_| {}).await);
    all_ok(&burst(&f, 20, &[PUBLIC]).await);
    assert_eq!(integration_ok(f.sim()), 2);
    let rewritten: Vec<u8> = conn.get(&name).await.unwrap();
    assert_ne!(rewritten, value, "overwritten by the new login");
    // A third replica adopts that token: no login.
    f.replicas.push(Replica::start(&f.sim, &f.url, KEY_A, "", |_| {}).await);
    all_ok(&burst(&f, 20, &[PUBLIC]).await);
    assert_eq!(integration_ok(f.sim()), 2);
    // One with another encryption key reads nothing of theirs, sends no
    // token of theirs, and logs in on its own.
    f.replicas.push(Replica::start(&f.sim, &f.url, KEY_B, "", |_| {}).await);
    all_ok(&burst(&f, 20, &[PUBLIC]).await);
    assert_eq!(integration_ok(f.sim()), 3);
    let session_errors = logins(f.sim(), LoginKind::Integration, None, LoginOutcome::Failed);
    assert_eq!(session_errors, 0);
    f.stop().await;
}

/// A `tracing` writer into a buffer the test reads.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: the subscriber set here sees every task the replica runs.
#[tokio::test(flavor = "current_thread")]
async fn a_wrong_redis_password_degrades_with_a_clear_reason_and_the_password_in_no_log() {
    const WRONG: &str = "not-the-redis-pw-4711";
    let Some(redis) = RedisServer::with_users(&["kmproxy on >right-pw ~kmtest:* &kmtest:* +@all"]) else {
        return;
    };
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let extra = format!("username = \"kmproxy\"\npassword = \"{WRONG}\"");
    let r = Replica::start(&sim, &redis.url(), KEY_A, &extra, |_| {}).await;
    let http: Http = fleet_support::http();
    r.cache_becomes(Duration::from_secs(5), |s| {
        matches!(s, CacheState::Degraded(kmproxy::fleet::DegradedReason::AuthFailed(_)))
    })
    .await;
    let (code, body) = send(&http, r.proxy, Method::GET, CONTENT, PUBLIC).await;
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let s = status(&http, &r).await;
    assert_eq!(s["cache"]["state"], "degraded");
    let reason = s["cache"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("authentication failed"), "{reason}");
    let (_, metrics) = send(&http, r.admin, Method::GET, "/metrics", &[]).await;
    assert!(String::from_utf8_lossy(&metrics).contains("kmproxy_cache_degraded 1"));
    r.stop().await;
    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(text.contains("fleet cache degraded"), "{text}");
    assert!(!text.contains(WRONG) && !reason.contains(WRONG), "the password leaked");
}

fn short_lifetimes(c: &mut Config) {
    c.tokens.lifetime = Duration::from_secs(4);
    c.tokens.refresh_before = Duration::from_secs(2);
}

/// Upstream logins of `replicas` replicas × 3 identities (the API user and
/// two users) with 4 s lifetimes over `secs` of traffic: (integration, users).
async fn bench_logins(replicas: usize, secs: u64, tweak: fn(&mut Config)) -> Option<(u64, u64)> {
    let f = Fleet::start(replicas, tweak).await?;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        all_ok(&burst(&f, 3 * replicas, &[PUBLIC, AGENT, WEB]).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sim = f.sim();
    let users = logins(sim, LoginKind::Account, None, LoginOutcome::Ok)
        + logins(sim, LoginKind::Contact, None, LoginOutcome::Ok);
    let out = (integration_ok(sim), users);
    f.stop().await;
    Some(out)
}

/// `bench/fleet` runs this: logins with and without fleet mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/fleet runs it"]
async fn bench_fleet_logins() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (replicas, secs) = (env("KMPROXY_BENCH_REPLICAS", 3) as usize, env("KMPROXY_BENCH_SECS", 12));
    let Some(alone) = bench_logins(replicas, secs, |c| {
        short_lifetimes(c);
        c.cache = None;
    })
    .await
    else {
        return;
    };
    let fleet = bench_logins(replicas, secs, short_lifetimes).await.unwrap();
    let ideal = secs / 2 + 1;
    println!("fleet-bench replicas={replicas} identities=3 lifetime=4s refresh_before=2s traffic={secs}s");
    println!("fleet-bench ideal (one per identity per lifetime-refresh_before): {ideal} per identity");
    println!(
        "fleet-bench without [cache]: integration {} user {} (2 users)",
        alone.0, alone.1
    );
    println!(
        "fleet-bench with [cache]:    integration {} user {} (2 users)",
        fleet.0, fleet.1
    );
    assert!(
        fleet.0 * 2 <= alone.0,
        "fleet mode should save logins: {fleet:?} vs {alone:?}"
    );
}
