//! The TOML configuration: schema, defaults and validation.
//!
//! Loading runs in two passes. Each section is deserialised on its own (so a
//! bad type in one section does not hide problems in another), collecting
//! every unknown key on the way; then the values are checked and resolved
//! (durations, sizes, secrets, references between principals and callers).
//! Every problem is reported at once as `file: key: problem`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::secret::Secret;

pub mod sample;

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

/// Every section, typed: read in one pass over the text when the file is
/// well-formed, else section by section so every problem is found.
#[derive(Deserialize, Default)]
struct RawFile {
    server: Option<RawServer>,
    upstream: Option<RawUpstream>,
    api_user: Option<RawApiUser>,
    tokens: Option<RawTokens>,
    #[serde(default)]
    principals: Vec<RawPrincipal>,
    #[serde(default)]
    callers: Vec<RawCaller>,
}

/// The sections, untyped (the slow, thorough path).
#[derive(Deserialize, Default)]
struct RawSections {
    server: Option<toml::Value>,
    upstream: Option<toml::Value>,
    api_user: Option<toml::Value>,
    tokens: Option<toml::Value>,
    #[serde(default)]
    principals: Vec<toml::Value>,
    #[serde(default)]
    callers: Vec<toml::Value>,
}

impl RawFile {
    /// One typed pass over the text; `None` if anything is off (a syntax
    /// error, a wrong type, an unknown key), for the thorough path to explain.
    /// This keeps a large file (thousands of principals) from building a
    /// tree of values first.
    fn fast(text: &str) -> Option<RawFile> {
        let de = toml::de::Deserializer::parse(text).ok()?;
        let mut unknown = false;
        let raw: RawFile = serde_ignored::deserialize(de, |_| unknown = true).ok()?;
        (!unknown).then_some(raw)
    }

    /// Section by section, recording every unknown key and type error.
    fn thorough(table: toml::Table, p: &mut Problems) -> RawFile {
        let s: RawSections = p.section("", Some(toml::Value::Table(table)));
        // Keys at the top level come back as ".name"; tidy them.
        for (key, _) in p.0.iter_mut() {
            if let Some(stripped) = key.strip_prefix('.') {
                *key = stripped.to_owned();
            }
        }
        RawFile {
            server: s.server.map(|v| p.section("server", Some(v))),
            upstream: s.upstream.map(|v| p.section("upstream", Some(v))),
            api_user: s.api_user.map(|v| p.section("api_user", Some(v))),
            tokens: s.tokens.map(|v| p.section("tokens", Some(v))),
            principals: (s.principals.into_iter().enumerate())
                .map(|(i, v)| p.section(&format!("principals[{i}]"), Some(v)))
                .collect(),
            callers: (s.callers.into_iter().enumerate())
                .map(|(i, v)| p.section(&format!("callers[{i}]"), Some(v)))
                .collect(),
        }
    }
}

#[derive(Deserialize, Default)]
struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    max_body: Option<toml::Value>,
    caller_key_header: Option<String>,
    default_principal: Option<String>,
    drain_timeout: Option<String>,
    header_read_timeout: Option<String>,
    max_connections: Option<usize>,
    max_in_flight: Option<usize>,
    queue_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawUpstream {
    base_url: Option<String>,
    search_base_url: Option<String>,
    site_name: Option<String>,
    locale: Option<String>,
    api_version: Option<String>,
    connect_timeout: Option<String>,
    timeout: Option<String>,
    ca_file: Option<PathBuf>,
    kmauthtoken_extra: Option<toml::Table>,
}

#[derive(Deserialize, Default)]
struct RawApiUser {
    login: Option<String>,
    password: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
struct RawTokens {
    lifetime: Option<String>,
    refresh_before: Option<String>,
    session_error_codes: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RawPrincipal {
    name: Option<String>,
    kind: Option<String>,
    user: Option<String>,
    password: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
struct RawCaller {
    name: Option<String>,
    key_sha256: Option<String>,
    principal: Option<String>,
    act_as: Option<Vec<String>>,
}

/// Collects problems as `(key, message)`.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, msg: impl Into<String>) {
        self.0.push((key.into(), msg.into()));
    }

    /// Deserialises one section, recording unknown keys and type errors.
    fn section<T: DeserializeOwned + Default>(&mut self, key: &str, value: Option<toml::Value>) -> T {
        let Some(value) = value else {
            return T::default();
        };
        let mut unknown = Vec::new();
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = serde_ignored::Deserializer::new(value, &mut record);
        let out = match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => v,
            Err(e) => {
                let at = e.path().to_string();
                let full = if at == "." {
                    key.to_owned()
                } else {
                    format!("{key}.{at}")
                };
                self.add(full, e.into_inner().to_string());
                T::default()
            }
        };
        for path in unknown {
            self.add(format!("{key}.{path}"), "unknown key");
        }
        out
    }
}

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
        let mut p = Problems::default();
        let raw = match RawFile::fast(text) {
            Some(raw) => raw,
            None => match text.parse::<toml::Table>() {
                Ok(table) => RawFile::thorough(table, &mut p),
                Err(e) => {
                    return Err(ConfigError {
                        path: path.to_owned(),
                        problems: vec![("(syntax)".into(), e.message().to_owned() + &span_hint(text, e.span()))],
                    })
                }
            },
        };
        let config = build(raw, &mut p, path);
        if p.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                path: path.to_owned(),
                problems: p.0,
            })
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
        let (old, new) = (&self.server, &new.server);
        [
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

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!(" (line {line})")
}

fn build(raw: RawFile, p: &mut Problems, path: &Path) -> Config {
    if raw.upstream.is_none() {
        p.add("upstream", "missing section");
    }
    if raw.api_user.is_none() {
        p.add("api_user", "missing section");
    }
    let server = raw.server.unwrap_or_default();
    let upstream = raw.upstream.unwrap_or_default();
    let api_user = raw.api_user.unwrap_or_default();
    let tokens = raw.tokens.unwrap_or_default();

    let principals = build_principals(raw.principals, p);
    let ids: HashMap<&str, PrincipalId> = principals
        .iter()
        .enumerate()
        .map(|(i, pr)| (pr.name.as_str(), i))
        .collect();
    let lookup = |p: &mut Problems, key: String, name: &str| -> Option<PrincipalId> {
        let id = ids.get(name).copied();
        if id.is_none() {
            p.add(key, format!("no principal named `{name}`"));
        }
        id
    };

    let server = ServerConfig {
        listen: addr(p, "server.listen", server.listen.as_deref().unwrap_or("127.0.0.1:8080")),
        admin_listen: match server.admin_listen.as_deref().unwrap_or("127.0.0.1:9090") {
            "off" | "" => None,
            a => Some(addr(p, "server.admin_listen", a)),
        },
        max_body: server
            .max_body
            .map(|v| size(p, "server.max_body", &v))
            .unwrap_or(10 << 20),
        caller_key_header: {
            let h = server.caller_key_header.as_deref().unwrap_or("x-kmproxy-key");
            HeaderName::try_from(h).unwrap_or_else(|_| {
                p.add("server.caller_key_header", format!("`{h}` is not a valid header name"));
                HeaderName::from_static("x-kmproxy-key")
            })
        },
        default_principal: server
            .default_principal
            .as_deref()
            .and_then(|n| lookup(p, "server.default_principal".into(), n)),
        drain_timeout: duration(p, "server.drain_timeout", server.drain_timeout.as_deref(), "30s"),
        header_read_timeout: duration(
            p,
            "server.header_read_timeout",
            server.header_read_timeout.as_deref(),
            "20s",
        ),
        max_connections: positive(p, "server.max_connections", server.max_connections, 1024),
        max_in_flight: positive(p, "server.max_in_flight", server.max_in_flight, 512),
        queue_timeout: duration(p, "server.queue_timeout", server.queue_timeout.as_deref(), "5s"),
    };
    if server.header_read_timeout.is_zero() {
        p.add("server.header_read_timeout", "must be greater than zero");
    }

    let base_url = url(p, "upstream.base_url", upstream.base_url.as_deref());
    let upstream = UpstreamConfig {
        search_base_url: match upstream.search_base_url.as_deref() {
            Some(u) => url(p, "upstream.search_base_url", Some(u)),
            None => base_url.clone(),
        },
        base_url,
        site_name: required(p, "upstream.site_name", upstream.site_name),
        locale: upstream.locale.unwrap_or_else(|| "en_US".into()),
        api_version: upstream.api_version.unwrap_or_else(|| "latest".into()),
        connect_timeout: duration(p, "upstream.connect_timeout", upstream.connect_timeout.as_deref(), "5s"),
        timeout: duration(p, "upstream.timeout", upstream.timeout.as_deref(), "60s"),
        ca_file: upstream.ca_file,
        kmauthtoken_extra: extra_fields(p, upstream.kmauthtoken_extra.unwrap_or_default()),
    };
    if let Some(ca) = &upstream.ca_file {
        if !ca.is_file() {
            p.add("upstream.ca_file", format!("`{}` is not a readable file", ca.display()));
        }
    }

    let api_user = ApiUser {
        login: required(p, "api_user.login", api_user.login),
        password: secret(p, "api_user.password", api_user.password.as_ref()),
    };

    let tokens = TokensConfig {
        lifetime: duration(p, "tokens.lifetime", tokens.lifetime.as_deref(), "24h"),
        refresh_before: duration(p, "tokens.refresh_before", tokens.refresh_before.as_deref(), "10m"),
        session_error_codes: tokens
            .session_error_codes
            .unwrap_or_else(|| vec!["OK-SESSION".into(), "OK-GEN0003".into()]),
    };
    if tokens.lifetime.is_zero() {
        p.add("tokens.lifetime", "must be greater than zero");
    } else if tokens.refresh_before >= tokens.lifetime {
        p.add("tokens.refresh_before", "must be shorter than tokens.lifetime");
    }
    if tokens.session_error_codes.iter().any(|c| c.is_empty()) {
        p.add("tokens.session_error_codes", "an empty prefix would match every error");
    }

    let mut callers: Vec<Caller> = Vec::new();
    let mut caller_names = std::collections::HashSet::new();
    for (i, c) in raw.callers.into_iter().enumerate() {
        let key = format!("callers[{i}]");
        let name = required(p, &format!("{key}.name"), c.name);
        if !name.is_empty() && !caller_names.insert(name.clone()) {
            p.add(format!("{key}.name"), format!("duplicate caller `{name}`"));
        }
        let key_sha256 = match c.key_sha256.as_deref().map(decode_sha256) {
            Some(Ok(k)) => k,
            Some(Err(e)) => {
                p.add(format!("{key}.key_sha256"), e);
                [0; 32]
            }
            None => {
                p.add(format!("{key}.key_sha256"), "missing (run `kmproxy hash-key`)");
                [0; 32]
            }
        };
        if callers
            .iter()
            .any(|o| o.key_sha256 == key_sha256 && key_sha256 != [0; 32])
        {
            p.add(format!("{key}.key_sha256"), "another caller has the same key");
        }
        let principal = match c.principal.as_deref() {
            Some(n) => lookup(p, format!("{key}.principal"), n),
            None => {
                p.add(format!("{key}.principal"), "missing");
                None
            }
        };
        let act_as = c
            .act_as
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(j, n)| lookup(p, format!("{key}.act_as[{j}]"), n))
            .collect();
        callers.push(Caller {
            name,
            key_sha256,
            principal: principal.unwrap_or(0),
            act_as,
        });
    }

    Config {
        path: path.to_owned(),
        server,
        upstream,
        api_user,
        tokens,
        principals,
        callers,
    }
}

fn build_principals(raw: Vec<RawPrincipal>, p: &mut Problems) -> Vec<Principal> {
    let mut out: Vec<Principal> = Vec::with_capacity(raw.len());
    let mut names = std::collections::HashSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("principals[{i}]");
        let name = required(p, &format!("{key}.name"), r.name);
        if !name.is_empty() && !names.insert(name.clone()) {
            p.add(format!("{key}.name"), format!("duplicate principal `{name}`"));
        }
        let mut user_kind = |t| -> PrincipalKind {
            PrincipalKind::User {
                external_type: t,
                user: required(p, &format!("{key}.user"), r.user.clone()),
                password: secret(p, &format!("{key}.password"), r.password.as_ref()),
            }
        };
        let kind = match r.kind.as_deref() {
            Some(k @ ("anonymous" | "bearer")) => {
                for (field, set) in [("user", r.user.is_some()), ("password", r.password.is_some())] {
                    if set {
                        p.add(format!("{key}.{field}"), format!("not used by kind `{k}`"));
                    }
                }
                if k == "bearer" {
                    PrincipalKind::Bearer
                } else {
                    PrincipalKind::Anonymous
                }
            }
            Some(other) => match ExternalType::from_kind_name(other) {
                Some(t) => user_kind(t),
                None => {
                    p.add(
                        format!("{key}.kind"),
                        format!("`{other}` is not one of anonymous, account, contact, bearer"),
                    );
                    PrincipalKind::Anonymous
                }
            },
            None => {
                p.add(format!("{key}.kind"), "missing (anonymous, account, contact or bearer)");
                PrincipalKind::Anonymous
            }
        };
        out.push(Principal { name, kind });
    }
    out
}

fn positive(p: &mut Problems, key: &str, v: Option<usize>, default: usize) -> usize {
    match v {
        Some(0) => {
            p.add(key, "must be at least 1");
            default
        }
        Some(n) => n,
        None => default,
    }
}

fn required(p: &mut Problems, key: &str, v: Option<String>) -> String {
    match v {
        Some(s) if !s.is_empty() => s,
        Some(_) => {
            p.add(key, "must not be empty");
            String::new()
        }
        None => {
            p.add(key, "missing");
            String::new()
        }
    }
}

fn secret(p: &mut Problems, key: &str, v: Option<&toml::Value>) -> Secret {
    match v.map(Secret::from_toml) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            p.add(key, e);
            Secret::literal("-")
        }
        None => {
            p.add(key, "missing");
            Secret::literal("-")
        }
    }
}

fn addr(p: &mut Problems, key: &str, v: &str) -> SocketAddr {
    v.parse().unwrap_or_else(|_| {
        p.add(key, format!("`{v}` is not an address like 127.0.0.1:8080"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn duration(p: &mut Problems, key: &str, v: Option<&str>, default: &str) -> Duration {
    let v = v.unwrap_or(default);
    humantime::parse_duration(v).unwrap_or_else(|e| {
        p.add(key, format!("`{v}` is not a duration like 90s, 10m or 24h ({e})"));
        Duration::ZERO
    })
}

/// Parses `1048576`, `"512KiB"`, `"10MiB"`, `"1GiB"`, `"10MB"`.
pub fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn size(p: &mut Problems, key: &str, v: &toml::Value) -> usize {
    let parsed = match v {
        toml::Value::Integer(i) => usize::try_from(*i).ok(),
        toml::Value::String(s) => parse_size(s),
        _ => None,
    };
    parsed.unwrap_or_else(|| {
        p.add(key, format!("`{v}` is not a size like 10MiB, 512KiB or 1048576"));
        0
    })
}

fn url(p: &mut Problems, key: &str, v: Option<&str>) -> String {
    let Some(v) = v else {
        p.add(key, "missing");
        return String::new();
    };
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if u.query().is_some() || u.fragment().is_some() {
                p.add(key, "must not have a query or fragment");
            }
            v.trim_end_matches('/').to_owned()
        }
        Ok(_) => {
            p.add(key, format!("`{v}` must be an http:// or https:// URL with a host"));
            String::new()
        }
        Err(e) => {
            p.add(key, format!("`{v}` is not a URL ({e})"));
            String::new()
        }
    }
}

fn extra_fields(p: &mut Problems, table: toml::Table) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in table {
        let key = format!("upstream.kmauthtoken_extra.{k}");
        if RESERVED_KMAUTHTOKEN_FIELDS.contains(&k.as_str()) {
            p.add(key, "is set by kmproxy and cannot be configured");
        } else if let toml::Value::String(s) = v {
            out.push((k, s));
        } else {
            p.add(key, "must be a string");
        }
    }
    out
}

fn decode_sha256(v: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.trim(), &mut out)
        .map_err(|_| "must be 64 hex characters (the sha256 of the key; see `kmproxy hash-key`)".to_owned())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::sample::ConfigToml;
    use super::*;

    fn valid() -> ConfigToml {
        ConfigToml::new("http://127.0.0.1:7002/")
            .principal("public", "anonymous")
            .user_principal("agent", "account", "okcsuser", "Password1")
            .caller("helpdesk", "test", "agent", &["public"])
    }

    #[test]
    fn good_config_gets_defaults() {
        let c = valid().parse().expect("valid");
        assert_eq!(c.upstream.base_url, "http://127.0.0.1:7002");
        assert_eq!(c.upstream.search_base_url, c.upstream.base_url);
        assert_eq!(c.server.max_body, 10 << 20);
        assert_eq!(c.tokens.lifetime, Duration::from_secs(86_400));
        assert_eq!(c.callers[0].principal, 1);
        assert_eq!(c.callers[0].act_as, vec![0]);
        assert!(!format!("{c:?}").contains("Password1"));
    }

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
    fn type_errors_name_the_key() {
        let text = valid().upstream("site_name", 5).to_string();
        let e = Config::parse(&text, Path::new("k.toml")).expect_err("invalid");
        assert_eq!(e.problems[0].0, "upstream.site_name", "{e}");
        let text = valid().server("queue_timeout", "soon").to_string();
        let e = Config::parse(&text, Path::new("k.toml")).expect_err("invalid");
        assert_eq!(e.problems[0].0, "server.queue_timeout", "{e}");
        let text = valid().server("queue_timeout", "250ms").to_string();
        let c = Config::parse(&text, Path::new("k.toml")).expect("valid");
        assert_eq!(c.server.queue_timeout, std::time::Duration::from_millis(250));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("42"), Some(42));
        assert_eq!(parse_size("1 MB"), Some(1_000_000));
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("3 parsecs"), None);
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
}
