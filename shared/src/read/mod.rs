//! Reading one chunk piece into Arrow: byte range / object / row groups → columns + origins.
//!
//! CSV and JSON lines are split into records and fields here, every field kept as text;
//! the typed conversion happens in [`crate::transform`], so a value that does not parse
//! rejects its record instead of failing the batch. Records that cannot even be split
//! into the schema's fields (wrong field count, invalid UTF-8, a JSON line that is not an
//! object) are rejected here. Every row and every reject keeps its origin: object, byte
//! offset, line, raw text.
//!
//! A worker reads a piece through [`PieceReader`], batch by batch: a text piece in
//! segments of [`SEGMENT_BYTES`], a Parquet piece one row group at a time in batches of at
//! most [`parquet::MAX_BATCH_ROWS`] rows.

mod csv;
mod csv_fast;
mod jsonl;
pub mod lines;
pub mod parquet;

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;

use crate::plan::Piece;
use crate::spec::{Format, InputCompression, InputSpec};
use crate::store::ObjectStore;
use crate::{Error, Result};

/// A worker reads a byte range in segments of this size, so its memory stays bounded
/// whatever the chunk's size.
pub const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Whether an object can be cut into byte ranges at record starts: uncompressed CSV
/// without multiline fields, and uncompressed JSON lines.
pub fn splits_by_lines(input: &InputSpec, key: &str) -> bool {
    match input.format {
        Format::Parquet => false,
        _ if input.compression.of_key(key) != InputCompression::None => false,
        Format::Csv => !input.csv.multiline,
        Format::Jsonl => true,
    }
}

/// The pieces a worker reads one after the other for `piece`: byte ranges in segments of
/// at most `segment` bytes (a record belongs to the segment it starts in, as it belongs to
/// the range), any other piece whole.
pub fn segments(piece: &Piece, input: &InputSpec, segment: u64) -> Vec<Piece> {
    match piece {
        Piece::Object { key, etag, size } if *size > segment && splits_by_lines(input, key) => {
            segments(
                &Piece::Range {
                    key: key.clone(),
                    etag: etag.clone(),
                    size: *size,
                    start: 0,
                    end: *size,
                },
                input,
                segment,
            )
        }
        Piece::Range {
            key,
            etag,
            size,
            start,
            end,
        } if end - start > segment => (*start..*end)
            .step_by(segment.max(1) as usize)
            .map(|s| Piece::Range {
                key: key.clone(),
                etag: etag.clone(),
                size: *size,
                start: s,
                end: (s + segment).min(*end),
            })
            .collect(),
        other => vec![other.clone()],
    }
}

/// First read past a range's end; doubled until the last record is complete.
pub const DEFAULT_OVERREAD_BYTES: u64 = 16 * 1024;

/// Where a row came from, relative to the piece's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Offset of the record's first byte in the text (0 for Parquet rows).
    pub start: u64,
    /// Length of the record's text.
    pub len: u32,
    /// 0-based line of the record's start, counted from the text's start.
    pub line: u64,
    /// 0-based record index in the object (Parquet) or in the piece (text).
    pub row: u64,
}

/// A record refused while reading or converting.
#[derive(Debug, Clone)]
pub struct PendingReject {
    /// Where it came from.
    pub origin: Origin,
    /// The rule broken (`format`, `encoding`, `header`, `type`, `not_null`, `min: 0`, …).
    pub rule: String,
    /// The column at fault, if one.
    pub column: Option<String>,
    /// What was wrong.
    pub message: String,
}

/// Lines before the piece's text, for absolute line numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinesBefore {
    /// Known.
    Known(u64),
    /// Unknown until the object's `\n`s before this offset are counted (only done when a
    /// record of the piece is rejected: line numbers are only needed then).
    CountUpTo(u64),
    /// Not a line-oriented source.
    NotApplicable,
}

/// One piece, decoded.
#[derive(Debug)]
pub struct Decoded {
    /// Object key.
    pub object: String,
    /// Rows that split into the schema's columns (text columns for CSV/JSON).
    pub batch: RecordBatch,
    /// One per row of `batch`.
    pub origins: Vec<Origin>,
    /// Records refused while reading.
    pub rejects: Vec<PendingReject>,
    /// The text the origins point into (empty for Parquet).
    pub text: Bytes,
    /// Object offset of `text[0]`; `None` when the text was decompressed (offsets are then
    /// positions in the decompressed stream).
    pub text_offset: Option<u64>,
    /// Lines before the text.
    pub lines_before: LinesBefore,
    /// Bytes fetched from the store.
    pub bytes_read: u64,
}

impl Decoded {
    /// Records seen: decoded rows plus records refused while reading.
    pub fn records(&self) -> u64 {
        self.batch.num_rows() as u64 + self.rejects.len() as u64
    }

    /// The raw text of a record (lossy UTF-8, line end trimmed), or its row rendered as JSON.
    pub fn raw_text(&self, origin: &Origin, row_in_batch: Option<usize>) -> String {
        if !self.text.is_empty() || self.lines_before != LinesBefore::NotApplicable {
            let s = origin.start as usize;
            let e = (s + origin.len as usize).min(self.text.len());
            let raw = &self.text[s.min(e)..e];
            let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            return String::from_utf8_lossy(raw).into_owned();
        }
        match row_in_batch {
            Some(r) => row_json(&self.batch, r),
            None => String::new(),
        }
    }
}

/// A batch row as a JSON object of displayed values.
pub(crate) fn row_json(batch: &RecordBatch, row: usize) -> String {
    let opts = arrow::util::display::FormatOptions::default();
    let mut obj = serde_json::Map::new();
    for (f, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let v = if col.is_null(row) {
            serde_json::Value::Null
        } else {
            match arrow::util::display::ArrayFormatter::try_new(col.as_ref(), &opts) {
                Ok(fmt) => serde_json::Value::String(fmt.value(row).to_string()),
                Err(_) => serde_json::Value::Null,
            }
        };
        obj.insert(f.name().clone(), v);
    }
    serde_json::Value::Object(obj).to_string()
}

/// The schema of text columns a CSV/JSON reader produces for `schema`.
pub(crate) fn text_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// Column builders for text rows.
pub(crate) struct TextColumns {
    builders: Vec<StringBuilder>,
    schema: SchemaRef,
}

impl TextColumns {
    pub(crate) fn new(schema: &Schema) -> Self {
        TextColumns {
            builders: schema
                .fields()
                .iter()
                .map(|_| StringBuilder::new())
                .collect(),
            schema: text_schema(schema),
        }
    }

    pub(crate) fn push(&mut self, values: &[Option<&str>]) {
        for (b, v) in self.builders.iter_mut().zip(values) {
            b.append_option(*v);
        }
    }

    pub(crate) fn finish(mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let rows = columns.first().map_or(0, |c| c.len());
        Ok(RecordBatch::try_new_with_options(
            self.schema,
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

/// A CSV object's header: its fields (or why it is unusable) and where it ends.
#[derive(Debug)]
pub struct ObjectHeader {
    /// The fields.
    pub fields: Arc<Result<Vec<String>, String>>,
    /// Object offset just after the header line.
    pub end: u64,
}

/// Cache of CSV headers per object version, shared by the ranges of one object.
pub type HeaderCache =
    std::sync::Mutex<std::collections::HashMap<(String, String), Arc<ObjectHeader>>>;

/// A chunk's piece read one bounded batch at a time: a Parquet piece by row group, a text
/// piece segment by segment (see [`segments`]).
#[derive(Debug)]
pub enum PieceReader<'a> {
    /// A Parquet object or some of its row groups.
    Parquet(parquet::ParquetPieceReader<'a>),
    /// A CSV or JSON lines piece.
    Text(TextPieceReader<'a>),
}

/// A text piece's segments, each read whole by [`read_piece`].
#[derive(Debug)]
pub struct TextPieceReader<'a> {
    store: &'a dyn ObjectStore,
    input: &'a InputSpec,
    headers: &'a HeaderCache,
    segments: std::vec::IntoIter<Piece>,
    fetched: u64,
}

impl<'a> PieceReader<'a> {
    /// Starts reading `piece` (a Parquet piece's footer is read and checked here).
    pub async fn open(
        store: &'a dyn ObjectStore,
        piece: &Piece,
        input: &'a InputSpec,
        headers: &'a HeaderCache,
    ) -> Result<PieceReader<'a>> {
        Ok(match input.format {
            Format::Parquet => PieceReader::Parquet(
                parquet::ParquetPieceReader::open(store, piece, &input.schema).await?,
            ),
            Format::Csv | Format::Jsonl => PieceReader::Text(TextPieceReader {
                store,
                input,
                headers,
                segments: segments(piece, input, SEGMENT_BYTES).into_iter(),
                fetched: 0,
            }),
        })
    }

    /// The next batch of the piece, `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Decoded>> {
        match self {
            PieceReader::Parquet(r) => r.next().await,
            PieceReader::Text(t) => match t.segments.next() {
                None => Ok(None),
                Some(segment) => {
                    let d = read_piece(t.store, &segment, t.input, t.headers).await?;
                    t.fetched += d.bytes_read;
                    Ok(Some(d))
                }
            },
        }
    }

    /// Bytes fetched from the store so far.
    pub fn bytes_fetched(&self) -> u64 {
        match self {
            PieceReader::Parquet(r) => r.bytes_fetched(),
            PieceReader::Text(t) => t.fetched,
        }
    }
}

/// Reads one piece of the input whole (a Parquet piece as one batch: for lookups; a
/// chunk's pieces are read through [`PieceReader`]).
pub async fn read_piece(
    store: &dyn ObjectStore,
    piece: &Piece,
    input: &InputSpec,
    headers: &HeaderCache,
) -> Result<Decoded> {
    match input.format {
        Format::Parquet => parquet::read_whole(store, piece, &input.schema).await,
        Format::Csv | Format::Jsonl => {
            let key = piece.key();
            let (text, text_offset, lines_before, bytes_read) =
                fetch_text(store, piece, input.compression.of_key(key)).await?;
            // A UTF-8 byte order mark belongs to the object, not to its first record.
            let at_object_start = text_offset.unwrap_or(0) == 0;
            let mut skip = if at_object_start && text.starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                0
            };
            let mut d = match input.format {
                Format::Csv => {
                    let header = if !input.csv.header {
                        None
                    } else if at_object_start {
                        Some(csv::HeaderSource::FirstRecord)
                    } else {
                        let h = object_header(store, piece, &input.csv, headers).await?;
                        // Tiny ranges may start before the header line ends (blank lines
                        // first): the header is never a record.
                        let offset = text_offset.unwrap_or(0);
                        if h.end > offset {
                            skip = ((h.end - offset) as usize).min(text.len());
                        }
                        Some(csv::HeaderSource::Given(h.fields.clone()))
                    };
                    csv::decode(&text, skip, &input.csv, &input.schema, header, key)?
                }
                _ => jsonl::decode(&text, skip, &input.schema)?,
            };
            d.object = key.to_string();
            d.text = text;
            d.text_offset = text_offset;
            d.lines_before = lines_before;
            d.bytes_read = bytes_read;
            Ok(d)
        }
    }
}

/// Fetches the text a piece owns: (text, object offset of text[0], lines before, bytes fetched).
async fn fetch_text(
    store: &dyn ObjectStore,
    piece: &Piece,
    compression: InputCompression,
) -> Result<(Bytes, Option<u64>, LinesBefore, u64)> {
    match piece {
        Piece::Object { key, etag, size }
        | Piece::RowGroups {
            key, etag, size, ..
        } => {
            let raw = store.get_range_if(key, 0..*size, etag).await?;
            let n = raw.len() as u64;
            match compression {
                InputCompression::None | InputCompression::Auto => {
                    Ok((raw, Some(0), LinesBefore::Known(0), n))
                }
                c => Ok((decompress(key, raw, c)?, None, LinesBefore::Known(0), n)),
            }
        }
        Piece::Range {
            key,
            etag,
            size,
            start,
            end,
        } => {
            let mut overread = DEFAULT_OVERREAD_BYTES;
            let mut fetched = 0u64;
            loop {
                let w = lines::first_window(*start, *end, overread, *size);
                let window = store.get_range_if(key, w.clone(), etag).await?;
                fetched += window.len() as u64;
                if (window.len() as u64) < w.end - w.start {
                    return Err(Error::Input {
                        object: key.clone(),
                        message: format!(
                            "the object shrank below the {size} bytes it had when planned: re-plan the job"
                        ),
                        source: None,
                    });
                }
                match lines::owned(&window, w.start, *start..*end, *size) {
                    lines::Owned::Span(s) => {
                        let offset = w.start + s.start as u64;
                        let lines_before = if offset == 0 {
                            LinesBefore::Known(0)
                        } else {
                            LinesBefore::CountUpTo(offset)
                        };
                        return Ok((window.slice(s), Some(offset), lines_before, fetched));
                    }
                    lines::Owned::NeedMore => overread = overread.saturating_mul(4),
                }
            }
        }
    }
}

/// Counts `\n` in the object before `offset` (for absolute line numbers of rejects).
pub async fn count_lines_before(
    store: &dyn ObjectStore,
    key: &str,
    etag: &str,
    offset: u64,
) -> Result<u64> {
    count_lines_in(store, key, etag, 0..offset).await
}

/// Counts `\n` in a byte range of the object's version `etag`.
pub async fn count_lines_in(
    store: &dyn ObjectStore,
    key: &str,
    etag: &str,
    range: Range<u64>,
) -> Result<u64> {
    const STEP: u64 = 8 * 1024 * 1024;
    let offset = range.end;
    let mut n = 0u64;
    let mut at = range.start;
    while at < offset {
        let end = (at + STEP).min(offset);
        let b = store.get_range_if(key, at..end, etag).await?;
        if b.is_empty() {
            break;
        }
        n += memchr::memchr_iter(b'\n', &b).count() as u64;
        at += b.len() as u64;
    }
    Ok(n)
}

fn decompress(key: &str, raw: Bytes, c: InputCompression) -> Result<Bytes> {
    let mut out = Vec::with_capacity(raw.len() * 4);
    let r = match c {
        InputCompression::Gzip => flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out),
        InputCompression::Zstd => {
            zstd::stream::read::Decoder::new(&raw[..]).and_then(|mut d| d.read_to_end(&mut out))
        }
        InputCompression::None | InputCompression::Auto => return Ok(raw),
    };
    r.map_err(|e| Error::Input {
        object: key.to_string(),
        message: format!("cannot decompress ({c:?}): {e}"),
        source: Some(Box::new(e)),
    })?;
    Ok(Bytes::from(out))
}

/// The header of a CSV object: its first non-blank line.
async fn object_header(
    store: &dyn ObjectStore,
    piece: &Piece,
    opts: &crate::spec::CsvOptions,
    cache: &HeaderCache,
) -> Result<Arc<ObjectHeader>> {
    let cache_key = (piece.key().to_string(), piece.etag().to_string());
    if let Some(h) = cache.lock().ok().and_then(|c| c.get(&cache_key).cloned()) {
        return Ok(h);
    }
    let mut len = 4 * 1024u64;
    let header = loop {
        let b = store
            .get_range_if(piece.key(), 0..len, piece.etag())
            .await?;
        let complete = (b.len() as u64) < len;
        match csv::header_line(&b) {
            // A line is whole once its `\n` is in, or the object ended.
            Some((start, end)) if b[..end].ends_with(b"\n") || complete => {
                break ObjectHeader {
                    fields: Arc::new(csv::header_fields(&b[start..end], opts)),
                    end: end as u64,
                };
            }
            None if complete => {
                break ObjectHeader {
                    fields: Arc::new(Ok(Vec::new())),
                    end: b.len() as u64,
                };
            }
            _ => len *= 4,
        }
    };
    let header = Arc::new(header);
    if let Ok(mut c) = cache.lock() {
        c.insert(cache_key, header.clone());
    }
    Ok(header)
}

/// Whether a quoted field in these bytes is opened and never closed. Quotes only open a
/// field at its start; elsewhere they are literal (as csv-core, Python and Spark read them).
pub(crate) fn unbalanced_quotes(bytes: &[u8], opts: &crate::spec::CsvOptions) -> bool {
    let (mut i, mut field_start, mut quoted) = (0, true, false);
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            if opts.escape == Some(b) && opts.escape != Some(opts.quote) {
                i += 2;
                continue;
            }
            if b == opts.quote {
                if opts.escape.is_none() && bytes.get(i + 1) == Some(&opts.quote) {
                    i += 2;
                    continue;
                }
                quoted = false;
            }
        } else if field_start && b == opts.quote {
            quoted = true;
            field_start = false;
        } else {
            field_start = b == opts.delimiter || b == b'\n' || b == b'\r';
        }
        i += 1;
    }
    quoted
}
