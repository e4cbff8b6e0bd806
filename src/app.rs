//! The state a running kmproxy shares between its calls, built from one
//! config, and its reload.
//!
//! [`App`] holds the part that follows the config ([`Live`]) behind an
//! `ArcSwap`, swapped as a whole on reload: calls in flight finish with the
//! state they started with. The metrics outlive reloads.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use crate::callers::placeholder::Placeholders;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::metrics::{Metrics, RequestLabels};
use crate::tokens::TokenStore;
use crate::upstream::links::Links;
use crate::upstream::{self, HttpClient, Origin};

/// Everything the data path and the admin port need, shared by every call.
pub struct App {
    live: ArcSwap<Live>,
    pub metrics: Arc<Metrics>,
    /// The key of client-login placeholders: one per process, so that a
    /// reload keeps them valid and a restart does not.
    pub placeholders: Placeholders,
    /// Managed interactions per (caller, principal, session), kept across reloads.
    pub interactions: crate::interactions::Interactions,
}

/// The state built from one config.
pub struct Live {
    pub config: Arc<Config>,
    pub tokens: TokenStore,
    pub(crate) client: HttpClient,
    /// `base_url`, for `/km/api/`.
    pub(crate) content: Origin,
    /// `search_base_url`, for `/srt/api/`.
    pub(crate) search: Origin,
    /// Metric label per caller.
    pub(crate) caller_labels: Box<[Arc<String>]>,
    /// `kmproxy_requests_total{status="200"}` per caller, then for calls
    /// without a key: the usual answer is counted without a label lookup
    /// (BENCHMARKS.md: 43.0k -> 42.8k instructions per request).
    pub(crate) ok_counters: Box<[Counter]>,
    /// One permit per call being handled (`server.max_in_flight`), from
    /// when it is known to be forwarded until its answer has been sent
    /// whole (or dropped).
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    /// The upstream URLs to rewrite, unless `rewrite_links` is off.
    pub(crate) links: Option<Arc<Links>>,
}

/// Why the state for a config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Client(#[from] upstream::ClientError),
    #[error(transparent)]
    Origin(#[from] upstream::OriginError),
}

impl Live {
    fn build(
        config: Arc<Config>,
        tokens: TokenStore,
        client: HttpClient,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        let caller_labels: Box<[Arc<String>]> = config.callers.iter().map(|c| Arc::new(c.name.clone())).collect();
        let ok_counters = caller_labels
            .iter()
            .chain(std::iter::once(&metrics.no_caller))
            .map(|caller| {
                let labels = RequestLabels {
                    caller: Arc::clone(caller),
                    status: 200,
                };
                metrics.requests.get_or_create(&labels).clone()
            })
            .collect();
        Ok(Self {
            ok_counters,
            content: client.origin(&config.upstream.base_url)?,
            search: client.origin(&config.upstream.search_base_url)?,
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.server.max_in_flight)),
            links: config.upstream.rewrite_links.then(|| {
                let urls = [
                    config.upstream.base_url.as_str(),
                    config.upstream.search_base_url.as_str(),
                ];
                Arc::new(Links::new(urls))
            }),
            caller_labels,
            tokens,
            client,
            config,
        })
    }

    /// Calls holding one of this config's `max_in_flight` slots now.
    pub fn calls_in_flight(&self) -> usize {
        self.config
            .server
            .max_in_flight
            .saturating_sub(self.in_flight.available_permits())
    }
}

impl Live {
    /// The upstream client (its connection pool).
    pub fn upstream(&self) -> &HttpClient {
        &self.client
    }
}

impl App {
    /// Builds the shared state for `config`.
    pub fn new(config: Arc<Config>) -> Result<Arc<Self>, BuildError> {
        let metrics = Arc::new(Metrics::new());
        let client = upstream::client(&config.upstream)?;
        // Fleet mode: one connection for the life of the process (a reload
        // keeps it; `[cache]` changes take effect at the next restart).
        let fleet = config
            .cache
            .as_ref()
            .map(|c| Fleet::connect(c, Some(Arc::clone(&metrics))));
        let tokens = TokenStore::with_fleet(Arc::clone(&config), client.clone(), Arc::clone(&metrics), fleet)?;
        Ok(Arc::new(Self {
            live: ArcSwap::from_pointee(Live::build(config, tokens, client, &metrics)?),
            metrics,
            placeholders: Placeholders::new(),
            interactions: Default::default(),
        }))
    }

    /// The current state.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Swaps in a new config. Identities whose credentials are unchanged
    /// keep their tokens; every credential keeps its lockout verdict (the
    /// table is handed from store to store, so a reload back to a rejected
    /// password meets it). Returns the names of identities that start
    /// without a token.
    pub async fn reload(&self, config: Config) -> Result<Vec<String>, BuildError> {
        let old = self.live();
        let config = Arc::new(config);
        let client = upstream::client(&config.upstream)?;
        let (tokens, restarted) = TokenStore::succeed(
            Arc::clone(&config),
            client.clone(),
            Arc::clone(&self.metrics),
            &old.tokens,
        )
        .await?;
        self.live
            .store(Arc::new(Live::build(config, tokens, client, &self.metrics)?));
        // Only now: had the build failed, the old store would still serve.
        old.tokens.retire();
        Ok(restarted)
    }
}
