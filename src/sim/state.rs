//! The simulator's shared state: the token registry (integration and user
//! tokens, interaction ids, their issue times), login and request counters,
//! the record of routed paths, and the faults and modes tests turn on.
//!
//! Everything sits behind one `std::sync::Mutex`, taken briefly and never
//! across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use rand::distr::Alphanumeric;
use rand::{Rng, RngCore};
use tokio::time::Instant;

use super::errors::SessionShape;
use super::{LoginKind, LoginOutcome, Principal, RecordedRequest, SimConfig, UserKind};

/// How many recorded requests (and issued tokens) are kept.
const KEEP: usize = 10_000;

/// Who a token was issued to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    /// An API user's integration token.
    Integration,
    /// A console or web user's user token; `kind` is who was authenticated.
    User { name: String, kind: UserKind },
}

struct Issued {
    subject: Subject,
    at: Instant,
}

/// A login counter key: kind, user name as sent, outcome.
type LoginKey = (LoginKind, String, LoginOutcome);

/// An injected login fault: the answer the next logins get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoginFault {
    /// The status answered (e.g. 503, 429).
    pub(crate) status: StatusCode,
    /// `Retry-After` in seconds, when the answer carries one.
    pub(crate) retry_after: Option<u64>,
}

#[derive(Default)]
struct Inner {
    /// Live tokens; `expire_all` empties it, lifetime is checked on lookup.
    tokens: HashMap<String, Issued>,
    /// Live knowledge interaction ids and their start times.
    interactions: HashMap<String, Instant>,
    /// Every token issued, most recent last.
    issued: VecDeque<String>,
    logins: HashMap<LoginKey, u64>,
    requests: VecDeque<RecordedRequest>,
    request_count: u64,
    /// The id of the last recorded request (never reset).
    last_request_id: u64,
    /// Every path routed (logins included, `/__sim/` not), as routed:
    /// servlet-normalised when `servlet_paths` is on. Most recent last.
    routed: VecDeque<(Method, String)>,
    /// Injected login faults: the answer and how many remain.
    login_faults: Option<(LoginFault, u32)>,
    /// Injected session errors remaining.
    session_errors: u32,
    delay: Duration,
    /// Held before every login answer, unless `outcome_delays` names its outcome.
    login_delay: Duration,
    /// Held before a login answer of this outcome, instead of `login_delay`.
    outcome_delays: HashMap<LoginOutcome, Duration>,
    /// Route the servlet reading of each path instead of the raw path.
    servlet_paths: bool,
    /// Answer an unaccepted bearer token with a session error, not `OK-AUTH0005`.
    bearer_session_errors: bool,
    /// How many bearer calls were answered so.
    bearer_session_error_count: u64,
}

/// State shared by every handler of one simulator.
pub(crate) struct Shared {
    /// The site as configured.
    pub(crate) config: SimConfig,
    inner: Mutex<Inner>,
    /// TCP connections accepted (counted as they are accepted, outside the lock).
    connections: AtomicU64,
    /// TCP connections open now, and the most open at once since the
    /// counters were last reset.
    open: AtomicU64,
    peak_open: AtomicU64,
    /// Answer every request with `Connection: close`.
    close_connections: AtomicBool,
    /// Interactions end as they start: every id is refused (`OK-SEC0012`).
    interactions_die: AtomicBool,
    /// How session errors are shaped: an index into `SessionShape::ALL`.
    session_error_shape: AtomicU8,
}

impl Shared {
    pub(crate) fn new(config: SimConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::default()),
            connections: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
            close_connections: AtomicBool::new(false),
            interactions_die: AtomicBool::new(false),
            session_error_shape: AtomicU8::new(0),
        }
    }

    pub(crate) fn set_session_error_shape(&self, shape: SessionShape) {
        let index = SessionShape::ALL.iter().position(|s| *s == shape).unwrap_or(0);
        self.session_error_shape.store(index as u8, Ordering::Relaxed);
    }

    pub(crate) fn session_error_shape(&self) -> SessionShape {
        let index = usize::from(self.session_error_shape.load(Ordering::Relaxed));
        SessionShape::ALL.get(index).copied().unwrap_or_default()
    }

    /// A connection was accepted: counted, and open until [`Shared::closed`].
    pub(crate) fn opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_open.fetch_max(open, Ordering::Relaxed);
    }

    /// A connection [`Shared::opened`] counted has closed.
    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub(crate) fn peak_open_connections(&self) -> u64 {
        self.peak_open.load(Ordering::Relaxed)
    }

    pub(crate) fn set_close_connections(&self, on: bool) {
        self.close_connections.store(on, Ordering::Relaxed);
    }

    pub(crate) fn close_connections(&self) -> bool {
        self.close_connections.load(Ordering::Relaxed)
    }

    pub(crate) fn set_interactions_die(&self, on: bool) {
        self.interactions_die.store(on, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn alive(&self, at: Instant) -> bool {
        at.elapsed() < self.config.token_lifetime
    }

    /// Issue a fresh, unique token for `subject`.
    pub(crate) fn issue(&self, subject: Subject) -> String {
        // Oracle: integration tokens are 128 base64 chars, user tokens 88 (with `==`).
        let len = match subject {
            Subject::Integration => 96,
            Subject::User { .. } => 64,
        };
        let mut inner = self.lock();
        let token = loop {
            let t = random_base64(len);
            if !inner.tokens.contains_key(&t) {
                break t;
            }
        };
        if inner.tokens.len() >= KEEP {
            let lifetime = self.config.token_lifetime;
            inner.tokens.retain(|_, i| i.at.elapsed() < lifetime);
        }
        inner.tokens.insert(
            token.clone(),
            Issued {
                subject,
                at: Instant::now(),
            },
        );
        if inner.issued.len() >= KEEP {
            inner.issued.pop_front();
        }
        inner.issued.push_back(token.clone());
        token
    }

    /// Who `token` belongs to, if it is known and unexpired.
    pub(crate) fn lookup(&self, token: &str) -> Option<Subject> {
        let inner = self.lock();
        inner
            .tokens
            .get(token)
            .filter(|i| self.alive(i.at))
            .map(|i| i.subject.clone())
    }

    /// Start a knowledge interaction and return its id (32 characters).
    pub(crate) fn start_interaction(&self) -> String {
        let id: String = rand::rng().sample_iter(Alphanumeric).take(32).map(char::from).collect();
        if !self.interactions_die.load(Ordering::Relaxed) {
            self.lock().interactions.insert(id.clone(), Instant::now());
        }
        id
    }

    /// Whether `id` was issued and is still alive.
    pub(crate) fn interaction_valid(&self, id: &str) -> bool {
        let inner = self.lock();
        inner.interactions.get(id).is_some_and(|at| self.alive(*at))
    }

    /// Ends every interaction issued so far (tokens stay valid).
    pub(crate) fn expire_interactions(&self) {
        self.lock().interactions.clear();
    }

    pub(crate) fn expire_all(&self) {
        let mut inner = self.lock();
        inner.tokens.clear();
        inner.interactions.clear();
    }

    pub(crate) fn count_login(&self, kind: LoginKind, user: &str, outcome: LoginOutcome) {
        *self.lock().logins.entry((kind, user.to_owned(), outcome)).or_default() += 1;
    }

    pub(crate) fn logins(&self, kind: LoginKind, user: Option<&str>, outcome: LoginOutcome) -> u64 {
        self.lock()
            .logins
            .iter()
            .filter(|((k, u, o), _)| *k == kind && *o == outcome && user.is_none_or(|w| w == u))
            .map(|(_, n)| n)
            .sum()
    }

    pub(crate) fn total_logins(&self) -> u64 {
        self.lock().logins.values().sum()
    }

    /// Every login counter, sorted, for `/__sim/stats`.
    pub(crate) fn login_counts(&self) -> Vec<(LoginKind, String, LoginOutcome, u64)> {
        let mut all: Vec<_> = self
            .lock()
            .logins
            .iter()
            .map(|((k, u, o), n)| (*k, u.clone(), *o, *n))
            .collect();
        all.sort_by(|a, b| {
            (format!("{:?}", a.0), &a.1, format!("{:?}", a.2)).cmp(&(format!("{:?}", b.0), &b.1, format!("{:?}", b.2)))
        });
        all
    }

    /// Record `req` under a fresh id, and return the id.
    pub(crate) fn record(&self, mut req: RecordedRequest) -> u64 {
        let mut inner = self.lock();
        if inner.requests.len() >= KEEP {
            inner.requests.pop_front();
        }
        inner.last_request_id += 1;
        req.id = inner.last_request_id;
        inner.requests.push_back(req);
        inner.request_count += 1;
        inner.last_request_id
    }

    /// Note whom recorded request `id` acted for (if it is still kept).
    pub(crate) fn set_principal(&self, id: u64, principal: &Principal) {
        let mut inner = self.lock();
        if let Some(r) = inner.requests.iter_mut().rev().find(|r| r.id == id) {
            r.principal = Some(principal.clone());
        }
    }

    /// The recorded request with `id`, if it is still kept.
    pub(crate) fn request(&self, id: u64) -> Option<RecordedRequest> {
        self.lock().requests.iter().rev().find(|r| r.id == id).cloned()
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    pub(crate) fn request_count(&self) -> u64 {
        self.lock().request_count
    }

    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.iter().cloned().collect()
    }

    /// The next `count` logins answer `status`, with `Retry-After` when
    /// `retry_after` is given (whole seconds, rounded up).
    pub(crate) fn set_login_faults(&self, status: u16, count: u32, retry_after: Option<Duration>) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = retry_after.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        let fault = LoginFault { status, retry_after };
        self.lock().login_faults = (count > 0).then_some((fault, count));
    }

    /// Consume one injected login fault, if any is pending.
    pub(crate) fn take_login_fault(&self) -> Option<LoginFault> {
        let mut inner = self.lock();
        let (fault, left) = inner.login_faults?;
        inner.login_faults = (left > 1).then_some((fault, left - 1));
        Some(fault)
    }

    pub(crate) fn set_session_errors(&self, count: u32) {
        self.lock().session_errors = count;
    }

    /// Consume one injected session error, if any is pending.
    pub(crate) fn take_session_error(&self) -> bool {
        let mut inner = self.lock();
        if inner.session_errors > 0 {
            inner.session_errors -= 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn set_delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    pub(crate) fn delay(&self) -> Duration {
        self.lock().delay
    }

    pub(crate) fn set_login_delay(&self, d: Duration) {
        self.lock().login_delay = d;
    }

    pub(crate) fn login_delay(&self) -> Duration {
        self.lock().login_delay
    }

    pub(crate) fn set_outcome_delay(&self, outcome: LoginOutcome, d: Duration) {
        self.lock().outcome_delays.insert(outcome, d);
    }

    /// How long a login answer of `outcome` is held back.
    pub(crate) fn login_delay_for(&self, outcome: LoginOutcome) -> Duration {
        let inner = self.lock();
        inner.outcome_delays.get(&outcome).copied().unwrap_or(inner.login_delay)
    }

    /// Pending faults, for `/__sim/stats`: login faults left, session errors left.
    pub(crate) fn pending_faults(&self) -> (u32, u32) {
        let inner = self.lock();
        (inner.login_faults.map_or(0, |(_, n)| n), inner.session_errors)
    }

    /// The pending login fault's answer, for `/__sim/stats`.
    pub(crate) fn pending_login_fault(&self) -> Option<LoginFault> {
        self.lock().login_faults.map(|(f, _)| f)
    }

    pub(crate) fn set_servlet_paths(&self, on: bool) {
        self.lock().servlet_paths = on;
    }

    pub(crate) fn servlet_paths(&self) -> bool {
        self.lock().servlet_paths
    }

    pub(crate) fn record_routed(&self, method: Method, path: &str) {
        let mut inner = self.lock();
        if inner.routed.len() >= KEEP {
            inner.routed.pop_front();
        }
        inner.routed.push_back((method, path.to_owned()));
    }

    pub(crate) fn routed_paths(&self) -> Vec<(Method, String)> {
        self.lock().routed.iter().cloned().collect()
    }

    pub(crate) fn set_bearer_session_errors(&self, on: bool) {
        self.lock().bearer_session_errors = on;
    }

    pub(crate) fn bearer_session_errors_on(&self) -> bool {
        self.lock().bearer_session_errors
    }

    pub(crate) fn count_bearer_session_error(&self) {
        self.lock().bearer_session_error_count += 1;
    }

    pub(crate) fn bearer_session_error_count(&self) -> u64 {
        self.lock().bearer_session_error_count
    }

    pub(crate) fn reset_counters(&self) {
        let mut inner = self.lock();
        inner.logins.clear();
        inner.requests.clear();
        inner.request_count = 0;
        inner.routed.clear();
        inner.bearer_session_error_count = 0;
        self.connections.store(0, Ordering::Relaxed);
        self.peak_open
            .store(self.open.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub(crate) fn reset_faults(&self) {
        let mut inner = self.lock();
        inner.login_faults = None;
        inner.session_errors = 0;
        inner.delay = Duration::ZERO;
        inner.login_delay = Duration::ZERO;
        inner.outcome_delays.clear();
        inner.servlet_paths = false;
        inner.bearer_session_errors = false;
        self.set_close_connections(false);
        self.set_interactions_die(false);
        self.set_session_error_shape(SessionShape::ByApi);
    }
}

/// `len` random bytes in standard base64 (alphabet with `+/`, `=` padding),
/// the look of Oracle's tokens.
fn random_base64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    base64(&bytes)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn tokens_have_oracles_shape_and_are_unique() {
        let s = Shared::new(SimConfig::default());
        let i = s.issue(Subject::Integration);
        let u = s.issue(Subject::User {
            name: "x".into(),
            kind: UserKind::Account,
        });
        assert_eq!(i.len(), 128);
        assert_eq!(u.len(), 88);
        assert!(u.ends_with("=="));
        assert_ne!(i, u);
        assert_eq!(s.lookup(&i), Some(Subject::Integration));
        assert_eq!(s.issued_tokens(), vec![i.clone(), u]);
        s.expire_all();
        assert_eq!(s.lookup(&i), None);
    }

    #[test]
    fn lifetime_is_enforced() {
        let s = Shared::new(SimConfig {
            token_lifetime: Duration::ZERO,
            ..SimConfig::default()
        });
        let t = s.issue(Subject::Integration);
        assert_eq!(s.lookup(&t), None);
        let id = s.start_interaction();
        assert!(!s.interaction_valid(&id));
    }

    #[test]
    fn faults_count_down() {
        let s = Shared::new(SimConfig::default());
        let status = |f: Option<LoginFault>| f.map(|f| f.status);
        s.set_login_faults(503, 2, None);
        assert_eq!(status(s.take_login_fault()), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(status(s.take_login_fault()), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(s.take_login_fault(), None);
        s.set_login_faults(42, 1, None);
        assert_eq!(status(s.take_login_fault()), Some(StatusCode::SERVICE_UNAVAILABLE));
        s.set_login_faults(429, 1, Some(Duration::from_millis(1500)));
        let fault = LoginFault {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(2),
        };
        assert_eq!(s.take_login_fault(), Some(fault));
        s.set_session_errors(1);
        assert!(s.take_session_error());
        assert!(!s.take_session_error());
    }

    #[test]
    fn login_counts_filter_by_user() {
        let s = Shared::new(SimConfig::default());
        s.count_login(LoginKind::Account, "a", LoginOutcome::Ok);
        s.count_login(LoginKind::Account, "b", LoginOutcome::Ok);
        s.count_login(LoginKind::Account, "b", LoginOutcome::Rejected);
        assert_eq!(s.logins(LoginKind::Account, None, LoginOutcome::Ok), 2);
        assert_eq!(s.logins(LoginKind::Account, Some("b"), LoginOutcome::Ok), 1);
        assert_eq!(s.logins(LoginKind::Contact, None, LoginOutcome::Ok), 0);
        assert_eq!(s.total_logins(), 3);
        s.reset_counters();
        assert_eq!(s.total_logins(), 0);
    }

    #[test]
    fn outcome_delays_override_the_login_delay_until_reset() {
        let s = Shared::new(SimConfig::default());
        s.set_login_delay(Duration::from_millis(5));
        s.set_outcome_delay(LoginOutcome::Rejected, Duration::from_millis(50));
        assert_eq!(s.login_delay_for(LoginOutcome::Ok), Duration::from_millis(5));
        assert_eq!(s.login_delay_for(LoginOutcome::Rejected), Duration::from_millis(50));
        s.reset_faults();
        assert_eq!(s.login_delay_for(LoginOutcome::Rejected), Duration::ZERO);
    }
}
