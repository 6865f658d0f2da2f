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
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowWriterOptions, PageKey, PageStore, PageStoreArgs, PageStoreFactory,
};
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

/// Memory the open files of one chunk may hold for row groups not yet flushed (column
/// encoders with their page buffers and dictionaries; finished pages wait apart, see
/// [`Spill`]): past it the open file holding the most is flushed early. Decided from
/// the data alone, so a chunk still writes the same bytes every time.
pub const ROW_GROUP_BUDGET_BYTES: usize = 32 * 1024 * 1024;

/// Rows a row group needs before the memory budget may flush it early.
pub const MIN_EARLY_ROW_GROUP_ROWS: usize = 64 * 1024;

/// Staged files a chunk keeps open at most (file descriptors are limited: 1,024 in
/// Lambda): past it the file opened first is closed, and its partition's next rows start
/// a new file. Decided by the data alone, as every file boundary.
pub const MAX_OPEN_FILES: usize = 256;

/// Compressed pages a chunk keeps on the heap while they wait for their row group to be
/// flushed; the pages past it wait in the spill file. A 64 MiB chunk of TPC-H lineitem
/// writes about 18 MB: writing it to the spill file and reading it back cost about 7 % of
/// the job's CPU time.
pub const PAGE_MEMORY_BYTES: usize = 16 * 1024 * 1024;

/// Where the finished pages of a chunk's open files wait for their row group to be
/// flushed: the first [`PAGE_MEMORY_BYTES`] on the heap, the rest in one spill file in
/// the chunk's staging folder, so a worker's memory does not grow with its row groups.
/// Pages go back in the order the writer asks; the file is emptied whenever no page in it
/// is still waiting, and holds at most the chunk's compressed output. One file per chunk,
/// not per open file: a chunk already keeps up to [`MAX_OPEN_FILES`] descriptors open.
/// Where a page waits never changes the bytes written.
#[derive(Debug)]
struct Spill {
    inner: std::sync::Mutex<SpillFile>,
    path: std::path::PathBuf,
}

#[derive(Debug)]
struct SpillFile {
    file: std::fs::File,
    end: u64,
    /// Pages put in the file and not yet taken (or released).
    held: usize,
    /// Bytes of the pages waiting on the heap, and how many may.
    memory: usize,
    memory_limit: usize,
}

impl Spill {
    fn create(path: std::path::PathBuf) -> Result<Arc<Spill>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::Staging {
                context: format!("creating {}", path.display()),
                source: e,
            })?;
        Ok(Arc::new(Spill {
            inner: std::sync::Mutex::new(SpillFile {
                file,
                end: 0,
                held: 0,
                memory: 0,
                memory_limit: PAGE_MEMORY_BYTES,
            }),
            path,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpillFile> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> parquet::errors::ParquetError {
        parquet::errors::ParquetError::External(Box::new(std::io::Error::new(
            e.kind(),
            format!("{what} the spill file {}: {e}", self.path.display()),
        )))
    }
}

impl SpillFile {
    /// One page fewer is waiting; with none left the file starts over, empty.
    fn release(&mut self, spill: &Spill) -> parquet::errors::Result<()> {
        self.held = self.held.saturating_sub(1);
        if self.held == 0 && self.end > 0 {
            self.file
                .set_len(0)
                .map_err(|e| spill.io_error("emptying", e))?;
            self.end = 0;
        }
        Ok(())
    }
}

/// Where one page waits.
enum Waiting {
    Heap(Bytes),
    /// (offset, length) in the spill file.
    File(u64, usize),
}

/// One column chunk's pages in the chunk's [`Spill`].
struct SpilledPages {
    spill: Arc<Spill>,
    /// Each page put, by key; `None` once taken.
    pages: Vec<Option<Waiting>>,
}

impl PageStore for SpilledPages {
    fn put(&mut self, value: Bytes) -> parquet::errors::Result<PageKey> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = self.spill.lock();
        let len = value.len();
        if f.memory + len <= f.memory_limit {
            // A copy: the writer's buffer may be larger than the page (a page header's
            // is 1 KiB), and the memory counted must be the memory held.
            f.memory += len;
            self.pages
                .push(Some(Waiting::Heap(Bytes::copy_from_slice(&value))));
        } else {
            let at = f.end;
            f.file
                .seek(SeekFrom::Start(at))
                .and_then(|_| f.file.write_all(&value))
                .map_err(|e| self.spill.io_error("writing to", e))?;
            self.pages.push(Some(Waiting::File(at, len)));
            f.end += len as u64;
            f.held += 1;
        }
        Ok(PageKey::new(self.pages.len() as u64 - 1))
    }

    fn take(&mut self, key: PageKey) -> parquet::errors::Result<Bytes> {
        use std::io::{Read, Seek, SeekFrom};
        let page = self
            .pages
            .get_mut(key.get() as usize)
            .and_then(Option::take)
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(format!(
                    "page {} of a column chunk is not among the pages waiting (spill file {})",
                    key.get(),
                    self.spill.path.display()
                ))
            })?;
        let mut f = self.spill.lock();
        match page {
            Waiting::Heap(b) => {
                f.memory -= b.len();
                Ok(b)
            }
            Waiting::File(offset, len) => {
                let mut buf = vec![0u8; len];
                f.file
                    .seek(SeekFrom::Start(offset))
                    .and_then(|_| f.file.read_exact(&mut buf))
                    .map_err(|e| self.spill.io_error("reading", e))?;
                f.release(&self.spill)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

impl Drop for SpilledPages {
    /// A column chunk dropped before its pages were taken (a failed write) gives them up,
    /// so the spill file can still be emptied and the heap budget used again.
    fn drop(&mut self) {
        if self.pages.iter().all(Option::is_none) {
            return;
        }
        let mut f = self.spill.lock();
        for page in self.pages.iter_mut().filter_map(Option::take) {
            match page {
                Waiting::Heap(b) => f.memory -= b.len(),
                Waiting::File(..) => {
                    let _ = f.release(&self.spill);
                }
            }
        }
    }
}

/// Hands each column chunk of a chunk's files a view of the chunk's [`Spill`].
#[derive(Debug)]
struct SpillFactory(Arc<Spill>);

impl PageStoreFactory for SpillFactory {
    fn create(&self, _args: &PageStoreArgs<'_>) -> parquet::errors::Result<Box<dyn PageStore>> {
        Ok(Box::new(SpilledPages {
            spill: self.0.clone(),
            pages: Vec::new(),
        }))
    }
}

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
    chunk_id: String,
    staging: tempfile::TempDir,
    spill: Arc<SpillFactory>,
    staged: usize,
    parts: BTreeMap<String, PartitionFiles>,
    keys: Option<RowConverter>,
    rows: u64,
    /// Partitions with an open file, oldest first.
    open_order: std::collections::VecDeque<String>,
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
    pub fn new(output: &OutputSpec, chunk_id: &str, schema: &SchemaRef) -> Result<Self> {
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
            chunk_id: chunk_id.to_string(),
            staging,
            spill,
            staged: 0,
            parts: BTreeMap::new(),
            keys,
            rows: 0,
            open_order: std::collections::VecDeque::new(),
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Splits `batch` by partition and appends each part to its partition's open file.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for (path, values, rows) in self.groups(batch)? {
            let sub = match rows {
                None => RecordBatch::try_new(
                    self.file_schema.clone(),
                    self.data_idx
                        .iter()
                        .map(|i| batch.column(*i).clone())
                        .collect(),
                )?,
                Some(rows) => {
                    let idx = UInt32Array::from(rows);
                    let cols: Vec<ArrayRef> = self
                        .data_idx
                        .iter()
                        .map(|i| take(batch.column(*i).as_ref(), &idx, None))
                        .collect::<std::result::Result<_, _>>()?;
                    RecordBatch::try_new(self.file_schema.clone(), cols)?
                }
            };
            self.append(path, values, &sub)?;
        }
        self.rows += batch.num_rows() as u64;
        self.keep_within_budget()
    }

    /// The batch's rows grouped by partition path, in order of first appearance; `None`
    /// rows when the whole batch goes to one partition.
    fn groups(&self, batch: &RecordBatch) -> Result<Vec<BatchPart>> {
        let Some(conv) = &self.keys else {
            return Ok(vec![(String::new(), Vec::new(), None)]);
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
                let mut path = String::new();
                for (k, i) in self.part_idx.iter().enumerate() {
                    let v = (!cols[k].is_null(r)).then(|| formatters[k].value(r).to_string());
                    if !path.is_empty() {
                        path.push('/');
                    }
                    let name = self.schema.field(*i).name();
                    path.push_str(&partition_segment(name, v.as_deref()));
                    values.push((name.clone(), v));
                }
                (path, values, (!single).then_some(rows))
            })
            .collect())
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
                let key = if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                };
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

/// Rows of one batch bound for one partition: (path, column values, row indexes or all).
type BatchPart = (String, Vec<(String, Option<String>)>, Option<Vec<u32>>);

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
    let mut w = PartitionedWriter::new(output, chunk_id, schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish(store, before_put).await
}

fn close(p: &mut PartitionFiles, chunk_id: &str) -> Result<()> {
    if let Some(o) = p.open.take() {
        o.writer.close()?;
        p.done.push((
            format!("part-{chunk_id}-{:05}.parquet", p.next),
            o.path,
            o.rows,
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    fn rows() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batches = (0..8)
            .map(|b| {
                let ids: Vec<i64> = (b * 25_000..(b + 1) * 25_000).collect();
                let names: Vec<Option<String>> = ids
                    .iter()
                    .map(|i| (i % 7 != 0).then(|| format!("name-{}", i % 5_000)))
                    .collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(ids)),
                        Arc::new(StringArray::from(names)),
                    ],
                )
                .expect("batch")
            })
            .collect();
        (schema, batches)
    }

    /// Writes `rows()` through a [`PartitionedWriter`] whose pages may wait on the heap up
    /// to `page_memory` bytes (the rest in the spill file) with `row_group_rows`, and
    /// encodes them in memory with the same properties; also returns the bytes of the
    /// pages that went through the spill file.
    async fn spilled_and_in_memory(
        row_group_rows: usize,
        page_memory: usize,
    ) -> (Vec<u8>, Vec<u8>, u64) {
        let (schema, batches) = rows();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::FsStore::new(dir.path());
        let output = OutputSpec {
            location: crate::location::Location::parse(&dir.path().display().to_string())
                .expect("location"),
            partition_by: vec![],
            compression: OutputCompression::Zstd(1),
            row_group_rows,
            max_file_bytes: u64::MAX,
        };
        let mut w = PartitionedWriter::new(&output, "c1", &schema).expect("writer");
        w.spill.0.lock().memory_limit = page_memory;
        let spill = w.spill.0.clone();
        let mut spilled = 0;
        for b in &batches {
            w.write(b).expect("write");
            spilled = spilled.max(spill.lock().end);
        }
        let files = w.finish(&store, &|_| Ok(())).await.expect("write");
        assert_eq!(files.len(), 1);
        let f = spill.lock();
        assert_eq!((f.memory, f.held), (0, 0), "every page taken back");
        let written = std::fs::read(dir.path().join(&files[0].key)).expect("read");
        let props = writer_properties(OutputCompression::Zstd(1), row_group_rows).expect("props");
        let in_memory = encode_parquet(&schema, &batches, props).expect("encode");
        (written, in_memory.to_vec(), spilled)
    }

    #[tokio::test]
    async fn pages_spilled_to_disk_give_the_bytes_of_an_in_memory_writer() {
        // 200,000 rows in pages of at most 20,000: each column went through the spill
        // file page by page, and came back in order.
        let (written, in_memory, spilled) = spilled_and_in_memory(1_000_000, 0).await;
        assert_eq!(written, in_memory);
        assert!(
            spilled as usize > written.len() / 2,
            "{spilled} bytes spilled"
        );
        // Some pages on the heap, the rest in the file; all of them on the heap.
        let (mixed, _, spilled) = spilled_and_in_memory(1_000_000, 100_000).await;
        assert_eq!(mixed, in_memory);
        assert!(spilled > 0 && (spilled as usize) < written.len() - 50_000);
        let (heap, _, spilled) = spilled_and_in_memory(1_000_000, PAGE_MEMORY_BYTES).await;
        assert_eq!(heap, in_memory);
        assert_eq!(spilled, 0);
    }

    #[tokio::test]
    async fn row_groups_sharing_the_spill_file_give_the_bytes_of_an_in_memory_writer() {
        let (written, in_memory, _) = spilled_and_in_memory(30_000, 0).await;
        // Seven row groups: the spill file was emptied after each and used again.
        use parquet::file::reader::FileReader;
        let meta = parquet::file::reader::SerializedFileReader::new(Bytes::from(written.clone()))
            .expect("parquet");
        assert_eq!(meta.metadata().num_row_groups(), 7);
        assert_eq!(written, in_memory);
    }

    #[tokio::test]
    async fn many_partitions_open_at_once_keep_whole_row_groups() {
        // 60 partitions of 16 columns each get rows from every batch: their encoders
        // together hold more than the budget, which must not cut their files into
        // row groups of a few rows.
        let mut fields = vec![Field::new("p", DataType::Int64, false)];
        fields.extend((0..15).map(|c| Field::new(format!("c{c}"), DataType::Utf8, false)));
        let schema = Arc::new(Schema::new(fields));
        let batches: Vec<RecordBatch> = (0..10)
            .map(|b| {
                let ids: Vec<i64> = (b * 30_000..(b + 1) * 30_000).collect();
                let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
                    ids.iter().map(|i| i % 60),
                ))];
                for c in 0..15 {
                    cols.push(Arc::new(StringArray::from_iter_values(
                        ids.iter().map(|i| format!("value {c}-{i}")),
                    )));
                }
                RecordBatch::try_new(schema.clone(), cols).expect("batch")
            })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::FsStore::new(dir.path());
        let output = OutputSpec {
            location: crate::location::Location::parse(&dir.path().display().to_string())
                .expect("location"),
            partition_by: vec!["p".into()],
            compression: OutputCompression::Zstd(1),
            row_group_rows: 1_000_000,
            max_file_bytes: u64::MAX,
        };
        let mut w = PartitionedWriter::new(&output, "c1", &schema).expect("writer");
        let mut peak = 0;
        for b in &batches {
            w.write(b).expect("write");
            let held: usize = w
                .parts
                .values()
                .filter_map(|p| p.open.as_ref())
                .map(|o| o.writer.memory_size())
                .sum();
            peak = peak.max(held);
        }
        // Flushing early would have kept this under the budget, in row groups of 500 rows.
        assert!(
            peak > ROW_GROUP_BUDGET_BYTES,
            "the case needs {peak} > the budget"
        );
        let files = w.finish(&store, &|_| Ok(())).await.expect("finish");
        assert_eq!(files.len(), 60);
        use parquet::file::reader::FileReader;
        for f in &files {
            let bytes = Bytes::from(std::fs::read(dir.path().join(&f.key)).expect("read"));
            let r = parquet::file::reader::SerializedFileReader::new(bytes).expect("parquet");
            assert_eq!(f.rows, 5_000);
            assert_eq!(r.metadata().num_row_groups(), 1, "{}", f.key);
        }
    }

    /// A spill file in `dir` keeping at most `memory_limit` bytes of pages on the heap.
    fn spill_in(dir: &tempfile::TempDir, memory_limit: usize) -> Arc<Spill> {
        let spill = Spill::create(dir.path().join("0.spill")).expect("spill");
        spill.lock().memory_limit = memory_limit;
        spill
    }

    /// A column chunk's view of `spill`.
    fn pages_of(spill: &Arc<Spill>) -> SpilledPages {
        SpilledPages {
            spill: spill.clone(),
            pages: Vec::new(),
        }
    }

    #[test]
    fn a_spill_file_returns_pages_by_key_and_is_emptied_by_the_last_take() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spill = spill_in(&dir, 0);
        let (mut a, mut b) = (pages_of(&spill), pages_of(&spill));
        let a0 = a.put(Bytes::from_static(b"first page of a")).expect("put");
        let b0 = b.put(Bytes::from_static(b"b")).expect("put");
        let a1 = a.put(Bytes::from_static(b"second page of a")).expect("put");
        let size = || std::fs::metadata(&spill.path).expect("metadata").len();
        assert_eq!(size(), 32);
        assert_eq!(&a.take(a1).expect("take")[..], b"second page of a");
        assert_eq!(&a.take(a0).expect("take")[..], b"first page of a");
        assert_eq!(size(), 32, "b's page is still held");
        assert_eq!(&b.take(b0).expect("take")[..], b"b");
        assert_eq!(size(), 0);
        // The file is reused from its start.
        let b1 = b.put(Bytes::from_static(b"again")).expect("put");
        assert_eq!(size(), 5);
        assert_eq!(&b.take(b1).expect("take")[..], b"again");
        assert!(a.take(PageKey::new(7)).is_err());
        assert!(a.take(a0).is_err(), "a page is taken once");
        // A column chunk dropped with pages still waiting gives them up.
        let mut c = pages_of(&spill);
        c.put(Bytes::from_static(b"never taken")).expect("put");
        assert_eq!(size(), 11);
        drop(c);
        assert_eq!(size(), 0);
    }

    #[test]
    fn pages_wait_on_the_heap_up_to_its_limit_and_in_the_file_past_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spill = spill_in(&dir, 20);
        let mut a = pages_of(&spill);
        let size = || std::fs::metadata(&spill.path).expect("metadata").len();
        let a0 = a.put(Bytes::from_static(b"sixteen bytes...")).expect("put");
        let a1 = a.put(Bytes::from_static(b"five!")).expect("put");
        let a2 = a.put(Bytes::from_static(b"four")).expect("put");
        assert_eq!(
            (spill.lock().memory, size()),
            (20, 5),
            "the second page spilled"
        );
        assert_eq!(&a.take(a1).expect("take")[..], b"five!");
        assert_eq!(size(), 0);
        assert_eq!(&a.take(a0).expect("take")[..], b"sixteen bytes...");
        assert_eq!(spill.lock().memory, 4);
        let a3 = a.put(Bytes::from_static(b"heap again!!")).expect("put");
        assert_eq!((spill.lock().memory, size()), (16, 0));
        assert_eq!(&a.take(a2).expect("take")[..], b"four");
        assert_eq!(&a.take(a3).expect("take")[..], b"heap again!!");
        assert_eq!(spill.lock().memory, 0);
        // A column chunk dropped with pages still waiting gives the heap back too.
        a.put(Bytes::from_static(b"never taken")).expect("put");
        a.put(Bytes::from_static(b"never taken either"))
            .expect("put");
        assert_eq!((spill.lock().memory, size()), (11, 18));
        drop(a);
        assert_eq!((spill.lock().memory, size()), (0, 0));
    }
}
