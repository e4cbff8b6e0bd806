//! The floor under bench/profile: hyper's HTTP/1 server and client on one
//! current-thread tokio runtime, forwarding each request to one upstream
//! with no logic; what kmproxy's data path costs beyond it is kmproxy's own.
//!
//!   hyper_floor --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT
//!
//! Built from the same blocks as kmproxy, used the same way: the server is
//! `http1::Builder` with a `TokioTimer` and a 10 s `header_read_timeout`,
//! each connection a `tokio::spawn`ed task; the client is hyper's
//! `client::conn::http1` with a stack of idle `SendRequest<Full<Bytes>>`
//! behind an `Arc<Mutex<_>>` (src/upstream/pool.rs's shape, without its
//! reaper, age ticks or idle cap), taken most recent first and given back
//! by the answer body once it has been read to its end; each exchange runs
//! under a 30 s `tokio::time::timeout`. Plaintext only, jemalloc as in
//! src/main.rs (background threads on). Not part of kmproxy: a yardstick (bench/profile --floor).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Sender = SendRequest<Full<Bytes>>;
type Idle = Arc<Mutex<Vec<Sender>>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Upstream {
    addr: SocketAddr,
    host: HeaderValue,
    idle: Idle,
}

/// The answer's body; read to its end, it gives its connection back (an
/// answer dropped half-read takes its connection with it, as in kmproxy).
struct PooledBody {
    inner: Incoming,
    conn: Option<(Sender, Idle)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((sender, idle)) = self.conn.take() {
            if !sender.is_closed() {
                idle.lock().unwrap_or_else(PoisonError::into_inner).push(sender);
            }
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
            Some(Err(_)) => this.conn = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

type Answer = Response<Either<PooledBody, Empty<Bytes>>>;

async fn forward(up: &Upstream, req: Request<Incoming>) -> Result<Answer, BoxError> {
    let (mut head, body) = req.into_parts();
    let body = if head.method == Method::GET {
        Full::default()
    } else {
        Full::new(body.collect().await?.to_bytes())
    };
    head.headers.insert(HOST, up.host.clone());
    let mut req = Request::from_parts(head, body);
    // As kmproxy's client: a reused sender closed while idle is skipped, and
    // a request it gave back unwritten goes out on another connection.
    let (sender, res) = loop {
        let checkout = up.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let (mut sender, reused) = match checkout {
            Some(sender) => (sender, true),
            None => (connect(up.addr).await?, false),
        };
        if reused && sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(res) => break (sender, res),
            Err(mut e) => match e.take_message() {
                Some(back) if reused => req = back,
                _ => return Err(e.into_error().into()),
            },
        }
    };
    Ok(res.map(|inner| {
        let mut body = PooledBody {
            inner,
            conn: Some((sender, Arc::clone(&up.idle))),
        };
        if body.inner.is_end_stream() {
            body.release(); // never polled: free at once
        }
        Either::Left(body)
    }))
}

async fn connect(addr: SocketAddr) -> Result<Sender, BoxError> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn handle(up: Arc<Upstream>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    match tokio::time::timeout(Duration::from_secs(30), forward(&up, req)).await {
        Ok(Ok(res)) => Ok(res),
        _ => {
            let mut res = Response::new(Either::Right(Empty::new()));
            *res.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(res)
        }
    }
}

fn main() {
    // As src/main.rs: jemalloc purges on its own threads.
    #[cfg(not(target_env = "msvc"))]
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let (mut listen, mut upstream) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v: SocketAddr = args
            .next()
            .and_then(|v| v.parse().ok())
            .expect("an address after the option");
        match a.as_str() {
            "--listen" => listen = Some(v),
            "--upstream" => upstream = Some(v),
            _ => panic!("usage: hyper_floor --listen ADDR --upstream ADDR"),
        }
    }
    let (listen, addr) = (listen.expect("--listen"), upstream.expect("--upstream"));
    let up = Arc::new(Upstream {
        addr,
        host: HeaderValue::try_from(addr.to_string()).expect("host"),
        idle: Arc::default(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let up = Arc::clone(&up);
            let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&up), req));
            tokio::spawn(h1.serve_connection(TokioIo::new(tcp), svc));
        }
    });
}
