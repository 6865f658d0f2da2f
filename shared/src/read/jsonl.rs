//! JSON lines → text columns, with per-record rejects.

use arrow::datatypes::Schema;
use serde_json::Value;

use super::{Decoded, LinesBefore, Origin, PendingReject, TextColumns};
use crate::Result;

/// Decodes JSON lines in `text[skip..]`; blank lines are not records.
pub(crate) fn decode(text: &[u8], skip: usize, schema: &Schema) -> Result<Decoded> {
    let mut columns = TextColumns::new(schema);
    let mut origins = Vec::new();
    let mut rejects = Vec::new();
    let mut row = 0u64;
    let mut line_no = 0u64;
    let mut at = skip;
    let mut texts: Vec<Option<String>> = Vec::with_capacity(schema.fields().len());
    while at < text.len() {
        let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |i| at + i + 1);
        let line = &text[at..end];
        let origin = Origin {
            start: at as u64,
            len: (end - at).min(u32::MAX as usize) as u32,
            line: line_no,
            row,
        };
        at = end;
        line_no += 1;
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        row += 1;
        let reject = |rule: &str, column: Option<&str>, message: String| PendingReject {
            origin,
            rule: rule.to_string(),
            column: column.map(str::to_string),
            message,
        };
        let obj = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => o,
            Ok(other) => {
                rejects.push(reject(
                    "format",
                    None,
                    format!("expected a JSON object, found {}", kind(&other)),
                ));
                continue;
            }
            Err(e) => {
                let rule = if std::str::from_utf8(body).is_err() {
                    "encoding"
                } else {
                    "format"
                };
                rejects.push(reject(rule, None, format!("invalid JSON: {e}")));
                continue;
            }
        };
        texts.clear();
        let mut bad = None;
        for f in schema.fields() {
            match obj.get(f.name()) {
                None | Some(Value::Null) => texts.push(None),
                Some(Value::String(s)) => texts.push(Some(s.clone())),
                Some(Value::Bool(b)) => texts.push(Some(b.to_string())),
                Some(Value::Number(n)) => texts.push(Some(n.to_string())),
                Some(other) => {
                    bad = Some(reject(
                        "type",
                        Some(f.name()),
                        format!("expected a {} value, found {}", f.data_type(), kind(other)),
                    ));
                    break;
                }
            }
        }
        match bad {
            Some(r) => rejects.push(r),
            None => {
                let values: Vec<Option<&str>> = texts.iter().map(|t| t.as_deref()).collect();
                columns.push(&values);
                origins.push(origin);
            }
        }
    }
    Ok(Decoded {
        object: String::new(),
        batch: columns.finish()?,
        origins,
        rejects,
        text: bytes::Bytes::new(),
        text_offset: Some(0),
        lines_before: LinesBefore::Known(0),
        bytes_read: 0,
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
