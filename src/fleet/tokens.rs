//! Shared tokens: read, write (TTL no longer than the token's life),
//! compare-and-delete of exactly the token that failed, and waiting for
//! another replica's login (pub/sub, with a bounded poll behind it).

use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::{unix_ms, Fingerprint, Fleet, FleetEvent};

/// How often a waiting replica reads Redis when no event comes.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// A token as the fleet shares it.
#[derive(Clone, Debug)]
pub struct SharedToken {
    /// The token; exposed only where it is written upstream.
    pub value: SecretString,
    /// Random, so unique across the fleet: "the token this call used".
    pub id: u64,
    /// When the login that produced it was sent, unix ms.
    pub issued_ms: u64,
    /// When its lifetime ends, unix ms: never sent from then on.
    pub expires_ms: u64,
}

impl SharedToken {
    /// A token from a login sent at `issued`, living `lifetime`, with a fresh id.
    pub fn new(value: SecretString, issued: SystemTime, lifetime: Duration) -> Self {
        let issued_ms = unix_ms(issued);
        Self {
            value,
            id: rand::random(),
            issued_ms,
            expires_ms: issued_ms.saturating_add(lifetime.as_millis() as u64),
        }
    }

    /// Lifetime left from now (zero once expired).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.expires_ms.saturating_sub(unix_ms(SystemTime::now())))
    }
}

/// The sealed form, written.
#[derive(Serialize)]
struct Outgoing<'a> {
    v: &'a str,
    id: u64,
    iss: u64,
    exp: u64,
}

/// The sealed form, read.
#[derive(Deserialize)]
struct Incoming {
    v: String,
    id: u64,
    iss: u64,
    exp: u64,
}

impl Fleet {
    /// The live token under `key`, if Redis holds one this replica can
    /// open; anything else (absent, expired, corrupted, another encryption
    /// key, Redis unusable) is a miss.
    pub async fn get_token(&self, key: &Fingerprint) -> Option<SharedToken> {
        let name = self.key("token", key);
        let raw = self.get_raw(&name).await?;
        let t: Incoming = self.open(&name, &raw)?;
        let token = SharedToken {
            value: SecretString::from(t.v),
            id: t.id,
            issued_ms: t.iss,
            expires_ms: t.exp,
        };
        (!token.remaining().is_zero()).then_some(token)
    }

    /// Stores `token` under `key` for `ttl` at most (and never past its
    /// lifetime), and tells the fleet; returns whether it was written.
    pub async fn put_token(&self, key: &Fingerprint, token: &SharedToken, ttl: Duration) -> bool {
        let px = ttl.min(token.remaining()).as_millis() as u64;
        if px == 0 {
            return false;
        }
        let Some((name, sealed)) = self.sealed_token(key, token) else {
            return false;
        };
        let event = FleetEvent::TokenStored { key: key.clone() }.encode(&self.inner.replica);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&name).arg(sealed).arg("PX").arg(px).ignore();
        pipe.cmd("PUBLISH").arg(&self.inner.channel).arg(event).ignore();
        self.inner
            .link
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
            .is_some()
    }

    /// After a session error with token `id`: deletes it from Redis only if
    /// Redis still holds that very token (compare-and-delete on the bytes
    /// read), and tells the fleet to drop its copies of `id` either way.
    /// Returns whether it deleted.
    pub async fn delete_token_if(&self, key: &Fingerprint, id: u64) -> bool {
        let name = self.key("token", key);
        let mut deleted = false;
        if let Some(raw) = self.get_raw(&name).await {
            let held = self.open::<Incoming>(&name, &raw).is_some_and(|t| t.id == id);
            if held {
                deleted = self.compare_and_delete(&name, &raw).await == Some(true);
            }
        }
        self.publish_invalidated(key, id).await;
        deleted
    }

    /// Tells every replica that token `id` under `key` is dead.
    pub async fn publish_invalidated(&self, key: &Fingerprint, id: u64) -> bool {
        self.publish(FleetEvent::Invalidated { key: key.clone(), id }).await
    }

    /// Waits up to `within` for a token under `key` (another replica is
    /// logging in): woken by its `TokenStored` event, reading Redis at least
    /// every 250 ms in case the event is lost. Returns `None` at once when
    /// Redis is unusable, and as soon as the lease on `key` is released
    /// without a token (that login failed: consult the verdict).
    pub async fn wait_for_token(&self, key: &Fingerprint, within: Duration) -> Option<SharedToken> {
        self.wait_for_newer(key, within, None).await
    }

    /// Like [`Fleet::wait_for_token`], but a token with id `stale` (the one
    /// a renewal replaces, or one known dead) does not count as found.
    pub async fn wait_for_newer(&self, key: &Fingerprint, within: Duration, stale: Option<u64>) -> Option<SharedToken> {
        let deadline = Instant::now() + within;
        let mut events = self.inner.events.subscribe();
        let fresh = |t: &SharedToken| Some(t.id) != stale;
        loop {
            if !self.inner.link.is_ok() {
                return None;
            }
            if let Some(t) = self.get_token(key).await.filter(fresh) {
                return Some(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(left.min(POLL_EVERY), next_about(&mut events, key)).await {
                Ok(Some(FleetEvent::LeaseReleased { .. })) => return self.get_token(key).await.filter(fresh),
                _ => continue,
            }
        }
    }

    /// `token` sealed under its key name, and that name.
    fn sealed_token(&self, key: &Fingerprint, token: &SharedToken) -> Option<(String, Vec<u8>)> {
        let name = self.key("token", key);
        let plain = Outgoing {
            v: token.value.expose_secret(),
            id: token.id,
            iss: token.issued_ms,
            exp: token.expires_ms,
        };
        let sealed = self.seal(&name, &plain)?;
        Some((name, sealed))
    }

    /// Stores `token` under `key` only if Redis holds no token there (a
    /// replica writing its live token back after Redis lost its data);
    /// returns whether it was written.
    pub async fn put_token_if_absent(&self, key: &Fingerprint, token: &SharedToken) -> bool {
        let px = token.remaining().as_millis() as u64;
        if px == 0 {
            return false;
        }
        let Some((name, sealed)) = self.sealed_token(key, token) else {
            return false;
        };
        let set = redis::cmd("SET")
            .arg(&name)
            .arg(sealed)
            .arg("NX")
            .arg("PX")
            .arg(px)
            .clone();
        let written = self
            .inner
            .link
            .run(|mut c| async move { set.query_async::<Option<String>>(&mut c).await });
        written.await.flatten().is_some()
    }
}

/// The next event about `key` (a store or a release), or `None` when
/// events were missed and Redis should be read again.
async fn next_about(
    events: &mut tokio::sync::broadcast::Receiver<FleetEvent>,
    key: &Fingerprint,
) -> Option<FleetEvent> {
    loop {
        match events.recv().await {
            Ok(FleetEvent::TokenStored { key: k }) if k == *key => return Some(FleetEvent::TokenStored { key: k }),
            Ok(FleetEvent::LeaseReleased { key: k }) if k == *key => return Some(FleetEvent::LeaseReleased { key: k }),
            Ok(FleetEvent::Rejoined) | Err(RecvError::Lagged(_)) => return None,
            Ok(_) => continue,
            Err(RecvError::Closed) => return std::future::pending().await,
        }
    }
}
