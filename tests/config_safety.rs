//! Whatever `check` accepts, `serve` and a reload run: out-of-range counts,
//! sizes and durations are refused naming the key and its bound (and a
//! property test tries extreme values of every such key against a running
//! kmproxy); credentials inside upstream URLs are refused without being
//! shown; a SIGHUP to a bad file is refused and the next good one applies;
//! `hash-key` hashes a key as a header carries it.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, Env};
use http::StatusCode;
use kmproxy::config::sample::ConfigToml;
use kmproxy::config::Config;
use kmproxy::sim::{SimConfig, Simulator};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn base() -> ConfigToml {
    ConfigToml::new("SIM_URL")
        .server("listen", "127.0.0.1:0")
        .server("admin_listen", "127.0.0.1:0")
        .server("default_principal", "public")
        .principal("public", "anonymous")
        .user_principal("agent", "account", "okcsuser", "Password1")
        .caller("helpdesk", "helpdesk-key", "agent", &[])
}

fn parse(t: &ConfigToml) -> Result<Config, kmproxy::config::ConfigError> {
    Config::parse(
        &t.to_string().replace("SIM_URL", "http://127.0.0.1:9"),
        Path::new("k.toml"),
    )
}

/// The one problem of `t`, as `(key, message)`.
fn refused(t: ConfigToml) -> (String, String) {
    let e = parse(&t).expect_err("refused");
    assert_eq!(e.problems.len(), 1, "{e}");
    e.problems[0].clone()
}

// ---------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------

#[test]
fn the_values_that_made_serve_panic_are_refused_naming_key_and_bound() {
    let cases = [
        (
            base().server("max_in_flight", 4_611_686_018_427_387_904_i64),
            "server.max_in_flight",
            "at most 1000000",
        ),
        (
            base().server("max_connections", i64::MAX),
            "server.max_connections",
            "at most 1000000",
        ),
        (
            base().upstream("timeout", "500000000000years"),
            "upstream.timeout",
            "at most 1h",
        ),
        (
            base().upstream("connect_timeout", "100years"),
            "upstream.connect_timeout",
            "at most 1h",
        ),
        (
            base().tokens("lifetime", "500000000000years"),
            "tokens.lifetime",
            "at most 30days",
        ),
        (base().tokens("lifetime", "1s"), "tokens.lifetime", "at least 1m"),
        (
            base().tokens("min_relogin_interval", "9000years"),
            "tokens.min_relogin_interval",
            "at most 1h",
        ),
        (
            base().server("header_read_timeout", "1ms"),
            "server.header_read_timeout",
            "at least 1s",
        ),
        (
            base().server("body_read_timeout", "2h"),
            "server.body_read_timeout",
            "at most 1h",
        ),
        (
            base().server("queue_timeout", "2h"),
            "server.queue_timeout",
            "at most 1h",
        ),
        (
            base().server("drain_timeout", "2h"),
            "server.drain_timeout",
            "at most 1h",
        ),
        (
            base().server("max_body", "2GiB").server("max_buffered", "4GiB"),
            "server.max_body",
            "at most 1GiB",
        ),
        (
            base().server("max_buffered", "65GiB"),
            "server.max_buffered",
            "at most 64GiB",
        ),
        (
            base().upstream("timeout", "0s"),
            "upstream.timeout",
            "greater than zero",
        ),
    ];
    for (toml, key, bound) in cases {
        let (k, message) = refused(toml);
        assert_eq!(k, key, "{message}");
        assert!(message.contains(bound), "{key}: {message}");
    }
    // At the bound, accepted.
    let edge = base()
        .server("max_in_flight", 1_000_000)
        .server("max_connections", 1_000_000)
        .server("max_body", "1GiB")
        .server("max_buffered", "64GiB")
        .upstream("timeout", "1h")
        .tokens("lifetime", "30days")
        .tokens("refresh_before", "29days");
    parse(&edge).unwrap_or_else(|e| panic!("{e}"));
}

/// Every count, size and duration key, and the kind of value it takes.
const KEYS: &[(&str, &str, Kind)] = &[
    ("server", "max_connections", Kind::Count),
    ("server", "max_in_flight", Kind::Count),
    ("server", "max_body", Kind::Size),
    ("server", "max_buffered", Kind::Size),
    ("server", "header_read_timeout", Kind::Duration),
    ("server", "body_read_timeout", Kind::Duration),
    ("server", "queue_timeout", Kind::Duration),
    ("server", "drain_timeout", Kind::Duration),
    ("upstream", "connect_timeout", Kind::Duration),
    ("upstream", "timeout", Kind::Duration),
    ("tokens", "lifetime", Kind::Duration),
    ("tokens", "refresh_before", Kind::Duration),
    ("tokens", "min_relogin_interval", Kind::Duration),
];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Count,
    Size,
    Duration,
}

fn extreme(kind: Kind) -> BoxedStrategy<toml::Value> {
    match kind {
        Kind::Count => prop_oneof![
            2 => prop::sample::select(vec![0_i64, 1, 2, 999_999, 1_000_000, 1_000_001, 1 << 62, i64::MAX, -1]),
            1 => any::<i64>(),
            2 => 1_i64..2000,
        ]
        .prop_map(toml::Value::Integer)
        .boxed(),
        Kind::Size => prop_oneof![
            prop::sample::select(vec![0_i64, 1, 1 << 30, (1 << 30) + 1, 64 << 30, i64::MAX, -1])
                .prop_map(toml::Value::Integer),
            prop::sample::select(vec![
                "0",
                "1GiB",
                "1025MiB",
                "64GiB",
                "65GiB",
                "17179869184GiB",
                "9999999999999999999999"
            ])
            .prop_map(toml::Value::from),
            any::<u64>().prop_map(|n| toml::Value::from(format!("{}KiB", n >> 8))),
            (0_i64..(1 << 31)).prop_map(toml::Value::Integer),
        ]
        .boxed(),
        Kind::Duration => prop_oneof![
            3 => prop::sample::select(vec![
                "0s",
                "1ns",
                "1ms",
                "999ms",
                "1s",
                "59s",
                "1m",
                "1h",
                "3601s",
                "29days",
                "30days",
                "31days",
                "500000000000years",
                "18446744073709551615s",
                "584942417355years",
                "1000000000000000000000s",
            ])
            .prop_map(toml::Value::from),
            1 => any::<u64>().prop_map(|n| toml::Value::from(format!("{n}ms"))),
            3 => (0_u64..7200).prop_map(|n| toml::Value::from(format!("{n}s"))),
        ]
        .boxed(),
    }
}

/// One to three keys, each with an extreme value.
fn settings() -> impl Strategy<Value = Vec<(usize, toml::Value)>> {
    let keyed = (0..KEYS.len()).prop_flat_map(|i| extreme(KEYS[i].2).prop_map(move |v| (i, v)));
    prop::collection::vec(keyed, 1..=3)
}

fn apply(mut t: ConfigToml, settings: &[(usize, toml::Value)]) -> ConfigToml {
    for (i, v) in settings {
        let (section, key, _) = KEYS[*i];
        t = match section {
            "server" => t.server(key, v.clone()),
            "upstream" => t.upstream(key, v.clone()),
            _ => t.tokens(key, v.clone()),
        };
    }
    t
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic in the process, whatever thread or task it is on
/// (a panic in a connection task would otherwise pass unseen).
fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

/// Starts a kmproxy for `text`, makes a call, reloads the same file, and
/// makes another: each call gets an answer, and nothing panics.
async fn serves_a_call(text: String) {
    let env = Env::builder().toml(|_| text.clone()).start().await;
    for round in 0..2 {
        let a = env.get("/km/api/latest/content", &[]).await;
        let body = String::from_utf8_lossy(&a.body);
        assert!(!body.contains("panic"), "{body}");
        let timed_out = a.status == StatusCode::GATEWAY_TIMEOUT || a.status == StatusCode::SERVICE_UNAVAILABLE;
        assert!(
            a.status == StatusCode::OK || timed_out,
            "round {round}: {} {body}",
            a.status
        );
        let again = Config::parse(&text.replace("SIM_URL", &env.sim.base_url()), Path::new("k.toml")).unwrap();
        env.app.reload(again).await.unwrap();
    }
    env.stop().await;
}

#[test]
fn whatever_parse_accepts_serves_and_reloads_without_panicking() {
    count_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    runner
        .run(&settings(), |settings| {
            // Per case, so that shrinking judges each input on its own.
            PANICS.store(0, Ordering::SeqCst);
            let t = apply(base(), &settings);
            match parse(&t) {
                Err(e) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    let ours: Vec<String> = KEYS.iter().map(|(s, k, _)| format!("{s}.{k}")).collect();
                    for (key, _) in &e.problems {
                        prop_assert!(ours.contains(key), "a problem names no bounded key: {e}");
                    }
                }
                Ok(_) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    rt.block_on(serves_a_call(t.to_string()));
                }
            }
            prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "panicked with {:?}", settings);
            Ok(())
        })
        .unwrap();
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    eprintln!("{accepted} configs accepted and served, {refused} refused");
    assert!(
        accepted > 0 && refused > 0,
        "accepted {accepted}, refused {refused}: the strategy tests one side only"
    );
}

// ---------------------------------------------------------------------------
// Credentials in URLs
// ---------------------------------------------------------------------------

const URL_PASSWORD: &str = "hunter2-in-url";

#[test]
fn credentials_in_upstream_urls_are_refused_without_showing_them() {
    for key in ["base_url", "search_base_url"] {
        for url in [
            format!("https://apiuser:{URL_PASSWORD}@example-irs.custhelp.com"),
            format!("https://{URL_PASSWORD}@example-irs.custhelp.com/"),
            format!("https://:{URL_PASSWORD}@example-irs.custhelp.com"),
            format!("ftp://apiuser:{URL_PASSWORD}@example-irs.custhelp.com"),
            format!("https://apiuser:{URL_PASSWORD}@[::1"),
        ] {
            let e = parse(&base().upstream(key, url.as_str())).expect_err("refused");
            let text = e.to_string();
            assert!(text.contains(&format!("upstream.{key}")), "{text}");
            assert!(!text.contains(URL_PASSWORD), "{text}");
        }
    }
}

#[test]
fn check_and_serve_refuse_a_url_with_credentials_and_never_print_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kmproxy.toml");
    let url = format!("https://apiuser:{URL_PASSWORD}@127.0.0.1:9");
    std::fs::write(&path, base().upstream("base_url", url.as_str()).to_string()).unwrap();
    for command in ["check", "serve"] {
        let o = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
            .arg("--config")
            .arg(&path)
            .arg(command)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{command}");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("upstream.base_url"), "{command}: {out}");
        assert!(out.contains("credentials"), "{command}: {out}");
        assert!(!out.contains(URL_PASSWORD), "{command} printed the password: {out}");
    }
}

// ---------------------------------------------------------------------------
// SIGHUP reloads
// ---------------------------------------------------------------------------

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_keeps_the_old_config_and_the_next_sighup_applies() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kmproxy.toml");
    let good = base().to_string().replace("SIM_URL", &sim.base_url());
    std::fs::write(&path, &good).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&lines);
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    let log = || lines.lock().unwrap().clone();
    let count = |what: &str| log().matches(what).count();
    assert!(
        eventually(Duration::from_secs(10), || count("kmproxy listening") == 1).await,
        "{}",
        log()
    );
    let proxy = listening_addr(&log());
    let hup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    // The values that made a reload panic, then a fixed file; twice, so the
    // loop is seen to survive each refusal.
    let bad = [
        base().server("max_in_flight", 4_611_686_018_427_387_904_i64),
        base().upstream("timeout", "500000000000years"),
    ];
    for (round, bad) in bad.into_iter().enumerate() {
        std::fs::write(&path, bad.to_string().replace("SIM_URL", &sim.base_url())).unwrap();
        hup();
        assert!(
            eventually(Duration::from_secs(10), || count("reload refused") == round + 1).await,
            "{}",
            log()
        );
        assert_eq!(call_status(proxy).await, 200, "the old config stopped serving");
        std::fs::write(&path, &good).unwrap();
        hup();
        assert!(
            eventually(Duration::from_secs(10), || count("config reloaded") == round + 1).await,
            "{}",
            log()
        );
        assert_eq!(call_status(proxy).await, 200);
    }
    assert!(
        log().contains("server.max_in_flight") && log().contains("upstream.timeout"),
        "{}",
        log()
    );
    assert!(!log().contains("panicked"), "{}", log());
    let _ = child.kill();
    let _ = child.wait();
}

fn listening_addr(log: &str) -> std::net::SocketAddr {
    let line = log.lines().find(|l| l.contains("kmproxy listening")).unwrap();
    let at = line.find("127.0.0.1:").unwrap();
    let addr: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.parse().unwrap()
}

/// Status of one anonymous call, on a fresh connection.
async fn call_status(addr: std::net::SocketAddr) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// hash-key and header whitespace
// ---------------------------------------------------------------------------

fn hash_key(input: &[u8]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let o = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_key_digests_the_key_a_header_delivers() {
    let (code, digest, note) = hash_key(b" \tspaced-key  \n");
    assert_eq!(code, Some(0));
    assert_eq!(digest, kmproxy::config::hash_key(b"spaced-key"));
    assert!(note.contains("removed the spaces or tabs"), "{note}");
    let (code, _, note) = hash_key(b"plain-key\n");
    assert_eq!(code, Some(0));
    assert!(note.is_empty(), "{note}");
    let (code, _, note) = hash_key(b"two\nlines\n");
    assert_eq!(code, Some(2));
    assert!(note.contains("line break"), "{note}");
    // A caller that sends the key with the same spaces is recognised.
    let env = Env::builder()
        .toml(|t| {
            let spaced =
                format!("\n[[callers]]\nname = \"spaced\"\nkey_sha256 = \"{digest}\"\nprincipal = \"agent\"\n");
            t.replacen("\n[[callers]]\n", &(spaced + "\n[[callers]]\n"), 1)
        })
        .start()
        .await;
    let mut tcp = tokio::net::TcpStream::connect(env.proxy).await.unwrap();
    let req = "GET /km/api/latest/content HTTP/1.1\r\nhost: localhost\r\nx-kmproxy-key: \tspaced-key  \r\nconnection: close\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = env.simulator().requests();
    let token = seen.last().and_then(|r| r.kmauthtoken.clone()).unwrap();
    assert!(
        token.get("userToken").is_some(),
        "served as the agent (a user token): {token}"
    );
    env.stop().await;
}
