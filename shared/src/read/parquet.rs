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

/// Object bytes held as a few fetched spans.
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
    }
}

/// Reads a Parquet object's metadata from its footer (two ranged reads at most).
pub async fn read_metadata(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
) -> Result<(ParquetMetaData, u64)> {
    if size < 12 {
        return Err(input_error(
            key,
            format!("{size} bytes is too small to be a Parquet file"),
        ));
    }
    let tail_start = size.saturating_sub(FOOTER_GUESS);
    let mut tail = store.get_range(key, tail_start..size).await?;
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
        tail = store.get_range(key, meta_start..size).await?;
        fetched += tail.len() as u64;
        tail_offset = meta_start;
    }
    let off = (meta_start - tail_offset) as usize;
    let buf = &tail[off..off + meta_len as usize];
    let meta = ParquetMetaDataReader::decode_metadata(buf)
        .map_err(|e| input_error(key, format!("corrupt Parquet metadata: {e}")))?;
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
    let (meta, mut fetched) = read_metadata(store, key, size).await?;
    let groups: Vec<usize> = match piece {
        Piece::RowGroups { row_groups, .. } => row_groups.clone(),
        _ => (0..meta.num_row_groups()).collect(),
    };
    let first_row: u64 = match piece {
        Piece::RowGroups { first_row, .. } => *first_row,
        _ => 0,
    };
    let mut spans = Vec::new();
    for &g in &groups {
        if g >= meta.num_row_groups() {
            return Err(input_error(
                key,
                format!("row group {g} does not exist: the object changed since planning"),
            ));
        }
        let (lo, hi) = row_group_span(&meta, g);
        if hi > lo {
            let b = store.get_range(key, lo..hi).await?;
            fetched += b.len() as u64;
            spans.push((lo, b));
        }
    }
    let meta = Arc::new(meta);
    let arrow_meta = ArrowReaderMetadata::try_new(meta.clone(), ArrowReaderOptions::new())
        .map_err(|e| input_error(key, e))?;
    let file_schema = arrow_meta.schema().clone();
    let total_rows: u64 = groups
        .iter()
        .map(|g| meta.row_group(*g).num_rows().max(0) as u64)
        .sum();

    // Columns the spec names but the file lacks: every record of the object is rejected.
    let missing: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| file_schema.index_of(f.name()).is_err())
        .map(|f| f.name().as_str())
        .collect();
    if !missing.is_empty() {
        let have: Vec<&str> = file_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let message = format!(
            "the file lacks column(s) {} (it has: {})",
            missing.join(", "),
            have.join(", ")
        );
        let rejects = (0..total_rows)
            .map(|i| PendingReject {
                origin: Origin {
                    start: 0,
                    len: 0,
                    line: 0,
                    row: first_row + i,
                },
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
        return Ok(Decoded {
            object: key.to_string(),
            batch: empty,
            origins: Vec::new(),
            rejects,
            text: Bytes::new(),
            text_offset: None,
            lines_before: LinesBefore::NotApplicable,
            bytes_read: fetched,
        });
    }

    let roots: Vec<usize> = schema
        .fields()
        .iter()
        .filter_map(|f| file_schema.index_of(f.name()).ok())
        .collect();
    let mask = ProjectionMask::roots(meta.file_metadata().schema_descr(), roots);
    let sparse = Sparse { size, spans };
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(sparse, arrow_meta)
        .with_row_groups(groups)
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| input_error(key, e))?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| input_error(key, format!("cannot decode: {e}")))?);
    }
    let projected: SchemaRef = batches.first().map(|b| b.schema()).unwrap_or_else(|| {
        Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter_map(|f| file_schema.field_with_name(f.name()).ok().cloned())
                .collect::<Vec<_>>(),
        ))
    });
    let all = concat_batches(&projected, &batches)?;
    // Reorder to the spec's column order (types stay the file's; conversion comes later).
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
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(all.num_rows())),
    )?;
    let origins = (0..batch.num_rows() as u64)
        .map(|i| Origin {
            start: 0,
            len: 0,
            line: 0,
            row: first_row + i,
        })
        .collect();
    Ok(Decoded {
        object: key.to_string(),
        batch,
        origins,
        rejects: Vec::new(),
        text: Bytes::new(),
        text_offset: None,
        lines_before: LinesBefore::NotApplicable,
        bytes_read: fetched,
    })
}
