//! Partitioned, deterministic Parquet.
//!
//! Rows are split by the values of the partition columns into Hive-style paths
//! (`col=value/…`, values percent-encoded as Hive does, nulls as
//! `__HIVE_DEFAULT_PARTITION__`) and written as `part-<chunk_id>-<n>.parquet`, `n`
//! counting the files of that chunk in that partition. Names derive from the chunk id
//! only and the encoder is deterministic, so a chunk run twice writes the same keys with
//! the same bytes: a retry overwrites its own earlier attempt instead of adding to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::spec::{OutputCompression, OutputSpec};
use crate::store::ObjectStore;
use crate::{Error, Result};

/// Hive's name for a null (or empty) partition value.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Characters Hive escapes in partition values.
const HIVE_ESCAPE: &AsciiSet = &CONTROLS
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'\'')
    .add(b'*')
    .add(b'/')
    .add(b':')
    .add(b'=')
    .add(b'?')
    .add(b'\\')
    .add(b'{')
    .add(b'[')
    .add(b']')
    .add(b'^');

/// One written file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Key below the output location.
    pub key: String,
    /// Partition column values (as text), in `partition_by` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition: Vec<(String, Option<String>)>,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Writer properties for the output spec (also used for the aggregate table).
pub fn writer_properties(
    compression: OutputCompression,
    row_group_rows: usize,
) -> Result<WriterProperties> {
    let c = match compression {
        OutputCompression::Zstd(l) => Compression::ZSTD(ZstdLevel::try_new(l)?),
        OutputCompression::Gzip(l) => Compression::GZIP(GzipLevel::try_new(l)?),
        OutputCompression::Snappy => Compression::SNAPPY,
        OutputCompression::Lz4 => Compression::LZ4_RAW,
        OutputCompression::None => Compression::UNCOMPRESSED,
    };
    Ok(WriterProperties::builder()
        .set_compression(c)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_created_by(format!("fanout version {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// Encodes batches as one Parquet file in memory.
pub fn encode_parquet(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
) -> Result<Bytes> {
    let mut w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    Ok(Bytes::from(w.into_inner()?))
}

/// The Hive path segment for a partition value.
///
/// ```
/// assert_eq!(fanout::write::partition_segment("region", Some("EU/West")), "region=EU%2FWest");
/// assert_eq!(fanout::write::partition_segment("region", None), "region=__HIVE_DEFAULT_PARTITION__");
/// ```
pub fn partition_segment(column: &str, value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => format!(
            "{}={}",
            utf8_percent_encode(column, HIVE_ESCAPE),
            utf8_percent_encode(v, HIVE_ESCAPE)
        ),
        _ => format!(
            "{}={NULL_PARTITION}",
            utf8_percent_encode(column, HIVE_ESCAPE)
        ),
    }
}

/// Rows of one batch bound for one partition: (path, column values, row indexes).
type RowGroup = (String, Vec<(String, Option<String>)>, Vec<u32>);

struct Open {
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
}

struct PartitionFiles {
    values: Vec<(String, Option<String>)>,
    open: Option<Open>,
    next: usize,
    done: Vec<(String, Bytes, u64)>,
}

/// Writes a chunk's transformed rows under `output` and returns the files, sorted by key.
/// `before_put(n)` runs before the `n`-th file is stored (fault injection in tests).
pub async fn write_partitioned(
    store: &dyn ObjectStore,
    output: &OutputSpec,
    chunk_id: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    before_put: &(dyn Fn(usize) -> Result<()> + Send + Sync),
) -> Result<Vec<FileEntry>> {
    let part_idx: Vec<usize> = output
        .partition_by
        .iter()
        .map(|c| {
            schema.index_of(c).map_err(|_| Error::Transform {
                message: format!(
                    "partition column `{c}` is not in the transformed rows (they have: {})",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        })
        .collect::<Result<_>>()?;
    let data_idx: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !part_idx.contains(i))
        .collect();
    let file_schema: SchemaRef = Arc::new(Schema::new(
        data_idx
            .iter()
            .map(|i| schema.field(*i).clone())
            .collect::<Vec<_>>(),
    ));
    let props = writer_properties(output.compression, output.row_group_rows)?;
    let mut parts: BTreeMap<String, PartitionFiles> = BTreeMap::new();
    let fmt_opts = FormatOptions::default();

    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        // Group this batch's rows by partition path, in order of first appearance.
        let formatters: Vec<ArrayFormatter> = part_idx
            .iter()
            .map(|i| ArrayFormatter::try_new(batch.column(*i).as_ref(), &fmt_opts))
            .collect::<std::result::Result<_, _>>()?;
        let mut groups: Vec<RowGroup> = Vec::new();
        let mut by_path: HashMap<String, usize> = HashMap::new();
        for r in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(part_idx.len());
            let mut path = String::new();
            for (k, i) in part_idx.iter().enumerate() {
                let col = batch.column(*i);
                let v = (!col.is_null(r)).then(|| formatters[k].value(r).to_string());
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(&partition_segment(schema.field(*i).name(), v.as_deref()));
                values.push((schema.field(*i).name().clone(), v));
            }
            match by_path.get(&path) {
                Some(g) => groups[*g].2.push(r as u32),
                None => {
                    by_path.insert(path.clone(), groups.len());
                    groups.push((path, values, vec![r as u32]));
                }
            }
        }
        for (path, values, rows) in groups {
            let sub = if part_idx.is_empty() {
                RecordBatch::try_new(
                    file_schema.clone(),
                    data_idx.iter().map(|i| batch.column(*i).clone()).collect(),
                )?
            } else {
                let idx = UInt32Array::from(rows);
                let cols: Vec<ArrayRef> = data_idx
                    .iter()
                    .map(|i| take(batch.column(*i).as_ref(), &idx, None))
                    .collect::<std::result::Result<_, _>>()?;
                RecordBatch::try_new(file_schema.clone(), cols)?
            };
            let p = parts.entry(path).or_insert_with(|| PartitionFiles {
                values,
                open: None,
                next: 0,
                done: Vec::new(),
            });
            if p.open.is_none() {
                p.open = Some(Open {
                    writer: ArrowWriter::try_new(
                        Vec::new(),
                        file_schema.clone(),
                        Some(props.clone()),
                    )?,
                    rows: 0,
                });
            }
            if let Some(o) = p.open.as_mut() {
                o.writer.write(&sub)?;
                o.rows += sub.num_rows() as u64;
                if o.writer.bytes_written() as u64 + o.writer.in_progress_size() as u64
                    >= output.max_file_bytes
                {
                    close(p, chunk_id)?;
                }
            }
        }
    }
    let mut entries = Vec::new();
    for (path, mut p) in parts {
        close(&mut p, chunk_id)?;
        for (name, bytes, rows) in p.done {
            let key = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            let size = bytes.len() as u64;
            before_put(entries.len())?;
            store.put(&key, bytes).await?;
            entries.push(FileEntry {
                key,
                partition: p.values.clone(),
                rows,
                bytes: size,
            });
        }
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(entries)
}

fn close(p: &mut PartitionFiles, chunk_id: &str) -> Result<()> {
    if let Some(o) = p.open.take() {
        let bytes = Bytes::from(o.writer.into_inner()?);
        p.done.push((
            format!("part-{chunk_id}-{:05}.parquet", p.next),
            bytes,
            o.rows,
        ));
        p.next += 1;
    }
    Ok(())
}
