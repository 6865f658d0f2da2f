//! A Parquet piece streamed row group by row group, in bounded batches.
//!
//! parquet-rs's push decoder says which byte ranges the next row group needs (the column
//! chunks of the projected columns); they are fetched here, pinned to the planned version,
//! and the decoder hands back a reader over that one row group. So a worker holds at most
//! one row group's projected column chunks (compressed, as stored) and the batch being
//! decoded, whatever the size of the piece. Each row group's decoded rows are counted
//! against its footer's row count.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::DecodeResult;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
};
use parquet::arrow::push_decoder::{ParquetPushDecoder, ParquetPushDecoderBuilder};
use parquet::file::metadata::ParquetMetaData;

use super::{
    check_codecs, check_row_counts, decode_error, decoded, input_error, int96, missing_columns,
    object_of, projection, read_footer, row_origin,
};
use crate::plan::Piece;
use crate::read::{Decoded, PendingReject};
use crate::store::ObjectStore;
use crate::{Error, Result};

/// Most rows in one batch of a Parquet piece.
pub const MAX_BATCH_ROWS: usize = 8192;

/// About the most bytes in one batch: fewer rows than [`MAX_BATCH_ROWS`] go in a batch
/// when the row group's uncompressed size per row says so.
pub const TARGET_BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// Column chunks this close to each other are fetched in one request: a row group whose
/// columns are all read costs one GET, not one per column, and the bytes skipped between
/// two chunks (held with them until the row group is decoded) stay small.
const COALESCE_GAP_BYTES: u64 = 64 * 1024;

/// The piece's object, its pinned version and what has been fetched of it.
struct Source<'s> {
    store: &'s dyn ObjectStore,
    key: String,
    etag: String,
    fetched: u64,
    /// The object's last bytes, read with the footer.
    tail: Option<(Range<u64>, Bytes)>,
}

impl Source<'_> {
    /// Fetches `ranges` (pinned to the planned version), close ones in one request.
    async fn fetch(&mut self, ranges: &[Range<u64>]) -> Result<Vec<(Range<u64>, Bytes)>> {
        let mut sorted: Vec<&Range<u64>> = ranges.iter().collect();
        sorted.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::new();
        for r in sorted {
            match merged.last_mut() {
                Some(m) if r.start <= m.end.saturating_add(COALESCE_GAP_BYTES) => {
                    m.end = m.end.max(r.end);
                }
                _ => merged.push(r.clone()),
            }
        }
        let mut out = Vec::with_capacity(merged.len());
        for m in merged {
            let b = self
                .store
                .get_range_if(&self.key, m.clone(), &self.etag)
                .await?;
            self.fetched += b.len() as u64;
            if (b.len() as u64) < m.end - m.start {
                return Err(input_error(
                    &self.key,
                    format!(
                        "bytes {}..{} named by the footer are past the object's end: the file is truncated",
                        m.start, m.end
                    ),
                ));
            }
            out.push((m, b));
        }
        Ok(out)
    }
}

/// The bytes of `range` in `held`, when one span holds all of it.
fn slice_of(held: &[(Range<u64>, Bytes)], range: &Range<u64>) -> Option<Bytes> {
    held.iter().find_map(|(span, b)| {
        (span.start <= range.start && range.end <= span.end).then(|| {
            let s = (range.start - span.start) as usize;
            b.slice(s..s + (range.end - range.start) as usize)
        })
    })
}

/// The reader of `decoder`'s next row group, fed from `held` and then the store (what is
/// fetched is added to `held`, for the second decoder of the same row group).
async fn next_reader(
    decoder: &mut ParquetPushDecoder,
    source: &mut Source<'_>,
    held: &mut Vec<(Range<u64>, Bytes)>,
    group: usize,
) -> Result<ParquetRecordBatchReader> {
    loop {
        let step = decoder
            .try_next_reader()
            .map_err(|e| decode_error(&source.key, "cannot decode: ", e))?;
        match step {
            DecodeResult::Data(reader) => return Ok(reader),
            DecodeResult::Finished => {
                return Err(input_error(
                    &source.key,
                    format!("the decoder ended before row group {group}"),
                ));
            }
            DecodeResult::NeedsData(ranges) => {
                let missing: Vec<Range<u64>> = ranges
                    .iter()
                    .filter(|r| slice_of(held, r).is_none())
                    .cloned()
                    .collect();
                held.extend(source.fetch(&missing).await?);
                let mut data = Vec::with_capacity(ranges.len());
                for r in &ranges {
                    data.push(slice_of(held, r).ok_or_else(|| {
                        input_error(&source.key, format!("bytes {r:?} were not fetched"))
                    })?);
                }
                decoder
                    .push_ranges(ranges, data)
                    .map_err(|e| decode_error(&source.key, "cannot decode: ", e))?;
            }
        }
    }
}

/// The row group being read.
struct Group {
    index: usize,
    /// Row number (in the file) of its first row.
    first_row: u64,
    /// Rows its footer says it holds.
    claimed: u64,
    /// Rows decoded so far.
    rows: u64,
    reader: ParquetRecordBatchReader,
    /// Its INT96 columns as whole seconds (see [`int96`]), batch for batch with `reader`.
    seconds: Option<ParquetRecordBatchReader>,
}

/// The decoders of a piece whose file has every column of the spec.
struct Decoding {
    main: ParquetPushDecoder,
    seconds: Option<ParquetPushDecoder>,
    /// The piece's row groups not started yet, in order.
    expected: VecDeque<usize>,
    current: Option<Group>,
}

enum State {
    Decoding(Box<Decoding>),
    /// The file lacks a column of the spec: every row is rejected (rule `schema`), rows
    /// `next..end` of the row group being counted, then those of `groups`.
    Missing {
        message: String,
        next: u64,
        end: u64,
        groups: VecDeque<usize>,
    },
    Done,
}

/// A Parquet piece (a whole object or some of its row groups) read one bounded batch at a
/// time: only the spec's columns, only the piece's row groups, every read pinned to the
/// planned version.
pub struct ParquetPieceReader<'s> {
    source: Source<'s>,
    meta: Arc<ParquetMetaData>,
    schema: SchemaRef,
    /// Row number (in the file) of each row group's first row.
    starts: Vec<u64>,
    /// Rows each row group's footer says it holds.
    claimed: Vec<u64>,
    state: State,
    /// Bytes fetched already counted in a returned batch.
    reported: u64,
}

impl std::fmt::Debug for ParquetPieceReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetPieceReader")
            .field("key", &self.source.key)
            .field("fetched", &self.source.fetched)
            .finish_non_exhaustive()
    }
}

impl<'s> ParquetPieceReader<'s> {
    /// Reads the piece's footer and checks it (row counts, codecs, row groups); reads no
    /// row group yet. `schema` is the spec's: its columns are read by name, the file's
    /// types kept (conversion comes later).
    pub async fn open(
        store: &'s dyn ObjectStore,
        piece: &Piece,
        schema: &SchemaRef,
    ) -> Result<ParquetPieceReader<'s>> {
        let (key, size) = object_of(store, piece).await?;
        let footer = read_footer(store, key, piece.etag(), size).await?;
        let meta = footer.meta;
        let groups: Vec<usize> = match piece {
            Piece::RowGroups { row_groups, .. } => row_groups.clone(),
            _ => (0..meta.num_row_groups()).collect(),
        };
        if let Some(g) = groups.iter().find(|g| **g >= meta.num_row_groups()) {
            return Err(input_error(
                key,
                format!("row group {g} does not exist: the object changed since planning"),
            ));
        }
        check_codecs(key, &meta, &groups, schema)?;
        check_row_counts(key, &meta, &groups)?;
        // Negative counts were refused by `check_row_counts`.
        let claimed: Vec<u64> = meta
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .collect();
        let starts = claimed
            .iter()
            .scan(0u64, |next, n| {
                let start = *next;
                *next += n;
                Some(start)
            })
            .collect();
        let meta = Arc::new(meta);
        let mut reader = ParquetPieceReader {
            source: Source {
                store,
                key: key.to_string(),
                etag: piece.etag().to_string(),
                fetched: footer.fetched,
                tail: footer.tail,
            },
            meta,
            schema: schema.clone(),
            starts,
            claimed,
            state: State::Done,
            reported: 0,
        };
        reader.state = reader.initial_state(groups)?;
        Ok(reader)
    }

    fn initial_state(&self, groups: Vec<usize>) -> Result<State> {
        let (key, meta, schema) = (&self.source.key, &self.meta, &self.schema);
        let arrow_meta = ArrowReaderMetadata::try_new(meta.clone(), ArrowReaderOptions::new())
            .map_err(|e| decode_error(key, "", e))?;
        let file_schema = arrow_meta.schema().clone();
        if let Some(message) = missing_columns(schema, &file_schema) {
            return Ok(State::Missing {
                message,
                next: 0,
                end: 0,
                groups: groups.into(),
            });
        }
        let mask = projection(meta, schema, &file_schema);
        let rows = batch_rows(meta, &groups, &mask);
        let main = ParquetPushDecoderBuilder::new_with_metadata(arrow_meta)
            .with_projection(mask)
            .with_row_groups(groups.clone())
            .with_batch_size(rows)
            .build()
            .map_err(|e| decode_error(key, "", e))?;
        let int96 = int96::columns(meta, schema, &file_schema);
        let seconds = if int96.is_empty() {
            None
        } else {
            let hinted = ArrowReaderOptions::new()
                .with_schema(Arc::new(int96::seconds_schema(&file_schema, &int96)));
            let seconds_meta = ArrowReaderMetadata::try_new(meta.clone(), hinted)
                .map_err(|e| decode_error(key, "", e))?;
            let roots = int96.iter().map(|(_, r)| *r);
            let mask = ProjectionMask::roots(meta.file_metadata().schema_descr(), roots);
            let decoder = ParquetPushDecoderBuilder::new_with_metadata(seconds_meta)
                .with_projection(mask)
                .with_row_groups(groups.clone())
                .with_batch_size(rows)
                .build()
                .map_err(|e| decode_error(key, "", e))?;
            Some(decoder)
        };
        Ok(State::Decoding(Box::new(Decoding {
            main,
            seconds,
            expected: groups.into(),
            current: None,
        })))
    }

    /// Bytes fetched from the store so far (footer included).
    pub fn bytes_fetched(&self) -> u64 {
        self.source.fetched
    }

    /// The next batch of rows (at most [`MAX_BATCH_ROWS`]), with its origins (row numbers
    /// in the file) and rejects; `None` once every row group of the piece is read.
    pub async fn next(&mut self) -> Result<Option<Decoded>> {
        loop {
            let batch = match self.state {
                State::Done => return Ok(None),
                State::Missing { .. } => self.next_missing()?,
                State::Decoding(_) => self.next_decoded().await?,
            };
            match batch {
                None => {
                    self.state = State::Done;
                    return Ok(None);
                }
                Some(d) if d.records() == 0 => continue,
                Some(mut d) => {
                    d.bytes_read = self.source.fetched - self.reported;
                    self.reported = self.source.fetched;
                    return Ok(Some(d));
                }
            }
        }
    }

    /// The next rows of a file without a column of the spec, all rejected.
    fn next_missing(&mut self) -> Result<Option<Decoded>> {
        let claimed = &self.claimed;
        let State::Missing {
            message,
            next,
            end,
            groups,
        } = &mut self.state
        else {
            return Ok(None);
        };
        while next == end {
            let Some(g) = groups.pop_front() else {
                return Ok(None);
            };
            *next = self.starts[g];
            *end = *next + claimed[g];
        }
        let to = (*end).min(*next + MAX_BATCH_ROWS as u64);
        let rejects = (*next..to)
            .map(|row| PendingReject {
                origin: row_origin(row),
                rule: "schema".into(),
                column: None,
                message: message.clone(),
            })
            .collect();
        *next = to;
        let empty = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(0)),
        )?;
        Ok(Some(decoded(
            &self.source.key,
            empty,
            Vec::new(),
            rejects,
            0,
        )))
    }

    /// The next decoded batch, starting the next row group when the current one is done.
    async fn next_decoded(&mut self) -> Result<Option<Decoded>> {
        loop {
            let State::Decoding(d) = &mut self.state else {
                return Ok(None);
            };
            let Some(group) = d.current.as_mut() else {
                if !self.start_group().await? {
                    return Ok(None);
                }
                continue;
            };
            let Some(batch) = group.reader.next() else {
                if group.rows != group.claimed {
                    return Err(disagreement(&self.source.key, group));
                }
                d.current = None;
                continue;
            };
            let key = &self.source.key;
            let batch = batch.map_err(|e| decode_error(key, "cannot decode: ", e))?;
            let seconds = match group.seconds.as_mut().map(Iterator::next) {
                None => None,
                Some(Some(Ok(s))) if s.num_rows() == batch.num_rows() => Some(s),
                Some(Some(Err(e))) => return Err(decode_error(key, "cannot decode: ", e)),
                Some(_) => {
                    return Err(input_error(
                        key,
                        format!(
                            "row group {}: its INT96 columns decoded to other rows than the rest",
                            group.index
                        ),
                    ));
                }
            };
            let first = group.first_row + group.rows;
            group.rows += batch.num_rows() as u64;
            if group.rows > group.claimed {
                return Err(disagreement(key, group));
            }
            let origins = (first..group.rows + group.first_row)
                .map(row_origin)
                .collect();
            let batch = in_spec_order(&batch, &self.schema)?;
            let (batch, origins, rejects) = match seconds {
                None => (batch, origins, Vec::new()),
                Some(s) => int96::make_exact(batch, &s, &self.schema, origins)?,
            };
            return Ok(Some(decoded(key, batch, origins, rejects, 0)));
        }
    }

    /// Fetches the next row group's column chunks and starts reading it; `false` when
    /// every row group of the piece has been read.
    async fn start_group(&mut self) -> Result<bool> {
        let claimed = &self.claimed;
        let State::Decoding(d) = &mut self.state else {
            return Ok(false);
        };
        let key = &self.source.key;
        let next = d
            .main
            .peek_next_row_group()
            .map_err(|e| decode_error(key, "", e))?;
        // The decoder may pass over a row group of no rows; any other it passes over
        // would be rows lost.
        loop {
            match (d.expected.pop_front(), next) {
                (Some(e), Some(g)) if e == g => break,
                (Some(e), _) if claimed[e] == 0 => continue,
                (Some(e), _) => {
                    return Err(input_error(
                        key,
                        format!("row group {e} (of {} rows) was not decoded", claimed[e]),
                    ));
                }
                (None, None) => return Ok(false),
                (None, Some(g)) => {
                    return Err(input_error(
                        key,
                        format!("the decoder went on to row group {g}, not in the piece"),
                    ));
                }
            }
        }
        let Some(index) = next else {
            return Ok(false);
        };
        let mut held: Vec<_> = self.source.tail.iter().cloned().collect();
        let reader = next_reader(&mut d.main, &mut self.source, &mut held, index).await?;
        let seconds = match d.seconds.as_mut() {
            Some(s) => Some(next_reader(s, &mut self.source, &mut held, index).await?),
            None => None,
        };
        d.current = Some(Group {
            index,
            first_row: self.starts[index],
            claimed: claimed[index],
            rows: 0,
            reader,
            seconds,
        });
        Ok(true)
    }
}

/// A row group that decoded to other than its footer's row count.
fn disagreement(key: &str, group: &Group) -> Error {
    input_error(
        key,
        format!(
            "row group {} decoded to {}{} rows, the footer says {}",
            group.index,
            if group.rows > group.claimed {
                "at least "
            } else {
                ""
            },
            group.rows,
            group.claimed
        ),
    )
}

/// Rows per batch: [`MAX_BATCH_ROWS`], or fewer where a row group's projected columns take
/// more than [`TARGET_BATCH_BYTES`] for that many rows (uncompressed, as the footer says).
fn batch_rows(meta: &ParquetMetaData, groups: &[usize], mask: &ProjectionMask) -> usize {
    let mut rows = MAX_BATCH_ROWS as u64;
    for &g in groups {
        let rg = meta.row_group(g);
        let n = rg.num_rows().max(0) as u64;
        if n == 0 {
            continue;
        }
        let bytes: u64 = rg
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| mask.leaf_included(*i))
            .map(|(_, c)| c.uncompressed_size().max(0) as u64)
            .sum();
        let per_row = bytes.div_ceil(n).max(1);
        rows = rows.min((TARGET_BATCH_BYTES / per_row).max(1));
    }
    rows as usize
}

/// A decoded batch with its columns in the spec's order (the file's types kept).
fn in_spec_order(batch: &RecordBatch, schema: &Schema) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let mut fields = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        // The projection holds every spec column (a file lacking one is `Missing`).
        let i = batch.schema().index_of(f.name())?;
        let c = batch.column(i).clone();
        fields.push(Field::new(f.name(), c.data_type().clone(), true));
        columns.push(c);
    }
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

#[cfg(test)]
mod tests;
