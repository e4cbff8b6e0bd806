//! The simulator's search API and batch over real HTTP: the Digital
//! Assistant sample's KnowledgeSearch (`results.results[0].resultItems[]`),
//! the Customer Portal's `OkcsApi` (`search/initialScreen`,
//! `search/answer?...&trackClickFlag=true`) and `POST /km/api/v1/batch`.

mod sim_support;

use http::{Method, StatusCode};
use serde_json::json;
use sim_support::{doc_ids, Site};

#[tokio::test]
async fn search_question_is_read_as_the_digital_assistant_sample_reads_it() {
    let site = Site::start().await;
    // KnowledgeSearch: POST search/question?question=..., body {}.
    let a = site
        .send(
            Method::POST,
            "/srt/api/latest/search/question?question=reset%20my%20password",
            "{}",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let body = a.json();
    let items = body["results"]["results"][0]["resultItems"]
        .as_array()
        .expect("resultItems");
    let first = &items[0];
    let title: String = first["title"]["snippets"]
        .as_array()
        .expect("snippets")
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect();
    assert_eq!(title, "How do I reset my password?");
    assert_eq!(first["globalAnswerId"], "1000078");
    let url = first["title"]["url"].as_str().expect("title.url");
    assert!(
        url.starts_with("IM:FAQ:"),
        "the sample reads the content type from {url}"
    );
    assert!(first["link"].is_string() && first["clickThroughLink"].is_string());
    assert!(first["textElements"][0]["snippets"][0]["text"].is_string());
    assert!(body["session"].is_string() && body["transactionId"].is_u64());
    // GET works too; no match is an empty result list, not an error.
    let none = site.get("/srt/api/v1/search/question?question=zebra").await;
    assert_eq!(none.json()["results"]["results"], json!([]));
}

#[tokio::test]
async fn customer_portal_initial_screen_and_click_through() {
    let site = Site::start().await;
    let screen = site
        .send(
            Method::POST,
            "/srt/api/v1/search/initialScreen",
            r#"{"session":"s1","transactionId":0,"locale":"en-US"}"#,
        )
        .await;
    assert_eq!(screen.status, StatusCode::OK, "{}", screen.text());
    assert_eq!(screen.json()["session"], "s1");
    let path = "/srt/api/v1/search/answer?priorTransactionId=1&answerId=1000078&highlightFlag=true&trackClickFlag=true";
    let click = site
        .send(Method::POST, path, r#"{"session":"s1","transactionId":2}"#)
        .await;
    assert_eq!(click.status, StatusCode::OK, "{}", click.text());
    let body = click.json();
    assert_eq!(
        (body["session"].clone(), body["priorTransactionId"].clone()),
        (json!("s1"), json!(2))
    );
    assert_eq!(
        body["url"],
        format!("{}/km/api/v1/content/answers/1000078", site.origin())
    );
    let recorded = site.handle.sim.request_for(&click.headers).expect("recorded");
    assert!(recorded.query.is_some_and(|q| q.contains("trackClickFlag=true")));
}

#[tokio::test]
async fn batch_answers_each_sub_request_from_the_same_handlers() {
    let site = Site::start().await;
    let batch = json!({"asynchronous": false, "requests": [
        {"id": "1", "method": "GET", "relativeUrl": "content/answers/1000078"},
        {"id": "2", "method": "GET", "relativeUrl": "content?q=title+likeAny+('*email*')&limit=5"},
        {"id": "3", "method": "GET", "relativeUrl": "/srt/api/v1/search/question?question=locked"},
        {"id": "4", "method": "GET", "relativeUrl": "content/answers/42"},
        {"id": "5", "method": "POST", "relativeUrl": "batch", "body": {"requests": []}},
    ]});
    let a = site.send(Method::POST, "/km/api/v1/batch", &batch.to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let responses = a.json()["responses"].as_array().expect("responses").clone();
    let status: Vec<_> = responses
        .iter()
        .map(|r| (r["id"].clone(), r["status"].clone()))
        .collect();
    assert_eq!(
        status,
        [
            (json!("1"), json!(200)),
            (json!("2"), json!(200)),
            (json!("3"), json!(200)),
            (json!("4"), json!(404)),
            (json!("5"), json!(400))
        ]
    );
    assert_eq!(
        responses[0]["body"],
        site.get("/km/api/v1/content/answers/1000078").await.json()
    );
    assert_eq!(doc_ids(&responses[1]["body"]), ["FAQ13"]);
    assert_eq!(
        responses[2]["body"]["results"]["results"][0]["resultItems"][0]["globalAnswerId"],
        "1000080"
    );
    assert_eq!(responses[3]["body"]["error"]["errorCode"], "OKDOM-GEN0002");
    let bad = site.send(Method::POST, "/km/api/v1/batch", "not json").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
