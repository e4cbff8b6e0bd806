//! Serving: the data-plane router, the accept loop with its connection
//! limits, and graceful shutdown.
//!
//! The accept loop is our own, on hyper's HTTP/1 and HTTP/2 connections
//! (rather than `axum::serve` or hyper-util's auto builder), so that the
//! protections a sidecar needs can be set on every listener alike: a
//! deadline for a request head that runs from accept, protocol detection
//! included ([`connection`]; on HTTP/1 it also closes keep-alive connections
//! idle that long, on HTTP/2 connections with no call that long), a cap on
//! header size and count and on HTTP/2 streams, a cap on open connections
//! (accept pauses at the cap), a send timeout that ends a call whose caller
//! takes nothing of its answer ([`stall`]), and a bounded drain on shutdown.

mod connection;
mod sniff;
mod stall;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::app::App;
use crate::config::ServerConfig;
use crate::proxy;
use connection::Protocols;
pub use stall::SendTimeout;

/// Largest request head (request line + headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most request headers accepted.
pub const MAX_HEADERS: usize = 100;
/// Most streams a client may have open at once on one HTTP/2 connection
/// (RFC 9113 §6.5.2 advises no fewer than 100). Each is a call, so
/// `max_in_flight` still bounds them across connections.
pub const MAX_STREAMS: u32 = 100;

/// Connection-level limits of a listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request head must arrive within this long, counted from accept for
    /// a connection's first (also the HTTP/1 keep-alive idle timeout, and
    /// how long an HTTP/2 connection may carry no call).
    pub header_read_timeout: Duration,
    /// Open connections at most; accepting pauses at the cap.
    pub max_connections: usize,
    /// After shutdown starts, how long in-flight calls may take.
    pub drain_timeout: Duration,
    /// How long a caller may take nothing of an answer (an HTTP/1 socket
    /// that accepts no byte, an HTTP/2 stream whose window stays shut)
    /// before the call ends and frees what its answer holds.
    pub send_timeout: SendTimeout,
}

impl Limits {
    /// The limits of `app`'s listeners: the `[server]` settings read now
    /// (they take effect at a restart), and `upstream.timeout` as the send
    /// timeout, read when a call first waits on its caller, so that a
    /// reload applies: an answer may stall that long on either side.
    pub fn of(app: &Arc<App>) -> Self {
        let live = app.live();
        let app = Arc::downgrade(app);
        let fallback = live.config.upstream.timeout;
        Self::new(
            &live.config.server,
            SendTimeout::new(move || app.upgrade().map_or(fallback, |app| app.live().config.upstream.timeout)),
        )
    }

    /// `server`'s limits with `send_timeout`.
    pub fn new(server: &ServerConfig, send_timeout: SendTimeout) -> Self {
        Self {
            header_read_timeout: server.header_read_timeout,
            max_connections: server.max_connections,
            drain_timeout: server.drain_timeout,
            send_timeout,
        }
    }
}

/// Serves the data plane on `listener` until `shutdown` resolves. Every
/// path goes to [`proxy::handle`]: there is no routing table to walk per
/// call, so the handler is served as a plain service.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Limits::of(&app);
    let service = tower::service_fn(move |req| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(proxy::handle(app, req).await) }
    });
    serve_service(service, listener, limits, shutdown).await
}

/// Serves `service` (an axum `Router`, or the data plane's handler) on
/// `listener` with `limits` until `shutdown` resolves, then stops accepting
/// and lets open calls finish (at most `drain_timeout`). Every connection
/// gets the head deadline and counts against `max_connections`.
pub async fn serve_service<S, B>(
    service: S,
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let protocols = Arc::new(Protocols::new(&limits));
    // One permit per open connection; all of them back means all closed.
    let cap = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(cap));
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = accept(&listener) => match accepted {
                Some(stream) => stream,
                None => continue,
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::clone(&protocols).serve(stream, service.clone(), stopped.clone());
        tokio::spawn(async move {
            conn.await;
            drop(permit);
        });
    }
    drop(listener);
    stop.send_replace(true);
    tokio::select! {
        _ = slots.acquire_many(cap as u32) => {}
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(drain = ?limits.drain_timeout, "drain timeout: closing the calls still in flight");
        }
    }
    Ok(())
}

/// The next connection, or `None` after a failed accept. Per-connection
/// errors (reset before accept) are the client's; any other (out of
/// descriptors) waits a little before the next try.
async fn accept(listener: &TcpListener) -> Option<tokio::net::TcpStream> {
    match listener.accept().await {
        Ok((stream, _)) => Some(stream),
        Err(e) => {
            tracing::debug!(error = %e, "accept failed");
            if !matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
            ) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        }
    }
}

/// One stop signal shared by several servers (data, admin, simulator):
/// [`Stop::wait`] gives each its shutdown future, [`Stop::signal`] fires all.
#[derive(Debug)]
pub struct Stop(tokio::sync::watch::Sender<bool>);

impl Stop {
    pub fn new() -> Self {
        Self(tokio::sync::watch::channel(false).0)
    }

    /// Resolves once [`Stop::signal`] was called (or the `Stop` is gone).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    /// Tells every waiter to stop.
    pub fn signal(&self) {
        self.0.send_replace(true);
    }
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight calls");
}
