//! Recognising "log in again" answers from Knowledge Advanced.
//!
//! The upstream reports an expired or invalid session with an error
//! document whose code starts with `OK-SESSION` (or `OK-GEN0003`), under
//! varying HTTP statuses, in any of Oracle's shapes: JSON
//! `{"error":{"errorCode":..}}`, `{"errors":[{"code":..}]}`,
//! `{"error":[{"code":..}]}` or a top-level `errorCode` ([`json`]), or XML
//! with root `<error>` and child `<errorCode>` ([`xml`]), each parsed as a
//! document, possibly content-encoded (`gzip`, `deflate`, `br`; [`decode`]).
//!
//! What an answer is read as comes from its headers ([`Reading::of`]):
//! `Content-Type` decides the syntax (JSON, XML, or either when absent) and
//! excludes everything else (an HTML page is never an error document,
//! whatever it echoes); `Content-Encoding` decides the decoding (an unknown
//! or stacked coding is not read).
//!
//! Where it is looked for: the first [`PEEK_LIMIT`] bytes of a non-2xx
//! answer; and a 2xx JSON answer only when its first bytes open an `errors`
//! document ([`Reading::opening`]), which takes no more than the first
//! frame in the ordinary case.

mod decode;
mod json;
mod xml;

use std::borrow::Cow;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::HeaderMap;

/// How much of an error answer is read to look for the code (encoded bytes).
pub const PEEK_LIMIT: usize = 64 * 1024;

/// How many decoded bytes of a content-encoded answer are looked at.
pub const DECODED_LIMIT: usize = 64 * 1024;

/// How many (decoded) bytes of a 2xx answer may be looked at to tell
/// whether it opens an `errors` document (leading whitespace included).
pub const OPENING_LIMIT: usize = 64;

/// Returns the code of an Oracle error document, JSON or XML, judged by
/// its first byte: a body that starts like JSON is judged as JSON only.
pub fn error_code(body: &[u8]) -> Option<Cow<'_, str>> {
    if json::trim_start(body).first() == Some(&b'{') {
        json::code(body).map(Cow::Owned)
    } else {
        xml::code(body)
    }
}

/// True when `body` is an error document whose code starts with one of `prefixes`.
pub fn is_session_error(body: &[u8], prefixes: &[String]) -> bool {
    error_code(body).is_some_and(|code| matches(&code, prefixes))
}

fn matches(code: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| code.starts_with(p.as_str()))
}

/// A `Content-Encoding` kmproxy can decode for the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
    Br,
}

/// The syntax an answer declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Syntax {
    Json,
    Xml,
    /// No `Content-Type`: judged by the first byte.
    Either,
}

/// How an upstream answer is to be read for a session error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    syntax: Syntax,
    coding: Coding,
}

/// What the first bytes of a 2xx answer say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// `{"errors":` (whitespace allowed): read on and check it.
    Errors,
    /// Anything else: an ordinary answer.
    Other,
    /// Too few bytes yet to tell.
    Undecided,
}

impl Reading {
    /// How to read an answer with these headers; `None` when it cannot be
    /// an Oracle error document (HTML, text, an unknown coding).
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        Some(Self {
            syntax: syntax(headers)?,
            coding: coding(headers)?,
        })
    }

    /// Whether a 2xx answer read this way may be an `errors` document
    /// (JSON, declared or not).
    pub fn may_be_json(&self) -> bool {
        self.syntax != Syntax::Xml
    }

    /// The body's content-coding.
    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// True when `prefix` (the first bytes of the body as sent) decodes to
    /// an error document whose code starts with one of `prefixes`.
    pub fn is_session_error(&self, prefix: &[u8], prefixes: &[String]) -> bool {
        let mut decoded = Vec::new();
        let text = match self.coding {
            Coding::Identity => prefix,
            coding => {
                decoded.resize(DECODED_LIMIT, 0);
                let n = decode::into(coding, prefix, &mut decoded);
                &decoded[..n]
            }
        };
        let code = match self.syntax {
            Syntax::Json => json::code(text).map(Cow::Owned),
            Syntax::Xml => xml::code(text),
            Syntax::Either => error_code(text),
        };
        code.is_some_and(|c| matches(&c, prefixes))
    }

    /// Whether the first bytes of a 2xx body (as sent) open an `errors`
    /// document. An identity body is looked at in place; an encoded one is
    /// decoded into a small buffer on the stack, at most [`OPENING_LIMIT`] bytes.
    pub fn opening(&self, first: &[u8]) -> Opening {
        match self.coding {
            Coding::Identity => opening(first, first.len() >= OPENING_LIMIT),
            coding => {
                let mut buf = [0u8; OPENING_LIMIT];
                let n = decode::into(coding, first, &mut buf);
                // Past a few hundred encoded bytes an `errors` opening would have decoded.
                opening(&buf[..n], n == OPENING_LIMIT || first.len() >= 8 * OPENING_LIMIT)
            }
        }
    }
}

/// `{` `"errors"` `:` with JSON whitespace around each; `whole` says no
/// more bytes can change the verdict.
fn opening(bytes: &[u8], whole: bool) -> Opening {
    let mut rest = json::trim_start(bytes);
    for token in [&b"{"[..], b"\"errors\"", b":"] {
        let n = token.len().min(rest.len());
        if rest[..n] != token[..n] {
            return Opening::Other;
        }
        if n < token.len() {
            break;
        }
        rest = json::trim_start(&rest[n..]);
        if token == b":" {
            return Opening::Errors;
        }
    }
    if whole {
        Opening::Other
    } else {
        Opening::Undecided
    }
}

/// The syntax `Content-Type` declares; `None` for any other type. Read in
/// place, with no allocation (it runs for every answer).
fn syntax(headers: &HeaderMap) -> Option<Syntax> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Some(Syntax::Either);
    };
    let essence = value.as_bytes().split(|b| *b == b';').next()?.trim_ascii();
    let is = |t: &str| essence.eq_ignore_ascii_case(t.as_bytes());
    let ends = |suffix: &str| {
        essence.len() > suffix.len() && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    if is("application/json") || is("text/json") || ends("+json") {
        Some(Syntax::Json)
    } else if is("application/xhtml+xml") {
        None
    } else if is("application/xml") || is("text/xml") || ends("+xml") {
        Some(Syntax::Xml)
    } else {
        None
    }
}

/// The one content-coding of the answer; `None` for an unknown or stacked one.
fn coding(headers: &HeaderMap) -> Option<Coding> {
    let mut found = Coding::Identity;
    for value in headers.get_all(CONTENT_ENCODING) {
        for token in value.to_str().ok()?.split(',') {
            let token = token.trim();
            let this = if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
                Coding::Gzip
            } else if token.eq_ignore_ascii_case("deflate") {
                Coding::Deflate
            } else if token.eq_ignore_ascii_case("br") {
                Coding::Br
            } else if token.is_empty() || token.eq_ignore_ascii_case("identity") {
                continue;
            } else {
                return None;
            };
            if found != Coding::Identity {
                return None;
            }
            found = this;
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests;
