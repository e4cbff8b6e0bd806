//! Real Knowledge Advanced clients through kmproxy, unchanged: the request
//! shapes of Oracle's Digital Assistant sample (`oracle/ka-oda-sample`,
//! `lib/KnowledgeRestManager.js` and the `KnowledgeSearch`, `FindArticle`
//! and `ViewArticle` components) and of the Customer Portal's `OkcsApi`,
//! their own login calls answered by kmproxy (`server.client_logins =
//! "answer"`), and the links in answers, which stay on kmproxy
//! (`upstream.rewrite_links`). Each test asserts what the client got and
//! what the simulator saw.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Answer, Env, HELPDESK_KEY, KIOSK_KEY};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kmproxy::callers::placeholder::{Binding, Placeholders};
use kmproxy::config::ClientLogins;
use serde_json::{json, Value};

const SITE: &str = "ORACLE_KNOWLEDGE";
/// The passwords the clients send in their own logins: never forwarded.
const CP_API_PASSWORD: &str = "cp-api-user-Secret-9";
const CP_USER_PASSWORD: &str = "cp-web-user-Secret-7";

async fn answering() -> Env {
    Env::builder()
        .config(|c| c.server.client_logins = ClientLogins::Answer)
        .start()
        .await
}

/// The body as the client reads it: gunzipped when it came gzipped.
fn decoded(a: &Answer) -> Vec<u8> {
    match a.headers.get("content-encoding").map(|v| v.to_str().unwrap()) {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&a.body[..]).read_to_end(&mut out).unwrap();
            out
        }
        None => a.body.to_vec(),
        Some(other) => panic!("unexpected coding {other}"),
    }
}

fn json_of(a: &Answer) -> Value {
    let body = decoded(a);
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
}

/// Whom the simulator found the answered call acted for: (kind, user).
fn acted_for(env: &Env, a: &Answer) -> (&'static str, Option<String>) {
    let r = env
        .simulator()
        .request_for(&a.headers)
        .expect("the answer names its request");
    let p = r.principal.expect("the call's tokens were accepted");
    (p.kind, p.user)
}

/// Everything the simulator received, as text (paths, queries, headers).
fn upstream_text(env: &Env) -> String {
    env.simulator()
        .requests()
        .iter()
        .map(|r| format!("{} {:?} {:?} {:?}", r.path, r.query, r.headers, r.kmauthtoken))
        .collect()
}

/// The Digital Assistant sample's own login (`getIntegrationUserToken`):
/// JSON body, `kmauthtoken {siteName, localeId}`, JSON headers.
async fn da_login(env: &Env, login: &str, password: &str) -> Answer {
    let kmauth = json!({ "siteName": SITE, "localeId": "en_US" }).to_string();
    let body = json!({ "login": login, "password": password, "siteName": SITE }).to_string();
    env.send(
        Method::POST,
        "/km/api/latest/auth/integration/authorize",
        &[
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("accept-encoding", "gzip"),
            ("kmauthtoken", &kmauth),
        ],
        body,
    )
    .await
}

async fn da_token(env: &Env, login: &str, password: &str) -> String {
    let a = da_login(env, login, password).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", decoded(&a));
    json_of(&a)["authenticationToken"].as_str().unwrap().to_owned()
}

/// A call as `knowledgeRestRequest` makes it: JSON `Accept` and
/// `Content-Type` on every method, `kmauthtoken {siteName, interfaceId:
/// <number>, integrationUserToken}`, gzip accepted.
async fn da_call(env: &Env, method: Method, path: &str, token: &str, body: &'static str) -> Answer {
    let kmauth = json!({ "siteName": SITE, "interfaceId": 1, "integrationUserToken": token }).to_string();
    let headers = [
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("accept-encoding", "gzip"),
        ("kmauthtoken", kmauth.as_str()),
    ];
    env.send(method, path, &headers, body).await
}

/// `KnowledgeSearch`, `FindArticle`, `ViewArticle`: the fields each reads.
async fn da_search_list_view(env: &Env, token: &str) -> Vec<Answer> {
    let search = da_call(
        env,
        Method::POST,
        "/srt/api/latest/search/question?question=reset%20my%20password",
        token,
        "{}",
    )
    .await;
    assert_eq!(search.status, StatusCode::OK, "{:?}", decoded(&search));
    assert_eq!(search.headers["content-encoding"], "gzip");
    let first = &json_of(&search)["results"]["results"][0]["resultItems"][0];
    assert!(first["title"]["url"].as_str().unwrap().starts_with("IM:FAQ:"));
    let answer_id = first["globalAnswerId"].as_str().unwrap().to_owned();

    let list = da_call(
        env,
        Method::GET,
        "/km/api/latest/content?q=title+likeAny+('*password*')",
        token,
        "",
    )
    .await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", decoded(&list));
    let items = json_of(&list)["items"].as_array().unwrap().clone();
    assert!(!items.is_empty());
    for item in &items {
        assert!(item["publishDate"].as_str().unwrap().contains('T'));
        assert!(item["documentId"].is_string() && item["answerId"].is_number());
    }

    let view = da_call(
        env,
        Method::GET,
        &format!("/km/api/latest/content/answers/{answer_id}?mode=EXTENDED"),
        token,
        "",
    )
    .await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", decoded(&view));
    let article = json_of(&view);
    assert!(article["xml"].as_str().unwrap().starts_with('<'));
    assert_eq!(article["contentType"]["referenceKey"], "FAQ");
    vec![search, list, view]
}

#[tokio::test]
async fn the_digital_assistant_sample_logs_in_searches_lists_and_views_across_an_expiry() {
    let env = answering().await;
    let logins = env.simulator().total_logins();
    // Its integration user is the caller's name and key: no code change.
    let token = da_token(&env, "helpdesk", HELPDESK_KEY).await;
    assert!(token.starts_with("kmp1."), "{token}");
    assert!(
        env.simulator().requests().is_empty(),
        "the login reached nothing upstream"
    );
    assert_eq!(env.simulator().total_logins(), logins);

    for a in da_search_list_view(&env, &token).await {
        assert_eq!(
            acted_for(&env, &a),
            ("account", Some("okcsuser".into())),
            "helpdesk → agent"
        );
    }
    for r in env.simulator().requests() {
        let k = r.kmauthtoken.unwrap();
        assert_eq!(k["interfaceId"], 1, "the number stays a number");
        assert_ne!(k["integrationUserToken"], token.as_str());
        assert_eq!(r.headers["content-type"], "application/json");
    }

    // Every upstream token expires: kmproxy logs in again and replays; the
    // sample's placeholder goes on working.
    env.simulator().expire_all_tokens();
    for a in da_search_list_view(&env, &token).await {
        assert_eq!(acted_for(&env, &a), ("account", Some("okcsuser".into())));
    }
    assert!(env.simulator().total_logins() > logins, "kmproxy logged in again");
    assert!(!upstream_text(&env).contains("kmp1."), "no placeholder went upstream");
    env.stop().await;
}

#[tokio::test]
async fn a_stale_placeholder_is_an_expired_session_and_the_samples_relogin_recovers() {
    let env = answering().await;
    // One minted by another kmproxy (or this one before a restart), and
    // one minted here for a caller whose key has since changed.
    let config = Arc::clone(&env.app.live().config);
    let foreign = Placeholders::new().mint(&config, Binding::Caller(0), Duration::from_secs(3600));
    let mut rekeyed_config = (*config).clone();
    rekeyed_config.callers[0].key_sha256[0] ^= 1;
    let rekeyed = env
        .app
        .placeholders
        .mint(&rekeyed_config, Binding::Caller(0), Duration::from_secs(3600));
    for stale in [foreign, rekeyed] {
        let a = da_call(&env, Method::GET, "/km/api/latest/content", &stale, "").await;
        // What `knowledgeRestRequest` checks before it logs in again.
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(json_of(&a)["error"]["errorCode"], "OK-SESSION0003");
    }
    assert!(
        env.simulator().requests().is_empty(),
        "a stale placeholder reaches nothing upstream"
    );
    let fresh = da_token(&env, "helpdesk", HELPDESK_KEY).await;
    let a = da_call(&env, Method::GET, "/km/api/latest/content", &fresh, "").await;
    assert_eq!(a.status, StatusCode::OK);
    env.stop().await;
}

/// Collects every log line kmproxy writes (all levels) while `f` runs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// The Customer Portal's typed `kmauthtoken` (`OkcsApi`).
fn cp_kmauthtoken(integration: &str, user: &str) -> String {
    json!({
        "siteName": SITE, "localeId": "en_US", "interfaceId": 1, "captureAnalytics": true,
        "integrationUserToken": integration, "userToken": user,
        "billableSessionId": "bill-42", "requiresBillable": true, "clientIP": "10.1.2.3",
    })
    .to_string()
}

#[tokio::test]
async fn the_customer_portals_shapes_and_its_user_login_act_as_that_user() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let env = answering().await;
    let host = format!("127.0.0.1:{}", env.proxy.port());
    let plain = [("host", host.as_str()), ("user-agent", ""), ("referer", "")];

    // Its API user login names the caller; then its web user's login (a
    // form), which helpdesk may use (act_as web).
    let integration = da_token(&env, "helpdesk", HELPDESK_KEY).await;
    let kmauth = cp_kmauthtoken(&integration, "");
    let form = format!("userName=webuser&password={CP_USER_PASSWORD}&siteName={SITE}&userExternalType=CONTACT");
    let headers = [
        &plain[..],
        &[
            ("kmauthtoken", kmauth.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
    ]
    .concat();
    let login = env
        .send(Method::POST, "/km/api/v1/auth/authorize", &headers, form)
        .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let session: Value = serde_json::from_str(login.json()["authenticationToken"].as_str().unwrap()).unwrap();
    let user = session["userToken"].as_str().unwrap().to_owned();
    assert!(user.starts_with("kmp1."));
    assert_eq!(login.json()["user"]["externalType"], "CONTACT");

    // A user nobody may use gets no token.
    let stranger = "userName=okcsuser&password=x&siteName=S&userExternalType=CONTACT";
    let refused = env
        .send(Method::POST, "/km/api/v1/auth/authorize", &headers, stranger)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let kmauth = cp_kmauthtoken(&integration, &user);
    let headers = [
        &plain[..],
        &[("kmauthtoken", kmauth.as_str()), ("content-type", "application/json")],
    ]
    .concat();
    let batch =
        r#"{"asynchronous":false,"requests":[{"id":"1","method":"GET","relativeUrl":"content/answers/1000078"}]}"#;
    let a = env.send(Method::POST, "/km/api/v1/batch", &headers, batch).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.json()["responses"][0]["body"]["answerId"], 1000078);
    assert_eq!(acted_for(&env, &a), ("contact", Some("webuser".into())));

    let click =
        "/srt/api/v1/search/answer?priorTransactionId=1&answerId=1000078&highlightFlag=true&trackClickFlag=true";
    let a = env
        .send(Method::POST, click, &headers, r#"{"session":"s1","transactionId":2}"#)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(acted_for(&env, &a), ("contact", Some("webuser".into())));
    // The click-through URL is on kmproxy, and following it works.
    let url = a.json()["url"].as_str().unwrap().to_owned();
    let path = url
        .strip_prefix(&format!("http://{host}"))
        .unwrap_or_else(|| panic!("{url}"));
    let followed = env.send(Method::GET, path, &headers, "").await;
    assert_eq!(followed.status, StatusCode::OK);
    assert_eq!(followed.json()["answerId"], 1000078);

    let sent = env.simulator().requests();
    let k = sent[0].kmauthtoken.as_ref().unwrap();
    assert_eq!(
        (
            &k["billableSessionId"],
            &k["requiresBillable"],
            &k["clientIP"],
            &k["captureAnalytics"]
        ),
        (&json!("bill-42"), &json!(true), &json!("10.1.2.3"), &json!(true))
    );
    assert!(sent[1].query.as_deref().unwrap().contains("trackClickFlag=true"));

    // The placeholders are worthless to another caller (its key decides).
    let other = [&headers[..], &[("x-kmproxy-key", KIOSK_KEY)]].concat();
    let a = env.send(Method::POST, "/km/api/v1/batch", &other, batch).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.error_code(), "OK-SESSION0003");
    assert_eq!(
        env.simulator().requests().len(),
        sent.len(),
        "nothing more went upstream"
    );

    // Nothing of the client's passwords, nor a placeholder, went upstream
    // or into a log line.
    let upstream = upstream_text(&env);
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logged.contains("call"), "the log was captured");
    for secret in [CP_USER_PASSWORD, HELPDESK_KEY, "kmp1."] {
        assert!(!upstream.contains(secret), "{secret} went upstream");
        assert!(!logged.contains(secret), "{secret} was logged");
    }
    env.stop().await;
}

#[tokio::test]
async fn client_logins_identify_a_caller_only_by_its_name_and_key() {
    let env = answering().await;
    let own = da_token(&env, "helpdesk", HELPDESK_KEY).await;
    // The Customer Portal's own API user, a wrong key: placeholders that
    // identify nobody, so their calls use the default principal.
    let nobody = da_token(&env, "apiuser", CP_API_PASSWORD).await;
    let wrong_key = da_token(&env, "helpdesk", "not-the-key").await;
    for (token, key, expect) in [
        (&own, None, ("account", Some("okcsuser".to_owned()))),
        (&nobody, None, ("anonymous", None)),
        (&wrong_key, None, ("anonymous", None)),
        // A caller key header, when present, decides.
        (&own, Some(KIOSK_KEY), ("anonymous", None)),
        (&nobody, Some(HELPDESK_KEY), ("account", Some("okcsuser".to_owned()))),
    ] {
        let kmauth = json!({ "interfaceId": 1, "integrationUserToken": token }).to_string();
        let mut headers = vec![("kmauthtoken", kmauth.as_str())];
        headers.extend(key.map(|k| ("x-kmproxy-key", k)));
        let a = env.get("/km/api/latest/content", &headers).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(acted_for(&env, &a), expect, "{key:?}");
    }
    // A login with a key header that matches no caller is 401, as any call.
    let headers = [("x-kmproxy-key", "nobodys-key"), ("content-type", "application/json")];
    let body = json!({ "login": "helpdesk", "password": HELPDESK_KEY }).to_string();
    let a = env
        .send(Method::POST, "/km/api/v1/auth/integration/authorize", &headers, body)
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(!upstream_text(&env).contains(CP_API_PASSWORD));
    env.stop().await;
}

#[tokio::test]
async fn by_default_client_logins_are_refused_and_reach_nothing() {
    let env = Env::start().await;
    let logins = env.simulator().total_logins();
    let a = da_login(&env, "helpdesk", HELPDESK_KEY).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let form = "userName=okcsuser&password=x&siteName=S&userExternalType=ACCOUNT";
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let a = env
        .send(Method::POST, "/km/api/v1/auth/authorize", &headers, form)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(env.simulator().requests().is_empty());
    assert_eq!(env.simulator().total_logins(), logins);
    env.stop().await;
}

fn hrefs(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(h)) = m.get("href") {
                    out.push(h.clone());
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn links_come_back_on_kmproxy_as_the_client_reached_it_and_can_be_followed() {
    let env = Env::start().await;
    let sim_origin = env.sim.base_url();
    for host in [
        format!("127.0.0.1:{}", env.proxy.port()),
        format!("localhost:{}", env.proxy.port()),
    ] {
        let a = env.get("/km/api/latest/content?limit=3", &[("host", &host)]).await;
        assert_eq!(a.status, StatusCode::OK);
        // It came whole with its head: rewritten at once, with its new exact length.
        assert_eq!(a.headers["content-length"], a.body.len().to_string().as_str());
        let links = hrefs(&a.json());
        assert!(links.len() > 3, "{links:?}");
        for link in links {
            let path = link
                .strip_prefix(&format!("http://{host}"))
                .unwrap_or_else(|| panic!("{link}"));
            let followed = env.get(path, &[("host", &host)]).await;
            assert_eq!(followed.status, StatusCode::OK, "{link}");
            assert!(
                env.simulator().request_for(&followed.headers).is_some(),
                "served upstream"
            );
        }
    }
    // A redirect's Location too.
    let to = format!("{sim_origin}/km/api/latest/content?offset=2");
    let a = env.get(&format!("/km/api/latest/content/redirect?to={to}"), &[]).await;
    assert_eq!(a.status, StatusCode::FOUND);
    assert_eq!(
        a.headers["location"],
        format!("http://{}/km/api/latest/content?offset=2", env.proxy)
    );
    // In every spelling a client would follow to the upstream: the scheme
    // in upper case, scheme-relative, in Location and Content-Location.
    let sim_authority = sim_origin.strip_prefix("http://").unwrap();
    for (location, content_location) in [
        (
            format!("HTTP://{sim_authority}/km/api/latest/content?offset=1"),
            format!("//{sim_authority}/km/api/latest/content/x"),
        ),
        (
            format!("//{sim_authority}/km/api/latest/content?offset=1"),
            format!("Http://{sim_authority}/km/api/latest/content/x"),
        ),
    ] {
        let a = env
            .get(
                &format!("/km/api/latest/content/redirect?to={location}&content_location={content_location}"),
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::FOUND);
        assert_eq!(
            a.headers["location"],
            format!("http://{}/km/api/latest/content?offset=1", env.proxy),
            "{location}"
        );
        assert_eq!(
            a.headers["content-location"],
            format!("http://{}/km/api/latest/content/x", env.proxy),
            "{content_location}"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn a_multi_mib_json_answer_is_rewritten_whole_across_its_pieces() {
    let env = Env::start().await;
    let items = 40_000; // about 5 MiB, in pieces of 65 521 bytes
    let a = env
        .get(&format!("/km/api/latest/content/large?items={items}"), &[])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.len() > 4 << 20, "{}", a.body.len());
    let text = std::str::from_utf8(&a.body).unwrap();
    let proxy = format!("\"http://{}/km/api/latest/", env.proxy);
    assert_eq!(text.matches(&proxy).count(), items + 1, "every link, split or not");
    assert!(!text.contains(&env.sim.base_url()));
    assert_eq!(a.json()["items"].as_array().unwrap().len(), items);
    env.stop().await;
}

#[tokio::test]
async fn a_rewritten_answer_streams_its_first_bytes_before_the_upstream_has_sent_it_all() {
    let env = Env::start().await;
    // 100 000 items (about 13 MiB), of which the simulator sends 1 MB and
    // then nothing: what arrives was not buffered whole.
    let url = env.url("/km/api/latest/content/large?items=100000&stall_after=1000000");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let res = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut got = Vec::new();
    let read = async {
        while got.len() < 900_000 {
            let frame = body.frame().await.unwrap().unwrap();
            got.extend_from_slice(&frame.into_data().unwrap_or_default());
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the first MB arrived");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("{\"items\":[{"));
    assert!(text.contains(&format!(
        "\"http://{}/km/api/latest/content/answers/2000000\"",
        env.proxy
    )));
    assert!(!text.contains(&env.sim.base_url()));
    env.stop().await;
}

#[tokio::test]
async fn with_rewrite_links_off_answers_are_the_upstreams_bytes() {
    let env = Env::builder()
        .config(|c| c.upstream.rewrite_links = false)
        .start()
        .await;
    let path = "/km/api/latest/content?limit=5";
    let a = env.get(path, &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-length"], a.body.len().to_string());
    // The same request, sent to the simulator as kmproxy sent it.
    let r = env.simulator().request_for(&a.headers).unwrap();
    let kmauth = r.headers["kmauthtoken"].to_str().unwrap();
    let host = r.headers["host"].to_str().unwrap();
    let direct = env
        .send_to(
            env.sim.addr,
            Method::GET,
            path,
            &[("kmauthtoken", kmauth), ("host", host)],
            "",
        )
        .await;
    assert_eq!(a.body, direct.body, "byte for byte");
    assert!(hrefs(&a.json()).iter().all(|h| h.starts_with(&env.sim.base_url())));
    env.stop().await;
}

#[tokio::test]
async fn compressed_answers_are_left_as_the_upstream_sent_them() {
    let env = Env::start().await;
    let a = env
        .get("/km/api/latest/content?limit=5", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-encoding"], "gzip");
    let links = hrefs(&json_of(&a));
    assert!(!links.is_empty());
    assert!(links.iter().all(|h| h.starts_with(&env.sim.base_url())), "{links:?}");
    // Without compression, the same answer's links are on kmproxy.
    let a = env.get("/km/api/latest/content?limit=5", &[]).await;
    assert!(hrefs(&a.json())
        .iter()
        .all(|h| h.starts_with(&format!("http://{}", env.proxy))));
    env.stop().await;
}
