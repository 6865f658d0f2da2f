//! CSV records → text columns, with per-record rejects.

use std::sync::Arc;

use arrow::datatypes::Schema;

use super::{Decoded, LinesBefore, Origin, PendingReject, TextColumns};
use crate::spec::CsvOptions;
use crate::{Error, Result};

/// The object's header fields, read by the caller (or why they are unusable).
pub(crate) type HeaderFields = Arc<Result<Vec<String>, String>>;

fn reader_builder(opts: &CsvOptions) -> ::csv::ReaderBuilder {
    let mut b = ::csv::ReaderBuilder::new();
    b.has_headers(false)
        .flexible(true)
        .delimiter(opts.delimiter)
        .quote(opts.quote)
        .double_quote(opts.escape.is_none())
        .escape(opts.escape);
    b
}

/// The first line holding something else than blanks: (its start, the index after it).
pub(crate) fn header_line(text: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while at < text.len() {
        let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |i| at + i + 1);
        if text[at..end].iter().any(|b| !b.is_ascii_whitespace()) {
            return Some((at, end));
        }
        at = end;
    }
    None
}

/// The fields of a header line, or why it cannot name columns.
pub(crate) fn header_fields(line: &[u8], opts: &CsvOptions) -> Result<Vec<String>, String> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if super::unbalanced_quotes(line, opts) {
        return Err("the header line has an unterminated quote".into());
    }
    let mut rdr = reader_builder(opts).from_reader(line);
    let mut rec = ::csv::ByteRecord::new();
    match rdr.read_byte_record(&mut rec) {
        Ok(true) => Ok(rec
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .collect()),
        Ok(false) => Ok(Vec::new()),
        Err(e) => Err(format!("the header line cannot be read: {e}")),
    }
}

/// Maps schema columns to header positions, or explains which are missing.
fn mapping(header: &[String], schema: &Schema) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(schema.fields().len());
    let mut missing = Vec::new();
    for f in schema.fields() {
        match header.iter().position(|h| h == f.name()) {
            Some(i) => out.push(i),
            None => missing.push(f.name().as_str()),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "the header lacks column(s) {} (it has: {})",
            missing.join(", "),
            header.join(", ")
        ))
    }
}

/// Where the records of a text start and how their fields map to the schema's columns.
struct Layout {
    /// Offset of the first record (after any header line).
    start: usize,
    /// Its 0-based line.
    first_line: u64,
    /// Field index of each schema column, or why the header cannot give them (every
    /// record is then rejected with this reason).
    map: Result<Vec<usize>, String>,
    /// Fields per record.
    expected: usize,
}

/// Decodes CSV `text[skip..]` into text columns named after `schema`.
///
/// Without `multiline`, records are lines: a record whose quotes run past its line end
/// (an unterminated quote) is rejected alone and reading resumes at the next line, so
/// one broken quote cannot swallow the records after it.
pub(crate) fn decode(
    text: &[u8],
    skip: usize,
    opts: &CsvOptions,
    schema: &Schema,
    header: Option<HeaderFields>,
    object: &str,
) -> Result<Decoded> {
    let layout = layout(skip, schema, header);
    if let Ok(map) = &layout.map
        && let Some(d) = super::csv_fast::decode(
            text,
            super::csv_fast::Records {
                start: layout.start,
                first_line: layout.first_line,
                map,
                expected: layout.expected,
            },
            opts,
            schema,
            object,
        )
    {
        return Ok(d);
    }
    decode_records(text, layout, opts, schema, object)
}

/// Maps the schema's columns to its fields.
fn layout(skip: usize, schema: &Schema, header: Option<HeaderFields>) -> Layout {
    let (map, expected) = match header {
        None => (
            Ok((0..schema.fields().len()).collect::<Vec<_>>()),
            schema.fields().len(),
        ),
        Some(h) => match h.as_ref() {
            Ok(fields) => (mapping(fields, schema), fields.len()),
            Err(why) => (Err(why.clone()), 0),
        },
    };
    Layout {
        start: skip,
        first_line: 0,
        map,
        expected,
    }
}

/// The general path: record by record with the `csv` crate, each bad record rejected with
/// its reason and the reading going on after it.
fn decode_records(
    text: &[u8],
    layout: Layout,
    opts: &CsvOptions,
    schema: &Schema,
    object: &str,
) -> Result<Decoded> {
    let read = |rdr: &mut ::csv::Reader<&[u8]>, rec: &mut ::csv::ByteRecord| {
        rdr.read_byte_record(rec).map_err(|e| Error::Input {
            object: object.to_string(),
            message: format!("CSV: {e}"),
            source: Some(Box::new(e)),
        })
    };
    let Layout {
        start: mut seg_start,
        first_line: mut seg_line,
        map,
        expected,
    } = layout;
    let mut rec = ::csv::ByteRecord::new();
    let mut out = Collected {
        columns: TextColumns::new(schema),
        origins: Vec::new(),
        rejects: Vec::new(),
        row: 0,
    };
    let null_values: Vec<&[u8]> = opts.null_values.iter().map(|s| s.as_bytes()).collect();
    'segments: while seg_start < text.len() {
        let mut rdr = reader_builder(opts).from_reader(&text[seg_start..]);
        loop {
            if !read(&mut rdr, &mut rec)? {
                break 'segments;
            }
            let (start, end, line) = record_span(text, seg_start, seg_line, &rec, &rdr);
            if !opts.multiline && spans_lines(&text[start as usize..end as usize]) {
                // Reject the record's first line only; resume right after it.
                let nl = memchr::memchr(b'\n', &text[start as usize..])
                    .map_or(text.len(), |i| start as usize + i + 1);
                out.reject_format(start, nl as u64, line, "unterminated quote: the quoted field runs past the end of its line (declare `csv.multiline: true` if fields hold newlines)");
                seg_start = nl;
                seg_line = line + 1;
                continue 'segments;
            }
            if super::unbalanced_quotes(&text[start as usize..end as usize], opts) {
                // A quote opened and never closed runs to the end of the object.
                out.reject_format(
                    start,
                    end,
                    line,
                    "unterminated quote: a quoted field is never closed",
                );
                continue;
            }
            let origin = out.next_origin(start, end, line);
            out.record(&rec, origin, &map, expected, schema, &null_values);
        }
    }
    Ok(Decoded {
        object: object.to_string(),
        batch: out.columns.finish()?,
        origins: out.origins,
        rejects: out.rejects,
        text: bytes::Bytes::new(),
        text_offset: Some(0),
        decompressed: false,
        lines_before: LinesBefore::Known(0),
        bytes_read: 0,
    })
}

/// The record just read: its (start, end) in `text` and its 0-based line.
#[inline]
fn record_span(
    text: &[u8],
    seg_start: usize,
    seg_line: u64,
    rec: &::csv::ByteRecord,
    rdr: &::csv::Reader<&[u8]>,
) -> (u64, u64, u64) {
    let pos = rec.position().cloned().unwrap_or_else(::csv::Position::new);
    let mut start = seg_start as u64 + pos.byte();
    let mut end = seg_start as u64 + rdr.position().byte();
    let mut line = seg_line + pos.line().saturating_sub(1);
    // After a CRLF record the reader's position still points at its `\n`: the
    // record really starts after the leftover line-end bytes.
    while start < end && matches!(text[start as usize], b'\r' | b'\n') {
        line += u64::from(text[start as usize] == b'\n');
        start += 1;
    }
    end = end.max(start);
    (start, end, line)
}

/// Whether a record's bytes hold a line end before their trailing ones.
#[inline]
fn spans_lines(record: &[u8]) -> bool {
    record
        .iter()
        .rev()
        .skip_while(|b| **b == b'\n' || **b == b'\r')
        .any(|b| *b == b'\n')
}

/// What the general path has read so far.
struct Collected {
    columns: TextColumns,
    origins: Vec<Origin>,
    rejects: Vec<PendingReject>,
    /// Records seen, rejected ones included: the next record's row.
    row: u64,
}

impl Collected {
    /// The origin of the next record, which takes the next row.
    #[inline]
    fn next_origin(&mut self, start: u64, end: u64, line: u64) -> Origin {
        let origin = Origin {
            start,
            len: (end - start).min(u32::MAX as u64) as u32,
            line,
            row: self.row,
        };
        self.row += 1;
        origin
    }

    /// Rejects the next record as malformed.
    fn reject_format(&mut self, start: u64, end: u64, line: u64, message: &str) {
        let origin = self.next_origin(start, end, line);
        self.rejects.push(PendingReject {
            origin,
            rule: "format".into(),
            column: None,
            message: message.into(),
        });
    }

    /// Takes a well-formed record: its values into the columns, or a reject saying why not.
    #[inline]
    fn record(
        &mut self,
        rec: &::csv::ByteRecord,
        origin: Origin,
        map: &Result<Vec<usize>, String>,
        expected: usize,
        schema: &Schema,
        null_values: &[&[u8]],
    ) {
        let reject = |rule: &str, column: Option<&str>, message: String| PendingReject {
            origin,
            rule: rule.to_string(),
            column: column.map(str::to_string),
            message,
        };
        let map = match map {
            Ok(m) => m,
            Err(msg) => {
                self.rejects.push(reject("header", None, msg.clone()));
                return;
            }
        };
        if rec.len() != expected {
            self.rejects.push(reject(
                "format",
                None,
                format!("expected {expected} fields, found {}", rec.len()),
            ));
            return;
        }
        let mut values: Vec<Option<&str>> = Vec::with_capacity(map.len());
        for (f, &i) in schema.fields().iter().zip(map) {
            let raw = rec.get(i).unwrap_or_default();
            if null_values.contains(&raw) {
                values.push(None);
                continue;
            }
            match std::str::from_utf8(raw) {
                Ok(s) => values.push(Some(s)),
                Err(e) => {
                    self.rejects.push(reject(
                        "encoding",
                        Some(f.name()),
                        format!("invalid UTF-8 at byte {} of the field", e.valid_up_to()),
                    ));
                    return;
                }
            }
        }
        self.columns.push(&values);
        self.origins.push(origin);
    }
}
