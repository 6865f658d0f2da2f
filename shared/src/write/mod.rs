//! Partitioned, deterministic Parquet.
//!
//! Rows are split by the values of the partition columns into Hive-style paths
//! (`col=value/…`, values escaped as Hive does, nulls as `__HIVE_DEFAULT_PARTITION__`) and written as `part-<chunk_id>-<n>.parquet`, `n`
//! counting the files of that chunk in that partition. Names derive from the chunk id
//! only and the encoder is deterministic, so a chunk run twice writes the same keys with
//! the same bytes: a retry overwrites its own earlier attempt instead of adding to it.
//! A row whose partition path could not be a key at the output location (S3's 1,024
//! bytes, a local file name's 255) is set aside as a [`PartitionReject`], and the others
//! are written.
//!
//! This module splits and writes the rows ([`PartitionedWriter`]); `hive` names the
//! paths and files, `spill` keeps the finished pages waiting for their row group.

mod hive;
mod spill;

pub use hive::{
    LOCAL_MAX_NAME_BYTES, LOCAL_MAX_PATH_BYTES, NULL_PARTITION, S3_MAX_KEY_BYTES, partition_segment,
};
pub use spill::PAGE_MEMORY_BYTES;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::ids::ChunkId;
use crate::spec::{OutputCompression, OutputSpec};
use crate::store::ObjectStore;
use crate::{Error, Result};

use hive::{KeyLimit, object_key, part_file_name};
use spill::{Spill, SpillFactory};

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

/// A transformed row whose partition values cannot make a key at the output location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReject {
    /// The partition column at fault (the one with the longest value when the whole
    /// path is too long).
    pub column: String,
    /// What is wrong: the value's first bytes, its length and the limit.
    pub message: String,
    /// The transformed row as JSON.
    pub raw: String,
}

/// Bytes of a partition value a reject message quotes.
const QUOTED_VALUE_BYTES: usize = 64;

/// Data page size of the output files.
pub const PAGE_BYTES: usize = 256 * 1024;

/// Dictionary size past which a column chunk falls back to plain encoding. At 256 KiB
/// (the page size) each open column's dictionary was mostly the high-cardinality columns'
/// (keys, prices, comments), which fall back anyway; 64 KiB still holds a few thousand
/// distinct values, and on TPC-H lineitem gave smaller files in less CPU time.
pub const DICTIONARY_PAGE_BYTES: usize = 64 * 1024;

/// Writer properties for the output spec (also used for the aggregate table).
pub fn writer_properties(
    compression: OutputCompression,
    row_group_rows: usize,
) -> Result<WriterProperties> {
    let c = compression.codec()?;
    // The spec check refuses such a codec already; this guards the tables fanout builds
    // itself, since parquet-rs panics on a codec left out of the build.
    if !crate::codec::is_built(c) {
        return Err(Error::Parquet(parquet::errors::ParquetError::General(
            format!("this build cannot write {c}-compressed Parquet"),
        )));
    }
    Ok(WriterProperties::builder()
        .set_compression(c)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        // Each open column buffers a page (and a dictionary) before compressing it; with
        // a chunk's partitions open at once, 1 MiB pages made that the largest part of a
        // worker's memory. 256 KiB pages keep it small at little cost in size.
        .set_data_page_size_limit(PAGE_BYTES)
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
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

/// Memory the open files of one chunk may hold for row groups not yet flushed (column
/// encoders with their page buffers and dictionaries; finished pages wait apart, see
/// `Spill`): past it the open file holding the most is flushed early. Decided from
/// the data alone, so a chunk still writes the same bytes every time.
pub const ROW_GROUP_BUDGET_BYTES: usize = 32 * 1024 * 1024;

/// Rows a row group needs before the memory budget may flush it early.
pub const MIN_EARLY_ROW_GROUP_ROWS: usize = 64 * 1024;

/// Staged files a chunk keeps open at most (file descriptors are limited: 1,024 in
/// Lambda): past it the file opened first is closed, and its partition's next rows start
/// a new file. Decided by the data alone, as every file boundary.
pub const MAX_OPEN_FILES: usize = 256;

struct Open {
    writer: ArrowWriter<std::fs::File>,
    rows: u64,
    path: std::path::PathBuf,
}

struct PartitionFiles {
    values: Vec<(String, Option<String>)>,
    open: Option<Open>,
    next: usize,
    /// Finished files: (name, staged path, rows).
    done: Vec<(String, std::path::PathBuf, u64)>,
}

/// Writes a chunk's transformed rows batch by batch into partitioned Parquet files staged
/// on local disk (memory stays bounded whatever the chunk's size), then stores them.
pub struct PartitionedWriter {
    schema: SchemaRef,
    file_schema: SchemaRef,
    part_idx: Vec<usize>,
    data_idx: Vec<usize>,
    props: WriterProperties,
    max_file_bytes: u64,
    chunk_id: ChunkId,
    staging: tempfile::TempDir,
    spill: Arc<SpillFactory>,
    staged: usize,
    parts: BTreeMap<String, PartitionFiles>,
    keys: Option<RowConverter>,
    rows: u64,
    /// Partitions with an open file, oldest first.
    open_order: std::collections::VecDeque<String>,
    limit: KeyLimit,
    rejected: Vec<PartitionReject>,
}

impl std::fmt::Debug for PartitionedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionedWriter")
            .field("chunk_id", &self.chunk_id)
            .field("partitions", &self.parts.len())
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl PartitionedWriter {
    /// A writer for the chunk `chunk_id`'s rows of `schema`.
    pub fn new(output: &OutputSpec, chunk_id: &ChunkId, schema: &SchemaRef) -> Result<Self> {
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
        let keys = if part_idx.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                part_idx
                    .iter()
                    .map(|i| SortField::new(schema.field(*i).data_type().clone()))
                    .collect(),
            )?)
        };
        let staging = tempfile::Builder::new()
            .prefix("fanout-chunk-")
            .tempdir()
            .map_err(|e| Error::Staging {
                context: format!("creating a folder in {}", std::env::temp_dir().display()),
                source: e,
            })?;
        let spill = Arc::new(SpillFactory(Spill::create(
            staging.path().join("pages.spill"),
        )?));
        Ok(PartitionedWriter {
            schema: schema.clone(),
            file_schema,
            part_idx,
            data_idx,
            props: writer_properties(output.compression, output.row_group_rows)?,
            max_file_bytes: output.max_file_bytes,
            chunk_id: chunk_id.clone(),
            staging,
            spill,
            staged: 0,
            parts: BTreeMap::new(),
            keys,
            rows: 0,
            open_order: std::collections::VecDeque::new(),
            limit: KeyLimit::new(&output.location, chunk_id),
            rejected: Vec::new(),
        })
    }

    /// Rows written so far (rows set aside for their partition values not included).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Takes the rows set aside so far because their partition path cannot be a key.
    pub fn take_rejects(&mut self) -> Vec<PartitionReject> {
        std::mem::take(&mut self.rejected)
    }

    /// Bytes a partition path may take at this writer's output location.
    pub fn max_partition_path_bytes(&self) -> usize {
        self.limit.path_bytes()
    }

    /// Splits `batch` by partition and appends each part to its partition's open file;
    /// returns the rows of `batch` set aside because their partition path cannot be a key
    /// (usually none), so the caller can keep them out of what else it feeds (the aggregate).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let mut set_aside = Vec::new();
        if batch.num_rows() == 0 {
            return Ok(set_aside);
        }
        let mut kept = Vec::new();
        for (path, values, rows, problem) in self.groups(batch)? {
            match problem {
                Some((column, message)) => {
                    let all = || (0..batch.num_rows() as u32).collect();
                    for r in rows.unwrap_or_else(all) {
                        self.rejected.push(PartitionReject {
                            column: column.clone(),
                            message: message.clone(),
                            raw: capped_raw(crate::read::row_json(batch, r as usize)),
                        });
                        set_aside.push(r);
                    }
                }
                None => kept.push((path, values, rows)),
            }
        }
        for (path, values, sub) in self.split(batch, kept)? {
            self.rows += sub.num_rows() as u64;
            self.append(path, values, &sub)?;
        }
        self.keep_within_budget()?;
        Ok(set_aside)
    }

    /// The data columns of `batch` cut into one batch per partition of `parts`. The rows
    /// of several partitions are gathered in one `take` per column, ordered partition by
    /// partition, and each partition's batch is a slice of it: one copy of the batch
    /// instead of one small one per partition and column.
    fn split(
        &self,
        batch: &RecordBatch,
        parts: Vec<KeptPart<Option<Vec<u32>>>>,
    ) -> Result<Vec<KeptPart<RecordBatch>>> {
        let data = |cols: Vec<ArrayRef>| RecordBatch::try_new(self.file_schema.clone(), cols);
        let mut order: Vec<u32> = Vec::new();
        let mut lens = Vec::with_capacity(parts.len());
        for (_, _, rows) in &parts {
            match rows {
                Some(rows) => {
                    order.extend_from_slice(rows);
                    lens.push(rows.len());
                }
                // One partition has the whole batch: no copy at all.
                None => lens.push(batch.num_rows()),
            }
        }
        let all = if order.is_empty() {
            data(
                self.data_idx
                    .iter()
                    .map(|i| batch.column(*i).clone())
                    .collect(),
            )?
        } else {
            let idx = UInt32Array::from(order);
            data(
                self.data_idx
                    .iter()
                    .map(|i| take(batch.column(*i).as_ref(), &idx, None))
                    .collect::<std::result::Result<_, _>>()?,
            )?
        };
        let mut offset = 0;
        Ok(parts
            .into_iter()
            .zip(lens)
            .map(|((path, values, _), len)| {
                let sub = all.slice(offset, len);
                offset += len;
                (path, values, sub)
            })
            .collect())
    }

    /// The batch's rows grouped by partition path, in order of first appearance; `None`
    /// rows when the whole batch goes to one partition.
    fn groups(&self, batch: &RecordBatch) -> Result<Vec<BatchPart>> {
        let Some(conv) = &self.keys else {
            return Ok(vec![(String::new(), Vec::new(), None, None)]);
        };
        let cols: Vec<ArrayRef> = self
            .part_idx
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        let keys = conv.convert_columns(&cols)?;
        let mut first_rows: Vec<usize> = Vec::new();
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut by_key: HashMap<&[u8], usize> = HashMap::new();
        let mut last: Option<(&[u8], usize)> = None;
        for r in 0..batch.num_rows() {
            let k = keys.row(r);
            let k: &[u8] = k.data();
            let g = match last {
                Some((lk, g)) if lk == k => g,
                _ => {
                    let g = *by_key.entry(k).or_insert_with(|| {
                        first_rows.push(r);
                        members.push(Vec::new());
                        members.len() - 1
                    });
                    last = Some((k, g));
                    g
                }
            };
            members[g].push(r as u32);
        }
        let fmt_opts = FormatOptions::default();
        let formatters: Vec<ArrayFormatter> = cols
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &fmt_opts))
            .collect::<std::result::Result<_, _>>()?;
        let single = members.len() == 1;
        Ok(first_rows
            .into_iter()
            .zip(members)
            .map(|(r, rows)| {
                let mut values = Vec::with_capacity(cols.len());
                let mut segments = Vec::with_capacity(cols.len());
                for (k, i) in self.part_idx.iter().enumerate() {
                    let v = (!cols[k].is_null(r)).then(|| formatters[k].value(r).to_string());
                    let name = self.schema.field(*i).name();
                    segments.push(partition_segment(name, v.as_deref()));
                    values.push((name.clone(), v));
                }
                let path = segments.join("/");
                let problem = self.key_problem(&path, &segments, &values);
                (path, values, (!single).then_some(rows), problem)
            })
            .collect())
    }

    /// Why the partition path `path` (made of `segments`, for `values`) cannot hold
    /// files at the output location, as (column at fault, message), if it cannot.
    fn key_problem(
        &self,
        path: &str,
        segments: &[String],
        values: &[(String, Option<String>)],
    ) -> Option<(String, String)> {
        let segment_problem = segments
            .iter()
            .zip(values)
            .find_map(|(s, v)| Some((v, self.limit.segment_problem(s)?)));
        let (value, reason) = match segment_problem {
            Some(found) => found,
            None => {
                let reason = self.limit.path_problem(path)?;
                let longest = segments.iter().zip(values).max_by_key(|(s, _)| s.len())?.1;
                (longest, reason)
            }
        };
        let (column, v) = value;
        let v = v.as_deref().unwrap_or_default();
        Some((
            column.clone(),
            format!(
                "partition value of `{column}` starting {:?} ({} bytes) cannot be a key: {reason}",
                first_bytes(v, QUOTED_VALUE_BYTES),
                v.len()
            ),
        ))
    }

    fn append(
        &mut self,
        path: String,
        values: Vec<(String, Option<String>)>,
        sub: &RecordBatch,
    ) -> Result<()> {
        let opening = self.parts.get(&path).is_none_or(|p| p.open.is_none());
        if opening
            && self.open_order.len() >= MAX_OPEN_FILES
            && let Some(oldest) = self.open_order.pop_front()
            && let Some(p) = self.parts.get_mut(&oldest)
        {
            close(p, &self.chunk_id)?;
        }
        if opening {
            self.open_order.push_back(path.clone());
        }
        let p = self
            .parts
            .entry(path.clone())
            .or_insert_with(|| PartitionFiles {
                values,
                open: None,
                next: 0,
                done: Vec::new(),
            });
        if p.open.is_none() {
            let file = self
                .staging
                .path()
                .join(format!("{:06}.parquet", self.staged));
            self.staged += 1;
            let f = std::fs::File::create(&file).map_err(|e| Error::Staging {
                context: format!("creating {}", file.display()),
                source: e,
            })?;
            let options = ArrowWriterOptions::new()
                .with_properties(self.props.clone())
                .with_page_store_factory(self.spill.clone());
            p.open = Some(Open {
                writer: ArrowWriter::try_new_with_options(f, self.file_schema.clone(), options)?,
                rows: 0,
                path: file,
            });
        }
        if let Some(o) = p.open.as_mut() {
            o.writer.write(sub)?;
            o.rows += sub.num_rows() as u64;
            if o.writer.bytes_written() as u64 + o.writer.in_progress_size() as u64
                >= self.max_file_bytes
            {
                close(p, &self.chunk_id)?;
                self.open_order.retain(|q| *q != path);
            }
        }
        Ok(())
    }

    /// Flushes the open row groups holding the most memory while the files hold more than
    /// the budget. A row group is flushed early only once it has
    /// [`MIN_EARLY_ROW_GROUP_ROWS`]: an open file's encoders take about the same memory
    /// again as soon as it gets rows, so flushing smaller ones would only cut the files
    /// into small row groups.
    fn keep_within_budget(&mut self) -> Result<()> {
        loop {
            let mut total = 0usize;
            let mut largest: Option<(&mut Open, usize)> = None;
            for p in self.parts.values_mut() {
                if let Some(o) = p.open.as_mut() {
                    let n = o.writer.memory_size();
                    total += n;
                    if o.writer.in_progress_rows() >= MIN_EARLY_ROW_GROUP_ROWS
                        && largest.as_ref().is_none_or(|(_, m)| n > *m)
                    {
                        largest = Some((o, n));
                    }
                }
            }
            match largest {
                Some((o, n)) if total > ROW_GROUP_BUDGET_BYTES && n > 0 => o.writer.flush()?,
                _ => return Ok(()),
            }
        }
    }

    /// Closes every file and stores them; returns the files sorted by key.
    /// `before_put(n)` runs before the `n`-th file is stored (fault injection in tests).
    pub async fn finish(
        mut self,
        store: &dyn ObjectStore,
        before_put: &(dyn Fn(usize) -> Result<()> + Send + Sync),
    ) -> Result<Vec<FileEntry>> {
        let mut entries = Vec::new();
        let parts = std::mem::take(&mut self.parts);
        for (path, mut p) in parts {
            close(&mut p, &self.chunk_id)?;
            for (name, file, rows) in p.done {
                let key = object_key(&path, name);
                let size = std::fs::metadata(&file)
                    .map_err(|e| Error::Staging {
                        context: format!("reading {}", file.display()),
                        source: e,
                    })?
                    .len();
                before_put(entries.len())?;
                store.put_file(&key, &file).await?;
                // Free the staging space as soon as the file is stored.
                let _ = std::fs::remove_file(&file);
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
}

/// Rows of one batch bound for one partition: (path, column values, row indexes or all,
/// why the path cannot be a key as (column, message)).
type BatchPart = (
    String,
    Vec<(String, Option<String>)>,
    Option<Vec<u32>>,
    Option<(String, String)>,
);

/// Rows of one batch bound for a partition that can hold them: (path, column values,
/// the rows: their indexes, all of the batch, or the batch of them).
type KeptPart<R> = (String, Vec<(String, Option<String>)>, R);

/// The first `n` bytes of `s` at most, cut at a character boundary.
fn first_bytes(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes a chunk's transformed rows under `output` and returns the files, sorted by key.
/// `before_put(n)` runs before the `n`-th file is stored (fault injection in tests).
pub async fn write_partitioned(
    store: &dyn ObjectStore,
    output: &OutputSpec,
    chunk_id: &ChunkId,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    before_put: &(dyn Fn(usize) -> Result<()> + Send + Sync),
) -> Result<Vec<FileEntry>> {
    let mut w = PartitionedWriter::new(output, chunk_id, schema)?;
    for b in batches {
        w.write(b)?;
    }
    // This caller has no rejects file: a row that cannot be a key fails the write
    // instead of being dropped without a word.
    if let Some(r) = w.rejected.first() {
        return Err(Error::Transform {
            message: format!("{} rows cannot be written: {}", w.rejected.len(), r.message),
        });
    }
    w.finish(store, before_put).await
}

fn close(p: &mut PartitionFiles, chunk_id: &ChunkId) -> Result<()> {
    if let Some(o) = p.open.take() {
        o.writer.close()?;
        p.done
            .push((part_file_name(chunk_id, p.next), o.path, o.rows));
        p.next += 1;
    }
    Ok(())
}

/// Removes chunk staging folders (`fanout-chunk-*` in the temp folder) older than `age`:
/// leftovers of a process killed mid-chunk (a Lambda timeout keeps `/tmp`). A Lambda
/// worker calls it with zero at start (one process per execution environment); a fleet
/// worker sharing a host with others passes a margin above its longest chunk.
pub fn remove_stale_staging(age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with("fanout-chunk-")
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= age);
        if stale && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Most bytes of a set-aside row's text kept in its reject (the rejects file shows the
/// beginning; a row of huge values must not hold the worker's memory).
const MAX_REJECT_RAW_BYTES: usize = 1024;

/// `raw` cut to [`MAX_REJECT_RAW_BYTES`] at a character boundary, marked when cut.
fn capped_raw(mut raw: String) -> String {
    if raw.len() > MAX_REJECT_RAW_BYTES {
        let mut end = MAX_REJECT_RAW_BYTES;
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        raw.truncate(end);
        raw.push('…');
    }
    raw
}

#[cfg(test)]
mod tests;
