//! The token store: every principal's Knowledge Advanced tokens, and the
//! prepared `kmauthtoken` value that carries them.
//!
//! Tokens live in a [`moka`] cache keyed by [`Identity`] (the one integration
//! token, and a user token per console or web user principal); each entry
//! expires when its lifetime ends, and no token past that point is handed
//! out. Concurrent misses for one key share one login (`try_get_with`).
//! A background task renews each token `refresh_before` its end, with a
//! little jitter; if renewal fails the old token serves until it expires.
//! After a session error the caller drops exactly the tokens it used
//! ([`TokenStore::invalidate`]), never a newer one. Logins pass through a
//! per-identity [`gate::Gate`] that enforces lockout safety.
//!
//! The request path rarely touches the cache: each principal's prepared
//! [`Credentials`] (tokens plus the finished `kmauthtoken` value) are used
//! as they are while both tokens are live, which costs an `ArcSwap` load,
//! a clock read and two atomic loads. A token the cache drops or replaces
//! is marked superseded, which sends the next call down the slow path.

mod carry;
mod flight;
pub mod gate;
mod identity;
pub mod login;
mod renewal;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use futures_util::future::BoxFuture;
use http::HeaderValue;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{Config, PrincipalId, PrincipalKind};
use crate::kmauthtoken::{CallerFields, Defaults, Prefix};
use crate::metrics::Metrics;
use crate::upstream::{HttpClient, Origin};
use flight::Flights;
use gate::{Closed, Gate, GateStatus};
pub use identity::Identity;
use identity::PerIdentity;
use login::LoginError;

/// One token from the upstream.
#[derive(Debug)]
pub struct Token {
    value: SecretString,
    /// Unique per login, so "the token this call used" is unambiguous.
    serial: u64,
    /// When the login that produced it was sent.
    issued: Instant,
    /// `issued` + the configured lifetime: never sent from then on.
    expires: Instant,
    /// Wall-clock `issued`, for status.
    issued_at: SystemTime,
    /// Set when the cache drops or replaces this token, so prepared
    /// credentials holding it are rebuilt.
    superseded: AtomicBool,
}

impl Token {
    /// Still the cache's token for its key, and within its lifetime.
    fn live(&self, now: Instant) -> bool {
        now < self.expires && !self.superseded.load(Ordering::Acquire)
    }
}

/// A principal's tokens and its prepared `kmauthtoken`.
#[derive(Debug)]
pub struct Credentials {
    integration: Arc<Token>,
    user: Option<Arc<Token>>,
    prefix: Prefix,
    /// The full header value for calls that bring no `kmauthtoken`.
    header: HeaderValue,
}

impl Credentials {
    /// The `kmauthtoken` value for a call, merging the caller's fields if any.
    pub fn kmauthtoken(&self, caller: Option<&CallerFields>, defaults: &Defaults) -> HeaderValue {
        match caller {
            Some(fields) if !fields.is_empty() => self.prefix.finish(fields, defaults),
            _ => self.header.clone(),
        }
    }
}

/// Why no credentials could be had for a principal.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error(
        "login for `{principal}` was rejected ({reason}); kmproxy will not try this password again: \
         fix the secret and reload (SIGHUP), or POST /principals/{principal}/reset on the admin port"
    )]
    Parked { principal: String, reason: String },
    #[error("login for `{principal}` is backing off after failures; retry in {}s", retry_after.as_secs().max(1))]
    Backoff { principal: String, retry_after: Duration },
    #[error("login for `{principal}` failed: {reason}")]
    Failed { principal: String, reason: String },
    #[error("login for `{principal}` timed out after {timeout:?}")]
    Timeout { principal: String, timeout: Duration },
}

/// Expires each cache entry when its token's lifetime ends.
struct AtLifetimeEnd;

impl Expiry<Identity, Arc<Token>> for AtLifetimeEnd {
    fn expire_after_create(&self, _: &Identity, t: &Arc<Token>, now: Instant) -> Option<Duration> {
        Some(t.expires.saturating_duration_since(now))
    }

    fn expire_after_update(&self, _: &Identity, t: &Arc<Token>, now: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(t.expires.saturating_duration_since(now))
    }
}

/// Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct TokenStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    client: HttpClient,
    /// Where logins go (`base_url`).
    origin: Origin,
    cache: Cache<Identity, Arc<Token>>,
    /// Per principal: the last prepared credentials, rebuilt when a token changes.
    prepared: Box<[ArcSwapOption<Credentials>]>,
    /// Shared with the store that replaces this one on reload when the
    /// identity is unchanged, so a parked login stays parked.
    gates: PerIdentity<Arc<Gate>>,
    /// Metric label per identity.
    labels: PerIdentity<Arc<String>>,
    /// The logins under way, joined by every caller (and renewal) that
    /// needs the token of the same identity.
    flights: Flights<Result<Arc<Token>, TokenError>>,
    defaults: Defaults,
    serial: AtomicU64,
    metrics: Arc<Metrics>,
    /// Set when a reload replaced this store: its renewal tasks stop.
    retired: AtomicBool,
}

impl TokenStore {
    /// A store for `config`, logging in through `client`.
    pub fn new(config: Arc<Config>, client: HttpClient, metrics: Arc<Metrics>) -> Result<Self, String> {
        let origin = client.origin(&config.upstream.base_url)?;
        let n = config.principals.len();
        let defaults = Defaults {
            extra: config.upstream.kmauthtoken_extra.clone(),
            locale: config.upstream.locale.clone(),
        };
        let labels = PerIdentity::new(n, |who| {
            Arc::new(match who {
                Identity::ApiUser => "api_user".to_owned(),
                Identity::User(p) => config.principals[p].name.clone(),
            })
        });
        Ok(Self {
            inner: Arc::new(Inner {
                cache: Cache::builder().expire_after(AtLifetimeEnd).build(),
                prepared: (0..n).map(|_| ArcSwapOption::empty()).collect(),
                gates: PerIdentity::new(n, |_| Arc::new(Gate::default())),
                flights: Flights::new(n),
                labels,
                defaults,
                origin,
                client,
                config,
                serial: AtomicU64::new(1),
                metrics,
                retired: AtomicBool::new(false),
            }),
        })
    }

    /// A store for a reloaded `config` that keeps, from `old`, the tokens
    /// and login gates of every identity whose credentials did not change
    /// (so a parked login stays parked unless its secret changed), and
    /// leaves `old` running (call [`TokenStore::retire`] on it once the new
    /// store serves). Returns the store and the names of identities that
    /// start afresh. What is kept is decided by [`carry::carry`].
    pub async fn succeed(
        config: Arc<Config>,
        client: HttpClient,
        metrics: Arc<Metrics>,
        old: &TokenStore,
    ) -> Result<(Self, Vec<String>), String> {
        let carry = carry::carry(&old.inner.config, &config);
        let mut fresh = Self::new(config, client, metrics)?;
        let inner = Arc::get_mut(&mut fresh.inner).ok_or("token store shared before use")?;
        for (from, to) in carry.gates {
            inner.gates[to] = Arc::clone(&old.inner.gates[from]);
        }
        for (from, to) in carry.tokens {
            if let Some(token) = old.inner.cache.get(&from).await {
                fresh.inner.cache.insert(to, Arc::clone(&token)).await;
                fresh.inner.schedule_renewal(to, &token);
            }
        }
        Ok((fresh, carry.restarted))
    }

    /// Stops this store's renewal tasks: a reload has replaced it.
    pub fn retire(&self) {
        self.inner.retired.store(true, Ordering::Relaxed);
    }

    /// Fetches the integration token (logging in if needed), which every
    /// principal needs: the warm-up at start and on a failing `/readyz`.
    pub async fn warm(&self) -> Result<(), TokenError> {
        self.inner.token(Identity::ApiUser).await.map(|_| ())
    }

    /// The configured, token-independent `kmauthtoken` fields.
    pub fn defaults(&self) -> &Defaults {
        &self.inner.defaults
    }

    /// Credentials for principal `p`, logging in if needed.
    pub async fn credentials(&self, p: PrincipalId) -> Result<Arc<Credentials>, TokenError> {
        let inner = &self.inner;
        let slot = &inner.prepared[p];
        // Fast path: the prepared credentials, while both tokens are live.
        if let Some(c) = slot.load().as_ref() {
            let now = Instant::now();
            if c.integration.live(now) && c.user.as_ref().is_none_or(|u| u.live(now)) {
                return Ok(Arc::clone(c));
            }
        }
        // Boxed: the slow path holds the login futures, which are large;
        // inline, every call's future would carry (and move) them.
        Box::pin(self.credentials_slow(p)).await
    }

    /// Gets both tokens (logging in as needed) and prepares credentials.
    async fn credentials_slow(&self, p: PrincipalId) -> Result<Arc<Credentials>, TokenError> {
        let inner = &self.inner;
        let slot = &inner.prepared[p];
        // The user token first: its login may find the integration token
        // stale and replace it, and the value read next is then the new one.
        let user = match inner.config.principals[p].kind {
            PrincipalKind::User { .. } => Some(inner.token(Identity::User(p)).await?),
            _ => None,
        };
        let integration = inner.token(Identity::ApiUser).await?;
        if let Some(c) = slot.load().as_ref() {
            let same_user = match (&c.user, &user) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same_user && Arc::ptr_eq(&c.integration, &integration) {
                return Ok(Arc::clone(c));
            }
        }
        let prefix = Prefix::new(
            &inner.config.upstream.site_name,
            integration.value.expose_secret(),
            user.as_ref().map(|u| u.value.expose_secret()),
        );
        let header = prefix.finish(&CallerFields::default(), &inner.defaults);
        let fresh = Arc::new(Credentials {
            integration,
            user,
            prefix,
            header,
        });
        slot.store(Some(Arc::clone(&fresh)));
        Ok(fresh)
    }

    /// Drops the tokens `used` carried (after a session error), unless a
    /// newer token already replaced them.
    pub async fn invalidate(&self, p: PrincipalId, used: &Credentials) {
        let inner = &self.inner;
        if inner.remove_if_same(Identity::ApiUser, used.integration.serial).await {
            inner.metrics.renewal("session_error");
        }
        if let Some(user) = &used.user {
            if inner.remove_if_same(Identity::User(p), user.serial).await {
                inner.metrics.renewal("session_error");
            }
        }
    }

    /// The config this store serves.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// Un-parks `who` (and the API user every identity depends on).
    pub fn reset(&self, who: Identity) {
        self.inner.gates[Identity::ApiUser].reset();
        self.inner.gates[who].reset();
    }

    /// The login history and lockout state of `who`.
    pub fn login_status(&self, who: Identity) -> GateStatus {
        self.inner.gates[who].status(Instant::now())
    }

    /// Issue and expiry of the token of `who`, if one is held.
    pub async fn token_times(&self, who: Identity) -> Option<(SystemTime, SystemTime)> {
        let t = self.inner.cache.get(&who).await?;
        let lifetime = t.expires.saturating_duration_since(t.issued);
        Some((t.issued_at, t.issued_at + lifetime))
    }

    /// Tokens held right now.
    pub async fn cached_tokens(&self) -> u64 {
        self.inner.cache.run_pending_tasks().await;
        self.inner.cache.entry_count()
    }

    /// How many login identities (the API user included) are parked.
    pub fn parked(&self) -> usize {
        self.inner.gates.iter().filter(|g| g.is_parked()).count()
    }
}

impl Inner {
    fn count_login(&self, key: Identity, outcome: &'static str) {
        self.metrics.login(&self.labels[key], outcome);
    }

    fn name_of(&self, key: Identity) -> String {
        match key {
            Identity::ApiUser => format!("api_user ({})", self.config.api_user.login),
            Identity::User(p) => self.config.principals[p].name.clone(),
        }
    }

    /// A live token for `key`: the cached one, or one fresh login shared by
    /// every concurrent caller.
    async fn token(self: &Arc<Self>, key: Identity) -> Result<Arc<Token>, TokenError> {
        if let Some(t) = self.cache.get(&key).await {
            if t.live(Instant::now()) {
                return Ok(t);
            }
            self.remove_if_same(key, t.serial).await;
        }
        let this = Arc::clone(self);
        self.cache
            .try_get_with(key, async move { this.login_once(key).await })
            .await
            .map_err(|e| (*e).clone())
    }

    /// [`Inner::login`] as a task of its own: it runs to its end whoever
    /// waits for it, holds the store only while it runs, and a panic in
    /// it is a failed login, not a poisoned one. (The type is spelled out:
    /// a user login needs the integration token, which may need a login,
    /// so the compiler cannot infer `Send` through the cycle.)
    fn login_task(self: Arc<Self>, key: Identity) -> BoxFuture<'static, Result<Arc<Token>, TokenError>> {
        let principal = self.name_of(key);
        let task = tokio::spawn(
            Box::pin(async move { self.login(key).await }) as BoxFuture<'static, Result<Arc<Token>, TokenError>>
        );
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(TokenError::Failed {
                    principal,
                    reason: format!("login task ended: {e}"),
                })
            })
        })
    }

    /// Joins the login under way for `key`, or starts one.
    async fn login_once(self: &Arc<Self>, key: Identity) -> Result<Arc<Token>, TokenError> {
        self.flights
            .join_or_start(key, || Arc::clone(self).login_task(key))
            .await
    }

    /// Removes the entry for `key` if it still holds token `serial`;
    /// returns whether it did.
    async fn remove_if_same(&self, key: Identity, serial: u64) -> bool {
        let result = self
            .cache
            .entry(key)
            .and_compute_with(|entry| {
                let op = match entry {
                    Some(e) if e.value().serial == serial => {
                        e.value().superseded.store(true, Ordering::Release);
                        Op::Remove
                    }
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        matches!(result, CompResult::Removed(_))
    }

    /// One login through the gate; schedules the new token's renewal.
    async fn login(self: &Arc<Self>, key: Identity) -> Result<Arc<Token>, TokenError> {
        let gate = &self.gates[key];
        let principal = || self.name_of(key);
        gate.check(Instant::now()).map_err(|closed| match closed {
            Closed::Parked(reason) => TokenError::Parked {
                principal: principal(),
                reason,
            },
            Closed::Backoff(retry_after) => TokenError::Backoff {
                principal: principal(),
                retry_after,
            },
        })?;
        let mut retried_stale = false;
        loop {
            let issued = Instant::now();
            let issued_at = SystemTime::now();
            let result = match key {
                Identity::ApiUser => login::integration(&self.client, &self.origin, &self.config).await,
                Identity::User(p) => {
                    let integration = Box::pin(self.token(Identity::ApiUser)).await?;
                    let PrincipalKind::User {
                        external_type,
                        user,
                        password,
                    } = &self.config.principals[p].kind
                    else {
                        return Err(TokenError::Failed {
                            principal: principal(),
                            reason: "not a user principal".into(),
                        });
                    };
                    let r = login::user(
                        &self.client,
                        &self.origin,
                        &self.config,
                        integration.value.expose_secret(),
                        *external_type,
                        user,
                        password.expose(),
                    )
                    .await;
                    if matches!(r, Err(LoginError::StaleIntegration)) && !retried_stale {
                        // The integration token died early: drop it and
                        // try once more with a fresh one.
                        retried_stale = true;
                        self.remove_if_same(Identity::ApiUser, integration.serial).await;
                        continue;
                    }
                    r
                }
            };
            return match result {
                Ok(value) => {
                    gate.succeeded();
                    self.count_login(key, "ok");
                    tracing::info!(principal = %principal(), "logged in");
                    let token = Arc::new(Token {
                        value,
                        serial: self.serial.fetch_add(1, Ordering::Relaxed),
                        issued,
                        expires: issued + self.config.tokens.lifetime,
                        issued_at,
                        superseded: AtomicBool::new(false),
                    });
                    self.schedule_renewal(key, &token);
                    Ok(token)
                }
                Err(LoginError::Rejected(reason)) => {
                    tracing::error!(principal = %principal(), %reason, "login rejected; parked until its secret changes or it is reset");
                    gate.rejected(reason.clone());
                    self.count_login(key, "rejected");
                    Err(TokenError::Parked {
                        principal: principal(),
                        reason,
                    })
                }
                Err(LoginError::Timeout(timeout)) => {
                    self.count_login(key, "failed");
                    gate.failed(format!("timed out after {timeout:?}"), Instant::now());
                    Err(TokenError::Timeout {
                        principal: principal(),
                        timeout,
                    })
                }
                Err(e) => {
                    self.count_login(key, "failed");
                    let reason = e.to_string();
                    let wait = gate.failed(reason.clone(), Instant::now());
                    tracing::warn!(principal = %principal(), %reason, backoff = ?wait, "login failed");
                    Err(TokenError::Failed {
                        principal: principal(),
                        reason,
                    })
                }
            };
        }
    }
}
