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

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch,
    RecordBatchOptions, StringArray, UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema};
use csv_core::{ReadRecordResult, ReaderBuilder};

use super::{Decoded, LinesBefore, Origin};
use crate::spec::CsvOptions;

/// Whether the fast path can parse a column of this type itself (others are kept as
/// text and cast by [`crate::transform::conform`], as on the general path).
fn parses(t: &DataType) -> bool {
    match t {
        DataType::Decimal128(p, s) => *s >= 0 && (*s as u8) <= *p,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Date32
        | DataType::Boolean
        | DataType::Utf8 => true,
        _ => false,
    }
}

enum Column {
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, u8, i8),
    Date(Date32Builder),
    Bool(BooleanBuilder),
    /// Raw bytes, checked as UTF-8 once for the whole column when finished.
    Text(BinaryBuilder),
}

fn digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// `-?d+` within `T`'s range (no sign on unsigned types, as `str::parse` reads it).
fn int<T: TryFrom<i128>>(s: &[u8]) -> Option<T> {
    let (neg, body) = match s.strip_prefix(b"-") {
        Some(_) if T::try_from(-1).is_err() => return None,
        Some(b) => (true, b),
        None => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in body {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    let v = i128::from(v);
    T::try_from(if neg { -v } else { v }).ok()
}

fn float<T: std::str::FromStr>(s: &[u8]) -> Option<T> {
    // `-?d+(.d+)?([eE][+-]?d+)?`: read the same by every correctly rounding parser.
    let body = s.strip_prefix(b"-").unwrap_or(s);
    let (mantissa, exp) = match body.iter().position(|b| *b == b'e' || *b == b'E') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let ok_mantissa = match mantissa.iter().position(|b| *b == b'.') {
        Some(i) => digits(&mantissa[..i]) && digits(&mantissa[i + 1..]),
        None => digits(mantissa),
    };
    let ok_exp =
        exp.is_none_or(|e| digits(e.strip_prefix(b"-").or(e.strip_prefix(b"+")).unwrap_or(e)));
    if !(ok_mantissa && ok_exp) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn decimal(s: &[u8], precision: u8, scale: i8) -> Option<i128> {
    let (neg, body) = match s.strip_prefix(b"-") {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (whole, frac) = match body.iter().position(|b| *b == b'.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &body[..0]),
    };
    let scale = scale as usize;
    if !digits(whole)
        || (body.len() > whole.len() && !digits(frac))
        || frac.len() > scale
        || whole.len() > precision as usize - scale
    {
        return None;
    }
    // At most `precision` digits: 18 fit an i64, cheaper to accumulate than an i128.
    let v = if precision <= 18 {
        let mut v: i64 = 0;
        for d in whole.iter().chain(frac) {
            v = v * 10 + i64::from(d - b'0');
        }
        i128::from(v)
    } else {
        let mut v: i128 = 0;
        for d in whole.iter().chain(frac) {
            v = v * 10 + i128::from(d - b'0');
        }
        v
    };
    let v = v * 10i128.pow((scale - frac.len()) as u32);
    Some(if neg { -v } else { v })
}

/// `YYYY-MM-DD`, a valid proleptic Gregorian date, as days since 1970-01-01.
fn date(s: &[u8]) -> Option<i32> {
    if s.len() != 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = &s[r];
        digits(d).then(|| d.iter().fold(0u32, |a, b| a * 10 + u32::from(b - b'0')))
    };
    let (y, m, d) = (n(0..4)? as i32, n(5..7)?, n(8..10)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if d == 0 || d > month_days {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Days since 1970-01-01 of a valid date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = (y - era * 400) as u32;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i32 - 719_468
}

impl Column {
    fn new(t: &DataType, capacity: usize, text_bytes: usize) -> Column {
        match t {
            DataType::Int8 => Column::I8(Int8Builder::with_capacity(capacity)),
            DataType::Int16 => Column::I16(Int16Builder::with_capacity(capacity)),
            DataType::Int32 => Column::I32(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Column::I64(Int64Builder::with_capacity(capacity)),
            DataType::UInt8 => Column::U8(UInt8Builder::with_capacity(capacity)),
            DataType::UInt16 => Column::U16(UInt16Builder::with_capacity(capacity)),
            DataType::UInt32 => Column::U32(UInt32Builder::with_capacity(capacity)),
            DataType::UInt64 => Column::U64(UInt64Builder::with_capacity(capacity)),
            DataType::Float32 => Column::F32(Float32Builder::with_capacity(capacity)),
            DataType::Float64 => Column::F64(Float64Builder::with_capacity(capacity)),
            DataType::Decimal128(p, s) => Column::Dec(
                Decimal128Builder::with_capacity(capacity)
                    .with_data_type(DataType::Decimal128(*p, *s)),
                *p,
                *s,
            ),
            DataType::Date32 => Column::Date(Date32Builder::with_capacity(capacity)),
            DataType::Boolean => Column::Bool(BooleanBuilder::with_capacity(capacity)),
            _ => Column::Text(BinaryBuilder::with_capacity(capacity, text_bytes)),
        }
    }

    /// Appends a value; `false` when it is outside the fast path's subset.
    fn push(&mut self, v: Option<&[u8]>) -> bool {
        macro_rules! put {
            ($b:expr, $parse:expr) => {
                match v {
                    None => {
                        $b.append_null();
                        true
                    }
                    Some(s) => match $parse(s) {
                        Some(x) => {
                            $b.append_value(x);
                            true
                        }
                        None => false,
                    },
                }
            };
        }
        match self {
            Column::I8(b) => put!(b, int::<i8>),
            Column::I16(b) => put!(b, int::<i16>),
            Column::I32(b) => put!(b, int::<i32>),
            Column::I64(b) => put!(b, int::<i64>),
            Column::U8(b) => put!(b, int::<u8>),
            Column::U16(b) => put!(b, int::<u16>),
            Column::U32(b) => put!(b, int::<u32>),
            Column::U64(b) => put!(b, int::<u64>),
            Column::F32(b) => put!(b, float::<f32>),
            Column::F64(b) => put!(b, float::<f64>),
            Column::Dec(b, p, s) => {
                let (p, s) = (*p, *s);
                put!(b, |v| decimal(v, p, s))
            }
            Column::Date(b) => put!(b, date),
            Column::Bool(b) => put!(b, |v: &[u8]| match v {
                b"true" => Some(true),
                b"false" => Some(false),
                _ => None,
            }),
            Column::Text(b) => put!(b, Some),
        }
    }

    /// The column's array; `None` when a text column is not valid UTF-8 (the general path
    /// rejects those records one by one).
    fn finish(&mut self) -> Option<ArrayRef> {
        Some(match self {
            Column::I8(b) => Arc::new(b.finish()),
            Column::I16(b) => Arc::new(b.finish()),
            Column::I32(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::U8(b) => Arc::new(b.finish()),
            Column::U16(b) => Arc::new(b.finish()),
            Column::U32(b) => Arc::new(b.finish()),
            Column::U64(b) => Arc::new(b.finish()),
            Column::F32(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::Dec(b, _, _) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            // One check of the whole column is much cheaper than one per value.
            Column::Text(b) => Arc::new(StringArray::try_from_binary(b.finish()).ok()?),
        })
    }
}

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

/// Empty columns for the schema: its types where the fast path parses them, text elsewhere.
fn new_columns(schema: &Schema, capacity: usize, text_bytes: usize) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|f| {
            let t = if parses(f.data_type()) {
                f.data_type()
            } else {
                &DataType::Utf8
            };
            Column::new(t, capacity, text_bytes)
        })
        .collect()
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
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = if parses(f.data_type()) {
                f.data_type().clone()
            } else {
                DataType::Utf8
            };
            Field::new(f.name(), t, true)
        })
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter_mut()
        .map(Column::finish)
        .collect::<Option<_>>()?;
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(origins.len())),
    )
    .ok()?;
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
