//! Raw sections → the typed [`Config`]: one `build_*` per section, each
//! applying the defaults and the checks of its section, and [`build`],
//! which runs them in file order (principals first, since the server's
//! `default_principal` and the callers name them).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use http::header::HeaderName;

use super::cache::{encryption_key, redis_url};
use super::raw::{Problems, RawApiUser, RawCache, RawCaller, RawFile, RawPrincipal, RawServer, RawTokens, RawUpstream};
use super::values::{
    addr, allowed_hosts, count, decode_sha256, duration, extra_fields, required, secret, size, try_secret, url, Span,
};
use super::{
    ApiUser, CacheConfig, Caller, ClientLogins, Config, ExternalType, Interactions, Principal, PrincipalId,
    PrincipalKind, ServerConfig, TokensConfig, UpstreamConfig,
};

/// The whole config; every problem goes to `p`.
pub(super) fn build(raw: RawFile, p: &mut Problems, path: &Path) -> Config {
    if raw.upstream.is_none() {
        p.add("upstream", "missing section");
    }
    if raw.api_user.is_none() {
        p.add("api_user", "missing section");
    }
    let principals = build_principals(raw.principals, p);
    let names = Names::of(&principals);
    let server = build_server(raw.server.unwrap_or_default(), &names, p);
    let upstream = build_upstream(raw.upstream.unwrap_or_default(), p);
    let api_user = build_api_user(raw.api_user.unwrap_or_default(), p);
    let tokens = build_tokens(raw.tokens.unwrap_or_default(), p);
    let callers = build_callers(raw.callers, &names, p);
    let cache = raw.cache.map(|c| build_cache(c, p));
    Config {
        path: path.to_owned(),
        server,
        upstream,
        api_user,
        tokens,
        principals,
        callers,
        cache,
    }
}

/// Principal names → ids, to resolve the references to them.
struct Names<'a>(HashMap<&'a str, PrincipalId>);

impl<'a> Names<'a> {
    fn of(principals: &'a [Principal]) -> Self {
        Names(
            principals
                .iter()
                .enumerate()
                .map(|(i, pr)| (pr.name.as_str(), i))
                .collect(),
        )
    }

    /// The principal `name`, or a problem at `key`.
    fn lookup(&self, p: &mut Problems, key: String, name: &str) -> Option<PrincipalId> {
        let id = self.0.get(name).copied();
        if id.is_none() {
            p.add(key, format!("no principal named `{name}`"));
        }
        id
    }
}

/// The bounds of the counts, sizes and durations: what `serve` and a
/// reload are known to run with (tokio's semaphores, `Instant` arithmetic,
/// memory), with room to spare for any real deployment.
mod bounds {
    use std::time::Duration;

    use super::Span;

    const HOUR: Duration = Duration::from_secs(3600);
    /// `server.max_connections`, `server.max_in_flight`.
    pub const COUNT: usize = 1_000_000;
    /// `server.max_body`: one body is held whole for a replay.
    pub const MAX_BODY: usize = 1 << 30;
    /// `server.max_buffered`.
    pub const MAX_BUFFERED: usize = 64 << 30;
    /// `server.header_read_timeout`, `server.body_read_timeout`: shorter
    /// than a second, an ordinary client on a busy host would not make it.
    pub const READ: Span = Span::between(Duration::from_secs(1), HOUR);
    /// `upstream.connect_timeout`, `upstream.timeout`.
    pub const WAIT: Span = Span::positive(HOUR);
    /// `server.drain_timeout`, `server.queue_timeout`,
    /// `tokens.min_relogin_interval`: zero means "not at all".
    pub const WAIT_OR_ZERO: Span = Span::up_to(HOUR);
    /// The longest `tokens.lifetime` (upstream grants 24 h).
    pub const LIFETIME_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
    /// `tokens.lifetime`; `tokens.refresh_before` must be shorter still.
    pub const LIFETIME: Span = Span::between(Duration::from_secs(60), LIFETIME_MAX);
}

fn build_server(server: RawServer, names: &Names<'_>, p: &mut Problems) -> ServerConfig {
    let out = ServerConfig {
        listen: addr(p, "server.listen", server.listen.as_deref().unwrap_or("127.0.0.1:8080")),
        admin_listen: match server.admin_listen.as_deref().unwrap_or("127.0.0.1:9090") {
            "off" | "" => None,
            a => Some(addr(p, "server.admin_listen", a)),
        },
        max_body: size(
            p,
            "server.max_body",
            server.max_body.as_ref(),
            10 << 20,
            bounds::MAX_BODY,
        ),
        caller_key_header: caller_key_header(p, server.caller_key_header.as_deref()),
        default_principal: server
            .default_principal
            .as_deref()
            .and_then(|n| names.lookup(p, "server.default_principal".into(), n)),
        drain_timeout: duration(
            p,
            "server.drain_timeout",
            server.drain_timeout.as_deref(),
            "30s",
            bounds::WAIT_OR_ZERO,
        ),
        header_read_timeout: duration(
            p,
            "server.header_read_timeout",
            server.header_read_timeout.as_deref(),
            "20s",
            bounds::READ,
        ),
        max_connections: count(p, "server.max_connections", server.max_connections, 1024, bounds::COUNT),
        max_in_flight: count(p, "server.max_in_flight", server.max_in_flight, 512, bounds::COUNT),
        queue_timeout: duration(
            p,
            "server.queue_timeout",
            server.queue_timeout.as_deref(),
            "5s",
            bounds::WAIT_OR_ZERO,
        ),
        body_read_timeout: duration(
            p,
            "server.body_read_timeout",
            server.body_read_timeout.as_deref(),
            "30s",
            bounds::READ,
        ),
        max_buffered: size(
            p,
            "server.max_buffered",
            server.max_buffered.as_ref(),
            256 << 20,
            bounds::MAX_BUFFERED,
        ),
        allowed_hosts: allowed_hosts(p, server.allowed_hosts.unwrap_or_default()),
        client_logins: match server.client_logins.as_deref() {
            None | Some("refuse") => ClientLogins::Refuse,
            Some("answer") => ClientLogins::Answer,
            Some(other) => {
                p.add(
                    "server.client_logins",
                    format!("`{other}` is not one of refuse, answer"),
                );
                ClientLogins::Refuse
            }
        },
        admin_token: server
            .admin_token
            .as_ref()
            .map(|v| secret(p, "server.admin_token", Some(v))),
    };
    if out.max_buffered < out.max_body {
        p.add("server.max_buffered", "must be at least server.max_body");
    }
    out
}

/// `server.caller_key_header`, default `x-kmproxy-key`.
fn caller_key_header(p: &mut Problems, v: Option<&str>) -> HeaderName {
    let h = v.unwrap_or("x-kmproxy-key");
    HeaderName::try_from(h).unwrap_or_else(|_| {
        p.add("server.caller_key_header", format!("`{h}` is not a valid header name"));
        HeaderName::from_static("x-kmproxy-key")
    })
}

fn build_upstream(upstream: RawUpstream, p: &mut Problems) -> UpstreamConfig {
    let base_url = url(p, "upstream.base_url", upstream.base_url.as_deref());
    let out = UpstreamConfig {
        search_base_url: match upstream.search_base_url.as_deref() {
            Some(u) => url(p, "upstream.search_base_url", Some(u)),
            None => base_url.clone(),
        },
        base_url,
        site_name: required(p, "upstream.site_name", upstream.site_name),
        locale: upstream.locale.unwrap_or_else(|| "en_US".into()),
        api_version: upstream.api_version.unwrap_or_else(|| "latest".into()),
        connect_timeout: duration(
            p,
            "upstream.connect_timeout",
            upstream.connect_timeout.as_deref(),
            "5s",
            bounds::WAIT,
        ),
        timeout: duration(p, "upstream.timeout", upstream.timeout.as_deref(), "60s", bounds::WAIT),
        ca_file: upstream.ca_file,
        kmauthtoken_extra: extra_fields(p, upstream.kmauthtoken_extra.unwrap_or_default()),
        rewrite_links: upstream.rewrite_links.unwrap_or(true),
    };
    if let Some(ca) = &out.ca_file {
        if !ca.is_file() {
            p.add("upstream.ca_file", format!("`{}` is not a readable file", ca.display()));
        }
    }
    out
}

fn build_api_user(api_user: RawApiUser, p: &mut Problems) -> ApiUser {
    ApiUser {
        login: required(p, "api_user.login", api_user.login),
        password: secret(p, "api_user.password", api_user.password.as_ref()),
    }
}

fn build_tokens(tokens: RawTokens, p: &mut Problems) -> TokensConfig {
    let out = TokensConfig {
        lifetime: duration(
            p,
            "tokens.lifetime",
            tokens.lifetime.as_deref(),
            "24h",
            bounds::LIFETIME,
        ),
        refresh_before: duration(
            p,
            "tokens.refresh_before",
            tokens.refresh_before.as_deref(),
            "10m",
            Span::up_to(bounds::LIFETIME_MAX),
        ),
        session_error_codes: tokens
            .session_error_codes
            .unwrap_or_else(|| vec!["OK-SESSION".into(), "OK-GEN0003".into()]),
        min_relogin_interval: duration(
            p,
            "tokens.min_relogin_interval",
            tokens.min_relogin_interval.as_deref(),
            "10s",
            bounds::WAIT_OR_ZERO,
        ),
    };
    if out.refresh_before >= out.lifetime {
        p.add("tokens.refresh_before", "must be shorter than tokens.lifetime");
    }
    if out.session_error_codes.iter().any(|c| c.is_empty()) {
        p.add("tokens.session_error_codes", "an empty prefix would match every error");
    }
    out
}

fn build_principals(raw: Vec<RawPrincipal>, p: &mut Problems) -> Vec<Principal> {
    let mut out: Vec<Principal> = Vec::with_capacity(raw.len());
    let mut names = HashSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("principals[{i}]");
        let name = required(p, &format!("{key}.name"), r.name);
        if !name.is_empty() && !names.insert(name.clone()) {
            p.add(format!("{key}.name"), format!("duplicate principal `{name}`"));
        }
        let kind = principal_kind(&key, r.kind.as_deref(), r.user, r.password.as_ref(), p);
        out.push(Principal { name, kind });
    }
    out
}

/// The `kind` of principal `key`, with the fields that kind needs.
fn principal_kind(
    key: &str,
    kind: Option<&str>,
    user: Option<String>,
    password: Option<&toml::Value>,
    p: &mut Problems,
) -> PrincipalKind {
    let Some(kind) = kind else {
        p.add(format!("{key}.kind"), "missing (anonymous, account, contact or bearer)");
        return PrincipalKind::Anonymous;
    };
    if let Some(external_type) = ExternalType::from_kind_name(kind) {
        return PrincipalKind::User {
            external_type,
            user: required(p, &format!("{key}.user"), user),
            password: secret(p, &format!("{key}.password"), password),
        };
    }
    match kind {
        "anonymous" | "bearer" => {
            for (field, set) in [("user", user.is_some()), ("password", password.is_some())] {
                if set {
                    p.add(format!("{key}.{field}"), format!("not used by kind `{kind}`"));
                }
            }
            if kind == "bearer" {
                PrincipalKind::Bearer
            } else {
                PrincipalKind::Anonymous
            }
        }
        other => {
            p.add(
                format!("{key}.kind"),
                format!("`{other}` is not one of anonymous, account, contact, bearer"),
            );
            PrincipalKind::Anonymous
        }
    }
}

fn build_callers(raw: Vec<RawCaller>, names: &Names<'_>, p: &mut Problems) -> Vec<Caller> {
    let mut callers: Vec<Caller> = Vec::with_capacity(raw.len());
    let mut caller_names = HashSet::new();
    for (i, c) in raw.into_iter().enumerate() {
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
            Some(n) => names.lookup(p, format!("{key}.principal"), n),
            None => {
                p.add(format!("{key}.principal"), "missing");
                None
            }
        };
        let act_as = (c.act_as.unwrap_or_default().iter().enumerate())
            .filter_map(|(j, n)| names.lookup(p, format!("{key}.act_as[{j}]"), n))
            .collect();
        callers.push(Caller {
            name,
            key_sha256,
            principal: principal.unwrap_or(0),
            act_as,
            interactions: interactions(c.interactions.as_deref(), &key, p),
        });
    }
    callers
}

/// `callers[i].interactions`: absent (unmanaged) or `"managed"`.
fn interactions(raw: Option<&str>, key: &str, p: &mut Problems) -> Interactions {
    match raw {
        None => Interactions::Unmanaged,
        Some("managed") => Interactions::Managed,
        Some(other) => {
            p.add(
                format!("{key}.interactions"),
                format!("`{other}` is not `managed` (leave the key out for no managed interactions)"),
            );
            Interactions::Unmanaged
        }
    }
}

/// `[cache]`: every key checked, the durations within bounds (a zero
/// timeout would make every command fail; a long one would let a slow
/// Redis hold up logins).
fn build_cache(cache: RawCache, p: &mut Problems) -> CacheConfig {
    let key = try_secret(p, "cache.encryption_key", cache.encryption_key.as_ref());
    let (connect, command) = (cache.connect_timeout.as_deref(), cache.command_timeout.as_deref());
    let out = CacheConfig {
        redis_url: redis_url(p, cache.redis_url.as_deref()),
        username: cache.username,
        password: cache.password.as_ref().map(|v| secret(p, "cache.password", Some(v))),
        encryption_key: encryption_key(p, key),
        key_prefix: cache.key_prefix.unwrap_or_else(|| "kmproxy:".into()),
        connect_timeout: cache_timeout(p, "cache.connect_timeout", connect, "1s", Duration::from_secs(60)),
        command_timeout: cache_timeout(p, "cache.command_timeout", command, "250ms", Duration::from_secs(10)),
    };
    if out
        .username
        .as_deref()
        .is_some_and(|u| u.is_empty() || u.contains(char::is_whitespace))
    {
        p.add("cache.username", "must be an ACL user name (not empty, no spaces)");
    }
    if out.key_prefix.is_empty() || out.key_prefix.len() > 64 || out.key_prefix.contains(char::is_whitespace) {
        p.add("cache.key_prefix", "must be 1 to 64 characters without spaces");
    }
    out
}

/// A `[cache]` timeout: more than zero and at most `max`.
fn cache_timeout(p: &mut Problems, key: &str, v: Option<&str>, default: &str, max: Duration) -> Duration {
    duration(p, key, v, default, Span::positive(max))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::sample::ConfigToml;

    #[test]
    fn good_config_gets_defaults() {
        let c = ConfigToml::new("http://127.0.0.1:7002/")
            .principal("public", "anonymous")
            .user_principal("agent", "account", "okcsuser", "Password1")
            .caller("helpdesk", "test", "agent", &["public"])
            .parse()
            .expect("valid");
        assert_eq!(c.upstream.base_url, "http://127.0.0.1:7002");
        assert_eq!(c.upstream.search_base_url, c.upstream.base_url);
        assert_eq!(c.server.max_body, 10 << 20);
        assert_eq!(c.tokens.lifetime, Duration::from_secs(86_400));
        assert_eq!(c.callers[0].principal, 1);
        assert_eq!(c.callers[0].act_as, vec![0]);
        assert_eq!(c.callers[0].interactions, crate::config::Interactions::Unmanaged);
        assert!(!format!("{c:?}").contains("Password1"));
    }

    #[test]
    fn interactions_is_managed_or_absent() {
        let with = |v: &str| {
            ConfigToml::new("http://127.0.0.1:7002")
                .principal("public", "anonymous")
                .caller("app", "k", "public", &[])
                .caller_key("interactions", v)
                .parse()
        };
        let c = with("managed").expect("valid");
        assert_eq!(c.callers[0].interactions, crate::config::Interactions::Managed);
        let e = with("yes").expect_err("invalid");
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].0, "callers[0].interactions", "{e}");
        assert!(e.problems[0].1.contains("`yes` is not `managed`"), "{e}");
    }
}
