//! The Knowledge Advanced simulator: an in-process HTTP server that speaks
//! Oracle's protocol, for `kmproxy demo`, `kmproxy simulate`, the integration
//! tests and local development.
//!
//! It owns the simulated site: API users, console (`ACCOUNT`) and web
//! (`CONTACT`) users, the tokens it issues, and the knobs tests turn (expiry,
//! injected faults, delays, opt-in modes) together with the counters and
//! records they read. Every knob is off by default.
//!
//! # Protocol
//!
//! * `POST /km/api/{ver}/auth/integration/authorize`: API user login (JSON
//!   body), answers `{"authenticationToken": I}`.
//! * `POST /km/api/{ver}/auth/authorize`: console/web user login (form body,
//!   `kmauthtoken` with a valid `integrationUserToken`), answers
//!   `{"authenticationToken": "<JSON object as a string holding userToken>",
//!   "user": {...}}`. A contact login whose name is also an account's
//!   authenticates the account, as Oracle documents.
//! * Every other `/km/api/{ver}/...` and `/srt/api/{ver}/...` call checks
//!   `kmauthtoken` (or `Authorization: Bearer` plus the integration token) and
//!   answers like Oracle from a fixed corpus of ten articles (the `resources`
//!   module has the table: content lists with `q=` filters, articles with
//!   `xml`, `contentTypes`, `search/question`, `search/initialScreen`,
//!   `search/answer`, `batch`; XML when `Accept` asks for it; links on the
//!   simulator's own origin, from `Host`), or 404. `docs/simulator.md` says
//!   which Oracle documents each answer follows and what is simplified. The
//!   `api` module has the special endpoints (`knowledgeInteraction/startInteraction`,
//!   `content/blob`, `content/large`, `content/slow`, `content/redirect`), the `traps` module
//!   the misleading ones (`content/echo-error`, `content/echo-error-json`,
//!   `content/upgrade`).
//! * Answers never reflect the request: what kmproxy sent (method, path,
//!   query, headers, `kmauthtoken` parsed, body length and SHA-256, the
//!   principal the tokens stood for) is in the record ([`Simulator::requests`],
//!   [`RecordedRequest`]); each answer names its record in `X-ORACLE-DMS-ECID`
//!   ([`Simulator::request_for`]).
//! * `/__sim/...`: unauthenticated test hooks (`expire`, `stats`,
//!   `fail-logins`, `session-error`, `delay`, `login-delay`,
//!   `close-connections`, `servlet-paths`, `bearer-session-error`, `reset`;
//!   the `hooks` module has the table). Hooks are matched on the raw path.
//!
//! # Knobs for hardening tests
//!
//! Each is a method on [`Simulator`] and a `/__sim/` hook, and
//! [`Simulator::reset_faults`] (or `POST /__sim/reset`) turns it off.
//!
//! | knob | Rust | hook |
//! |---|---|---|
//! | route the servlet reading of each path | [`Simulator::set_servlet_paths`] | `POST /__sim/servlet-paths?on=true` |
//! | hold login answers back (all, or of one outcome) | [`Simulator::set_login_delay`], [`Simulator::set_login_delay_on`] | `POST /__sim/login-delay?ms=N[&outcome=rejected]` |
//! | logins answer a status with `Retry-After` | [`Simulator::fail_logins_with`] | `POST /__sim/fail-logins?status=429&count=N&retry_after=S` |
//! | an unaccepted bearer is a session error | [`Simulator::set_bearer_session_errors`] | `POST /__sim/bearer-session-error?on=true` |
//! | every API call's session error in one JSON shape, or the Customer Portal's 200 `{"errors":[..]}` | [`Simulator::set_session_error_shape`] | `POST /__sim/session-error-shape?shape=errors` |
//!
//! In servlet-path mode a path is read as Tomcat reads it before routing:
//! `;parameters` stripped from every segment, percent-decoded, empty segments
//! merged, `.` and `..` resolved, so `/km/api/latest/content/..;/auth/authorize`
//! *is* the user login. What Tomcat refuses (an encoded `/` or `\`, `..` above
//! the root, a bad escape) is 400 `OK-GEN0001`. Every routed path, as routed,
//! is recorded with its method, logins included ([`Simulator::routed_paths`],
//! `routedPaths` in `/__sim/stats`); [`RecordedRequest`] keeps the raw path
//! beside the routed one.
//!
//! # HTTP statuses
//!
//! | situation | status | `errorCode` |
//! |---|---|---|
//! | expired/unknown token, content API, JSON | 401 | `OK-SESSION0003` |
//! | expired/unknown token, content API, XML (`Accept` mentions xml) | 400 | `OK-SESSION0003` |
//! | expired/unknown token, search API (JSON: `{"errors":[{"code":..}]}`) | 403 | `OK-GEN0003` |
//! | the same with [`SessionShape::Portal`] (JSON) | 200 | `OK-GEN0003` in `errors[0].code` |
//! | wrong login, password, site or user type at a login | 401 | `OK-AUTH0001` |
//! | malformed login body, JSON body at user login ("invalid input") | 400 | `OK-GEN0001` |
//! | missing or unparseable `kmauthtoken` | 400 | `OK-AUTH0003` |
//! | `siteName` of another site in `kmauthtoken` | 400 | `OK-AUTH0002` |
//! | unknown bearer token (or any non-bearer `Authorization`) | 401 | `OK-AUTH0005` |
//! | the same with [`Simulator::set_bearer_session_errors`] on (counted) | as an expired token | `OK-SESSION0003` / `OK-GEN0003` |
//! | bearer token together with a `userToken` | 400 | `OK-AUTH0006` |
//! | unknown/expired `knowledgeInteractionId` | 400 | `OK-SEC0012` |
//! | search without `interfaceId` | 400 | `OK-SRT0001` |
//! | injected login fault (`Retry-After` when configured) | as configured | `SIM-INJECTED` |
//! | path outside the APIs | 404 | `OK-GEN0004` |
//! | servlet-path mode: a path Tomcat refuses | 400 | `OK-GEN0001` |
//! | `GET content/echo-error?...` (HTML page echoing the query) | 400 | none (`text/html`) |
//! | `GET content/echo-error-json?...` (query echoed in `title`) | 400 | none |
//! | `GET content/upgrade` (unsolicited, `Upgrade: websocket`) | 101 | none |
//!
//! Session errors deliberately vary in status so that a client has to read the
//! error code.
//!
//! # Compression
//!
//! Every answer is compressed (gzip, deflate or br, by the caller's
//! `Accept-Encoding` and q-values, as Oracle's front end does) by
//! `tower-http`'s `CompressionLayer`; a request without `Accept-Encoding`
//! gets identity bodies. Answers of under 32 bytes, images and
//! `text/event-stream` stay uncompressed (the layer's default predicate). Token ages use [`tokio::time::Instant`], so a test built with
//! tokio's `test-util` on a paused clock can expire tokens with
//! `tokio::time::advance`; otherwise use a short `token_lifetime` or
//! [`Simulator::expire_all_tokens`].
//!
//! # Layout
//!
//! * `state`: token registry, counters, injected faults.
//! * `auth`: the two logins.
//! * `access`: the token check every other API call passes.
//! * `api`: request dispatch, interactions, blob, slow, redirect.
//! * `record`: the record of what each API request carried.
//! * `resources`: the modelled resources' routes, documents and rendering;
//!   `content` (articles, content types), `search`, `batch`, `query` (`q=`),
//!   `corpus` (the articles), `xml` (the XML rendering).
//! * `servlet`: the servlet container's reading of a path.
//! * `traps`: misleading answers (echoed error text, unsolicited 101).
//! * `blob`: the large streamed body.
//! * `hooks`: the `/__sim/` HTTP hooks.
//! * `listener`: connections counted as accepted and while open.
//! * `errors`: Oracle-shaped error bodies in JSON and XML.

mod access;
mod api;
mod auth;
mod batch;
mod blob;
mod content;
mod corpus;
mod errors;
mod hooks;
mod listener;
mod query;
mod record;
mod resources;
mod search;
mod servlet;
mod state;
mod traps;
mod xml;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method};
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use blob::blob_sha256;
pub use errors::SessionShape;
pub use record::{Principal, RecordedRequest, REQUEST_ID_HEADER};
use state::Shared;

/// The simulated site: its name, users and accepted OAuth tokens.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The `siteName` every request must carry.
    pub site_name: String,
    /// API users, who obtain integration tokens.
    pub api_users: Vec<SimAccount>,
    /// Console (`ACCOUNT`) and web (`CONTACT`) users, who obtain user tokens.
    pub users: Vec<SimUser>,
    /// OAuth bearer JWTs accepted in `Authorization: Bearer`.
    pub bearer_tokens: Vec<String>,
    /// How long an issued token (or interaction id) stays valid; Oracle: 24h.
    pub token_lifetime: Duration,
}

impl Default for SimConfig {
    /// Site `ORACLE_KNOWLEDGE`, API user `apiuser`/`apipass1`, console user
    /// `okcsuser`/`Password1`, web user `webuser`/`Password1`, bearer `demo-jwt`.
    fn default() -> Self {
        Self {
            site_name: "ORACLE_KNOWLEDGE".to_owned(),
            api_users: vec![SimAccount {
                login: "apiuser".to_owned(),
                password: "apipass1".to_owned(),
            }],
            users: vec![
                SimUser {
                    name: "okcsuser".to_owned(),
                    password: "Password1".to_owned(),
                    kind: UserKind::Account,
                },
                SimUser {
                    name: "webuser".to_owned(),
                    password: "Password1".to_owned(),
                    kind: UserKind::Contact,
                },
            ],
            bearer_tokens: vec!["demo-jwt".to_owned()],
            token_lifetime: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// An API user (integration login). `Debug` hides the password.
#[derive(Clone)]
pub struct SimAccount {
    /// The `login` field of the integration login body.
    pub login: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for SimAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimAccount")
            .field("login", &self.login)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// A console or web user (user login). `Debug` hides the password.
#[derive(Clone)]
pub struct SimUser {
    /// The `userName` form field.
    pub name: String,
    /// Its password.
    pub password: String,
    /// `ACCOUNT` (console) or `CONTACT` (web).
    pub kind: UserKind,
}

impl fmt::Debug for SimUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUser")
            .field("name", &self.name)
            .field("password", &"[REDACTED]")
            .field("kind", &self.kind)
            .finish()
    }
}

/// Oracle's `userExternalType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UserKind {
    /// A staff account: console user, `ACCOUNT`.
    Account,
    /// A contact: web user, `CONTACT`.
    Contact,
}

/// Which login endpoint (and, for users, which `userExternalType`) an attempt used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginKind {
    /// `auth/integration/authorize`.
    Integration,
    /// `auth/authorize` with `userExternalType=ACCOUNT` (also the kind counted
    /// when the type could not be read).
    Account,
    /// `auth/authorize` with `userExternalType=CONTACT`.
    Contact,
}

/// How a login attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginOutcome {
    /// A token was issued.
    Ok,
    /// The credentials (or site, type, body) were refused: a 4xx about the login itself.
    Rejected,
    /// Not about the credentials: an injected fault ([`Simulator::fail_logins`],
    /// [`Simulator::fail_logins_with`], e.g. a 429 or 408 with `Retry-After`),
    /// or a user login refused with a session error because its integration
    /// token had expired.
    Failed,
}

/// A simulated Knowledge Advanced site. Cheap to clone: clones share state.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("site_name", &self.shared.config.site_name)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// A site configured by `config`, with no tokens issued yet.
    pub fn new(config: SimConfig) -> Self {
        Self {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// The simulator's routes, for serving or for `oneshot` tests.
    pub fn router(&self) -> Router {
        let shared = Arc::clone(&self.shared);
        // Layers run outside in from the last: `Connection: close` is set on
        // the answer as compressed, and compression sees every answer.
        hooks::routes()
            .fallback(api::dispatch)
            .with_state(Arc::clone(&self.shared))
            .layer(
                tower_http::compression::CompressionLayer::new()
                    .gzip(true)
                    .deflate(true)
                    .br(true),
            )
            .layer(axum::middleware::map_response(move |mut res: Response| {
                let close = shared.close_connections();
                async move {
                    if close {
                        res.headers_mut()
                            .insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    res
                }
            }))
    }

    /// Serve on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = listener::Counted {
            inner: listener,
            shared: Arc::clone(&self.shared),
        };
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Bind `127.0.0.1:0`, serve in a background task and return its handle;
    /// dropping the handle stops the server.
    pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let sim = Simulator::new(config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sim.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(SimHandle {
            addr,
            sim,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Expire every token and interaction id issued so far.
    pub fn expire_all_tokens(&self) {
        self.shared.expire_all();
    }

    /// Expire every interaction id issued so far, and nothing else: the
    /// next call carrying one is answered `OK-SEC0012`.
    pub fn expire_interactions(&self) {
        self.shared.expire_interactions();
    }

    /// Login attempts of `kind` by `user` (`None`: any user) that ended in `outcome`.
    pub fn logins(&self, kind: LoginKind, user: Option<&str>, outcome: LoginOutcome) -> u64 {
        self.shared.logins(kind, user, outcome)
    }

    /// All login attempts, of every kind and outcome.
    pub fn total_logins(&self) -> u64 {
        self.shared.total_logins()
    }

    /// Every API request received (not logins, not `/__sim/`), in the order
    /// their bodies were read. The most recent 10 000 are kept.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// The recorded request an answer answered, found by the id in its
    /// [`REQUEST_ID_HEADER`] (`None`: no such header, or no longer kept).
    pub fn request_for(&self, answer_headers: &http::HeaderMap) -> Option<RecordedRequest> {
        let id = answer_headers.get(REQUEST_ID_HEADER)?.to_str().ok()?.parse().ok()?;
        self.shared.request(id)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections()
    }

    /// TCP connections open now (accepted and not yet closed).
    pub fn open_connections(&self) -> u64 {
        self.shared.open_connections()
    }

    /// The most TCP connections open at once since the counters were last
    /// reset ([`Simulator::reset_counters`] starts it again from those open).
    pub fn peak_open_connections(&self) -> u64 {
        self.shared.peak_open_connections()
    }

    /// Hold every login answer back by `d` (after counting it, whatever its
    /// outcome: a wrong password is answered late too), except answers of an
    /// outcome given its own delay with [`Simulator::set_login_delay_on`].
    pub fn set_login_delay(&self, d: Duration) {
        self.shared.set_login_delay(d);
    }

    /// Hold login answers of `outcome` back by `d` (after counting them),
    /// instead of the [`Simulator::set_login_delay`] delay: e.g. a rejected
    /// login that answers after `d` while good logins answer at once.
    pub fn set_login_delay_on(&self, outcome: LoginOutcome, d: Duration) {
        self.shared.set_outcome_delay(outcome, d);
    }

    /// Route each path as a Java servlet container reads it (`;parameters`
    /// stripped, percent-decoded, empty segments merged, `.` and `..`
    /// resolved) instead of the raw path; off by default.
    pub fn set_servlet_paths(&self, on: bool) {
        self.shared.set_servlet_paths(on);
    }

    /// Every path routed, with its method, as routed (servlet-normalised in
    /// servlet-path mode), oldest first: API calls and logins, not `/__sim/`
    /// hooks nor paths refused before routing. The most recent 10 000 are kept.
    pub fn routed_paths(&self) -> Vec<(Method, String)> {
        self.shared.routed_paths()
    }

    /// Answer a bearer token the simulator does not accept with the session
    /// error of its API (`OK-SESSION0003`, search `OK-GEN0003`) instead of
    /// `OK-AUTH0005`; off by default.
    pub fn set_bearer_session_errors(&self, on: bool) {
        self.shared.set_bearer_session_errors(on);
    }

    /// Send every API call's session error in `shape` (JSON; XML stays
    /// `<error>`): e.g. [`SessionShape::Portal`] answers it as the Customer
    /// Portal's token error, status 200 and `{"errors":[{"code":"OK-GEN0003"}]}`.
    /// [`SessionShape::ByApi`] (the default) is Oracle's per-API shape.
    pub fn set_session_error_shape(&self, shape: SessionShape) {
        self.shared.set_session_error_shape(shape);
    }

    /// How many bearer calls were answered with a session error by
    /// [`Simulator::set_bearer_session_errors`].
    pub fn bearer_session_errors(&self) -> u64 {
        self.shared.bearer_session_error_count()
    }

    /// Answer everything with `Connection: close` (or stop doing so).
    pub fn set_close_connections(&self, on: bool) {
        self.shared.set_close_connections(on);
    }

    /// Interactions end as soon as they start (or stop doing so): every
    /// call carrying one is answered `OK-SEC0012`, even on a new one.
    pub fn set_interactions_die(&self, on: bool) {
        self.shared.set_interactions_die(on);
    }

    /// How many API requests were received (not capped).
    pub fn request_count(&self) -> u64 {
        self.shared.request_count()
    }

    /// Every token string issued (integration and user), for leak tests.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.issued_tokens()
    }

    /// Answer the next `count` login attempts with `status` (e.g. 503),
    /// counted as [`LoginOutcome::Failed`]. A status that is not a valid HTTP
    /// status becomes 503.
    pub fn fail_logins(&self, status: u16, count: u32) {
        self.shared.set_login_faults(status, count, None);
    }

    /// Like [`Simulator::fail_logins`], and the answers carry
    /// `Retry-After` (whole seconds, rounded up) when `retry_after` is given:
    /// e.g. `fail_logins_with(429, 2, Some(Duration::from_secs(3)))`. Counted
    /// as [`LoginOutcome::Failed`], never as a rejection.
    pub fn fail_logins_with(&self, status: u16, count: u32, retry_after: Option<Duration>) {
        self.shared.set_login_faults(status, count, retry_after);
    }

    /// Answer the next `count` API calls that reach the token check with the
    /// session-expired error, even if their tokens are valid.
    pub fn session_error_next(&self, count: u32) {
        self.shared.set_session_errors(count);
    }

    /// Delay every API (non-login) answer by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.shared.set_delay(d);
    }

    /// Zero the login, request, connection and bearer-session-error counters
    /// (the peak of open connections starts again from those open now) and
    /// forget recorded requests and routed paths. Tokens, issued-token history,
    /// injected faults and modes are kept.
    pub fn reset_counters(&self) {
        self.shared.reset_counters();
    }

    /// Clear pending injected login faults and session errors, every delay,
    /// and turn off `Connection: close`, servlet-path mode, bearer session
    /// errors and a session error shape.
    pub fn reset_faults(&self) {
        self.shared.reset_faults();
    }
}

/// A simulator serving in a background task; dropping it stops the server.
#[derive(Debug)]
pub struct SimHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state, for test hooks.
    pub sim: Simulator,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, let in-flight answers finish, and wait for the server.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
