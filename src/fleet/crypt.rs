//! Values at rest and the names of keys: AES-256-GCM sealing (ring) with the
//! full Redis key as associated data, and [`Fingerprint`]s, the keyed
//! hashes that stand in Redis for who a token or verdict belongs to.
//!
//! Two subkeys come from `cache.encryption_key` by HKDF-SHA256 (one for
//! sealing, one for fingerprints), so neither use can weaken the other. A
//! sealed value is `v1` ‖ a random 96-bit nonce ‖ ciphertext ‖ 128-bit tag.
//! Because the key name is authenticated, a value copied to another key
//! fails to open, like a corrupted one or one sealed under another key.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::config::EncryptionKey;

/// The format tag every sealed value starts with.
const VERSION: &[u8] = b"v1";
/// HKDF salt: names this use of the key, and its version.
const SALT: &[u8] = b"kmproxy fleet v1";

/// A keyed hash (HMAC-SHA256, hex) naming an identity or a credential in
/// Redis; it reveals nothing about the names and passwords hashed into it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The hex text, as it appears in Redis keys and events.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fingerprint read back from an event (64 hex digits), else `None`.
    pub(super) fn parse(text: &str) -> Option<Self> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(text.to_owned()))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sealing and fingerprint keys derived from one encryption key.
pub(super) struct Crypt {
    aead: LessSafeKey,
    fingerprints: hmac::Key,
    rng: SystemRandom,
}

impl Crypt {
    /// Derives both subkeys from `key`.
    pub fn new(key: &EncryptionKey) -> Self {
        let prk = Salt::new(HKDF_SHA256, SALT).extract(key.bytes());
        // Both lengths are fixed and within HKDF's limit, so neither expand can fail.
        let aead = prk
            .expand(&[b"aead".as_slice()], &AES_256_GCM)
            .map(UnboundKey::from)
            .unwrap_or_else(|_| unreachable!("32 bytes from HKDF-SHA256"));
        let fingerprints = prk
            .expand(&[b"fingerprint".as_slice()], hmac::HMAC_SHA256)
            .map(hmac::Key::from)
            .unwrap_or_else(|_| unreachable!("32 bytes from HKDF-SHA256"));
        Self {
            aead: LessSafeKey::new(aead),
            fingerprints,
            rng: SystemRandom::new(),
        }
    }

    /// The fingerprint of `parts`, each length-prefixed so that no two
    /// different lists hash alike.
    pub fn fingerprint(&self, parts: &[&str]) -> Fingerprint {
        let mut ctx = hmac::Context::with_key(&self.fingerprints);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        Fingerprint(hex::encode(ctx.sign().as_ref()))
    }

    /// `plain` sealed for the Redis key `key`; `None` only if the system's
    /// random source fails.
    pub fn seal(&self, key: &str, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(VERSION.len() + NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(VERSION);
        out.extend_from_slice(&nonce);
        let at = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key), &mut out[at..])
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// The plaintext of a value read from the Redis key `key`, or `None` if
    /// it is not one this key sealed for that name (corrupted, another
    /// encryption key, another key name, another format).
    pub fn open(&self, key: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let rest = sealed.strip_prefix(VERSION)?;
        if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = self.aead.open_in_place(nonce, Aad::from(key), &mut buf[..]).ok()?.len();
        buf.truncate(len);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn crypt(byte: &str) -> Crypt {
        Crypt::new(&EncryptionKey::decode(Secret::literal(byte.repeat(32))).expect("key"))
    }

    #[test]
    fn sealed_values_open_only_under_their_key_name_and_key() {
        let (c, other) = (crypt("ab"), crypt("cd"));
        let sealed = c.seal("kmproxy:token:x", b"secret token").expect("seal");
        assert!(sealed.starts_with(b"v1"));
        assert_eq!(&c.open("kmproxy:token:x", &sealed).expect("opens")[..], b"secret token");
        assert!(c.open("kmproxy:token:y", &sealed).is_none(), "another key name");
        assert!(
            other.open("kmproxy:token:x", &sealed).is_none(),
            "another encryption key"
        );
        let mut flipped = sealed.clone();
        flipped[5] ^= 1;
        assert!(c.open("kmproxy:token:x", &flipped).is_none(), "corrupted");
        assert!(c.open("kmproxy:token:x", b"v1short").is_none());
        assert!(c.open("kmproxy:token:x", b"").is_none());
        let again = c.seal("kmproxy:token:x", b"secret token").expect("seal");
        assert_ne!(sealed, again, "a fresh nonce per write");
    }

    #[test]
    fn fingerprints_are_keyed_and_unambiguous() {
        let (c, other) = (crypt("ab"), crypt("cd"));
        let fp = c.fingerprint(&["site", "account", "alice"]);
        assert_eq!(fp, c.fingerprint(&["site", "account", "alice"]));
        assert_ne!(fp, other.fingerprint(&["site", "account", "alice"]));
        assert_ne!(c.fingerprint(&["ab", "c"]), c.fingerprint(&["a", "bc"]));
        assert_eq!(Fingerprint::parse(fp.as_str()), Some(fp.clone()));
        assert_eq!(Fingerprint::parse("kmproxy"), None);
    }
}
