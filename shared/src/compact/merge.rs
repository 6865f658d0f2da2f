//! Merging a bin's Parquet files into one, in their order.
//!
//! A row group with at least [`COPY_MIN_ROWS`] rows (or the spec's `row_group_rows`, when
//! smaller) is copied as it is: its column chunks' bytes are spliced into the output and
//! only the footer is rebuilt (parquet's `append_column`, what its `parquet-concat` tool
//! does), so a bin of large chunk files costs little more than reading them. Smaller row
//! groups are decoded and encoded again, together, into row groups of up to
//! `row_group_rows`, with the job's writer properties. The decision rests on the files
//! alone, so the same inputs always give the same bytes.

use std::fs::File;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use crate::{Error, Result};

/// Row groups of at least this many rows are copied without re-encoding (the chunk
/// writer flushes a row group early under memory pressure only past this count too).
pub const COPY_MIN_ROWS: usize = crate::write::MIN_EARLY_ROW_GROUP_ROWS;

/// Encoded bytes an open row group may hold before it is closed early: bounds a bin
/// worker's memory whatever `row_group_rows` is.
const ROW_GROUP_BUDGET_BYTES: usize = crate::write::ROW_GROUP_BUDGET_BYTES;

/// Rows per batch when small row groups are decoded.
const BATCH_ROWS: usize = 8_192;

/// What a merge wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// Rows.
    pub rows: u64,
    /// Row groups copied as they were.
    pub copied_row_groups: u64,
    /// Row groups encoded.
    pub encoded_row_groups: u64,
}

fn bad(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Parquet(parquet::errors::ParquetError::General(format!(
        "compacting {}: {message}",
        path.display()
    )))
}

/// The footer of a local Parquet file (page indexes too, when it has them).
fn footer(path: &Path) -> Result<(File, ParquetMetaData)> {
    let file = File::open(path).map_err(|e| Error::Staging {
        context: format!("opening {}", path.display()),
        source: e,
    })?;
    let meta = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(&file)?;
    Ok((file, meta))
}

/// The output file being written: the low-level writer, and the row group being encoded.
struct Output {
    writer: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    open: Option<(Vec<ArrowColumnWriter>, usize)>,
    row_group_rows: usize,
    merged: Merged,
}

impl Output {
    /// Encodes `batch` into the open row group, closing it at `row_group_rows` rows or
    /// at the memory budget.
    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let (writers, rows) = match &mut self.open {
                Some(open) => open,
                None => {
                    let index = self.writer.flushed_row_groups().len();
                    let writers = self.factory.create_column_writers(index)?;
                    self.open.insert((writers, 0))
                }
            };
            let take = (self.row_group_rows - *rows).min(batch.num_rows() - offset);
            let part = batch.slice(offset, take);
            let mut leaves_to = writers.iter_mut();
            for (field, column) in self.schema.fields().iter().zip(part.columns()) {
                for leaf in compute_leaves(field, column)? {
                    let w = leaves_to.next().ok_or_else(|| {
                        Error::Parquet(parquet::errors::ParquetError::General(
                            "more leaf columns than column writers".into(),
                        ))
                    })?;
                    w.write(&leaf)?;
                }
            }
            *rows += take;
            offset += take;
            let bytes: usize = writers.iter().map(|w| w.memory_size()).sum();
            if *rows >= self.row_group_rows || bytes >= ROW_GROUP_BUDGET_BYTES {
                self.close_row_group()?;
            }
        }
        Ok(())
    }

    /// Writes the open row group, if any.
    fn close_row_group(&mut self) -> Result<()> {
        let Some((writers, rows)) = self.open.take() else {
            return Ok(());
        };
        if rows == 0 {
            return Ok(());
        }
        let mut rg = self.writer.next_row_group()?;
        for w in writers {
            w.close()?.append_to_row_group(&mut rg)?;
        }
        rg.close()?;
        self.merged.encoded_row_groups += 1;
        self.merged.rows += rows as u64;
        Ok(())
    }

    /// Copies row group `index` of `meta` (read from `file`) as it is.
    fn copy_row_group(&mut self, file: &File, meta: &ParquetMetaData, index: usize) -> Result<()> {
        self.close_row_group()?;
        let rg_meta = meta.row_group(index);
        let column_index = meta.column_index().and_then(|c| c.get(index));
        let offset_index = meta.offset_index().and_then(|o| o.get(index));
        let mut rg = self.writer.next_row_group()?;
        for (c, column) in rg_meta.columns().iter().enumerate() {
            rg.append_column(
                file,
                ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: rg_meta.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: column_index.and_then(|r| r.get(c)).cloned(),
                    offset_index: offset_index.and_then(|r| r.get(c)).cloned(),
                },
            )?;
        }
        rg.close()?;
        self.merged.copied_row_groups += 1;
        self.merged.rows += rg_meta.num_rows() as u64;
        Ok(())
    }
}

/// Merges the Parquet files `inputs`, in order, into `output`; every input must have the
/// schema of the first. `props` are the job's writer properties.
pub fn merge_files(
    inputs: &[std::path::PathBuf],
    output: &Path,
    props: WriterProperties,
    row_group_rows: usize,
) -> Result<Merged> {
    let Some(first) = inputs.first() else {
        return Err(bad(output, "a bin without input files"));
    };
    let schema = ParquetRecordBatchReaderBuilder::try_new(footer(first)?.0)?
        .schema()
        .clone();
    let out = File::create(output).map_err(|e| Error::Staging {
        context: format!("creating {}", output.display()),
        source: e,
    })?;
    // The ArrowWriter puts the Arrow schema in the footer's metadata (readers get the
    // same Arrow types back), then hands over its low-level writer.
    let (writer, factory) =
        ArrowWriter::try_new(out, schema.clone(), Some(props))?.into_serialized_writer()?;
    let copy_min = COPY_MIN_ROWS.min(row_group_rows.max(1));
    let mut o = Output {
        writer,
        factory,
        schema: schema.clone(),
        open: None,
        row_group_rows: row_group_rows.max(1),
        merged: Merged::default(),
    };
    let expected = o.writer.schema_descr().root_schema().clone();
    for path in inputs {
        let (file, meta) = footer(path)?;
        if meta.file_metadata().schema_descr().root_schema() != &expected {
            return Err(bad(path, "its schema differs from the bin's first file"));
        }
        for index in 0..meta.num_row_groups() {
            if meta.row_group(index).num_rows() as usize >= copy_min {
                o.copy_row_group(&file, &meta, index)?;
                continue;
            }
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(file.try_clone().map_err(|e| {
                    Error::Staging {
                        context: format!("reading {}", path.display()),
                        source: e,
                    }
                })?)?
                .with_row_groups(vec![index])
                .with_batch_size(BATCH_ROWS)
                .build()?;
            for batch in reader {
                o.encode(&batch?)?;
            }
        }
    }
    o.close_row_group()?;
    o.writer.close()?;
    Ok(o.merged)
}
