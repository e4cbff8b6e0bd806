//! The content API's articles and content types, shaped like Oracle's
//! `ResultList` and `Content` business objects (see `docs/simulator.md`).
//!
//! Lists answer `{items, hasMore, limit, offset, count, links}`; an article
//! carries `recordId`, `versionId`, `documentId`, `answerId` (a number),
//! `version`, `title`, `locale.recordId`, `contentType {recordId,
//! referenceKey, name}`, `publishDate` and `dateModified` (ISO 8601), and, in
//! `FULL` or `EXTENDED` mode, `xml` (the article body). Every `links[].href`
//! is on the simulator's own origin.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::corpus::{Article, ContentType, ARTICLES, CONTENT_TYPES, LOCALE};
use super::errors::OracleError;
use super::query::Filter;
use super::resources::{Ctx, Doc, Params};

/// How much of an article an answer carries (Oracle's `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Key,
    Data,
    Extended,
    Full,
}

fn mode(params: &Params, default: Mode) -> Result<Mode, OracleError> {
    match params.get("mode").map(str::to_ascii_uppercase).as_deref() {
        None => Ok(default),
        Some("KEY") => Ok(Mode::Key),
        Some("DATA") => Ok(Mode::Data),
        Some("EXTENDED") => Ok(Mode::Extended),
        Some("FULL") => Ok(Mode::Full),
        Some(_) => Err(OracleError::invalid_input("mode must be KEY, DATA, EXTENDED or FULL")),
    }
}

/// `GET content`: the visible articles passing `q`, ordered and paginated.
pub(crate) fn list(ctx: &Ctx<'_>, params: &Params) -> Result<Doc, OracleError> {
    let mode = mode(params, Mode::Data)?;
    let filter = params
        .get("q")
        .map(Filter::parse)
        .transpose()
        .map_err(OracleError::invalid_input)?;
    let mut found: Vec<&Article> = visible(ctx)
        .filter(|a| filter.as_ref().is_none_or(|f| f.matches(a)))
        .collect();
    sort(&mut found, params.get("orderBy"))?;
    let limit = params.number("limit", 20, 100)?.max(1);
    let offset = params.number("offset", 0, u64::from(u32::MAX))?;
    let page: Vec<Value> = found
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|a| article(ctx, a, mode))
        .collect();
    let has_more = offset + limit < found.len() as u64;
    Ok(Doc::ok(
        "content",
        page_of(ctx, "content", params, page, (limit, offset, has_more)),
    ))
}

/// A `ResultList`: items, paging fields and self/next links.
fn page_of(ctx: &Ctx<'_>, tail: &str, params: &Params, items: Vec<Value>, page: (u64, u64, bool)) -> Value {
    let (limit, offset, has_more) = page;
    let at = |offset: u64| {
        let mut pairs: Vec<(&str, String)> = vec![("limit", limit.to_string()), ("offset", offset.to_string())];
        for key in ["q", "orderBy", "mode"] {
            if let Some(v) = params.get(key) {
                pairs.push((key, v.to_owned()));
            }
        }
        let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
        format!("{}?{query}", ctx.km_path(tail))
    };
    let mut links = vec![ctx.link("canonical", &at(offset))];
    if has_more {
        links.push(ctx.link("next", &at(offset + limit)));
    }
    json!({
        "items": items,
        "hasMore": has_more,
        "limit": limit,
        "offset": offset,
        "count": items.len(),
        "links": links,
    })
}

fn visible<'a>(ctx: &'a Ctx<'_>) -> impl Iterator<Item = &'static Article> + 'a {
    ARTICLES.iter().filter(|a| a.visible_to(ctx.principal.kind))
}

/// `orderBy=field[:asc|:desc]`, for the fields a list can be sorted by.
fn sort(found: &mut [&Article], order_by: Option<&str>) -> Result<(), OracleError> {
    let Some(order_by) = order_by else {
        return Ok(());
    };
    let (field, dir) = order_by.split_once(':').unwrap_or((order_by, "asc"));
    let desc = match dir.to_ascii_lowercase().as_str() {
        "asc" => false,
        "desc" => true,
        _ => return Err(OracleError::invalid_input("orderBy direction must be asc or desc")),
    };
    match field {
        "title" => found.sort_by_key(|a| a.title),
        "publishDate" => found.sort_by_key(|a| a.publish_date),
        "dateModified" => found.sort_by_key(|a| a.date_modified),
        "answerId" => found.sort_by_key(|a| a.answer_id),
        "documentId" => found.sort_by_key(|a| a.document_id),
        _ => return Err(OracleError::invalid_input(format!("cannot order by {field}"))),
    }
    if desc {
        found.reverse();
    }
    Ok(())
}

/// One article as the content API shows it in `mode`.
fn article(ctx: &Ctx<'_>, a: &Article, mode: Mode) -> Value {
    let mut v = json!({
        "recordId": a.record_id,
        "versionId": a.version_id,
        "documentId": a.document_id,
        "answerId": a.answer_id,
        "version": a.version,
        "title": a.title,
        "locale": { "recordId": LOCALE },
        "links": [ctx.link("canonical", &ctx.km_path(&format!("content/{}", a.record_id)))],
    });
    if mode >= Mode::Data {
        v["contentType"] = content_type(ctx, a.content_type);
        v["publishDate"] = json!(a.publish_date);
        v["dateModified"] = json!(a.date_modified);
        v["createDate"] = json!(a.publish_date);
        v["published"] = json!(true);
        v["publishedVersion"] = json!(a.version);
    }
    if mode >= Mode::Extended {
        v["xml"] = json!(a.xml());
    }
    v
}

fn content_type(ctx: &Ctx<'_>, t: &ContentType) -> Value {
    json!({
        "recordId": t.record_id,
        "referenceKey": t.reference_key,
        "name": t.name,
        "links": [ctx.link("canonical", &ctx.km_path(&format!("contentTypes/{}", t.record_id)))],
    })
}

/// `GET content/answers/{answerId}`.
pub(crate) fn by_answer_id(ctx: &Ctx<'_>, params: &Params, id: &str) -> Result<Doc, OracleError> {
    one(ctx, params, |a| a.answer_id.to_string() == id)
}

/// `GET content/docId/{documentId}`.
pub(crate) fn by_document_id(ctx: &Ctx<'_>, params: &Params, id: &str) -> Result<Doc, OracleError> {
    one(ctx, params, |a| a.document_id.eq_ignore_ascii_case(id))
}

/// `GET content/{recordId}`.
pub(crate) fn by_record_id(ctx: &Ctx<'_>, params: &Params, id: &str) -> Result<Doc, OracleError> {
    one(ctx, params, |a| a.record_id.eq_ignore_ascii_case(id))
}

/// The one visible article `pick` chooses, in `FULL` mode by default; none is
/// Oracle's `OKDOM-GEN0002` (what the Digital Assistant sample checks).
fn one(ctx: &Ctx<'_>, params: &Params, pick: impl Fn(&Article) -> bool) -> Result<Doc, OracleError> {
    let mode = mode(params, Mode::Full)?;
    let found = visible(ctx).find(|a| pick(a)).ok_or_else(article_not_found)?;
    Ok(Doc::ok("content", article(ctx, found, mode)))
}

fn article_not_found() -> OracleError {
    OracleError {
        status: StatusCode::NOT_FOUND,
        title: "The requested content was not found",
        code: "OKDOM-GEN0002",
        kind: "VALIDATION",
        detail: None,
        retry_after: None,
        shape: super::errors::Shape::Object,
    }
}

/// `GET contentTypes`.
pub(crate) fn content_types(ctx: &Ctx<'_>, params: &Params) -> Doc {
    let items: Vec<Value> = CONTENT_TYPES.iter().map(|t| content_type(ctx, t)).collect();
    let limit = items.len() as u64;
    Doc::ok(
        "contentTypes",
        page_of(ctx, "contentTypes", params, items, (limit, 0, false)),
    )
}

/// `GET contentTypes/{recordId}`: the target of each content type's link.
pub(crate) fn content_type_by_id(ctx: &Ctx<'_>, id: &str) -> Result<Doc, OracleError> {
    let t = CONTENT_TYPES
        .iter()
        .find(|t| t.record_id.eq_ignore_ascii_case(id))
        .ok_or_else(article_not_found)?;
    Ok(Doc::ok("contentType", content_type(ctx, t)))
}

/// A write (`POST content`, `PUT`/`PATCH`/`DELETE content/{id}`, ...):
/// accepted and not stored. Answers the key of the record written (a new one
/// for a `POST` to `content`), so the caller gets an Oracle-shaped body.
pub(crate) fn write(ctx: &Ctx<'_>, method: &Method, rest: &[&str]) -> Doc {
    let record_id = match (method, rest) {
        (&Method::POST, []) => format!("{:032X}", ctx.request_id),
        (_, [id, ..]) => (*id).to_owned(),
        (_, []) => String::new(),
    };
    let path = ctx.km_path(&format!("content/{record_id}"));
    Doc::ok(
        "content",
        json!({
            "recordId": record_id,
            "versionId": format!("{:032X}", ctx.request_id),
            "links": [ctx.link("canonical", &path)],
        }),
    )
}
