//! The one connection to Redis, its supervision and the health it reports.
//!
//! A [`Link`] holds at most one live `MultiplexedConnection` (RESP3, so
//! commands, pipelines and the event subscription share it). A supervisor
//! task connects, subscribes, then watches: a health `PING` every second,
//! at once when a command failed, and the connection's own disconnect
//! notice. When the connection is judged lost it is dropped, the state turns
//! [`CacheState::Degraded`] with the reason, and reconnecting starts again
//! with jittered exponential backoff (100 ms doubling up to 5 s), so a
//! replica rejoins within about 5 s of Redis answering again.
//!
//! Every command runs through [`Link::run`]: bounded by `command_timeout`,
//! and without a live connection it does not wait at all; any error or
//! timeout is a `None` for the caller and a degraded state, never a panic.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, PushInfo, PushKind, RedisError};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::timeout;

use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// How often a connected link checks that Redis still answers.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// First and longest wait between two connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Whether the fleet's store can be used right now (for `/status` and
/// `kmproxy_cache_degraded`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheState {
    Ok,
    /// Redis cannot be used; this replica serves from its own state.
    Degraded(DegradedReason),
}

impl std::fmt::Display for CacheState {
    /// `ok`, or the reason it is degraded (as `/status` shows it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheState::Ok => f.write_str("ok"),
            CacheState::Degraded(reason) => reason.fmt(f),
        }
    }
}

/// Why the store is degraded: classified once, where the error arises.
/// No variant ever holds a password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DegradedReason {
    #[error("not connected yet")]
    Starting,
    #[error("connection refused by {0}")]
    Refused(String),
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("timed out after {after:?} {doing}")]
    Timeout { after: Duration, doing: &'static str },
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("connection lost: {0}")]
    Io(String),
    #[error("Redis refused a command: {0}")]
    Server(String),
    #[error("cannot use the configured Redis: {0}")]
    Config(String),
}

impl DegradedReason {
    /// Whether the connection itself is in doubt (the supervisor checks it
    /// at once), rather than one command having been refused.
    fn is_transport(&self) -> bool {
        !matches!(self, DegradedReason::Server(_))
    }
}

/// The connection, its state, and what classifying errors needs.
pub(super) struct Link {
    /// `None` only if the configured URL could not make a client.
    client: Result<Client, String>,
    /// The live connection; `None` while disconnected (commands then fail at once).
    conn: ArcSwapOption<MultiplexedConnection>,
    state: watch::Sender<CacheState>,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// Woken when a command failed, so the supervisor checks the connection now.
    kick: Notify,
    tls: bool,
    /// `host:port`, for messages.
    addr: String,
    /// Kept only to make sure no reason ever repeats it.
    password: Option<Secret>,
    metrics: Option<Arc<Metrics>>,
}

impl Link {
    pub fn new(config: &CacheConfig, metrics: Option<Arc<Metrics>>) -> Self {
        if let Some(m) = &metrics {
            m.cache_degraded.set(1);
        }
        Self {
            client: client(config),
            conn: ArcSwapOption::empty(),
            state: watch::Sender::new(CacheState::Degraded(DegradedReason::Starting)),
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            kick: Notify::new(),
            tls: config.redis_url.tls,
            addr: format!("{}:{}", config.redis_url.host, config.redis_url.port),
            password: config.password.clone(),
            metrics,
        }
    }

    pub fn state(&self) -> CacheState {
        self.state.borrow().clone()
    }

    pub fn is_ok(&self) -> bool {
        matches!(*self.state.borrow(), CacheState::Ok)
    }

    pub fn watch_state(&self) -> watch::Receiver<CacheState> {
        self.state.subscribe()
    }

    /// Runs `op` on the live connection within `command_timeout`; `None`
    /// (and a degraded state) on any failure, at once when disconnected.
    pub async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let live = self.conn.load_full()?;
        match timeout(self.command_timeout, op(MultiplexedConnection::clone(&live))).await {
            Ok(Ok(v)) => {
                // Only while that connection is still the live one: an answer
                // that arrives after the link was judged lost proves nothing.
                if self.conn.load().as_ref().is_some_and(|c| Arc::ptr_eq(c, &live)) {
                    self.set(CacheState::Ok);
                }
                Some(v)
            }
            Ok(Err(e)) => self.failed(self.classify(&e)),
            Err(_) => self.failed(DegradedReason::Timeout {
                after: self.command_timeout,
                doing: "waiting for a command",
            }),
        }
    }

    fn failed<T>(&self, reason: DegradedReason) -> Option<T> {
        if reason.is_transport() {
            self.kick.notify_one();
        }
        self.set(CacheState::Degraded(reason));
        None
    }

    /// Records `new`, logging and updating the gauge only on a change.
    fn set(&self, new: CacheState) {
        let changed = self.state.send_if_modified(|s| {
            let changed = *s != new;
            *s = new.clone();
            changed
        });
        if !changed {
            return;
        }
        match &new {
            CacheState::Ok => tracing::info!(redis = %self.addr, "fleet cache ok"),
            CacheState::Degraded(reason) => {
                tracing::warn!(redis = %self.addr, %reason, "fleet cache degraded; serving from this replica's own state")
            }
        }
        if let Some(m) = &self.metrics {
            m.cache_degraded.set(i64::from(new != CacheState::Ok));
        }
    }

    /// What `e` means, in words that never hold the password.
    fn classify(&self, e: &RedisError) -> DegradedReason {
        let text = match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => self.scrub(format!("{code} {detail}")),
            _ => self.scrub(e.to_string()),
        };
        if e.kind() == ErrorKind::AuthenticationFailed || matches!(e.code(), Some("WRONGPASS" | "NOAUTH")) {
            DegradedReason::AuthFailed(text)
        } else if e.is_connection_refusal() {
            DegradedReason::Refused(self.addr.clone())
        } else if e.is_timeout() {
            DegradedReason::Timeout {
                after: self.command_timeout,
                doing: "waiting for Redis",
            }
        } else if e.is_io_error() && self.tls && looks_like_tls(&text) {
            DegradedReason::Tls(text)
        } else if e.is_io_error() || e.is_connection_dropped() {
            DegradedReason::Io(text)
        } else {
            DegradedReason::Server(text)
        }
    }

    /// `text` with the configured password, if it ever appeared, blanked.
    fn scrub(&self, text: String) -> String {
        match &self.password {
            Some(pw) if text.contains(pw.expose()) => text.replace(pw.expose(), "[REDACTED]"),
            _ => text,
        }
    }
}

/// Whether an I/O error's text is rustls' (certificate, handshake, alert).
fn looks_like_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "certificate",
        "handshake",
        "tls",
        "alert",
        "invaliddata",
        "invalid data",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// A RESP3 client for the configured URL and ACL credentials.
fn client(config: &CacheConfig) -> Result<Client, String> {
    use redis::IntoConnectionInfo as _;
    let info = config
        .redis_url
        .to_string()
        .into_connection_info()
        .map_err(|e| e.to_string())?;
    let mut redis = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    if let Some(user) = &config.username {
        redis = redis.set_username(user);
    }
    if let Some(pw) = &config.password {
        redis = redis.set_password(pw.expose());
    }
    if config.redis_url.tls {
        // rustls picks the process's provider; make sure it is ring, the
        // one kmproxy's HTTP client uses (a no-op if one is installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Client::open(info.set_redis_settings(redis)).map_err(|e| e.to_string())
}

/// Jittered exponential backoff between connection attempts.
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (d * 2).min(BACKOFF_MAX);
        d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// What the supervisor does with what the connection pushes.
pub(super) trait Pushes: Send + Sync + 'static {
    /// The channel to subscribe to.
    fn channel(&self) -> &str;
    /// A message pushed by the server.
    fn message(&self, push: PushInfo);
    /// A connection is up again (after start or a loss).
    fn connected(&self);
}

impl Link {
    /// Keeps a connection up for as long as `self` lives: connect,
    /// subscribe, watch; on loss, back off and start again.
    pub async fn supervise(self: Arc<Self>, pushes: impl Pushes) {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return self.set(CacheState::Degraded(DegradedReason::Config(self.scrub(e.clone())))),
        };
        let mut backoff = Backoff(BACKOFF_MIN);
        loop {
            let (tx, mut rx) = mpsc::unbounded_channel();
            match self.connect(&client, tx, pushes.channel()).await {
                Ok(conn) => {
                    backoff = Backoff(BACKOFF_MIN);
                    self.conn.store(Some(Arc::new(conn.clone())));
                    // Told before the state turns Ok, so whoever waits for
                    // Ok and then listens hears only what follows.
                    pushes.connected();
                    self.set(CacheState::Ok);
                    let reason = self.watch(&conn, &mut rx, &pushes).await;
                    self.conn.store(None);
                    self.set(CacheState::Degraded(reason));
                }
                Err(reason) => self.set(CacheState::Degraded(reason)),
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }

    /// One connection attempt (TCP, TLS, `HELLO 3` with `AUTH`), then the
    /// subscription to the event channel, within `connect_timeout`.
    async fn connect(
        &self,
        client: &Client,
        tx: mpsc::UnboundedSender<PushInfo>,
        channel: &str,
    ) -> Result<MultiplexedConnection, DegradedReason> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_push_sender(tx);
        let attempt = async {
            let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
            if let Err(e) = conn.subscribe(channel).await {
                if e.code() != Some("NOPERM") {
                    return Err(e);
                }
                // Allowed keys but not the channel: work on, by polling.
                tracing::warn!(%channel, "fleet cache: no permission to subscribe; waiting replicas poll instead");
            }
            Ok(conn)
        };
        match timeout(self.connect_timeout, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(DegradedReason::Timeout {
                after: self.connect_timeout,
                doing: "connecting",
            }),
        }
    }

    /// Watches a live connection until it is lost; returns why.
    async fn watch(
        &self,
        conn: &MultiplexedConnection,
        rx: &mut mpsc::UnboundedReceiver<PushInfo>,
        pushes: &impl Pushes,
    ) -> DegradedReason {
        let mut tick = tokio::time::interval(HEALTH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = rx.recv() => match push {
                    Some(p) if p.kind != PushKind::Disconnection => {
                        pushes.message(p);
                        continue;
                    }
                    _ => return DegradedReason::Io("the connection was closed".into()),
                },
                _ = tick.tick() => {}
                _ = self.kick.notified() => {}
            }
            let mut c = conn.clone();
            match timeout(self.command_timeout, redis::cmd("PING").query_async::<()>(&mut c)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return self.classify(&e),
                Err(_) => {
                    return DegradedReason::Timeout {
                        after: self.command_timeout,
                        doing: "waiting for PING",
                    }
                }
            }
        }
    }
}
