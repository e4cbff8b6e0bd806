//! The search API, shaped like the answers the Customer Portal's mock
//! service replays and the Digital Assistant sample reads (see
//! `docs/simulator.md`):
//!
//! * `search/question?question=...` → `{results: {results: [{name: "ANSWER",
//!   pageNumber, pageMore, pageStart, score, pageSize, unshownResults,
//!   totalResults, resultItems: [...]}], facets: []}, session, transactionId,
//!   priorTransactionId}`; each result item has `type`, `fileType`,
//!   `answerId` (number), `globalAnswerId` (the article's answer id as a
//!   string), `docId`, `score`, `title {url, type, snippets: [{text, level}]}`
//!   where `url` is `IM:{contentType}:...` (the sample reads the content
//!   type from it), `link`, `clickThroughLink`, `highlightedLink` and
//!   `textElements`. No match: `results.results` is empty.
//! * `search/initialScreen` → a new search session, no results.
//! * `search/answer?answerId=...&priorTransactionId=...` (the click-through
//!   `trackClickFlag=true`, `highlightFlag=true`) → `{session,
//!   transactionId, priorTransactionId, url, documentType, title, answerId}`.
//!
//! Matching is word overlap with the title (twice the weight) and body,
//! over the articles the principal may see; ties go to the lower answer id.

use serde_json::{json, Value};

use super::corpus::{Article, ARTICLES};
use super::errors::OracleError;
use super::resources::{Ctx, Doc, Params};

/// Words too common to count as a match.
const STOP_WORDS: [&str; 12] = [
    "the", "and", "how", "can", "what", "why", "for", "you", "your", "my", "do", "is",
];

/// The session fields every search answer carries: the session the caller
/// sent in its JSON body (else a new one), and transaction ids.
fn session(ctx: &Ctx<'_>, body: &[u8]) -> (String, Value, Value) {
    let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let session = match &sent["session"] {
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => format!(
            "{:016x}-sim-{:08x}",
            ctx.request_id.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ctx.request_id
        ),
    };
    let prior = match &sent["transactionId"] {
        Value::Null => json!(ctx.request_id.saturating_sub(1)),
        v => v.clone(),
    };
    (session, json!(ctx.request_id), prior)
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.len() > 1 && !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

fn score(query: &[String], a: &Article) -> usize {
    let title = words(a.title);
    let body = words(a.body);
    query
        .iter()
        .map(|w| 2 * usize::from(title.contains(w)) + usize::from(body.contains(w)))
        .sum()
}

/// `search/question`.
pub(crate) fn question(ctx: &Ctx<'_>, params: &Params, body: &[u8]) -> Result<Doc, OracleError> {
    let question = params
        .get("question")
        .ok_or_else(|| OracleError::invalid_input("question is required"))?;
    let query = words(question);
    let mut hits: Vec<(usize, &Article)> = ARTICLES
        .iter()
        .filter(|a| a.visible_to(ctx.principal.kind))
        .map(|a| (score(&query, a), a))
        .filter(|(s, _)| *s > 0)
        .collect();
    hits.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.answer_id.cmp(&y.1.answer_id)));
    let best = hits.first().map_or(1, |h| h.0) as f64;
    let items: Vec<Value> = hits
        .iter()
        .map(|(s, a)| result_item(ctx, a, *s as f64 / best))
        .collect();
    let groups = if items.is_empty() {
        vec![]
    } else {
        vec![json!({
            "name": "ANSWER", "pageNumber": 0, "pageMore": 0, "pageStart": 0, "score": 1.0,
            "pageSize": items.len(), "unshownResults": 0, "totalResults": items.len(), "resultItems": items,
        })]
    };
    let (session, transaction, prior) = session(ctx, body);
    Ok(Doc::ok(
        "searchResult",
        json!({
            "results": { "results": groups, "facets": [] },
            "session": session,
            "transactionId": transaction,
            "priorTransactionId": prior,
        }),
    ))
}

fn result_item(ctx: &Ctx<'_>, a: &Article, score: f64) -> Value {
    let url = a.im_url();
    let turl: String = serde_urlencoded::to_string([("turl", &url)]).unwrap_or_default();
    let click = |action: u8| {
        format!(
            "?ui_mode=answer&prior_transaction_id={}&iq_action={action}&answer_id={}&{turl}",
            ctx.request_id, a.answer_id
        )
    };
    json!({
        "type": "unstructured",
        "fileType": "CMS-XML",
        "answerId": a.answer_id,
        "globalAnswerId": a.answer_id.to_string(),
        "docId": a.answer_id,
        "score": score,
        "title": { "url": url, "type": "STRING", "snippets": [{ "text": a.title, "level": 0 }] },
        "link": url,
        "clickThroughLink": click(4),
        "highlightedLink": format!("{}#__highlight", click(5)),
        "textElements": [{ "url": url, "type": "STRING", "snippets": [{ "text": a.body, "level": 1 }] }],
    })
}

/// `search/initialScreen`: a new session, nothing searched yet.
pub(crate) fn initial_screen(ctx: &Ctx<'_>, body: &[u8]) -> Doc {
    let (session, transaction, prior) = session(ctx, body);
    Doc::ok(
        "searchResult",
        json!({
            "results": { "results": [], "facets": [] },
            "session": session,
            "transactionId": transaction,
            "priorTransactionId": prior,
        }),
    )
}

/// `search/answer`: the click-through to one result; `url` is the article on
/// the content API, on the simulator's own origin.
pub(crate) fn answer(ctx: &Ctx<'_>, params: &Params, body: &[u8]) -> Result<Doc, OracleError> {
    let id = params
        .get("answerId")
        .ok_or_else(|| OracleError::invalid_input("answerId is required"))?;
    let a = ARTICLES
        .iter()
        .filter(|a| a.visible_to(ctx.principal.kind))
        .find(|a| a.answer_id.to_string() == id)
        .ok_or_else(OracleError::not_found)?;
    let (session, transaction, prior) = session(ctx, body);
    let url = format!("{}/km/api/{}/content/answers/{}", ctx.origin, ctx.version, a.answer_id);
    Ok(Doc::ok(
        "searchAnswer",
        json!({
            "session": session,
            "transactionId": transaction,
            "priorTransactionId": prior,
            "url": url,
            "documentType": "CMS-XML",
            "title": a.title,
            "answerId": a.answer_id,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_drop_stop_words_and_punctuation() {
        assert_eq!(words("How do I reset my Password?"), ["reset", "password"]);
    }

    #[test]
    fn title_words_weigh_more_than_body_words() {
        let q = words("reset password");
        assert!(score(&q, &ARTICLES[1]) > score(&q, &ARTICLES[7]));
        assert_eq!(score(&words("zebra"), &ARTICLES[1]), 0);
    }
}
