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
//! session-error re-logins (`min_relogin_interval`). The state sits behind
//! a `std` mutex that is never held across an await.

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
}

impl State {
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

    /// Takes in what the fleet knows of this credential (fleet mode): a
    /// park, unanswered logins and a backoff recorded by another replica.
    /// Only ever closes the gate further; returns whether it parked it now.
    pub fn adopt(&self, parked: Option<String>, unanswered: u32, retry_in: Option<Duration>, now: Instant) -> bool {
        let mut s = self.lock();
        s.unanswered = s.unanswered.max(unanswered);
        if let Some(at) = retry_in.and_then(|d| now.checked_add(d)) {
            s.retry_at = Some(s.retry_at.map_or(at, |r| r.max(at)));
        }
        match parked {
            Some(reason) if s.parked.is_none() => {
                s.last_error = Some(reason.clone());
                s.parked = Some(reason);
                true
            }
            _ => false,
        }
    }

    /// Un-parks and clears any backoff (operator reset, or a new secret).
    pub fn reset(&self) {
        let mut s = self.lock();
        s.parked = None;
        s.retry_at = None;
        s.failures = 0;
        s.unanswered = 0;
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

    #[test]
    fn adopting_the_fleets_verdict_only_closes() {
        let g = Gate::default();
        let now = Instant::now();
        assert!(!g.adopt(None, 2, Some(Duration::from_secs(5)), now));
        assert!(matches!(g.check(now), Err(Closed::Backoff(_))));
        assert_eq!(g.status(now).unanswered_logins, 2);
        assert!(!g.adopt(None, 0, None, now), "nothing reopens it");
        assert_eq!(g.status(now).unanswered_logins, 2);
        assert!(g.adopt(Some("rejected: 401".into()), 0, None, now));
        assert_eq!(g.check(now), Err(Closed::Parked("rejected: 401".into())));
        assert!(!g.adopt(Some("again".into()), 0, None, now), "parked once");
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
