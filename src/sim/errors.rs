//! Oracle-shaped error answers of the simulator, in JSON or XML.
//!
//! Knowledge Advanced reports failures as
//! `{"error":{"title","errorPath","errorCode","type","detail"},"errorDetails":[]}`
//! (or the same fields under `<error>` in XML, when `Accept` mentions xml).
//! This module owns every error the simulator can send, its error code, its
//! HTTP status and its shape.
//!
//! Session errors deliberately do **not** share one HTTP status, so that a
//! client has to read the body (`errorCode`) rather than the status:
//!
//! | API | error code | JSON status | XML status | JSON shape |
//! |---|---|---|---|---|
//! | content (`/km/api/`) | `OK-SESSION0003` | 401 | 400 | `{"error":{"errorCode":..}}` |
//! | search (`/srt/api/`) | `OK-GEN0003` | 403 | 403 | `{"errors":[{"code":..}]}` |
//!
//! [`SessionShape`] (`Simulator::set_session_error_shape`, opt-in) sends
//! every session error in one JSON shape instead, or as the Customer
//! Portal's token error: `{"errors":[{"code":"OK-GEN0003"}]}` with status 200.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which Knowledge Advanced API a request was addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// The content API, `/km/api/...`.
    Km,
    /// The search API, `/srt/api/...`.
    Srt,
}

/// The representation a client asked for with `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Xml,
}

impl Format {
    /// Errors are XML as soon as `Accept` mentions xml at all.
    pub(crate) fn for_errors(headers: &axum::http::HeaderMap) -> Self {
        if accept(headers).contains("xml") {
            Format::Xml
        } else {
            Format::Json
        }
    }

    /// Resources are XML only when `Accept` asks for xml and not for json.
    pub(crate) fn for_resources(headers: &axum::http::HeaderMap) -> Self {
        let accept = accept(headers);
        if accept.contains("xml") && !accept.contains("json") {
            Format::Xml
        } else {
            Format::Json
        }
    }
}

fn accept(headers: &axum::http::HeaderMap) -> String {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase()
}

/// The JSON shape of an error answer (XML is always `<error>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `{"error":{"errorCode":..,..},"errorDetails":[]}`: the content API.
    Object,
    /// `{"errors":[{"code":..,..}]}`: the search API, the Customer Portal.
    Errors,
    /// `{"error":[{"code":..,..}]}`.
    List,
}

/// How session errors are sent, whatever the API (opt-in).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionShape {
    /// Per API, as Oracle does (the default): content `{"error":{..}}`,
    /// search `{"errors":[..]}`.
    #[default]
    ByApi,
    /// Always `{"error":{"errorCode":..}}`.
    Object,
    /// Always `{"errors":[{"code":..}]}`.
    Errors,
    /// Always `{"error":[{"code":..}]}`.
    List,
    /// The Customer Portal's token error: `{"errors":[{"code":"OK-GEN0003"}]}`
    /// with status 200 (JSON; XML keeps its usual answer).
    Portal,
}

impl SessionShape {
    /// Every value, in the order of their codes.
    pub(crate) const ALL: [SessionShape; 5] = [Self::ByApi, Self::Object, Self::Errors, Self::List, Self::Portal];

    /// The name used by the `/__sim/session-error-shape` hook.
    pub fn name(self) -> &'static str {
        match self {
            Self::ByApi => "api",
            Self::Object => "object",
            Self::Errors => "errors",
            Self::List => "list",
            Self::Portal => "portal",
        }
    }
}

/// One error answer: status plus the fields of Oracle's error object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OracleError {
    pub(crate) status: StatusCode,
    pub(crate) title: &'static str,
    pub(crate) code: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) detail: Option<String>,
    /// `Retry-After` in seconds, sent as a header (injected login faults only).
    pub(crate) retry_after: Option<u64>,
    /// Its JSON shape.
    pub(crate) shape: Shape,
}

impl OracleError {
    const fn new(status: StatusCode, title: &'static str, code: &'static str) -> Self {
        Self {
            status,
            title,
            code,
            kind: "VALIDATION",
            detail: None,
            retry_after: None,
            shape: Shape::Object,
        }
    }

    fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// An expired or unknown session token (or an injected session error).
    pub(crate) fn session_expired(api: Api, format: Format) -> Self {
        match (api, format) {
            (Api::Km, Format::Json) => {
                Self::new(StatusCode::UNAUTHORIZED, "Session Token has expired", "OK-SESSION0003")
            }
            (Api::Km, Format::Xml) => Self::new(StatusCode::BAD_REQUEST, "Session Token has expired", "OK-SESSION0003"),
            (Api::Srt, _) => Self {
                shape: Shape::Errors,
                ..Self::new(
                    StatusCode::FORBIDDEN,
                    "The token is invalid or has expired",
                    "OK-GEN0003",
                )
            },
        }
    }

    /// A session error as `shape` asks (see [`SessionShape`]).
    pub(crate) fn session_expired_as(api: Api, format: Format, shape: SessionShape) -> Self {
        let e = Self::session_expired(api, format);
        match shape {
            SessionShape::ByApi => e,
            SessionShape::Object => Self {
                shape: Shape::Object,
                ..e
            },
            SessionShape::Errors => Self {
                shape: Shape::Errors,
                ..e
            },
            SessionShape::List => Self {
                shape: Shape::List,
                ..e
            },
            SessionShape::Portal if format == Format::Xml => e,
            SessionShape::Portal => Self {
                shape: Shape::Errors,
                ..Self::new(StatusCode::OK, "The token is invalid or has expired", "OK-GEN0003")
            },
        }
    }

    /// Wrong login, password, site or user type at a login endpoint.
    pub(crate) fn invalid_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Invalid user name or password", "OK-AUTH0001")
    }

    /// A body or parameter the endpoint cannot read.
    pub(crate) fn invalid_input(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Invalid input", "OK-GEN0001").with_detail(detail)
    }

    /// No `kmauthtoken` header, or one that is not a JSON object.
    pub(crate) fn bad_kmauthtoken(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "The API Session Token is missing or malformed",
            "OK-AUTH0003",
        )
        .with_detail(detail)
    }

    /// `siteName` in `kmauthtoken` names another site.
    pub(crate) fn wrong_site() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Invalid site name", "OK-AUTH0002")
    }

    /// An `Authorization` header that is not an accepted OAuth bearer token.
    pub(crate) fn invalid_bearer() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "The OAuth token is not valid", "OK-AUTH0005")
    }

    /// A bearer token sent together with a `userToken`.
    pub(crate) fn bearer_with_user_token() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "A userToken must not be sent with an OAuth token",
            "OK-AUTH0006",
        )
    }

    /// `interactionIdGenerated` with a `knowledgeInteractionId` never issued or expired.
    pub(crate) fn interaction_invalid() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "The knowledge interaction id is invalid or has expired",
            "OK-SEC0012",
        )
    }

    /// A search call without `interfaceId` in `kmauthtoken`.
    pub(crate) fn interface_required() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "interfaceId is required in the API Session Token",
            "OK-SRT0001",
        )
    }

    /// A path outside the simulated APIs.
    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Resource not found", "OK-GEN0004")
    }

    /// A method the endpoint does not take.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "OK-GEN0005")
    }

    /// A fault injected with `fail_logins`, with `Retry-After` when given.
    pub(crate) fn injected(status: StatusCode, retry_after: Option<u64>) -> Self {
        Self {
            kind: "SYSTEM",
            retry_after,
            ..Self::new(status, "Injected failure (simulator)", "SIM-INJECTED")
        }
    }

    /// The JSON body Oracle sends, in this error's shape.
    pub(crate) fn json_body(&self) -> serde_json::Value {
        let item = || json!({ "code": self.code, "title": self.title, "type": self.kind, "detail": self.detail });
        match self.shape {
            Shape::Object => json!({
                "error": {
                    "title": self.title,
                    "errorPath": null,
                    "errorCode": self.code,
                    "type": self.kind,
                    "detail": self.detail,
                },
                "errorDetails": [],
            }),
            Shape::Errors => json!({ "errors": [item()] }),
            Shape::List => json!({ "error": [item()] }),
        }
    }

    /// The XML body Oracle sends.
    pub(crate) fn xml_body(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><error><title>{}</title>\
             <errorCode>{}</errorCode><type>{}</type></error>",
            xml_escape(self.title),
            xml_escape(self.code),
            xml_escape(self.kind)
        )
    }

    /// Render in the representation the client asked for.
    pub(crate) fn respond(self, format: Format) -> Response {
        let retry_after = self.retry_after;
        let mut response = match format {
            Format::Json => (self.status, axum::Json(self.json_body())).into_response(),
            Format::Xml => (
                self.status,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"))],
                self.xml_body(),
            )
                .into_response(),
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Escape text for an XML element or attribute.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_xml_is_exactly_oracles() {
        let e = OracleError::session_expired(Api::Km, Format::Xml);
        assert_eq!(
            e.xml_body(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><error><title>Session Token has expired\
             </title><errorCode>OK-SESSION0003</errorCode><type>VALIDATION</type></error>"
        );
    }

    #[test]
    fn session_statuses_differ_by_format() {
        let json = OracleError::session_expired(Api::Km, Format::Json);
        let xml = OracleError::session_expired(Api::Km, Format::Xml);
        assert_ne!(json.status, xml.status);
        assert_eq!(json.json_body()["error"]["errorCode"], "OK-SESSION0003");
        assert_eq!(json.json_body()["error"]["errorPath"], serde_json::Value::Null);
    }

    #[test]
    fn non_session_codes_do_not_look_like_session_errors() {
        for e in [
            OracleError::invalid_credentials(),
            OracleError::invalid_input("x"),
            OracleError::bad_kmauthtoken("x"),
            OracleError::wrong_site(),
            OracleError::invalid_bearer(),
            OracleError::bearer_with_user_token(),
            OracleError::interaction_invalid(),
            OracleError::interface_required(),
            OracleError::not_found(),
            OracleError::method_not_allowed(),
            OracleError::injected(StatusCode::SERVICE_UNAVAILABLE, None),
            OracleError::injected(StatusCode::TOO_MANY_REQUESTS, Some(1)),
        ] {
            assert!(!e.code.starts_with("OK-SESSION"), "{}", e.code);
            assert!(!e.code.starts_with("OK-GEN0003"), "{}", e.code);
        }
    }

    #[test]
    fn accept_selects_format() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(Format::for_errors(&h), Format::Json);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, application/xml"),
        );
        assert_eq!(Format::for_errors(&h), Format::Xml);
        assert_eq!(Format::for_resources(&h), Format::Json);
        h.insert(header::ACCEPT, HeaderValue::from_static("Application/XML"));
        assert_eq!(Format::for_resources(&h), Format::Xml);
    }

    #[test]
    fn session_error_shapes() {
        let srt = OracleError::session_expired(Api::Srt, Format::Json).json_body();
        assert_eq!(srt["errors"][0]["code"], "OK-GEN0003");
        let km = |shape| OracleError::session_expired_as(Api::Km, Format::Json, shape);
        assert_eq!(
            km(SessionShape::ByApi).json_body()["error"]["errorCode"],
            "OK-SESSION0003"
        );
        assert_eq!(
            km(SessionShape::Errors).json_body()["errors"][0]["code"],
            "OK-SESSION0003"
        );
        assert_eq!(km(SessionShape::List).json_body()["error"][0]["code"], "OK-SESSION0003");
        let portal = km(SessionShape::Portal);
        assert_eq!(portal.status, StatusCode::OK);
        assert_eq!(
            portal.json_body(),
            json!({"errors":[{"code":"OK-GEN0003","title":"The token is invalid or has expired","type":"VALIDATION","detail":null}]})
        );
        let xml = OracleError::session_expired_as(Api::Km, Format::Xml, SessionShape::Portal);
        assert_eq!(xml.status, StatusCode::BAD_REQUEST);
        assert!(xml.xml_body().contains("<errorCode>OK-SESSION0003</errorCode>"));
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
