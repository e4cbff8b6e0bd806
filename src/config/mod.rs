//! The validated configuration: the typed model every other module reads,
//! and the entry points that load it.
//!
//! Loading runs in two passes. Each section is deserialised on its own (so a
//! bad type in one section does not hide problems in another), collecting
//! every unknown key on the way; then the values are checked and resolved
//! (durations, sizes, secrets, references between principals and callers).
//! Every problem is reported at once as `file: key: problem`.
//!
//! # Layout
//!
//! - this file: the model ([`Config`] and its sections), [`Config::load`],
//!   [`Config::parse`], [`ConfigError`];
//! - `raw`: the file as serde reads it, and the problems found on the way;
//! - `values`: the value parsers (addresses, durations, sizes, URLs, secrets);
//! - `build`: raw sections → typed sections, one `build_*` per section;
//! - `cache`: the `[cache]` model (fleet mode) and its URL and key parsers;
//! - [`sample`]: a config written in code, for tests and examples.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;

use crate::secret::Secret;

mod build;
mod cache;
mod raw;
pub mod sample;
mod values;

pub use cache::{CacheConfig, EncryptionKey, RedisUrl};
pub use values::{hash_key, parse_size};

/// Index of a principal in [`Config::principals`].
pub type PrincipalId = usize;

/// Fields a caller or `kmauthtoken_extra` may never set: kmproxy owns them.
pub const RESERVED_KMAUTHTOKEN_FIELDS: &[&str] = &["siteName", "integrationUserToken", "userToken"];

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (for messages and reloads).
    pub path: PathBuf,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub api_user: ApiUser,
    pub tokens: TokensConfig,
    pub principals: Vec<Principal>,
    pub callers: Vec<Caller>,
    /// `[cache]`: fleet mode's shared store; `None` = this replica alone.
    pub cache: Option<CacheConfig>,
}

/// `[server]`: the listeners and the caller-facing limits.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Data plane address.
    pub listen: SocketAddr,
    /// Admin address (health, readiness, metrics, status); `None` = disabled.
    pub admin_listen: Option<SocketAddr>,
    /// Largest request body accepted (and buffered for a replay).
    pub max_body: usize,
    /// Header carrying the caller key.
    pub caller_key_header: HeaderName,
    /// Principal for calls without a caller key; `None` = such calls get 401.
    pub default_principal: Option<PrincipalId>,
    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish.
    pub drain_timeout: Duration,
    /// A request head must arrive within this long of a connection being
    /// ready for one (slow clients; also the keep-alive idle timeout).
    pub header_read_timeout: Duration,
    /// Open client connections at most (accepting pauses at the cap).
    pub max_connections: usize,
    /// Calls being handled at once at most; past it, calls wait.
    pub max_in_flight: usize,
    /// How long a call past `max_in_flight` waits for a slot before it
    /// gets 503; zero refuses at once.
    pub queue_timeout: Duration,
    /// A request body must have arrived whole within this long after its
    /// head, else the call ends with 408.
    pub body_read_timeout: Duration,
    /// Request-body bytes held at once across all calls; past it, 503.
    pub max_buffered: usize,
    /// `Host` names accepted besides loopback names and IP literals (the
    /// DNS-rebinding guard), lower-cased.
    pub allowed_hosts: Vec<String>,
    /// When set, admin POSTs need `Authorization: Bearer <admin_token>`.
    pub admin_token: Option<Secret>,
    /// Whether kmproxy answers an unmodified client's own login calls with
    /// placeholder tokens, or refuses them (403).
    pub client_logins: ClientLogins,
}

/// `server.client_logins`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientLogins {
    /// 403, like every `/auth/` path (the default).
    #[default]
    Refuse,
    /// Placeholder tokens, nothing sent upstream.
    Answer,
}

/// `[upstream]`: where Knowledge Advanced lives and how to talk to it.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Serves `/km/api/`; scheme + authority (+ optional path prefix), no trailing slash.
    pub base_url: String,
    /// Serves `/srt/api/`; defaults to `base_url`.
    pub search_base_url: String,
    pub site_name: String,
    /// Default `localeId`.
    pub locale: String,
    /// Version segment used for the login calls.
    pub api_version: String,
    pub connect_timeout: Duration,
    /// Deadline for an upstream exchange up to the response head, and the
    /// longest an answer's body may then stall between two pieces.
    pub timeout: Duration,
    /// Extra PEM trust roots.
    pub ca_file: Option<PathBuf>,
    /// Fields added to every `kmauthtoken` (never the reserved ones).
    pub kmauthtoken_extra: Vec<(String, String)>,
    /// Upstream URLs in `Location`, `Content-Location` and JSON answers
    /// point back at kmproxy.
    pub rewrite_links: bool,
}

/// `[api_user]`: the Knowledge Advanced API user behind the integration token.
#[derive(Clone, Debug)]
pub struct ApiUser {
    pub login: String,
    pub password: Secret,
}

/// `[tokens]`: token lifetime and renewal policy.
#[derive(Clone, Debug)]
pub struct TokensConfig {
    /// How long the upstream honours a token.
    pub lifetime: Duration,
    /// Renew this long before `lifetime` ends; zero = renew only on demand.
    pub refresh_before: Duration,
    /// `errorCode` prefixes that mean "log in again".
    pub session_error_codes: Vec<String>,
    /// At most one session-error re-login per identity in this interval.
    pub min_relogin_interval: Duration,
}

/// `[[principals]]`: an identity whose tokens kmproxy holds.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub kind: PrincipalKind,
}

/// What a principal sends upstream.
#[derive(Clone, Debug)]
pub enum PrincipalKind {
    /// Integration token only.
    Anonymous,
    /// A user token from a login with `userExternalType` ACCOUNT or CONTACT.
    User {
        external_type: ExternalType,
        user: String,
        password: Secret,
    },
    /// The caller's own `Authorization: Bearer` plus the integration token.
    Bearer,
}

/// `userExternalType` of a user login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalType {
    /// Console user (`kind = "account"`).
    Account,
    /// Web user (`kind = "contact"`).
    Contact,
}

impl ExternalType {
    /// The wire value (`userExternalType`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalType::Account => "ACCOUNT",
            ExternalType::Contact => "CONTACT",
        }
    }

    /// The principal `kind` in the config file (also shown by `check` and `/status`).
    pub fn kind_name(self) -> &'static str {
        match self {
            ExternalType::Account => "account",
            ExternalType::Contact => "contact",
        }
    }

    /// The user kind a config `kind` names, if it names one.
    pub fn from_kind_name(kind: &str) -> Option<ExternalType> {
        [ExternalType::Account, ExternalType::Contact]
            .into_iter()
            .find(|t| t.kind_name() == kind)
    }
}

/// `[[callers]]`: an internal app and the principal its key maps to.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    /// sha256 of the key the app sends.
    pub key_sha256: [u8; 32],
    pub principal: PrincipalId,
    /// Principals it may switch to with `x-kmproxy-act-as`.
    pub act_as: Vec<PrincipalId>,
    /// Whether kmproxy starts and keeps a `knowledgeInteractionId` per
    /// end-user session the caller names (`interactions = "managed"`).
    pub interactions: Interactions,
}

/// `callers[].interactions`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Interactions {
    /// The caller's own `kmauthtoken` fields only (the default).
    #[default]
    Unmanaged,
    /// One `startInteraction` per (caller, principal, `x-kmproxy-session`).
    Managed,
}

/// Every problem found in a config file.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<(String, String)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for (key, problem) in &self.problems {
            writeln!(f, "  {}: {key}: {problem}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            problems: vec![("(file)".into(), format!("cannot read: {e}"))],
        })?;
        Self::parse(&text, path)
    }

    /// Validates config text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let error = |problems| ConfigError {
            path: path.to_owned(),
            problems,
        };
        let mut p = raw::Problems::default();
        let raw = raw::read(text, &mut p).map_err(|syntax| error(vec![("(syntax)".into(), syntax)]))?;
        let config = build::build(raw, &mut p, path);
        if p.is_empty() {
            Ok(config)
        } else {
            Err(error(p.into_vec()))
        }
    }

    /// The principal with this name.
    pub fn principal_id(&self, name: &str) -> Option<PrincipalId> {
        self.principals.iter().position(|p| p.name == name)
    }

    /// The keys that differ in `new` but take effect only at the next
    /// restart: the listeners are bound, and the accept loop reads its
    /// settings, once.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let cache_changed = match (&self.cache, &new.cache) {
            (Some(a), Some(b)) => !a.same_store(b),
            (None, None) => false,
            _ => true,
        };
        let (old, new) = (&self.server, &new.server);
        [
            // The fleet's store is built once per process.
            ("cache", cache_changed),
            ("server.listen", old.listen != new.listen),
            ("server.admin_listen", old.admin_listen != new.admin_listen),
            // Read once by the accept loop.
            (
                "server.header_read_timeout",
                old.header_read_timeout != new.header_read_timeout,
            ),
            ("server.max_connections", old.max_connections != new.max_connections),
            ("server.drain_timeout", old.drain_timeout != new.drain_timeout),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::sample::ConfigToml;
    use super::*;

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let bad = r#"
            [server]
            listen = "nowhere"
            max_body = "lots"
            colour = "blue"
            [upstream]
            base_url = "ftp://x"
            site_name = "S"
            timeout = "soon"
            kmauthtoken_extra = { userToken = "x" }
            [api_user]
            login = "a"
            password = { env = "KMPROXY_SURELY_UNSET_VAR" }
            [[principals]]
            name = "p"
            kind = "wizard"
            [[callers]]
            name = "c"
            key_sha256 = "zz"
            principal = "ghost"
        "#;
        let e = Config::parse(bad, Path::new("bad.toml")).expect_err("invalid");
        let keys: Vec<&str> = e.problems.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "server.listen",
            "server.max_body",
            "server.colour",
            "upstream.base_url",
            "upstream.timeout",
            "upstream.kmauthtoken_extra.userToken",
            "api_user.password",
            "principals[0].kind",
            "callers[0].key_sha256",
            "callers[0].principal",
        ] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
        let text = e.to_string();
        assert!(text.contains("bad.toml: server.colour: unknown key"), "{text}");
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let e = Config::parse("[upstream]\nbase_url = \n", Path::new("k.toml")).expect_err("invalid");
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].0, "(syntax)", "{e}");
        assert!(e.problems[0].1.ends_with("(line 2)"), "{e}");
    }

    #[test]
    fn a_changed_cache_needs_a_restart() {
        let key = "ab".repeat(32);
        let with = |url: &str| {
            ConfigToml::new("http://127.0.0.1:7002")
                .cache("redis_url", url)
                .cache("encryption_key", key.as_str())
                .parse()
                .expect("valid")
        };
        let plain = ConfigToml::new("http://127.0.0.1:7002").parse().expect("valid");
        let a = with("redis://127.0.0.1:6390");
        assert!(a.restart_needed(&with("redis://127.0.0.1:6390")).is_empty());
        assert_eq!(a.restart_needed(&with("redis://127.0.0.1:6391")), vec!["cache"]);
        assert_eq!(plain.restart_needed(&a), vec!["cache"]);
        assert_eq!(a.restart_needed(&plain), vec!["cache"]);
    }

    #[test]
    fn restart_needed_names_the_keys_a_reload_cannot_apply() {
        let config =
            |f: fn(ConfigToml) -> ConfigToml| f(ConfigToml::new("http://127.0.0.1:7002")).parse().expect("valid");
        let old = config(|t| t.server("listen", "127.0.0.1:8080"));
        assert!(old.restart_needed(&old.clone()).is_empty());
        // Settings a reload applies are not named.
        let live = config(|t| {
            t.server("listen", "127.0.0.1:8080")
                .server("max_body", "1KiB")
                .server("max_in_flight", 3)
                .server("queue_timeout", "1s")
                .upstream("timeout", "1s")
                .tokens("lifetime", "1h")
        });
        assert!(old.restart_needed(&live).is_empty());
        let moved = config(|t| {
            t.server("listen", "127.0.0.1:8081")
                .server("admin_listen", "off")
                .server("header_read_timeout", "5s")
                .server("max_connections", 7)
                .server("drain_timeout", "1s")
        });
        assert_eq!(
            old.restart_needed(&moved),
            [
                "server.listen",
                "server.admin_listen",
                "server.header_read_timeout",
                "server.max_connections",
                "server.drain_timeout",
            ]
        );
        assert_eq!(moved.restart_needed(&old).len(), 5, "either way round");
    }

    #[test]
    fn external_type_names() {
        for t in [ExternalType::Account, ExternalType::Contact] {
            assert_eq!(ExternalType::from_kind_name(t.kind_name()), Some(t));
            assert_eq!(t.as_str(), t.kind_name().to_uppercase());
        }
        for not_a_user in ["anonymous", "bearer", "ACCOUNT", ""] {
            assert_eq!(ExternalType::from_kind_name(not_a_user), None);
        }
    }
}
