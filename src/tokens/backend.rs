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
//! As built, the `LocalStore` stays the only token cache and gate table,
//! the replica's own copy and its fallback; fleet mode (`super::shared`)
//! adds the fleet around the login path (`Inner::login`), the session-error
//! drop and resets, never around a lookup. What each method means there:
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
//! - [`remove_for_relogin`](LocalStore::remove_for_relogin): the same
//!   compare-and-delete, let through only if the credential's re-login
//!   slot is free (`SET NX PX min_relogin_interval` on its key), so the
//!   interval is fleet-wide.
//! - The verdicts ([`check`](LocalStore::check) … [`reset`](LocalStore::reset)):
//!   read from and written to Redis per [`CredentialKey`] (its hex under
//!   `key_prefix`), written before the login's lease is released (so the
//!   next holder sees a rejection or an unanswered attempt), resets
//!   published to every replica; [`login_status`](LocalStore::login_status),
//!   [`is_parked`](LocalStore::is_parked) and [`Verdicts::parked`] report
//!   the local view. [`sync`](LocalStore::sync) takes the fleet's view in
//!   (as built: parks, backoffs, and a reset missed while away from Redis,
//!   told by the reset's marker; [`saw_reset`](LocalStore::saw_reset) and
//!   [`park_shared`](LocalStore::park_shared) record what the fleet knows).
//!
//! # Verdict keys
//!
//! Verdicts are keyed by [`CredentialKey`], a keyed hash of the credential
//! (site, user kind, user, password; see [`super::credential`]), never by a
//! principal's name: renaming a principal, changing `api_version`, two
//! principals for one user, or a reload back to an old password all meet
//! the verdict that credential already has. The [`Verdicts`] table is made
//! once per process and handed from store to store on reload. In fleet mode
//! the key is derived from a fleet-wide secret, so every replica files one
//! credential under one Redis key, and the password never reaches Redis.

use std::collections::HashMap;
use std::future::{ready, Future};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;

use super::credential::{Credential, CredentialKey, Fingerprints};
use super::gate::{Closed, FleetView, Gate, GateStatus, Synced};
use super::identity::Identity;
use super::{Token, TokenError};

/// Whose lockout verdict a login consults and records.
pub type VerdictKey = CredentialKey;

/// This process's tokens and login verdicts.
pub struct LocalStore {
    /// Each entry expires when its token's lifetime ends.
    tokens: Cache<Identity, Arc<Token>>,
    /// Every credential's verdict, shared with the stores this one
    /// replaced and will be replaced by.
    verdicts: Arc<Verdicts>,
}

/// Every credential's lockout verdict this process has met, kept across
/// reloads (a credential no longer configured keeps a parked verdict, so
/// a reload back to it does not try it again).
pub struct Verdicts {
    fingerprints: Fingerprints,
    /// The lock is never held across an await, and taken only on the
    /// login path (never by a call served from prepared credentials).
    table: Mutex<HashMap<CredentialKey, Arc<Verdict>>>,
}

/// One credential's verdict, with what reports may say about it.
struct Verdict {
    gate: Gate,
    /// Shown by `/status` while parked, for `check --login` to match.
    published: String,
    /// User kind and user name.
    label: (&'static str, String),
}

/// A parked credential as `/status` reports it: no password, no key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ParkedCredential {
    /// `api_user`, `account` or `contact`.
    pub kind: String,
    pub user: String,
    /// See [`super::credential`]: `v1:<salt>:<mac>`.
    pub fingerprint: String,
    pub reason: String,
}

impl Verdicts {
    /// An empty table with this process's fingerprint key.
    pub fn new() -> Arc<Self> {
        Self::with(Fingerprints::random())
    }

    /// An empty table keyed with the fleet's shared `secret` (fleet mode).
    pub fn shared(secret: [u8; 32]) -> Arc<Self> {
        Self::with(Fingerprints::keyed(secret))
    }

    fn with(fingerprints: Fingerprints) -> Arc<Self> {
        Arc::new(Self {
            fingerprints,
            table: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CredentialKey, Arc<Verdict>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key of `c`, with an open verdict filed under it if it had none.
    pub fn register(&self, c: &Credential<'_>) -> CredentialKey {
        let key = self.fingerprints.key(c);
        self.lock().entry(key).or_insert_with(|| {
            Arc::new(Verdict {
                gate: Gate::default(),
                published: self.fingerprints.published(c),
                label: c.label(),
            })
        });
        key
    }

    /// The verdict filed under `key` (an open one if none was: every key
    /// in use was registered when its store was built).
    fn get(&self, key: &CredentialKey) -> Arc<Verdict> {
        let mut table = self.lock();
        let entry = table.entry(*key).or_insert_with(|| {
            Arc::new(Verdict {
                gate: Gate::default(),
                published: String::new(),
                label: ("unknown", String::new()),
            })
        });
        Arc::clone(entry)
    }

    /// Forgets the verdicts that are neither parked nor in `keep`: a
    /// reload leaves behind only what must never be tried again.
    pub fn retain(&self, keep: &[CredentialKey]) {
        self.lock().retain(|k, v| v.gate.is_parked() || keep.contains(k));
    }

    /// Every parked credential, configured or not.
    pub fn parked(&self) -> Vec<ParkedCredential> {
        let now = Instant::now();
        let mut out: Vec<_> = self
            .lock()
            .values()
            .filter_map(|v| {
                let reason = v.gate.status(now).parked?;
                Some(ParkedCredential {
                    kind: v.label.0.to_owned(),
                    user: v.label.1.clone(),
                    fingerprint: v.published.clone(),
                    reason,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.kind, &a.user, &a.fingerprint).cmp(&(&b.kind, &b.user, &b.fingerprint)));
        out
    }
}

/// What a session error did to the token it blamed.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Dropped: the next call logs in again.
    Removed,
    /// Already replaced or dropped by another call: use the newer one.
    AlreadyReplaced,
    /// Kept: its identity had a session-error re-login within
    /// `min_relogin_interval`.
    Refused,
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
    /// No tokens; verdicts from `verdicts`.
    pub fn new(verdicts: Arc<Verdicts>) -> Self {
        Self {
            tokens: Cache::builder().expire_after(AtLifetimeEnd).build(),
            verdicts,
        }
    }

    /// The verdict table, for the store that replaces this one.
    pub fn verdicts(&self) -> &Arc<Verdicts> {
        &self.verdicts
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

    /// After a session error: drops the token of `who` if it still is token
    /// `serial` and `key` may have a session-error re-login now (at most one
    /// per `interval`; the check and the drop are one step, so concurrent
    /// callers blaming the same token cannot both be refused or both claim).
    pub async fn remove_for_relogin(
        &self,
        who: Identity,
        serial: u64,
        key: Option<VerdictKey>,
        interval: Duration,
    ) -> Dropped {
        let verdict = key.map(|k| self.verdicts.get(&k));
        let mut dropped = Dropped::AlreadyReplaced;
        self.tokens
            .entry(who)
            .and_compute_with(|entry| {
                ready(match entry {
                    Some(e) if e.value().serial == serial => {
                        if verdict.is_none_or(|v| v.gate.claim_relogin(Instant::now(), interval)) {
                            e.value().superseded.store(true, Ordering::Release);
                            dropped = Dropped::Removed;
                            Op::Remove
                        } else {
                            dropped = Dropped::Refused;
                            Op::Nop
                        }
                    }
                    _ => Op::Nop,
                })
            })
            .await;
        dropped
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

    /// Whether a login under `key` may be attempted now (no await: the
    /// gate is a plain mutex).
    pub fn check_now(&self, key: VerdictKey) -> Result<(), Closed> {
        self.verdicts.get(&key).gate.check(Instant::now())
    }

    /// Records a successful login under `key`.
    pub async fn succeeded(&self, key: VerdictKey) {
        self.verdicts.get(&key).gate.succeeded();
    }

    /// Records a rejected login under `key`: parked from now on.
    pub async fn rejected(&self, key: VerdictKey, reason: String) {
        self.verdicts.get(&key).gate.rejected(reason);
    }

    /// Records a transient failure under `key`; returns the backoff now in
    /// force (never shorter than `at_least`, the upstream's `Retry-After`).
    pub async fn failed(&self, key: VerdictKey, reason: String, now: Instant, at_least: Duration) -> Duration {
        self.verdicts.get(&key).gate.failed(reason, now, at_least)
    }

    /// Records a login under `key` whose answer never came; returns the
    /// backoff in force, or the reason `key` is now parked.
    pub async fn unanswered(&self, key: VerdictKey, reason: String, now: Instant) -> Result<Duration, String> {
        self.verdicts.get(&key).gate.unanswered(reason, now)
    }

    /// Un-parks `key` and clears its backoff (an operator's reset).
    pub async fn reset(&self, key: VerdictKey) {
        self.verdicts.get(&key).gate.reset();
    }

    /// The login history and lockout state under `key`.
    pub fn login_status(&self, key: VerdictKey, now: Instant) -> GateStatus {
        self.verdicts.get(&key).gate.status(now)
    }

    /// Takes in the fleet's view of `key` (see [`Gate::sync`]).
    pub fn sync(&self, key: VerdictKey, fleet: FleetView) -> Synced {
        self.verdicts.get(&key).gate.sync(fleet, Instant::now())
    }

    /// The park of `key` (if any) is now one the fleet holds.
    pub fn park_shared(&self, key: VerdictKey) {
        self.verdicts.get(&key).gate.park_shared();
    }

    /// `key` was reset fleet-wide under `id`.
    pub fn saw_reset(&self, key: VerdictKey, id: u64) {
        self.verdicts.get(&key).gate.saw_reset(id);
    }

    /// Whether `key` is parked.
    pub fn is_parked(&self, key: VerdictKey) -> bool {
        self.verdicts.get(&key).gate.is_parked()
    }
}
