//! Lockout safety for one credential (site, user kind, user, password):
//! whether a login may be attempted now, and its history.
//!
//! A rejected login (4xx other than 408 and 429) parks the credential: no
//! further attempt with that password until an operator resets it (a new
//! secret is another credential, with a gate of its own). A login whose
//! answer never came may have been rejected: after [`MAX_UNANSWERED`] of
//! them in a row the credential parks as "outcome unknown". A transient
//! failure backs off exponentially (1 s doubling up to 5 min, with jitter),
//! and never less than the upstream's `Retry-After`. The gate also spaces
//! session-error re-logins (`min_relogin_interval`). In fleet mode it also
//! remembers what it knows of the fleet's verdict (whether its park is one
//! the fleet holds, and the last reset it heard of), so a replica that
//! missed a reset while away from Redis can tell it from a Redis that lost
//! its data ([`Gate::sync`]). The state sits behind a `std` mutex that is
//! never held across an await.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// First backoff after a transient failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Logins without an answer (timeout, reset) tried with one password
/// before it parks: any of them may have been a rejection, and B2C locks
/// an account after 5.
pub const MAX_UNANSWERED: u32 = 3;
/// Longest `Retry-After` honoured (a larger one is read as this).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// Why a login may not be attempted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Rejected before; waits for a reset or a new secret.
    Parked(String),
    /// Backing off after a transient failure; try again after this long.
    Backoff(Duration),
}

/// A snapshot for `/status` and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GateStatus {
    pub parked: Option<String>,
    pub backoff_remaining_secs: Option<f64>,
    pub consecutive_failures: u32,
    /// Logins in a row whose answer never came (parks at [`MAX_UNANSWERED`]).
    pub unanswered_logins: u32,
    pub logins_ok: u64,
    pub logins_rejected: u64,
    pub logins_failed: u64,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub last_login: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct State {
    parked: Option<String>,
    retry_at: Option<Instant>,
    failures: u32,
    /// Logins in a row without an answer, since the last success or reset.
    unanswered: u32,
    /// When the last session-error re-login was let through.
    relogin_at: Option<Instant>,
    ok: u64,
    rejected: u64,
    failed: u64,
    last_error: Option<String>,
    last_login: Option<SystemTime>,
    /// Fleet mode: the park is one the fleet holds (taken from it, or
    /// written to it), not only this replica's.
    park_shared: bool,
    /// Fleet mode: the id of the last reset of this credential this
    /// replica heard of or read.
    reset_seen: Option<u64>,
}

/// What the fleet holds of one credential, as a replica read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetView {
    /// Parked fleet-wide, and why.
    pub parked: Option<String>,
    pub unanswered: u32,
    /// The fleet's backoff, from now.
    pub retry_in: Option<Duration>,
    /// The id of the last reset (its marker in Redis), if it is still there.
    pub reset: Option<u64>,
}

/// What taking in the fleet's view did to a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Nothing worth saying (at most a backoff or a count closed it further).
    Quiet,
    /// Parked now, by the fleet's park.
    Parked,
    /// Un-parked: the fleet held this park, holds it no longer, and was
    /// reset since (a reset this replica missed while away from Redis).
    Unparked,
    /// Parked here while the fleet holds no park and no reset this replica
    /// has not seen: the fleet never heard of it (parked while Redis was
    /// unreachable) or lost it (Redis restarted empty). Write it back.
    Unshared,
}

impl State {
    /// Un-parked, no backoff, no failures counted.
    fn clear(&mut self) {
        self.parked = None;
        self.park_shared = false;
        self.retry_at = None;
        self.failures = 0;
        self.unanswered = 0;
    }

    fn fail(&mut self, reason: String, now: Instant, at_least: Duration) -> Duration {
        self.failed += 1;
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(reason);
        let wait = backoff(self.failures).max(at_least.min(RETRY_AFTER_MAX));
        self.retry_at = now.checked_add(wait);
        wait
    }
}

/// The gate in front of one credential's logins.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<State>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters
        // inconsistent in a way that matters; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a login may be attempted at `now`.
    pub fn check(&self, now: Instant) -> Result<(), Closed> {
        let s = self.lock();
        if let Some(reason) = &s.parked {
            return Err(Closed::Parked(reason.clone()));
        }
        match s.retry_at {
            Some(at) if at > now => Err(Closed::Backoff(at - now)),
            _ => Ok(()),
        }
    }

    /// Records a successful login.
    pub fn succeeded(&self) {
        let mut s = self.lock();
        s.ok += 1;
        s.failures = 0;
        s.unanswered = 0;
        s.retry_at = None;
        s.last_error = None;
        s.last_login = Some(SystemTime::now());
    }

    /// Records a rejected login and parks the identity.
    pub fn rejected(&self, reason: String) {
        let mut s = self.lock();
        s.rejected += 1;
        s.last_error = Some(reason.clone());
        s.parked = Some(reason);
        s.park_shared = false;
    }

    /// Records a transient failure; returns the backoff now in force: the
    /// exponential one, or `at_least` (the upstream's `Retry-After`, capped
    /// at [`RETRY_AFTER_MAX`]) if longer.
    pub fn failed(&self, reason: String, now: Instant, at_least: Duration) -> Duration {
        self.lock().fail(reason, now, at_least)
    }

    /// Records a login whose answer never came: a transient failure, until
    /// the [`MAX_UNANSWERED`]th in a row parks the credential. Returns the
    /// backoff in force, or the reason it is parked.
    pub fn unanswered(&self, reason: String, now: Instant) -> Result<Duration, String> {
        let mut s = self.lock();
        s.unanswered = s.unanswered.saturating_add(1);
        let wait = s.fail(reason.clone(), now, Duration::ZERO);
        if s.unanswered < MAX_UNANSWERED {
            return Ok(wait);
        }
        let parked = format!(
            "outcome unknown: {} logins in a row got no answer, any of them may have been rejected (last: {reason})",
            s.unanswered
        );
        s.parked = Some(parked.clone());
        s.park_shared = false;
        Err(parked)
    }

    /// Lets one session-error re-login through per `interval`: true (and
    /// the time recorded) if none was let through in the last `interval`.
    pub fn claim_relogin(&self, now: Instant, interval: Duration) -> bool {
        let mut s = self.lock();
        match s.relogin_at {
            Some(at) if now.saturating_duration_since(at) < interval => false,
            _ => {
                s.relogin_at = Some(now);
                true
            }
        }
    }

    /// Takes in what the fleet holds of this credential (fleet mode). Its
    /// park, unanswered logins and backoff only ever close the gate further,
    /// with one exception: a park the fleet held and holds no longer, while
    /// its reset marker is one this gate has not seen, was reset while this
    /// replica was not listening, and opens (as the reset would have).
    pub fn sync(&self, fleet: FleetView, now: Instant) -> Synced {
        let mut s = self.lock();
        let missed_reset = fleet.reset.is_some() && fleet.reset != s.reset_seen;
        if fleet.reset.is_some() {
            s.reset_seen = fleet.reset;
        }
        let synced = match (fleet.parked, s.parked.is_some()) {
            (Some(reason), false) => {
                s.last_error = Some(reason.clone());
                s.parked = Some(reason);
                s.park_shared = true;
                Synced::Parked
            }
            (Some(_), true) => {
                s.park_shared = true;
                Synced::Quiet
            }
            (None, false) => Synced::Quiet,
            (None, true) if s.park_shared && missed_reset => {
                s.clear();
                Synced::Unparked
            }
            (None, true) => Synced::Unshared,
        };
        s.unanswered = s.unanswered.max(fleet.unanswered);
        if let Some(at) = fleet.retry_in.and_then(|d| now.checked_add(d)) {
            s.retry_at = Some(s.retry_at.map_or(at, |r| r.max(at)));
        }
        synced
    }

    /// The park (if any) is now one the fleet holds: this replica wrote it.
    pub fn park_shared(&self) {
        let mut s = self.lock();
        s.park_shared = s.parked.is_some();
    }

    /// The fleet was reset under `id` (this replica's reset, or one it heard of).
    pub fn saw_reset(&self, id: u64) {
        self.lock().reset_seen = Some(id);
    }

    /// Un-parks and clears any backoff (operator reset, or a new secret).
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// True while parked.
    pub fn is_parked(&self) -> bool {
        self.lock().parked.is_some()
    }

    /// A snapshot for reporting.
    pub fn status(&self, now: Instant) -> GateStatus {
        let s = self.lock();
        GateStatus {
            parked: s.parked.clone(),
            backoff_remaining_secs: s.retry_at.filter(|at| *at > now).map(|at| (at - now).as_secs_f64()),
            consecutive_failures: s.failures,
            unanswered_logins: s.unanswered,
            logins_ok: s.ok,
            logins_rejected: s.rejected,
            logins_failed: s.failed,
            last_error: s.last_error.clone(),
            last_login: s.last_login,
        }
    }
}

/// Backoff after `failures` consecutive transient failures: 1 s, 2 s, 4 s …
/// up to 5 min, each shortened by up to 20 % at random so that many
/// sidecars do not retry in step.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = BACKOFF_MIN.saturating_mul(1 << exp).min(BACKOFF_MAX);
    let jitter = rand::random::<f64>() * 0.2;
    base.mul_f64(1.0 - jitter).max(BACKOFF_MIN.mul_f64(0.8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        for (n, lo, hi) in [(1, 0.8, 1.0), (2, 1.6, 2.0), (3, 3.2, 4.0), (30, 240.0, 300.0)] {
            let d = backoff(n).as_secs_f64();
            assert!((lo..=hi).contains(&d), "failures {n}: {d}");
        }
    }

    #[test]
    fn parked_until_reset() {
        let g = Gate::default();
        let now = Instant::now();
        assert!(g.check(now).is_ok());
        g.rejected("HTTP 401 OK-AUTH0001".into());
        assert_eq!(g.check(now), Err(Closed::Parked("HTTP 401 OK-AUTH0001".into())));
        g.reset();
        assert!(g.check(now).is_ok());
    }

    #[test]
    fn backoff_blocks_then_opens() {
        let g = Gate::default();
        let now = Instant::now();
        let wait = g.failed("503".into(), now, Duration::ZERO);
        assert!(matches!(g.check(now), Err(Closed::Backoff(_))));
        assert!(g.check(now + wait).is_ok());
        g.succeeded();
        assert_eq!(g.status(now).consecutive_failures, 0);
    }

    #[test]
    fn retry_after_is_a_floor_and_is_capped() {
        let g = Gate::default();
        let now = Instant::now();
        assert_eq!(
            g.failed("429".into(), now, Duration::from_secs(7)),
            Duration::from_secs(7)
        );
        assert!(matches!(g.check(now + Duration::from_secs(6)), Err(Closed::Backoff(_))));
        assert!(g.check(now + Duration::from_secs(7)).is_ok());
        let huge = g.failed("429".into(), now, Duration::from_secs(u64::MAX));
        assert_eq!(huge, RETRY_AFTER_MAX);
    }

    #[test]
    fn the_third_unanswered_login_in_a_row_parks() {
        let g = Gate::default();
        let now = Instant::now();
        assert!(g.unanswered("timed out".into(), now).is_ok());
        g.succeeded(); // an answer proves the password: the count restarts
        assert!(g.unanswered("timed out".into(), now).is_ok());
        assert!(g.unanswered("reset".into(), now).is_ok());
        let parked = g.unanswered("timed out".into(), now).expect_err("parked");
        assert!(parked.starts_with("outcome unknown"), "{parked}");
        assert_eq!(g.check(now + BACKOFF_MAX), Err(Closed::Parked(parked)));
        g.reset();
        assert!(g.check(now).is_ok());
        assert!(
            g.unanswered("timed out".into(), now).is_ok(),
            "a reset restarts the count"
        );
    }

    fn parked(reason: &str) -> FleetView {
        FleetView {
            parked: Some(reason.into()),
            ..FleetView::default()
        }
    }

    #[test]
    fn the_fleets_verdict_only_closes_without_a_reset() {
        let g = Gate::default();
        let now = Instant::now();
        let backoff = FleetView {
            unanswered: 2,
            retry_in: Some(Duration::from_secs(5)),
            ..FleetView::default()
        };
        assert_eq!(g.sync(backoff, now), Synced::Quiet);
        assert!(matches!(g.check(now), Err(Closed::Backoff(_))));
        assert_eq!(g.status(now).unanswered_logins, 2);
        assert_eq!(g.sync(FleetView::default(), now), Synced::Quiet, "nothing reopens it");
        assert_eq!(g.status(now).unanswered_logins, 2);
        assert_eq!(g.sync(parked("rejected: 401"), now), Synced::Parked);
        assert_eq!(g.check(now), Err(Closed::Parked("rejected: 401".into())));
        assert_eq!(g.sync(parked("again"), now), Synced::Quiet, "parked once");
        assert_eq!(
            g.sync(FleetView::default(), now),
            Synced::Unshared,
            "a park the fleet lost is kept, to be written back"
        );
        assert!(g.is_parked());
    }

    #[test]
    fn a_shared_park_opens_on_a_reset_it_missed_and_only_then() {
        let now = Instant::now();
        let reset = |id| FleetView {
            reset: Some(id),
            ..FleetView::default()
        };
        // Parked by the fleet, which then was reset (id 7) unheard.
        let g = Gate::default();
        g.sync(parked("rejected: 401"), now);
        assert_eq!(g.sync(reset(7), now), Synced::Unparked);
        assert!(g.check(now).is_ok());
        // Parked again after that reset: the same marker opens nothing.
        g.sync(parked("rejected: 401"), now);
        assert_eq!(g.sync(reset(7), now), Synced::Unshared);
        assert_eq!(g.sync(reset(8), now), Synced::Unparked, "a newer reset does");
        // A reset it heard of (and so saw) is no news when read.
        g.sync(parked("rejected: 401"), now);
        g.reset();
        g.saw_reset(9);
        g.rejected("rejected again".into());
        g.park_shared();
        assert_eq!(g.sync(reset(9), now), Synced::Unshared);
        // A park of its own the fleet never held never opens by a marker.
        let alone = Gate::default();
        alone.rejected("rejected while Redis was away".into());
        assert_eq!(alone.sync(reset(10), now), Synced::Unshared);
        alone.park_shared();
        assert_eq!(
            alone.sync(reset(10), now),
            Synced::Unshared,
            "marker 10 was read already"
        );
        assert_eq!(alone.sync(reset(11), now), Synced::Unparked);
    }

    #[test]
    fn one_relogin_per_interval() {
        let g = Gate::default();
        let (now, interval) = (Instant::now(), Duration::from_secs(10));
        assert!(g.claim_relogin(now, interval));
        assert!(!g.claim_relogin(now + Duration::from_secs(9), interval));
        assert!(g.claim_relogin(now + interval, interval));
        assert!(g.claim_relogin(now + interval, Duration::ZERO), "zero: no limit");
    }
}
