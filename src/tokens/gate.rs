//! Lockout safety for one login identity (the API user, or one user
//! principal): whether a login may be attempted now, and its history.
//!
//! A rejected login (4xx) parks the identity: no further attempt with that
//! password until an operator resets it or the secret changes. A transient
//! failure backs off exponentially (1 s doubling up to 5 min, with jitter).
//! The state sits behind a `std` mutex that is never held across an await.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// First backoff after a transient failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

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
    ok: u64,
    rejected: u64,
    failed: u64,
    last_error: Option<String>,
    last_login: Option<SystemTime>,
}

/// The gate in front of one identity's logins.
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

    /// Records a transient failure; returns the backoff now in force.
    pub fn failed(&self, reason: String, now: Instant) -> Duration {
        let mut s = self.lock();
        s.failed += 1;
        s.failures = s.failures.saturating_add(1);
        s.last_error = Some(reason);
        let wait = backoff(s.failures);
        s.retry_at = Some(now + wait);
        wait
    }

    /// Un-parks and clears any backoff (operator reset, or a new secret).
    pub fn reset(&self) {
        let mut s = self.lock();
        s.parked = None;
        s.retry_at = None;
        s.failures = 0;
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
        let wait = g.failed("503".into(), now);
        assert!(matches!(g.check(now), Err(Closed::Backoff(_))));
        assert!(g.check(now + wait).is_ok());
        g.succeeded();
        assert_eq!(g.status(now).consecutive_failures, 0);
    }
}
