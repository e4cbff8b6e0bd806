//! Obtaining a live token for an identity: the held one, or one login
//! shared by every caller that needs it ([`Flights`](super::flight::Flights)
//! inside the store's single flight), let through by its credential's
//! lockout verdict and recorded there. A user login that finds the
//! integration token stale drops it and tries once more with a fresh one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};

use super::backend::VerdictKey;
use super::gate::Closed;
use super::identity::Identity;
use super::login::{self, LoginError};
use super::{Inner, Token, TokenError};
use crate::config::{PrincipalId, PrincipalKind};

/// When a login was sent, by both clocks.
#[derive(Clone, Copy)]
struct Sent {
    at: Instant,
    wall: SystemTime,
}

impl Sent {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

impl Inner {
    /// A serial no other token of the fleet has (the mint time in unix ms,
    /// then 20 random bits) that also grows: a token minted later has a
    /// larger one, which [`TokenStore::invalidate`](super::TokenStore::invalidate) relies on.
    fn next_serial(&self) -> u64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let candidate = (now_ms << 20) | (rand::random::<u64>() & 0xF_FFFF);
        let mut current = self.serial.load(Ordering::Relaxed);
        loop {
            let next = candidate.max(current + 1);
            match self
                .serial
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    /// A live token for `who`: the held one, or one fresh login shared by
    /// every concurrent caller.
    pub(super) async fn token(self: &Arc<Self>, who: Identity) -> Result<Arc<Token>, TokenError> {
        if let Some(t) = self.store.get(who).await {
            if t.live(Instant::now()) {
                return Ok(t);
            }
            self.store.remove_if_same(who, t.serial).await;
        }
        let this = Arc::clone(self);
        self.store
            .get_with(who, async move { this.login_once(who, None).await })
            .await
    }

    /// Joins the login under way for `who`, or starts one (`replacing`:
    /// the token a renewal replaces, which the fleet's copy must not be).
    pub(super) async fn login_once(
        self: &Arc<Self>,
        who: Identity,
        replacing: Option<u64>,
    ) -> Result<Arc<Token>, TokenError> {
        self.flights
            .join_or_start(who, || Arc::clone(self).login_task(who, replacing))
            .await
    }

    /// [`Inner::login`] as a task of its own: it runs to its end whoever
    /// waits for it, holds the store only while it runs, and a panic in
    /// it is a failed login, not a poisoned one. (The type is spelled out:
    /// a user login needs the integration token, which may need a login,
    /// so the compiler cannot infer `Send` through the cycle.)
    fn login_task(
        self: Arc<Self>,
        who: Identity,
        replacing: Option<u64>,
    ) -> BoxFuture<'static, Result<Arc<Token>, TokenError>> {
        let principal = self.name_of(who);
        let task = tokio::spawn(Box::pin(async move { self.login(who, replacing).await })
            as BoxFuture<'static, Result<Arc<Token>, TokenError>>);
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(TokenError::Failed {
                    principal,
                    reason: format!("login task ended: {e}"),
                })
            })
        })
    }

    /// A token for `who`: in fleet mode the fleet's, or one login under its
    /// lease; else one login through the verdict gate.
    async fn login(self: &Arc<Self>, who: Identity, replacing: Option<u64>) -> Result<Arc<Token>, TokenError> {
        let key = self.verdict_key(who).ok_or_else(|| TokenError::Failed {
            principal: self.name_of(who),
            reason: "not a user principal".into(),
        })?;
        match self.shared {
            Some(_) => self.fleet_login(who, key, replacing).await,
            None => self.local_login(who, key).await,
        }
    }

    /// Whether the gate of `key` lets a login of `who` through now.
    pub(super) fn gate(&self, who: Identity, key: VerdictKey) -> Result<(), TokenError> {
        self.store.check_now(key).map_err(|closed| match closed {
            Closed::Parked(reason) => self.parked(who, reason),
            Closed::Backoff(retry_after) => TokenError::Backoff {
                principal: self.name_of(who),
                retry_after,
            },
        })
    }

    /// One login through the verdict gate, on this replica's own
    /// authority; schedules the new token's renewal.
    pub(super) async fn local_login(
        self: &Arc<Self>,
        who: Identity,
        key: VerdictKey,
    ) -> Result<Arc<Token>, TokenError> {
        self.gate(who, key)?;
        let (sent, result) = match who {
            Identity::ApiUser => {
                let sent = Sent::now();
                (sent, login::integration(&self.client, &self.origin, &self.config).await)
            }
            Identity::User(p) => self.user_login(p).await?,
        };
        self.record(who, key, sent, result).await
    }

    /// The answer for callers of a parked identity, naming its reset.
    fn parked(&self, who: Identity, reason: String) -> TokenError {
        TokenError::Parked {
            principal: self.name_of(who),
            reason,
            reset: self.reset_path(who),
        }
    }

    /// The user login of principal `p`, carrying the integration token;
    /// tried once more with a fresh one if that token was stale.
    async fn user_login(
        self: &Arc<Self>,
        p: PrincipalId,
    ) -> Result<(Sent, Result<SecretString, LoginError>), TokenError> {
        let PrincipalKind::User {
            external_type,
            user,
            password,
        } = &self.config.principals[p].kind
        else {
            return Err(TokenError::Failed {
                principal: self.name_of(Identity::User(p)),
                reason: "not a user principal".into(),
            });
        };
        let mut retried_stale = false;
        loop {
            let sent = Sent::now();
            let integration = Box::pin(self.token(Identity::ApiUser)).await?;
            let (client, origin, config) = (&self.client, &self.origin, &self.config);
            let token = integration.value.expose_secret();
            let result = login::user(client, origin, config, token, *external_type, user, password.expose()).await;
            if matches!(result, Err(LoginError::StaleIntegration)) && !retried_stale {
                // The integration token died early: drop it and try once
                // more with a fresh one.
                retried_stale = true;
                self.store.remove_if_same(Identity::ApiUser, integration.serial).await;
                continue;
            }
            return Ok((sent, result));
        }
    }

    /// Records a login's outcome at the gate (under `key`) and in the
    /// metrics; a token is minted and its renewal scheduled.
    async fn record(
        self: &Arc<Self>,
        who: Identity,
        key: VerdictKey,
        sent: Sent,
        result: Result<SecretString, LoginError>,
    ) -> Result<Arc<Token>, TokenError> {
        let error = match result {
            Ok(value) => {
                self.store.succeeded(key).await;
                self.count_login(who, "ok");
                tracing::info!(principal = %self.name_of(who), "logged in");
                let token = self.mint(value, sent);
                self.schedule_renewal(who, &token);
                return Ok(token);
            }
            Err(e) => e,
        };
        let rejected = matches!(error, LoginError::Rejected(_));
        self.count_login(who, if rejected { "rejected" } else { "failed" });
        Err(self.record_failure(who, key, error).await)
    }

    /// Records a failed login by what it says about the password: parked
    /// if rejected (or unanswered once too often), else backing off.
    async fn record_failure(&self, who: Identity, key: VerdictKey, error: LoginError) -> TokenError {
        let (principal, reason, now) = (self.name_of(who), error.to_string(), Instant::now());
        let wait = match error {
            LoginError::Rejected(answer) => {
                let reason = format!("rejected: {answer}");
                tracing::error!(%principal, %reason, "login rejected; parked until its secret changes or it is reset");
                self.store.rejected(key, reason.clone()).await;
                return self.parked(who, reason);
            }
            LoginError::Timeout(_) | LoginError::Unanswered(_) => {
                match self.store.unanswered(key, reason.clone(), now).await {
                    Ok(wait) => wait,
                    Err(parked) => {
                        tracing::error!(%principal, reason = %parked, "login parked: it may have been rejected");
                        return self.parked(who, parked);
                    }
                }
            }
            LoginError::Throttled { retry_after, .. } => {
                let at_least = retry_after.unwrap_or_default();
                let wait = self.store.failed(key, reason.clone(), now, at_least).await;
                tracing::warn!(%principal, %reason, backoff = ?wait, "login throttled by the upstream");
                return TokenError::Backoff {
                    principal,
                    retry_after: wait,
                };
            }
            LoginError::Transient(_) | LoginError::StaleIntegration => {
                self.store.failed(key, reason.clone(), now, Duration::ZERO).await
            }
        };
        tracing::warn!(%principal, %reason, backoff = ?wait, "login failed");
        match error {
            LoginError::Timeout(timeout) => TokenError::Timeout { principal, timeout },
            _ => TokenError::Failed { principal, reason },
        }
    }

    /// A new token from a login sent at `sent`, with a serial of its own.
    fn mint(&self, value: SecretString, sent: Sent) -> Arc<Token> {
        Arc::new(Token {
            value,
            serial: self.next_serial(),
            issued: sent.at,
            expires: sent.at + self.config.tokens.lifetime,
            issued_at: sent.wall,
            superseded: AtomicBool::new(false),
        })
    }
}
