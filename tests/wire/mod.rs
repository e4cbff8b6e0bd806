//! Clients that speak to kmproxy on one connection, so a test can tell a
//! connection kept from one closed: a raw HTTP/1 socket (for HTTP/1.0 and
//! half-sent requests), hyper's HTTP/1 client on one socket that reconnects
//! only when an answer says `Connection: close`, and hyper's HTTP/2 client.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn error_code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        v["error"]["errorCode"].as_str().unwrap_or_default().to_owned()
    }

    pub fn says_close(&self) -> bool {
        self.headers.get(header::CONNECTION).is_some_and(|v| v == "close")
    }
}

/// hyper's HTTP/1 client on one socket: it opens a new one only after an
/// answer said `Connection: close`, as a keep-alive pool does. A call on a
/// connection kmproxy closed without saying so fails the test.
pub struct KeepAlive {
    addr: SocketAddr,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
    /// Connections opened so far.
    pub connections: usize,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            sender: None,
            connections: 0,
        }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        if self.sender.is_none() {
            let io = TokioIo::new(TcpStream::connect(self.addr).await.unwrap());
            let (sender, conn) = http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            self.sender = Some(sender);
            self.connections += 1;
        }
        let sender = self.sender.as_mut().unwrap();
        sender.ready().await.expect("the kept connection is usable");
        let res = sender
            .send_request(req)
            .await
            .expect("an answer on the kept connection");
        let (parts, body) = res.into_parts();
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.map(|c| c.to_bytes()).unwrap_or_default(),
        };
        if reply.says_close() {
            self.sender = None;
        }
        reply
    }
}

/// A request to kmproxy at `path` with `headers` and `body`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(body.into())).unwrap()
}

/// hyper's HTTP/2 client (prior knowledge) on one socket.
pub async fn http2_client(addr: SocketAddr) -> http2::SendRequest<Full<Bytes>> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends `req` on an HTTP/2 connection and reads the whole answer.
pub async fn send_h2(sender: &mut http2::SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply {
    let mut req = req;
    *req.uri_mut() = format!("http://127.0.0.1{}", req.uri()).parse().unwrap();
    req.headers_mut().remove(header::HOST);
    sender.ready().await.unwrap();
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.map(|c| c.to_bytes()).unwrap_or_default(),
    }
}

/// Reads one HTTP/1 answer off `s` (`Content-Length`, chunked, or to EOF).
pub async fn read_reply<R: AsyncRead + Unpin>(s: &mut R) -> Reply {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed before an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            v.trim().parse().unwrap(),
        );
    }
    let mut rest = buf[head_end..].to_vec();
    let body = read_body(s, &headers, &mut rest).await;
    Reply {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body: body.into(),
    }
}

async fn read_body<R: AsyncRead + Unpin>(s: &mut R, headers: &HeaderMap, rest: &mut Vec<u8>) -> Vec<u8> {
    let chunked = headers.get(header::TRANSFER_ENCODING).is_some_and(|v| v == "chunked");
    let len = headers
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
    match (len, chunked) {
        (Some(n), _) => {
            while rest.len() < n {
                fill(s, rest).await;
            }
            rest.truncate(n);
            std::mem::take(rest)
        }
        (None, true) => {
            // Enough for kmproxy's short answers: read to the last chunk.
            while !rest.ends_with(b"0\r\n\r\n") {
                fill(s, rest).await;
            }
            dechunk(rest)
        }
        (None, false) => {
            s.read_to_end(rest).await.unwrap();
            std::mem::take(rest)
        }
    }
}

async fn fill<R: AsyncRead + Unpin>(s: &mut R, into: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).await.unwrap();
    assert!(n > 0, "connection closed mid-answer");
    into.extend_from_slice(&chunk[..n]);
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 2 + size + 2..];
    }
}

/// Waits for the peer to close `s` (EOF or reset), at most `within`;
/// whether it did.
pub async fn closed_within<R: AsyncRead + Unpin>(s: &mut R, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let closed = async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, closed).await.is_ok()
}

/// Writes `head` and then `body` on `s` in a task of its own (a client that
/// writes its whole body before reading, as Python's `http.client` does),
/// ignoring a write that fails because kmproxy stopped reading.
pub fn write_in_background(
    s: TcpStream,
    head: String,
    body: Vec<u8>,
) -> (tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>) {
    let (read, mut write) = s.into_split();
    let task = tokio::spawn(async move {
        if write.write_all(head.as_bytes()).await.is_ok() {
            let _ = write.write_all(&body).await;
        }
        // Keep the write half open: dropping it would half-close.
        std::future::pending::<()>().await;
    });
    (read, task)
}
