//! Fleet mode inside the token store (PRODUCT.md §8): the local store
//! stays the replica's own copy and its fallback, and the [`Fleet`] is
//! consulted only where a login would happen, never on the request path
//! while a local token is live.
//!
//! - A login (a miss, or a renewal) first reads Redis: a live token there
//!   that is neither the one being renewed nor one known dead is adopted,
//!   no login. Else the fleet's verdict is taken in (a credential parked
//!   anywhere parks here), and the login runs under the credential's lease;
//!   its token (or its verdict, if it failed) is written before the lease is
//!   released. A replica that finds the lease held waits for the holder's
//!   token; released without one, it reads the verdict and stops there.
//! - A session error claims the credential's re-login for the failed token
//!   (`min_relogin_interval`, fleet-wide); the winner compare-and-deletes
//!   exactly that token and the others hear of it and drop their copy.
//! - Redis unusable: every step answers at once and the replica works on
//!   its own state, as without `[cache]`.
//! - Rejoining (or after missed events): every verdict is read again with
//!   its reset marker. A park the fleet lacks is written back (Redis lost
//!   it, or it was made while Redis was away); a shared park the fleet
//!   dropped by a reset this replica has not heard of is un-parked here.
//!
//! Names in Redis are fingerprints of the credential key (which, in fleet
//! mode, is keyed from the fleet's secret, so every replica computes it
//! alike); no name, password or token appears in a key or an event.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast::error::RecvError;

use super::backend::VerdictKey;
use super::gate::{FleetView, Synced};
use super::identity::{Identity, PerIdentity};
use super::{Inner, Token, TokenError};
use crate::fleet::{CacheState, DegradedReason, Fingerprint, Fleet, FleetEvent, LeaseOutcome, SharedToken, Verdict};

/// How long a login lease lives unless renewed (it is, every third of it,
/// while the login runs).
const LEASE_TTL: Duration = Duration::from_secs(5);
/// Lease rounds (take or wait) before a replica logs in on its own.
const LEASE_ROUNDS: usize = 3;
/// How long a verdict written after a success (clearing a backoff) lives.
const CLEARED_TTL: Duration = Duration::from_secs(60);

/// The fleet, and what this store's config is called in it.
pub(super) struct Shared {
    pub fleet: Fleet,
    /// Per identity, its name in Redis (`None` for a slot with no login).
    names: PerIdentity<Option<Fingerprint>>,
    /// Per identity, the id of the last token known dead fleet-wide: never
    /// adopted from Redis again.
    dead: PerIdentity<AtomicU64>,
}

impl Shared {
    /// Names for every identity that has a verdict key.
    pub fn new(fleet: Fleet, keys: &PerIdentity<Option<VerdictKey>>, principals: usize) -> Self {
        let names = PerIdentity::new(principals, |who| {
            keys[who].map(|k| fleet.fingerprint(&["credential", &k.to_hex()]))
        });
        Self {
            names,
            dead: PerIdentity::new(principals, |_| AtomicU64::new(0)),
            fleet,
        }
    }

    fn is_dead(&self, who: Identity, id: u64) -> bool {
        self.dead[who].load(Ordering::Acquire) == id
    }

    fn mark_dead(&self, who: Identity, id: u64) {
        self.dead[who].store(id, Ordering::Release);
    }

    /// The identity named `name` here, if any.
    fn who(&self, name: &Fingerprint, identities: impl Iterator<Item = Identity>) -> Option<Identity> {
        identities.into_iter().find(|&w| self.names[w].as_ref() == Some(name))
    }
}

/// Unix milliseconds of `t`.
fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Token {
    /// A local copy of a token another replica logged in (or this one,
    /// before a restart).
    fn adopted(t: SharedToken) -> Self {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let age = Duration::from_millis(ms(wall).saturating_sub(t.issued_ms));
        let remaining = t.remaining();
        Token {
            serial: t.id,
            issued: now.checked_sub(age).unwrap_or(now),
            expires: now + remaining,
            issued_at: UNIX_EPOCH + Duration::from_millis(t.issued_ms),
            superseded: AtomicBool::new(false),
            value: t.value,
        }
    }

    /// The token as the fleet shares it.
    fn shared(&self) -> SharedToken {
        let issued_ms = ms(self.issued_at);
        let lifetime = self.expires.saturating_duration_since(self.issued);
        SharedToken {
            value: self.value.clone(),
            id: self.serial,
            issued_ms,
            expires_ms: issued_ms + lifetime.as_millis() as u64,
        }
    }
}

impl Inner {
    fn shared_name(&self, who: Identity) -> Option<(&Shared, &Fingerprint)> {
        let shared = self.shared.as_ref()?;
        Some((shared, shared.names[who].as_ref()?))
    }

    /// Whether this store is in fleet mode and, if so, the fleet's state.
    pub(super) fn cache_state(&self) -> Option<CacheState> {
        self.shared.as_ref().map(|s| s.fleet.state())
    }

    /// A login for `who` in fleet mode (`replacing`: the token a renewal
    /// replaces): adopt the fleet's token, or log in under the lease, or
    /// wait for the holder's; on its own when Redis cannot be used.
    pub(super) async fn fleet_login(
        self: &Arc<Self>,
        who: Identity,
        key: VerdictKey,
        replacing: Option<u64>,
    ) -> Result<Arc<Token>, TokenError> {
        let Some((shared, name)) = self.shared_name(who) else {
            return self.local_login(who, key).await;
        };
        let fleet = &shared.fleet;
        connected(fleet).await;
        for _ in 0..LEASE_ROUNDS {
            if let Some(t) = self.adopt_shared(who, name, replacing).await {
                return Ok(t);
            }
            self.pull_verdict(who, key).await;
            self.gate(who, key)?;
            match fleet.lease(name, LEASE_TTL).await {
                LeaseOutcome::Unavailable => break,
                LeaseOutcome::Acquired(lease) => {
                    let result = self.login_leased(who, key, name, replacing).await;
                    lease.release().await;
                    return result;
                }
                LeaseOutcome::Held => {
                    let stale = replacing.or(Some(shared.dead[who].load(Ordering::Acquire)));
                    if let Some(t) = fleet.wait_for_newer(name, self.wait_limit(), stale).await {
                        return Ok(self.adopt(who, t));
                    }
                }
            }
        }
        self.local_login(who, key).await
    }

    /// Holding the lease: a token or verdict the previous holder left just
    /// before releasing counts; else log in and tell the fleet the outcome.
    async fn login_leased(
        self: &Arc<Self>,
        who: Identity,
        key: VerdictKey,
        name: &Fingerprint,
        replacing: Option<u64>,
    ) -> Result<Arc<Token>, TokenError> {
        if let Some(t) = self.adopt_shared(who, name, replacing).await {
            return Ok(t);
        }
        let had_verdict = self.pull_verdict(who, key).await;
        let result = self.local_login(who, key).await;
        let Some((shared, _)) = self.shared_name(who) else {
            return result;
        };
        match &result {
            Ok(token) => {
                shared
                    .fleet
                    .put_token(name, &token.shared(), self.config.tokens.lifetime)
                    .await;
                if had_verdict {
                    shared
                        .fleet
                        .put_verdict(name, &Verdict::default(), Some(CLEARED_TTL))
                        .await;
                }
            }
            Err(_) => {
                let (verdict, ttl) = self.verdict_of(key);
                if shared.fleet.put_verdict(name, &verdict, ttl).await {
                    self.store.park_shared(key);
                }
            }
        }
        result
    }

    /// The fleet's token for `who`, adopted, if it is live, not the one
    /// being replaced and not known dead.
    async fn adopt_shared(
        self: &Arc<Self>,
        who: Identity,
        name: &Fingerprint,
        replacing: Option<u64>,
    ) -> Option<Arc<Token>> {
        let shared = self.shared.as_ref()?;
        let t = shared.fleet.get_token(name).await?;
        if Some(t.id) == replacing || shared.is_dead(who, t.id) {
            return None;
        }
        Some(self.adopt(who, t))
    }

    /// A local copy of `t`, with its renewal scheduled like a login's.
    fn adopt(self: &Arc<Self>, who: Identity, t: SharedToken) -> Arc<Token> {
        let token = Arc::new(Token::adopted(t));
        tracing::debug!(principal = %self.name_of(who), "token adopted from the fleet");
        self.schedule_renewal(who, &token);
        token
    }

    /// Takes in the fleet's verdict of `key` and its reset marker; returns
    /// whether the fleet had a verdict. A park the fleet holds parks here;
    /// a park of this replica's that the fleet lacks is written back; one
    /// the fleet dropped by a reset this replica missed (it was away from
    /// Redis) is un-parked here, as the reset would have.
    async fn pull_verdict(&self, who: Identity, key: VerdictKey) -> bool {
        let Some((shared, name)) = self.shared_name(who) else {
            return false;
        };
        let Some(record) = shared.fleet.read_verdict(name).await else {
            return false;
        };
        let had = record.verdict.is_some();
        let v = record.verdict.unwrap_or_default();
        let retry_in = v
            .backoff_until_ms
            .and_then(|t| t.checked_sub(ms(SystemTime::now())))
            .map(Duration::from_millis);
        let view = FleetView {
            parked: v.parked,
            unanswered: v.unknown_attempts,
            retry_in,
            reset: record.reset,
        };
        let principal = self.name_of(who);
        match self.store.sync(key, view) {
            Synced::Quiet => {}
            Synced::Parked => {
                let reason = self.store.login_status(key, Instant::now()).parked.unwrap_or_default();
                tracing::error!(%principal, %reason, "login parked by the fleet's verdict; not tried here");
            }
            Synced::Unparked => {
                tracing::info!(%principal, "login reset by another replica while this one was away from the fleet cache");
            }
            Synced::Unshared => {
                let (verdict, ttl) = self.verdict_of(key);
                if shared.fleet.put_verdict(name, &verdict, ttl).await {
                    self.store.park_shared(key);
                    tracing::warn!(%principal, "the fleet cache held no park of this credential (Redis lost it, or it was parked while Redis was unreachable); written back");
                }
            }
        }
        had
    }

    /// The verdict to share after a failed login under `key`, and its TTL
    /// (a park lasts until a reset; a backoff a while past its end).
    fn verdict_of(&self, key: VerdictKey) -> (Verdict, Option<Duration>) {
        let s = self.store.login_status(key, Instant::now());
        let backoff = s.backoff_remaining_secs.map(Duration::from_secs_f64);
        let verdict = Verdict {
            parked: s.parked.clone(),
            unknown_attempts: s.unanswered_logins,
            backoff_until_ms: backoff.map(|b| ms(SystemTime::now() + b)),
            last_session_relogin_ms: None,
        };
        let ttl = match s.parked {
            Some(_) => None,
            None => Some(backoff.unwrap_or_default() + Duration::from_secs(600)),
        };
        (verdict, ttl)
    }

    /// How long a replica waits for the lease holder's token: its login
    /// may need the integration token's login first.
    fn wait_limit(&self) -> Duration {
        self.config.upstream.timeout * 2 + Duration::from_secs(1)
    }

    /// After a session error with `token` of `who`, in fleet mode: `None`
    /// when Redis cannot be asked (decide locally).
    pub(super) async fn fleet_drop(&self, who: Identity, token: &Token, interval: Duration) -> Option<super::Dropped> {
        use crate::fleet::ReloginClaim;
        let (shared, name) = self.shared_name(who)?;
        let claim = match interval.is_zero() {
            true => ReloginClaim::Won,
            false => shared.fleet.claim_relogin_for(name, interval, token.serial).await?,
        };
        match claim {
            ReloginClaim::Won => {
                shared.fleet.delete_token_if(name, token.serial).await;
            }
            ReloginClaim::SameToken => {}
            ReloginClaim::Other => return Some(super::Dropped::Refused),
        }
        shared.mark_dead(who, token.serial);
        let removed = self.store.remove_if_same(who, token.serial).await;
        Some(match (removed, claim) {
            (true, ReloginClaim::Won) => super::Dropped::Removed,
            _ => super::Dropped::AlreadyReplaced,
        })
    }

    /// An operator's reset of `who` (already un-parked here), told to the
    /// fleet; while Redis cannot be used it stays this replica's alone.
    pub(super) async fn fleet_reset(&self, who: Identity, key: VerdictKey) {
        let Some((shared, name)) = self.shared_name(who) else {
            return;
        };
        match shared.fleet.clear_verdict(name).await {
            Some(id) => self.store.saw_reset(key, id),
            None => tracing::warn!(
                principal = %self.name_of(who),
                "reset on this replica only: the fleet cache cannot be used now ({}); reset again once it is back",
                shared.fleet.state()
            ),
        }
    }

    /// Listens to the fleet's events for as long as this store lives.
    pub(super) fn listen(self: &Arc<Self>) {
        let Some(shared) = &self.shared else { return };
        let (mut rx, weak) = (shared.fleet.events(), Arc::downgrade(self));
        tokio::spawn(async move {
            loop {
                let event = rx.recv().await;
                let Some(inner) = Weak::upgrade(&weak) else { return };
                if inner.retired.load(Ordering::Relaxed) {
                    return;
                }
                match event {
                    Ok(e) => inner.on_event(e).await,
                    Err(RecvError::Lagged(_)) => inner.resync(false).await,
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// What another replica did, applied here.
    async fn on_event(&self, event: FleetEvent) {
        let Some(shared) = &self.shared else { return };
        let find = |name: &Fingerprint| shared.who(name, self.identities());
        match event {
            FleetEvent::Invalidated { key, id } => {
                let Some(who) = find(&key) else { return };
                shared.mark_dead(who, id);
                if self.store.remove_if_same(who, id).await {
                    tracing::debug!(principal = %self.name_of(who), "token dropped: it failed on another replica");
                }
            }
            FleetEvent::VerdictChanged { credential } => {
                let Some((who, key)) = find(&credential).and_then(|w| Some((w, self.verdict_key(w)?))) else {
                    return;
                };
                self.pull_verdict(who, key).await;
            }
            FleetEvent::Reset { credential, id } => {
                let Some((who, key)) = find(&credential).and_then(|w| Some((w, self.verdict_key(w)?))) else {
                    return;
                };
                self.store.reset(key).await;
                if let Some(id) = id {
                    self.store.saw_reset(key, id);
                }
                tracing::info!(principal = %self.name_of(who), "login reset by another replica");
            }
            FleetEvent::Rejoined => self.resync(true).await,
            FleetEvent::TokenStored { .. } | FleetEvent::LeaseReleased { .. } => {}
        }
    }

    /// After missed events: takes in every verdict again (so a reset said
    /// while this replica was away un-parks it now, see `pull_verdict`), and
    /// (after a reconnection) writes this replica's live tokens back where
    /// Redis has none, so a Redis restart costs the fleet no logins.
    async fn resync(&self, write_back: bool) {
        for who in self.identities().collect::<Vec<_>>() {
            let Some(key) = self.verdict_key(who) else { continue };
            self.pull_verdict(who, key).await;
            let (Some((shared, name)), true) = (self.shared_name(who), write_back) else {
                continue;
            };
            let Some(t) = self.store.get(who).await else { continue };
            let live = t.live(Instant::now()) && !shared.is_dead(who, t.serial);
            if live && shared.fleet.put_token_if_absent(name, &t.shared()).await {
                tracing::info!(principal = %self.name_of(who), "token written back to the fleet cache");
            }
        }
    }
}

/// Waits (at most the connect timeout's worth) for a fleet that is still
/// making its first connection, so a replica's first login takes part in
/// the lease instead of racing it.
async fn connected(fleet: &Fleet) {
    let mut rx = fleet.watch_state();
    let starting = |s: &CacheState| matches!(s, CacheState::Degraded(DegradedReason::Starting));
    if !starting(&rx.borrow()) {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|s| !starting(s))).await;
}
