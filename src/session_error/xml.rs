//! Oracle's XML error documents: a root element `<error>` whose child
//! `<errorCode>` holds the code. Read with an XML parser (quick-xml, no
//! entity expansion, no DTD processing), so only that element's text counts:
//! an HTML page, a `<title>` holding `<errorCode>…` as escaped text, or an
//! `<errorCode>` nested deeper than the root's children never does.

use std::borrow::Cow;

use quick_xml::events::Event;
use quick_xml::Reader;

/// The code of an XML error document, or `None` when `text` is not one.
/// A document cut short after its `<errorCode>` still yields the code (only
/// a prefix of a long answer is read).
pub fn code(text: &[u8]) -> Option<Cow<'_, str>> {
    let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
    let mut reader = Reader::from_reader(text);
    reader.config_mut().check_end_names = true;
    if !at_error_root(&mut reader)? {
        return None;
    }
    let mut depth = 1usize;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if depth == 1 && e.local_name().as_ref() == b"errorCode" => {
                return element_text(&mut reader);
            }
            Event::Start(_) => depth += 1,
            Event::End(_) if depth == 1 => return None, // </error>
            Event::End(_) => depth -= 1,
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Reads the prolog; true when the root element is `<error>` (not empty).
fn at_error_root(reader: &mut Reader<&[u8]>) -> Option<bool> {
    loop {
        match reader.read_event().ok()? {
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            Event::Start(e) => return Some(e.local_name().as_ref() == b"error"),
            _ => return Some(false),
        }
    }
}

/// The trimmed text of the element just opened, up to its end tag; `None`
/// when it holds markup or an entity other than XML's predefined ones.
fn element_text<'a>(reader: &mut Reader<&'a [u8]>) -> Option<Cow<'a, str>> {
    let mut out: Option<Cow<'a, str>> = None;
    loop {
        let piece: Cow<'a, str> = match reader.read_event().ok()? {
            Event::Text(t) => t.decode().ok()?,
            Event::CData(c) => c.decode().ok()?,
            Event::GeneralRef(r) => match r.resolve_char_ref().ok()? {
                Some(ch) => Cow::Owned(ch.to_string()),
                None => Cow::Borrowed(quick_xml::escape::resolve_predefined_entity(&r.decode().ok()?)?),
            },
            Event::End(_) => return Some(trim(out.unwrap_or_default())),
            _ => return None,
        };
        out = Some(match out {
            None => piece,
            Some(prev) => Cow::Owned(prev.into_owned() + &piece),
        });
    }
}

fn trim(s: Cow<'_, str>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<String> {
        code(s.as_bytes()).map(Cow::into_owned)
    }

    #[test]
    fn oracle_documents() {
        let oracle = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><error><title>Session Token has expired</title>\
                      <errorCode>OK-SESSION0003</errorCode><type>VALIDATION</type></error>";
        assert_eq!(c(oracle).as_deref(), Some("OK-SESSION0003"));
        assert_eq!(
            c("<error>\n <errorCode>\n OK-GEN0003 </errorCode>").as_deref(),
            Some("OK-GEN0003")
        );
        assert_eq!(
            c("<ns:error xmlns:ns='u'><ns:errorCode>OK-GEN&#48;003</ns:errorCode></ns:error>").as_deref(),
            Some("OK-GEN0003")
        );
        assert_eq!(
            c("<!-- x --><error><detail><a/></detail><errorCode><![CDATA[OK-GEN0003]]></errorCode></error>").as_deref(),
            Some("OK-GEN0003")
        );
    }

    #[test]
    fn text_that_merely_contains_a_code_never_counts() {
        assert_eq!(
            c("<html><body><errorCode>OK-SESSION0003</errorCode></body></html>"),
            None
        );
        assert_eq!(
            c("<!doctype html><html><p><errorCode>OK-SESSION0003</errorCode></p></html>"),
            None
        );
        assert_eq!(
            c("<error><title>&lt;errorCode&gt;OK-SESSION0003&lt;/errorCode&gt;</title></error>"),
            None
        );
        assert_eq!(
            c("<error><detail><errorCode>OK-SESSION0003</errorCode></detail></error>"),
            None
        );
        assert_eq!(c("see <error><errorCode>OK-SESSION0003</errorCode></error>"), None);
        assert_eq!(c("<error/><errorCode>OK-SESSION0003</errorCode>"), None);
        assert_eq!(c("<error><errorCode>OK-<b>SESSION</b>0003</errorCode></error>"), None);
        assert_eq!(c("<error><errorCode>&custom;</errorCode></error>"), None);
        assert_eq!(c(""), None);
    }
}
