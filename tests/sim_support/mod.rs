//! A simulator on port 0 and a client speaking to it as the Digital
//! Assistant sample does, for the resource-shape tests.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kmproxy::sim::{SimConfig, SimHandle, Simulator};
use serde_json::{json, Value};

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A simulator, an integration token, and the `kmauthtoken` the Digital
/// Assistant sample sends (`interfaceId` a number).
pub struct Site {
    pub handle: SimHandle,
    client: Client<HttpConnector, Full<Bytes>>,
    pub integration: String,
}

impl Site {
    pub async fn start() -> Self {
        let handle = Simulator::spawn(SimConfig::default()).await.expect("simulator");
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut site = Site {
            handle,
            client,
            integration: String::new(),
        };
        let login = json!({"login": "apiuser", "password": "apipass1", "siteName": "ORACLE_KNOWLEDGE"});
        let path = "/km/api/latest/auth/integration/authorize";
        let a = site
            .call(
                Method::POST,
                path,
                &[("content-type", "application/json")],
                login.to_string(),
            )
            .await;
        site.integration = a.json()["authenticationToken"].as_str().expect("token").to_owned();
        site
    }

    pub fn kmauth(&self, user: Option<&str>) -> String {
        let mut k = json!({"siteName": "ORACLE_KNOWLEDGE", "interfaceId": 1, "integrationUserToken": self.integration});
        if let Some(u) = user {
            k["userToken"] = json!(u);
        }
        k.to_string()
    }

    pub async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.handle.base_url()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self
            .client
            .request(req.body(Full::new(body.into())).expect("request"))
            .await
            .expect("answer");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// As the Digital Assistant sample sends it: JSON accepted and declared.
    pub async fn send(&self, method: Method, path: &str, body: &str) -> Answer {
        let km = self.kmauth(None);
        let headers = [
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("kmauthtoken", &km),
        ];
        self.call(method, path, &headers, body.to_owned()).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, "").await
    }

    pub fn origin(&self) -> String {
        self.handle.base_url()
    }
}

pub fn doc_ids(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["documentId"].as_str().expect("documentId"))
        .collect()
}
