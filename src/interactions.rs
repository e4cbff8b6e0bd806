//! The state of managed interactions: the `knowledgeInteractionId` of each
//! (caller, principal, end-user session) in use, kept while the session is
//! used. Owned by [`crate::app::App`], so a reload keeps them (the key is
//! made of names, not config indices); how an id is started and used is
//! the data path's ([`crate::proxy::interactions`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use moka::ops::compute::Op;

/// An id is dropped after this long without a call of its session. Thirty
/// minutes is the common web-session idle timeout (the servlet default
/// that Tomcat ships, and what web analytics take as the end of a visit),
/// so one end-user visit keeps one interaction and a user who comes back
/// after a long break starts a new one. An id the upstream ends sooner is
/// replaced on `OK-SEC0012` anyway; one it keeps longer costs only a new
/// start.
pub const IDLE: Duration = Duration::from_secs(30 * 60);

/// Sessions held at most (a key and an id, about 300 bytes: some 30 MB at
/// the cap); past it moka drops the least used, which start again if they
/// come back.
pub const CAPACITY: u64 = 100_000;

/// The ids of the sessions in use, shared by every call.
pub struct Interactions {
    ids: Cache<String, Arc<str>>,
}

impl Default for Interactions {
    fn default() -> Self {
        Self::with_idle(IDLE)
    }
}

impl Interactions {
    /// A store whose ids end after `idle` unused.
    pub fn with_idle(idle: Duration) -> Self {
        Self {
            ids: Cache::builder().max_capacity(CAPACITY).time_to_idle(idle).build(),
        }
    }

    /// The key of one session: the names length-prefixed, so that no two
    /// (caller, principal, session) triples share one.
    pub fn key(caller: &str, principal: &str, session: &str) -> String {
        format!("{}:{caller}{}:{principal}{session}", caller.len(), principal.len())
    }

    /// The session's id, or the one `start` gives: concurrent first calls
    /// of one session share one `start` (moka's single flight); a failed
    /// start is not kept.
    pub async fn get_or_start<E>(
        &self,
        key: &str,
        start: impl Future<Output = Result<Arc<str>, E>>,
    ) -> Result<Arc<str>, Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        self.ids.try_get_with_by_ref(key, start).await
    }

    /// Drops `used` (an id the upstream refused), unless another call has
    /// replaced it already: that newer id is kept.
    pub async fn forget(&self, key: &str, used: &Arc<str>) {
        self.ids
            .entry_by_ref(key)
            .and_compute_with(|held| async move {
                match held {
                    Some(e) if Arc::ptr_eq(e.value(), used) => Op::Remove,
                    _ => Op::Nop,
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[tokio::test]
    async fn an_id_is_started_once_and_forgotten_only_when_still_held() {
        let store = Interactions::default();
        let key = Interactions::key("app", "agent", "s1");
        let first = store
            .get_or_start(&key, async { Ok::<_, Infallible>(Arc::from("K1")) })
            .await;
        let first = first.expect("started");
        let again = store
            .get_or_start(&key, async { Ok::<_, Infallible>(Arc::from("K2")) })
            .await;
        assert!(Arc::ptr_eq(&first, &again.expect("held")));
        // A stale id does not drop the held one.
        store.forget(&key, &Arc::from("K1")).await;
        let held = store
            .get_or_start(&key, async { Ok::<_, Infallible>(Arc::from("K3")) })
            .await;
        assert_eq!(&*held.expect("held"), "K1");
        store.forget(&key, &first).await;
        let next = store
            .get_or_start(&key, async { Ok::<_, Infallible>(Arc::from("K4")) })
            .await;
        assert_eq!(&*next.expect("restarted"), "K4");
    }

    #[test]
    fn keys_do_not_run_into_each_other() {
        assert_ne!(Interactions::key("a", "bc", "d"), Interactions::key("ab", "c", "d"));
        assert_ne!(Interactions::key("a", "b", "cd"), Interactions::key("a", "bc", "d"));
    }
}
