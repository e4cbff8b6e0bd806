//! TLS session resumption towards the upstream: where the tickets the
//! upstream hands out are kept until a new connection uses one.
//!
//! rustls uses a TLS 1.3 ticket at most once (RFC 8446 §C.4 asks clients
//! not to reuse them), so a connection resumes only if a ticket is left
//! over from an earlier handshake. rustls's own memory store keeps 8 per
//! server; a proxy opens connections in bursts (every caller at once after
//! a quiet spell, or after the upstream closed its idle connections), and
//! a burst of 32 then resumed 8 and paid 24 full handshakes. This store
//! keeps up to [`TICKETS_PER_SERVER`] (each full handshake with a typical
//! server brings two, each resumption one), so a burst as large as the
//! one before it resumes whole. Everything else is kept as rustls's store
//! keeps it: the key-exchange group each server chose and one TLS 1.2
//! session.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::NamedGroup;
use rustls_pki_types::ServerName;

/// TLS 1.3 tickets kept per server (oldest dropped first).
pub const TICKETS_PER_SERVER: usize = 128;
/// Servers remembered: kmproxy talks to one or two origins, and a reload
/// makes a new store.
const MAX_SERVERS: usize = 16;

/// What one server left for later connections.
#[derive(Default)]
struct Server {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// A [`ClientSessionStore`] with room for a burst's worth of tickets.
#[derive(Default)]
pub struct Tickets {
    servers: Mutex<HashMap<ServerName<'static>, Server>>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tickets are secrets: only their count is shown.
        let servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        let tickets: usize = servers.values().map(|s| s.tls13.len()).sum();
        f.debug_struct("Tickets")
            .field("servers", &servers.len())
            .field("tls13_tickets", &tickets)
            .finish()
    }
}

impl Tickets {
    /// Runs `f` on `name`'s entry, made if need be (a new server past
    /// [`MAX_SERVERS`] replaces an arbitrary one).
    fn edit(&self, name: ServerName<'static>, f: impl FnOnce(&mut Server)) {
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        if servers.len() >= MAX_SERVERS && !servers.contains_key(&name) {
            if let Some(evicted) = servers.keys().next().cloned() {
                servers.remove(&evicted);
            }
        }
        f(servers.entry(name).or_default());
    }

    fn read<T>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut Server) -> Option<T>) -> Option<T> {
        // Looked up by an owned name (a map keyed by `ServerName<'static>`
        // takes no shorter borrow); lookups happen once per handshake.
        let name = name.to_owned();
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        servers.get_mut(&name).and_then(f)
    }
}

impl ClientSessionStore for Tickets {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.edit(name, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.read(name, |s| s.kx_hint)
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.edit(name, |s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.read(name, |s| s.tls12.clone())
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.read(name, |s| s.tls12.take());
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.edit(name, |s| {
            if s.tls13.len() >= TICKETS_PER_SERVER {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    /// The newest ticket, removed: each is used once.
    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.read(name, |s| s.tls13.pop_back())
    }
}
