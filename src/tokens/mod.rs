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
//! tokens it used ([`TokenStore::invalidate`]), never a newer one, and at
//! most once per identity per `min_relogin_interval`.
//!
//! Lockout verdicts belong to credentials (site, user kind, user,
//! password), kept in one table for the life of the process: no reload,
//! rename or second principal for the same user tries a rejected password
//! again. Principals that log in as the same user share one identity: one
//! login, one token.
//!
//! # Layout
//!
//! - `identity`: [`Identity`] (the API user or one user credential), and the
//!   table with one slot per identity.
//! - `credential`: what a verdict belongs to, and its keyed fingerprint.
//! - `backend`: where tokens and login verdicts are kept, the seam a
//!   shared store (fleet mode) fills; its doc says what that implements.
//! - `obtain`: a live token for an identity: the held one, or one login
//!   through the lockout gate.
//! - `flight`: at most one login under way per identity, joined by all.
//! - `renewal`: logging in again `refresh_before` a token's end.
//! - `shared`: fleet mode: the fleet's tokens, leases, verdicts and events
//!   around the local store, consulted only where a login would happen.
//! - `carry`: which tokens a reload keeps.
//! - [`gate`]: one credential's lockout state (parked, backoff, unanswered
//!   logins, re-login spacing).
//! - [`login`]: the two upstream login calls.

mod backend;
mod carry;
mod credential;
mod flight;
pub mod gate;
mod identity;
pub mod login;
mod obtain;
mod renewal;
mod shared;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{Config, PrincipalId};
use crate::fleet::{CacheState, Fleet};
use crate::kmauthtoken::{CallerFields, Defaults, Prefix};
use crate::metrics::Metrics;
use crate::upstream::{HttpClient, Origin, OriginError};
pub use backend::ParkedCredential;
use backend::{Dropped, LocalStore, VerdictKey, Verdicts};
use credential::Credential;
use flight::Flights;
use gate::GateStatus;
pub use identity::Identity;
use identity::PerIdentity;
use shared::Shared;

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
    /// Rejected, or "outcome unknown" after unanswered logins: never tried
    /// again with this password.
    #[error(
        "login for `{principal}` is parked ({reason}); kmproxy will not try this password again: \
         fix the secret and reload (SIGHUP), or POST {reset} on the admin port"
    )]
    Parked {
        principal: String,
        reason: String,
        /// The admin path that un-parks it (`/api-user/reset` or
        /// `/principals/NAME/reset`).
        reset: String,
    },
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
    /// The tokens and login verdicts: this replica's own copy.
    store: LocalStore,
    /// Fleet mode (`[cache]`): what is shared through Redis; `None` alone.
    shared: Option<Shared>,
    /// Per principal, the identity it logs in as ([`Identity::of`]).
    login_of: Box<[Identity]>,
    /// Per identity, the key its verdict is kept under (`None` for the
    /// slot of a principal that is no user).
    keys: PerIdentity<Option<VerdictKey>>,
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
    /// A store for `config`, logging in through `client`, with a verdict
    /// table of its own (a reload hands it on: [`TokenStore::succeed`]).
    pub fn new(config: Arc<Config>, client: HttpClient, metrics: Arc<Metrics>) -> Result<Self, OriginError> {
        Self::with_fleet(config, client, metrics, None)
    }

    /// Like [`TokenStore::new`], sharing tokens and verdicts through
    /// `fleet` when given (fleet mode): the credential keys are then keyed
    /// from the fleet's secret, so every replica files a credential alike.
    pub fn with_fleet(
        config: Arc<Config>,
        client: HttpClient,
        metrics: Arc<Metrics>,
        fleet: Option<Fleet>,
    ) -> Result<Self, OriginError> {
        let verdicts = match &fleet {
            Some(f) => Verdicts::shared(f.shared_secret("credential keys")),
            None => Verdicts::new(),
        };
        Self::build(config, client, metrics, LocalStore::new(verdicts), fleet)
    }

    fn build(
        config: Arc<Config>,
        client: HttpClient,
        metrics: Arc<Metrics>,
        store: LocalStore,
        fleet: Option<Fleet>,
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
        let keys = PerIdentity::new(n, |who| {
            Credential::of(&config, who).map(|c| store.verdicts().register(&c))
        });
        let shared = fleet.map(|f| Shared::new(f, &keys, n));
        let store = Self {
            inner: Arc::new(Inner {
                login_of: (0..n).map(|p| Identity::of(&config, p)).collect(),
                shared,
                keys,
                store,
                prepared: (0..n).map(|_| ArcSwapOption::empty()).collect(),
                flights: Flights::new(n),
                labels,
                defaults,
                origin,
                client,
                config,
                serial: AtomicU64::new(0),
                metrics,
                retired: AtomicBool::new(false),
            }),
        };
        store.inner.listen();
        Ok(store)
    }

    /// A store for a reloaded `config` that shares `old`'s verdict table
    /// (a parked credential stays parked, under any principal name, and a
    /// reload back to a rejected password meets its verdict), keeps the
    /// tokens [`carry::carry`] allows, and leaves `old` running (call
    /// [`TokenStore::retire`] on it once the new store serves). Returns the
    /// store and the names of identities that start without a token.
    pub async fn succeed(
        config: Arc<Config>,
        client: HttpClient,
        metrics: Arc<Metrics>,
        old: &TokenStore,
    ) -> Result<(Self, Vec<String>), OriginError> {
        let (prev, carry) = (&old.inner, carry::carry(&old.inner.config, &config));
        let verdicts = Arc::clone(prev.store.verdicts());
        let fleet = prev.shared.as_ref().map(|s| s.fleet.clone());
        let fresh = Self::build(config, client, metrics, LocalStore::new(Arc::clone(&verdicts)), fleet)?;
        verdicts.retain(&fresh.inner.keys.iter().flatten().copied().collect::<Vec<_>>());
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
        let user = match inner.login_of[p] {
            who @ Identity::User(_) => Some(inner.token(who).await?),
            Identity::ApiUser => None,
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

    /// After a session error on a call `p` made with `used`: drops the
    /// tokens it blames, unless newer ones already replaced them, and
    /// returns whether the call may be replayed. False when a blamed token
    /// is kept because its identity already had a session-error re-login
    /// within `min_relogin_interval`: the error then reaches the caller.
    ///
    /// A user token is blamed, and the integration token too unless it is
    /// newer than the user token: then it was fetched after the one the
    /// user token came with had been dropped (by a session error on another
    /// call, or a renewal), and the error is the user token's. (Were it the
    /// integration token's after all, the user login says so, and drops it.)
    pub async fn invalidate(&self, p: PrincipalId, used: &Credentials) -> bool {
        let inner = &self.inner;
        let user = used.user.as_ref().map(|u| (inner.login_of[p], u));
        let integration = match &used.user {
            Some(u) if used.integration.serial > u.serial => None,
            _ => Some((Identity::ApiUser, &used.integration)),
        };
        let mut replay = true;
        for (who, token) in user.into_iter().chain(integration) {
            replay &= inner.drop_after_session_error(who, token).await;
        }
        replay
    }

    /// Fleet mode's state (`None` without `[cache]`), for `/status`.
    pub fn cache_state(&self) -> Option<CacheState> {
        self.inner.cache_state()
    }

    /// The fleet this store shares through (`None` without `[cache]`).
    pub fn fleet(&self) -> Option<&Fleet> {
        self.inner.shared.as_ref().map(|s| &s.fleet)
    }

    /// The config this store serves.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// Un-parks `who` alone: `Identity::ApiUser` the API user, and
    /// `Identity::User(p)` that user credential (every principal sharing
    /// it), never the API user. Use [`TokenStore::reset_principal`] for a
    /// principal by id: an anonymous or bearer principal has no login of
    /// its own, and must not reach the API user's.
    pub async fn reset(&self, who: Identity) {
        if let Some(key) = self.inner.verdict_key(who) {
            self.inner.store.reset(key).await;
            self.inner.fleet_reset(who, key).await;
        }
    }

    /// Un-parks the API user alone (`POST /api-user/reset`).
    pub async fn reset_api_user(&self) {
        self.reset(Identity::ApiUser).await;
    }

    /// Un-parks principal `p`'s own login (`POST /principals/NAME/reset`);
    /// false, and nothing reset, for a principal without one (anonymous,
    /// bearer).
    pub async fn reset_principal(&self, p: PrincipalId) -> bool {
        match self.inner.login_of.get(p) {
            Some(&who @ Identity::User(_)) => {
                self.reset(who).await;
                true
            }
            _ => false,
        }
    }

    /// The login history and lockout state of `who`.
    pub fn login_status(&self, who: Identity) -> GateStatus {
        match self.inner.verdict_key(who) {
            Some(key) => self.inner.store.login_status(key, Instant::now()),
            None => GateStatus::default(),
        }
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

    /// How many distinct credentials of this config (the API user's
    /// included) are parked.
    pub fn parked(&self) -> usize {
        let inner = &self.inner;
        let keys = inner.identities().filter_map(|who| inner.verdict_key(who));
        keys.filter(|&k| inner.store.is_parked(k)).count()
    }

    /// Every credential this process holds as parked, configured now or
    /// not, for `/status` (and so for `kmproxy check --login`).
    pub fn parked_credentials(&self) -> Vec<ParkedCredential> {
        self.inner.store.verdicts().parked()
    }

    /// Parks, in this store, every credential of its config that `serve`
    /// reports parked (`check --login`, before it logs anything in);
    /// returns the identities parked that way.
    pub async fn adopt_parked(&self, serve: &[ParkedCredential]) -> Vec<Identity> {
        let inner = &self.inner;
        let mut parked = Vec::new();
        for who in inner.identities() {
            let (Some(c), Some(key)) = (Credential::of(&inner.config, who), inner.verdict_key(who)) else {
                continue;
            };
            if let Some(v) = serve.iter().find(|v| credential::published_matches(&v.fingerprint, &c)) {
                let reason = format!("parked by the running serve: {}", v.reason);
                inner.store.rejected(key, reason).await;
                parked.push(who);
            }
        }
        parked
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

    /// The admin path that un-parks `who`.
    fn reset_path(&self, who: Identity) -> String {
        match who {
            Identity::ApiUser => "/api-user/reset".to_owned(),
            Identity::User(p) => format!("/principals/{}/reset", self.config.principals[p].name),
        }
    }

    /// Whose verdict the logins of `who` consult: its credential's key.
    fn verdict_key(&self, who: Identity) -> Option<VerdictKey> {
        self.keys[who]
    }

    /// The identities this config logs in as, each once, the API user first.
    fn identities(&self) -> impl Iterator<Item = Identity> + '_ {
        let users = self.login_of.iter().enumerate();
        let users = users.filter_map(|(p, &who)| (who == Identity::User(p)).then_some(who));
        std::iter::once(Identity::ApiUser).chain(users)
    }

    /// Drops `token` of `who` after a session error if it still is the
    /// held one and `who` may have a re-login now; returns whether the
    /// call may be replayed.
    async fn drop_after_session_error(&self, who: Identity, token: &Token) -> bool {
        let interval = self.config.tokens.min_relogin_interval;
        let dropped = match self.fleet_drop(who, token, interval).await {
            Some(d) => d,
            None => {
                let key = self.verdict_key(who);
                self.store.remove_for_relogin(who, token.serial, key, interval).await
            }
        };
        match dropped {
            Dropped::Removed => {
                self.metrics.renewal("session_error");
                true
            }
            Dropped::AlreadyReplaced => true,
            Dropped::Refused => {
                let principal = self.name_of(who);
                tracing::warn!(%principal, ?interval, "session error again within min_relogin_interval; not logging in again, the caller gets it");
                false
            }
        }
    }
}
