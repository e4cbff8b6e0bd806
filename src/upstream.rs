//! The one pooled HTTP client kmproxy uses to reach Knowledge Advanced, for
//! forwarded calls and logins alike: hyper-util's client over rustls (ring),
//! with the system trust roots plus `ca_file`. It never follows redirects
//! (hyper's client has no redirect logic), so a token only ever goes to the
//! configured hosts.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::{PathAndQuery, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::UpstreamConfig;

/// Request bodies are buffered (for replay), so the client sends `Full`.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("upstream.ca_file: {0}")]
    CaFile(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// One upstream origin: scheme, authority and an optional path prefix.
#[derive(Clone, Debug)]
pub struct Origin {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Path prefix from the configured URL, without trailing slash ("" if none).
    prefix: Arc<str>,
}

impl Origin {
    /// Parses a validated base URL.
    pub fn parse(base: &str) -> Result<Self, String> {
        let uri: Uri = base.parse().map_err(|e| format!("`{base}`: {e}"))?;
        let parts = uri.into_parts();
        Ok(Self {
            scheme: parts.scheme.ok_or("missing scheme")?,
            authority: parts.authority.ok_or("missing host")?,
            prefix: parts
                .path_and_query
                .map(|p| p.path().trim_end_matches('/').to_owned())
                .unwrap_or_default()
                .into(),
        })
    }

    /// The upstream URI for a caller's path and query, byte for byte.
    pub fn uri(&self, pq: &PathAndQuery) -> Result<Uri, http::Error> {
        let builder = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone());
        if self.prefix.is_empty() {
            builder.path_and_query(pq.clone()).build()
        } else {
            builder
                .path_and_query(format!("{}{}", self.prefix, pq.as_str()))
                .build()
        }
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
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .build(https))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_keeps_path_and_query_byte_exact() {
        let o = Origin::parse("https://example-irs.custhelp.com").expect("parses");
        let pq = PathAndQuery::from_static("/km/api/latest/content?q=a%20b&x=%2F&y=%E2%82%AC");
        assert_eq!(
            o.uri(&pq).expect("builds").to_string(),
            "https://example-irs.custhelp.com/km/api/latest/content?q=a%20b&x=%2F&y=%E2%82%AC"
        );
        let prefixed = Origin::parse("http://gw.local:8000/oracle/").expect("parses");
        assert_eq!(
            prefixed.uri(&pq).expect("builds").to_string(),
            "http://gw.local:8000/oracle/km/api/latest/content?q=a%20b&x=%2F&y=%E2%82%AC"
        );
    }
}
