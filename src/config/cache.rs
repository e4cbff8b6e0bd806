//! `[cache]`: the model of fleet mode's shared store (PRODUCT.md §8) and the
//! parsers of its two structured values, `redis_url` and `encryption_key`.
//! [`build_cache`](super::build) applies the defaults and bounds.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::raw::Problems;
use crate::secret::Secret;

/// `cache.redis_url`, or a placeholder after recording the problem.
pub(super) fn redis_url(p: &mut Problems, v: Option<&str>) -> RedisUrl {
    let parsed = match v {
        Some(v) => RedisUrl::parse(v),
        None => Err("missing (redis://host:port/db or rediss://…)".into()),
    };
    parsed.unwrap_or_else(|e| {
        p.add("cache.redis_url", e);
        RedisUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port: 6379,
            db: 0,
        }
    })
}

/// `cache.encryption_key` decoded, or a placeholder after recording the
/// problem (`None`: the secret could not be read, which is recorded already).
pub(super) fn encryption_key(p: &mut Problems, secret: Option<Secret>) -> EncryptionKey {
    let decoded = secret.and_then(|s| {
        EncryptionKey::decode(s)
            .map_err(|e| p.add("cache.encryption_key", e))
            .ok()
    });
    decoded.unwrap_or_else(|| EncryptionKey {
        source: Secret::literal("-"),
        bytes: Arc::new(Zeroizing::new([0; 32])),
    })
}

/// `[cache]`: where replicas share tokens and lockout state.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Where Redis (or Valkey) listens; it never carries credentials.
    pub redis_url: RedisUrl,
    /// The ACL user; `None` authenticates as the `default` user.
    pub username: Option<String>,
    /// The ACL (or `requirepass`) password; `None` = no `AUTH`.
    pub password: Option<Secret>,
    /// Encrypts tokens and verdicts at rest and keys the fingerprints that
    /// name them, so Redis never sees a token, user or password.
    pub encryption_key: EncryptionKey,
    /// Every key and channel kmproxy uses starts with this.
    pub key_prefix: String,
    /// How long one connection attempt (TCP, TLS, `HELLO`/`AUTH`) may take.
    pub connect_timeout: Duration,
    /// How long any one command may take before it counts as failed.
    pub command_timeout: Duration,
}

impl CacheConfig {
    /// True when `other` names the same store, with the same credentials
    /// and key (the fleet is built once per process: a change needs a
    /// restart).
    pub fn same_store(&self, other: &CacheConfig) -> bool {
        let same_password = match (&self.password, &other.password) {
            (Some(a), Some(b)) => a.same_value(b),
            (None, None) => true,
            _ => false,
        };
        self.redis_url == other.redis_url
            && self.username == other.username
            && same_password
            && self.encryption_key.same_key(&other.encryption_key)
            && self.key_prefix == other.key_prefix
            && self.connect_timeout == other.connect_timeout
            && self.command_timeout == other.command_timeout
    }
}

/// A `redis://` or `rediss://` URL taken apart: scheme, host, port, db.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    /// `rediss://`: TLS (rustls, the ring provider, the system's roots).
    pub tls: bool,
    pub host: String,
    /// 6379 unless given.
    pub port: u16,
    /// The logical database (the URL's path); 0 unless given.
    pub db: u16,
}

impl fmt::Display for RedisUrl {
    /// The URL again, in canonical form (it holds no credentials).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}/{}", self.port, self.db)
    }
}

impl RedisUrl {
    /// Parses `v`; the error is the problem to report under its key. It
    /// never repeats the URL, which might hold a password.
    pub(super) fn parse(v: &str) -> Result<Self, String> {
        let u = url::Url::parse(v).map_err(|e| format!("is not a URL ({e})"))?;
        let tls = match u.scheme() {
            "redis" => false,
            "rediss" => true,
            other => return Err(format!("must be a redis:// or rediss:// URL, not {other}://")),
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err("must not hold credentials: set cache.username and cache.password instead".into());
        }
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(url::Host::Domain("")) | None => return Err("has no host".into()),
            Some(h) => h.to_string(),
        };
        if u.query().is_some() || u.fragment().is_some() {
            return Err("must not have a query or fragment".into());
        }
        let db = match u.path().trim_start_matches('/') {
            "" => 0,
            n => n
                .parse()
                .map_err(|_| format!("the path must be a database number like /0, not `{}`", u.path()))?,
        };
        let port = u.port().unwrap_or(6379);
        Ok(Self { tls, host, port, db })
    }
}

/// The 32-byte cache key, with the secret it was read from (for `check`).
#[derive(Clone)]
pub struct EncryptionKey {
    source: Secret,
    bytes: Arc<Zeroizing<[u8; 32]>>,
}

impl EncryptionKey {
    /// The same 32 bytes (in constant time).
    pub fn same_key(&self, other: &EncryptionKey) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(self.bytes.as_slice().ct_eq(other.bytes.as_slice()))
    }

    /// Decodes `secret`: 64 hex characters, or base64 of 32 bytes.
    pub fn decode(secret: Secret) -> Result<Self, String> {
        let text = secret.expose().trim();
        let mut bytes = Zeroizing::new([0u8; 32]);
        let hex_ok = text.len() == 64 && hex::decode_to_slice(text, &mut bytes[..]).is_ok();
        if !hex_ok {
            let decoded = Zeroizing::new(
                (base64::engine::general_purpose::STANDARD.decode(text))
                    .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
                    .map_err(|_| KEY_SHAPE.to_owned())?,
            );
            if decoded.len() != 32 {
                return Err(format!("{KEY_SHAPE} (it decodes to {} bytes)", decoded.len()));
            }
            bytes.copy_from_slice(&decoded);
        }
        Ok(Self {
            source: secret,
            bytes: Arc::new(bytes),
        })
    }

    /// The key itself, for the fleet's key derivation only.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Where the key comes from.
    pub fn source(&self) -> &Secret {
        &self.source
    }
}

const KEY_SHAPE: &str = "must be 32 bytes, written as 64 hex characters or in base64 (e.g. `openssl rand -hex 32`)";

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sample::ConfigToml;

    #[test]
    fn urls() {
        let u = RedisUrl::parse("rediss://tokens.internal:6380/2").expect("valid");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.db),
            (true, "tokens.internal", 6380, 2)
        );
        assert_eq!(u.to_string(), "rediss://tokens.internal:6380/2");
        let u = RedisUrl::parse("redis://[::1]").expect("valid");
        assert_eq!((u.tls, u.port, u.db), (false, 6379, 0));
        assert_eq!(u.to_string(), "redis://[::1]:6379/0");
        for (bad, says) in [
            ("redis://kmproxy:pw@host/0", "credentials"),
            ("redis://:pw@host", "credentials"),
            ("http://host", "redis:// or rediss://"),
            ("redis://host/db", "database number"),
            ("redis://host/0?protocol=resp2", "query"),
            ("redis:///0", "no host"),
        ] {
            let e = RedisUrl::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("pw"), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_in_hex_or_base64() {
        let hex = "00".repeat(31) + "ff";
        let k = EncryptionKey::decode(Secret::literal(hex)).expect("hex");
        assert_eq!(k.bytes()[31], 0xff);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let k = EncryptionKey::decode(Secret::literal(b64)).expect("base64");
        assert_eq!(k.bytes(), &[7u8; 32]);
        assert!(!format!("{k:?}").contains("Bw"), "{k:?}");
        for bad in ["abc", &"00".repeat(16), "not base64 at all!"] {
            let e = EncryptionKey::decode(Secret::literal(bad)).expect_err(bad);
            assert!(e.starts_with("must be 32 bytes"), "{e}");
        }
    }

    fn with_cache(f: impl Fn(ConfigToml) -> ConfigToml) -> Result<crate::config::Config, Vec<(String, String)>> {
        let t = ConfigToml::new("http://127.0.0.1:7002").cache("redis_url", "redis://127.0.0.1:6390/1");
        f(t.cache("encryption_key", "11".repeat(32)))
            .parse()
            .map_err(|e| e.problems)
    }

    #[test]
    fn the_section_gets_its_defaults() {
        let c = with_cache(|t| t).expect("valid").cache.expect("[cache]");
        assert_eq!(c.redis_url.to_string(), "redis://127.0.0.1:6390/1");
        assert_eq!(c.key_prefix, "kmproxy:");
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.command_timeout, Duration::from_millis(250));
        assert!(c.username.is_none() && c.password.is_none());
        let none = ConfigToml::new("http://127.0.0.1:7002").parse().expect("valid");
        assert!(none.cache.is_none());
    }

    #[test]
    fn every_bad_key_is_named_and_no_secret_is_shown() {
        let problems = with_cache(|t| {
            t.cache("redis_url", "redis://u:hunter2@127.0.0.1/0")
                .cache("encryption_key", "hunter3")
                .cache("password", "hunter4")
                .cache("key_prefix", "")
                .cache("connect_timeout", "0s")
                .cache("command_timeout", "11s")
                .cache("colour", "blue")
        })
        .expect_err("invalid");
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "cache.redis_url",
            "cache.encryption_key",
            "cache.key_prefix",
            "cache.connect_timeout",
            "cache.command_timeout",
            "cache.colour",
        ] {
            assert!(keys.contains(&k), "missing {k} in {problems:?}");
        }
        let text = format!("{problems:?}");
        assert!(!text.contains("hunter"), "{text}");
        let one = with_cache(|t| t.cache("command_timeout", "soon")).expect_err("invalid");
        assert_eq!(one.len(), 1, "one problem per key: {one:?}");
    }

    #[test]
    fn an_empty_unset_or_unreadable_key_is_one_problem() {
        let empty = with_cache(|t| t.cache("encryption_key", "")).expect_err("invalid");
        assert_eq!(empty.len(), 1, "{empty:?}");
        assert_eq!(empty[0].0, "cache.encryption_key");
        let unset = with_cache(|t| t.cache("encryption_key", crate::config::sample::env("KMPROXY_TEST_UNSET_KEY")))
            .expect_err("invalid");
        assert_eq!(unset.len(), 1, "{unset:?}");
        let short = with_cache(|t| t.cache("encryption_key", "abc")).expect_err("invalid");
        assert_eq!(short.len(), 1, "{short:?}");
        let missing = ConfigToml::new("http://127.0.0.1:7002")
            .cache("redis_url", "redis://127.0.0.1:6390/1")
            .parse()
            .expect_err("invalid")
            .problems;
        assert_eq!(missing, vec![("cache.encryption_key".to_owned(), "missing".to_owned())]);
    }
}
