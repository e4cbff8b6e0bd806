//! What the fleet tests share, in-process replicas (`fleet.rs`) and real
//! processes (`fleet_processes.rs`) alike: a plain HTTP/1 client, one call
//! through it, and a replica's `/status` read from its admin port.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type Http = Client<HttpConnector, Full<Bytes>>;

/// A pooled client: bursts of calls run on connections of their own.
pub fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One call to `addr`, its status and whole body.
pub async fn send(
    http: &Http,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Bytes) {
    let mut req = Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = http.request(req.body(Full::default()).unwrap()).await.unwrap();
    let status = res.status();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

/// The `/status` document of the replica whose admin port is `admin`.
pub async fn status(http: &Http, admin: SocketAddr) -> serde_json::Value {
    let (code, body) = send(http, admin, Method::GET, "/status", &[]).await;
    assert_eq!(code, StatusCode::OK);
    serde_json::from_slice(&body).unwrap()
}

/// Whether that replica's `/status` shows the agent's login parked (a
/// top-level `parked` of the `account` principal named `agent`).
pub async fn agent_parked(http: &Http, admin: SocketAddr) -> bool {
    let s = status(http, admin).await;
    let principals = s["principals"].as_array().unwrap();
    let agent = principals.iter().find(|p| p["name"] == "agent").unwrap();
    assert_eq!(agent["kind"], "account", "{s}");
    !agent["parked"].is_null()
}
