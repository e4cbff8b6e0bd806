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
use crate::error::ProxyError;

/// The header naming a principal to act as for one call.
pub const ACT_AS_HEADER: &str = "x-kmproxy-act-as";
const ACT_AS: http::HeaderName = http::HeaderName::from_static(ACT_AS_HEADER);

/// The outcome of identifying a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Index into `Config::callers`; `None` for a call without a key.
    pub caller: Option<usize>,
    /// The principal whose tokens the call uses.
    pub principal: PrincipalId,
}

/// Hex sha256 of a caller key (what `key_sha256` holds).
pub fn hash_key(key: &[u8]) -> String {
    hex::encode(Sha256::digest(key))
}

/// Identifies the caller of a request from its headers.
pub fn identify(config: &Config, headers: &HeaderMap) -> Result<Identity, ProxyError> {
    let caller = match headers.get(&config.server.caller_key_header) {
        Some(key) => Some(match_key(config, key.as_bytes()).ok_or(ProxyError::UnknownCaller)?),
        None => None,
    };
    let base = match caller {
        Some(c) => config.callers[c].principal,
        None => config.server.default_principal.ok_or(ProxyError::NoCallerKey)?,
    };
    let Some(wanted) = headers.get(ACT_AS) else {
        return Ok(Identity {
            caller,
            principal: base,
        });
    };
    let wanted = wanted.to_str().unwrap_or("");
    let denied = || ProxyError::ActAsDenied {
        caller: caller.map_or_else(|| "(no key)".to_owned(), |c| config.callers[c].name.clone()),
        principal: wanted.chars().take(64).collect(),
    };
    let c = caller.ok_or_else(denied)?;
    let principal = config.callers[c]
        .act_as
        .iter()
        .copied()
        .find(|&p| config.principals[p].name == wanted)
        .ok_or_else(denied)?;
    Ok(Identity { caller, principal })
}

/// The caller whose key hashes to the digest of `key`, looked for in
/// constant time over all callers.
fn match_key(config: &Config, key: &[u8]) -> Option<usize> {
    let digest: [u8; 32] = Sha256::digest(key).into();
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
        let id = identify(&c, &headers(&[("x-kmproxy-key", "k1")])).expect("known");
        assert_eq!((id.caller, id.principal), (Some(0), 0));
        let id = identify(&c, &headers(&[])).expect("default");
        assert_eq!((id.caller, id.principal), (None, 0));
        let id = identify(&c, &headers(&[("x-kmproxy-key", "k1"), (ACT_AS_HEADER, "agent")])).expect("allowed");
        assert_eq!(id.principal, 1);
    }

    #[test]
    fn refusals() {
        let c = config();
        assert!(matches!(
            identify(&c, &headers(&[("x-kmproxy-key", "nope")])),
            Err(ProxyError::UnknownCaller)
        ));
        assert!(matches!(
            identify(&c, &headers(&[(ACT_AS_HEADER, "agent")])),
            Err(ProxyError::ActAsDenied { .. })
        ));
        assert!(matches!(
            identify(&c, &headers(&[("x-kmproxy-key", "k1"), (ACT_AS_HEADER, "ghost")])),
            Err(ProxyError::ActAsDenied { .. })
        ));
    }
}
