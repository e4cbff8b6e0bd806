//! A config written in code, for tests and examples.
//!
//! [`ConfigToml`] starts from the smallest valid file for a base URL and
//! adds what a scenario needs, so a test reads as its setup. It writes
//! plain TOML text: a test may still edit that text, or write it to a file
//! for the binary to read.
//!
//! ```
//! use kmproxy::config::sample::{env, ConfigToml};
//!
//! let text = ConfigToml::new("http://127.0.0.1:7002")
//!     .server("default_principal", "public")
//!     .principal("public", "anonymous")
//!     .user_principal("agent", "account", "okcsuser", env("KM_AGENT_PASSWORD"))
//!     .caller("helpdesk", "helpdesk-key", "agent", &["public"])
//!     .to_string();
//! assert!(text.contains("password = { env = \"KM_AGENT_PASSWORD\" }"));
//! ```

use std::fmt;
use std::path::Path;

use toml::Value;

use super::{Config, ConfigError};

/// A config file being written, section by section.
#[derive(Clone, Debug)]
pub struct ConfigToml {
    server: Section,
    upstream: Section,
    api_user: Section,
    tokens: Section,
    cache: Section,
    principals: Vec<Section>,
    callers: Vec<Section>,
}

/// `key = value` lines in the order they were first set.
#[derive(Clone, Debug, Default)]
struct Section(Vec<(String, Value)>);

impl Section {
    /// Sets `key`, replacing its value if it is already set.
    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_owned(), value)),
        }
        self
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, header: &str) -> fmt::Result {
        writeln!(f, "\n{header}")?;
        for (key, value) in &self.0 {
            writeln!(f, "{key} = {value}")?;
        }
        Ok(())
    }
}

impl ConfigToml {
    /// The smallest valid file: `base_url`, site `ORACLE_KNOWLEDGE`, and the
    /// simulator's API user `apiuser` / `apipass1`; no principals, no callers.
    pub fn new(base_url: &str) -> Self {
        ConfigToml {
            server: Section::default(),
            upstream: Section::default()
                .set("base_url", base_url)
                .set("site_name", "ORACLE_KNOWLEDGE"),
            api_user: Section::default().set("login", "apiuser").set("password", "apipass1"),
            tokens: Section::default(),
            cache: Section::default(),
            principals: Vec::new(),
            callers: Vec::new(),
        }
    }

    /// Sets a `[server]` key.
    pub fn server(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.server = self.server.set(key, value);
        self
    }

    /// Sets an `[upstream]` key.
    pub fn upstream(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.upstream = self.upstream.set(key, value);
        self
    }

    /// Sets an `[api_user]` key.
    pub fn api_user(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.api_user = self.api_user.set(key, value);
        self
    }

    /// Sets a `[tokens]` key.
    pub fn tokens(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.tokens = self.tokens.set(key, value);
        self
    }

    /// Sets a `[cache]` key (fleet mode).
    pub fn cache(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.cache = self.cache.set(key, value);
        self
    }

    /// Adds a principal without credentials (kind `anonymous` or `bearer`).
    pub fn principal(mut self, name: &str, kind: &str) -> Self {
        self.principals
            .push(Section::default().set("name", name).set("kind", kind));
        self
    }

    /// Adds a user principal (kind `account` or `contact`); `password` is a
    /// literal, [`env`] or [`file`].
    pub fn user_principal(mut self, name: &str, kind: &str, user: &str, password: impl Into<Value>) -> Self {
        self.principals.push(
            Section::default()
                .set("name", name)
                .set("kind", kind)
                .set("user", user)
                .set("password", password),
        );
        self
    }

    /// Adds a caller that sends `key` (written as its sha256) and maps to
    /// `principal`; `act_as` is left out when empty.
    pub fn caller(mut self, name: &str, key: &str, principal: &str, act_as: &[&str]) -> Self {
        let mut caller = Section::default()
            .set("name", name)
            .set("key_sha256", super::hash_key(key.as_bytes()))
            .set("principal", principal);
        if !act_as.is_empty() {
            caller = caller.set("act_as", act_as.to_vec());
        }
        self.callers.push(caller);
        self
    }

    /// Sets a key on the caller added last (`interactions`, say); no-op
    /// when there is none.
    pub fn caller_key(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Some(last) = self.callers.pop() {
            self.callers.push(last.set(key, value));
        }
        self
    }

    /// The config this text validates to (named `sample.toml` in messages).
    pub fn parse(&self) -> Result<Config, ConfigError> {
        Config::parse(&self.to_string(), Path::new("sample.toml"))
    }
}

impl fmt::Display for ConfigToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sections = [
            ("[server]", &self.server),
            ("[upstream]", &self.upstream),
            ("[api_user]", &self.api_user),
            ("[tokens]", &self.tokens),
            ("[cache]", &self.cache),
        ];
        for (header, section) in sections {
            if !section.0.is_empty() {
                section.write(f, header)?;
            }
        }
        for p in &self.principals {
            p.write(f, "[[principals]]")?;
        }
        for c in &self.callers {
            c.write(f, "[[callers]]")?;
        }
        Ok(())
    }
}

/// A secret read from an environment variable: `{ env = "…" }`.
pub fn env(var: &str) -> Value {
    table(&[("env", var)])
}

/// A secret read from a file: `{ file = "…" }`.
pub fn file(path: impl AsRef<Path>) -> Value {
    table(&[("file", &path.as_ref().to_string_lossy())])
}

/// An inline table of strings, such as `kmauthtoken_extra`.
pub fn table(pairs: &[(&str, &str)]) -> Value {
    Value::Table(pairs.iter().map(|&(k, v)| (k.to_owned(), Value::from(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_file_is_valid() {
        let c = ConfigToml::new("http://127.0.0.1:7002").parse().expect("valid");
        assert_eq!(c.upstream.site_name, "ORACLE_KNOWLEDGE");
        assert_eq!(c.api_user.login, "apiuser");
        assert!(c.principals.is_empty() && c.callers.is_empty());
    }

    #[test]
    fn writes_each_key_once_in_its_section() {
        let text = ConfigToml::new("SIM_URL")
            .server("max_body", "1MiB")
            .upstream("site_name", "S")
            .upstream("kmauthtoken_extra", table(&[("appId", "a\"b")]))
            .tokens("session_error_codes", vec!["OK-SESSION"])
            .user_principal("agent", "contact", "u", file("/run/a b.pw"))
            .caller("kiosk", "test", "agent", &[])
            .to_string();
        let parsed: toml::Table = text.parse().expect("TOML");
        assert_eq!(parsed["server"]["max_body"].as_str(), Some("1MiB"));
        assert_eq!(
            parsed["upstream"]["site_name"].as_str(),
            Some("S"),
            "replaced, not repeated"
        );
        assert_eq!(parsed["upstream"]["kmauthtoken_extra"]["appId"].as_str(), Some("a\"b"));
        assert_eq!(
            parsed["principals"][0]["password"]["file"].as_str(),
            Some("/run/a b.pw")
        );
        let caller = parsed["callers"][0].as_table().expect("table");
        assert_eq!(
            caller["key_sha256"].as_str(),
            Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
        );
        assert!(!caller.contains_key("act_as"));
        // Plain `key = "value"` lines, so a test may still edit the text.
        assert!(text.contains("\nbase_url = \"SIM_URL\"\n"), "{text}");
    }
}
