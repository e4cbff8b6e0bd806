//! `POST /km/api/{ver}/batch`: several calls in one request.
//!
//! The body is `{"asynchronous": false, "requests": [{"id", "method",
//! "relativeUrl", "body"?}]}`; the answer is `{"responses": [{"id", "status",
//! "body"}]}`, one per request, in order, each answered by the same handler
//! as the call alone (an error's body is the Oracle error object). A
//! `relativeUrl` is relative to `/km/api/{ver}/` (`content?q=...`), or an
//! absolute path under `/km/api/` or `/srt/api/`. Sub-requests act with the
//! batch's own tokens and are not recorded apart from it; a batch inside a
//! batch is refused, and `asynchronous: true` is answered synchronously.

use axum::http::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::{Api, OracleError};
use super::resources::{self, Call, Ctx, Doc};

/// Most sub-requests one batch may carry.
const MAX_REQUESTS: usize = 100;

#[derive(Deserialize)]
struct Batch {
    /// `asynchronous` is read and ignored (serde skips unknown fields).
    requests: Vec<SubRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubRequest {
    id: Value,
    method: String,
    relative_url: String,
    #[serde(default)]
    body: Option<Value>,
}

/// Run every sub-request of the batch in `body`.
pub(crate) fn run(ctx: &Ctx<'_>, body: &[u8]) -> Result<Doc, OracleError> {
    let batch: Batch = serde_json::from_slice(body)
        .map_err(|e| OracleError::invalid_input(format!("the batch could not be read: {e}")))?;
    if batch.requests.len() > MAX_REQUESTS {
        return Err(OracleError::invalid_input(format!(
            "a batch holds at most {MAX_REQUESTS} requests"
        )));
    }
    let responses: Vec<Value> = batch.requests.iter().map(|r| respond(ctx, r)).collect();
    Ok(Doc::ok("batch", json!({ "responses": responses })))
}

fn respond(ctx: &Ctx<'_>, req: &SubRequest) -> Value {
    let (status, body) = match sub_answer(ctx, req) {
        Ok(doc) => (doc.status, doc.value),
        Err(e) => (e.status, e.json_body()),
    };
    json!({ "id": req.id, "status": status.as_u16(), "body": body })
}

fn sub_answer(ctx: &Ctx<'_>, req: &SubRequest) -> Result<Doc, OracleError> {
    let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| OracleError::invalid_input("method is not an HTTP method"))?;
    let (path, query) = req.relative_url.split_once('?').unwrap_or((&req.relative_url, ""));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (api, version, rest) = match (path.starts_with('/'), segments.as_slice()) {
        (false, rest) => (Api::Km, ctx.version.clone(), rest),
        (true, ["km", "api", ver, rest @ ..]) => (Api::Km, (*ver).to_owned(), rest),
        (true, ["srt", "api", ver, rest @ ..]) => (Api::Srt, (*ver).to_owned(), rest),
        (true, _) => return Err(OracleError::not_found()),
    };
    if api == Api::Km && rest == ["batch"] {
        return Err(OracleError::invalid_input("a batch cannot contain a batch"));
    }
    let body = match &req.body {
        Some(v) => serde_json::to_vec(v).unwrap_or_default(),
        None => Vec::new(),
    };
    let sub = Ctx {
        principal: ctx.principal,
        origin: ctx.origin.clone(),
        version,
        request_id: ctx.request_id,
    };
    let call = Call {
        api,
        method: &method,
        rest,
        query,
        body: &body,
    };
    resources::answer(&sub, &call)
}
