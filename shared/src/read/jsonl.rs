//! JSON lines → text columns, with per-record rejects.

use arrow::datatypes::Schema;
use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;

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
        // Raw values keep a number's text exactly (a decimal(38,0) or a long fraction
        // must not pass through f64); duplicate keys keep the last value.
        let obj = match serde_json::from_slice::<HashMap<String, &RawValue>>(body) {
            Ok(o) => o,
            Err(e) => {
                let (rule, message) = match serde_json::from_slice::<Value>(body) {
                    Ok(other) => (
                        "format",
                        format!("expected a JSON object, found {}", kind(&other)),
                    ),
                    Err(_) if std::str::from_utf8(body).is_err() => {
                        ("encoding", format!("invalid UTF-8 in JSON: {e}"))
                    }
                    Err(_) => ("format", format!("invalid JSON: {e}")),
                };
                rejects.push(reject(rule, None, message));
                continue;
            }
        };
        texts.clear();
        let mut bad = None;
        for f in schema.fields() {
            let Some(raw) = obj.get(f.name().as_str()) else {
                texts.push(None);
                continue;
            };
            let text = raw.get().trim();
            match text.as_bytes().first() {
                None | Some(b'n') => texts.push(None),
                Some(b'"') => match serde_json::from_str::<String>(text) {
                    Ok(s) => texts.push(Some(s)),
                    Err(e) => {
                        bad = Some(reject(
                            "format",
                            Some(f.name()),
                            format!("bad JSON string: {e}"),
                        ));
                        break;
                    }
                },
                Some(b'{' | b'[') => {
                    let what = if text.starts_with('{') {
                        "an object"
                    } else {
                        "an array"
                    };
                    bad = Some(reject(
                        "type",
                        Some(f.name()),
                        format!("expected a {} value, found {what}", f.data_type()),
                    ));
                    break;
                }
                // true, false and numbers: their text, exactly as written.
                Some(_) => texts.push(Some(text.to_string())),
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
        decompressed: false,
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
