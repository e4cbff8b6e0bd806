//! Resources in XML, for a client whose `Accept` asks for it: a mechanical
//! rendering of the JSON document. Each object field becomes an element of
//! the same name, each array element an `<item>` inside the array's
//! element, `null` an empty element, and text (the article's `xml` included)
//! is escaped; fields come in alphabetical order. Oracle's XML schemas were not in our references; this keeps
//! the field names and nesting of the JSON answer.

use serde_json::Value;

use super::errors::xml_escape;

/// `value` as an XML document whose root element is `root`.
pub(crate) fn document(root: &str, value: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    element(&mut out, root, value);
    out
}

fn element(out: &mut String, name: &str, value: &Value) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&xml_escape(s)),
        Value::Array(items) => items.iter().for_each(|v| element(out, "item", v)),
        Value::Object(fields) => fields.iter().for_each(|(k, v)| element(out, k, v)),
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_arrays_and_text() {
        let v = json!({"items": [{"title": "a<b"}], "hasMore": false, "count": 1, "x": null});
        assert_eq!(
            document("content", &v),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><content><count>1</count><hasMore>false</hasMore>\
             <items><item><title>a&lt;b</title></item></items><x></x></content>"
        );
    }
}
