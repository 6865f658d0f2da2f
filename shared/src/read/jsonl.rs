//! JSON lines → typed columns, with per-record rejects.
//!
//! Each line is read in one pass by a scanner for flat objects ([`scan`]) that locates the
//! schema's fields and checks the whole line against JSON's grammar, then each field's
//! value text goes straight into its typed column ([`super::typed`]): numbers from their
//! text exactly as written (a `decimal(38,0)` or a long fraction never passes through
//! `f64`), strings with their escapes decoded. No value tree, no per-line allocation.
//!
//! A line the scanner does not read (invalid JSON anywhere, also inside a field the schema
//! does not name; an escaped key; a lone surrogate; an object in a scalar field) or a value
//! outside the typed subset (`"two"` or `6.5` in an int64 column, padding, an exponent in a
//! decimal) takes the general way, line by line: serde_json reads it as before, and its
//! values are converted exactly as [`crate::transform::conform`] converts text. So the fast
//! path changes speed, never results: the same rows, values, rules, messages and origins.
//!
//! Why not a crate: arrow-json's `Decoder` (59.3) reads exact decimals from a number's
//! text and can skip unknown fields, but it decodes a batch or fails it: one bad line
//! anywhere fails its neighbours, with no per-record reject, so every batch would still
//! need this fallback; and what converts into what (strings into numbers, numbers into
//! text with `coerce_primitive`) follows its own rules rather than the cast's. simd-json
//! and sonic-rs build a tape or tree of every value, unknown fields included, that is
//! then walked again. Locating a few known keys in flat lines is simpler and cheaper by
//! hand (about 0.8 CPU-s for 2.2 GB of TPC-H lineitem), and keeps the general path's
//! semantics by construction. The only SIMD is through crates that dispatch on the CPU
//! at run time (memchr, simdutf8); string scanning goes eight bytes at a time in safe
//! code. No `unsafe`.

mod scan;

use std::collections::HashMap;

use arrow::array::Array;
use arrow::datatypes::{DataType, Schema};
use serde_json::Value;
use serde_json::value::RawValue;

use super::typed::{self, Column, built_type, cast_text, unconverted};
use super::{Decoded, LinesBefore, Origin, PendingReject};
use crate::{Error, Result};
use scan::{Scanner, Slot};

/// Decodes JSON lines in `text[skip..]`; blank lines are not records.
pub(crate) fn decode(text: &[u8], skip: usize, schema: &Schema, object: &str) -> Result<Decoded> {
    let records = &text[skip.min(text.len())..];
    // One record per line at most: the line count bounds the rows.
    let capacity = memchr::memchr_iter(b'\n', records).count() + 1;
    let text_columns = schema
        .fields()
        .iter()
        .filter(|f| built_type(f.data_type()) == DataType::Utf8)
        .count()
        .max(1);
    let mut columns = typed::new_columns(schema, capacity, records.len() / text_columns);
    // Most segments are valid UTF-8 as a whole: one check for all their lines.
    let all_utf8 = simdutf8::basic::from_utf8(records).is_ok();
    let mut scanner = Scanner::new(schema);
    let mut slots = vec![Slot::Missing; schema.fields().len()];
    let mut scratch = Vec::new();
    let mut origins = Vec::with_capacity(capacity);
    let mut rejects = Vec::new();
    let mut row = 0u64;
    let mut line_no = 0u64;
    let mut at = skip;
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
        let rows = origins.len();
        if (all_utf8 || simdutf8::basic::from_utf8(body).is_ok())
            && scanner.scan(body, &mut slots)
            && push_slots(&mut columns, &slots, body, &mut scratch)
        {
            origins.push(origin);
            continue;
        }
        for c in &mut columns {
            c.truncate(rows);
        }
        let reject = match general(body, schema, origin) {
            Ok(values) => push_values(&mut columns, schema, &values, origin, object)?,
            Err(r) => Some(r),
        };
        match reject {
            Some(r) => rejects.push(r),
            None => origins.push(origin),
        }
    }
    let batch =
        typed::finish_batch(&mut columns, schema, origins.len()).ok_or_else(|| Error::Input {
            object: String::new(),
            message: "a decoded text column is not valid UTF-8".into(),
            source: None,
        })?;
    Ok(Decoded {
        object: object.to_string(),
        batch,
        origins,
        rejects,
        text: bytes::Bytes::new(),
        text_offset: Some(0),
        decompressed: false,
        lines_before: LinesBefore::Known(0),
        bytes_read: 0,
    })
}

/// Appends a scanned line's values to the columns; `false` when one is outside the typed
/// subset (the columns then hold part of the line: the caller cuts them back).
#[inline]
fn push_slots(columns: &mut [Column], slots: &[Slot], line: &[u8], scratch: &mut Vec<u8>) -> bool {
    columns.iter_mut().zip(slots).all(|(c, slot)| match *slot {
        Slot::Missing | Slot::Null => c.push(None),
        Slot::True => c.push(Some(b"true")),
        Slot::False => c.push(Some(b"false")),
        Slot::Number(from, to) | Slot::Str(from, to, false) => {
            c.push(Some(&line[from as usize..to as usize]))
        }
        Slot::Str(from, to, true) => {
            scratch.clear();
            scan::unescape(&line[from as usize..to as usize], scratch);
            c.push(Some(scratch))
        }
    })
}

/// Appends a line's values as the general way read them, each converted as
/// [`crate::transform::conform`] converts text; the reject of the first (in schema order)
/// that does not convert, and then nothing is appended.
fn push_values(
    columns: &mut [Column],
    schema: &Schema,
    values: &[Option<String>],
    origin: Origin,
    object: &str,
) -> Result<Option<PendingReject>> {
    let mut converted = Vec::with_capacity(values.len());
    for (f, v) in schema.fields().iter().zip(values) {
        let t = built_type(f.data_type());
        let Some(text) = v.as_deref() else {
            converted.push(None);
            continue;
        };
        if t == DataType::Utf8 {
            converted.push(None);
            continue;
        }
        let one = cast_text(text, &t)?;
        if one.is_null(0) {
            return Ok(Some(PendingReject {
                origin,
                rule: "type".into(),
                column: Some(f.name().clone()),
                message: unconverted(text, f.data_type()),
            }));
        }
        converted.push(Some(one));
    }
    for ((c, v), one) in columns.iter_mut().zip(values).zip(&converted) {
        let pushed = match one {
            Some(a) => c.push_array(a.as_ref()),
            None => c.push(v.as_deref().map(str::as_bytes)),
        };
        if !pushed {
            return Err(Error::Input {
                object: object.to_string(),
                message: "a text column of one segment passed 2 GiB".into(),
                source: None,
            });
        }
    }
    Ok(None)
}

/// The general way: one line read by serde_json into the text of each schema field, or
/// its reject.
fn general(
    body: &[u8],
    schema: &Schema,
    origin: Origin,
) -> std::result::Result<Vec<Option<String>>, PendingReject> {
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
            return Err(reject(rule, None, message));
        }
    };
    let mut texts = Vec::with_capacity(schema.fields().len());
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
                    return Err(reject(
                        "format",
                        Some(f.name()),
                        format!("bad JSON string: {e}"),
                    ));
                }
            },
            Some(b'{' | b'[') => {
                let what = if text.starts_with('{') {
                    "an object"
                } else {
                    "an array"
                };
                return Err(reject(
                    "type",
                    Some(f.name()),
                    format!("expected a {} value, found {what}", f.data_type()),
                ));
            }
            // true, false and numbers: their text, exactly as written.
            Some(_) => texts.push(Some(text.to_string())),
        }
    }
    Ok(texts)
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

#[cfg(test)]
mod tests;
