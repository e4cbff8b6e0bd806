//! Logins in flight: at most one per identity, awaited by everyone who
//! needs its token.
//!
//! The cache's single flight (`try_get_with`) runs one caller's future; if
//! that caller hangs up, the next caller in line would start a login of its
//! own. Kept here as well, the login survives its caller (it runs as a task
//! of its own), and the next caller joins it instead of starting another.
//! Renewals join it the same way.

use std::sync::{Mutex, PoisonError};

use futures_util::future::{BoxFuture, FutureExt as _, Shared};

use super::identity::{Identity, PerIdentity};

/// A login under way, awaited by every caller that needs its outcome.
type UnderWay<T> = Shared<BoxFuture<'static, T>>;

/// The logins under way, one slot per identity.
pub struct Flights<T> {
    /// The lock is never held across an await.
    slots: PerIdentity<Mutex<Option<UnderWay<T>>>>,
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// No login under way, for `principals` principals and the API user.
    pub fn new(principals: usize) -> Self {
        Self {
            slots: PerIdentity::new(principals, |_| Mutex::new(None)),
        }
    }

    /// Joins the login under way for `who`, or starts the one `start`
    /// makes, and waits for its outcome.
    pub async fn join_or_start(&self, who: Identity, start: impl FnOnce() -> BoxFuture<'static, T>) -> T {
        let login = self.join(who, start);
        let outcome = login.clone().await;
        self.clear(who, &login);
        outcome
    }

    fn join(&self, who: Identity, start: impl FnOnce() -> BoxFuture<'static, T>) -> UnderWay<T> {
        let mut slot = self.slots[who].lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref() {
            // Not yet finished: finished ones are left only by a caller
            // that hung up before it could clear the slot.
            Some(login) if login.peek().is_none() => login.clone(),
            _ => {
                let login = start().shared();
                *slot = Some(login.clone());
                login
            }
        }
    }

    /// Empties the slot if it still holds `login`.
    fn clear(&self, who: Identity, login: &UnderWay<T>) {
        let mut slot = self.slots[who].lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|l| l.ptr_eq(login)) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    /// A login that finishes with `value` once `gate` has a permit, and
    /// counts how often one was started.
    fn login(started: &Arc<AtomicUsize>, gate: &Arc<Semaphore>, value: u32) -> BoxFuture<'static, u32> {
        started.fetch_add(1, Ordering::SeqCst);
        let gate = Arc::clone(gate);
        Box::pin(async move {
            let _permit = gate.acquire().await.expect("open");
            value
        })
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_login() {
        let flights = Flights::new(1);
        let (started, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let caller = || flights.join_or_start(Identity::User(0), || login(&started, &gate, 7));
        // `join!` polls the callers in order: all three wait before the login may end.
        let outcomes = tokio::join!(caller(), caller(), caller(), async { gate.add_permits(1) });
        assert_eq!(outcomes, (7, 7, 7, ()));
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_leaves_its_login_to_the_next() {
        let flights = Flights::new(0);
        let (started, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let first = flights.join_or_start(Identity::ApiUser, || login(&started, &gate, 1));
        assert!(tokio::time::timeout(Duration::from_millis(10), first).await.is_err());
        gate.add_permits(1);
        let next = flights
            .join_or_start(Identity::ApiUser, || login(&started, &gate, 2))
            .await;
        assert_eq!(
            (next, started.load(Ordering::SeqCst)),
            (1, 1),
            "joined, not started again"
        );
    }

    #[tokio::test]
    async fn a_finished_login_is_not_joined() {
        let flights = Flights::new(0);
        let (started, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(2)));
        assert_eq!(
            flights
                .join_or_start(Identity::ApiUser, || login(&started, &gate, 1))
                .await,
            1
        );
        assert_eq!(
            flights
                .join_or_start(Identity::ApiUser, || login(&started, &gate, 2))
                .await,
            2
        );
        // One left finished in its slot (its caller hung up before clearing it).
        let done = login(&started, &gate, 3).shared();
        assert_eq!(done.clone().await, 3);
        *flights.slots[Identity::ApiUser].lock().expect("slot") = Some(done);
        assert_eq!(
            flights
                .join_or_start(Identity::ApiUser, || login(&started, &gate, 4))
                .await,
            4
        );
        assert_eq!(started.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn identities_fly_apart() {
        let flights = Flights::new(1);
        let (started, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let api_user = flights.join_or_start(Identity::ApiUser, || login(&started, &gate, 1));
        let user = flights.join_or_start(Identity::User(0), || login(&started, &gate, 2));
        gate.add_permits(2);
        assert_eq!(tokio::join!(api_user, user), (1, 2));
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }
}
