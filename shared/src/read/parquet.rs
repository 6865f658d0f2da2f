//! Parquet pieces: the footer, then only the piece's row groups and only the spec's
//! columns, streamed one row group at a time ([`ParquetPieceReader`]).
//!
//! # What bounds a worker's memory
//!
//! A row group's column chunks are held (compressed, as stored) while it is decoded, plus
//! one batch of at most [`MAX_BATCH_ROWS`] rows (fewer when the footer says its rows are
//! wide, about [`TARGET_BATCH_BYTES`]). Planning refuses a row group whose chunks of the
//! spec's columns take more than `input.max_row_group_size` ([`check_row_group_limit`]).

use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::{Decoded, LinesBefore, Origin, PendingReject};
use crate::plan::Piece;
use crate::store::ObjectStore;
use crate::{Error, Result};

const FOOTER_GUESS: u64 = 64 * 1024;

mod int96;
mod stream;

pub use stream::{MAX_BATCH_ROWS, ParquetPieceReader, TARGET_BATCH_BYTES};

fn input_error(key: &str, message: impl std::fmt::Display) -> Error {
    Error::Input {
        object: key.to_string(),
        message: message.to_string(),
        source: None,
    }
}

/// The object cannot be decoded: `context` and the decoder's error, kept as the source.
fn decode_error<E>(key: &str, context: &str, e: E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    Error::Input {
        object: key.to_string(),
        message: format!("{context}{e}"),
        source: Some(Box::new(e)),
    }
}

/// Reads a Parquet object's metadata from its footer (two ranged reads at most), of
/// version `etag` only: the footer and the row groups read after it are one version.
/// Returns the metadata and the bytes fetched.
pub async fn read_metadata(
    store: &dyn ObjectStore,
    key: &str,
    etag: &str,
    size: u64,
) -> Result<(ParquetMetaData, u64)> {
    let footer = read_footer(store, key, etag, size).await?;
    Ok((footer.meta, footer.fetched))
}

/// A footer as read: its metadata, the bytes fetched, and the object's last bytes when
/// they were read in one with the footer (a small object's last column chunks are in them).
struct Footer {
    meta: ParquetMetaData,
    fetched: u64,
    tail: Option<(std::ops::Range<u64>, Bytes)>,
}

async fn read_footer(store: &dyn ObjectStore, key: &str, etag: &str, size: u64) -> Result<Footer> {
    if size < 12 {
        return Err(input_error(
            key,
            format!("{size} bytes is too small to be a Parquet file"),
        ));
    }
    let tail_start = size.saturating_sub(FOOTER_GUESS);
    let mut tail = store.get_range_if(key, tail_start..size, etag).await?;
    let mut fetched = tail.len() as u64;
    let n = tail.len();
    if n < 8 || &tail[n - 4..] != b"PAR1" {
        return Err(input_error(
            key,
            "not a Parquet file (no PAR1 footer magic)",
        ));
    }
    let meta_len = u32::from_le_bytes([tail[n - 8], tail[n - 7], tail[n - 6], tail[n - 5]]) as u64;
    if meta_len + 8 > size {
        return Err(input_error(
            key,
            "corrupt Parquet footer (metadata longer than the file)",
        ));
    }
    let meta_start = size - 8 - meta_len;
    let mut tail_offset = tail_start;
    let mut kept = Some((tail_start..size, tail.clone()));
    if meta_start < tail_start {
        tail = store.get_range_if(key, meta_start..size, etag).await?;
        fetched += tail.len() as u64;
        tail_offset = meta_start;
        // The second read holds the metadata alone.
        kept = None;
    }
    let off = (meta_start - tail_offset) as usize;
    let buf = &tail[off..off + meta_len as usize];
    let meta = ParquetMetaDataReader::decode_metadata(buf)
        .map_err(|e| decode_error(key, "corrupt Parquet metadata: ", e))?;
    Ok(Footer {
        meta,
        fetched,
        tail: kept,
    })
}

/// Byte span of a row group's column chunks.
fn row_group_span(meta: &ParquetMetaData, rg: usize) -> (u64, u64) {
    let g = meta.row_group(rg);
    let mut lo = u64::MAX;
    let mut hi = 0u64;
    for c in g.columns() {
        let (s, l) = c.byte_range();
        lo = lo.min(s);
        hi = hi.max(s + l);
    }
    if lo == u64::MAX { (0, 0) } else { (lo, hi) }
}

/// The (rows, bytes) of each row group, for the planner.
pub fn row_group_sizes(meta: &ParquetMetaData) -> Vec<(u64, u64)> {
    (0..meta.num_row_groups())
        .map(|i| {
            let (lo, hi) = row_group_span(meta, i);
            (meta.row_group(i).num_rows().max(0) as u64, hi - lo)
        })
        .collect()
}

/// Reads a Parquet piece whole, as one batch: for a lookup table, which is held whole
/// anyway. A chunk's pieces stream through [`ParquetPieceReader`].
pub(crate) async fn read_whole(
    store: &dyn ObjectStore,
    piece: &Piece,
    schema: &SchemaRef,
) -> Result<Decoded> {
    let mut reader = ParquetPieceReader::open(store, piece, schema).await?;
    let mut batches = Vec::new();
    let mut origins = Vec::new();
    let mut rejects = Vec::new();
    while let Some(d) = reader.next().await? {
        if d.batch.num_columns() > 0 {
            batches.push(d.batch);
        }
        origins.extend(d.origins);
        rejects.extend(d.rejects);
    }
    let batch = match batches.first() {
        Some(b) => concat_batches(&b.schema(), &batches)?,
        None => RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(0)),
        )?,
    };
    Ok(decoded(
        piece.key(),
        batch,
        origins,
        rejects,
        reader.bytes_fetched(),
    ))
}

/// Compressed bytes of each row group's column chunks that `schema` reads (by root column
/// name): what a worker holds at once while it decodes the row group.
pub fn projected_row_group_bytes(meta: &ParquetMetaData, schema: &Schema) -> Vec<u64> {
    meta.row_groups()
        .iter()
        .map(|g| {
            g.columns()
                .iter()
                .filter(|c| {
                    let root = c.column_path().parts().first();
                    root.is_some_and(|r| schema.index_of(r).is_ok())
                })
                .map(|c| c.compressed_size().max(0) as u64)
                .sum()
        })
        .collect()
}

/// Refuses an object with a row group whose column chunks of the spec's columns take more
/// than `limit` bytes (`input.max_row_group_size`): a worker would hold them all at once.
pub fn check_row_group_limit(
    key: &str,
    meta: &ParquetMetaData,
    schema: &Schema,
    limit: u64,
) -> Result<()> {
    let sizes = projected_row_group_bytes(meta, schema);
    match sizes.iter().enumerate().find(|(_, b)| **b > limit) {
        None => Ok(()),
        Some((g, bytes)) => Err(input_error(
            key,
            format!(
                "row group {g} holds {bytes} bytes of compressed column chunks for the spec's \
                 columns, over input.max_row_group_size ({limit} bytes); a worker holds a row \
                 group's column chunks in memory while it decodes it: rewrite the object with \
                 smaller row groups, or raise the limit along with the worker's memory"
            ),
        )),
    }
}

/// The piece's object and its size (asked of the store when the plan does not hold it).
async fn object_of<'p>(store: &dyn ObjectStore, piece: &'p Piece) -> Result<(&'p str, u64)> {
    let (key, size) = match piece {
        Piece::Object { key, size, .. } | Piece::Range { key, size, .. } => (key.as_str(), *size),
        Piece::RowGroups { key, .. } => (key.as_str(), 0),
    };
    let size = if size == 0 {
        store
            .head(key)
            .await?
            .ok_or_else(|| crate::store::StoreError::NotFound {
                key: key.to_string(),
            })?
            .size
    } else {
        size
    };
    Ok((key, size))
}

/// Refuses the object when a column the spec reads is compressed with a codec this
/// build cannot decode: parquet-rs would fail (or, for some paths, panic) in the middle
/// of the decode, and the footer says so up front.
fn check_codecs(
    key: &str,
    meta: &ParquetMetaData,
    groups: &[usize],
    schema: &Schema,
) -> Result<()> {
    for &g in groups {
        for c in meta.row_group(g).columns() {
            let root = c.column_path().parts().first().map(String::as_str);
            let read = root.is_some_and(|r| schema.index_of(r).is_ok());
            if read && !crate::codec::is_built(c.compression()) {
                return Err(input_error(
                    key,
                    format!(
                        "column `{}` of row group {g} is {}-compressed, which this build cannot decode (it decodes {})",
                        c.column_path().string(),
                        c.compression(),
                        crate::codec::BUILT_NAMES
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a footer whose row counts disagree: the file's with its row groups', or a row
/// group's with the values of its flat columns. parquet-rs decodes as many rows as a row
/// group claims, so a count too small would drop rows without a word.
fn check_row_counts(key: &str, meta: &ParquetMetaData, groups: &[usize]) -> Result<()> {
    let in_groups: i128 = meta
        .row_groups()
        .iter()
        .map(|g| i128::from(g.num_rows()))
        .sum();
    let in_file = meta.file_metadata().num_rows();
    if i128::from(in_file) != in_groups {
        return Err(input_error(
            key,
            format!(
                "corrupt Parquet footer: the file says {in_file} rows, its row groups hold {in_groups}"
            ),
        ));
    }
    for &g in groups {
        let rg = meta.row_group(g);
        if rg.num_rows() < 0 {
            return Err(input_error(
                key,
                format!(
                    "corrupt Parquet footer: row group {g} says {} rows",
                    rg.num_rows()
                ),
            ));
        }
        // A repeated column holds more values than rows; a flat one exactly one per row
        // (nulls included).
        let flat = rg
            .columns()
            .iter()
            .find(|c| c.column_descr().max_rep_level() == 0 && c.num_values() != rg.num_rows());
        if let Some(c) = flat {
            return Err(input_error(
                key,
                format!(
                    "corrupt Parquet footer: row group {g} says {} rows, its column `{}` holds {} values",
                    rg.num_rows(),
                    c.column_path().string(),
                    c.num_values()
                ),
            ));
        }
    }
    Ok(())
}

/// Why the file cannot give the spec's columns, when it lacks some.
fn missing_columns(schema: &Schema, file_schema: &Schema) -> Option<String> {
    let missing: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| file_schema.index_of(f.name()).is_err())
        .map(|f| f.name().as_str())
        .collect();
    if missing.is_empty() {
        return None;
    }
    let have: Vec<&str> = file_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    Some(format!(
        "the file lacks column(s) {} (it has: {})",
        missing.join(", "),
        have.join(", ")
    ))
}

/// Only the file's columns that the spec names are decoded.
fn projection(meta: &ParquetMetaData, schema: &Schema, file_schema: &Schema) -> ProjectionMask {
    let roots: Vec<usize> = schema
        .fields()
        .iter()
        .filter_map(|f| file_schema.index_of(f.name()).ok())
        .collect();
    ProjectionMask::roots(meta.file_metadata().schema_descr(), roots)
}

/// A Parquet row's origin: its row number only (no text, no line).
fn row_origin(row: u64) -> Origin {
    Origin {
        start: 0,
        len: 0,
        line: 0,
        row,
    }
}

fn decoded(
    key: &str,
    batch: RecordBatch,
    origins: Vec<Origin>,
    rejects: Vec<PendingReject>,
    fetched: u64,
) -> Decoded {
    Decoded {
        object: key.to_string(),
        batch,
        origins,
        rejects,
        text: Bytes::new(),
        text_offset: None,
        decompressed: false,
        lines_before: LinesBefore::NotApplicable,
        bytes_read: fetched,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use bytes::Bytes;
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::{FileMetaData, ParquetMetaData, ParquetMetaDataReader};

    use super::check_row_counts;

    fn six_rows() -> ParquetMetaData {
        let batch =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from_iter_values(0..6)) as _)])
                .unwrap();
        let mut w = ArrowWriter::try_new(Vec::new(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        let bytes = Bytes::from(w.into_inner().unwrap());
        ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .unwrap()
    }

    #[test]
    fn a_row_group_over_the_limit_is_refused_naming_the_object_and_the_group() {
        use arrow::datatypes::{DataType, Field, Schema};
        let meta = six_rows();
        let bytes = super::projected_row_group_bytes(&meta, &Schema::empty());
        assert_eq!(bytes, vec![0]);
        let schema = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        let id = super::projected_row_group_bytes(&meta, &schema)[0];
        assert_eq!(id, meta.row_group(0).column(0).compressed_size() as u64);
        super::check_row_group_limit("k", &meta, &schema, id).unwrap();
        let e = super::check_row_group_limit("in/a.parquet", &meta, &schema, id - 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`in/a.parquet`"), "{e}");
        assert!(e.contains(&format!("row group 0 holds {id} bytes")), "{e}");
        assert!(
            e.contains(&format!("input.max_row_group_size ({} bytes)", id - 1)),
            "{e}"
        );
    }

    #[test]
    fn a_footer_whose_rows_match_its_row_groups_is_accepted() {
        check_row_counts("k", &six_rows(), &[0]).unwrap();
    }

    #[test]
    fn a_file_row_count_other_than_its_row_groups_sum_is_refused_naming_the_object() {
        let meta = six_rows();
        let f = meta.file_metadata();
        let lying = FileMetaData::new(
            f.version(),
            0,
            f.created_by().map(str::to_string),
            f.key_value_metadata().cloned(),
            f.schema_descr_ptr(),
            f.column_orders().cloned(),
        );
        let meta = ParquetMetaData::new(lying, meta.row_groups().to_vec());
        let e = check_row_counts("in/a.parquet", &meta, &[0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`in/a.parquet`"), "{e}");
        assert!(
            e.contains("the file says 0 rows, its row groups hold 6"),
            "{e}"
        );
    }
}
