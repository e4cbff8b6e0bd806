//! What kmproxy sent: the record of every API request the simulator
//! received, for tests to query instead of reading it back from an answer.
//!
//! Answers are shaped like Oracle's and never reflect the request's tokens.
//! Each recorded request has an id, which its answer carries in the
//! `X-ORACLE-DMS-ECID` header ([`REQUEST_ID_HEADER`]), so a test holding an
//! answer can find the request it answered ([`crate::sim::Simulator::request_for`]).

use axum::body::Body;
use axum::http::request::Parts;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::access;
use super::state::Shared;

/// The answer header that names the recorded request it answers (its
/// [`RecordedRequest::id`]). Oracle's WebLogic-hosted services send an
/// execution-context id under this name; the simulator puts its request id
/// there.
pub const REQUEST_ID_HEADER: &str = "x-oracle-dms-ecid";

/// Request bodies up to this size are kept for the handlers that read them
/// (batch, search); larger ones are only hashed.
const KEEP_BODY: usize = 1024 * 1024;

/// Whom an authorised call acted for, as the simulator's token check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `anonymous`, `account`, `contact` or `bearer`.
    pub kind: &'static str,
    /// The user name, for account and contact principals.
    pub user: Option<String>,
}

/// One API request as the simulator received it (logins and `/__sim/` excluded).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Unique per simulator, never reused (not even after a counter reset);
    /// its answer carries it in [`REQUEST_ID_HEADER`].
    pub id: u64,
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path, byte-exact as received (still percent-encoded).
    pub path: String,
    /// The path it was routed by: `path` itself, or its servlet reading in
    /// servlet-path mode (`None`: it had none, and was refused 400).
    pub routed_path: Option<String>,
    /// The query, byte-exact as received, without `?`.
    pub query: Option<String>,
    /// Every header received (tokens included: this is test material).
    pub headers: http::HeaderMap,
    /// `kmauthtoken`, if present and valid JSON.
    pub kmauthtoken: Option<Value>,
    /// Length of the request body.
    pub body_len: usize,
    /// Lowercase hex SHA-256 of the request body.
    pub body_sha256: String,
    /// Whom the call acted for, once its tokens passed the check (`None`:
    /// refused, or not checked yet).
    pub principal: Option<Principal>,
}

impl RecordedRequest {
    /// Header names received, lowercase, each once, in the order received.
    pub fn header_names(&self) -> Vec<&str> {
        self.headers.keys().map(|k| k.as_str()).collect()
    }
}

/// What a request's body was: its length, SHA-256, and the bytes when small.
pub(crate) struct BodyDigest {
    pub(crate) len: usize,
    pub(crate) sha256: String,
    /// The whole body could be read.
    pub(crate) complete: bool,
    /// The body, when at most [`KEEP_BODY`] bytes.
    pub(crate) bytes: Option<Bytes>,
}

/// Read (and hash) the body, then record the request (`routed`: the path it
/// was routed by, `None` if it had no servlet reading). Returns the digest
/// and the request's id.
pub(crate) async fn record(shared: &Shared, parts: &Parts, routed: Option<&str>, body: Body) -> (BodyDigest, u64) {
    let digest = read_body(body).await;
    let id = shared.record(RecordedRequest {
        id: 0,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        routed_path: routed.map(str::to_owned),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        kmauthtoken: access::parse_kmauthtoken(&parts.headers).ok().map(Value::Object),
        body_len: digest.len,
        body_sha256: digest.sha256.clone(),
        principal: None,
    });
    (digest, id)
}

async fn read_body(mut body: Body) -> BodyDigest {
    let mut hasher = Sha256::new();
    let mut kept = Some(BytesMut::new());
    let mut len = 0usize;
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            complete = false;
            break;
        };
        if let Some(data) = frame.data_ref() {
            hasher.update(data);
            len += data.len();
            kept = kept.filter(|_| len <= KEEP_BODY).map(|mut k| {
                k.extend_from_slice(data);
                k
            });
        }
    }
    BodyDigest {
        len,
        sha256: hex::encode(hasher.finalize()),
        complete,
        bytes: kept.map(BytesMut::freeze),
    }
}
