//! What a login verdict belongs to: a credential (site, user kind, user,
//! password), never a principal's name. [`Fingerprints`] turns one into a
//! [`CredentialKey`], a keyed hash (HMAC-SHA256 under a random key made once
//! per process, so it outlives reloads), and into a *published*
//! fingerprint that `/status` shows for parked credentials so that
//! `kmproxy check --login` can recognise them.
//!
//! The key never leaves the process and the password never leaves the
//! hash. The published fingerprint is an HMAC under a salt written in the
//! fingerprint itself (`v1:<salt>:<mac>`): anyone holding the same
//! credential can recompute it, and a reader of `/status` can test guesses
//! of a *parked* (wrong, or possibly wrong) password offline, one HMAC per
//! guess. Credentials that logged in are never published.

use std::fmt;

use sha2::Sha256;

use super::identity::Identity;
use crate::config::{Config, PrincipalKind};

/// A credential's fingerprint: the key its lockout verdict is kept under.
/// Stable for the life of the process (fleet mode: for the fleet, with a
/// shared key); two credentials share one only if every field is equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialKey([u8; 32]);

impl fmt::Debug for CredentialKey {
    /// A short prefix: enough to tell keys apart in a test failure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialKey({}…)", hex::encode(&self.0[..4]))
    }
}

impl CredentialKey {
    /// The key as hex (what the fleet's fingerprint of it is made from).
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

/// The fields of one login credential, borrowed from a config.
pub struct Credential<'a> {
    /// `base_url`: another host is another site, even with the same name.
    base_url: &'a str,
    site_name: &'a str,
    /// `api_user`, `ACCOUNT` or `CONTACT`.
    kind: &'static str,
    user: &'a str,
    password: &'a str,
}

impl<'a> Credential<'a> {
    /// The credential identity `who` logs in with under `config`
    /// (`api_version` is not part of it: another path, the same password).
    pub fn of(config: &'a Config, who: Identity) -> Option<Self> {
        let (kind, user, password) = match who {
            Identity::ApiUser => (
                "api_user",
                config.api_user.login.as_str(),
                config.api_user.password.expose(),
            ),
            Identity::User(p) => match &config.principals.get(p)?.kind {
                PrincipalKind::User {
                    external_type,
                    user,
                    password,
                } => (external_type.as_str(), user.as_str(), password.expose()),
                _ => return None,
            },
        };
        Some(Self {
            base_url: &config.upstream.base_url,
            site_name: &config.upstream.site_name,
            kind,
            user,
            password,
        })
    }

    /// The user kind and user name, for reports (never the password).
    pub fn label(&self) -> (&'static str, String) {
        let kind = match self.kind {
            "ACCOUNT" => "account",
            "CONTACT" => "contact",
            other => other,
        };
        (kind, self.user.to_owned())
    }

    /// The HMAC-SHA256 of the fields under `key`, each length-prefixed so
    /// that no two field lists hash alike.
    fn mac(&self, key: &[u8]) -> [u8; 32] {
        let mut message = Vec::new();
        for field in [self.base_url, self.site_name, self.kind, self.user, self.password] {
            message.extend_from_slice(&(field.len() as u64).to_be_bytes());
            message.extend_from_slice(field.as_bytes());
        }
        hmac_sha256(key, &message)
    }
}

/// Makes credential keys and published fingerprints for one process.
pub struct Fingerprints {
    /// The HMAC key of [`CredentialKey`]s; never shown.
    secret: [u8; 32],
    /// The salt of published fingerprints (it is part of each).
    salt: [u8; 16],
}

impl Fingerprints {
    /// Fresh random key and salt (once per process: verdicts outlive reloads).
    pub fn random() -> Self {
        Self {
            secret: rand::random(),
            salt: rand::random(),
        }
    }

    /// A key shared by every replica of a fleet (fleet mode: derived from
    /// `cache.encryption_key`), so each files a credential under the same
    /// [`CredentialKey`]; a fresh random salt for published fingerprints.
    pub fn keyed(secret: [u8; 32]) -> Self {
        Self {
            secret,
            salt: rand::random(),
        }
    }

    /// The key the verdict of `c` is kept under.
    pub fn key(&self, c: &Credential<'_>) -> CredentialKey {
        CredentialKey(c.mac(&self.secret))
    }

    /// The fingerprint `/status` shows for `c` while it is parked.
    pub fn published(&self, c: &Credential<'_>) -> String {
        published_with(&self.salt, c)
    }
}

/// Whether `published` (from a running serve's `/status`) is the
/// fingerprint of `c`.
pub fn published_matches(published: &str, c: &Credential<'_>) -> bool {
    use subtle::ConstantTimeEq as _;
    let mut parts = published.split(':');
    let (Some("v1"), Some(salt), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(salt) = hex::decode(salt) else { return false };
    published_with(&salt, c).as_bytes().ct_eq(published.as_bytes()).into()
}

fn published_with(salt: &[u8], c: &Credential<'_>) -> String {
    format!("v1:{}:{}", hex::encode(salt), hex::encode(c.mac(salt)))
}

/// HMAC-SHA256 (RFC 2104), by the RustCrypto `hmac` crate.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac as _};
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = <Hmac<Sha256>>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_re_spelled_base_url_is_the_same_credential() {
        use crate::config::sample::ConfigToml;
        let f = Fingerprints::random();
        let key = |base: &str| {
            let config = ConfigToml::new(base).parse().expect("valid");
            f.key(&Credential::of(&config, Identity::ApiUser).expect("api user"))
        };
        let plain = key("http://127.0.0.1:7002");
        for spelling in ["HTTP://127.0.0.1:7002/", "http://0x7f.0.0.1:7002", "http://127.1:7002"] {
            assert_eq!(key(spelling), plain, "{spelling}");
        }
        assert_ne!(key("http://127.0.0.2:7002"), plain);
    }

    fn cred<'a>(base_url: &'a str, kind: &'static str, user: &'a str, password: &'a str) -> Credential<'a> {
        Credential {
            base_url,
            site_name: "SITE",
            kind,
            user,
            password,
        }
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let case2 = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(case2),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Case 6: a key longer than the block is hashed first.
        let case6 = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(
            hex::encode(case6),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn every_field_counts_and_fields_do_not_run_together() {
        let f = Fingerprints::random();
        let base = f.key(&cred("http://a", "ACCOUNT", "u", "pw"));
        assert_eq!(base, f.key(&cred("http://a", "ACCOUNT", "u", "pw")));
        for other in [
            cred("http://b", "ACCOUNT", "u", "pw"),
            cred("http://a", "CONTACT", "u", "pw"),
            cred("http://a", "ACCOUNT", "v", "pw"),
            cred("http://a", "ACCOUNT", "u", "pw2"),
            cred("http://a", "ACCOUNT", "up", "w"),
        ] {
            assert_ne!(base, f.key(&other));
        }
        let shared = [7u8; 32];
        assert_eq!(
            Fingerprints::keyed(shared).key(&cred("http://a", "ACCOUNT", "u", "pw")),
            Fingerprints::keyed(shared).key(&cred("http://a", "ACCOUNT", "u", "pw")),
            "one fleet key, one credential key on every replica"
        );
        assert_ne!(
            base,
            Fingerprints::random().key(&cred("http://a", "ACCOUNT", "u", "pw"))
        );
    }

    #[test]
    fn published_fingerprints_match_only_their_credential_and_hide_the_password() {
        let f = Fingerprints::random();
        let c = cred("http://a", "ACCOUNT", "u", "s3cret-pw");
        let p = f.published(&c);
        assert!(p.starts_with("v1:") && !p.contains("s3cret"), "{p}");
        assert!(published_matches(&p, &c));
        assert!(!published_matches(&p, &cred("http://a", "ACCOUNT", "u", "other")));
        assert!(!published_matches("v1:zz:00", &c));
        assert!(!published_matches("", &c));
        assert!(!format!("{:?}", f.key(&c)).contains("s3cret"));
    }
}
