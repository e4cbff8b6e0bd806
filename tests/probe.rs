//! `kmproxy probe [--ready]`, run as the real binary against a real
//! kmproxy's admin port: the exit status and the one line it prints.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::Env;
use kmproxy::config::sample::ConfigToml;
use kmproxy::secret::Secret;

/// Runs `kmproxy ARGS` in `dir` (so no `./kmproxy.toml` is found by accident),
/// without the runner's `$KMPROXY_CONFIG` unless `config_env` sets one.
async fn kmproxy_in(dir: &Path, args: &[&str], config_env: Option<&Path>) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kmproxy"));
    cmd.args(args).current_dir(dir).env_remove("KMPROXY_CONFIG");
    if let Some(path) = config_env {
        cmd.env("KMPROXY_CONFIG", path);
    }
    cmd.output().await.unwrap()
}

async fn probe(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    kmproxy_in(dir.path(), args, None).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn a_serving_kmproxy_is_alive_and_ready() {
    let env = Env::start().await;
    let admin = env.admin.to_string();
    let alive = probe(&["probe", "--admin", &admin]).await;
    assert_eq!(alive.status.code(), Some(0), "{}", stderr(&alive));
    assert_eq!(stdout(&alive), format!("GET /healthz on {admin}: 200 ok\n"));
    let ready = probe(&["probe", "--ready", "--admin", &admin]).await;
    assert_eq!(ready.status.code(), Some(0), "{}", stderr(&ready));
    assert_eq!(stdout(&ready), format!("GET /readyz on {admin}: 200 ready\n"));
    env.stop().await;
}

#[tokio::test]
async fn a_parked_api_user_is_alive_but_not_ready_and_says_why() {
    let env = Env::builder()
        .config(|c| c.api_user.password = Secret::literal("wrong"))
        .start()
        .await;
    let admin = env.admin.to_string();
    let alive = probe(&["probe", "--admin", &admin]).await;
    assert_eq!(alive.status.code(), Some(0), "{}", stderr(&alive));
    let ready = probe(&["probe", "--ready", "--admin", &admin]).await;
    assert_eq!(ready.status.code(), Some(1), "{}", stdout(&ready));
    let why = stderr(&ready);
    assert!(
        why.starts_with(&format!(
            "kmproxy probe: GET /readyz on {admin} answered 503: not ready: API user login rejected"
        )),
        "{why}"
    );
    assert_eq!(why.lines().count(), 1, "one line: {why}");
    assert!(!why.contains("wrong"), "no password in {why}");
    env.stop().await;
}

#[tokio::test]
async fn nothing_listening_fails_at_once() {
    let free = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let started = Instant::now();
    let o = probe(&["probe", "--admin", &free.to_string()]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!("kmproxy probe: nothing listens on {free} (connection refused)\n")
    );
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_port_that_never_answers_times_out() {
    // Accepts (the kernel's backlog does) but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let started = Instant::now();
    let o = probe(&["probe", "--ready", "--admin", &addr.to_string(), "--timeout", "300ms"]).await;
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!("kmproxy probe: no answer from {addr} within 300ms\n")
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    drop(silent);
}

/// A config file whose admin port is `admin_listen`, nothing else needed.
fn write_config(dir: &Path, admin_listen: &str) -> std::path::PathBuf {
    let path = dir.join("fleet.toml");
    let text = ConfigToml::new("http://127.0.0.1:9")
        .server("admin_listen", admin_listen)
        .to_string();
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn the_admin_address_comes_from_the_config_and_an_unspecified_one_is_probed_on_loopback() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let unspecified = SocketAddr::from(([0, 0, 0, 0], env.admin.port())).to_string();
    let path = write_config(dir.path(), &unspecified);
    let by_flag = kmproxy_in(dir.path(), &["--config", path.to_str().unwrap(), "probe"], None).await;
    assert_eq!(by_flag.status.code(), Some(0), "{}", stderr(&by_flag));
    assert_eq!(
        stdout(&by_flag),
        format!("GET /healthz on 127.0.0.1:{}: 200 ok\n", env.admin.port())
    );
    let by_env = kmproxy_in(dir.path(), &["probe", "--ready"], Some(&path)).await;
    assert_eq!(by_env.status.code(), Some(0), "{}", stderr(&by_env));
    std::fs::rename(&path, dir.path().join("kmproxy.toml")).unwrap();
    let by_default = kmproxy_in(dir.path(), &["probe"], None).await;
    assert_eq!(
        by_default.status.code(),
        Some(0),
        "./kmproxy.toml: {}",
        stderr(&by_default)
    );
    env.stop().await;
}

#[tokio::test]
async fn no_admin_port_or_no_config_is_a_failure_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "off");
    let off = kmproxy_in(dir.path(), &["--config", path.to_str().unwrap(), "probe"], None).await;
    assert_eq!(off.status.code(), Some(1));
    assert!(
        stderr(&off).contains("server.admin_listen is \"off\""),
        "{}",
        stderr(&off)
    );
    let missing = kmproxy_in(dir.path(), &["probe"], None).await;
    assert_eq!(missing.status.code(), Some(1), "not 2: Docker reserves it");
    let why = stderr(&missing);
    assert!(
        why.starts_with("kmproxy probe: cannot read the admin address: kmproxy.toml"),
        "{why}"
    );
    assert_eq!(why.lines().count(), 1, "{why}");
}

#[tokio::test]
async fn help_says_what_it_probes_and_how() {
    let o = probe(&["probe", "--help"]).await;
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    for says in [
        "/healthz",
        "/readyz",
        "--ready",
        "--admin",
        "--timeout",
        "Host: 127.0.0.1",
        "[default: 2s]",
        "loopback",
    ] {
        assert!(help.contains(says), "{says} missing in:\n{help}");
    }
}
