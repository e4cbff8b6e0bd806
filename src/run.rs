//! The one entry point that runs a kmproxy: given its state and its
//! listeners, serve the data plane and the admin port, warm up, and stop
//! on a shutdown future. `kmproxy serve`, `kmproxy demo` and the
//! integration tests all run a kmproxy through [`run`], so the tests run
//! the wiring that ships.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::App;
use crate::config::ServerConfig;
use crate::server::{self, Stop};

/// The sockets a kmproxy serves.
pub struct Listeners {
    /// The data plane (`server.listen`).
    pub data: TcpListener,
    /// The admin port (`server.admin_listen`), unless it is off.
    pub admin: Option<TcpListener>,
}

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({key}): {source}")]
pub struct BindError {
    key: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

impl Listeners {
    /// Binds `server.listen` and, unless it is off, `server.admin_listen`.
    pub async fn bind(server: &ServerConfig) -> Result<Self, BindError> {
        let bind = |key, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { key, addr, source })
        };
        let data = bind("server.listen", server.listen).await?;
        let admin = match server.admin_listen {
            Some(addr) => Some(bind("server.admin_listen", addr).await?),
            None => None,
        };
        Ok(Self { data, admin })
    }
}

/// Serves `app` on `listeners` until `shutdown` resolves, then lets the
/// calls in flight finish (at most `server.drain_timeout`). At start it
/// fetches the integration token, so readiness turns green without
/// waiting for the first call.
pub async fn run(
    app: Arc<App>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = Stop::new();
    let admin = listeners.admin.map(|l| {
        let addr = l.local_addr().ok();
        tracing::info!(addr = ?addr, "admin listening");
        tokio::spawn(crate::admin::serve(Arc::clone(&app), l, stop.wait()))
    });
    warm_up(&app);
    let config = app.live().config.clone();
    let bound = listeners.data.local_addr().unwrap_or(config.server.listen);
    tracing::info!(addr = %bound, upstream = %config.upstream.base_url, "kmproxy listening");
    let data = server::serve(app, listeners.data, async move {
        shutdown.await;
        stop.signal();
    })
    .await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    data
}

/// Fetches the integration token in the background.
fn warm_up(app: &App) {
    let tokens = app.live().tokens.clone();
    tokio::spawn(async move {
        let _ = tokens.warm().await;
    });
}
