//! The fast path of CSV decoding: clean text straight into typed columns.
//!
//! Most input is clean. For it, splitting every record into text columns and casting
//! them afterwards costs about twice what parsing the fields in place does. This path
//! splits records with `csv-core` and parses each field into its column's type directly,
//! but only accepts a strict subset of what the general path ([`super::csv::decode`])
//! accepts: plain integers, plain decimals within precision and scale, plain floats,
//! `YYYY-MM-DD` dates, `true`/`false`, valid UTF-8 text, null markers. For every value of
//! that subset both paths give the same result; anything else in a segment (a value
//! with padding, a wrong field count, a quote across lines, a value that does not parse)
//! makes the whole segment go the general way, which rejects and explains record by
//! record. So the fast path changes speed, never results.

use super::typed::{Column, finish_batch, new_columns, parses};
use super::{Decoded, LinesBefore, Origin};
use crate::spec::CsvOptions;
use arrow::datatypes::Schema;
use csv_core::{ReadRecordResult, ReaderBuilder};

#[cfg(test)]
use {
    super::typed::{date, decimal, float, int},
    arrow::datatypes::{DataType, Field},
};

/// Where the records of a text start and how their fields map to the schema's columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Records<'a> {
    /// Offset of the first record (after any header).
    pub start: usize,
    /// Its 0-based line.
    pub first_line: u64,
    /// Field index of each schema column.
    pub map: &'a [usize],
    /// Fields per record.
    pub expected: usize,
}

/// Decodes `text[start..]` (records only, the header already skipped) into columns of the
/// schema's types where the fast path parses them and text elsewhere; `None` when anything
/// in it needs the general path.
pub(crate) fn decode(
    text: &[u8],
    at: Records<'_>,
    opts: &CsvOptions,
    schema: &Schema,
    object: &str,
) -> Option<Decoded> {
    decode_with(text, at, opts, schema, object, true)
}

/// [`decode`], splitting lines itself where it can when `split` (always but in tests
/// comparing both ways), with csv-core otherwise.
fn decode_with(
    text: &[u8],
    at: Records<'_>,
    opts: &CsvOptions,
    schema: &Schema,
    object: &str,
    split: bool,
) -> Option<Decoded> {
    let null_values: Vec<&[u8]> = opts.null_values.iter().map(|s| s.as_bytes()).collect();
    // One record per line on this path: the line count bounds the rows exactly. Text
    // columns start at 8 bytes a row, all of them together at most the segment's size.
    let capacity = memchr::memchr_iter(b'\n', &text[at.start..]).count() + 1;
    let text_columns = schema
        .fields()
        .iter()
        .filter(|f| !parses(f.data_type()))
        .count()
        .max(1);
    let text_bytes = (capacity * 8).min((text.len() - at.start) / text_columns);
    let mut columns = new_columns(schema, capacity, text_bytes);
    if split && memchr::memchr(b'\r', &text[at.start..]).is_none() {
        match split_lines(text, at, opts, &null_values, &mut columns) {
            Split::Read(origins) => return finish(columns, origins, schema, object),
            Split::Refused => return None,
            Split::Unsure => columns = new_columns(schema, capacity, text_bytes),
        }
    }
    let origins = split_with_csv_core(text, at, opts, &null_values, &mut columns, capacity)?;
    finish(columns, origins, schema, object)
}

/// Splits the records of a text with csv-core into `columns`: their origins, or `None`
/// when a record needs the general path.
fn split_with_csv_core(
    text: &[u8],
    at: Records<'_>,
    opts: &CsvOptions,
    null_values: &[&[u8]],
    columns: &mut [Column],
    capacity: usize,
) -> Option<Vec<Origin>> {
    let Records {
        start,
        first_line,
        map,
        expected,
    } = at;
    let mut origins = Vec::with_capacity(capacity);
    let mut line = first_line;
    let mut ends = vec![0usize; expected.max(1) + 1];
    let mut rdr = ReaderBuilder::new()
        .delimiter(opts.delimiter)
        .quote(opts.quote)
        .double_quote(opts.escape.is_none())
        .escape(opts.escape)
        .build();
    let mut out = vec![0u8; 4096];
    let mut pos = start;
    loop {
        let rec_start = pos;
        let (mut outlen, mut endlen) = (0, 0);
        let got = loop {
            let (res, nin, nout, nend) =
                rdr.read_record(&text[pos..], &mut out[outlen..], &mut ends[endlen..]);
            pos += nin;
            outlen += nout;
            endlen += nend;
            match res {
                // The next call passes the rest, empty at the end: csv-core reads an empty
                // input as its end.
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => return None,
                ReadRecordResult::Record => break true,
                ReadRecordResult::End => break false,
            }
        };
        if !got {
            break;
        }
        // Blank lines before a record are consumed with it: the record starts after them.
        let mut s = rec_start;
        while s < pos && matches!(text[s], b'\r' | b'\n') {
            line += u64::from(text[s] == b'\n');
            s += 1;
        }
        let raw = &text[s..pos];
        let body = {
            let mut b = raw;
            while let [rest @ .., b'\n' | b'\r'] = b {
                b = rest;
            }
            b
        };
        // A record is one line here: a quote across lines, or left open at the end,
        // is the general path's to reject.
        // A quote left open in the text's last record runs to its end (the text ends at a
        // line end, so csv-core returns it with the newline inside the field); anywhere
        // else an open quote swallows a line end, caught just above. A lone CR (not CRLF)
        // ends a record without a `\n`: line numbers are the general path's to count.
        let lone_cr = raw.last() == Some(&b'\r') && text.get(pos) != Some(&b'\n');
        if memchr::memchr(b'\n', body).is_some()
            || lone_cr
            || (pos >= text.len()
                && memchr::memchr(opts.quote, raw).is_some()
                && super::unbalanced_quotes(raw, opts))
        {
            return None;
        }
        if endlen != expected {
            return None;
        }
        let field = |k: usize| {
            let from = if k == 0 { 0 } else { ends[k - 1] };
            &out[from..ends[k]]
        };
        if !push_record(columns, map, null_values, field) {
            return None;
        }
        origins.push(Origin {
            start: s as u64,
            len: raw.len().min(u32::MAX as usize) as u32,
            line,
            row: origins.len() as u64,
        });
        line += u64::from(raw.last() == Some(&b'\n'));
    }
    Some(origins)
}

/// What [`split_lines`] made of a text.
enum Split {
    /// Every record read: their origins.
    Read(Vec<Origin>),
    /// A record outside the fast path's subset (a field count or a value): the general
    /// path's, as csv-core's split would find too.
    Refused,
    /// A line this split does not handle (see [`split_line`]): csv-core's to split.
    Unsure,
}

/// Splits the records of a text without CRs line by line ([`split_line`]) into `columns`,
/// without copying fields out as csv-core does and in about a third less time.
fn split_lines(
    text: &[u8],
    at: Records<'_>,
    opts: &CsvOptions,
    null_values: &[&[u8]],
    columns: &mut [Column],
) -> Split {
    let mut origins = Vec::new();
    let mut fields: Vec<(usize, usize)> = Vec::with_capacity(at.expected + 1);
    let mut line = at.first_line;
    let mut pos = at.start;
    while pos < text.len() {
        let end = memchr::memchr(b'\n', &text[pos..]).map_or(text.len(), |i| pos + i);
        let next = (end + 1).min(text.len());
        let body = &text[pos..end];
        if body.is_empty() {
            // A blank line is no record.
            line += 1;
            pos = next;
            continue;
        }
        if split_line(body, opts, &mut fields).is_none() {
            return Split::Unsure;
        }
        if fields.len() != at.expected
            || !push_record(columns, at.map, null_values, |k| {
                let (from, to) = fields[k];
                &body[from..to]
            })
        {
            return Split::Refused;
        }
        origins.push(Origin {
            start: pos as u64,
            len: (next - pos).min(u32::MAX as usize) as u32,
            line,
            row: origins.len() as u64,
        });
        line += u64::from(end < text.len());
        pos = next;
    }
    Split::Read(origins)
}

/// The fields of one line (no line end in it) as (start, end) ranges, split exactly as
/// csv-core splits them, for the plain cases only: fields without a quote, and quoted
/// fields closed right before a delimiter or the line's end, with no quote or escape
/// inside. `None` for anything else (a doubled quote, a quote in an unquoted field, text
/// after a closing quote, a quote open at the line's end).
fn split_line(line: &[u8], opts: &CsvOptions, fields: &mut Vec<(usize, usize)>) -> Option<()> {
    let (delim, quote) = (opts.delimiter, opts.quote);
    fields.clear();
    let mut i = 0;
    loop {
        if line.get(i) == Some(&quote) {
            let close = i + 1 + memchr::memchr(quote, &line[i + 1..])?;
            if opts
                .escape
                .is_some_and(|e| memchr::memchr(e, &line[i + 1..close]).is_some())
            {
                return None;
            }
            fields.push((i + 1, close));
            match line.get(close + 1) {
                None => return Some(()),
                Some(&b) if b == delim => i = close + 2,
                Some(_) => return None,
            }
        } else {
            let mut end = i;
            while end < line.len() && line[end] != delim {
                if line[end] == quote {
                    return None;
                }
                end += 1;
            }
            fields.push((i, end));
            if end == line.len() {
                return Some(());
            }
            i = end + 1;
        }
    }
}

/// Appends one record's fields (`field(k)`, the record's `k`-th) to the columns they map
/// to; `false` when a value is outside the fast path's subset.
fn push_record<'f>(
    columns: &mut [Column],
    map: &[usize],
    null_values: &[&[u8]],
    field: impl Fn(usize) -> &'f [u8],
) -> bool {
    columns.iter_mut().zip(map).all(|(c, &i)| {
        let v = field(i);
        c.push((!null_values.contains(&v)).then_some(v))
    })
}

/// The decoded segment from its columns.
fn finish(
    mut columns: Vec<Column>,
    origins: Vec<Origin>,
    schema: &Schema,
    object: &str,
) -> Option<Decoded> {
    let batch = finish_batch(&mut columns, schema, origins.len())?;
    Some(Decoded {
        object: object.to_string(),
        batch,
        origins,
        rejects: Vec::new(),
        text: bytes::Bytes::new(),
        text_offset: Some(0),
        decompressed: false,
        lines_before: LinesBefore::Known(0),
        bytes_read: 0,
    })
}

#[cfg(test)]
mod tests;
