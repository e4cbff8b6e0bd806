//! Shared lockout verdicts, one per credential fingerprint, sealed like
//! tokens (a parked reason may hold the upstream's text); the marker each
//! reset leaves; and the claim that makes `min_relogin_interval` fleet-wide.
//!
//! A reset deletes the verdict and tells every replica (pub/sub), and it
//! also leaves `{prefix}reset:{fp}` = a random id, so a replica that was
//! away from Redis when it was said can tell, on rejoining, a verdict the
//! fleet dropped by a reset (a marker it has not seen: un-park) from one
//! Redis lost (no new marker: write its park back). See `Gate::sync`.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use serde::{Deserialize, Serialize};

use super::{Fingerprint, Fleet, FleetEvent};

/// How long a reset's marker stays: a replica away from Redis for longer
/// than this writes its park back instead of hearing of the reset.
pub const RESET_MARKER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// `SET NX PX` the claim with `ARGV[1]`; 1 if taken now, 2 if it already
/// holds `ARGV[1]`, 0 if it holds another value.
static CLAIM_FOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
         if redis.call('GET', KEYS[1]) == ARGV[1] then return 2 end return 0",
    )
});

/// Who holds the session-error re-login of a credential for this interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloginClaim {
    /// This replica: drop the token fleet-wide and log in.
    Won,
    /// Another replica, for the very token that failed here: it is being
    /// replaced already; drop the local copy and replay.
    SameToken,
    /// Another replica, for another token: a second expiry within
    /// `min_relogin_interval`.
    Other,
}

/// What the fleet knows about one credential's logins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Set when a login was rejected: the reason; no login until a reset.
    pub parked: Option<String>,
    /// Logins sent whose outcome is unknown (timed out, connection lost):
    /// each may have counted as a failure towards the account's lockout.
    pub unknown_attempts: u32,
    /// No login before this instant (unix ms): the backoff after failures.
    pub backoff_until_ms: Option<u64>,
    /// The last re-login after a session error (unix ms).
    pub last_session_relogin_ms: Option<u64>,
}

/// What the fleet holds of one credential, read in one round trip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerdictRecord {
    /// Its verdict; `None` when absent or it does not open.
    pub verdict: Option<Verdict>,
    /// The id of its last reset, while the marker lives.
    pub reset: Option<u64>,
}

impl Fleet {
    /// The shared verdict of `credential`; `None` when there is none, or it
    /// cannot be read (then the replica's own verdict stands alone).
    pub async fn get_verdict(&self, credential: &Fingerprint) -> Option<Verdict> {
        self.read_verdict(credential).await?.verdict
    }

    /// The verdict of `credential` and its reset marker (`MGET`); `None`
    /// only when Redis cannot be used, so "absent" is told from "unknown".
    pub async fn read_verdict(&self, credential: &Fingerprint) -> Option<VerdictRecord> {
        let (verdict, reset) = (self.key("verdict", credential), self.key("reset", credential));
        let mget = redis::cmd("MGET").arg(&verdict).arg(&reset).clone();
        let read = self
            .inner
            .link
            .run(|mut c| async move { mget.query_async::<(Option<Vec<u8>>, Option<String>)>(&mut c).await });
        let (raw, marker) = read.await?;
        Some(VerdictRecord {
            verdict: raw.and_then(|raw| self.open(&verdict, &raw)),
            reset: marker.and_then(|m| m.parse().ok()),
        })
    }

    /// Stores the verdict of `credential` (expiring after `ttl`, if given)
    /// and tells the fleet; returns whether it was written.
    pub async fn put_verdict(&self, credential: &Fingerprint, verdict: &Verdict, ttl: Option<Duration>) -> bool {
        let name = self.key("verdict", credential);
        let Some(sealed) = self.seal(&name, verdict) else {
            return false;
        };
        let mut pipe = redis::pipe();
        let set = pipe.cmd("SET").arg(&name).arg(sealed);
        if let Some(ttl) = ttl {
            set.arg("PX").arg((ttl.as_millis() as u64).max(1));
        }
        set.ignore();
        let event = FleetEvent::VerdictChanged {
            credential: credential.clone(),
        };
        self.send_with_event(pipe, event).await
    }

    /// Runs `pipe` with a `PUBLISH` of `event` at its end, in one round
    /// trip; false when Redis could not be used.
    async fn send_with_event(&self, mut pipe: redis::Pipeline, event: FleetEvent) -> bool {
        pipe.cmd("PUBLISH")
            .arg(&self.inner.channel)
            .arg(event.encode(&self.inner.replica))
            .ignore();
        let done = self
            .inner
            .link
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await });
        done.await.is_some()
    }

    /// An operator's reset: drops the verdict of `credential` (and its
    /// relogin claim), leaves a fresh reset marker and tells every replica
    /// to un-park it, in one transaction. Returns the reset's id, or `None`
    /// when Redis could not be used (the reset is then this replica's alone).
    pub async fn clear_verdict(&self, credential: &Fingerprint) -> Option<u64> {
        let id = rand::random::<u64>();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("DEL")
            .arg(self.key("verdict", credential))
            .arg(self.key("relogin", credential))
            .ignore();
        pipe.cmd("SET")
            .arg(self.key("reset", credential))
            .arg(id.to_string())
            .arg("PX")
            .arg(RESET_MARKER_TTL.as_millis() as u64)
            .ignore();
        let event = FleetEvent::Reset {
            credential: credential.clone(),
            id: Some(id),
        };
        self.send_with_event(pipe, event).await.then_some(id)
    }

    /// Claims the one session-error re-login of `credential` allowed per
    /// `interval`, fleet-wide (`SET NX PX`): `Some(true)` = go ahead,
    /// `Some(false)` = another replica did one within the interval, `None`
    /// = Redis unusable (decide locally).
    pub async fn claim_relogin(&self, credential: &Fingerprint, interval: Duration) -> Option<bool> {
        let set = redis::cmd("SET")
            .arg(self.key("relogin", credential))
            .arg(&self.inner.replica)
            .arg("NX")
            .arg("PX")
            .arg((interval.as_millis() as u64).max(1))
            .clone();
        let claimed = self
            .inner
            .link
            .run(|mut c| async move { set.query_async::<Option<String>>(&mut c).await });
        claimed.await.map(|ok| ok.is_some())
    }

    /// Claims the session-error re-login of `credential` for the failed
    /// token `id` (at most one per `interval`, fleet-wide); `None` = Redis
    /// unusable (decide locally).
    pub async fn claim_relogin_for(
        &self,
        credential: &Fingerprint,
        interval: Duration,
        id: u64,
    ) -> Option<ReloginClaim> {
        let mut call = CLAIM_FOR.key(self.key("relogin", credential));
        call.arg(id.to_string()).arg((interval.as_millis() as u64).max(1));
        let claimed = self
            .inner
            .link
            .run(|mut c| async move { call.invoke_async::<i64>(&mut c).await });
        claimed.await.map(|n| match n {
            1 => ReloginClaim::Won,
            2 => ReloginClaim::SameToken,
            _ => ReloginClaim::Other,
        })
    }
}
