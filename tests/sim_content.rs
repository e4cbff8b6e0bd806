//! The simulator's content API resources over real HTTP, shaped as Oracle's
//! clients read them: the Digital Assistant sample (`oracle/ka-oda-sample`:
//! FindArticle's `q=` filters and `items[].publishDate`, ViewArticle's `xml`
//! and `contentType.referenceKey`), plus paging, XML and links on the
//! simulator's own origin.

mod sim_support;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use sim_support::{doc_ids, Site};

#[tokio::test]
async fn content_list_is_a_result_list_of_articles_with_own_origin_links() {
    let site = Site::start().await;
    let a = site.get("/km/api/latest/content").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let list = a.json();
    assert_eq!(
        (list["hasMore"].clone(), list["limit"].clone(), list["offset"].clone()),
        (json!(false), json!(20), json!(0))
    );
    let items = list["items"].as_array().expect("items");
    assert_eq!(list["count"], items.len());
    assert_eq!(items.len(), 8, "two articles are for console users only");
    for item in items {
        for field in [
            "recordId",
            "versionId",
            "documentId",
            "version",
            "title",
            "publishDate",
            "dateModified",
        ] {
            assert!(item[field].is_string(), "{field} in {item}");
        }
        assert!(item["answerId"].is_u64(), "{item}");
        assert_eq!(item["locale"]["recordId"], "en_US");
        for field in ["recordId", "referenceKey", "name"] {
            assert!(item["contentType"][field].is_string(), "{item}");
        }
        // FindArticle: `publishDate.split('T')[0]`, `documentId.match(/[A-Z]+/i)`.
        assert!(item["publishDate"].as_str().is_some_and(|d| d.contains('T')));
        assert!(item.get("xml").is_none(), "DATA mode has no body");
        let href = item["links"][0]["href"].as_str().expect("href");
        assert_eq!(
            href,
            format!(
                "{}/km/api/latest/content/{}",
                site.origin(),
                item["recordId"].as_str().unwrap_or("")
            )
        );
        assert_eq!(item["links"][0]["rel"], "canonical");
    }
    let link = &list["links"][0];
    assert_eq!(
        (link["rel"].as_str(), link["method"].as_str()),
        (Some("canonical"), Some("GET"))
    );
    assert!(link["href"].as_str().is_some_and(|h| h.starts_with(&site.origin())));
    assert!(!a.text().contains(&site.integration), "no token in an answer");
}

#[tokio::test]
async fn links_follow_the_host_the_caller_used() {
    let site = Site::start().await;
    let km = site.kmauth(None);
    let a = site
        .call(
            Method::GET,
            "/km/api/v1/content?limit=1",
            &[("kmauthtoken", &km), ("host", "kb.example:8443")],
            "",
        )
        .await;
    let list = a.json();
    assert_eq!(
        list["items"][0]["links"][0]["href"],
        format!(
            "http://kb.example:8443/km/api/v1/content/{}",
            list["items"][0]["recordId"].as_str().unwrap_or("")
        )
    );
    assert!(list["links"].as_array().expect("links").iter().all(|l| l["href"]
        .as_str()
        .is_some_and(|h| h.starts_with("http://kb.example:8443/km/api/v1/content?"))));
}

#[tokio::test]
async fn q_filters_of_the_digital_assistant_sample() {
    let site = Site::start().await;
    // FindArticle's own encodings, byte for byte.
    let by_doc = site.get("/km/api/latest/content?q=documentId+eq+'FAQ12'").await;
    assert_eq!(doc_ids(&by_doc.json()), ["FAQ12"], "{}", by_doc.text());
    let by_title = site.get("/km/api/latest/content?q=title+likeAny+('*reset*')").await;
    assert_eq!(doc_ids(&by_title.json()), ["FAQ12"]);
    let none = site.get("/km/api/latest/content?q=documentId+eq+'NOPE1'").await;
    assert_eq!((none.status, doc_ids(&none.json()).len()), (StatusCode::OK, 0));
    let typed = site
        .get("/km/api/latest/content?q=contentType.referenceKey%20eq%20'SOLUTIONS'")
        .await;
    assert_eq!(doc_ids(&typed.json()), ["OR4", "SO17", "SO18"]);
    let bad = site.get("/km/api/latest/content?q=colour+eq+'red'").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["errorCode"], "OK-GEN0001");
}

#[tokio::test]
async fn paging_ordering_and_modes() {
    let site = Site::start().await;
    let first = site.get("/km/api/latest/content?limit=3&offset=0").await.json();
    assert_eq!(
        (first["hasMore"].clone(), first["count"].clone()),
        (json!(true), json!(3))
    );
    let next = first["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["rel"] == "next")
        .expect("next link");
    let next_path = next["href"]
        .as_str()
        .and_then(|h| h.strip_prefix(&site.origin()))
        .expect("own origin");
    let second = site.get(next_path).await.json();
    assert_eq!(second["offset"], 3);
    assert_ne!(doc_ids(&first), doc_ids(&second));
    let last = site.get("/km/api/latest/content?limit=3&offset=6").await.json();
    assert_eq!(
        (last["hasMore"].clone(), last["count"].clone()),
        (json!(false), json!(2))
    );
    let newest = site
        .get("/km/api/latest/content?orderBy=publishDate:desc&limit=1")
        .await
        .json();
    assert_eq!(doc_ids(&newest), ["SO18"]);
    let full = site.get("/km/api/latest/content?limit=1&mode=FULL").await.json();
    assert!(full["items"][0]["xml"].is_string());
    assert_eq!(
        site.get("/km/api/latest/content?mode=HUGE").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        site.get("/km/api/latest/content?orderBy=colour").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn one_article_by_answer_id_record_id_or_document_id_carries_its_xml() {
    let site = Site::start().await;
    // ViewArticle: `content/answers/{id}?mode=EXTENDED`, then `xml` and `contentType.referenceKey`.
    let a = site.get("/km/api/latest/content/answers/1000078?mode=EXTENDED").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let article = a.json();
    assert_eq!(article["documentId"], "FAQ12");
    assert_eq!(article["contentType"]["referenceKey"], "FAQ");
    let xml = article["xml"].as_str().expect("xml");
    assert!(
        xml.starts_with("<FAQ><QUESTION><![CDATA[How do I reset my password?]]></QUESTION><ANSWER><![CDATA["),
        "{xml}"
    );
    assert!(article["publishDate"].is_string() && article["title"].is_string());
    let record = article["recordId"].as_str().expect("recordId");
    let by_record = site.get(&format!("/km/api/v1/content/{record}")).await.json();
    assert_eq!(by_record["answerId"], 1000078);
    assert!(by_record["xml"].is_string(), "FULL by default");
    assert_eq!(
        site.get("/km/api/v1/content/docId/FAQ12").await.json()["recordId"],
        record
    );
    // The not-found code ViewArticle checks.
    let missing = site.get("/km/api/latest/content/answers/42").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["errorCode"], "OKDOM-GEN0002");
}

#[tokio::test]
async fn staff_only_articles_are_for_console_users() {
    let site = Site::start().await;
    let form = "userName=okcsuser&password=Password1&siteName=ORACLE_KNOWLEDGE&userExternalType=ACCOUNT";
    let km = site.kmauth(None);
    let login = site
        .call(
            Method::POST,
            "/km/api/v1/auth/authorize",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("kmauthtoken", &km),
            ],
            form,
        )
        .await;
    let inner: Value =
        serde_json::from_str(login.json()["authenticationToken"].as_str().expect("token")).expect("object");
    let agent = site.kmauth(inner["userToken"].as_str());
    let a = site
        .call(Method::GET, "/km/api/v1/content", &[("kmauthtoken", &agent)], "")
        .await;
    assert_eq!(doc_ids(&a.json()).len(), 10);
    assert_eq!(
        site.handle
            .sim
            .request_for(&a.headers)
            .and_then(|r| r.principal)
            .map(|p| p.kind),
        Some("account")
    );
    assert_eq!(
        site.get("/km/api/v1/content/answers/1000085").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn content_types_is_a_result_list() {
    let site = Site::start().await;
    let a = site.get("/km/api/latest/contentTypes").await.json();
    let keys: Vec<_> = a["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["referenceKey"].clone())
        .collect();
    assert_eq!(keys, [json!("FAQ"), json!("SOLUTIONS")]);
    assert!(a["items"][0]["recordId"].is_string() && a["items"][0]["name"].is_string());
    assert_eq!(a["hasMore"], false);
}

#[tokio::test]
async fn xml_when_accept_asks_for_it() {
    let site = Site::start().await;
    let km = site.kmauth(None);
    let a = site
        .call(
            Method::GET,
            "/km/api/v1/content/answers/1000078",
            &[("kmauthtoken", &km), ("accept", "application/xml")],
            "",
        )
        .await;
    assert_eq!(
        a.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/xml"[..])
    );
    let text = a.text();
    assert!(
        text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><content>"),
        "{text}"
    );
    assert!(
        text.contains("<answerId>1000078</answerId>") && text.contains("<xml>&lt;FAQ&gt;"),
        "{text}"
    );
}
