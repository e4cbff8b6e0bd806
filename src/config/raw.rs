//! The config file as serde reads it, before any value is checked: one
//! `Raw*` struct per section (every field optional, so a missing key is
//! reported by `build`, not by serde), the two ways of reading them, and
//! [`Problems`], where every problem found on the way is collected.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Reads the sections of `text`; unknown keys and wrong types go to `p`.
/// Only a syntax error stops the reading: its message (with the line) is
/// the `Err`.
pub(super) fn read(text: &str, p: &mut Problems) -> Result<RawFile, String> {
    if let Some(raw) = RawFile::fast(text) {
        return Ok(raw);
    }
    match text.parse::<toml::Table>() {
        Ok(table) => Ok(RawFile::thorough(table, p)),
        Err(e) => Err(e.message().to_owned() + &span_hint(text, e.span())),
    }
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!(" (line {line})")
}

/// Every section, typed: read in one pass over the text when the file is
/// well-formed, else section by section so every problem is found.
#[derive(Deserialize, Default)]
pub(super) struct RawFile {
    pub server: Option<RawServer>,
    pub upstream: Option<RawUpstream>,
    pub api_user: Option<RawApiUser>,
    pub tokens: Option<RawTokens>,
    #[serde(default)]
    pub principals: Vec<RawPrincipal>,
    #[serde(default)]
    pub callers: Vec<RawCaller>,
    pub cache: Option<RawCache>,
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
    cache: Option<toml::Value>,
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
            cache: s.cache.map(|v| p.section("cache", Some(v))),
        }
    }
}

#[derive(Deserialize, Default)]
pub(super) struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub max_body: Option<toml::Value>,
    pub caller_key_header: Option<String>,
    pub default_principal: Option<String>,
    pub drain_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub queue_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub max_buffered: Option<toml::Value>,
    pub allowed_hosts: Option<Vec<String>>,
    pub admin_token: Option<toml::Value>,
    pub client_logins: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawUpstream {
    pub base_url: Option<String>,
    pub search_base_url: Option<String>,
    pub site_name: Option<String>,
    pub locale: Option<String>,
    pub api_version: Option<String>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub kmauthtoken_extra: Option<toml::Table>,
    pub rewrite_links: Option<bool>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawApiUser {
    pub login: Option<String>,
    pub password: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawTokens {
    pub lifetime: Option<String>,
    pub refresh_before: Option<String>,
    pub session_error_codes: Option<Vec<String>>,
    pub min_relogin_interval: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawPrincipal {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub user: Option<String>,
    pub password: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawCaller {
    pub name: Option<String>,
    pub key_sha256: Option<String>,
    pub principal: Option<String>,
    pub act_as: Option<Vec<String>>,
    pub interactions: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawCache {
    pub redis_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<toml::Value>,
    pub encryption_key: Option<toml::Value>,
    pub key_prefix: Option<String>,
    pub connect_timeout: Option<String>,
    pub command_timeout: Option<String>,
}

/// Collects problems as `(key, message)`.
#[derive(Default)]
pub(super) struct Problems(Vec<(String, String)>);

impl Problems {
    pub fn add(&mut self, key: impl Into<String>, msg: impl Into<String>) {
        self.0.push((key.into(), msg.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in the order they were found.
    pub fn into_vec(self) -> Vec<(String, String)> {
        self.0
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::sample::ConfigToml;
    use crate::config::Config;

    fn valid() -> ConfigToml {
        ConfigToml::new("http://127.0.0.1:7002/")
            .principal("public", "anonymous")
            .user_principal("agent", "account", "okcsuser", "Password1")
            .caller("helpdesk", "test", "agent", &["public"])
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
}
