//! Prometheus metrics: one registry in app state (no global recorder),
//! rendered as OpenMetrics text on the admin port's `/metrics`.
//!
//! Label values are `Arc`s built once at start, so counting a request
//! allocates nothing once its (caller, status) series exists.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upstream latency buckets, in seconds: sub-millisecond to a minute.
const LATENCY_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0,
];

/// `kmproxy_requests_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Caller name; `-` for calls without a key, `unknown` for refused keys.
    pub caller: Arc<String>,
    pub status: u16,
}

/// `kmproxy_logins_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    /// Principal name, or `api_user` for the integration login.
    pub principal: Arc<String>,
    /// `ok`, `rejected` or `failed`.
    pub outcome: &'static str,
}

/// `kmproxy_token_renewals_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenewalLabels {
    /// `scheduled` (ahead of expiry) or `session_error` (after an upstream session error).
    pub reason: &'static str,
}

/// Every metric kmproxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_seconds: Histogram,
    pub logins: Family<LoginLabels, Counter>,
    pub renewals: Family<RenewalLabels, Counter>,
    pub replays: Counter,
    pub cached_tokens: Gauge,
    pub parked_principals: Gauge,
    /// `kmproxy_cache_degraded`: 1 while fleet mode's Redis is unusable
    /// (down, slow, refusing auth), else 0; stays 0 without `[cache]`.
    pub cache_degraded: Gauge,
    /// Request-body bytes held across calls, which `server.max_buffered`
    /// bounds: the data path reserves against this gauge itself.
    pub request_body_bytes: Gauge,
    /// Calls holding a `server.max_in_flight` slot (set when rendered, from
    /// the slots themselves: the data path counts nothing for it).
    pub calls_in_flight: Gauge,
    /// Label value for calls without a caller key.
    pub no_caller: Arc<String>,
    /// Label value for calls whose key matched no caller.
    pub unknown_caller: Arc<String>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kmproxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Calls answered, by caller and HTTP status",
            requests.clone(),
        );
        let upstream_seconds = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "upstream_duration_seconds",
            "Time from forwarding a call to the upstream's answer head",
            upstream_seconds.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register("logins", "Upstream logins by principal and outcome", logins.clone());
        let renewals = Family::<RenewalLabels, Counter>::default();
        registry.register("token_renewals", "Token renewals by reason", renewals.clone());
        let replays = Counter::default();
        registry.register(
            "replays",
            "Calls replayed after an upstream session error",
            replays.clone(),
        );
        let cached_tokens = Gauge::default();
        registry.register("cached_tokens", "Tokens held in the cache", cached_tokens.clone());
        let parked_principals = Gauge::default();
        registry.register(
            "parked_principals",
            "Login identities parked after a rejected login",
            parked_principals.clone(),
        );
        let cache_degraded = Gauge::default();
        registry.register(
            "cache_degraded",
            "1 while the fleet's shared Redis cannot be used and this replica serves from its own state",
            cache_degraded.clone(),
        );
        let request_body_bytes = Gauge::default();
        registry.register(
            "request_body_bytes",
            "Request-body bytes held across calls (at most server.max_buffered)",
            request_body_bytes.clone(),
        );
        let calls_in_flight = Gauge::default();
        registry.register(
            "calls_in_flight",
            "Calls holding a server.max_in_flight slot: from forwarding until the answer is sent whole or abandoned",
            calls_in_flight.clone(),
        );
        Self {
            registry,
            requests,
            upstream_seconds,
            logins,
            renewals,
            replays,
            cached_tokens,
            parked_principals,
            cache_degraded,
            request_body_bytes,
            calls_in_flight,
            no_caller: Arc::new("-".to_owned()),
            unknown_caller: Arc::new("unknown".to_owned()),
        }
    }

    /// Counts one login attempt's outcome.
    pub fn login(&self, principal: &Arc<String>, outcome: &'static str) {
        self.logins
            .get_or_create(&LoginLabels {
                principal: Arc::clone(principal),
                outcome,
            })
            .inc();
    }

    /// Counts one renewal.
    pub fn renewal(&self, reason: &'static str) {
        self.renewals.get_or_create(&RenewalLabels { reason }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
