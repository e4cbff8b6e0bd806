//! The command line, run as a real process: `check`, `check --login`,
//! `hash-key`, `--help`, the exit status of a bad config, and output into a
//! pipe whose reader has gone.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use kmproxy::config::sample::{env, file, ConfigToml};
use kmproxy::sim::{SimConfig, Simulator};

fn kmproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kmproxy"))
        .args(args)
        .env_remove("KMPROXY_CONFIG")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_config(dir: &tempfile::TempDir, base_url: &str) -> String {
    let path = dir.path().join("kmproxy.toml");
    let api_pw = dir.path().join("api.pw");
    let text = ConfigToml::new(base_url)
        .api_user("password", file(&api_pw))
        .principal("public", "anonymous")
        .user_principal("agent", "account", "okcsuser", env("KMPROXY_TEST_AGENT_PW"))
        .caller("helpdesk", "k", "agent", &[])
        .to_string();
    std::fs::write(&api_pw, "apipass1\n").unwrap();
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn bad_config_exits_2_naming_file_and_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"nowhere\"\nmaxbody = 1\n[upstream]\nbase_url = \"http://x\"\n[api_user]\nlogin = \"a\"\npassword = { env = \"KMPROXY_TEST_UNSET\" }\n",
    )
    .unwrap();
    let p = path.to_string_lossy();
    let o = kmproxy(&["--config", &p, "check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    for key in [
        "server.listen",
        "server.maxbody: unknown key",
        "upstream.site_name: missing",
        "api_user.password",
    ] {
        assert!(t.contains(&format!("{p}: {key}")), "missing {key} in:\n{t}");
    }
    // serve refuses it the same way.
    let o = kmproxy(&["--config", &p, "serve"]);
    assert_eq!(o.status.code(), Some(2));
    // A missing file is a config error too.
    let o = kmproxy(&["--config", "/nonexistent/kmproxy.toml", "check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("/nonexistent/kmproxy.toml"));
}

#[test]
fn check_reports_an_empty_or_missing_cache_key_once() {
    let dir = tempfile::tempdir().unwrap();
    for (what, key) in [("empty", Some("")), ("missing", None)] {
        let mut t = ConfigToml::new("http://127.0.0.1:9").cache("redis_url", "redis://127.0.0.1:6390/0");
        if let Some(key) = key {
            t = t.cache("encryption_key", key);
        }
        let path = dir.path().join("cache.toml");
        std::fs::write(&path, t.to_string()).unwrap();
        let o = kmproxy(&["--config", &path.to_string_lossy(), "check"]);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", text(&o));
        let said = text(&o).matches("cache.encryption_key").count();
        assert_eq!(said, 1, "{what} key reported {said} times:\n{}", text(&o));
    }
}

#[test]
fn check_prints_a_redacted_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "http://127.0.0.1:9");
    let o = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
        .args(["--config", &path, "check"])
        .env("KMPROXY_TEST_AGENT_PW", "Password1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("agent") && t.contains("okcsuser") && t.contains("helpdesk"),
        "{t}"
    );
    assert!(t.contains("<from env KMPROXY_TEST_AGENT_PW>"), "{t}");
    assert!(
        !t.contains("Password1") && !t.contains("apipass1"),
        "secret leaked:\n{t}"
    );
}

#[tokio::test]
async fn check_login_logs_every_principal_in_and_reports_each() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &sim.base_url());
    let run = |pw: &'static str| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_kmproxy"))
                .args(["--config", &path, "check", "--login"])
                .env("KMPROXY_TEST_AGENT_PW", pw)
                .env("RUST_LOG", "trace")
                .output()
                .unwrap()
        })
    };
    let o = run("Password1").await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The "logging in:" section: one line per principal, each `name  outcome`.
    let login_line = |t: &str, name: &str| -> String {
        t.lines()
            .skip_while(|l| !l.starts_with("logging in:"))
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no login line for {name} in {t}"))
            .to_owned()
    };
    let t = text(&o);
    assert!(login_line(&t, "public").trim_end().ends_with(" ok"), "{t}");
    assert!(login_line(&t, "agent").trim_end().ends_with(" ok"), "{t}");
    assert_eq!(
        sim.sim.logins(
            kmproxy::sim::LoginKind::Integration,
            None,
            kmproxy::sim::LoginOutcome::Ok
        ),
        1
    );
    assert_eq!(
        sim.sim.logins(
            kmproxy::sim::LoginKind::Account,
            Some("okcsuser"),
            kmproxy::sim::LoginOutcome::Ok
        ),
        1
    );

    let o = run("wrong-password").await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    let agent = login_line(&t, "agent");
    assert!(agent.contains("FAILED") && agent.contains("rejected"), "{t}");
    assert!(login_line(&t, "public").trim_end().ends_with(" ok"), "{t}");
    // Nothing secret in the output, even at trace level.
    for secret in sim
        .sim
        .issued_tokens()
        .iter()
        .map(String::as_str)
        .chain(["Password1", "apipass1", "wrong-password"])
    {
        assert!(!t.contains(secret), "leaked {secret}");
    }
}

/// The write end of a pipe whose reader has gone: `true` held the read
/// end and has exited, so a write to it fails with `EPIPE`, whenever it
/// comes (as `kmproxy check | head -1` meets once `head` has its line).
fn pipe_without_reader() -> Stdio {
    let mut reader = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
    let writer = reader.stdin.take().unwrap();
    reader.wait().unwrap();
    Stdio::from(writer)
}

#[test]
fn output_into_a_pipe_whose_reader_has_gone_ends_the_command_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "http://127.0.0.1:9");
    let check = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
        .args(["--config", &path, "check"])
        .env("KMPROXY_TEST_AGENT_PW", "Password1")
        .stdout(pipe_without_reader())
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(!text(&check).contains("panicked"), "{}", text(&check));
    // A bad config still exits 2, its message on stderr whole.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"nowhere\"\n").unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
        .args(["--config", &bad.to_string_lossy(), "check"])
        .stdout(pipe_without_reader())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("server.listen"), "{}", text(&refused));
    // hash-key too.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(pipe_without_reader())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"test\n").unwrap();
    let hashed = child.wait_with_output().unwrap();
    assert_eq!(hashed.status.code(), Some(0), "{}", text(&hashed));
    assert!(!text(&hashed).contains("panicked"), "{}", text(&hashed));
}

#[test]
fn hash_key_prints_the_sha256_of_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"test\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    // sha256("test"), the trailing newline is not part of the key
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["check", "--help"],
        vec!["demo", "--help"],
        vec!["simulate", "--help"],
        vec!["hash-key", "--help"],
    ] {
        let o = kmproxy(&args);
        assert!(o.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage: kmproxy"),
            "{args:?}"
        );
    }
}

#[test]
fn example_config_is_valid() {
    let o = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/kmproxy.example.toml"),
            "check",
        ])
        .env("KM_API_PASSWORD", "x")
        .env("KM_AGENT_PASSWORD", "y")
        .env("KM_WEB_PASSWORD", "z")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
