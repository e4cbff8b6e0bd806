//! Request dispatch and the special endpoints: knowledge interactions, the
//! streamed blob, slow answers and redirects. The modelled resources (content,
//! content types, search, batch) live in `resources` and the modules it names.
//!
//! Endpoints (any version segment, e.g. `v1` or `latest`):
//!
//! * `GET /km/api/{ver}/knowledgeInteraction/startInteraction` → `{"knowledgeInteractionId"}`
//! * `GET /km/api/{ver}/content/blob?bytes=N[&chunked=1][&fail_after=M][&stall_after=M]` → N pattern bytes
//! * `GET /km/api/{ver}/content/large?items=N[&stall_after=M]` → a content list of N items, streamed
//! * `GET /km/api/{ver}/content/slow?ms=N` → the content list, after N ms
//! * `GET /km/api/{ver}/content/redirect?to=URL[&content_location=URL]` → 302 to URL (and that `Content-Location`)
//! * `GET /km/api/{ver}/content/echo-error?...` → 400 HTML page echoing the query (see `traps`)
//! * `GET /km/api/{ver}/content/echo-error-json?...` → 400 JSON whose `title` echoes the query
//! * `GET /km/api/{ver}/content/upgrade` → an unsolicited `101 Switching Protocols`
//! * any other `/km/api/{ver}/...` or `/srt/api/{ver}/...` → a modelled resource (`resources`), or 404
//!
//! Every request is routed by its path, or, in servlet-path mode, by the
//! path's servlet reading (see `servlet`); the routed path is recorded, logins
//! included. Every API request is recorded (after its body is read, before the
//! answer), then delayed by the configured delay, then its tokens are checked
//! and the principal they stand for is added to the record. Every API answer
//! carries the record's id in `X-ORACLE-DMS-ECID`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, request::Parts, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::access;
use super::auth;
use super::blob::{JsonListBody, PatternBody};
use super::errors::{Api, Format, OracleError};
use super::record::{record, BodyDigest, REQUEST_ID_HEADER};
use super::resources::{self, Call, Ctx};
use super::state::Shared;
use super::{servlet, traps};

/// The simulator's fallback handler: every request not under `/__sim/`.
pub(crate) async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = match routed_path(&shared, parts.uri.path()) {
        Ok(path) => path,
        Err(e) => {
            let format = Format::for_errors(&parts.headers);
            let _ = record(&shared, &parts, None, body).await;
            return OracleError::invalid_input(e.reason()).respond(format);
        }
    };
    shared.record_routed(parts.method.clone(), &path);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let post = parts.method == Method::POST;
    match segments.as_slice() {
        ["km", "api", _, "auth", "integration", "authorize"] if post => {
            auth::integration_login(&shared, &parts.headers, body).await
        }
        ["km", "api", _, "auth", "authorize"] if post => auth::user_login(&shared, &parts.headers, body).await,
        ["km", "api", _, "auth", "integration", "authorize"] | ["km", "api", _, "auth", "authorize"] => {
            let format = Format::for_errors(&parts.headers);
            let _ = record(&shared, &parts, Some(&path), body).await;
            OracleError::method_not_allowed().respond(format)
        }
        ["km", "api", _, rest @ ..] => api_call(&shared, Api::Km, &parts, &path, rest, body).await,
        ["srt", "api", _, rest @ ..] => api_call(&shared, Api::Srt, &parts, &path, rest, body).await,
        _ => {
            let format = Format::for_errors(&parts.headers);
            let _ = record(&shared, &parts, Some(&path), body).await;
            OracleError::not_found().respond(format)
        }
    }
}

/// The path to route: the raw path, or its servlet reading in servlet-path mode.
fn routed_path(shared: &Shared, raw: &str) -> Result<String, servlet::ServletPathError> {
    if shared.servlet_paths() {
        servlet::normalise(raw)
    } else {
        Ok(raw.to_owned())
    }
}

/// The special endpoints under `/km/api/{ver}/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    StartInteraction,
    Blob,
    Large,
    Slow,
    Redirect,
    EchoErrorHtml,
    EchoErrorJson,
    Upgrade,
    Resource,
}

fn endpoint(api: Api, method: &Method, rest: &[&str]) -> Endpoint {
    if api == Api::Srt || method != Method::GET {
        return Endpoint::Resource;
    }
    match rest {
        ["knowledgeInteraction", "startInteraction"] => Endpoint::StartInteraction,
        ["content", "blob"] => Endpoint::Blob,
        ["content", "large"] => Endpoint::Large,
        ["content", "slow"] => Endpoint::Slow,
        ["content", "redirect"] => Endpoint::Redirect,
        ["content", "echo-error"] => Endpoint::EchoErrorHtml,
        ["content", "echo-error-json"] => Endpoint::EchoErrorJson,
        ["content", "upgrade"] => Endpoint::Upgrade,
        _ => Endpoint::Resource,
    }
}

async fn api_call(shared: &Shared, api: Api, parts: &Parts, routed: &str, rest: &[&str], body: Body) -> Response {
    let (digest, id) = record(shared, parts, Some(routed), body).await;
    let delay = shared.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = answer(shared, api, parts, (routed, rest), &digest, id).await;
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    tracing::debug!(
        method = %parts.method,
        path = parts.uri.path(),
        status = response.status().as_u16(),
        "simulator api call"
    );
    response
}

/// Check the call's tokens, note its principal in the record, then answer.
async fn answer(
    shared: &Shared,
    api: Api,
    parts: &Parts,
    (routed, rest): (&str, &[&str]),
    digest: &BodyDigest,
    id: u64,
) -> Response {
    let endpoint = endpoint(api, &parts.method, rest);
    let errors = Format::for_errors(&parts.headers);
    let check_interaction = endpoint != Endpoint::StartInteraction;
    let principal = match access::authorize_call(shared, api, &parts.headers, check_interaction) {
        Ok(p) => p,
        Err(e) => return e.respond(errors),
    };
    shared.set_principal(id, &principal);
    let ctx = Ctx {
        principal: &principal,
        origin: resources::origin(&parts.headers),
        version: routed
            .trim_start_matches('/')
            .split('/')
            .nth(2)
            .unwrap_or("latest")
            .to_owned(),
        request_id: id,
    };
    if !digest.complete {
        return OracleError::invalid_input("the request body could not be read").respond(errors);
    }
    let query = parts.uri.query().unwrap_or("");
    let result = match endpoint {
        Endpoint::StartInteraction => Ok(start_interaction(shared, parts)),
        Endpoint::Blob => blob(query),
        Endpoint::Large => large(&ctx, query),
        Endpoint::Slow => match param_u64(query, "ms") {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms.unwrap_or(0))).await;
                resource(&ctx, api, parts, &["content"], "", digest)
            }
            Err(e) => Err(e),
        },
        Endpoint::Redirect => redirect(query),
        Endpoint::EchoErrorHtml => Ok(traps::echo_error_html(query)),
        Endpoint::EchoErrorJson => Ok(traps::echo_error_json(query)),
        Endpoint::Upgrade => Ok(traps::unsolicited_upgrade()),
        Endpoint::Resource => resource(&ctx, api, parts, rest, query, digest),
    };
    result.unwrap_or_else(|e| e.respond(errors))
}

/// A modelled resource (`resources`), rendered as the caller's `Accept` asks.
fn resource(
    ctx: &Ctx<'_>,
    api: Api,
    parts: &Parts,
    rest: &[&str],
    query: &str,
    digest: &BodyDigest,
) -> Result<Response, OracleError> {
    let call = Call {
        api,
        method: &parts.method,
        rest,
        query,
        body: digest.bytes.as_deref().unwrap_or_default(),
    };
    let doc = resources::answer(ctx, &call)?;
    Ok(resources::render(doc, Format::for_resources(&parts.headers)))
}

/// The value of query parameter `name`, if present.
fn param(query: &str, name: &str) -> Result<Option<String>, OracleError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| OracleError::invalid_input("the query string could not be read"))?;
    Ok(pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v))
}

fn param_u64(query: &str, name: &str) -> Result<Option<u64>, OracleError> {
    param(query, name)?
        .map(|v| {
            v.parse()
                .map_err(|_| OracleError::invalid_input(format!("{name} must be a number")))
        })
        .transpose()
}

fn start_interaction(shared: &Shared, parts: &Parts) -> Response {
    let id = shared.start_interaction();
    match Format::for_resources(&parts.headers) {
        Format::Json => axum::Json(json!({ "knowledgeInteractionId": id })).into_response(),
        Format::Xml => xml(format!(
            "<knowledgeInteraction><knowledgeInteractionId>{id}</knowledgeInteractionId>\
             </knowledgeInteraction>"
        )),
    }
}

fn blob(query: &str) -> Result<Response, OracleError> {
    let total = param_u64(query, "bytes")?.ok_or_else(|| OracleError::invalid_input("bytes=N is required"))?;
    let chunked = param(query, "chunked")?.is_some_and(|v| v == "1" || v == "true");
    let fail_after = param_u64(query, "fail_after")?;
    let stall_after = param_u64(query, "stall_after")?;
    let body = PatternBody::new(total, chunked, fail_after).stall_after(stall_after);
    let mut response = Body::new(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if !chunked {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    }
    Ok(response)
}

fn large(ctx: &Ctx<'_>, query: &str) -> Result<Response, OracleError> {
    let items = param_u64(query, "items")?.ok_or_else(|| OracleError::invalid_input("items=N is required"))?;
    let stall_after = param_u64(query, "stall_after")?;
    let body = JsonListBody::new(ctx.origin.clone(), ctx.version.clone(), items, stall_after);
    let mut response = Body::new(body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// 302 to `to`, and with `content_location=URL` a `Content-Location` too,
/// each spelled as given (`HTTP://…`, `//host/…`: the spellings kmproxy's
/// link rewriting must recognise).
fn redirect(query: &str) -> Result<Response, OracleError> {
    let value = |name: &str, v: String| {
        HeaderValue::from_str(&v).map_err(|_| OracleError::invalid_input(format!("{name} is not a valid header value")))
    };
    let to = param(query, "to")?.ok_or_else(|| OracleError::invalid_input("to=URL is required"))?;
    let mut response = (StatusCode::FOUND, [(header::LOCATION, value("to", to)?)]).into_response();
    if let Some(at) = param(query, "content_location")? {
        let at = value("content_location", at)?;
        response.headers_mut().insert(header::CONTENT_LOCATION, at);
    }
    Ok(response)
}

fn xml(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"))],
        body,
    )
        .into_response()
}
