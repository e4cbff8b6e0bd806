//! One client connection, from accept to close: its protocol is learnt under
//! the head deadline ([`super::sniff`]), then hyper's HTTP/1 or HTTP/2
//! connection serves it until the client closes it, the server stops (a
//! graceful close), its writes have waited on the client for a send
//! timeout ([`super::stall`]: the connection is dropped), or, on HTTP/2, it
//! has carried no call for a head timeout. HTTP/1 needs no such idle watch:
//! hyper's `header_read_timeout` times each head, and an idle keep-alive
//! connection is a head that is late. HTTP/2 streams run on
//! [`super::stall::Streams`], which ends one whose answer the client stops
//! taking.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use super::sniff::{sniff, Protocol};
use super::stall::{Marked, SendTimeout, Streams, Tracked, Writes};
use super::{Limits, MAX_HEADERS, MAX_HEAD_BYTES, MAX_STREAMS};

/// The two protocols' connection settings, made once per listener.
pub struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<Streams>,
    /// A request head must arrive within this long; an HTTP/2 connection
    /// with no call for this long is closed.
    head_timeout: Duration,
    /// A connection whose writes wait on the client this long is dropped.
    send_timeout: SendTimeout,
}

impl Protocols {
    pub fn new(limits: &Limits) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS);
        let mut h2 = http2::Builder::new(Streams::new(limits.send_timeout.clone()));
        h2.timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            .max_concurrent_streams(MAX_STREAMS)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        Self {
            h1,
            h2,
            head_timeout: limits.header_read_timeout,
            send_timeout: limits.send_timeout.clone(),
        }
    }

    /// Serves one accepted connection until it ends or `stop` turns true.
    pub async fn serve<S, B>(self: Arc<Self>, stream: TcpStream, service: S, mut stop: watch::Receiver<bool>)
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // The head deadline runs from accept, protocol detection included.
        let deadline = Instant::now() + self.head_timeout;
        let sniffed = tokio::select! {
            sniffed = tokio::time::timeout_at(deadline, sniff(stream)) => sniffed,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let (protocol, io) = match sniffed {
            Ok(Ok(sniffed)) => sniffed,
            Ok(Err(e)) => return tracing::debug!(error = %e, "connection closed before a request"),
            Err(_) => return tracing::debug!(timeout = ?self.head_timeout, "no request within the head timeout"),
        };
        let (io, writes) = Tracked::new(io);
        let io = TokioIo::new(io);
        let watch = Watches {
            stop,
            idle: None,
            writes: &writes,
            send_timeout: self.send_timeout.clone(),
        };
        let ended = match protocol {
            Protocol::Http1 => {
                let conn = self.h1.serve_connection(io, TowerToHyperService::new(service));
                drive(conn, |c| c.graceful_shutdown(), watch).await
            }
            Protocol::Http2 => {
                let calls = Calls::default();
                let conn = self.h2.serve_connection(io, calls.count(service));
                let idle = Some(IdleWatch {
                    calls,
                    first: deadline,
                    period: self.head_timeout,
                });
                drive(conn, |c| c.graceful_shutdown(), Watches { idle, ..watch }).await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// What a connection's driver watches besides the connection itself.
struct Watches<'a> {
    /// Turns true when the server stops.
    stop: watch::Receiver<bool>,
    /// HTTP/2: when the connection counts as unused.
    idle: Option<IdleWatch>,
    /// What the connection's writes have done.
    writes: &'a Writes,
    send_timeout: SendTimeout,
}

/// Runs `conn` to its end. When the server stops, or the idle watch says
/// the connection is unused, it is closed gracefully (HTTP/1: after the
/// call in progress; HTTP/2: `GOAWAY`, open streams finish); an idle one
/// that has not closed a head timeout later is dropped. One whose writes
/// have waited on the client for a send timeout is dropped at once: the
/// client takes nothing, so nothing graceful would reach it.
async fn drive<C, E>(conn: C, graceful: impl FnOnce(Pin<&mut C>), watches: Watches<'_>) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let Watches {
        mut stop,
        idle,
        writes,
        send_timeout,
    } = watches;
    tokio::pin!(conn);
    let unused = async {
        match &idle {
            Some(idle) => idle.expired().await,
            None => std::future::pending().await,
        }
    };
    let idle_close = tokio::select! {
        // The connection first: the write watch looks at what it just did.
        biased;
        ended = conn.as_mut() => return ended,
        _ = stop.wait_for(|stopped| *stopped) => false,
        _ = unused => true,
        _ = writes.stalled(send_timeout) => {
            tracing::debug!("the client took nothing of an answer for a send timeout; connection dropped");
            return Ok(());
        }
    };
    graceful(conn.as_mut());
    match idle.filter(|_| idle_close) {
        Some(idle) => tokio::time::timeout(idle.period, conn).await.unwrap_or(Ok(())),
        None => conn.await,
    }
}

/// The calls of one HTTP/2 connection: how many are open, and whether one
/// started since the watch last looked.
#[derive(Clone, Default)]
struct Calls(Arc<CallCounts>);

#[derive(Default)]
struct CallCounts {
    open: AtomicUsize,
    started: AtomicBool,
}

impl Calls {
    /// `service`, counting its calls (until each call's answer head), its
    /// answers [`Marked`] for the stream's stall watch.
    fn count<S, B>(
        &self,
        service: S,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Marked<B>>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Marked<B>>, Infallible>> + Send + 'static,
    >
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body + Unpin,
    {
        let calls = self.clone();
        hyper::service::service_fn(move |req| {
            let open = OpenCall::new(&calls);
            let call = service.clone().oneshot(req);
            async move {
                let res = call.await;
                drop(open);
                res.map(|res| res.map(Marked::new))
            }
        })
    }
}

/// One call in progress; dropping it closes it.
struct OpenCall(Calls);

impl OpenCall {
    fn new(calls: &Calls) -> Self {
        calls.0.open.fetch_add(1, Ordering::Relaxed);
        calls.0.started.store(true, Ordering::Relaxed);
        Self(calls.clone())
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0 .0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When an HTTP/2 connection counts as unused: no call open and none
/// started, looked at `first` (the head deadline from accept), then every
/// `period`. So a connection with no call is closed between one and two
/// periods after its last one.
struct IdleWatch {
    calls: Calls,
    first: Instant,
    period: Duration,
}

impl IdleWatch {
    async fn expired(&self) {
        let mut at = self.first;
        loop {
            tokio::time::sleep_until(at).await;
            let counts = &self.calls.0;
            let started = counts.started.swap(false, Ordering::Relaxed);
            if !started && counts.open.load(Ordering::Relaxed) == 0 {
                return;
            }
            at += self.period;
        }
    }
}
