//! Serving: the data-plane router, the accept loop with its connection
//! limits, and graceful shutdown.
//!
//! The accept loop is hyper-util's (rather than `axum::serve`) so that the
//! protections a sidecar needs can be set: a deadline for a request head
//! (slow clients; on HTTP/1 it also closes keep-alive connections idle that
//! long), a cap on header size and count, a cap on open connections (accept
//! pauses at the cap), and a bounded drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::config::ServerConfig;
use crate::proxy;

/// Largest request head (request line + headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most request headers accepted.
pub const MAX_HEADERS: usize = 100;

/// Connection-level limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must arrive within this long (also the HTTP/1
    /// keep-alive idle timeout).
    pub header_read_timeout: Duration,
    /// Open connections at most; accepting pauses at the cap.
    pub max_connections: usize,
    /// After shutdown starts, how long in-flight calls may take.
    pub drain_timeout: Duration,
}

impl From<&ServerConfig> for Limits {
    fn from(s: &ServerConfig) -> Self {
        Self {
            header_read_timeout: s.header_read_timeout,
            max_connections: s.max_connections,
            drain_timeout: s.drain_timeout,
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
    let limits = Limits::from(&app.live().config.server);
    let service = tower::service_fn(move |req| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(proxy::handle(app, req).await) }
    });
    serve_service(service, listener, limits, shutdown).await
}

/// Serves `service` (an axum `Router`, or the data plane's handler) on
/// `listener` with `limits` until `shutdown` resolves, then stops accepting
/// and lets open calls finish (at most `drain_timeout`).
pub async fn serve_service<S, B>(
    service: S,
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Per-connection errors (reset before accept) are the
                    // client's; running out of descriptors passes.
                    tracing::debug!(error = %e, "accept failed");
                    if !matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(drain = ?limits.drain_timeout, "drain timeout: closing the calls still in flight");
        }
    }
    Ok(())
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
