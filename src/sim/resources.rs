//! The modelled resources of both APIs, answered as documents (a JSON value
//! and the name of its XML root) so that one handler serves a plain call,
//! its XML rendering and a sub-request of a batch alike.
//!
//! | call | handler |
//! |---|---|
//! | `GET /km/api/{ver}/content` (`q`, `limit`, `offset`, `orderBy`, `mode`) | `content::list` |
//! | `GET /km/api/{ver}/content/answers/{answerId}` | `content::by_answer_id` |
//! | `GET /km/api/{ver}/content/docId/{documentId}` | `content::by_document_id` |
//! | `GET /km/api/{ver}/content/{recordId}` | `content::by_record_id` |
//! | `GET /km/api/{ver}/contentTypes` | `content::content_types` |
//! | `GET /km/api/{ver}/contentTypes/{recordId}` | `content::content_type_by_id` |
//! | `POST`/`PUT`/`PATCH`/`DELETE /km/api/{ver}/content[/...]` | `content::write` (accepted, not stored) |
//! | `POST /km/api/{ver}/batch` | `batch::run` |
//! | `GET`/`POST /srt/api/{ver}/search/question?question=...` | `search::question` |
//! | `GET`/`POST /srt/api/{ver}/search/initialScreen` | `search::initial_screen` |
//! | `POST /srt/api/{ver}/search/answer?answerId=...` | `search::answer` |
//!
//! Anything else under the APIs is 404 `OK-GEN0004`.

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::errors::{Api, Format, OracleError};
use super::{batch, content, search, xml, Principal};

/// What every handler knows about the call it answers.
pub(crate) struct Ctx<'a> {
    /// Whom the call acts for (decides which articles are visible).
    pub(crate) principal: &'a Principal,
    /// `http://{Host}`: links point at the simulator as the caller reached it.
    pub(crate) origin: String,
    /// The version segment as the caller spelled it (`v1`, `latest`).
    pub(crate) version: String,
    /// The recorded request's id (also the search transaction id).
    pub(crate) request_id: u64,
}

/// One sub-resource call: an API, a method, the path after the version,
/// the raw query and the body.
pub(crate) struct Call<'a> {
    pub(crate) api: Api,
    pub(crate) method: &'a Method,
    pub(crate) rest: &'a [&'a str],
    pub(crate) query: &'a str,
    pub(crate) body: &'a [u8],
}

/// A resource answer: status, XML root name, JSON value.
#[derive(Debug)]
pub(crate) struct Doc {
    pub(crate) status: StatusCode,
    pub(crate) root: &'static str,
    pub(crate) value: Value,
}

impl Doc {
    pub(crate) fn ok(root: &'static str, value: Value) -> Self {
        Self {
            status: StatusCode::OK,
            root,
            value,
        }
    }
}

/// Answer `call`, or say why not.
pub(crate) fn answer(ctx: &Ctx<'_>, call: &Call<'_>) -> Result<Doc, OracleError> {
    let params = Params::parse(call.query)?;
    let read = call.method == Method::GET || call.method == Method::HEAD;
    let post = call.method == Method::POST;
    match (call.api, call.rest) {
        (Api::Km, ["content"]) if read => content::list(ctx, &params),
        (Api::Km, ["content", "answers", id]) if read => content::by_answer_id(ctx, &params, id),
        (Api::Km, ["content", "docId", id]) if read => content::by_document_id(ctx, &params, id),
        (Api::Km, ["content", id]) if read => content::by_record_id(ctx, &params, id),
        (Api::Km, ["contentTypes"]) if read => Ok(content::content_types(ctx, &params)),
        (Api::Km, ["contentTypes", id]) if read => content::content_type_by_id(ctx, id),
        (Api::Km, ["content", rest @ ..]) if !read => Ok(content::write(ctx, call.method, rest)),
        (Api::Km, ["batch"]) if post => batch::run(ctx, call.body),
        (Api::Srt, ["search", "question"]) if read || post => search::question(ctx, &params, call.body),
        (Api::Srt, ["search", "initialScreen"]) if read || post => Ok(search::initial_screen(ctx, call.body)),
        (Api::Srt, ["search", "answer"]) if post => search::answer(ctx, &params, call.body),
        _ => Err(OracleError::not_found()),
    }
}

/// Render `doc` as the caller asked (`Accept`).
pub(crate) fn render(doc: Doc, format: Format) -> Response {
    match format {
        Format::Json => (doc.status, axum::Json(doc.value)).into_response(),
        Format::Xml => (
            doc.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"))],
            xml::document(doc.root, &doc.value),
        )
            .into_response(),
    }
}

impl Ctx<'_> {
    /// A `links[]` entry to `path` (absolute path, query included) on the
    /// simulator's own origin, as Oracle's `{rel, href, mediaType, method}`.
    pub(crate) fn link(&self, rel: &str, path: &str) -> Value {
        json!({
            "rel": rel,
            "href": format!("{}{path}", self.origin),
            "mediaType": "application/json, application/xml",
            "method": "GET",
        })
    }

    /// `/km/api/{ver}/{tail}`.
    pub(crate) fn km_path(&self, tail: &str) -> String {
        format!("/km/api/{}/{tail}", self.version)
    }
}

/// A decoded query string.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: &str) -> Result<Self, OracleError> {
        serde_urlencoded::from_str(query)
            .map(Params)
            .map_err(|_| OracleError::invalid_input("the query string could not be read"))
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `name` as a number at most `max`, or `default` when absent.
    pub(crate) fn number(&self, name: &str, default: u64, max: u64) -> Result<u64, OracleError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| OracleError::invalid_input(format!("{name} must be a number up to {max}"))),
        }
    }
}

/// The `origin` of links: `http://` and the `Host` the caller sent.
pub(crate) fn origin(headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', '\\', '@', ' ']))
        .unwrap_or("localhost");
    format!("http://{host}")
}
