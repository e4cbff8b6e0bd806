//! kmproxy: a local authenticating reverse proxy for the Oracle B2C Service
//! Knowledge Advanced REST API.
//!
//! Apps send plain REST calls to kmproxy on localhost; kmproxy maps the
//! caller to a principal, holds that principal's tokens, writes the
//! `kmauthtoken` header, forwards the call, streams the answer back, and on
//! session expiry logs in once and replays the call.
//!
//! # Layout
//!
//! A module imports only from modules listed below it (`tests/layout.rs`
//! checks this), so a request flows down the list, never back up:
//!
//! - [`cli`]: the commands (`serve`, `check`, `demo`, `simulate`, `hash-key`,
//!   `probe`).
//! - [`probe`]: `kmproxy probe [--ready]`, the container health check: one
//!   GET to the admin port.
//! - [`output`]: the commands' stdout and stderr, which survive a reader
//!   that has gone (`kmproxy check | head -1`).
//! - [`demo`]: the simulator plus a kmproxy in front of it.
//! - [`run`]: the one entry point that runs a kmproxy (data and admin
//!   listeners, warm-up, shutdown), used by `serve`, `demo` and the tests.
//! - [`admin`]: health, readiness, status, metrics, resets.
//! - [`server`]: the accept loop, connection limits, the send timeout of
//!   answers a caller stops taking, graceful shutdown.
//! - [`proxy`]: the data path (route, headers, bodies, replay once, errors
//!   answered in Oracle's shape).
//! - [`host`]: the `Host` rule of both ports (loopback names, IP literals,
//!   `allowed_hosts`): the DNS-rebinding guard.
//! - [`app`]: the state built from a config, and its reload.
//! - [`callers`]: caller key / default / act-as → principal.
//! - [`interactions`]: the managed interaction ids per (caller, principal,
//!   session), with idle expiry.
//! - [`tokens`]: the token cache, single-flight logins, renewal, lockout gate.
//! - [`kmauthtoken`]: parse a caller's header, build the upstream's.
//! - [`session_error`]: recognise session errors: Oracle's error documents
//!   in any shape, JSON or XML, content-encoded or not, parsed as documents.
//! - [`fleet`]: fleet mode's shared store on Redis or Valkey (tokens,
//!   leases, verdicts, events), encrypted at rest, never failing a call.
//! - [`upstream`]: the one HTTP/1.1 client (rustls), origins and their idle
//!   connections, and its typed errors.
//! - [`metrics`]: the Prometheus registry.
//! - [`config`] and [`secret`]: the TOML file, validated; secrets redacted.
//! - [`logfmt`]: the human-readable log's fields, written for less.
//! - [`sim`]: the Knowledge Advanced simulator (demo, tests, compose); it
//!   imports nothing from the proxy.

pub mod cli;
pub mod logfmt;
pub mod probe;
pub mod output;
pub mod demo;
pub mod run;
pub mod admin;
pub mod server;
pub mod proxy;
pub mod host;
pub mod app;
pub mod callers;
pub mod interactions;
pub mod tokens;
pub mod kmauthtoken;
pub mod session_error;
pub mod fleet;
pub mod upstream;
pub mod metrics;
pub mod config;
pub mod secret;
pub mod sim;

pub use run::run;
