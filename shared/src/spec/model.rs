//! The resolved spec's parts: what each section of a checked spec holds.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use regex::Regex;

use crate::location::Location;

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Delimited text.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

/// How input objects are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputCompression {
    /// From the key's suffix: `.gz` gzip, `.zst`/`.zstd` zstd, otherwise none.
    Auto,
    /// Plain objects.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl InputCompression {
    /// The compression of one object, resolving `Auto` from its key.
    pub fn of_key(self, key: &str) -> InputCompression {
        match self {
            InputCompression::Auto => {
                let k = key.to_ascii_lowercase();
                if k.ends_with(".gz") || k.ends_with(".gzip") {
                    InputCompression::Gzip
                } else if k.ends_with(".zst") || k.ends_with(".zstd") {
                    InputCompression::Zstd
                } else {
                    InputCompression::None
                }
            }
            other => other,
        }
    }
}

/// CSV dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Field delimiter byte.
    pub delimiter: u8,
    /// Quote byte.
    pub quote: u8,
    /// Escape byte; `None` means quotes are escaped by doubling them.
    pub escape: Option<u8>,
    /// Whether each object starts with a header row (matched to the schema by name).
    pub header: bool,
    /// Field values read as null.
    pub null_values: Vec<String>,
    /// Quoted fields may hold newlines: objects are then never split by byte range.
    pub multiline: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            escape: None,
            header: true,
            null_values: vec![String::new()],
            multiline: false,
        }
    }
}

/// Where and what to read.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// Prefix holding the input objects.
    pub location: Location,
    /// Glob patterns over keys relative to the location; empty means all.
    pub include: Vec<String>,
    /// Glob patterns excluded.
    pub exclude: Vec<String>,
    /// File format.
    pub format: Format,
    /// Compression.
    pub compression: InputCompression,
    /// CSV dialect (defaults when the format is not CSV).
    pub csv: CsvOptions,
    /// Target schema: names, types, nullability.
    pub schema: SchemaRef,
    /// Longest CSV or JSON record read, in bytes; a longer one is rejected
    /// (`input.max_record_size`).
    pub max_record_bytes: u64,
    /// Largest Parquet row group a worker reads, as the compressed bytes of its column
    /// chunks of the schema's columns (`input.max_row_group_size`): planning refuses an
    /// object with a larger one.
    pub max_row_group_bytes: u64,
}

/// Chunk sizing.
#[derive(Debug, Clone, Copy)]
pub struct ChunkingSpec {
    /// Target bytes per chunk.
    pub target_bytes: u64,
    /// Most objects packed into one chunk.
    pub max_objects_per_chunk: usize,
}

/// One validation check on one column.
#[derive(Debug, Clone)]
pub enum Check {
    /// The value must be present.
    NotNull,
    /// The value must be at least this (a one-element array of the column's type).
    Min(ArrayRef),
    /// The value must be at most this.
    Max(ArrayRef),
    /// The value must be one of these (canonical text of the column's type).
    OneOf(Arc<HashSet<String>>),
    /// The text must match this regular expression.
    Matches(Regex),
    /// A float must be neither NaN nor infinite.
    Finite,
}

/// A validation rule: a check on a schema column.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Column name.
    pub column: String,
    /// Column index in the input schema.
    pub index: usize,
    /// The check.
    pub check: Check,
    /// The rule as written, for reject reasons (`min: 0`).
    pub label: String,
}

/// A small table joined to every chunk.
#[derive(Debug, Clone)]
pub struct LookupSpec {
    /// Table name in SQL.
    pub name: String,
    /// Object (a single file) holding it.
    pub location: Location,
    /// Its format.
    pub format: Format,
    /// CSV dialect.
    pub csv: CsvOptions,
    /// Declared schema, or `None` to read every CSV/JSON column as text (Parquet keeps its own).
    pub schema: Option<SchemaRef>,
    /// The version (an [`crate::store::ObjectMeta::etag`]) every read must find: the
    /// planner records the version it saw in the job's stored spec, so every worker joins
    /// the same rows; `None` until planned (or pinned by hand).
    pub etag: Option<String>,
}

/// The SQL step.
#[derive(Debug, Clone, Default)]
pub struct TransformSpec {
    /// Lookup tables.
    pub lookups: Vec<LookupSpec>,
    /// SQL over the table `input`; `None` passes rows through.
    pub sql: Option<String>,
}

/// Parquet codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputCompression {
    /// zstd at a level 1–22.
    Zstd(i32),
    /// Snappy.
    Snappy,
    /// gzip at a level 0–9.
    Gzip(u32),
    /// LZ4 (raw).
    Lz4,
    /// Uncompressed.
    None,
}

impl OutputCompression {
    /// The Parquet codec at its level; an error for a level out of the codec's range.
    pub fn codec(self) -> parquet::errors::Result<parquet::basic::Compression> {
        use parquet::basic::{Compression, GzipLevel, ZstdLevel};
        Ok(match self {
            OutputCompression::Zstd(l) => Compression::ZSTD(ZstdLevel::try_new(l)?),
            OutputCompression::Gzip(l) => Compression::GZIP(GzipLevel::try_new(l)?),
            OutputCompression::Snappy => Compression::SNAPPY,
            OutputCompression::Lz4 => Compression::LZ4_RAW,
            OutputCompression::None => Compression::UNCOMPRESSED,
        })
    }
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// Output prefix.
    pub location: Location,
    /// Hive partition columns (of the transformed rows), in path order.
    pub partition_by: Vec<String>,
    /// Codec.
    pub compression: OutputCompression,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Roll to a new file past this size.
    pub max_file_bytes: u64,
    /// `output.target_file_size`: the size the compaction stage packs each partition's
    /// chunk files to, once every chunk has committed; `None` when turned off (`off`),
    /// and then the chunk files are the output.
    pub target_file_bytes: Option<u64>,
    /// The table the job's output is registered as when it finalizes.
    pub catalog: Option<CatalogSpec>,
}

/// `output.catalog`: the Glue Data Catalog table of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSpec {
    /// Glue database (it must exist).
    pub database: String,
    /// Table name (created by the first job).
    pub table: String,
    /// Write Athena partition projection properties instead of adding partitions.
    pub partition_projection: bool,
}

/// Where bad records go and how many a job tolerates.
#[derive(Debug, Clone)]
pub struct RejectsSpec {
    /// Rejects prefix.
    pub location: Location,
    /// Job fails when rejected / read exceeds this.
    pub max_ratio: f64,
}

/// Aggregate functions that merge exactly from per-chunk partials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggFn {
    /// Row count (`column` absent) or non-null count.
    Count,
    /// Sum; exact for integers and decimals.
    Sum,
    /// Average; exact sum and count merged, divided at the end.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
}

/// One aggregate measure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Measure {
    /// Output column name.
    pub name: String,
    /// Function.
    #[serde(rename = "fn")]
    pub function: AggFn,
    /// Input column (of the transformed rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

/// The aggregate computed over the transformed rows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AggregateSpec {
    /// Group-by columns.
    pub group_by: Vec<String>,
    /// Measures.
    pub measures: Vec<Measure>,
}

/// Queue behaviour of a job's chunk messages.
#[derive(Debug, Clone, Copy)]
pub struct QueueSpec {
    /// Receives before dead-lettering.
    pub max_receive_count: u32,
    /// Visibility timeout of a received message, seconds.
    pub visibility_timeout_s: u64,
    /// Largest chunk message (and `SendMessageBatch` payload): planning sizes packed
    /// chunks to fit it, the embedded queue enforces it.
    pub max_message_bytes: usize,
}
