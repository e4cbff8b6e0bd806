//! The one HTTP client kmproxy uses to reach Knowledge Advanced, for
//! forwarded calls and logins alike: HTTP/1.1 connections (hyper's
//! `client::conn`) over rustls (ring) with the system trust roots plus
//! `ca_file`, kept for reuse per origin ([`pool`]). It never follows
//! redirects, so a token only ever goes to the configured hosts.
//!
//! Why not hyper-util's pooled client: per call it hashes the origin into a
//! shared map, spawns a task to return the connection, and rewrites the
//! URI; here an [`Origin`] holds its own idle stack, the request is built in
//! origin form with a prepared `Host`, and the answer body gives its
//! connection back when read (see BENCHMARKS.md for what this bought).

pub mod error;
pub mod links;
pub mod pool;
pub mod resume;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::ServiceExt as _;

use crate::config::UpstreamConfig;
pub use error::Error;
pub use pool::PooledBody;
use pool::Slot;

/// How long an idle upstream connection may be reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per origin.
const MAX_IDLE: usize = 1024;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("upstream.ca_file: {0}")]
    CaFile(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Why a base URL cannot be an origin (config validation rules these out;
/// this is the last line of defence).
#[derive(Debug, thiserror::Error)]
#[error("`{url}` cannot be an upstream origin: {problem}")]
pub struct OriginError {
    url: String,
    problem: String,
}

impl OriginError {
    fn new(url: &str, problem: impl std::fmt::Display) -> Self {
        Self {
            url: url.to_owned(),
            problem: problem.to_string(),
        }
    }
}

/// The client: cheap to clone, shared by the data path and the logins.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: HttpsConnector<HttpConnector>,
    http1: hyper::client::conn::http1::Builder,
    /// `upstream.connect_timeout`, named in a connect timeout's error.
    connect_timeout: Duration,
    /// One slot per (scheme, authority), so every [`Origin`] made for the
    /// same server shares its connections.
    slots: Mutex<Vec<(bool, http::uri::Authority, Arc<Slot>)>>,
}

/// One upstream origin: scheme, authority, an optional path prefix, and
/// its idle connections.
#[derive(Clone)]
pub struct Origin {
    /// `scheme://authority/`, what the connector dials.
    dial: Uri,
    /// The `Host` header: the host, with the port when it is not the
    /// scheme's default.
    host: HeaderValue,
    /// Path prefix from the configured URL, without trailing slash ("" if none).
    prefix: Arc<str>,
    /// `scheme://host[:port]`, for messages (never any userinfo).
    name: Arc<str>,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Origin({}{})", self.name, self.prefix)
    }
}

impl Origin {
    /// The request target for a caller's path and query, byte for byte,
    /// in origin form (`/prefix/path?query`).
    pub fn target(&self, pq: &PathAndQuery) -> Result<Uri, http::Error> {
        if self.prefix.is_empty() {
            Ok(Uri::from(pq.clone()))
        } else {
            Ok(Uri::try_from(format!("{}{}", self.prefix, pq.as_str()))?)
        }
    }

    /// Where the origin is, for messages: `scheme://host[:port]`.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
}

impl HttpClient {
    /// The origin for a validated base URL.
    pub fn origin(&self, base: &str) -> Result<Origin, OriginError> {
        let uri: Uri = base.parse().map_err(|e| OriginError::new(base, e))?;
        let parts = uri.into_parts();
        let scheme = parts.scheme.ok_or_else(|| OriginError::new(base, "missing scheme"))?;
        let authority = parts.authority.ok_or_else(|| OriginError::new(base, "missing host"))?;
        let https = scheme == http::uri::Scheme::HTTPS;
        let default_port = if https { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(p) if p != default_port => format!("{}:{p}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let slot = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match slots.iter().find(|(s, a, _)| *s == https && *a == authority) {
                Some((_, _, slot)) => Arc::clone(slot),
                None => {
                    let slot = Slot::new(MAX_IDLE, IDLE_TIMEOUT);
                    slots.push((https, authority.clone(), Arc::clone(&slot)));
                    slot
                }
            }
        };
        Ok(Origin {
            name: format!("{scheme}://{host}").into(),
            dial: Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query("/")
                .build()
                .map_err(|e| OriginError::new(base, e))?,
            host: HeaderValue::try_from(host).map_err(|e| OriginError::new(base, e))?,
            prefix: parts
                .path_and_query
                .map(|p| p.path().trim_end_matches('/').to_owned())
                .unwrap_or_default()
                .into(),
            slot,
        })
    }

    /// Sends `req` (its URI in origin form, see [`Origin::target`]) to
    /// `origin` on an idle connection, or a new one. A request that an idle
    /// connection closed before it was sent goes out on another.
    pub async fn request(&self, origin: &Origin, mut req: Request<Full<Bytes>>) -> Result<Response<PooledBody>, Error> {
        req.headers_mut().insert(HOST, origin.host.clone());
        loop {
            let (mut sender, reused) = match origin.slot.checkout() {
                Some(sender) => (sender, true),
                // Boxed: connecting is rare, and its future is large; inline,
                // it would be moved along with every call's future.
                None => (Box::pin(self.connect(origin)).await?, false),
            };
            if reused && sender.ready().await.is_err() {
                continue; // closed while idle
            }
            match sender.try_send_request(req).await {
                Ok(res) => return Ok(res.map(|body| PooledBody::new(body, sender, Arc::clone(&origin.slot)))),
                Err(mut e) => match e.take_message() {
                    // Never written: safe to send again, on another connection.
                    Some(back) if reused => req = back,
                    _ => return Err(Error::exchange(Arc::clone(&origin.name), e.into_error())),
                },
            }
        }
    }

    /// Idle connections still open, over every origin.
    pub fn idle_connections(&self) -> usize {
        let slots = self.inner.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.iter().map(|(_, _, slot)| slot.open_idle()).sum()
    }

    async fn connect(&self, origin: &Origin) -> Result<pool::Sender, Error> {
        let io = self
            .inner
            .connector
            .clone()
            .oneshot(origin.dial.clone())
            .await
            .map_err(|e| Error::connect(Arc::clone(&origin.name), e, self.inner.connect_timeout))?;
        let (sender, conn) = self
            .inner
            .http1
            .handshake(io)
            .await
            .map_err(|e| Error::exchange(Arc::clone(&origin.name), e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// Builds the pooled client.
pub fn client(cfg: &UpstreamConfig) -> Result<HttpClient, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "could not load some system trust roots");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &cfg.ca_file {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| ClientError::CaFile(format!("{}: {e}", path.display())))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| ClientError::CaFile(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::CaFile(format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::CaFile(format!(
                "{}: no certificates found",
                path.display()
            )));
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Room for a burst's worth of session tickets, and (where the upstream
    // honours RFC 9149) more of them per handshake: see `resume`.
    tls.resumption = rustls::client::Resumption::store(Arc::new(resume::Tickets::default()));
    tls.send_ticket_request = Some(rustls::client::TicketRequest {
        new_session_count: 8,
        resumption_count: 2,
    });

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(HttpClient {
        inner: Arc::new(Inner {
            connector,
            http1: {
                let mut h1 = hyper::client::conn::http1::Builder::new();
                // Each piece of an answer is a slice of the read buffer and
                // keeps it whole until the caller has it: capped at 256 KiB
                // (hyper's default: 408), 20 slow 10 MiB answers at once
                // peak at 21-27 MiB RSS instead of 24-39, for up to 6 % more
                // reads of a slow answer and none more of a fast one.
                h1.max_buf_size(256 * 1024);
                h1
            },
            connect_timeout: cfg.connect_timeout,
            slots: Mutex::new(Vec::new()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> HttpClient {
        let cfg = UpstreamConfig {
            base_url: "https://example-irs.custhelp.com".into(),
            search_base_url: "https://example-irs.custhelp.com".into(),
            site_name: "s".into(),
            locale: "en_US".into(),
            api_version: "latest".into(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            ca_file: None,
            kmauthtoken_extra: Vec::new(),
            rewrite_links: true,
        };
        super::client(&cfg).expect("client")
    }

    #[test]
    fn target_keeps_path_and_query_byte_exact() {
        let c = client();
        let o = c.origin("https://example-irs.custhelp.com").expect("parses");
        let pq = PathAndQuery::from_static("/km/api/latest/content?q=a%20b&x=%2F&y=%E2%82%AC");
        assert_eq!(
            o.target(&pq).expect("builds").to_string(),
            "/km/api/latest/content?q=a%20b&x=%2F&y=%E2%82%AC"
        );
        assert_eq!(o.host, "example-irs.custhelp.com");
        let prefixed = c.origin("http://gw.local:8000/oracle/").expect("parses");
        assert_eq!(
            prefixed.target(&pq).expect("builds").to_string(),
            "/oracle/km/api/latest/content?q=a%20b&x=%2F&y=%E2%82%AC"
        );
        assert_eq!(prefixed.host, "gw.local:8000");
        assert_eq!(c.origin("https://h.example:443").expect("parses").host, "h.example");
    }

    #[test]
    fn origins_on_one_server_share_their_connections() {
        let c = client();
        let a = c.origin("https://h.example/km").expect("parses");
        let b = c.origin("https://h.example").expect("parses");
        let other = c.origin("http://h.example").expect("parses");
        assert!(Arc::ptr_eq(&a.slot, &b.slot));
        assert!(!Arc::ptr_eq(&a.slot, &other.slot));
    }
}
