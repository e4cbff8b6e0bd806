//! Fleet mode's shared store (PRODUCT.md §8): what replicas share through
//! Redis (or Valkey, which speaks the same protocol): tokens, the lease
//! that decides who logs in, lockout verdicts, and events. [`Fleet`] is
//! the whole interface; the token store calls it behind its backend seam.
//!
//! Nothing here can fail a call: every operation is bounded by
//! `cache.command_timeout`, returns at once while Redis is unreachable,
//! and turns any error into a miss or a no-op plus a
//! [`CacheState::Degraded`] with a specific reason. [`Fleet::connect`]
//! never fails either: it starts degraded and keeps reconnecting.
//!
//! # Key layout
//!
//! Every key and the channel start with `cache.key_prefix` (`kmproxy:`).
//! `{fp}` is a [`Fingerprint`], an HMAC-SHA256 keyed from the encryption
//! key, so Redis never sees a user name or password in any encoding.
//!
//! | key | value | TTL |
//! |---|---|---|
//! | `{prefix}token:{fp}` | sealed token (value, id, issued, expires) | ≤ the token's remaining life |
//! | `{prefix}lease:{fp}` | owner: `{replica}:{n}`, plain | the lease ttl, renewed every ttl/3 |
//! | `{prefix}verdict:{fp}` | sealed [`Verdict`] | optional |
//! | `{prefix}reset:{fp}` | the last reset's random id, plain | 7 days ([`RESET_MARKER_TTL`]) |
//! | `{prefix}relogin:{fp}` | the replica that claimed it, or the failed token's id | `min_relogin_interval` |
//! | `{prefix}events` | pub/sub channel of [`FleetEvent`]s | — |
//!
//! Sealed values are AES-256-GCM with the full key name as associated data
//! (see `crypt`); one that fails to open is a miss, and is overwritten by
//! the next login's token.
//!
//! # Failures
//!
//! | what | state / reason | operations |
//! |---|---|---|
//! | Redis down | `connection refused by host:port` (first `connection lost`) | at once: miss, `false`, `LeaseOutcome::Unavailable` |
//! | Redis stopped or slow | `timed out after …` | each waits `command_timeout` at most until the health check drops the link, then at once |
//! | wrong or missing password | `authentication failed: WRONGPASS …` / `NOAUTH …` | at once; retried with backoff (a fixed secret is picked up on reload) |
//! | untrusted certificate | `TLS failed: invalid peer certificate …` | at once |
//! | a command refused (`NOPERM`, `OOM` …) | `Redis refused a command: …` until a command succeeds | that one is a miss |
//! | no permission to subscribe | Ok, logged | waiting polls every 250 ms |
//! | a value that does not open | Ok, logged | a miss; the next login overwrites it |
//! | a reset said while a replica was away | that replica: degraded, then Ok | on rejoining it reads the verdict and the reset marker: un-parks (see `verdicts`) |
//!
//! A write that timed out may still be applied once a stopped Redis wakes:
//! harmless for tokens and verdicts; a lease taken that way is held by no
//! one and expires after its ttl.
//!
//! # The client: `redis` (redis-rs), not `fred`
//!
//! Both speak RESP3, pipeline, do ACL `AUTH` and run on tokio. `redis` won on:
//! - **TLS**: its `tokio-rustls-comp` feature takes rustls and tokio-rustls
//!   with default features off, so the ring provider kmproxy already uses is
//!   the one picked; no second TLS stack, no aws-lc, no OpenSSL. (`fred`
//!   has `enable-rustls-ring` too; a tie.)
//! - **maintenance**: maintained under the Redis organisation, frequent
//!   releases, Valkey named as a target; `fred` rests on one maintainer.
//! - **build**: it adds four small crates (combine, arcstr, sha1_smol,
//!   xxhash-rust) to what kmproxy already builds.
//! - **reconnection**: its `ConnectionManager` reconnects only after I/O
//!   errors (after `WRONGPASS` it keeps answering the cached error), and
//!   commands queue behind its reconnect future. So `link` supervises a
//!   plain `MultiplexedConnection` itself: an unusable Redis answers at
//!   once, every reason is classified, and backoff is ours to bound.
//!
//! Valkey speaks the same protocol (RESP3, ACLs, Lua, pub/sub): nothing here
//! depends on which one answers. Redis 6 or later is needed (RESP3, ACLs).
//!
//! # Layout
//!
//! - `link`: the connection, its supervision (reconnect with backoff, health
//!   checks) and [`CacheState`]; every command goes through it.
//! - `crypt`: sealing and fingerprints.
//! - `events`: the channel's messages and their fan-out to local listeners.
//! - `tokens`: [`SharedToken`]s: get, put, compare-and-delete, wait.
//! - `lease`: [`Lease`]s: take, renew, release.
//! - `verdicts`: [`Verdict`]s and the fleet-wide relogin claim.

mod crypt;
mod events;
mod lease;
mod link;
mod tokens;
mod verdicts;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use redis::Script;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use zeroize::Zeroizing;

pub use crypt::Fingerprint;
pub use events::FleetEvent;
pub use lease::{Lease, LeaseOutcome};
pub use link::{CacheState, DegradedReason};
pub use tokens::SharedToken;
pub use verdicts::{ReloginClaim, Verdict, VerdictRecord, RESET_MARKER_TTL};

use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crypt::Crypt;
use events::Hub;
use link::Link;

/// `DEL` the key only while it holds exactly `ARGV[1]`.
static COMPARE_AND_DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
});

/// The fleet's shared store; cheap to clone, all clones share one
/// connection. Dropping the last clone stops its background task.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    link: Arc<Link>,
    crypt: Crypt,
    prefix: String,
    /// `{prefix}events`.
    channel: String,
    /// Random id of this process's store: the sender of its events, the
    /// stem of its lease owners.
    replica: String,
    /// Lease owners issued so far, so each owner value is unique.
    leases: AtomicU64,
    events: broadcast::Sender<FleetEvent>,
    supervisor: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("prefix", &self.inner.prefix)
            .field("replica", &self.inner.replica)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// The store for `config`, connecting in the background (call within a
    /// tokio runtime). Never fails: until Redis answers it is degraded.
    pub fn connect(config: &CacheConfig, metrics: Option<Arc<Metrics>>) -> Fleet {
        let link = Arc::new(Link::new(config, metrics));
        let prefix = config.key_prefix.clone();
        let channel = format!("{prefix}events");
        let replica = format!("{:016x}", rand::random::<u64>());
        let (events, _) = broadcast::channel(1024);
        let hub = Hub {
            channel: channel.clone(),
            replica: replica.clone(),
            tx: events.clone(),
        };
        let supervisor = tokio::spawn(Arc::clone(&link).supervise(hub)).abort_handle();
        Fleet {
            inner: Arc::new(Inner {
                crypt: Crypt::new(&config.encryption_key),
                link,
                prefix,
                channel,
                replica,
                leases: AtomicU64::new(0),
                events,
                supervisor,
            }),
        }
    }

    /// Whether Redis can be used now, and if not, why.
    pub fn state(&self) -> CacheState {
        self.inner.link.state()
    }

    /// The state as it changes (for tests and `/status` watchers).
    pub fn watch_state(&self) -> watch::Receiver<CacheState> {
        self.inner.link.watch_state()
    }

    /// Events from other replicas (and `Rejoined` from this one's link).
    /// A receiver that lags gets `Lagged`: treat it as "re-check everything".
    pub fn events(&self) -> broadcast::Receiver<FleetEvent> {
        self.inner.events.subscribe()
    }

    /// The fingerprint naming `parts` in Redis (e.g. site, user kind, user
    /// for a token; the same plus the password for a verdict).
    pub fn fingerprint(&self, parts: &[&str]) -> Fingerprint {
        self.inner.crypt.fingerprint(parts)
    }

    /// A 32-byte secret that every replica with this `encryption_key`
    /// derives alike, for `label` (it keys the token store's credential
    /// fingerprints, so one credential has one verdict key fleet-wide).
    pub fn shared_secret(&self, label: &str) -> [u8; 32] {
        let fp = self.fingerprint(&["kmproxy shared secret", label]);
        let mut out = [0u8; 32];
        // A fingerprint is always 64 hex digits.
        let _ = hex::decode_to_slice(fp.as_str(), &mut out);
        out
    }

    /// This store's random replica id.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// The full Redis key of `kind` for `fp`.
    fn key(&self, kind: &str, fp: &Fingerprint) -> String {
        format!("{}{kind}:{fp}", self.inner.prefix)
    }

    /// A lease owner value no other lease (here or elsewhere) has.
    fn next_owner(&self) -> String {
        format!(
            "{}:{}",
            self.inner.replica,
            self.inner.leases.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The raw bytes under `name`; `None` if absent or Redis is unusable.
    async fn get_raw(&self, name: &str) -> Option<Vec<u8>> {
        let get = redis::cmd("GET").arg(name).clone();
        let raw = self
            .inner
            .link
            .run(|mut c| async move { get.query_async::<Option<Vec<u8>>>(&mut c).await });
        raw.await.flatten()
    }

    /// `value` as JSON, sealed for the key `name`.
    fn seal(&self, name: &str, value: &impl Serialize) -> Option<Vec<u8>> {
        let plain = Zeroizing::new(serde_json::to_vec(value).ok()?);
        self.inner.crypt.seal(name, &plain)
    }

    /// The value sealed under `name`; `None` (logged) if it does not open or parse.
    fn open<T: DeserializeOwned>(&self, name: &str, raw: &[u8]) -> Option<T> {
        let parsed = self
            .inner
            .crypt
            .open(name, raw)
            .and_then(|p| serde_json::from_slice(&p).ok());
        if parsed.is_none() {
            tracing::warn!(key = %name, "fleet cache: a value failed authentication (corrupted, or sealed with another encryption_key); treated as a miss");
        }
        parsed
    }

    /// Deletes `name` if it still holds exactly `raw`.
    async fn compare_and_delete(&self, name: &str, raw: &[u8]) -> Option<bool> {
        let mut call = COMPARE_AND_DELETE.key(name);
        call.arg(raw);
        let deleted = self
            .inner
            .link
            .run(|mut c| async move { call.invoke_async::<i64>(&mut c).await });
        deleted.await.map(|n| n == 1)
    }

    /// Publishes `event` to the other replicas; returns whether Redis took it.
    async fn publish(&self, event: FleetEvent) -> bool {
        let publish = redis::cmd("PUBLISH")
            .arg(&self.inner.channel)
            .arg(event.encode(&self.inner.replica))
            .clone();
        let sent = self
            .inner
            .link
            .run(|mut c| async move { publish.query_async::<i64>(&mut c).await });
        sent.await.is_some()
    }
}

/// `t` as unix milliseconds (0 before 1970).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
