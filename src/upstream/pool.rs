//! Idle upstream connections, kept per origin for reuse, and the answer
//! body that gives its connection back when it has been read to the end.
//!
//! Each origin has one [`Slot`]: a stack of idle HTTP/1.1 senders (the
//! most recently used is taken first, as it is the least likely to have
//! been closed by the server). A connection goes back only after its
//! answer was read whole; an answer dropped half-read takes its connection
//! with it, as there is no other way to abort an HTTP/1 exchange. Idle
//! connections older than `idle_timeout` are never used and are closed by
//! a reaper task. Age is counted in the reaper's ticks (every half
//! `idle_timeout`), so neither taking nor giving back a connection reads
//! the clock: a connection is dropped once two ticks have passed since it
//! went idle, that is after between half and all of `idle_timeout`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

/// The sending half of one upstream connection.
pub type Sender = SendRequest<Full<Bytes>>;

/// The idle connections to one origin.
pub struct Slot {
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    reaper: AtomicBool,
    /// Reaper ticks so far.
    tick: AtomicU64,
}

/// Ticks after which an idle connection is too old to use.
const MAX_AGE: u64 = 2;

struct Idle {
    sender: Sender,
    /// The tick it went idle in.
    since: u64,
}

impl Slot {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
            reaper: AtomicBool::new(false),
            tick: AtomicU64::new(0),
        })
    }

    fn fresh(&self, c: &Idle, now: u64) -> bool {
        !c.sender.is_closed() && now.wrapping_sub(c.since) < MAX_AGE
    }

    /// The most recently idled connection that is still open and fresh.
    pub fn checkout(&self) -> Option<Sender> {
        let now = self.tick.load(Ordering::Relaxed);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(c) = idle.pop_back() {
            if self.fresh(&c, now) {
                return Some(c.sender);
            }
        }
        None
    }

    /// Gives back a connection whose answer has been read. It joins the
    /// idle stack only once it can take a request: an upstream may answer
    /// before it has read the whole request body, and until hyper has
    /// written it the connection is busy. Such a connection is watched by
    /// a task until it is ready (or dropped after `idle_timeout`), so a
    /// busy one is never handed out.
    fn put(self: &Arc<Self>, mut sender: Sender) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        if !sender.is_ready() {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let slot = Arc::downgrade(self);
            let wait = self.idle_timeout;
            rt.spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(wait, sender.ready()).await {
                    if let Some(slot) = slot.upgrade() {
                        slot.push(sender);
                    }
                }
            });
            return;
        }
        self.push(sender);
    }

    fn push(self: &Arc<Self>, sender: Sender) {
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= self.max_idle {
                idle.pop_front();
            }
            idle.push_back(Idle {
                sender,
                since: self.tick.load(Ordering::Relaxed),
            });
        }
        if !self.reaper.swap(true, Ordering::Relaxed) {
            self.start_reaper();
        }
    }

    /// Closes connections idle for longer than `idle_timeout`, for as long
    /// as the slot exists (that is, until a reload replaces the client).
    fn start_reaper(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.reaper.store(false, Ordering::Relaxed); // the next put tries again
            return;
        };
        let slot: Weak<Self> = Arc::downgrade(self);
        let every = self.idle_timeout / MAX_AGE as u32;
        rt.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(slot) = slot.upgrade() else { return };
                slot.tick.fetch_add(1, Ordering::Relaxed);
                slot.reap();
            }
        });
    }

    fn reap(&self) {
        let now = self.tick.load(Ordering::Relaxed);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|c| self.fresh(c, now));
    }

    /// Idle connections still open.
    pub fn open_idle(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.iter().filter(|c| !c.sender.is_closed()).count()
    }

    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// An upstream answer's body. Read to its end, it returns its connection
/// to the origin's slot when dropped; dropped early, it closes it.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(Sender, Arc<Slot>)>,
    done: bool,
}

impl PooledBody {
    pub(super) fn new(inner: Incoming, sender: Sender, slot: Arc<Slot>) -> Self {
        let mut body = Self {
            inner,
            conn: Some((sender, slot)),
            done: false,
        };
        // An answer without a body (204, 304, a zero length) may never be
        // polled: its connection is free at once.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        self.done = true;
        if let Some((sender, slot)) = self.conn.take() {
            slot.put(sender);
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.done || self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => this.release(),
            Some(Ok(_)) if this.inner.is_end_stream() => this.release(),
            Some(Err(_)) => this.conn = None, // a broken exchange: the connection goes
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use hyper_util::rt::TokioIo;

    /// A one-connection HTTP/1.1 server answering every request with `body`.
    async fn server(body: &'static str) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                        body.as_bytes(),
                    ))))
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc));
            }
        });
        addr
    }

    async fn connect(addr: std::net::SocketAddr) -> Sender {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender.ready().await.expect("ready");
        sender
    }

    fn get() -> Request<Full<Bytes>> {
        Request::builder()
            .uri("/")
            .header(http::header::HOST, "x")
            .body(Full::default())
            .expect("request")
    }

    #[tokio::test]
    async fn a_connection_returns_only_after_its_answer_is_read() {
        use http_body_util::BodyExt;
        let addr = server("hello").await;
        let slot = Slot::new(8, Duration::from_secs(60));
        let mut sender = connect(addr).await;
        let res = sender.try_send_request(get()).await.expect("answer");
        let body = PooledBody::new(res.into_body(), sender, Arc::clone(&slot));
        assert_eq!(slot.idle_len(), 0, "not before the answer is read");
        let bytes = body.collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(slot.idle_len(), 1);
        let mut again = slot.checkout().expect("reused");
        again.ready().await.expect("ready");
        let res = again
            .try_send_request(get())
            .await
            .expect("second answer on the same connection");
        // Dropped unread: the connection is not given back.
        drop(PooledBody::new(res.into_body(), again, Arc::clone(&slot)));
        assert_eq!(slot.idle_len(), 0);
    }

    #[tokio::test]
    async fn stale_connections_are_not_handed_out() {
        let addr = server("x").await;
        let slot = Slot::new(8, Duration::from_secs(3600)); // ticks by hand here
        slot.put(connect(addr).await);
        slot.tick.fetch_add(1, Ordering::Relaxed);
        let c = slot.checkout().expect("one tick old: still fresh");
        slot.put(c);
        slot.tick.fetch_add(2, Ordering::Relaxed);
        assert!(slot.checkout().is_none(), "idle past idle_timeout");
    }

    #[tokio::test]
    async fn the_reaper_closes_idle_connections() {
        let addr = server("x").await;
        let slot = Slot::new(8, Duration::from_millis(40));
        slot.put(connect(addr).await);
        slot.put(connect(addr).await);
        let mut waited = Duration::ZERO;
        while slot.idle_len() > 0 && waited < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        assert_eq!(slot.idle_len(), 0, "reaped");
    }

    #[tokio::test]
    async fn a_connection_still_sending_its_request_is_not_handed_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An upstream that answers 204 as soon as it has the request head
        // and never reads the body: hyper is still writing it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let mut head = [0u8; 1024];
            let _ = tcp.read(&mut head).await;
            let _ = tcp.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            let _ = done_rx.await; // hold the connection open, unread
        });
        let slot = Slot::new(8, Duration::from_secs(60));
        let mut sender = connect(addr).await;
        let big = Request::post("/")
            .header(http::header::HOST, "x")
            .body(Full::new(Bytes::from(vec![b'x'; 16 << 20])))
            .expect("request");
        let res = sender.try_send_request(big).await.expect("204");
        assert_eq!(res.status(), http::StatusCode::NO_CONTENT);
        drop(PooledBody::new(res.into_body(), sender, Arc::clone(&slot)));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(slot.idle_len(), 0, "busy writing the request body: not idle");
        assert!(slot.checkout().is_none());
        let _ = done_tx.send(());
    }

    #[tokio::test]
    async fn the_idle_stack_is_capped() {
        let addr = server("x").await;
        let slot = Slot::new(2, Duration::from_secs(60));
        for _ in 0..3 {
            slot.put(connect(addr).await);
        }
        assert_eq!(slot.idle_len(), 2);
    }
}
