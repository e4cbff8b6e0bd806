//! Lease locks: who logs in for the fleet. `SET {prefix}lease:{fp} owner
//! NX PX ttl` takes it; a background task renews it every ttl/3 by
//! compare-and-expire while the [`Lease`] lives; release (or drop) is a
//! compare-and-delete that also publishes `LeaseReleased`, so waiters stop
//! waiting at once. Every owner value is unique (this replica's id and a
//! counter), so a holder whose lease expired can never release the next
//! holder's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use redis::Script;

use super::{Fingerprint, Fleet, FleetEvent};

/// `PEXPIRE` the key only while it holds `ARGV[1]`.
static COMPARE_AND_EXPIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    )
});

/// `DEL` the key only while it holds `ARGV[1]`, then publish `ARGV[3]` on `ARGV[2]`.
static COMPARE_DELETE_PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) \
         redis.call('PUBLISH', ARGV[2], ARGV[3]) return 1 end return 0",
    )
});

/// What asking for a lease gave.
#[derive(Debug)]
pub enum LeaseOutcome {
    /// This replica holds it: log in, store the token, release.
    Acquired(Lease),
    /// Another replica holds it: wait for its token.
    Held,
    /// Redis cannot be asked: log in on this replica's own authority.
    Unavailable,
}

/// A held lease, renewed in the background until released or dropped.
#[derive(Debug)]
pub struct Lease {
    fleet: Fleet,
    key: Fingerprint,
    owner: String,
    /// Cleared when a renewal finds the lease gone (expired or taken), or
    /// Redis has been unreachable for a whole ttl.
    held: Arc<AtomicBool>,
    renewal: tokio::task::AbortHandle,
    released: bool,
}

impl Fleet {
    /// Takes the lease on `key` for `ttl` (at least 30 ms), if it is free.
    pub async fn lease(&self, key: &Fingerprint, ttl: Duration) -> LeaseOutcome {
        let ttl = ttl.max(Duration::from_millis(30));
        let name = self.key("lease", key);
        let owner = self.next_owner();
        let set = redis::cmd("SET")
            .arg(&name)
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .clone();
        match self
            .inner
            .link
            .run(|mut c| async move { set.query_async::<Option<String>>(&mut c).await })
            .await
        {
            None => LeaseOutcome::Unavailable,
            Some(None) => LeaseOutcome::Held,
            Some(Some(_)) => LeaseOutcome::Acquired(self.hold(key.clone(), name, owner, ttl)),
        }
    }

    /// Releases the lease on `key` if `owner` holds it (compare-and-delete),
    /// publishing `LeaseReleased`; returns whether it did.
    pub async fn release_lease(&self, key: &Fingerprint, owner: &str) -> bool {
        let name = self.key("lease", key);
        let event = FleetEvent::LeaseReleased { key: key.clone() }.encode(&self.inner.replica);
        let mut call = COMPARE_DELETE_PUBLISH.key(&name);
        call.arg(owner).arg(&self.inner.channel).arg(event);
        let released = self
            .inner
            .link
            .run(|mut c| async move { call.invoke_async::<i64>(&mut c).await });
        released.await == Some(1)
    }

    /// A [`Lease`] for an acquired key, its renewal task started.
    fn hold(&self, key: Fingerprint, name: String, owner: String, ttl: Duration) -> Lease {
        let held = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(renew(self.clone(), name, owner.clone(), ttl, Arc::clone(&held)));
        Lease {
            fleet: self.clone(),
            key,
            owner,
            held,
            renewal: task.abort_handle(),
            released: false,
        }
    }
}

/// Renews every ttl/3 until the lease is found gone or Redis has been
/// unreachable for a whole ttl; then marks it no longer held.
async fn renew(fleet: Fleet, name: String, owner: String, ttl: Duration, held: Arc<AtomicBool>) {
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        let mut call = COMPARE_AND_EXPIRE.key(&name);
        call.arg(&owner).arg(ttl.as_millis() as u64);
        let renewed = fleet
            .inner
            .link
            .run(|mut c| async move { call.invoke_async::<i64>(&mut c).await });
        match renewed.await {
            Some(1) => last_renewed = Instant::now(),
            None if last_renewed.elapsed() < ttl => {}
            _ => {
                held.store(false, Ordering::Release);
                return;
            }
        }
    }
}

impl Lease {
    /// The unique value the lease key holds while this lease has it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether the lease is (as far as this replica knows) still held.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Stops renewing and releases the lease; returns whether Redis still
    /// had it for this owner.
    pub async fn release(mut self) -> bool {
        self.released = true;
        self.renewal.abort();
        self.fleet.release_lease(&self.key, &self.owner).await
    }
}

impl Drop for Lease {
    /// A lease dropped unreleased (a login task that ended early) is
    /// released in the background, so waiters need not sit out its ttl.
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (fleet, key, owner) = (self.fleet.clone(), self.key.clone(), std::mem::take(&mut self.owner));
            runtime.spawn(async move { fleet.release_lease(&key, &owner).await });
        }
    }
}
