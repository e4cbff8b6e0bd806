//! Renewal ahead of expiry: each token is logged in again in the
//! background `refresh_before` its lifetime ends (less up to 10 % jitter),
//! joining any login under way for its identity, and the fresh token
//! replaces it only if it is still the cached one. If renewal fails, the
//! old token serves until it expires; a parked identity is not renewed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::identity::Identity;
use super::{gate, Inner, Token, TokenError};

impl Inner {
    /// Renews `token` in the background `refresh_before` its end (plus up to
    /// 10 % jitter). Stops when the token was replaced, the store is gone,
    /// the identity is parked, or the token expires first.
    pub(super) fn schedule_renewal(self: &Arc<Self>, key: Identity, token: &Token) {
        let before = self.config.tokens.refresh_before;
        if before.is_zero() {
            return;
        }
        // Alone, jitter takes up to 10 % off the lead, never adds to it:
        // with `refresh_before` close to the lifetime, an added 10 % could
        // put the renewal before the login itself. In a fleet it adds up to
        // 10 % (PRODUCT.md §8: earlier, by at most `refresh_before`/2), so
        // one replica fires first and the others find its token; capped
        // so the renewal never comes before the token's issue.
        let jitter = before.mul_f64(rand::random::<f64>() * 0.1);
        let lead = match self.shared {
            Some(_) => (before + jitter).min(token.expires.saturating_duration_since(token.issued)),
            None => before - jitter,
        };
        let Some(at) = token.expires.checked_sub(lead) else {
            return;
        };
        let (weak, serial, expires) = (Arc::downgrade(self), token.serial, token.expires);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            // Boxed: the task sleeps for most of a day with only the small
            // state above; the login's large future exists only while it runs.
            Box::pin(Self::renew(weak, key, serial, expires)).await;
        });
    }

    /// The renewal loop of one token, started `refresh_before` its end.
    async fn renew(weak: Weak<Self>, key: Identity, serial: u64, expires: Instant) {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            if inner.retired.load(Ordering::Relaxed) {
                return;
            }
            match inner.store.get(key).await {
                Some(current) if current.serial == serial => {}
                _ => return,
            }
            let wait = match inner.login_once(key, Some(serial)).await {
                Ok(fresh) => {
                    inner.metrics.renewal("scheduled");
                    inner.store.replace_if_same(key, serial, fresh).await;
                    return;
                }
                Err(TokenError::Parked { .. }) => return,
                Err(TokenError::Backoff { retry_after, .. }) => retry_after,
                Err(_) => gate::BACKOFF_MIN,
            };
            drop(inner);
            // Checked: `wait` may come from an upstream's `Retry-After`,
            // which no config bound limits.
            if Instant::now().checked_add(wait).is_none_or(|t| t >= expires) {
                return; // the next call after expiry logs in on demand
            }
            tokio::time::sleep(wait).await;
        }
    }
}
