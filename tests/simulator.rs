//! The Knowledge Advanced simulator over real HTTP: logins, token checks,
//! session errors, the request record, search, interactions, the streamed blob, slow
//! answers, redirects, injected faults, counters and the `/__sim/` hooks, and
//! the opt-in knobs of the hardening tests (servlet-path routing, login
//! delays by outcome, `Retry-After` login faults, echoed error pages, an
//! unsolicited 101, bearer session errors).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kmproxy::sim::{blob_sha256, LoginKind, LoginOutcome, SimConfig, SimHandle, SimUser, Simulator, UserKind};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FORM: &str = "application/x-www-form-urlencoded";

/// An answer, body collected.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The code of an Oracle error answer: `error.errorCode` (content API)
    /// or `errors[0].code` (search API).
    fn error_code(&self) -> String {
        let json = self.json();
        json["error"]["errorCode"]
            .as_str()
            .or(json["errors"][0]["code"].as_str())
            .expect("Oracle-shaped error")
            .to_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A running simulator and a client for it.
struct Site {
    handle: SimHandle,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Site {
    async fn start() -> Self {
        Self::with(SimConfig::default()).await
    }

    async fn with(config: SimConfig) -> Self {
        let handle = Simulator::spawn(config).await.expect("simulator starts");
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { handle, client }
    }

    fn sim(&self) -> &Simulator {
        &self.handle.sim
    }

    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.handle.base_url(), path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).expect("request");
        let res = self.client.request(req).await.expect("response");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }

    async fn integration_login(&self, login: &str, password: &str, site: &str) -> Answer {
        let body = json!({ "login": login, "password": password, "siteName": site });
        self.send(
            Method::POST,
            "/km/api/latest/auth/integration/authorize",
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
                ("kmauthtoken", r#"{"siteName":"ORACLE_KNOWLEDGE","localeId":"en_US"}"#),
            ],
            body.to_string(),
        )
        .await
    }

    async fn integration_token(&self) -> String {
        let a = self.integration_login("apiuser", "apipass1", "ORACLE_KNOWLEDGE").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        a.json()["authenticationToken"].as_str().expect("token").to_owned()
    }

    async fn user_login(&self, integration: &str, user: &str, password: &str, kind: &str) -> Answer {
        self.user_login_at("/km/api/v1/auth/authorize", integration, user, password, kind)
            .await
    }

    async fn user_login_at(&self, path: &str, integration: &str, user: &str, password: &str, kind: &str) -> Answer {
        let form = serde_urlencoded::to_string([
            ("userName", user),
            ("password", password),
            ("siteName", "ORACLE_KNOWLEDGE"),
            ("userExternalType", kind),
        ])
        .expect("form");
        let km = kmauth(integration, None, &[]);
        self.send(
            Method::POST,
            path,
            &[("content-type", FORM), ("kmauthtoken", &km)],
            form,
        )
        .await
    }

    async fn user_token(&self, integration: &str, user: &str, kind: &str) -> String {
        let a = self.user_login(integration, user, "Password1", kind).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        user_token_of(&a)
    }
}

fn user_token_of(a: &Answer) -> String {
    let inner = a.json()["authenticationToken"]
        .as_str()
        .expect("authenticationToken is a string")
        .to_owned();
    let inner: Value = serde_json::from_str(&inner).expect("the string is a JSON object");
    inner["userToken"].as_str().expect("userToken").to_owned()
}

/// A `kmauthtoken` value for site ORACLE_KNOWLEDGE.
/// Whom the simulator found `a`'s call acted for (`{"kind","user"}`), read
/// from its record of the request: answers carry no echo.
fn principal_of(site: &Site, a: &Answer) -> Value {
    let r = site
        .sim()
        .request_for(&a.headers)
        .expect("the answer names its request");
    let p = r.principal.expect("the call's tokens were accepted");
    json!({ "kind": p.kind, "user": p.user })
}

fn kmauth(integration: &str, user: Option<&str>, extra: &[(&str, Value)]) -> String {
    let mut v = json!({
        "siteName": "ORACLE_KNOWLEDGE",
        "localeId": "en_US",
        "integrationUserToken": integration,
    });
    if let Some(u) = user {
        v["userToken"] = json!(u);
    }
    for (k, x) in extra {
        v[*k] = x.clone();
    }
    v.to_string()
}

#[tokio::test]
async fn integration_login_issues_oracle_like_tokens_and_counts() {
    let site = Site::start().await;
    let a = site.integration_login("apiuser", "apipass1", "ORACLE_KNOWLEDGE").await;
    assert_eq!(a.status, StatusCode::OK);
    let token = a.json()["authenticationToken"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 128);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)));
    // Also accepted without a kmauthtoken header.
    let body = r#"{"login":"apiuser","password":"apipass1","siteName":"ORACLE_KNOWLEDGE"}"#;
    let b = site
        .send(
            Method::POST,
            "/km/api/v1/auth/integration/authorize",
            &[("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!(b.status, StatusCode::OK);
    let other = b.json()["authenticationToken"].as_str().map(str::to_owned);
    assert_ne!(other.as_deref(), Some(token.as_str()));
    let sim = site.sim();
    assert_eq!(sim.logins(LoginKind::Integration, Some("apiuser"), LoginOutcome::Ok), 2);
    assert_eq!(sim.logins(LoginKind::Integration, None, LoginOutcome::Ok), 2);
    assert_eq!(sim.total_logins(), 2);
    assert_eq!(sim.request_count(), 0, "logins are not API requests");
    assert!(sim.issued_tokens().contains(&token));
}

#[tokio::test]
async fn integration_login_rejects_bad_credentials_site_and_body() {
    let site = Site::start().await;
    for (login, pw, s) in [
        ("apiuser", "wrong", "ORACLE_KNOWLEDGE"),
        ("nobody", "apipass1", "ORACLE_KNOWLEDGE"),
        ("apiuser", "apipass1", "OTHER_SITE"),
    ] {
        let a = site.integration_login(login, pw, s).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        let err = a.json();
        assert_eq!(err["error"]["errorCode"], "OK-AUTH0001");
        assert_eq!(err["error"]["type"], "VALIDATION");
        assert_eq!(err["errorDetails"], json!([]));
    }
    let a = site
        .send(
            Method::POST,
            "/km/api/v1/auth/integration/authorize",
            &[("content-type", "application/json")],
            "{not json",
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(!a.error_code().starts_with("OK-SESSION"));
    let wrong_header = site
        .send(
            Method::POST,
            "/km/api/v1/auth/integration/authorize",
            &[("kmauthtoken", r#"{"siteName":"ELSEWHERE"}"#)],
            r#"{"login":"apiuser","password":"apipass1","siteName":"ORACLE_KNOWLEDGE"}"#,
        )
        .await;
    assert_eq!(wrong_header.status, StatusCode::UNAUTHORIZED);
    let sim = site.sim();
    assert_eq!(
        sim.logins(LoginKind::Integration, Some("apiuser"), LoginOutcome::Rejected),
        3
    );
    assert_eq!(
        sim.logins(LoginKind::Integration, Some("nobody"), LoginOutcome::Rejected),
        1
    );
    assert_eq!(sim.logins(LoginKind::Integration, None, LoginOutcome::Rejected), 5);
    assert_eq!(sim.logins(LoginKind::Integration, None, LoginOutcome::Ok), 0);
    assert!(sim.issued_tokens().is_empty());
}

#[tokio::test]
async fn user_login_answers_a_serialised_token_object_and_a_user() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    let a = site.user_login(&integration, "okcsuser", "Password1", "ACCOUNT").await;
    assert_eq!(a.status, StatusCode::OK);
    let body = a.json();
    let inner: Value =
        serde_json::from_str(body["authenticationToken"].as_str().expect("string")).expect("a JSON object serialised");
    assert_eq!(inner["siteName"], "ORACLE_KNOWLEDGE");
    assert_eq!(inner["localeId"], "en_US");
    assert_eq!(inner["integrationUserToken"], Value::Null);
    let user_token = inner["userToken"].as_str().expect("userToken");
    assert_eq!(user_token.len(), 88);
    assert_eq!(body["user"]["isActive"], true);
    assert_eq!(body["user"]["isLocked"], false);
    assert_eq!(body["user"]["externalType"], "ACCOUNT");
    assert!(site.sim().issued_tokens().iter().any(|t| t == user_token));

    let echo = site
        .get(
            "/km/api/latest/content",
            &[("kmauthtoken", &kmauth(&integration, Some(user_token), &[]))],
        )
        .await;
    assert_eq!(echo.status, StatusCode::OK);
    assert_eq!(principal_of(&site, &echo), json!({"kind":"account","user":"okcsuser"}));

    let web = site.user_token(&integration, "webuser", "CONTACT").await;
    let echo = site
        .get(
            "/km/api/latest/content",
            &[("kmauthtoken", &kmauth(&integration, Some(&web), &[]))],
        )
        .await;
    assert_eq!(principal_of(&site, &echo), json!({"kind":"contact","user":"webuser"}));
    let sim = site.sim();
    assert_eq!(sim.logins(LoginKind::Account, Some("okcsuser"), LoginOutcome::Ok), 1);
    assert_eq!(sim.logins(LoginKind::Contact, Some("webuser"), LoginOutcome::Ok), 1);
}

#[tokio::test]
async fn user_login_with_json_body_is_invalid_input() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    let body = json!({"userName":"okcsuser","password":"Password1",
        "siteName":"ORACLE_KNOWLEDGE","userExternalType":"ACCOUNT"});
    let a = site
        .send(
            Method::POST,
            "/km/api/latest/auth/authorize",
            &[
                ("content-type", "application/json"),
                ("kmauthtoken", &kmauth(&integration, None, &[])),
            ],
            body.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"]["title"], "Invalid input");
    assert!(!a.error_code().starts_with("OK-SESSION"));
    assert_eq!(
        site.sim()
            .logins(LoginKind::Account, Some("okcsuser"), LoginOutcome::Rejected),
        1
    );
}

#[tokio::test]
async fn user_login_rejects_wrong_password_unknown_user_and_wrong_type() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    for (user, pw, kind) in [
        ("okcsuser", "nope", "ACCOUNT"),
        ("ghost", "Password1", "ACCOUNT"),
        ("webuser", "Password1", "ACCOUNT"),
        ("okcsuser", "Password1", "CONTACT"),
    ] {
        let a = site.user_login(&integration, user, pw, kind).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{user} {kind}");
        assert_eq!(a.error_code(), "OK-AUTH0001");
    }
    let a = site.user_login(&integration, "okcsuser", "Password1", "ROBOT").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let sim = site.sim();
    assert_eq!(sim.logins(LoginKind::Account, None, LoginOutcome::Rejected), 4);
    assert_eq!(
        sim.logins(LoginKind::Contact, Some("okcsuser"), LoginOutcome::Rejected),
        1
    );
    assert_eq!(sim.logins(LoginKind::Account, None, LoginOutcome::Ok), 0);
}

#[tokio::test]
async fn contact_sharing_an_accounts_name_authenticates_as_the_account() {
    let mut config = SimConfig::default();
    config.users.push(SimUser {
        name: "shared".into(),
        password: "AccountPw1".into(),
        kind: UserKind::Account,
    });
    config.users.push(SimUser {
        name: "shared".into(),
        password: "ContactPw1".into(),
        kind: UserKind::Contact,
    });
    let site = Site::with(config).await;
    let integration = site.integration_token().await;
    let refused = site.user_login(&integration, "shared", "ContactPw1", "CONTACT").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let a = site.user_login(&integration, "shared", "AccountPw1", "CONTACT").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["user"]["externalType"], "ACCOUNT");
    let token = user_token_of(&a);
    let echo = site
        .get(
            "/km/api/v1/content",
            &[("kmauthtoken", &kmauth(&integration, Some(&token), &[]))],
        )
        .await;
    assert_eq!(principal_of(&site, &echo), json!({"kind":"account","user":"shared"}));
    assert_eq!(
        site.sim().logins(LoginKind::Contact, Some("shared"), LoginOutcome::Ok),
        1
    );
}

#[tokio::test]
async fn user_login_with_expired_integration_token_is_a_session_error() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    site.sim().expire_all_tokens();
    let a = site.user_login(&integration, "okcsuser", "Password1", "ACCOUNT").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.error_code(), "OK-SESSION0003");
    let sim = site.sim();
    assert_eq!(
        sim.logins(LoginKind::Account, Some("okcsuser"), LoginOutcome::Failed),
        1
    );
    assert_eq!(
        sim.logins(LoginKind::Account, Some("okcsuser"), LoginOutcome::Rejected),
        0
    );
}

#[tokio::test]
async fn answers_carry_no_echo_and_the_record_holds_the_request_byte_exact() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    let km = kmauth(&integration, None, &[("appId", json!("helpdesk"))]);
    let body = b"{\"title\":\"hello\"}".to_vec();
    let a = site
        .send(
            Method::PUT,
            "/km/api/v1/content/ABC%2F1?q=a%20b&x=%2F",
            &[("kmauthtoken", &km), ("X-Custom", "1")],
            body.clone(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // The answer is Oracle-shaped (the written record's key) and shows no token.
    assert!(a.json()["recordId"].is_string(), "{}", a.text());
    assert!(!a.text().contains(&integration), "the answer shows the token");
    assert!(a.json().get("kmauthtoken").is_none() && a.json().get("bodySha256").is_none());

    let sha = hex::encode(Sha256::digest(&body));
    let recorded = site.sim().requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(site.sim().request_for(&a.headers).map(|f| f.id), Some(r.id));
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("PUT", "/km/api/v1/content/ABC%2F1")
    );
    assert_eq!(r.query.as_deref(), Some("q=a%20b&x=%2F"));
    assert_eq!((r.body_len, r.body_sha256.as_str()), (body.len(), sha.as_str()));
    assert_eq!(r.headers.get("x-custom").map(|v| v.as_bytes()), Some(&b"1"[..]));
    let names = r.header_names();
    assert!(
        names.contains(&"x-custom") && names.contains(&"kmauthtoken"),
        "{names:?}"
    );
    let recorded_km = r.kmauthtoken.as_ref().expect("kmauthtoken parsed");
    assert_eq!(recorded_km["appId"], "helpdesk");
    assert_eq!(recorded_km["integrationUserToken"], integration.as_str());
    assert_eq!(principal_of(&site, &a), json!({"kind":"anonymous","user":null}));
    assert_eq!(site.sim().request_count(), 1);

    // A path no resource answers is Oracle's 404, recorded like any call (no query → None).
    let other = site
        .send(
            Method::DELETE,
            "/km/api/latest/anything/else",
            &[("kmauthtoken", &km)],
            "",
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(other.error_code(), "OK-GEN0004");
    let r = site.sim().request_for(&other.headers).expect("recorded");
    assert_eq!((r.method.as_str(), r.query.as_deref()), ("DELETE", None));
}

#[tokio::test]
async fn resources_are_xml_only_when_only_xml_is_accepted() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    let xml = site
        .get(
            "/km/api/v1/content",
            &[("kmauthtoken", &km), ("accept", "application/xml")],
        )
        .await;
    assert_eq!(xml.status, StatusCode::OK);
    assert_eq!(xml.header("content-type"), Some("application/xml"));
    assert!(xml.text().starts_with("<?xml"), "{}", xml.text());
    assert!(xml.text().contains("<content>") && xml.text().contains("<documentId>FAQ12</documentId>"));
    let both = site
        .get(
            "/km/api/v1/content",
            &[("kmauthtoken", &km), ("accept", "application/json, application/xml")],
        )
        .await;
    assert!(both.json()["items"].is_array());
}

#[tokio::test]
async fn expired_tokens_give_session_errors_with_varying_statuses() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    let user = site.user_token(&integration, "okcsuser", "ACCOUNT").await;
    site.sim().expire_all_tokens();

    let km = kmauth(&integration, None, &[]);
    let json_err = site.get("/km/api/v1/content", &[("kmauthtoken", &km)]).await;
    assert_eq!(json_err.status, StatusCode::UNAUTHORIZED);
    let e = json_err.json();
    assert_eq!(e["error"]["errorCode"], "OK-SESSION0003");
    assert_eq!(e["error"]["title"], "Session Token has expired");
    assert_eq!(e["error"]["type"], "VALIDATION");

    let xml_err = site
        .get(
            "/km/api/v1/content",
            &[("kmauthtoken", &km), ("accept", "application/xml")],
        )
        .await;
    assert_eq!(xml_err.status, StatusCode::BAD_REQUEST);
    assert_ne!(xml_err.status, json_err.status);
    assert_eq!(xml_err.header("content-type"), Some("application/xml"));
    assert_eq!(
        xml_err.text(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><error><title>Session Token has expired\
         </title><errorCode>OK-SESSION0003</errorCode><type>VALIDATION</type></error>"
    );

    // A fresh integration token with a stale user token: still a session error.
    let fresh = site.integration_token().await;
    let stale_user = kmauth(&fresh, Some(&user), &[]);
    let a = site.get("/km/api/v1/content", &[("kmauthtoken", &stale_user)]).await;
    assert_eq!(a.error_code(), "OK-SESSION0003");
    // And an unknown integration token.
    let unknown = kmauth("bm90LWEtdG9rZW4=", None, &[]);
    let a = site.get("/km/api/v1/content", &[("kmauthtoken", &unknown)]).await;
    assert_eq!(a.error_code(), "OK-SESSION0003");
    let ok = site
        .get("/km/api/v1/content", &[("kmauthtoken", &kmauth(&fresh, None, &[]))])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn short_token_lifetime_expires_tokens() {
    let site = Site::with(SimConfig {
        token_lifetime: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    let a = site.get("/km/api/v1/content", &[("kmauthtoken", &km)]).await;
    assert_eq!(a.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = site.get("/km/api/v1/content", &[("kmauthtoken", &km)]).await;
    assert_eq!(b.error_code(), "OK-SESSION0003");
}

#[tokio::test]
async fn missing_or_foreign_kmauthtoken_is_not_a_session_error() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    let none = site.get("/km/api/v1/content", &[]).await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert_eq!(none.error_code(), "OK-AUTH0003");
    let junk = site.get("/km/api/v1/content", &[("kmauthtoken", "not json")]).await;
    assert_eq!(junk.status, StatusCode::BAD_REQUEST);
    assert_eq!(junk.error_code(), "OK-AUTH0003");
    let foreign = json!({"siteName":"OTHER","integrationUserToken":integration}).to_string();
    let a = site.get("/km/api/v1/content", &[("kmauthtoken", &foreign)]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error_code(), "OK-AUTH0002");
    assert_eq!(site.sim().request_count(), 3, "refused calls are recorded too");
}

#[tokio::test]
async fn bearer_tokens_are_accepted_or_refused() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    let km = kmauth(&integration, None, &[]);
    let a = site
        .get(
            "/km/api/latest/content",
            &[("kmauthtoken", &km), ("authorization", "Bearer demo-jwt")],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(principal_of(&site, &a), json!({"kind":"bearer","user":null}));

    let refused = site
        .get(
            "/km/api/latest/content",
            &[("kmauthtoken", &km), ("authorization", "Bearer forged")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.error_code(), "OK-AUTH0005");

    let basic = site
        .get(
            "/km/api/latest/content",
            &[("kmauthtoken", &km), ("authorization", "Basic YTpi")],
        )
        .await;
    assert_eq!(basic.error_code(), "OK-AUTH0005");

    let user = site.user_token(&integration, "okcsuser", "ACCOUNT").await;
    let both = site
        .get(
            "/km/api/latest/content",
            &[
                ("kmauthtoken", &kmauth(&integration, Some(&user), &[])),
                ("authorization", "Bearer demo-jwt"),
            ],
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert_eq!(both.error_code(), "OK-AUTH0006");

    // The bearer does not replace the integration token.
    site.sim().expire_all_tokens();
    let expired = site
        .get(
            "/km/api/latest/content",
            &[("kmauthtoken", &km), ("authorization", "Bearer demo-jwt")],
        )
        .await;
    assert_eq!(expired.error_code(), "OK-SESSION0003");
}

#[tokio::test]
async fn knowledge_interactions_are_validated() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    let km = kmauth(&integration, None, &[]);
    let a = site
        .get(
            "/km/api/v1/knowledgeInteraction/startInteraction",
            &[("kmauthtoken", &km)],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let id = a.json()["knowledgeInteractionId"].as_str().expect("id").to_owned();
    assert!(!id.is_empty() && id.len() <= 64);

    let with = |id: &str, token: &str| {
        kmauth(
            token,
            None,
            &[
                ("knowledgeInteractionId", json!(id)),
                ("interactionIdGenerated", json!("true")),
            ],
        )
    };
    let ok = site
        .get("/km/api/v1/content", &[("kmauthtoken", &with(&id, &integration))])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let bogus = site
        .get(
            "/km/api/v1/content",
            &[("kmauthtoken", &with("Z9X3D85Ka8C", &integration))],
        )
        .await;
    assert_eq!(bogus.status, StatusCode::BAD_REQUEST);
    assert_eq!(bogus.error_code(), "OK-SEC0012");

    site.sim().expire_all_tokens();
    let fresh = site.integration_token().await;
    let stale = site
        .get("/km/api/v1/content", &[("kmauthtoken", &with(&id, &fresh))])
        .await;
    assert_eq!(stale.error_code(), "OK-SEC0012");
    // Without interactionIdGenerated the id is not checked.
    let unchecked = kmauth(&fresh, None, &[("knowledgeInteractionId", json!("whatever"))]);
    let a = site.get("/km/api/v1/content", &[("kmauthtoken", &unchecked)]).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn search_needs_interface_id_and_reports_gen0003() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    let no_interface = kmauth(&integration, None, &[]);
    let a = site
        .get(
            "/srt/api/v1/search/question?question=reset",
            &[("kmauthtoken", &no_interface)],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error_code(), "OK-SRT0001");

    let km = kmauth(&integration, None, &[("interfaceId", json!("1"))]);
    let q = site
        .get(
            "/srt/api/latest/search/question?question=reset%20password",
            &[("kmauthtoken", &km)],
        )
        .await;
    assert_eq!(q.status, StatusCode::OK);
    let body = q.json();
    let recorded = site.sim().request_for(&q.headers).expect("recorded");
    assert_eq!(recorded.query.as_deref(), Some("question=reset%20password"));
    let items = body["results"]["results"][0]["resultItems"]
        .as_array()
        .expect("resultItems");
    assert!(!items.is_empty(), "{body}");
    let ans = site
        .send(
            Method::POST,
            "/srt/api/v1/search/answer?answerId=1000078&priorTransactionId=1&trackClickFlag=true",
            &[("kmauthtoken", &km)],
            "{\"x\":1}",
        )
        .await;
    assert_eq!(ans.status, StatusCode::OK, "{}", ans.text());
    assert_eq!(site.sim().request_for(&ans.headers).map(|r| r.body_len), Some(7));

    site.sim().expire_all_tokens();
    let expired = site
        .get("/srt/api/v1/search/question?question=x", &[("kmauthtoken", &km)])
        .await;
    assert_eq!(expired.status, StatusCode::FORBIDDEN);
    assert_eq!(expired.error_code(), "OK-GEN0003");
}

#[tokio::test]
async fn blob_streams_n_bytes_with_and_without_content_length() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    let n: u64 = 5 * 1024 * 1024 + 123;
    let a = site
        .get(&format!("/km/api/v1/content/blob?bytes={n}"), &[("kmauthtoken", &km)])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-length"), Some(n.to_string().as_str()));
    assert_eq!(a.body.len() as u64, n);
    assert_eq!(a.body[..3], [0, 1, 2]);
    assert_eq!(a.body[251], 0);
    let sha = hex::encode(Sha256::digest(&a.body));
    assert_eq!(sha, blob_sha256(n));

    let c = site
        .get(
            &format!("/km/api/v1/content/blob?bytes={n}&chunked=1"),
            &[("kmauthtoken", &km)],
        )
        .await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c.header("content-length"), None);
    assert_eq!(c.header("transfer-encoding"), Some("chunked"));
    assert_eq!(hex::encode(Sha256::digest(&c.body)), sha);

    let missing = site.get("/km/api/v1/content/blob", &[("kmauthtoken", &km)]).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
}

/// Send a raw HTTP/1.1 GET and read until the server closes.
async fn raw_get(site: &Site, path: &str, km: &str) -> Vec<u8> {
    raw_request(site, path, km, "connection: close\r\n").await
}

/// Send a raw HTTP/1.1 GET with `extra` header lines and read until the server closes.
async fn raw_request(site: &Site, path: &str, km: &str, extra: &str) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(site.handle.addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nkmauthtoken: {km}\r\n{extra}\r\n",
        site.handle.addr
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("server neither finished nor aborted the body"),
        }
    }
    got
}

#[tokio::test]
async fn blob_fail_after_truncates_the_body_and_closes_the_connection() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    let (n, m) = (1_000_000usize, 300_000usize);
    let raw = raw_get(&site, &format!("/km/api/v1/content/blob?bytes={n}&fail_after={m}"), &km).await;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {n}")), "{head}");
    let body = &raw[split + 4..];
    assert_eq!(body.len(), m, "the first M bytes arrive, then the connection closes");
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));

    // A client that trusts content-length sees an error, not a short success.
    let req = Request::get(format!(
        "{}/km/api/v1/content/blob?bytes={n}&fail_after={m}",
        site.handle.base_url()
    ))
    .header("kmauthtoken", &km)
    .body(Full::new(Bytes::new()))
    .expect("request");
    let res = site.client.request(req).await.expect("head arrives");
    assert!(res.into_body().collect().await.is_err());

    // Chunked: the terminating chunk never comes.
    let raw = raw_get(
        &site,
        &format!("/km/api/v1/content/blob?bytes={n}&chunked=1&fail_after={m}"),
        &km,
    )
    .await;
    let head = String::from_utf8_lossy(&raw[..raw.len().min(512)]).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(raw.len() > m, "the first M bytes (plus chunk framing) arrive");
    assert!(raw.len() < n);
    assert!(!raw.ends_with(b"0\r\n\r\n"), "no terminating chunk");
}

#[tokio::test]
async fn slow_answers_and_the_delay_hook_hold_the_answer() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    let t = Instant::now();
    let a = site
        .get("/km/api/v1/content/slow?ms=300", &[("kmauthtoken", &km)])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        site.sim().request_for(&a.headers).map(|r| r.path),
        Some("/km/api/v1/content/slow".to_owned())
    );
    assert!(a.json()["items"].is_array(), "slow answers the content list");

    site.sim().set_delay(Duration::from_secs(1));
    let t = Instant::now();
    let b = site.get("/km/api/v1/content", &[("kmauthtoken", &km)]).await;
    assert_eq!(b.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_secs(1));
    // Logins are not delayed.
    let t = Instant::now();
    site.integration_token().await;
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn redirect_answers_302_after_checking_tokens() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    let to = "http%3A%2F%2Felsewhere.example%2Fsteal%3Fx%3D1";
    let a = site
        .get(&format!("/km/api/v1/content/redirect?to={to}"), &[("kmauthtoken", &km)])
        .await;
    assert_eq!(a.status, StatusCode::FOUND);
    assert_eq!(a.header("location"), Some("http://elsewhere.example/steal?x=1"));
    site.sim().expire_all_tokens();
    let b = site
        .get(&format!("/km/api/v1/content/redirect?to={to}"), &[("kmauthtoken", &km)])
        .await;
    assert_eq!(b.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b.error_code(), "OK-SESSION0003");
}

#[tokio::test]
async fn injected_login_failures_then_recovery() {
    let site = Site::start().await;
    site.sim().fail_logins(503, 2);
    for _ in 0..2 {
        let a = site.integration_login("apiuser", "apipass1", "ORACLE_KNOWLEDGE").await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!a.error_code().starts_with("OK-SESSION"));
    }
    let token = site.integration_token().await;
    let sim = site.sim();
    assert_eq!(
        sim.logins(LoginKind::Integration, Some("apiuser"), LoginOutcome::Failed),
        2
    );
    assert_eq!(sim.logins(LoginKind::Integration, Some("apiuser"), LoginOutcome::Ok), 1);
    assert_eq!(sim.issued_tokens(), vec![token.clone()]);

    // The same through the HTTP hook, on the user login.
    let hook = site
        .send(Method::POST, "/__sim/fail-logins?status=500&count=1", &[], "")
        .await;
    assert_eq!(hook.status, StatusCode::OK);
    let a = site.user_login(&token, "webuser", "Password1", "CONTACT").await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    let b = site.user_login(&token, "webuser", "Password1", "CONTACT").await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(sim.logins(LoginKind::Contact, Some("webuser"), LoginOutcome::Failed), 1);
    assert_eq!(sim.logins(LoginKind::Contact, Some("webuser"), LoginOutcome::Ok), 1);
}

#[tokio::test]
async fn injected_session_errors_hit_valid_tokens() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    site.sim().session_error_next(1);
    let a = site.get("/km/api/v1/content", &[("kmauthtoken", &km)]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.error_code(), "OK-SESSION0003");
    let b = site.get("/km/api/v1/content", &[("kmauthtoken", &km)]).await;
    assert_eq!(b.status, StatusCode::OK);

    let hook = site.send(Method::POST, "/__sim/session-error?count=2", &[], "").await;
    assert_eq!(hook.status, StatusCode::OK);
    let srt = kmauth(&site.integration_token().await, None, &[("interfaceId", json!(1))]);
    let c = site.get("/srt/api/v1/search/question", &[("kmauthtoken", &srt)]).await;
    assert_eq!(c.error_code(), "OK-GEN0003");
    let d = site.get("/km/api/v1/content", &[("kmauthtoken", &km)]).await;
    assert_eq!(d.error_code(), "OK-SESSION0003");
    let e = site.get("/km/api/v1/content", &[("kmauthtoken", &km)]).await;
    assert_eq!(e.status, StatusCode::OK);
}

#[tokio::test]
async fn http_hooks_expire_report_delay_and_reset() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    site.integration_login("apiuser", "bad", "ORACLE_KNOWLEDGE").await;
    site.get("/km/api/v1/content", &[("kmauthtoken", &km)]).await;

    let stats = site.get("/__sim/stats", &[]).await;
    assert_eq!(stats.status, StatusCode::OK);
    let s = stats.json();
    assert_eq!(s["totalLogins"], 2);
    assert_eq!(s["requestCount"], 1);
    assert_eq!(s["loginTotals"]["integration"]["ok"], 1);
    assert_eq!(s["loginTotals"]["integration"]["rejected"], 1);
    assert!(s["logins"]
        .as_array()
        .expect("logins")
        .contains(&json!({"kind":"integration","user":"apiuser","outcome":"ok","count":1})));

    let expire = site.send(Method::POST, "/__sim/expire", &[], "").await;
    assert_eq!(expire.status, StatusCode::OK);
    let a = site.get("/km/api/v1/content", &[("kmauthtoken", &km)]).await;
    assert_eq!(a.error_code(), "OK-SESSION0003");

    let delay = site.send(Method::POST, "/__sim/delay?ms=200", &[], "").await;
    assert_eq!(delay.status, StatusCode::OK);
    assert_eq!(site.get("/__sim/stats", &[]).await.json()["delayMs"], 200);
    let t = Instant::now();
    site.get("/km/api/v1/content", &[]).await;
    assert!(t.elapsed() >= Duration::from_millis(200));

    let slow_logins = site.send(Method::POST, "/__sim/login-delay?ms=150", &[], "").await;
    assert_eq!(slow_logins.status, StatusCode::OK);
    assert_eq!(site.get("/__sim/stats", &[]).await.json()["loginDelayMs"], 150);

    let close = site
        .send(Method::POST, "/__sim/close-connections?on=true", &[], "")
        .await;
    assert_eq!(close.status, StatusCode::OK);
    assert_eq!(close.header("connection"), Some("close"));
    assert_eq!(
        site.get("/km/api/v1/content", &[]).await.header("connection"),
        Some("close")
    );
    assert!(site.get("/__sim/stats", &[]).await.json()["connections"].as_u64() >= Some(1));

    let reset = site.send(Method::POST, "/__sim/reset", &[], "").await;
    assert_eq!(reset.status, StatusCode::OK);
    let s = site.get("/__sim/stats", &[]).await.json();
    assert_eq!(
        (s["totalLogins"].clone(), s["requestCount"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(s["delayMs"], 0);
    assert_eq!(s["loginDelayMs"], 0);
    assert_eq!(site.sim().request_count(), 0, "hooks are never recorded");
    assert_eq!(site.get("/km/api/v1/content", &[]).await.header("connection"), None);

    let bad = site.send(Method::POST, "/__sim/fail-logins?status=abc", &[], "").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn counters_cover_api_calls_only_and_reset() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    for path in ["/km/api/v1/content", "/km/api/latest/content/X", "/nowhere"] {
        site.get(path, &[("kmauthtoken", &km)]).await;
    }
    let nowhere = site.get("/elsewhere/api", &[]).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    let wrong_method = site.get("/km/api/v1/auth/integration/authorize", &[]).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    let sim = site.sim();
    assert_eq!(sim.request_count(), 5);
    let paths: Vec<String> = sim.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/km/api/v1/content",
            "/km/api/latest/content/X",
            "/nowhere",
            "/elsewhere/api",
            "/km/api/v1/auth/integration/authorize"
        ]
    );
    assert_eq!(sim.total_logins(), 1);
    sim.reset_counters();
    assert_eq!((sim.request_count(), sim.total_logins()), (0, 0));
    assert!(sim.requests().is_empty());
    assert_eq!(sim.issued_tokens().len(), 1, "issued tokens survive a reset");
}

#[tokio::test]
async fn concurrent_logins_are_counted_and_unique() {
    let site = std::sync::Arc::new(Site::start().await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let site = std::sync::Arc::clone(&site);
        tasks.push(tokio::spawn(async move { site.integration_token().await }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.expect("task"));
    }
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 20);
    assert_eq!(site.sim().logins(LoginKind::Integration, None, LoginOutcome::Ok), 20);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let handle = Simulator::spawn(SimConfig::default()).await.expect("spawn");
    let addr = handle.addr;
    assert!(handle.base_url().starts_with("http://127.0.0.1:"));
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(handle);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn serve_stops_when_shutdown_resolves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let sim = Simulator::new(SimConfig::default());
    let task = tokio::spawn(sim.serve(listener, async move {
        let _ = rx.await;
    }));
    let _ = tx.send(());
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns")
        .expect("task");
    assert!(result.is_ok());
}

#[tokio::test]
async fn servlet_paths_are_off_by_default_and_route_the_raw_path() {
    let site = Site::start().await;
    let integration = site.integration_token().await;
    let km = kmauth(&integration, None, &[]);
    let odd = "/km/api/latest/content/..;/auth/authorize";
    let a = site
        .user_login_at(odd, &integration, "okcsuser", "Password1", "ACCOUNT")
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let call = site
        .sim()
        .request_for(&a.headers)
        .expect("an API call, recorded, not a login");
    assert_eq!(call.path, odd);
    assert!(a.json().get("authenticationToken").is_none(), "{}", a.text());
    let sim = site.sim();
    assert_eq!(sim.logins(LoginKind::Account, None, LoginOutcome::Ok), 0);
    let dots = site.get("/km/api/v1/content/%2e%2e/x", &[("kmauthtoken", &km)]).await;
    assert_eq!(dots.status, StatusCode::NOT_FOUND, "no resource at the raw path");
    assert!(sim.request_for(&dots.headers).is_some());
    assert_eq!(
        sim.routed_paths(),
        [
            (Method::POST, "/km/api/latest/auth/integration/authorize".to_owned()),
            (Method::POST, odd.to_owned()),
            (Method::GET, "/km/api/v1/content/%2e%2e/x".to_owned()),
        ]
    );
    let last = sim.requests().pop().expect("recorded");
    assert_eq!(last.routed_path.as_deref(), Some(last.path.as_str()));
}

#[tokio::test]
async fn servlet_paths_reach_logins_through_odd_spellings_and_record_them() {
    let site = Site::start().await;
    let hook = site.send(Method::POST, "/__sim/servlet-paths?on=true", &[], "").await;
    assert_eq!(hook.status, StatusCode::OK);
    let body = json!({ "login": "apiuser", "password": "apipass1", "siteName": "ORACLE_KNOWLEDGE" });
    let i = site
        .send(
            Method::POST,
            "/km/api/v1/content/%2e%2e/auth;x=1//integration/./authorize",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    assert_eq!(i.status, StatusCode::OK, "{}", i.text());
    let integration = i.json()["authenticationToken"].as_str().expect("token").to_owned();
    let odd = "/km/api/latest/content/..;/auth/authorize";
    let u = site
        .user_login_at(odd, &integration, "okcsuser", "Password1", "ACCOUNT")
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.text());
    user_token_of(&u);
    let sim = site.sim();
    assert_eq!(sim.logins(LoginKind::Integration, Some("apiuser"), LoginOutcome::Ok), 1);
    assert_eq!(sim.logins(LoginKind::Account, Some("okcsuser"), LoginOutcome::Ok), 1);

    let km = kmauth(&integration, None, &[]);
    let echo = site
        .get("/km/api/v1/content;a=b/./X?q=1", &[("kmauthtoken", &km)])
        .await;
    // Routed as content/{recordId} X, which does not exist.
    assert_eq!(echo.status, StatusCode::NOT_FOUND);
    assert_eq!(echo.error_code(), "OKDOM-GEN0002");
    assert_eq!(
        sim.request_for(&echo.headers).map(|r| r.path),
        Some("/km/api/v1/content;a=b/./X".to_owned()),
        "the record keeps the raw path"
    );
    let recorded = sim.requests().pop().expect("recorded");
    assert_eq!(recorded.path, "/km/api/v1/content;a=b/./X");
    assert_eq!(recorded.routed_path.as_deref(), Some("/km/api/v1/content/X"));

    // What Tomcat refuses is refused before routing, and not routed.
    for refused in ["/km/api/v1/../../../..", "/km/api/v1/content/a%2Fb", "/km/api/v1/%zz"] {
        let a = site.get(refused, &[("kmauthtoken", &km)]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{refused}");
        assert_eq!(a.error_code(), "OK-GEN0001");
        let last = sim.requests().pop().expect("recorded");
        assert_eq!((last.path.as_str(), last.routed_path), (refused, None));
    }

    let routed = sim.routed_paths();
    assert_eq!(
        routed,
        [
            (Method::POST, "/km/api/v1/auth/integration/authorize".to_owned()),
            (Method::POST, "/km/api/latest/auth/authorize".to_owned()),
            (Method::GET, "/km/api/v1/content/X".to_owned()),
        ]
    );
    let auth_calls = routed.iter().filter(|(_, p)| p.contains("/auth/")).count();
    assert_eq!(auth_calls, 2);
    let stats = site.get("/__sim/stats", &[]).await.json();
    assert_eq!(stats["servletPaths"], true);
    assert_eq!(
        stats["routedPaths"][1],
        json!({"method": "POST", "path": "/km/api/latest/auth/authorize"})
    );

    sim.reset_counters();
    assert!(sim.routed_paths().is_empty());
    sim.reset_faults();
    let raw = site.get("/km/api/v1/content/%2e%2e/X", &[("kmauthtoken", &km)]).await;
    assert_eq!(raw.status, StatusCode::NOT_FOUND, "no resource at the raw path either");
    assert_eq!(
        sim.routed_paths()[0].1,
        "/km/api/v1/content/%2e%2e/X",
        "reset_faults turns the mode off"
    );
}

#[tokio::test]
async fn rejected_logins_can_answer_late_while_good_ones_answer_at_once() {
    let site = Site::start().await;
    let slow = Duration::from_millis(600);
    site.sim().set_login_delay_on(LoginOutcome::Rejected, slow);
    let t = Instant::now();
    let integration = site.integration_token().await;
    assert!(t.elapsed() < slow, "a good login is not held back");
    let t = Instant::now();
    let a = site.user_login(&integration, "okcsuser", "wrong", "ACCOUNT").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.error_code(), "OK-AUTH0001");
    assert!(t.elapsed() >= slow);
    let sim = site.sim();
    assert_eq!(
        sim.logins(LoginKind::Account, Some("okcsuser"), LoginOutcome::Rejected),
        1
    );

    // The general delay holds rejections too; an outcome's own delay wins.
    sim.reset_faults();
    sim.set_login_delay(Duration::from_millis(300));
    let t = Instant::now();
    let b = site.integration_login("apiuser", "wrong", "ORACLE_KNOWLEDGE").await;
    assert_eq!(b.status, StatusCode::UNAUTHORIZED);
    assert!(t.elapsed() >= Duration::from_millis(300));

    sim.reset_faults();
    let hook = site
        .send(Method::POST, "/__sim/login-delay?ms=400&outcome=rejected", &[], "")
        .await;
    assert_eq!(hook.status, StatusCode::OK);
    let s = site.get("/__sim/stats", &[]).await.json();
    assert_eq!(s["loginDelayMs"], 0);
    assert_eq!(
        s["loginDelayMsByOutcome"],
        json!({"ok": 0, "rejected": 400, "failed": 0})
    );
    let t = Instant::now();
    let c = site.integration_login("nobody", "x", "ORACLE_KNOWLEDGE").await;
    assert_eq!(c.status, StatusCode::UNAUTHORIZED);
    assert!(t.elapsed() >= Duration::from_millis(400));
    let bad = site
        .send(Method::POST, "/__sim/login-delay?ms=1&outcome=late", &[], "")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn throttled_logins_carry_retry_after_and_are_not_rejections() {
    let site = Site::start().await;
    let sim = site.sim();
    sim.fail_logins_with(429, 2, Some(Duration::from_secs(3)));
    for _ in 0..2 {
        let a = site.integration_login("apiuser", "apipass1", "ORACLE_KNOWLEDGE").await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a.header("retry-after"), Some("3"));
        assert!(!a.error_code().starts_with("OK-"));
    }
    let integration = site.integration_token().await;
    assert_eq!(sim.logins(LoginKind::Integration, None, LoginOutcome::Failed), 2);
    assert_eq!(sim.logins(LoginKind::Integration, None, LoginOutcome::Rejected), 0);

    // Over HTTP, 408 on the user login; without retry_after, no header.
    let hook = site
        .send(
            Method::POST,
            "/__sim/fail-logins?status=408&count=1&retry_after=2",
            &[],
            "",
        )
        .await;
    assert_eq!(hook.status, StatusCode::OK);
    let s = site.get("/__sim/stats", &[]).await.json();
    assert_eq!(s["pendingLoginFailure"], json!({"status": 408, "retryAfter": 2}));
    let b = site.user_login(&integration, "webuser", "Password1", "CONTACT").await;
    assert_eq!(b.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(b.header("retry-after"), Some("2"));
    assert_eq!(sim.logins(LoginKind::Contact, Some("webuser"), LoginOutcome::Failed), 1);
    assert_eq!(
        sim.logins(LoginKind::Contact, Some("webuser"), LoginOutcome::Rejected),
        0
    );
    sim.fail_logins(503, 1);
    let c = site.integration_login("apiuser", "apipass1", "ORACLE_KNOWLEDGE").await;
    assert_eq!(c.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(c.header("retry-after"), None);
    assert_eq!(
        site.get("/__sim/stats", &[]).await.json()["pendingLoginFailure"],
        Value::Null
    );
}

#[tokio::test]
async fn echo_error_pages_carry_caller_text_that_looks_like_a_session_error() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    let query = "q=%3CerrorCode%3EOK-SESSION0003%3C%2FerrorCode%3E";
    let html = site
        .get(
            &format!("/km/api/v1/content/echo-error?{query}"),
            &[("kmauthtoken", &km)],
        )
        .await;
    assert_eq!(html.status, StatusCode::BAD_REQUEST);
    assert!(html.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    assert!(
        html.text().contains("<errorCode>OK-SESSION0003</errorCode>"),
        "{}",
        html.text()
    );

    let json = site
        .get(
            &format!("/km/api/latest/content/echo-error-json?{query}"),
            &[("kmauthtoken", &km)],
        )
        .await;
    assert_eq!(json.status, StatusCode::BAD_REQUEST);
    assert_eq!(json.header("content-type"), Some("application/json"));
    let body = json.json();
    assert_eq!(body["title"], "No results for q=<errorCode>OK-SESSION0003</errorCode>");
    assert!(body.get("error").is_none() && body.get("errors").is_none());

    // The token is checked first: an expired one gets the real session error.
    site.sim().expire_all_tokens();
    let expired = site
        .get(
            &format!("/km/api/v1/content/echo-error?{query}"),
            &[("kmauthtoken", &km)],
        )
        .await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.error_code(), "OK-SESSION0003");
}

#[tokio::test]
async fn upgrade_answers_an_unsolicited_101_and_closes() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    // No `Upgrade` asked for, and no `Connection: close`: the server closes by itself.
    let raw = raw_request(&site, "/km/api/v1/content/upgrade", &km, "").await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101 switching protocols\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: upgrade\r\n"), "{text}");
    assert!(text.contains("\r\nupgrade: websocket\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "nothing after the head: {text}");
    let recorded = site.sim().requests().pop().expect("recorded");
    assert_eq!(recorded.path, "/km/api/v1/content/upgrade");
}

#[tokio::test]
async fn unaccepted_bearers_can_be_answered_with_session_errors_and_counted() {
    let site = Site::start().await;
    let km = kmauth(&site.integration_token().await, None, &[]);
    let forged = [("kmauthtoken", km.as_str()), ("authorization", "Bearer forged")];
    let sim = site.sim();
    sim.set_bearer_session_errors(true);
    let a = site.get("/km/api/latest/content", &forged).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.error_code(), "OK-SESSION0003");
    let xml = site
        .get(
            "/km/api/latest/content",
            &[
                ("kmauthtoken", &km),
                ("authorization", "Bearer forged"),
                ("accept", "application/xml"),
            ],
        )
        .await;
    assert_eq!(xml.status, StatusCode::BAD_REQUEST);
    assert!(xml.text().contains("<errorCode>OK-SESSION0003</errorCode>"));
    assert_eq!(sim.bearer_session_errors(), 2);
    let good = site
        .get(
            "/km/api/latest/content",
            &[("kmauthtoken", &km), ("authorization", "Bearer demo-jwt")],
        )
        .await;
    assert_eq!(good.status, StatusCode::OK);
    let basic = site
        .get(
            "/km/api/latest/content",
            &[("kmauthtoken", &km), ("authorization", "Basic YTpi")],
        )
        .await;
    assert_eq!(basic.error_code(), "OK-AUTH0005", "only bearer tokens");
    assert_eq!(sim.bearer_session_errors(), 2);

    sim.reset_faults();
    assert_eq!(
        site.get("/km/api/latest/content", &forged).await.error_code(),
        "OK-AUTH0005"
    );
    let hook = site
        .send(Method::POST, "/__sim/bearer-session-error?on=true", &[], "")
        .await;
    assert_eq!(hook.status, StatusCode::OK);
    let srt = kmauth(&site.integration_token().await, None, &[("interfaceId", json!(1))]);
    let b = site
        .get(
            "/srt/api/v1/search/question",
            &[("kmauthtoken", &srt), ("authorization", "Bearer forged")],
        )
        .await;
    assert_eq!(b.error_code(), "OK-GEN0003");
    let s = site.get("/__sim/stats", &[]).await.json();
    assert_eq!(s["bearerSessionErrors"], json!({"on": true, "count": 3}));
    sim.reset_counters();
    assert_eq!(sim.bearer_session_errors(), 0);
}

#[tokio::test]
async fn reset_hook_turns_every_hardening_knob_off() {
    let site = Site::start().await;
    for hook in [
        "/__sim/servlet-paths?on=true",
        "/__sim/bearer-session-error?on=true",
        "/__sim/login-delay?ms=5&outcome=failed",
        "/__sim/fail-logins?status=429&count=4&retry_after=9",
    ] {
        assert_eq!(
            site.send(Method::POST, hook, &[], "").await.status,
            StatusCode::OK,
            "{hook}"
        );
    }
    assert_eq!(
        site.send(Method::POST, "/__sim/reset", &[], "").await.status,
        StatusCode::OK
    );
    let s = site.get("/__sim/stats", &[]).await.json();
    assert_eq!(s["servletPaths"], false);
    assert_eq!(s["bearerSessionErrors"], json!({"on": false, "count": 0}));
    assert_eq!(s["loginDelayMsByOutcome"]["failed"], 0);
    assert_eq!(s["pendingLoginFailure"], Value::Null);
    assert_eq!(s["routedPaths"], json!([]));
}
