//! The token store: every principal's Knowledge Advanced tokens, and the
//! prepared `kmauthtoken` value that carries them. [`TokenStore`] is all
//! the rest of kmproxy sees; the data path calls only
//! [`TokenStore::credentials`], [`TokenStore::invalidate`] and
//! [`TokenStore::defaults`].
//!
//! The request path rarely goes further than this file: each principal's
//! prepared [`Credentials`] (tokens plus the finished `kmauthtoken` value)
//! are used as they are while both tokens are live, which costs an
//! `ArcSwap` load, a clock read and two atomic loads. A token the store
//! drops or replaces is marked superseded, which sends the next call down
//! the slow path. After a session error the caller drops exactly the
//! tokens it used ([`TokenStore::invalidate`]), never a newer one.
//!
//! # Layout
//!
//! - `identity`: [`Identity`] (the API user or one user principal), and the
//!   table with one slot per identity.
//! - `backend`: where tokens and login verdicts are kept, the seam a
//!   shared store (fleet mode) fills; its doc says what that implements.
//! - `obtain`: a live token for an identity: the held one, or one login
//!   through the lockout gate.
//! - `flight`: at most one login under way per identity, joined by all.
//! - `renewal`: logging in again `refresh_before` a token's end.
//! - `carry`: what a reload keeps (tokens, lockout state).
//! - [`gate`]: one identity's lockout state (parked, backoff).
//! - [`login`]: the two upstream login calls.

mod backend;
mod carry;
mod flight;
pub mod gate;
mod identity;
pub mod login;
mod obtain;
mod renewal;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{Config, PrincipalId, PrincipalKind};
use crate::kmauthtoken::{CallerFields, Defaults, Prefix};
use crate::metrics::Metrics;
use crate::upstream::{HttpClient, Origin, OriginError};
use backend::{LocalStore, VerdictKey};
use flight::Flights;
use gate::GateStatus;
pub use identity::Identity;
use identity::PerIdentity;

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
    /// A user principal's user token; `None` for the others.
    user: Option<Arc<Token>>,
    /// The header's token part, finished per call with the caller's fields.
    prefix: Prefix,
    /// The full header value for calls that bring no `kmauthtoken`.
    header: HeaderValue,
}

impl Credentials {
    /// Credentials carrying these tokens, with their header made once.
    fn prepare(config: &Config, defaults: &Defaults, integration: Arc<Token>, user: Option<Arc<Token>>) -> Self {
        let prefix = Prefix::new(
            &config.upstream.site_name,
            integration.value.expose_secret(),
            user.as_ref().map(|u| u.value.expose_secret()),
        );
        let header = prefix.finish(&CallerFields::default(), defaults);
        Self {
            integration,
            user,
            prefix,
            header,
        }
    }

    /// Whether these are the credentials of exactly these tokens.
    fn holds(&self, integration: &Arc<Token>, user: Option<&Arc<Token>>) -> bool {
        let same_user = match (&self.user, user) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_user && Arc::ptr_eq(&self.integration, integration)
    }

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
    /// The tokens and login verdicts: the seam a shared store fills.
    store: LocalStore,
    /// Per principal: the last prepared credentials, rebuilt when a token changes.
    prepared: Box<[ArcSwapOption<Credentials>]>,
    /// Metric label per identity.
    labels: PerIdentity<Arc<String>>,
    /// The logins under way, joined by every caller (and renewal) that
    /// needs the token of the same identity.
    flights: Flights<Result<Arc<Token>, TokenError>>,
    defaults: Defaults,
    /// The next token's serial.
    serial: AtomicU64,
    metrics: Arc<Metrics>,
    /// Set when a reload replaced this store: its renewal tasks stop.
    retired: AtomicBool,
}

impl TokenStore {
    /// A store for `config`, logging in through `client`.
    pub fn new(config: Arc<Config>, client: HttpClient, metrics: Arc<Metrics>) -> Result<Self, OriginError> {
        let store = LocalStore::new(config.principals.len());
        Self::build(config, client, metrics, store)
    }

    fn build(
        config: Arc<Config>,
        client: HttpClient,
        metrics: Arc<Metrics>,
        store: LocalStore,
    ) -> Result<Self, OriginError> {
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
                store,
                prepared: (0..n).map(|_| ArcSwapOption::empty()).collect(),
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
    ) -> Result<(Self, Vec<String>), OriginError> {
        let (prev, carry) = (&old.inner, carry::carry(&old.inner.config, &config));
        let mut store = LocalStore::new(config.principals.len());
        for (from, to) in carry.gates {
            store.adopt_verdict(to, &prev.store, from);
        }
        let fresh = Self::build(config, client, metrics, store)?;
        for (from, to) in carry.tokens {
            if let Some(token) = prev.store.get(from).await {
                fresh.inner.store.put(to, Arc::clone(&token)).await;
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
            if c.holds(&integration, user.as_ref()) {
                return Ok(Arc::clone(c));
            }
        }
        let fresh = Arc::new(Credentials::prepare(&inner.config, &inner.defaults, integration, user));
        slot.store(Some(Arc::clone(&fresh)));
        Ok(fresh)
    }

    /// Drops the tokens `used` carried (after a session error), unless a
    /// newer token already replaced them.
    pub async fn invalidate(&self, p: PrincipalId, used: &Credentials) {
        let inner = &self.inner;
        if inner
            .store
            .remove_if_same(Identity::ApiUser, used.integration.serial)
            .await
        {
            inner.metrics.renewal("session_error");
        }
        if let Some(user) = &used.user {
            if inner.store.remove_if_same(Identity::User(p), user.serial).await {
                inner.metrics.renewal("session_error");
            }
        }
    }

    /// The config this store serves.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// Un-parks `who` (and the API user every identity depends on).
    pub async fn reset(&self, who: Identity) {
        let inner = &self.inner;
        inner.store.reset(inner.verdict_key(Identity::ApiUser)).await;
        inner.store.reset(inner.verdict_key(who)).await;
    }

    /// The login history and lockout state of `who`.
    pub fn login_status(&self, who: Identity) -> GateStatus {
        self.inner
            .store
            .login_status(self.inner.verdict_key(who), Instant::now())
    }

    /// Issue and expiry of the token of `who`, if one is held.
    pub async fn token_times(&self, who: Identity) -> Option<(SystemTime, SystemTime)> {
        let t = self.inner.store.get(who).await?;
        let lifetime = t.expires.saturating_duration_since(t.issued);
        Some((t.issued_at, t.issued_at + lifetime))
    }

    /// Tokens held right now.
    pub async fn cached_tokens(&self) -> u64 {
        self.inner.store.token_count().await
    }

    /// How many login identities (the API user included) are parked.
    pub fn parked(&self) -> usize {
        self.inner.store.parked()
    }
}

impl Inner {
    fn count_login(&self, who: Identity, outcome: &'static str) {
        self.metrics.login(&self.labels[who], outcome);
    }

    fn name_of(&self, who: Identity) -> String {
        match who {
            Identity::ApiUser => format!("api_user ({})", self.config.api_user.login),
            Identity::User(p) => self.config.principals[p].name.clone(),
        }
    }

    /// Whose verdict the logins of `who` consult: the one place that would
    /// derive a credential key from the config instead (see [`backend`]).
    fn verdict_key(&self, who: Identity) -> VerdictKey {
        who
    }
}
