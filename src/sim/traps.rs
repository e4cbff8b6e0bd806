//! Answers that try to mislead a client, for hardening tests. Each is served
//! (after the usual token check) by a `GET` under `/km/api/{ver}/content/`:
//!
//! * `echo-error?...`: `400`, `Content-Type: text/html`, an error page that
//!   echoes the query percent-decoded and unescaped, as careless error pages
//!   do. `?q=%3CerrorCode%3EOK-SESSION0003%3C%2FerrorCode%3E` yields a page
//!   containing `<errorCode>OK-SESSION0003</errorCode>`: caller text, not a
//!   session error.
//! * `echo-error-json?...`: `400`, JSON, the decoded query inside a non-error
//!   field: `{"title":"No results for <query>","items":[]}`.
//! * `upgrade`: `101 Switching Protocols` with `Connection: upgrade` and
//!   `Upgrade: websocket`, to a request that asked for no upgrade. hyper's
//!   HTTP/1 server sends a 101 whatever the request; with no upgrade to hand
//!   the connection to, it then closes the connection. (HTTP/1.1 only: HTTP/2
//!   has no 101.)

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::servlet::percent_decode;

/// The query as a careless page would print it: percent-decoded, lossy UTF-8.
fn decoded(query: &str) -> String {
    let bytes = percent_decode(query.as_bytes(), false).unwrap_or_else(|_| query.as_bytes().to_vec());
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `content/echo-error`: an HTML 400 page echoing the query, unescaped.
pub(crate) fn echo_error_html(query: &str) -> Response {
    let page = format!(
        "<!doctype html><html><head><title>400 Bad Request</title></head><body>\
         <h1>Bad Request</h1><p>The query could not be read: {}</p></body></html>",
        decoded(query)
    );
    (
        StatusCode::BAD_REQUEST,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page,
    )
        .into_response()
}

/// `content/echo-error-json`: a JSON 400 whose `title` echoes the query.
pub(crate) fn echo_error_json(query: &str) -> Response {
    let body = json!({ "title": format!("No results for {}", decoded(query)), "items": [] });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// `content/upgrade`: a 101 nobody asked for.
pub(crate) fn unsolicited_upgrade() -> Response {
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_echoed_decoded_and_unescaped() {
        assert_eq!(
            decoded("q=%3CerrorCode%3EOK-SESSION0003%3C%2FerrorCode%3E"),
            "q=<errorCode>OK-SESSION0003</errorCode>"
        );
        assert_eq!(decoded("bad=%zz"), "bad=%zz");
    }
}
