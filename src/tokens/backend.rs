//! Where tokens and login verdicts are kept: the seam for a shared store.
//!
//! [`LocalStore`] holds this process's tokens (a [`moka`] cache, each entry
//! expiring when its token's lifetime ends) and its login verdicts (one
//! [`Gate`] per [`VerdictKey`]). Everything in `tokens/` that looks a token
//! up, stores one, drops one, consults a verdict or records one does so
//! through the methods below, and nothing else touches the cache or the
//! gates. Token methods are compare-by-serial where they replace or drop,
//! so "the token this call used" is never confused with a newer one.
//!
//! The data path never reaches this seam while a principal's prepared
//! credentials are live: [`TokenStore::credentials`](super::TokenStore::credentials)
//! answers from them with an `ArcSwap` load, a clock read and two atomic
//! loads, and comes here only on its (boxed) slow path. A backend that
//! drops or replaces a token must set its `superseded` flag, which is what
//! sends the next call down that slow path.
//!
//! # A shared backend (fleet mode, PRODUCT.md §8)
//!
//! A `SharedStore` wraps a `LocalStore`, its own copy and its fallback while
//! Redis is down, slow or wrong, and offers the same methods; `Inner` then
//! holds it in place of the `LocalStore`. Nothing outside `tokens/` changes.
//!
//! - [`get`](LocalStore::get): the local copy; on a local miss, Redis
//!   (decrypted and authenticated; an entry that fails is a miss), kept
//!   locally with its remaining lifetime.
//! - [`get_with`](LocalStore::get_with): on a miss everywhere, the login
//!   runs under a lease (`SET NX PX` with an owner value, renewed while it
//!   runs, released by compare-and-delete) and its token is written with a
//!   TTL no longer than its lifetime; a replica that finds the lease taken
//!   waits for the holder's token instead of logging in.
//! - [`put`](LocalStore::put), [`replace_if_same`](LocalStore::replace_if_same):
//!   write through; a renewal replaces only the token it renews, fleet-wide.
//! - [`remove_if_same`](LocalStore::remove_if_same): compare-and-delete in
//!   Redis, then a published invalidation that makes every replica drop
//!   (and supersede) its copy of that token. Serials must then be unique
//!   across the fleet, e.g. drawn from Redis or derived from the token.
//! - The verdicts ([`check`](LocalStore::check) … [`reset`](LocalStore::reset)):
//!   read from and written to Redis per key, written before the login's
//!   lease is released (so the next holder sees a rejection), resets
//!   published to every replica; [`login_status`](LocalStore::login_status)
//!   and [`parked`](LocalStore::parked) report the local view.
//!
//! # Verdict keys
//!
//! Verdicts are keyed by [`VerdictKey`], today the login identity, and a
//! reload hands gates over by identity ([`super::carry`]). The hardening
//! issue keys them by credential (site, user kind, user, password
//! fingerprint) instead: `VerdictKey` becomes that type, `Inner::verdict_key`
//! derives it from the config, `Verdicts` becomes a map that outlives a
//! reload, and the token half of the seam stays as it is.

use std::future::{ready, Future};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;

use super::gate::{Closed, Gate, GateStatus};
use super::identity::{Identity, PerIdentity};
use super::{Token, TokenError};

/// Whose lockout verdict a login consults and records.
pub type VerdictKey = Identity;

/// This process's tokens and login verdicts.
pub struct LocalStore {
    /// Each entry expires when its token's lifetime ends.
    tokens: Cache<Identity, Arc<Token>>,
    /// The login gate per verdict key; a gate may be shared with the store
    /// this one replaced on reload, so a parked login stays parked.
    verdicts: PerIdentity<Arc<Gate>>,
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

impl LocalStore {
    /// No tokens and open gates, for `principals` principals and the API user.
    pub fn new(principals: usize) -> Self {
        Self {
            tokens: Cache::builder().expire_after(AtLifetimeEnd).build(),
            verdicts: PerIdentity::new(principals, |_| Arc::new(Gate::default())),
        }
    }

    /// Takes over the verdict `old` keeps under `from`, as `to`: a reload
    /// hands verdicts over by identity ([`super::carry`]), which verdicts
    /// keyed by credential will no longer need.
    pub fn adopt_verdict(&mut self, to: VerdictKey, old: &LocalStore, from: VerdictKey) {
        self.verdicts[to] = Arc::clone(&old.verdicts[from]);
    }

    /// The token held for `who`, if any (it may have been superseded).
    pub async fn get(&self, who: Identity) -> Option<Arc<Token>> {
        self.tokens.get(&who).await
    }

    /// The token held for `who`, or the one `login` produces, which every
    /// concurrent miss for `who` awaits (the cache's single flight).
    pub async fn get_with(
        &self,
        who: Identity,
        login: impl Future<Output = Result<Arc<Token>, TokenError>>,
    ) -> Result<Arc<Token>, TokenError> {
        self.tokens.try_get_with(who, login).await.map_err(|e| (*e).clone())
    }

    /// Holds `token` for `who` (a reload carrying it over).
    pub async fn put(&self, who: Identity, token: Arc<Token>) {
        self.tokens.insert(who, token).await;
    }

    /// Replaces the token of `who` with `fresh` if it still is token
    /// `serial` (a renewal), superseding the old one.
    pub async fn replace_if_same(&self, who: Identity, serial: u64, fresh: Arc<Token>) {
        self.compute_if_same(who, serial, Op::Put(fresh)).await;
    }

    /// Drops the token of `who` if it still is token `serial`, superseding
    /// it; returns whether it did.
    pub async fn remove_if_same(&self, who: Identity, serial: u64) -> bool {
        let result = self.compute_if_same(who, serial, Op::Remove).await;
        matches!(result, CompResult::Removed(_))
    }

    /// Applies `then` to the entry of `who` if it holds token `serial`,
    /// marking that token superseded; else leaves the entry alone.
    async fn compute_if_same(
        &self,
        who: Identity,
        serial: u64,
        then: Op<Arc<Token>>,
    ) -> CompResult<Identity, Arc<Token>> {
        self.tokens
            .entry(who)
            .and_compute_with(|entry| {
                ready(match entry {
                    Some(e) if e.value().serial == serial => {
                        e.value().superseded.store(true, Ordering::Release);
                        then
                    }
                    _ => Op::Nop,
                })
            })
            .await
    }

    /// Tokens held right now.
    pub async fn token_count(&self) -> u64 {
        self.tokens.run_pending_tasks().await;
        self.tokens.entry_count()
    }

    /// Whether a login under `key` may be attempted at `now`.
    pub async fn check(&self, key: VerdictKey, now: Instant) -> Result<(), Closed> {
        self.verdicts[key].check(now)
    }

    /// Records a successful login under `key`.
    pub async fn succeeded(&self, key: VerdictKey) {
        self.verdicts[key].succeeded();
    }

    /// Records a rejected login under `key`: parked from now on.
    pub async fn rejected(&self, key: VerdictKey, reason: String) {
        self.verdicts[key].rejected(reason);
    }

    /// Records a transient failure under `key`; returns the backoff now in force.
    pub async fn failed(&self, key: VerdictKey, reason: String, now: Instant) -> Duration {
        self.verdicts[key].failed(reason, now)
    }

    /// Un-parks `key` and clears its backoff (an operator's reset).
    pub async fn reset(&self, key: VerdictKey) {
        self.verdicts[key].reset();
    }

    /// The login history and lockout state under `key`.
    pub fn login_status(&self, key: VerdictKey, now: Instant) -> GateStatus {
        self.verdicts[key].status(now)
    }

    /// How many verdict keys are parked.
    pub fn parked(&self) -> usize {
        self.verdicts.iter().filter(|g| g.is_parked()).count()
    }
}
