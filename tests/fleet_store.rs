//! The fleet store against a real redis-server that each test starts on a
//! free loopback port: tokens, leases, waiting, verdicts, encryption at
//! rest, and what Redis being killed, stopped or refusing auth does.
#![allow(clippy::unwrap_used)]

mod redis_server;

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use kmproxy::config::sample::{file, ConfigToml};
use kmproxy::config::CacheConfig;
use kmproxy::fleet::{
    CacheState, DegradedReason, Fingerprint, Fleet, FleetEvent, LeaseOutcome, SharedToken, Verdict, VerdictRecord,
};
use redis::AsyncCommands as _;
use redis_server::RedisServer;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::broadcast;

const KEY_A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const KEY_B: &str = "0202020202020202020202020202020202020202020202020202020202020202";
const COMMAND_TIMEOUT: Duration = Duration::from_millis(200);

/// A `[cache]` section for `url`, through the real config pipeline.
fn cache(url: &str, key: &str, extra: impl Fn(ConfigToml) -> ConfigToml) -> CacheConfig {
    let toml = ConfigToml::new("http://127.0.0.1:9")
        .cache("redis_url", url)
        .cache("encryption_key", key)
        .cache("connect_timeout", "500ms")
        .cache("command_timeout", "200ms");
    extra(toml).parse().expect("valid config").cache.expect("[cache]")
}

/// A connected fleet store (panics if it is not Ok within 5 s).
async fn fleet(config: &CacheConfig) -> Fleet {
    let f = Fleet::connect(config, None);
    settles(&f, Duration::from_secs(5), |s| *s == CacheState::Ok).await;
    f
}

/// Waits (on the state's changes, no polling) until `pred` holds.
async fn settles(f: &Fleet, within: Duration, pred: impl Fn(&CacheState) -> bool) -> CacheState {
    let mut rx = f.watch_state();
    let reached = match tokio::time::timeout(within, rx.wait_for(|s| pred(s))).await {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("state still {:?} after {within:?}", f.state()),
    };
    reached
}

fn token(value: &str, lifetime: Duration) -> SharedToken {
    SharedToken::new(SecretString::from(value.to_owned()), SystemTime::now(), lifetime)
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// The next event matching `pred` within 5 s.
async fn event(rx: &mut broadcast::Receiver<FleetEvent>, pred: impl Fn(&FleetEvent) -> bool) -> FleetEvent {
    let next = async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("events closed: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("event within 5 s")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_round_trips_between_replicas_with_a_ttl_within_its_lifetime() {
    let Some(redis) = RedisServer::start() else { return };
    let config = cache(&redis.url(), KEY_A, |t| t);
    let (a, b) = (fleet(&config).await, fleet(&config).await);
    let key = a.fingerprint(&["ORACLE_KNOWLEDGE", "account", "alice"]);
    assert_eq!(
        key,
        b.fingerprint(&["ORACLE_KNOWLEDGE", "account", "alice"]),
        "same key, same name"
    );
    let t = token("the-token-value", Duration::from_secs(10));
    assert!(a.put_token(&key, &t, Duration::from_secs(3600)).await);
    let got = b.get_token(&key).await.expect("stored");
    assert_eq!(got.value.expose_secret(), "the-token-value");
    assert_eq!(
        (got.id, got.issued_ms, got.expires_ms),
        (t.id, t.issued_ms, t.expires_ms)
    );

    let mut conn = raw(&redis.url()).await;
    let pttl: i64 = conn.pttl(format!("kmproxy:token:{key}")).await.unwrap();
    assert!(
        (1..=10_000).contains(&pttl),
        "TTL capped by the token's lifetime: {pttl} ms"
    );
    assert!(a.put_token(&key, &t, Duration::from_secs(2)).await);
    let pttl: i64 = conn.pttl(format!("kmproxy:token:{key}")).await.unwrap();
    assert!((1..=2_000).contains(&pttl), "TTL as asked: {pttl} ms");
    let expired = SharedToken {
        expires_ms: 1,
        ..token("old", Duration::from_secs(1))
    };
    assert!(
        !a.put_token(&key, &expired, Duration::from_secs(60)).await,
        "an expired token is not written"
    );
    assert!(b.get_token(&a.fingerprint(&["nobody"])).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_delete_drops_only_the_token_that_failed_and_tells_the_fleet() {
    let Some(redis) = RedisServer::start() else { return };
    let config = cache(&redis.url(), KEY_A, |t| t);
    let (a, b) = (fleet(&config).await, fleet(&config).await);
    let key = a.fingerprint(&["site", "api_user", "apiuser"]);
    let old = token("old-token", Duration::from_secs(60));
    let new = token("new-token", Duration::from_secs(60));
    assert!(a.put_token(&key, &new, Duration::from_secs(60)).await);
    let mut events = b.events();
    assert!(!a.delete_token_if(&key, old.id).await, "Redis holds a newer token");
    assert_eq!(b.get_token(&key).await.expect("kept").id, new.id);
    let told = event(&mut events, |e| matches!(e, FleetEvent::Invalidated { .. })).await;
    assert_eq!(
        told,
        FleetEvent::Invalidated {
            key: key.clone(),
            id: old.id
        },
        "peers drop their old copies"
    );
    assert!(a.delete_token_if(&key, new.id).await);
    assert!(b.get_token(&key).await.is_none());
    assert!(!b.delete_token_if(&key, new.id).await, "already gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_excludes_other_replicas_is_renewed_past_its_ttl_and_only_its_owner_releases_it() {
    let Some(redis) = RedisServer::start() else { return };
    let config = cache(&redis.url(), KEY_A, |t| t);
    let (a, b) = (fleet(&config).await, fleet(&config).await);
    let key = a.fingerprint(&["site", "contact", "bob"]);
    let ttl = Duration::from_millis(300);
    let LeaseOutcome::Acquired(lease) = a.lease(&key, ttl).await else {
        panic!("free lease")
    };
    assert!(matches!(b.lease(&key, ttl).await, LeaseOutcome::Held));
    assert!(
        matches!(a.lease(&key, ttl).await, LeaseOutcome::Held),
        "not re-entrant either"
    );
    // Time passing is what is tested here: three ttls.
    tokio::time::sleep(ttl * 3).await;
    assert!(lease.is_held(), "renewed");
    assert!(
        matches!(b.lease(&key, ttl).await, LeaseOutcome::Held),
        "still held after 3 ttls"
    );
    assert!(
        !b.release_lease(&key, "someone-else:0").await,
        "another owner cannot release it"
    );
    assert!(matches!(b.lease(&key, ttl).await, LeaseOutcome::Held));
    assert!(lease.release().await);
    let LeaseOutcome::Acquired(second) = b.lease(&key, ttl).await else {
        panic!("released lease is free")
    };
    drop(second);
    // A dropped lease is released in the background.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let LeaseOutcome::Acquired(l) = a.lease(&key, ttl).await {
            assert!(l.release().await);
            break;
        }
        assert!(Instant::now() < deadline, "dropped lease not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_replica_wakes_on_another_replicas_token_and_stops_when_its_lease_ends_without_one() {
    let Some(redis) = RedisServer::start() else { return };
    let config = cache(&redis.url(), KEY_A, |t| t);
    let (a, b) = (fleet(&config).await, fleet(&config).await);
    let key = a.fingerprint(&["site", "account", "carol"]);
    let mut events = b.events();
    let waiter = {
        let (b, key) = (b.clone(), key.clone());
        tokio::spawn(async move { b.wait_for_token(&key, Duration::from_secs(10)).await })
    };
    let t = token("carols-token", Duration::from_secs(60));
    assert!(a.put_token(&key, &t, Duration::from_secs(60)).await);
    let got = waiter.await.unwrap().expect("woken with the token");
    assert_eq!(got.id, t.id);
    assert_eq!(
        event(&mut events, |_| true).await,
        FleetEvent::TokenStored { key },
        "through pub/sub"
    );

    // The lease holder's login fails: waiters stop at its release.
    let key = a.fingerprint(&["site", "account", "dave"]);
    let LeaseOutcome::Acquired(lease) = a.lease(&key, Duration::from_secs(5)).await else {
        panic!()
    };
    let started = Instant::now();
    let waiter = {
        let (b, key) = (b.clone(), key.clone());
        tokio::spawn(async move { b.wait_for_token(&key, Duration::from_secs(10)).await })
    };
    let mut events = b.events();
    assert!(lease.release().await);
    event(&mut events, |e| matches!(e, FleetEvent::LeaseReleased { .. })).await;
    assert!(waiter.await.unwrap().is_none());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_may_not_subscribe_still_finds_the_token_by_polling() {
    let users = [
        "kmproxy on >pw-full ~kmproxy:* &kmproxy:* +@all",
        "nosub on >pw-nosub ~kmproxy:* resetchannels +@all",
    ];
    let Some(redis) = RedisServer::with_users(&users) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, pw: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{pw}\n")).unwrap();
        file(path)
    };
    let full = cache(&redis.url(), KEY_A, |t| {
        t.cache("username", "kmproxy")
            .cache("password", secret("full", "pw-full"))
    });
    let nosub = cache(&redis.url(), KEY_A, |t| {
        t.cache("username", "nosub")
            .cache("password", secret("nosub", "pw-nosub"))
    });
    let (a, w) = (fleet(&full).await, fleet(&nosub).await);
    let key = a.fingerprint(&["site", "account", "erin"]);
    let mut events = w.events();
    let waiter = {
        let (w, key) = (w.clone(), key.clone());
        tokio::spawn(async move { w.wait_for_token(&key, Duration::from_secs(5)).await })
    };
    let t = token("erins-token", Duration::from_secs(60));
    assert!(a.put_token(&key, &t, Duration::from_secs(60)).await);
    assert_eq!(waiter.await.unwrap().expect("found by polling").id, t.id);
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, FleetEvent::TokenStored { .. }),
            "no event could reach it: {e:?}"
        );
    }
    assert_eq!(w.state(), CacheState::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_moved_and_foreign_values_are_misses_not_errors() {
    let Some(redis) = RedisServer::start() else { return };
    let (a, other) = (
        fleet(&cache(&redis.url(), KEY_A, |t| t)).await,
        fleet(&cache(&redis.url(), KEY_B, |t| t)).await,
    );
    let key = a.fingerprint(&["site", "account", "frank"]);
    let t = token("franks-token", Duration::from_secs(60));
    assert!(a.put_token(&key, &t, Duration::from_secs(60)).await);
    assert!(other.get_token(&key).await.is_none(), "another encryption key");
    assert!(other
        .get_token(&other.fingerprint(&["site", "account", "frank"]))
        .await
        .is_none());
    assert_eq!(
        other.state(),
        CacheState::Ok,
        "a foreign value does not degrade the store"
    );

    let mut conn = raw(&redis.url()).await;
    let name = format!("kmproxy:token:{key}");
    let mut bytes: Vec<u8> = conn.get(&name).await.unwrap();
    let moved = a.fingerprint(&["site", "account", "grace"]);
    let _: () = conn.set(format!("kmproxy:token:{moved}"), &bytes).await.unwrap();
    assert!(
        a.get_token(&moved).await.is_none(),
        "a value copied under another key name"
    );
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let _: () = conn.set(&name, &bytes).await.unwrap();
    assert!(a.get_token(&key).await.is_none(), "a corrupted value");
    let _: () = conn.set(&name, "v1 not even close").await.unwrap();
    assert!(a.get_token(&key).await.is_none());
    assert!(
        a.put_token(&key, &t, Duration::from_secs(60)).await,
        "overwritten by the next login"
    );
    assert_eq!(a.get_token(&key).await.expect("fresh").id, t.id);
    assert_eq!(a.state(), CacheState::Ok);
}

/// `secret` as it could appear in a stored value: plain, hex, base64 at
/// every alignment (the characters that depend on neighbours trimmed).
fn encodings(secret: &str) -> Vec<Vec<u8>> {
    let s = secret.as_bytes();
    let mut out = vec![
        s.to_vec(),
        hex::encode(s).into_bytes(),
        hex::encode_upper(s).into_bytes(),
    ];
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        for shift in 0..3usize {
            let padded: Vec<u8> = std::iter::repeat_n(0u8, shift).chain(s.iter().copied()).collect();
            let text = engine.encode(padded);
            let skip = [0, 2, 3][shift];
            out.push(text.as_bytes()[skip..text.len() - 4].to_vec());
        }
    }
    out
}

/// Asserts that no key in `names` (under the prefix), nor its value,
/// holds any of `secrets` in any of their [`encodings`].
async fn assert_reveals_none(conn: &mut redis::aio::MultiplexedConnection, names: &[String], secrets: &[&str]) {
    for name in names {
        assert!(name.starts_with("kmproxy:"), "{name} is outside the prefix");
        let value: Vec<u8> = conn.get(name).await.unwrap();
        for secret in secrets {
            for enc in encodings(secret) {
                let found = |hay: &[u8]| hay.windows(enc.len()).any(|w| w == enc.as_slice());
                assert!(!found(name.as_bytes()) && !found(&value), "{name} reveals {secret}");
            }
        }
    }
}

/// Every key in the server, by `SCAN`.
async fn scan_all(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let (mut keys, mut cursor) = (Vec::new(), 0u64);
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(100)
            .query_async(conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_under_the_prefix_reveals_a_token_user_or_password_in_any_encoding() {
    let Some(redis) = RedisServer::start() else { return };
    let (a, b) = (
        fleet(&cache(&redis.url(), KEY_A, |t| t)).await,
        fleet(&cache(&redis.url(), KEY_A, |t| t)).await,
    );
    let (user, password, secret_token) = ("okcs-user-henry", "Pa55word-of-henry", "token-value-of-henry-123456");
    let who = a.fingerprint(&["ORACLE_KNOWLEDGE", "account", user]);
    let credential = a.fingerprint(&["ORACLE_KNOWLEDGE", "account", user, password]);
    assert!(
        a.put_token(
            &who,
            &token(secret_token, Duration::from_secs(60)),
            Duration::from_secs(60)
        )
        .await
    );
    let verdict = Verdict {
        parked: Some(format!("HTTP 401: invalid password for {user}")),
        unknown_attempts: 1,
        backoff_until_ms: Some(1),
        last_session_relogin_ms: Some(2),
    };
    assert!(a.put_verdict(&credential, &verdict, None).await);
    assert_eq!(b.claim_relogin(&credential, Duration::from_secs(60)).await, Some(true));
    let LeaseOutcome::Acquired(_lease) = a.lease(&who, Duration::from_secs(5)).await else {
        panic!()
    };

    let mut conn = raw(&redis.url()).await;
    let scanned = scan_all(&mut conn).await;
    assert_eq!(
        scanned.len(),
        4,
        "a token, a verdict, a relogin claim, a lease: {scanned:?}"
    );
    assert_reveals_none(&mut conn, &scanned, &[user, password, secret_token]).await;
    assert_eq!(
        b.get_verdict(&credential).await,
        Some(verdict),
        "yet readable with the key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_and_resets_are_shared_and_relogins_are_claimed_once_per_interval() {
    let Some(redis) = RedisServer::start() else { return };
    let config = cache(&redis.url(), KEY_A, |t| t);
    let (a, b) = (fleet(&config).await, fleet(&config).await);
    let credential = a.fingerprint(&["site", "account", "ivan", "password"]);
    let mut events = b.events();
    assert_eq!(b.get_verdict(&credential).await, None);
    let parked = Verdict {
        parked: Some("HTTP 401 OK-AUTH0001".into()),
        ..Verdict::default()
    };
    assert!(a.put_verdict(&credential, &parked, Some(Duration::from_secs(60))).await);
    let told = event(&mut events, |_| true).await;
    assert_eq!(
        told,
        FleetEvent::VerdictChanged {
            credential: credential.clone()
        }
    );
    assert_eq!(b.get_verdict(&credential).await, Some(parked));

    let interval = Duration::from_secs(30);
    assert_eq!(a.claim_relogin(&credential, interval).await, Some(true));
    assert_eq!(
        b.claim_relogin(&credential, interval).await,
        Some(false),
        "one per interval, fleet-wide"
    );
    let id = a.clear_verdict(&credential).await.expect("reset written");
    assert_eq!(
        event(&mut events, |_| true).await,
        FleetEvent::Reset {
            credential: credential.clone(),
            id: Some(id),
        }
    );
    assert_eq!(b.get_verdict(&credential).await, None);
    assert_eq!(
        b.read_verdict(&credential).await,
        Some(VerdictRecord {
            verdict: None,
            reset: Some(id)
        }),
        "the reset leaves its marker, for replicas that did not hear it"
    );
    let pttl: i64 = raw(&redis.url())
        .await
        .pttl(format!("kmproxy:reset:{credential}"))
        .await
        .unwrap();
    let week = kmproxy::fleet::RESET_MARKER_TTL.as_millis() as i64;
    assert!(
        (week - 60_000..=week).contains(&pttl),
        "the marker lives a week: {pttl} ms"
    );
    assert_eq!(
        b.claim_relogin(&credential, interval).await,
        Some(true),
        "a reset clears the claim"
    );
}

/// One fleet operation, answering whether it missed (as it must here).
type Op<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + 'a>>;

/// Every operation, each timed: none may take much past `limit`.
async fn every_operation_returns_within(f: &Fleet, key: &Fingerprint, limit: Duration) {
    let t = token("t", Duration::from_secs(60));
    let ops: [(&str, Op<'_>); 10] = [
        ("get_token", Box::pin(async { f.get_token(key).await.is_none() })),
        (
            "put_token",
            Box::pin(async { !f.put_token(key, &t, Duration::from_secs(60)).await }),
        ),
        ("delete_token_if", Box::pin(async { !f.delete_token_if(key, 1).await })),
        (
            "lease",
            Box::pin(async { matches!(f.lease(key, Duration::from_secs(1)).await, LeaseOutcome::Unavailable) }),
        ),
        (
            "wait_for_token",
            Box::pin(async { f.wait_for_token(key, Duration::from_secs(5)).await.is_none() }),
        ),
        ("get_verdict", Box::pin(async { f.get_verdict(key).await.is_none() })),
        ("read_verdict", Box::pin(async { f.read_verdict(key).await.is_none() })),
        (
            "clear_verdict",
            Box::pin(async { f.clear_verdict(key).await.is_none() }),
        ),
        (
            "put_verdict",
            Box::pin(async { !f.put_verdict(key, &Verdict::default(), None).await }),
        ),
        (
            "claim_relogin",
            Box::pin(async { f.claim_relogin(key, Duration::from_secs(1)).await.is_none() }),
        ),
    ];
    for (name, op) in ops {
        let started = Instant::now();
        assert!(op.await, "{name} gave a hit while Redis is unusable");
        let took = started.elapsed();
        assert!(took <= limit, "{name} took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_degrades_with_a_reason_misses_fast_and_rejoins_after_a_restart() {
    let Some(mut redis) = RedisServer::start() else { return };
    let f = fleet(&cache(&redis.url(), KEY_A, |t| t)).await;
    let key = f.fingerprint(&["site", "account", "judy"]);
    let mut events = f.events();
    redis.kill();
    let state = settles(&f, Duration::from_secs(5), |s| *s != CacheState::Ok).await;
    let CacheState::Degraded(reason) = state else {
        unreachable!()
    };
    assert!(
        matches!(reason, DegradedReason::Io(_) | DegradedReason::Refused(_)),
        "a clear reason: {reason}"
    );
    settles(&f, Duration::from_secs(5), |s| {
        matches!(s, CacheState::Degraded(DegradedReason::Refused(_)))
    })
    .await;
    assert_eq!(
        f.state().to_string(),
        format!("connection refused by 127.0.0.1:{}", redis.port())
    );
    every_operation_returns_within(&f, &key, COMMAND_TIMEOUT + Duration::from_millis(100)).await;

    let restarted = Instant::now();
    redis.restart();
    settles(&f, Duration::from_secs(10), |s| *s == CacheState::Ok).await;
    assert!(restarted.elapsed() < Duration::from_secs(10));
    event(&mut events, |e| *e == FleetEvent::Rejoined).await;
    let t = token("after-restart", Duration::from_secs(60));
    assert!(f.put_token(&key, &t, Duration::from_secs(60)).await);
    assert_eq!(f.get_token(&key).await.expect("works again").id, t.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_redis_bounds_every_operation_by_the_command_timeout() {
    let Some(redis) = RedisServer::start() else { return };
    let f = fleet(&cache(&redis.url(), KEY_A, |t| t)).await;
    let key = f.fingerprint(&["site", "account", "kim"]);
    redis.pause();
    // The first operations meet the stopped server: each waits at most
    // the command timeout; once the link is judged lost they return at once.
    every_operation_returns_within(&f, &key, COMMAND_TIMEOUT + Duration::from_millis(150)).await;
    let state = settles(&f, Duration::from_secs(3), |s| *s != CacheState::Ok).await;
    assert!(
        matches!(state, CacheState::Degraded(DegradedReason::Timeout { .. })),
        "{state:?}"
    );
    every_operation_returns_within(&f, &key, COMMAND_TIMEOUT + Duration::from_millis(150)).await;
    redis.resume();
    settles(&f, Duration::from_secs(10), |s| *s == CacheState::Ok).await;
    let t = token("after-resume", Duration::from_secs(60));
    assert!(f.put_token(&key, &t, Duration::from_secs(60)).await);
    assert_eq!(f.get_token(&key).await.expect("works again").id, t.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn acl_credentials_come_from_a_secret_file_and_a_wrong_password_degrades_without_showing_it() {
    let Some(redis) = RedisServer::with_users(&["kmproxy on >right-pw-4815 ~kmproxy:* &kmproxy:* +@all"]) else {
        return;
    };
    let write = |name: &str, pw: &str| {
        let path = redis.dir().join(name);
        std::fs::write(&path, format!("{pw}\n")).unwrap();
        file(path)
    };
    let (right, wrong) = (write("right", "right-pw-4815"), write("wrong", "wrong-pw-1623"));
    let good = cache(&redis.url(), KEY_A, |t| {
        t.cache("username", "kmproxy").cache("password", right.clone())
    });
    let f = fleet(&good).await;
    let key = f.fingerprint(&["site", "account", "leo"]);
    assert!(
        f.put_token(
            &key,
            &token("leos-token", Duration::from_secs(60)),
            Duration::from_secs(60)
        )
        .await
    );
    assert!(f.get_token(&key).await.is_some());

    let bad = cache(&redis.url(), KEY_A, |t| {
        t.cache("username", "kmproxy").cache("password", wrong.clone())
    });
    let g = Fleet::connect(&bad, None);
    let state = settles(&g, Duration::from_secs(5), |s| {
        matches!(s, CacheState::Degraded(DegradedReason::AuthFailed(_)))
    })
    .await;
    let no_password = cache(&redis.url(), KEY_A, |t| t.cache("username", "kmproxy"));
    let h = Fleet::connect(&no_password, None);
    let other = settles(&h, Duration::from_secs(5), |s| {
        matches!(s, CacheState::Degraded(DegradedReason::AuthFailed(_)))
    })
    .await;
    assert!(g.get_token(&key).await.is_none());
    let shown = format!("{state:?} {state} {other:?} {g:?} {bad:?} {good:?} {f:?}");
    assert!(shown.contains("authentication failed"), "{shown}");
    for pw in ["right-pw-4815", "wrong-pw-1623"] {
        assert!(!shown.contains(pw), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_goes_through_rustls_and_an_untrusted_certificate_degrades_with_a_tls_reason() {
    let Some(redis) = RedisServer::with_tls() else { return };
    let url = format!("rediss://localhost:{}/0", redis.port());
    let f = Fleet::connect(&cache(&url, KEY_A, |t| t), None);
    let tls = |s: &CacheState| matches!(s, CacheState::Degraded(DegradedReason::Tls(_)));
    let state = settles(&f, Duration::from_secs(5), tls).await;
    assert!(state.to_string().contains("certificate"), "{state}");
    let key = f.fingerprint(&["site", "account", "mallory"]);
    assert!(f.get_token(&key).await.is_none());
}
