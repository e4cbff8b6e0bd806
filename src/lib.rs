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
//! A request flows down this list, never back up:
//!
//! - [`server`]: binds the data listener, graceful shutdown.
//! - [`proxy`]: the data path (route, headers, bodies, forward, replay once).
//! - [`callers`]: caller key / default / act-as → principal.
//! - [`tokens`]: the token cache, single-flight logins, renewal, lockout gate.
//! - [`kmauthtoken`]: parse a caller's header, build the upstream's.
//! - [`session_error`]: recognise `OK-SESSION…` answers in JSON or XML.
//! - [`upstream`]: the one HTTP/1.1 client (rustls), origins and their idle connections.
//! - [`error`]: `ProxyError` → Oracle-shaped JSON answer.
//! - [`admin`] and [`metrics`]: health, readiness, status, Prometheus metrics.
//! - [`config`] and [`secret`]: the TOML file, validated; secrets redacted.
//! - [`sim`]: the Knowledge Advanced simulator (demo, tests, compose).
//! - [`cli`]: the commands.

pub mod admin;
pub mod callers;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod kmauthtoken;
pub mod metrics;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod session_error;
pub mod sim;
pub mod tokens;
pub mod upstream;
