//! The shipped fleet configs stay valid: `config/fleet.example.toml` as
//! `kmproxy check` reads it, and the compose replicas' config with its
//! secrets where the repository keeps the demo ones.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use kmproxy::config::Config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_fleet_example_config_is_valid() {
    let o = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
        .args(["--config", &format!("{ROOT}/config/fleet.example.toml"), "check"])
        .env("KM_API_PASSWORD", "x")
        .env("KM_AGENT_PASSWORD", "y")
        .env("KMPROXY_REDIS_PASSWORD", "z")
        .env("KMPROXY_CACHE_KEY", "ab".repeat(32))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{text}");
}

#[test]
fn the_compose_replicas_config_is_valid_with_the_demo_secrets() {
    let path = format!("{ROOT}/deploy/compose/kmproxy.toml");
    let secrets = format!("{ROOT}/deploy/compose/secrets/");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("/run/secrets/", &secrets);
    let config = Config::parse(&text, Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
    let cache = config.cache.expect("fleet mode: [cache]");
    assert_eq!(cache.redis_url.to_string(), "redis://valkey:6379/0");
    assert_eq!(cache.username.as_deref(), Some("kmproxy"));
    assert_eq!(
        cache.key_prefix, "kmproxy:",
        "the Valkey ACL user may touch only kmproxy:*"
    );
}
