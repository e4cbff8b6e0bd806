//! Why an exchange with the upstream failed, classified once, where it
//! arose: the data path and the logins `match` on [`Error`] instead of
//! walking a source chain to learn "was it a timeout?".

use std::sync::Arc;
use std::time::Duration;

/// A boxed error from the connector (TCP, DNS, TLS).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an exchange with the upstream failed. `Display` carries the
/// source chain (hyper's errors hide the useful part, such as
/// "connection refused", in it), so one line says all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No TCP (or TLS) connection within `upstream.connect_timeout`.
    #[error("connecting to {origin} timed out after {after:?}")]
    ConnectTimeout { origin: Arc<str>, after: Duration },
    /// Nothing listens there (or a firewall said so).
    #[error("{origin} refused the connection: {}", chain(cause.as_ref()))]
    Refused { origin: Arc<str>, cause: BoxError },
    /// The TLS handshake failed (certificate, protocol version, ...).
    #[error("TLS with {origin} failed: {}", chain(cause.as_ref()))]
    Tls { origin: Arc<str>, cause: BoxError },
    /// Any other failure to connect (DNS, unreachable network).
    #[error("cannot connect to {origin}: {}", chain(cause.as_ref()))]
    Connect { origin: Arc<str>, cause: BoxError },
    /// The upstream broke HTTP/1.1 (an unparsable answer, say).
    #[error("{origin} broke the HTTP protocol: {}", chain(cause))]
    Protocol { origin: Arc<str>, cause: hyper::Error },
    /// The connection ended before the answer was complete.
    #[error("{origin} closed the connection early: {}", chain(cause))]
    ClosedEarly { origin: Arc<str>, cause: hyper::Error },
    /// No answer (head, or the part of the body kmproxy needed) within
    /// `upstream.timeout`.
    #[error("{origin} did not answer within {after:?}")]
    Timeout { origin: Arc<str>, after: Duration },
}

impl Error {
    /// True for both deadlines (connect and exchange): answered 504.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::ConnectTimeout { .. } | Error::Timeout { .. })
    }

    /// Sorts a connector failure by what its source chain holds.
    pub(crate) fn connect(origin: Arc<str>, cause: BoxError, connect_timeout: Duration) -> Self {
        let mut timed_out = false;
        let mut refused = false;
        let mut tls = false;
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(cause.as_ref());
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
                refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            }
            tls |= err.downcast_ref::<rustls::Error>().is_some();
            cur = err.source();
        }
        if timed_out {
            Error::ConnectTimeout {
                origin,
                after: connect_timeout,
            }
        } else if tls {
            Error::Tls { origin, cause }
        } else if refused {
            Error::Refused { origin, cause }
        } else {
            Error::Connect { origin, cause }
        }
    }

    /// Sorts a failure of an exchange (or of reading an answer's body).
    pub fn exchange(origin: Arc<str>, cause: hyper::Error) -> Self {
        if cause.is_incomplete_message() || cause.is_canceled() || cause.is_closed() || is_io(&cause) {
            Error::ClosedEarly { origin, cause }
        } else {
            Error::Protocol { origin, cause }
        }
    }
}

/// True when a hyper error came from the socket (a reset, say).
fn is_io(e: &hyper::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// A one-line description of an error and its sources.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let next = inner.to_string();
        // hyper repeats its source's text in its own at times.
        if !s.ends_with(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        src = inner.source();
    }
    s
}
