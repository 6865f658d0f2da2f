//! Reading one chunk piece into Arrow: byte range / object / row groups → columns + origins.
//!
//! CSV and JSON lines are split into records and fields here. Clean values go straight
//! into typed columns (`typed`, shared by `csv_fast` and `jsonl`); the rest are kept as
//! text and converted in [`crate::transform`] (or, for a JSON line off the fast path, by
//! the same cast here), so a value that does not parse rejects its record instead of
//! failing the batch. Records that cannot even be split
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
pub mod parquet;
pub mod text;
pub(crate) mod typed;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;

use crate::plan::Piece;
use crate::spec::{Format, InputCompression, InputSpec};
use crate::store::ObjectStore;
use crate::{Error, Result};

pub use text::TextReader;

/// A worker reads text in segments of this size, so its memory stays bounded whatever the
/// chunk's size.
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
    /// Unknown: the text is part of a range that starts inside the object, and counting
    /// the lines before it would mean reading the object from its start.
    Unknown,
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
    /// Offset of `text[0]` in the object, or in the decompressed stream when `decompressed`.
    pub text_offset: Option<u64>,
    /// The text was decompressed from the object.
    pub decompressed: bool,
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
/// piece segment by segment.
pub enum PieceReader<'a> {
    /// A Parquet object or some of its row groups.
    Parquet(parquet::ParquetPieceReader<'a>),
    /// A CSV or JSON lines piece.
    Text(TextReader<'a>),
}

impl<'a> PieceReader<'a> {
    /// Starts reading `piece` (a Parquet piece's footer is read and checked here).
    pub async fn open(
        store: &'a dyn ObjectStore,
        piece: &Piece,
        input: &'a InputSpec,
        headers: &HeaderCache,
    ) -> Result<PieceReader<'a>> {
        Ok(match input.format {
            Format::Parquet => PieceReader::Parquet(
                parquet::ParquetPieceReader::open(store, piece, &input.schema).await?,
            ),
            Format::Csv | Format::Jsonl => PieceReader::Text(
                TextReader::open(store, piece, input, headers, SEGMENT_BYTES).await?,
            ),
        })
    }

    /// The next batch of the piece, `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Decoded>> {
        match self {
            PieceReader::Parquet(r) => r.next().await,
            PieceReader::Text(t) => t.next().await,
        }
    }

    /// Bytes fetched from the store so far.
    pub fn bytes_fetched(&self) -> u64 {
        match self {
            PieceReader::Parquet(r) => r.bytes_fetched(),
            PieceReader::Text(t) => t.bytes_fetched(),
        }
    }
}

/// Reads one whole piece of the input as a single decoded unit: for small objects read
/// whole, such as lookup tables. A chunk's pieces are read through [`PieceReader`].
pub async fn read_piece(
    store: &dyn ObjectStore,
    piece: &Piece,
    input: &InputSpec,
    headers: &HeaderCache,
) -> Result<Decoded> {
    if input.format == Format::Parquet {
        return parquet::read_whole(store, piece, &input.schema).await;
    }
    let mut reader = TextReader::open(store, piece, input, headers, u64::MAX).await?;
    let mut parts = Vec::new();
    while let Some(d) = reader.next().await? {
        parts.push(d);
    }
    let fetched = reader.bytes_fetched();
    let mut parts = parts.into_iter();
    let mut whole = match parts.next() {
        Some(d) => d,
        None => Decoded {
            object: piece.key().to_string(),
            batch: TextColumns::new(&input.schema).finish()?,
            origins: Vec::new(),
            rejects: Vec::new(),
            text: Bytes::new(),
            text_offset: Some(0),
            decompressed: false,
            lines_before: LinesBefore::Known(0),
            bytes_read: 0,
        },
    };
    // Read in one segment, the text only splits around a record over the size limit.
    if parts.next().is_some() || whole.rejects.iter().any(|r| r.rule == "max_record_size") {
        return Err(Error::Input {
            object: piece.key().to_string(),
            message: format!(
                "a record is longer than the {} bytes allowed (input.max_record_size)",
                input.max_record_bytes
            ),
            source: None,
        });
    }
    whole.bytes_read = fetched;
    Ok(whole)
}

/// The header of a CSV object: its first non-blank line.
pub(crate) async fn object_header(
    store: &dyn ObjectStore,
    piece: &Piece,
    opts: &crate::spec::CsvOptions,
    max_record: u64,
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
            _ if len > max_record => {
                break ObjectHeader {
                    fields: Arc::new(Err(format!(
                        "the header line is longer than input.max_record_size ({max_record} bytes)"
                    ))),
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
