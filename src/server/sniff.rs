//! A connection's first bytes, read to learn its protocol: HTTP/2 with prior
//! knowledge (h2c) starts with the 24-byte client preface, anything else is
//! HTTP/1. hyper-util's auto builder does the same, but without a deadline:
//! a client that sent nothing, or half a preface, held its connection slot
//! for ever. Here the caller runs [`sniff`] under the head deadline, and the
//! bytes read are given back to the protocol's parser by [`Sniffed`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Reads from `io` until its first bytes tell the protocol: the whole
/// preface (HTTP/2), or a byte that departs from it (HTTP/1). Reads at most
/// 24 bytes, so nothing past them is taken from the socket.
pub async fn sniff<S: AsyncRead + Unpin>(mut io: S) -> io::Result<(Protocol, Sniffed<S>)> {
    let mut buf = [0u8; PREFACE.len()];
    let mut len = 0;
    loop {
        let n = io.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        let protocol = if buf[..len] != PREFACE[..len] {
            Protocol::Http1
        } else if len == PREFACE.len() {
            Protocol::Http2
        } else {
            continue;
        };
        return Ok((protocol, Sniffed { io, buf, pos: 0, len }));
    }
}

/// A stream whose first bytes were read by [`sniff`]: reading gives them
/// back first, then the stream's own. Writes go straight through.
pub struct Sniffed<S> {
    io: S,
    /// The bytes sniffed, `buf[pos..len]` still to be given back.
    buf: [u8; PREFACE.len()],
    pos: usize,
    len: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.len {
            let n = (this.len - this.pos).min(out.remaining());
            out.put_slice(&this.buf[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(chunks: &[&[u8]]) -> (Protocol, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        for c in chunks {
            client.write_all(c).await.unwrap();
        }
        drop(client);
        let (protocol, mut s) = sniff(server).await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        (protocol, all)
    }

    #[tokio::test]
    async fn http1_is_told_by_its_first_bytes_and_given_back_whole() {
        let (p, bytes) = sniffed(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
        assert_eq!(p, Protocol::Http1);
        assert_eq!(bytes, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        // `P` of POST matches the preface's first byte; the second departs.
        let (p, bytes) = sniffed(&[b"P", b"OST / HTTP/1.1\r\n"]).await;
        assert_eq!(p, Protocol::Http1);
        assert_eq!(bytes, b"POST / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_preface_in_pieces_is_http2() {
        let (p, bytes) = sniffed(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n", b"frames"]).await;
        assert_eq!(p, Protocol::Http2);
        assert_eq!(bytes, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nframes");
    }

    #[tokio::test]
    async fn a_connection_closed_early_is_an_error() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PRI * HTTP").await.unwrap();
        drop(client);
        assert!(sniff(server).await.is_err());
    }
}
