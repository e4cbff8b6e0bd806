//! Who is calling: the caller key header → a configured caller → its
//! principal, or `default_principal` when no key is sent; and the per-call
//! switch `x-kmproxy-act-as`.
//!
//! Keys are compared as sha256 digests in constant time, against every
//! caller, so timing reveals neither which caller matched nor how much of a
//! digest did.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, PrincipalId};

pub mod placeholder;

/// The header naming a principal to act as for one call.
pub const ACT_AS_HEADER: &str = "x-kmproxy-act-as";
const ACT_AS: http::HeaderName = http::HeaderName::from_static(ACT_AS_HEADER);

/// Who called, as far as the headers tell (for the access line and the
/// metrics, refused calls included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Caller {
    /// No caller key.
    #[default]
    None,
    /// A key that matched no caller.
    Unknown,
    /// `config.callers[i]`.
    Known(usize),
}

impl Caller {
    /// The configured caller, if the key matched one.
    pub fn known(self) -> Option<usize> {
        match self {
            Caller::Known(i) => Some(i),
            _ => None,
        }
    }
}

/// Why a call gets no principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the caller key matches no caller")]
    UnknownCaller,
    #[error("no caller key was sent and there is no default principal")]
    NoCallerKey,
    #[error("caller `{caller}` may not act as `{principal}`")]
    ActAsDenied { caller: String, principal: String },
}

pub use crate::config::hash_key;

/// Identifies the caller of a request from its headers, and the
/// principal whose tokens the call uses (or why it gets none). The caller
/// is reported even when the call is refused.
pub fn identify(config: &Config, headers: &HeaderMap) -> (Caller, Result<PrincipalId, Refusal>) {
    let caller = match headers.get(&config.server.caller_key_header) {
        Some(key) => match match_key(config, key.as_bytes()) {
            Some(c) => Caller::Known(c),
            None => return (Caller::Unknown, Err(Refusal::UnknownCaller)),
        },
        None => Caller::None,
    };
    (caller, principal(config, headers, caller))
}

/// The principal of an identified caller: its own, the default one, or
/// the one it acts as.
pub fn principal(config: &Config, headers: &HeaderMap, caller: Caller) -> Result<PrincipalId, Refusal> {
    let base = match caller.known() {
        Some(c) => config.callers[c].principal,
        None => config.server.default_principal.ok_or(Refusal::NoCallerKey)?,
    };
    let Some(wanted) = headers.get(ACT_AS) else {
        return Ok(base);
    };
    let wanted = wanted.to_str().unwrap_or("");
    let denied = || Refusal::ActAsDenied {
        caller: caller
            .known()
            .map_or_else(|| "(no key)".to_owned(), |c| config.callers[c].name.clone()),
        principal: wanted.chars().take(64).collect(),
    };
    let c = caller.known().ok_or_else(denied)?;
    config.callers[c]
        .act_as
        .iter()
        .copied()
        .find(|&p| config.principals[p].name == wanted)
        .ok_or_else(denied)
}

/// The sha256 of a caller key, as `key_sha256` holds it.
pub fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// The caller whose key hashes to the digest of `key`, looked for in
/// constant time over all callers.
fn match_key(config: &Config, key: &[u8]) -> Option<usize> {
    let digest = self::digest(key);
    let mut found = None;
    for (i, c) in config.callers.iter().enumerate() {
        if bool::from(c.key_sha256.ct_eq(&digest)) {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sample::ConfigToml;

    fn config() -> Config {
        ConfigToml::new("http://127.0.0.1:1")
            .server("default_principal", "public")
            .upstream("site_name", "S")
            .api_user("login", "a")
            .api_user("password", "p")
            .principal("public", "anonymous")
            .user_principal("agent", "account", "u", "p")
            .caller("helpdesk", "k1", "public", &["agent"])
            .parse()
            .expect("valid")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn key_default_and_act_as() {
        let c = config();
        assert_eq!(
            identify(&c, &headers(&[("x-kmproxy-key", "k1")])),
            (Caller::Known(0), Ok(0))
        );
        assert_eq!(identify(&c, &headers(&[])), (Caller::None, Ok(0)));
        assert_eq!(
            identify(&c, &headers(&[("x-kmproxy-key", "k1"), (ACT_AS_HEADER, "agent")])),
            (Caller::Known(0), Ok(1))
        );
    }

    #[test]
    fn refusals() {
        let c = config();
        assert_eq!(
            identify(&c, &headers(&[("x-kmproxy-key", "nope")])),
            (Caller::Unknown, Err(Refusal::UnknownCaller))
        );
        assert!(matches!(
            identify(&c, &headers(&[(ACT_AS_HEADER, "agent")])),
            (Caller::None, Err(Refusal::ActAsDenied { .. }))
        ));
        // The caller is known even when its act-as is refused.
        assert!(matches!(
            identify(&c, &headers(&[("x-kmproxy-key", "k1"), (ACT_AS_HEADER, "ghost")])),
            (Caller::Known(0), Err(Refusal::ActAsDenied { .. }))
        ));
    }
}
