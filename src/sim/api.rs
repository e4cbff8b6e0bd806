//! Request dispatch and the API resources: the echo every content and search
//! call answers, knowledge interactions, the streamed blob, slow answers and
//! redirects.
//!
//! Endpoints (any version segment, e.g. `v1` or `latest`):
//!
//! * `GET /km/api/{ver}/knowledgeInteraction/startInteraction` → `{"knowledgeInteractionId"}`
//! * `GET /km/api/{ver}/content/blob?bytes=N[&chunked=1][&fail_after=M][&stall_after=M]` → N pattern bytes
//! * `GET /km/api/{ver}/content/slow?ms=N` → the echo, after N ms
//! * `GET /km/api/{ver}/content/redirect?to=URL` → 302 to URL
//! * `GET /km/api/{ver}/content/echo-error?...` → 400 HTML page echoing the query (see `traps`)
//! * `GET /km/api/{ver}/content/echo-error-json?...` → 400 JSON whose `title` echoes the query
//! * `GET /km/api/{ver}/content/upgrade` → an unsolicited `101 Switching Protocols`
//! * any other `/km/api/{ver}/...` → the echo with fake articles (`items`)
//! * any `/srt/api/{ver}/...` → the echo with fake search `results`
//!
//! Every request is routed by its path, or, in servlet-path mode, by the
//! path's servlet reading (see `servlet`); the routed path is recorded, logins
//! included. Every API request is recorded (after its body is read, before the
//! answer), then delayed by the configured delay, then its tokens are checked.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, request::Parts, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::access::{self, Principal};
use super::auth;
use super::blob::PatternBody;
use super::errors::{xml_escape, Api, Format, OracleError};
use super::state::Shared;
use super::{servlet, traps, RecordedRequest};

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

/// What a request's body was: its length and SHA-256.
struct BodyDigest {
    len: usize,
    sha256: String,
    complete: bool,
}

/// Read (and hash, without keeping) the body, then record the request
/// (`routed`: the path it was routed by, `None` if it had no servlet reading).
async fn record(shared: &Shared, parts: &Parts, routed: Option<&str>, mut body: Body) -> BodyDigest {
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    len += data.len();
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    let digest = BodyDigest {
        len,
        sha256: hex::encode(hasher.finalize()),
        complete,
    };
    shared.record(RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        routed_path: routed.map(str::to_owned),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        kmauthtoken: access::parse_kmauthtoken(&parts.headers).ok().map(Value::Object),
        body_len: digest.len,
        body_sha256: digest.sha256.clone(),
    });
    digest
}

/// The special endpoints under `/km/api/{ver}/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    StartInteraction,
    Blob,
    Slow,
    Redirect,
    EchoErrorHtml,
    EchoErrorJson,
    Upgrade,
    Echo,
}

fn endpoint(api: Api, method: &Method, rest: &[&str]) -> Endpoint {
    if api == Api::Srt || method != Method::GET {
        return Endpoint::Echo;
    }
    match rest {
        ["knowledgeInteraction", "startInteraction"] => Endpoint::StartInteraction,
        ["content", "blob"] => Endpoint::Blob,
        ["content", "slow"] => Endpoint::Slow,
        ["content", "redirect"] => Endpoint::Redirect,
        ["content", "echo-error"] => Endpoint::EchoErrorHtml,
        ["content", "echo-error-json"] => Endpoint::EchoErrorJson,
        ["content", "upgrade"] => Endpoint::Upgrade,
        _ => Endpoint::Echo,
    }
}

async fn api_call(shared: &Shared, api: Api, parts: &Parts, routed: &str, rest: &[&str], body: Body) -> Response {
    let digest = record(shared, parts, Some(routed), body).await;
    let delay = shared.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let endpoint = endpoint(api, &parts.method, rest);
    let response = answer(shared, api, parts, endpoint, &digest).await;
    tracing::debug!(
        method = %parts.method,
        path = parts.uri.path(),
        status = response.status().as_u16(),
        "simulator api call"
    );
    response
}

async fn answer(shared: &Shared, api: Api, parts: &Parts, endpoint: Endpoint, digest: &BodyDigest) -> Response {
    let errors = Format::for_errors(&parts.headers);
    let check_interaction = endpoint != Endpoint::StartInteraction;
    let principal = match access::authorize_call(shared, api, &parts.headers, check_interaction) {
        Ok(p) => p,
        Err(e) => return e.respond(errors),
    };
    if !digest.complete {
        return OracleError::invalid_input("the request body could not be read").respond(errors);
    }
    let query = parts.uri.query().unwrap_or("");
    let result = match endpoint {
        Endpoint::StartInteraction => Ok(start_interaction(shared, parts)),
        Endpoint::Blob => blob(query),
        Endpoint::Slow => match param_u64(query, "ms") {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms.unwrap_or(0))).await;
                Ok(echo(api, parts, digest, &principal))
            }
            Err(e) => Err(e),
        },
        Endpoint::Redirect => redirect(query),
        Endpoint::EchoErrorHtml => Ok(traps::echo_error_html(query)),
        Endpoint::EchoErrorJson => Ok(traps::echo_error_json(query)),
        Endpoint::Upgrade => Ok(traps::unsolicited_upgrade()),
        Endpoint::Echo => Ok(echo(api, parts, digest, &principal)),
    };
    result.unwrap_or_else(|e| e.respond(errors))
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

fn redirect(query: &str) -> Result<Response, OracleError> {
    let to = param(query, "to")?.ok_or_else(|| OracleError::invalid_input("to=URL is required"))?;
    let location =
        HeaderValue::from_str(&to).map_err(|_| OracleError::invalid_input("to is not a valid header value"))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

fn fake_items() -> Value {
    json!([
        {
            "recordId": "048016517ab56ef014519740375005599",
            "documentId": "OR4",
            "answerId": 1000077,
            "title": "Registration Now Open to the Public for Oracle OpenWorld",
            "version": "2.0"
        },
        {
            "recordId": "048016517ab56ef014519740375005600",
            "documentId": "FAQ12",
            "answerId": 1000078,
            "title": "How do I reset my password?",
            "version": "1.0"
        }
    ])
}

fn fake_results() -> Value {
    json!([
        { "answerId": 1000078, "title": "How do I reset my password?", "score": 0.92 },
        { "answerId": 1000077, "title": "Registration Now Open", "score": 0.41 }
    ])
}

/// The echo: what the simulator received, plus fake content.
fn echo(api: Api, parts: &Parts, digest: &BodyDigest, principal: &Principal) -> Response {
    // `HeaderMap` keys are lowercase and each appears once.
    let header_names: Vec<&str> = parts.headers.keys().map(|k| k.as_str()).collect();
    let query = parts.uri.query();
    let kmauthtoken = access::parse_kmauthtoken(&parts.headers)
        .map(Value::Object)
        .unwrap_or(Value::Null);
    if Format::for_resources(&parts.headers) == Format::Xml {
        return xml(echo_xml(parts, digest, principal));
    }
    let mut body = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": query,
        "kmauthtoken": kmauthtoken,
        "headerNames": header_names,
        "bodyLength": digest.len,
        "bodySha256": digest.sha256,
        "principal": { "kind": principal.kind, "user": principal.user },
        "items": fake_items(),
    });
    if api == Api::Srt {
        body["results"] = fake_results();
    }
    axum::Json(body).into_response()
}

fn echo_xml(parts: &Parts, digest: &BodyDigest, principal: &Principal) -> String {
    let items: String = fake_items()
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    format!(
                        "<item><recordId>{}</recordId><title>{}</title></item>",
                        xml_escape(i["recordId"].as_str().unwrap_or("")),
                        xml_escape(i["title"].as_str().unwrap_or(""))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><echo><method>{}</method><path>{}</path>\
         <query>{}</query><bodyLength>{}</bodyLength><bodySha256>{}</bodySha256>\
         <principal><kind>{}</kind><user>{}</user></principal><items>{}</items></echo>",
        xml_escape(parts.method.as_str()),
        xml_escape(parts.uri.path()),
        xml_escape(parts.uri.query().unwrap_or("")),
        digest.len,
        digest.sha256,
        principal.kind,
        xml_escape(principal.user.as_deref().unwrap_or("")),
        items
    )
}

fn xml(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"))],
        body,
    )
        .into_response()
}
