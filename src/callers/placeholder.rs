//! Placeholder tokens for client logins (`server.client_logins =
//! "answer"`): what kmproxy hands an unmodified Oracle client that logs in
//! by itself, in place of a real Knowledge Advanced token.
//!
//! A placeholder is `kmp1.<payload hex>.<mac hex>`: the payload says what
//! it stands for (an integration login that named a caller, or nobody; a
//! user login for one principal of one caller) and until when; the MAC
//! (HMAC-SHA256 with a key drawn at random when kmproxy starts) makes it
//! unguessable and worthless anywhere else — to the upstream, to another
//! kmproxy, and to this one after a restart. The payload binds the
//! caller's key (a prefix of its `key_sha256`) and the principal's name, so
//! a placeholder dies when the caller's key changes or a reload gives its
//! index to someone else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::{Config, PrincipalId};

/// Every placeholder starts with this.
pub const PREFIX: &str = "kmp1.";

type HmacSha256 = Hmac<Sha256>;

/// The key placeholders are made and checked with (one per process).
pub struct Placeholders {
    key: [u8; 32],
}

/// What a valid placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// An integration login that identified nobody.
    Nobody,
    /// An integration login that identified `config.callers[i]`.
    Caller(usize),
    /// A user login: caller (if one was identified) and the principal.
    User {
        caller: Option<usize>,
        principal: PrincipalId,
    },
}

/// Why a string that looks like a placeholder is not a valid one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the placeholder token is expired, forged or from before a restart or key change")]
pub struct Stale;

const NONE: u32 = u32::MAX;
/// kind, caller index and tag, principal index and tag, expiry, nonce.
const PAYLOAD_LEN: usize = 1 + 4 + 8 + 4 + 8 + 8 + 8;

impl Default for Placeholders {
    fn default() -> Self {
        Self::new()
    }
}

impl Placeholders {
    /// A fresh random key.
    pub fn new() -> Self {
        Self { key: rand::random() }
    }

    /// A placeholder for `binding`, valid for `lifetime`.
    pub fn mint(&self, config: &Config, binding: Binding, lifetime: Duration) -> String {
        let (kind, caller, principal) = match binding {
            Binding::Nobody => (0u8, None, None),
            Binding::Caller(c) => (1, Some(c), None),
            Binding::User { caller, principal } => (2, caller, Some(principal)),
        };
        let expires = SystemTime::now()
            .checked_add(lifetime)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |d| d.as_secs());
        let mut payload = Vec::with_capacity(PAYLOAD_LEN);
        payload.push(kind);
        payload.extend_from_slice(&index(caller).to_be_bytes());
        payload.extend_from_slice(&caller_tag(config, caller));
        payload.extend_from_slice(&index(principal).to_be_bytes());
        payload.extend_from_slice(&principal_tag(config, principal));
        payload.extend_from_slice(&expires.to_be_bytes());
        payload.extend_from_slice(&rand::random::<[u8; 8]>());
        format!("{PREFIX}{}.{}", hex::encode(&payload), hex::encode(self.mac(&payload)))
    }

    /// What `token` stands for: `Ok(None)` when it is no placeholder at all
    /// (a real token, or nothing), `Err(Stale)` when it looks like one but
    /// is not valid here and now.
    pub fn check(&self, config: &Config, token: &str) -> Result<Option<Binding>, Stale> {
        let Some(rest) = token.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let (payload, mac) = rest.split_once('.').ok_or(Stale)?;
        let payload = hex::decode(payload).map_err(|_| Stale)?;
        let mac = hex::decode(mac).map_err(|_| Stale)?;
        let mut verifier = HmacSha256::new_from_slice(&self.key).map_err(|_| Stale)?;
        verifier.update(&payload);
        verifier.verify_truncated_left(&mac).map_err(|_| Stale)?;
        decode(config, &payload).map(Some)
    }

    fn mac(&self, payload: &[u8]) -> [u8; 16] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

fn index(i: Option<usize>) -> u32 {
    i.and_then(|i| u32::try_from(i).ok()).unwrap_or(NONE)
}

/// The first 8 bytes of the caller's `key_sha256` (zero for none).
fn caller_tag(config: &Config, caller: Option<usize>) -> [u8; 8] {
    let mut tag = [0u8; 8];
    if let Some(c) = caller.and_then(|c| config.callers.get(c)) {
        tag.copy_from_slice(&c.key_sha256[..8]);
    }
    tag
}

/// The first 8 bytes of the sha256 of the principal's name (zero for none).
fn principal_tag(config: &Config, principal: Option<PrincipalId>) -> [u8; 8] {
    let mut tag = [0u8; 8];
    if let Some(p) = principal.and_then(|p| config.principals.get(p)) {
        tag.copy_from_slice(&Sha256::digest(p.name.as_bytes())[..8]);
    }
    tag
}

/// Reads an authentic payload against the config it must still match.
fn decode(config: &Config, payload: &[u8]) -> Result<Binding, Stale> {
    if payload.len() != PAYLOAD_LEN {
        return Err(Stale);
    }
    let u32_at = |at: usize| u32::from_be_bytes([payload[at], payload[at + 1], payload[at + 2], payload[at + 3]]);
    let opt = |v: u32| (v != NONE).then_some(v as usize);
    let (caller, principal) = (opt(u32_at(1)), opt(u32_at(13)));
    let mut expires = [0u8; 8];
    expires.copy_from_slice(&payload[25..33]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let bound = caller_tag(config, caller) == payload[5..13] && principal_tag(config, principal) == payload[17..25];
    let known =
        caller.is_none_or(|c| c < config.callers.len()) && principal.is_none_or(|p| p < config.principals.len());
    if u64::from_be_bytes(expires) <= now || !bound || !known {
        return Err(Stale);
    }
    match (payload[0], caller, principal) {
        (0, None, None) => Ok(Binding::Nobody),
        (1, Some(c), None) => Ok(Binding::Caller(c)),
        (2, caller, Some(principal)) => Ok(Binding::User { caller, principal }),
        _ => Err(Stale),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sample::ConfigToml;

    fn config() -> Config {
        ConfigToml::new("http://127.0.0.1:1")
            .principal("public", "anonymous")
            .user_principal("agent", "account", "okcsuser", "pw")
            .caller("helpdesk", "k1", "public", &["agent"])
            .parse()
            .expect("valid")
    }

    #[test]
    fn a_placeholder_stands_for_what_it_was_minted_for() {
        let (ph, c) = (Placeholders::new(), config());
        let day = Duration::from_secs(86_400);
        for binding in [
            Binding::Nobody,
            Binding::Caller(0),
            Binding::User {
                caller: Some(0),
                principal: 1,
            },
            Binding::User {
                caller: None,
                principal: 0,
            },
        ] {
            let token = ph.mint(&c, binding, day);
            assert_eq!(ph.check(&c, &token), Ok(Some(binding)), "{token}");
        }
        assert_eq!(ph.check(&c, "a real Oracle token"), Ok(None));
    }

    #[test]
    fn forged_foreign_expired_or_rebound_placeholders_are_stale() {
        let (ph, c) = (Placeholders::new(), config());
        let token = ph.mint(&c, Binding::Caller(0), Duration::from_secs(60));
        // Another kmproxy (or this one after a restart) has another key.
        assert_eq!(Placeholders::new().check(&c, &token), Err(Stale));
        // One changed byte of the payload.
        let mut forged = token.clone().into_bytes();
        forged[PREFIX.len() + 1] ^= 1;
        assert_eq!(ph.check(&c, &String::from_utf8_lossy(&forged)), Err(Stale));
        assert_eq!(ph.check(&c, "kmp1.zz.zz"), Err(Stale));
        // Expired.
        let gone = ph.mint(&c, Binding::Caller(0), Duration::ZERO);
        assert_eq!(ph.check(&c, &gone), Err(Stale));
        // The caller's key changed.
        let rekeyed = ConfigToml::new("http://127.0.0.1:1")
            .principal("public", "anonymous")
            .user_principal("agent", "account", "okcsuser", "pw")
            .caller("helpdesk", "k2", "public", &["agent"])
            .parse()
            .expect("valid");
        assert_eq!(ph.check(&rekeyed, &token), Err(Stale));
    }
}
