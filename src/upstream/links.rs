//! Links stay on the proxy (`upstream.rewrite_links`): a URL on an upstream
//! origin (`base_url`, `search_base_url`) in an answer's `Location` or
//! `Content-Location`, or at the start of a string value of a JSON answer,
//! becomes the same path and query on kmproxy's address as the caller
//! reached it (its `Host`). An app that follows `links[].href` then stays
//! behind the proxy, and its tokens.
//!
//! A header names the origin in any spelling a client would follow to the
//! same place: scheme and host in any letter case, the default port
//! written out or not, or scheme-relative (`//host/path`, which a client
//! resolves against the upstream's own scheme). A JSON answer's strings are
//! matched as the origin is configured (and with JSON's escaped slashes):
//! they are searched as the body streams, and Oracle writes its links in
//! one spelling.
//!
//! JSON answers are rewritten as they stream: no answer is buffered whole.
//! A URL split across two pieces of the body is still found, because the
//! last few bytes of each piece (one needle's length) wait for the next.
//! An answer that came whole with its head (most do) is rewritten at once
//! and keeps an exact `Content-Length`; one that names no upstream base is
//! passed on untouched. A longer answer, rewritten as it streams, has a
//! new length, so `Content-Length` goes and it is sent chunked. Compressed answers are left as they are (see
//! the README: decoding and re-encoding every answer would cost far more
//! than the links are worth to most apps, and a client asking for
//! compression gets the upstream's bytes).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use memchr::memmem::Finder;

/// The upstream URLs to look for, prepared once per config.
pub struct Links {
    /// Each upstream base as written in answers (`https://host[/prefix]`),
    /// longest first, so a base with a path prefix wins over its origin.
    bases: Vec<Base>,
}

struct Base {
    /// `https://host/prefix`.
    plain: Vec<u8>,
    /// Its parts, to match a header's spelling of it (`None`: not a URL
    /// that parses, so only its plain spelling is matched).
    parts: Option<Parts>,
    /// `"https://host/prefix`: a JSON string value that starts with it.
    quoted: Finder<'static>,
    /// The same with JSON's escaped slashes: `"https:\/\/host\/prefix`.
    escaped: Finder<'static>,
}

/// A base URL's parts, as a header may spell them.
struct Parts {
    /// `http` or `https`, in lower case.
    scheme: String,
    /// The host in lower case (an IPv6 literal with its brackets).
    host: String,
    /// The port, the scheme's default when none is written.
    port: u16,
    /// The path prefix, without its trailing slash (`""` if none).
    prefix: String,
}

impl Parts {
    fn of(url: &str) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        Some(Self {
            port: authority.port_u16().or_else(|| default_port(&scheme))?,
            host: authority.host().to_ascii_lowercase(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
            scheme,
        })
    }

    /// The rest of `url` after this base, when `url` names it in any
    /// spelling: `scheme://authority` (scheme any case) or `//authority`.
    fn rest_of<'u>(&self, url: &'u str) -> Option<&'u str> {
        let (scheme, after) = match url.strip_prefix("//") {
            Some(after) => (None, after),
            None => url.split_once("://").map(|(s, after)| (Some(s), after))?,
        };
        if scheme.is_some_and(|s| !s.eq_ignore_ascii_case(&self.scheme)) {
            return None;
        }
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        if authority.contains('@') {
            return None; // userinfo: not a link kmproxy would make
        }
        let authority: http::uri::Authority = authority.parse().ok()?;
        let port = authority.port_u16().or_else(|| default_port(&self.scheme))?;
        let same = authority.host().eq_ignore_ascii_case(&self.host) && port == self.port;
        let rest = rest.strip_prefix(self.prefix.as_str()).filter(|_| same)?;
        ends_base(rest.bytes().next()).then_some(rest)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Where a rewritten URL points: kmproxy as the caller reached it.
#[derive(Clone)]
pub struct Target {
    /// `http://host[:port]`.
    plain: Bytes,
    /// `http:\/\/host[:port]`.
    escaped: Bytes,
}

impl Target {
    /// kmproxy at `host` (the caller's `Host`, checked already).
    pub fn at(host: &str) -> Self {
        Self {
            plain: Bytes::from(format!("http://{host}")),
            escaped: Bytes::from(format!("http:\\/\\/{host}")),
        }
    }
}

impl Links {
    /// The bases of `urls` (validated `http(s)://host[:port][/prefix]`).
    pub fn new<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        let mut plain: Vec<Vec<u8>> = urls
            .into_iter()
            .map(|u| u.trim_end_matches('/').as_bytes().to_vec())
            .collect();
        plain.sort_by_key(|b| std::cmp::Reverse(b.len()));
        plain.dedup();
        let bases = plain
            .into_iter()
            .map(|plain| {
                let parts = std::str::from_utf8(&plain).ok().and_then(Parts::of);
                let mut quoted = b"\"".to_vec();
                quoted.extend_from_slice(&plain);
                let escaped = quoted.iter().fold(Vec::new(), |mut v, &b| {
                    if b == b'/' {
                        v.push(b'\\');
                    }
                    v.push(b);
                    v
                });
                Base {
                    quoted: Finder::new(&quoted).into_owned(),
                    escaped: Finder::new(&escaped).into_owned(),
                    plain,
                    parts,
                }
            })
            .collect();
        Self { bases }
    }

    /// A whole JSON answer with its links pointing at kmproxy at `host`;
    /// `None` when it names no upstream base (the usual answer: one scan,
    /// nothing built).
    pub fn rewrite_whole(self: &Arc<Self>, body: &Bytes, host: &str) -> Option<Bytes> {
        self.find(body, 0)?;
        Some(Rewritten::new((), Arc::clone(self), Target::at(host)).process(body.clone(), true))
    }

    /// The longest needle, plus the one byte looked at after it.
    fn window(&self) -> usize {
        self.bases
            .iter()
            .map(|b| b.escaped.needle().len() + 1)
            .max()
            .unwrap_or(0)
    }

    /// Rewrites `Location` and `Content-Location` in place.
    pub fn rewrite_headers(&self, headers: &mut HeaderMap, to: &Target) {
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(value) = headers.get(&name) else { continue };
            if let Some(new) = self.rewrite_url(value.as_bytes(), to) {
                if let Ok(v) = HeaderValue::from_maybe_shared(new) {
                    headers.insert(name, v);
                }
            }
        }
    }

    fn rewrite_url(&self, url: &[u8], to: &Target) -> Option<Bytes> {
        let text = std::str::from_utf8(url).ok();
        self.bases.iter().find_map(|base| {
            let rest = match (&base.parts, text) {
                (Some(parts), Some(text)) => parts.rest_of(text)?.as_bytes(),
                _ => url
                    .strip_prefix(base.plain.as_slice())
                    .filter(|rest| ends_base(rest.first().copied()))?,
            };
            let mut out = BytesMut::with_capacity(to.plain.len() + rest.len());
            out.extend_from_slice(&to.plain);
            out.extend_from_slice(rest);
            Some(out.freeze())
        })
    }

    /// The first needle at or after `from` in `buf`: (position, its length,
    /// whether it is the escaped form).
    fn find(&self, buf: &[u8], from: usize) -> Option<(usize, usize, bool)> {
        let mut best: Option<(usize, usize, bool)> = None;
        for base in &self.bases {
            for (finder, escaped) in [(&base.quoted, false), (&base.escaped, true)] {
                if let Some(at) = finder.find(&buf[from..]) {
                    let at = from + at;
                    if best.is_none_or(|(b, _, _)| at < b) {
                        best = Some((at, finder.needle().len(), escaped));
                    }
                }
            }
        }
        best
    }
}

/// True when the byte after a base ends it: a path, a query, a fragment,
/// the end of the string (or of the header value).
fn ends_base(next: Option<u8>) -> bool {
    matches!(next, None | Some(b'/' | b'\\' | b'?' | b'#' | b'"'))
}

/// True for a JSON answer sent as it is (not compressed).
pub fn is_plain_json(headers: &HeaderMap) -> bool {
    let json = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let t = v.as_bytes();
        let t = t.split(|&b| b == b';').next().unwrap_or(t).trim_ascii();
        let ends = |s: &[u8]| t.len() >= s.len() && t[t.len() - s.len()..].eq_ignore_ascii_case(s);
        t.eq_ignore_ascii_case(b"application/json")
            || (t.len() > 12 && t[..12].eq_ignore_ascii_case(b"application/") && ends(b"+json"))
    });
    let identity = headers
        .get(header::CONTENT_ENCODING)
        .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
    json && identity
}

/// An answer body with its upstream links rewritten as it streams.
pub struct Rewritten<B> {
    inner: B,
    links: Arc<Links>,
    to: Target,
    /// Bytes held back: they may be the start of a needle.
    carry: BytesMut,
    /// The last byte let through (before `carry`): a quote after a
    /// backslash is inside a string, not the start of one.
    last: u8,
    done: bool,
}

impl<B> Rewritten<B> {
    pub fn new(inner: B, links: Arc<Links>, to: Target) -> Self {
        Self {
            inner,
            links,
            to,
            carry: BytesMut::new(),
            last: 0,
            done: false,
        }
    }

    /// Rewrites what can be rewritten of `carry + data`; keeps back what
    /// could still be the start of a needle (all of it at the end).
    fn process(&mut self, data: Bytes, last: bool) -> Bytes {
        let window = self.links.window();
        if self.carry.is_empty() && self.links.find(&data, 0).is_none() {
            // The usual piece: nothing to rewrite, sent as it is but for a
            // tail that might begin a needle.
            let safe = if last {
                data.len()
            } else {
                data.len().saturating_sub(window)
            };
            self.carry.extend_from_slice(&data[safe..]);
            if let Some(&b) = data[..safe].last() {
                self.last = b;
            }
            return data.slice(..safe);
        }
        self.carry.extend_from_slice(&data);
        let buf = std::mem::take(&mut self.carry).freeze();
        let safe = if last {
            buf.len()
        } else {
            buf.len().saturating_sub(window)
        };
        let mut out = BytesMut::with_capacity(buf.len() + 16);
        let mut i = 0;
        while let Some((at, len, escaped)) = self.links.find(&buf, i).filter(|(at, _, _)| *at < safe) {
            out.extend_from_slice(&buf[i..at]);
            // A quote after a backslash is inside a string (an article's
            // HTML, say): that text is left as it is.
            let before = if at == 0 { self.last } else { buf[at - 1] };
            let opens = before != b'\\';
            if opens && ends_base(buf.get(at + len).copied()) && buf.get(at + len).is_some() {
                out.extend_from_slice(b"\"");
                out.extend_from_slice(if escaped { &self.to.escaped } else { &self.to.plain });
                i = at + len;
            } else {
                out.extend_from_slice(&buf[at..at + 1]);
                i = at + 1;
            }
        }
        let keep_from = i.max(safe);
        out.extend_from_slice(&buf[i..keep_from]);
        if keep_from > 0 {
            self.last = buf[keep_from - 1];
        }
        self.carry.extend_from_slice(&buf[keep_from..]);
        out.freeze()
    }
}

impl<B> Body for Rewritten<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let last = this.inner.is_end_stream();
                        let out = this.process(data, last);
                        this.done = last;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.done = true;
                    let rest = this.process(Bytes::new(), true);
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default() // the length changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use proptest::prelude::*;

    fn links() -> Arc<Links> {
        Arc::new(Links::new([
            "https://site-irs.custhelp.com",
            "https://site-qp.custhelp.com",
            "https://site-irs.custhelp.com",
        ]))
    }

    async fn rewrite(pieces: Vec<Vec<u8>>) -> Vec<u8> {
        let stream = futures_util::stream::iter(
            pieces
                .into_iter()
                .map(|p| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(p)))),
        );
        let body = Rewritten::new(StreamBody::new(stream), links(), Target::at("127.0.0.1:8080"));
        body.collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default()
    }

    const ANSWER: &str = r#"{"items":[{"title":"x https://site-irs.custhelp.com/no","xml":"<a href=\"https://site-irs.custhelp.com/km/a\"> <a href=\"https:\/\/site-irs.custhelp.com\/b\">","links":[{"rel":"self","href":"https://site-irs.custhelp.com/km/api/latest/content/1?a=b"}]}],"links":[{"href":"https:\/\/site-qp.custhelp.com\/srt\/api"},{"href":"https://site-irs.custhelp.com.evil.example/x"},{"href":"https://site-irs.custhelp.com"}]}"#;
    const REWRITTEN: &str = r#"{"items":[{"title":"x https://site-irs.custhelp.com/no","xml":"<a href=\"https://site-irs.custhelp.com/km/a\"> <a href=\"https:\/\/site-irs.custhelp.com\/b\">","links":[{"rel":"self","href":"http://127.0.0.1:8080/km/api/latest/content/1?a=b"}]}],"links":[{"href":"http:\/\/127.0.0.1:8080\/srt\/api"},{"href":"https://site-irs.custhelp.com.evil.example/x"},{"href":"http://127.0.0.1:8080"}]}"#;

    #[tokio::test]
    async fn string_values_on_an_upstream_origin_are_rewritten() {
        assert_eq!(String::from_utf8_lossy(&rewrite(vec![ANSWER.into()]).await), REWRITTEN);
        // Nothing to rewrite: the same bytes.
        let plain = br#"{"items":[],"hasMore":false}"#.to_vec();
        assert_eq!(rewrite(vec![plain.clone()]).await, plain);
    }

    #[tokio::test]
    async fn a_whole_answer_is_rewritten_as_the_stream_would_be_or_left_alone() {
        let whole = Bytes::from_static(ANSWER.as_bytes());
        let at_once = links()
            .rewrite_whole(&whole, "127.0.0.1:8080")
            .expect("it names upstream bases");
        assert_eq!(String::from_utf8_lossy(&at_once), REWRITTEN);
        assert_eq!(at_once, rewrite(vec![ANSWER.into()]).await);
        let plain = Bytes::from_static(br#"{"items":[],"title":"https://elsewhere.example/x"}"#);
        assert!(
            links().rewrite_whole(&plain, "127.0.0.1:8080").is_none(),
            "nothing built"
        );
    }

    #[test]
    fn headers_are_rewritten_on_upstream_origins_only() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("https://site-qp.custhelp.com/srt/api/x?y=1"),
        );
        h.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("https://elsewhere.example/x"),
        );
        links().rewrite_headers(&mut h, &Target::at("localhost:8080"));
        assert_eq!(h[header::LOCATION], "http://localhost:8080/srt/api/x?y=1");
        assert_eq!(h[header::CONTENT_LOCATION], "https://elsewhere.example/x");
    }

    #[test]
    fn headers_in_any_spelling_of_an_upstream_origin_are_rewritten() {
        let links = links();
        for (location, rewritten) in [
            (
                "HTTPS://site-irs.custhelp.com/km/x?y=1",
                "http://localhost:8080/km/x?y=1",
            ),
            ("Https://Site-QP.Custhelp.COM/srt", "http://localhost:8080/srt"),
            ("https://site-irs.custhelp.com:443/km/x", "http://localhost:8080/km/x"),
            ("//site-irs.custhelp.com/km/x#f", "http://localhost:8080/km/x#f"),
            ("//SITE-IRS.custhelp.com", "http://localhost:8080"),
            ("//site-irs.custhelp.com:443?q", "http://localhost:8080?q"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, HeaderValue::from_static(location));
            h.insert(header::CONTENT_LOCATION, HeaderValue::from_static(location));
            links.rewrite_headers(&mut h, &Target::at("localhost:8080"));
            assert_eq!(h[header::LOCATION], rewritten, "{location}");
            assert_eq!(h[header::CONTENT_LOCATION], rewritten, "{location}");
        }
        for kept in [
            "http://site-irs.custhelp.com/km/x",
            "https://site-irs.custhelp.com:8443/km/x",
            "//site-irs.custhelp.com:80/km/x",
            "https://site-irs.custhelp.com.evil.example/x",
            "//site-irs.custhelp.comx/y",
            "https://user@site-irs.custhelp.com/x",
            "///site-irs.custhelp.com/x",
            "/km/api/latest/content?to=https://site-irs.custhelp.com/x",
            "ftp://site-irs.custhelp.com/x",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, HeaderValue::from_static(kept));
            links.rewrite_headers(&mut h, &Target::at("localhost:8080"));
            assert_eq!(h[header::LOCATION], kept);
        }
    }

    #[test]
    fn a_base_with_a_path_prefix_loses_it() {
        let links = Links::new(["http://gw.local:8000/oracle", "http://gw.local:8000"]);
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://gw.local:8000/oracle/km/api/v1/x"),
        );
        links.rewrite_headers(&mut h, &Target::at("127.0.0.1:1"));
        assert_eq!(h[header::LOCATION], "http://127.0.0.1:1/km/api/v1/x");
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("HTTP://GW.local:8000/oracle/km"),
        );
        links.rewrite_headers(&mut h, &Target::at("127.0.0.1:1"));
        assert_eq!(
            h[header::LOCATION],
            "http://127.0.0.1:1/km",
            "the prefix is matched in its case"
        );
        h.insert(header::LOCATION, HeaderValue::from_static("//gw.local:8000/Oracle/km"));
        links.rewrite_headers(&mut h, &Target::at("127.0.0.1:1"));
        assert_eq!(h[header::LOCATION], "http://127.0.0.1:1/Oracle/km", "the origin alone");
    }

    #[test]
    fn only_uncompressed_json_is_rewritten() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_plain_json(&h));
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!is_plain_json(&h));
        let mut x = HeaderMap::new();
        x.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        assert!(!is_plain_json(&x));
    }

    proptest! {
        /// However the answer is cut into pieces, the result is the same.
        #[test]
        fn any_split_gives_the_same_answer(cuts in proptest::collection::vec(0..ANSWER.len(), 0..12)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let bytes = ANSWER.as_bytes();
            let mut pieces = Vec::new();
            let mut from = 0;
            for c in cuts {
                pieces.push(bytes[from..c].to_vec());
                from = c;
            }
            pieces.push(bytes[from..].to_vec());
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let out = rt.block_on(rewrite(pieces));
            prop_assert_eq!(String::from_utf8_lossy(&out), REWRITTEN);
        }
    }
}
