//! The `q=` filter of content lists, as far as the sample clients use it:
//! `documentId eq 'FAQ12'`, `title likeAny ('*reset*')` (the Digital
//! Assistant sample's FindArticle), and the same grammar for `answerId`,
//! `recordId`, `contentType.referenceKey` and `locale.recordId`, with `eq`,
//! `likeAny` (`*` matches any run of characters, case-insensitive) and `in`,
//! joined by `and`.
//!
//! ```text
//! filter := cond ("and" cond)*
//! cond   := field ("eq" value | "likeAny" list | "in" list)
//! list   := "(" value ("," value)* ")" | value
//! value  := 'text' ('' is a quote) | word
//! ```

use super::corpus::{Article, LOCALE};

/// A parsed `q=`: every condition must hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Filter(Vec<Cond>);

#[derive(Debug, PartialEq, Eq)]
struct Cond {
    field: Field,
    op: Op,
    values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    DocumentId,
    Title,
    AnswerId,
    RecordId,
    ContentType,
    Locale,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    LikeAny,
    In,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Comma,
}

/// Why a `q=` could not be read (the answer's `detail`).
pub(crate) type QueryError = String;

impl Filter {
    /// Parse a `q=` value (already percent- and `+`-decoded).
    pub(crate) fn parse(q: &str) -> Result<Self, QueryError> {
        let mut tokens = tokenize(q)?.into_iter().peekable();
        let mut conds = Vec::new();
        loop {
            conds.push(cond(&mut tokens)?);
            match tokens.next() {
                None => return Ok(Filter(conds)),
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("and") => {}
                Some(t) => return Err(format!("expected `and`, found {t:?}")),
            }
        }
    }

    /// Whether `article` passes every condition.
    pub(crate) fn matches(&self, article: &Article) -> bool {
        self.0.iter().all(|c| c.matches(article))
    }
}

type Tokens = std::iter::Peekable<std::vec::IntoIter<Token>>;

fn cond(tokens: &mut Tokens) -> Result<Cond, QueryError> {
    let field = match tokens.next() {
        Some(Token::Word(w)) => field(&w).ok_or_else(|| format!("unknown field `{w}`"))?,
        t => return Err(format!("expected a field, found {t:?}")),
    };
    let op = match tokens.next() {
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("eq") => Op::Eq,
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("likeAny") => Op::LikeAny,
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("in") => Op::In,
        t => return Err(format!("expected eq, likeAny or in, found {t:?}")),
    };
    let values = if op == Op::Eq {
        vec![value(tokens)?]
    } else {
        list(tokens)?
    };
    Ok(Cond { field, op, values })
}

fn field(name: &str) -> Option<Field> {
    Some(match name {
        "documentId" => Field::DocumentId,
        "title" => Field::Title,
        "answerId" => Field::AnswerId,
        "recordId" => Field::RecordId,
        "contentType.referenceKey" => Field::ContentType,
        "locale.recordId" | "locale" => Field::Locale,
        _ => return None,
    })
}

fn value(tokens: &mut Tokens) -> Result<String, QueryError> {
    match tokens.next() {
        Some(Token::Text(s) | Token::Word(s)) => Ok(s),
        t => Err(format!("expected a value, found {t:?}")),
    }
}

fn list(tokens: &mut Tokens) -> Result<Vec<String>, QueryError> {
    if tokens.peek() != Some(&Token::Open) {
        return Ok(vec![value(tokens)?]);
    }
    tokens.next();
    let mut values = vec![value(tokens)?];
    loop {
        match tokens.next() {
            Some(Token::Comma) => values.push(value(tokens)?),
            Some(Token::Close) => return Ok(values),
            t => return Err(format!("expected `,` or `)`, found {t:?}")),
        }
    }
}

fn tokenize(q: &str) -> Result<Vec<Token>, QueryError> {
    let mut tokens = Vec::new();
    let mut chars = q.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '\'' => {
                chars.next();
                tokens.push(Token::Text(quoted(&mut chars)?));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek().filter(|c| !c.is_whitespace() && !"(),'".contains(**c)) {
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// The rest of a quoted value, after its opening quote; `''` is one quote.
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, QueryError> {
    let mut text = String::new();
    loop {
        match chars.next() {
            Some('\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                text.push('\'');
            }
            Some('\'') => return Ok(text),
            Some(c) => text.push(c),
            None => return Err("unterminated quoted value".to_owned()),
        }
    }
}

impl Cond {
    fn matches(&self, a: &Article) -> bool {
        let answer_id = a.answer_id.to_string();
        let actual = match self.field {
            Field::DocumentId => a.document_id,
            Field::Title => a.title,
            Field::AnswerId => &answer_id,
            Field::RecordId => a.record_id,
            Field::ContentType => a.content_type.reference_key,
            Field::Locale => LOCALE,
        };
        match self.op {
            Op::Eq | Op::In => self.values.iter().any(|v| v.eq_ignore_ascii_case(actual)),
            Op::LikeAny => self
                .values
                .iter()
                .any(|p| glob(&p.to_lowercase(), &actual.to_lowercase())),
        }
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::super::corpus::ARTICLES;
    use super::*;

    fn hits(q: &str) -> Vec<&'static str> {
        let f = Filter::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        ARTICLES
            .iter()
            .filter(|a| f.matches(a))
            .map(|a| a.document_id)
            .collect()
    }

    #[test]
    fn the_digital_assistant_samples_filters() {
        assert_eq!(hits("documentId eq 'FAQ12'"), ["FAQ12"]);
        assert_eq!(hits("title likeAny ('*reset*')"), ["FAQ12"]);
        assert_eq!(hits("title likeAny ('*PASSWORD*', '*locked*')"), ["FAQ12", "FAQ14"]);
        assert!(hits("documentId eq 'nope'").is_empty());
    }

    #[test]
    fn other_fields_in_and_and() {
        assert_eq!(hits("answerId eq 1000079"), ["FAQ13"]);
        assert_eq!(
            hits("contentType.referenceKey in ('SOLUTIONS') and title likeAny 'install*'"),
            ["SO17"]
        );
        assert_eq!(hits("title eq 'it''s'"), Vec::<&str>::new());
    }

    #[test]
    fn malformed_filters_are_refused() {
        for q in [
            "",
            "nofield eq 'x'",
            "title",
            "title eq",
            "title likeAny ('a'",
            "title eq 'x' or",
            "title eq 'x",
        ] {
            assert!(Filter::parse(q).is_err(), "{q}");
        }
    }

    #[test]
    fn glob_matches_runs() {
        assert!(glob("*reset*", "how do i reset my password?"));
        assert!(glob("how*", "how"));
        assert!(!glob("*a*b", "ba"));
        assert!(glob("abc", "abc") && !glob("abc", "abcd"));
    }
}
