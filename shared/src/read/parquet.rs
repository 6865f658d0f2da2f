//! Parquet pieces: the footer and only the needed row groups are fetched.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};

use super::{Decoded, LinesBefore, Origin, PendingReject};
use crate::plan::Piece;
use crate::store::ObjectStore;
use crate::{Error, Result};

const FOOTER_GUESS: u64 = 64 * 1024;

mod int96;

/// Object bytes held as a few fetched spans.
#[derive(Clone)]
struct Sparse {
    size: u64,
    spans: Vec<(u64, Bytes)>,
}

impl Sparse {
    fn find(&self, start: u64, len: usize) -> parquet::errors::Result<Bytes> {
        for (off, b) in &self.spans {
            if start >= *off && start + len as u64 <= off + b.len() as u64 {
                let s = (start - off) as usize;
                return Ok(b.slice(s..s + len));
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "bytes {start}+{len} were not fetched"
        )))
    }
}

impl Length for Sparse {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for Sparse {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        for (off, b) in &self.spans {
            if start >= *off && start < off + b.len() as u64 {
                return Ok(b.slice((start - off) as usize..).reader());
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "byte {start} was not fetched"
        )))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.find(start, length)
    }
}

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
pub async fn read_metadata(
    store: &dyn ObjectStore,
    key: &str,
    etag: &str,
    size: u64,
) -> Result<(ParquetMetaData, u64)> {
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
    if meta_start < tail_start {
        tail = store.get_range_if(key, meta_start..size, etag).await?;
        fetched += tail.len() as u64;
        tail_offset = meta_start;
    }
    let off = (meta_start - tail_offset) as usize;
    let buf = &tail[off..off + meta_len as usize];
    let meta = ParquetMetaDataReader::decode_metadata(buf)
        .map_err(|e| decode_error(key, "corrupt Parquet metadata: ", e))?;
    Ok((meta, fetched))
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

/// Reads a Parquet piece into the schema's columns (by name, source types kept).
pub(crate) async fn read_piece(
    store: &dyn ObjectStore,
    piece: &Piece,
    schema: &SchemaRef,
) -> Result<Decoded> {
    let (key, size) = object_of(store, piece).await?;
    let (meta, mut fetched) = read_metadata(store, key, piece.etag(), size).await?;
    let (groups, first_row) = match piece {
        Piece::RowGroups {
            row_groups,
            first_row,
            ..
        } => (row_groups.clone(), *first_row),
        _ => ((0..meta.num_row_groups()).collect(), 0),
    };
    let spans = fetch_row_groups(store, (key, piece.etag()), &meta, &groups, &mut fetched).await?;
    check_codecs(key, &meta, &groups, schema)?;
    check_row_counts(key, &meta, &groups)?;
    let meta = Arc::new(meta);
    let arrow_meta = ArrowReaderMetadata::try_new(meta.clone(), ArrowReaderOptions::new())
        .map_err(|e| decode_error(key, "", e))?;
    let file_schema = arrow_meta.schema().clone();
    if let Some(message) = missing_columns(schema, &file_schema) {
        // Every record of the object is rejected.
        let total_rows: u64 = groups
            .iter()
            .map(|g| meta.row_group(*g).num_rows().max(0) as u64)
            .sum();
        let rejects = (0..total_rows)
            .map(|i| PendingReject {
                origin: row_origin(first_row + i),
                rule: "schema".into(),
                column: None,
                message: message.clone(),
            })
            .collect();
        let empty = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(0)),
        )?;
        return Ok(decoded(key, empty, Vec::new(), rejects, fetched));
    }
    // Checked after the decode: a row group whose pages hold fewer rows than it claims.
    let claimed: i64 = groups.iter().map(|g| meta.row_group(*g).num_rows()).sum();
    let int96 = int96::columns(&meta, schema, &file_schema);
    let sparse = Sparse { size, spans };
    let mask = projection(&meta, schema, &file_schema);
    let batches = decode(key, sparse.clone(), arrow_meta, &groups, mask)?;
    let batch = in_spec_order(&batches, schema, &file_schema)?;
    if batch.num_rows() as i64 != claimed {
        return Err(input_error(
            key,
            format!(
                "row group(s) {groups:?} decoded to {} rows, the footer says {claimed}",
                batch.num_rows()
            ),
        ));
    }
    let origins = (0..batch.num_rows() as u64)
        .map(|i| row_origin(first_row + i))
        .collect();
    if int96.is_empty() {
        return Ok(decoded(key, batch, origins, Vec::new(), fetched));
    }
    // The INT96 columns again, as whole seconds (see `int96`).
    let hinted = ArrowReaderOptions::new()
        .with_schema(Arc::new(int96::seconds_schema(&file_schema, &int96)));
    let seconds_meta =
        ArrowReaderMetadata::try_new(meta.clone(), hinted).map_err(|e| decode_error(key, "", e))?;
    let seconds_schema = seconds_meta.schema().clone();
    let roots = int96.iter().map(|(_, r)| *r);
    let mask = ProjectionMask::roots(meta.file_metadata().schema_descr(), roots);
    let seconds = decode(key, sparse, seconds_meta, &groups, mask)?;
    let seconds = match seconds.first() {
        Some(b) => concat_batches(&b.schema(), &seconds)?,
        None => RecordBatch::new_empty(seconds_schema),
    };
    let (batch, origins, rejects) = int96::make_exact(batch, &seconds, schema, origins)?;
    Ok(decoded(key, batch, origins, rejects, fetched))
}

/// Decodes the `mask` columns of the row groups.
fn decode(
    key: &str,
    sparse: Sparse,
    arrow_meta: ArrowReaderMetadata,
    groups: &[usize],
    mask: ProjectionMask,
) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(sparse, arrow_meta)
        .with_row_groups(groups.to_vec())
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| decode_error(key, "", e))?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| decode_error(key, "cannot decode: ", e))?);
    }
    Ok(batches)
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

/// Fetches the byte spans of the row groups, adding their bytes to `fetched`.
async fn fetch_row_groups(
    store: &dyn ObjectStore,
    (key, etag): (&str, &str),
    meta: &ParquetMetaData,
    groups: &[usize],
    fetched: &mut u64,
) -> Result<Vec<(u64, Bytes)>> {
    let mut spans = Vec::new();
    for &g in groups {
        if g >= meta.num_row_groups() {
            return Err(input_error(
                key,
                format!("row group {g} does not exist: the object changed since planning"),
            ));
        }
        let (lo, hi) = row_group_span(meta, g);
        if hi > lo {
            let b = store.get_range_if(key, lo..hi, etag).await?;
            *fetched += b.len() as u64;
            spans.push((lo, b));
        }
    }
    Ok(spans)
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

/// The decoded batches as one, its columns in the spec's order (types stay the file's;
/// conversion comes later).
fn in_spec_order(
    batches: &[RecordBatch],
    schema: &Schema,
    file_schema: &Schema,
) -> Result<RecordBatch> {
    let projected: SchemaRef = batches.first().map(|b| b.schema()).unwrap_or_else(|| {
        Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter_map(|f| file_schema.field_with_name(f.name()).ok().cloned())
                .collect::<Vec<_>>(),
        ))
    });
    let all = concat_batches(&projected, batches)?;
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match all.schema().index_of(f.name()) {
            Ok(i) => all.column(i).clone(),
            Err(_) => new_null_array(f.data_type(), all.num_rows()),
        })
        .collect();
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| arrow::datatypes::Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(all.num_rows())),
    )?)
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
