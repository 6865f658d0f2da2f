//! The job spec: raw input validated into a resolved [`JobSpec`] before any work starts.
//!
//! Two stages, as in ripgrep's configuration: [`raw`] holds serde shapes; [`JobSpec::parse`]
//! checks every field and builds typed values. Every problem found is reported at once,
//! each naming the field path and its line in the source file.

mod raw;
pub mod yaml;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use regex::Regex;

use crate::location::Location;
pub use raw::RawSpec;

/// Default chunk size for splittable inputs.
pub const DEFAULT_TARGET_BYTES: u64 = 64 * 1024 * 1024;
/// Default cap on small objects packed into one chunk (keeps a chunk message far below SQS's 256 KiB).
pub const DEFAULT_MAX_OBJECTS_PER_CHUNK: usize = 100;
/// Default rows per Parquet row group.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 1_000_000;
/// Default maximum size of one output file.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Default number of receives before a chunk message is dead-lettered (SQS `maxReceiveCount`).
pub const DEFAULT_MAX_RECEIVE_COUNT: u32 = 3;
/// Default visibility timeout of a received chunk message.
pub const DEFAULT_VISIBILITY_TIMEOUT_S: u64 = 300;
/// Default CloudWatch namespace.
pub const DEFAULT_METRICS_NAMESPACE: &str = "Fanout";

/// One problem in a spec: the field, its line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `validate[1].column`; empty for the document itself.
    pub field: String,
    /// 1-based line in the source, when known.
    pub line: Option<usize>,
    /// What is wrong and what is expected.
    pub message: String,
}

/// A spec file that could not be read, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecFileError {
    /// The file could not be read.
    #[error("cannot read job spec {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The spec was refused.
    #[error(transparent)]
    Invalid(#[from] SpecError),
}

/// A refused spec: every problem found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct SpecError {
    /// The file (or other source) the spec came from.
    pub source_name: String,
    /// The problems, in document order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid job spec {} ({n} problem{})",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}", self.source_name)?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if p.field.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": `{}`: {}", p.field, p.message)?;
            }
        }
        Ok(())
    }
}

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
}

/// A validated job spec.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// Fixed job id, or `None` to derive it from the spec and the input listing.
    pub job_id: Option<String>,
    /// Plans, commit records and manifests.
    pub work: Location,
    /// Input.
    pub input: InputSpec,
    /// Chunking.
    pub chunking: ChunkingSpec,
    /// Validation rules, in spec order.
    pub rules: Vec<Rule>,
    /// Transform.
    pub transform: TransformSpec,
    /// Output.
    pub output: OutputSpec,
    /// Rejects.
    pub rejects: RejectsSpec,
    /// Aggregate.
    pub aggregate: Option<AggregateSpec>,
    /// CloudWatch namespace.
    pub metrics_namespace: String,
    /// Queue behaviour.
    pub queue: QueueSpec,
    /// The resolved spec as JSON, stored as `spec.json` and hashed into the job id.
    pub resolved: serde_json::Value,
    /// The parsed source, for the line of a field found wrong later (pre-flight).
    pub source: Arc<yaml::Document>,
    /// Server-side encryption of everything the job writes to S3.
    pub sse: crate::location::Sse,
    /// Input restricted to these keys (set by an upload event), else every selected object.
    pub only_keys: Option<Vec<String>>,
    /// Input objects (key, version) left out: committed by earlier jobs (`--since-last`).
    pub skip_objects: Option<std::collections::HashSet<(String, String)>>,
}

impl JobSpec {
    /// Parses and validates a spec from YAML or JSON text; `source_name` names it in errors.
    ///
    /// ```
    /// let spec = fanout::spec::JobSpec::parse("job.yaml", r#"
    /// name: demo
    /// input: { location: data/, format: csv, schema: [{ name: id, type: int64 }] }
    /// output: { location: out/demo/ }
    /// rejects: { location: out/rejects/ }
    /// "#).unwrap();
    /// assert_eq!(spec.input.schema.field(0).name(), "id");
    ///
    /// let err = fanout::spec::JobSpec::parse("job.yaml", "name: demo\ninput: 3\n").unwrap_err();
    /// assert!(err.to_string().contains("job.yaml:2: `input`"));
    /// ```
    pub fn parse(source_name: &str, text: &str) -> Result<JobSpec, SpecError> {
        let refuse = |field: String, line: Option<usize>, message: String| SpecError {
            source_name: source_name.to_string(),
            problems: vec![Problem {
                field,
                line,
                message,
            }],
        };
        let doc = yaml::parse(text).map_err(|e| refuse(String::new(), Some(e.line), e.message))?;
        if !doc.value.is_object() {
            return Err(refuse(
                String::new(),
                Some(1),
                "a job spec is a mapping of fields (name, input, output, rejects, …)".into(),
            ));
        }
        let raw: RawSpec = serde_path_to_error::deserialize(&doc.value).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            let line = doc.line_of(&field);
            refuse(field, line, e.into_inner().to_string())
        })?;
        let mut checker = Checker {
            doc: &doc,
            problems: Vec::new(),
        };
        let spec = checker.resolve(raw);
        if checker.problems.is_empty()
            && let Some(mut spec) = spec
        {
            spec.source = Arc::new(doc);
            return Ok(spec);
        }
        let mut problems = checker.problems;
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(SpecError {
            source_name: source_name.to_string(),
            problems,
        })
    }

    /// Reads and validates a spec file.
    pub fn from_file(path: &std::path::Path) -> Result<JobSpec, SpecFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(JobSpec::parse(&path.display().to_string(), &text)?)
    }

    /// Moves the job's records to `work` (a deployment setting overriding the spec's).
    pub fn with_work(mut self, work: Location) -> Self {
        self.resolved["work"] = serde_json::Value::String(work.to_string());
        self.work = work;
        self
    }

    /// Restricts the input to these keys (relative to the input location): an upload
    /// event plans a job over exactly the objects it names.
    pub fn with_only_keys(mut self, keys: Vec<String>) -> Self {
        self.only_keys = Some(keys);
        self
    }

    /// Leaves out these input objects (key, version): what earlier jobs committed.
    pub fn with_skipped(mut self, objects: std::collections::HashSet<(String, String)>) -> Self {
        self.skip_objects = Some(objects);
        self
    }

    /// The line of a field in the spec's source.
    pub fn line_of(&self, field: &str) -> Option<usize> {
        self.source.line_of(field)
    }

    /// The input schema with every column nullable, as parsed before `not_null` checks.
    pub fn parse_schema(&self) -> SchemaRef {
        nullable(&self.input.schema)
    }
}

/// The schema with every field nullable.
pub(crate) fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

struct Checker<'a> {
    doc: &'a yaml::Document,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let field = field.into();
        let line = self.doc.line_of(&field);
        self.problems.push(Problem {
            field,
            line,
            message: message.into(),
        });
    }

    fn location(&mut self, field: &str, value: &str) -> Option<Location> {
        match Location::parse(value) {
            Ok(l) => Some(l),
            Err(message) => {
                self.problem(field, message);
                None
            }
        }
    }

    fn resolve(&mut self, raw: RawSpec) -> Option<JobSpec> {
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 64
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            self.problem(
                "name",
                format!(
                    "`{}` is not a job name: use 1–64 letters, digits, `-` or `_`",
                    raw.name
                ),
            );
        }
        if let Some(id) = &raw.job_id
            && (id.is_empty()
                || id.len() > 128
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        {
            self.problem(
                "job_id",
                format!("`{id}` is not a job id: use letters, digits, `-`, `_` or `.`"),
            );
        }
        let work = self.location("work", &raw.work);

        // input
        let input_location = self.location("input.location", &raw.input.location);
        let format = match raw.input.format.as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            "parquet" => Some(Format::Parquet),
            other => {
                self.problem(
                    "input.format",
                    format!("unknown format `{other}`: expected csv, jsonl or parquet"),
                );
                None
            }
        };
        let compression = match raw.input.compression.as_deref().unwrap_or("auto") {
            "auto" => InputCompression::Auto,
            "none" => InputCompression::None,
            "gzip" | "gz" => InputCompression::Gzip,
            "zstd" => InputCompression::Zstd,
            other => {
                self.problem(
                    "input.compression",
                    format!("unknown compression `{other}`: expected auto, none, gzip or zstd"),
                );
                InputCompression::Auto
            }
        };
        if raw.input.csv.is_some() && format.is_some_and(|f| f != Format::Csv) {
            self.problem("input.csv", "CSV options given but the format is not csv");
        }
        let csv = self.csv("input.csv", raw.input.csv.as_ref());
        for (field, patterns) in [
            ("input.include", &raw.input.include),
            ("input.exclude", &raw.input.exclude),
        ] {
            for (i, p) in patterns.iter().enumerate() {
                if let Err(e) = globset::Glob::new(p) {
                    self.problem(format!("{field}[{i}]"), format!("bad glob `{p}`: {e}"));
                }
            }
        }
        let schema = self.schema("input.schema", &raw.input.schema, true);

        // chunking
        let target_bytes = match &raw.chunking.target_size {
            None => DEFAULT_TARGET_BYTES,
            Some(v) => self
                .size("chunking.target_size", v, 1)
                .unwrap_or(DEFAULT_TARGET_BYTES),
        };
        let max_objects_per_chunk = match raw.chunking.max_objects_per_chunk {
            None => DEFAULT_MAX_OBJECTS_PER_CHUNK,
            Some(n) if (1..=1000).contains(&n) => n as usize,
            Some(n) => {
                self.problem(
                    "chunking.max_objects_per_chunk",
                    format!("{n} is out of range: expected 1 to 1000"),
                );
                DEFAULT_MAX_OBJECTS_PER_CHUNK
            }
        };

        // validation rules
        let mut rules = Vec::new();
        if let Some(schema) = &schema {
            for (i, r) in raw.validate.iter().enumerate() {
                rules.extend(self.rules(i, r, schema));
            }
            for (index, f) in schema.fields().iter().enumerate() {
                if !f.is_nullable() {
                    rules.insert(
                        rules
                            .iter()
                            .filter(|r| matches!(r.check, Check::NotNull))
                            .count(),
                        Rule {
                            column: f.name().clone(),
                            index,
                            check: Check::NotNull,
                            label: "not_null".into(),
                        },
                    );
                }
            }
        }

        // transform
        let mut lookups = Vec::new();
        let mut lookup_names = HashSet::new();
        for (i, l) in raw.transform.lookups.iter().enumerate() {
            let field = format!("transform.lookups[{i}]");
            if !is_identifier(&l.name) || l.name.eq_ignore_ascii_case("input") {
                self.problem(
                    format!("{field}.name"),
                    format!(
                        "`{}` cannot name a table: use letters, digits and `_`, not `input`",
                        l.name
                    ),
                );
            } else if !lookup_names.insert(l.name.to_ascii_lowercase()) {
                self.problem(
                    format!("{field}.name"),
                    format!("lookup `{}` is declared twice", l.name),
                );
            }
            let location = self.location(&format!("{field}.location"), &l.location);
            let format = match l.format.as_str() {
                "csv" => Some(Format::Csv),
                "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
                "parquet" => Some(Format::Parquet),
                other => {
                    self.problem(
                        format!("{field}.format"),
                        format!("unknown format `{other}`: expected csv, jsonl or parquet"),
                    );
                    None
                }
            };
            let csv = self.csv(&format!("{field}.csv"), l.csv.as_ref());
            let schema = if l.schema.is_empty() {
                None
            } else {
                self.schema(&format!("{field}.schema"), &l.schema, false)
            };
            if let (Some(location), Some(format)) = (location, format) {
                lookups.push(LookupSpec {
                    name: l.name.clone(),
                    location,
                    format,
                    csv,
                    schema,
                });
            }
        }
        if let Some(sql) = &raw.transform.sql
            && sql.trim().is_empty()
        {
            self.problem(
                "transform.sql",
                "the SQL is empty: remove the field to pass rows through",
            );
        }

        // output
        let output_location = self.location("output.location", &raw.output.location);
        let mut seen = HashSet::new();
        for (i, c) in raw.output.partition_by.iter().enumerate() {
            if c.is_empty() || !seen.insert(c) {
                self.problem(
                    format!("output.partition_by[{i}]"),
                    format!("partition column `{c}` is empty or repeated"),
                );
            }
        }
        if raw.transform.sql.is_none()
            && let Some(schema) = &schema
        {
            for (i, c) in raw.output.partition_by.iter().enumerate() {
                if schema.index_of(c).is_err() {
                    self.problem(
                        format!("output.partition_by[{i}]"),
                        format!("unknown column `{c}`: {}", columns_hint(schema)),
                    );
                }
            }
        }
        if !raw.output.partition_by.is_empty() && raw.output.partition_by.len() > 8 {
            self.problem("output.partition_by", "more than 8 partition columns");
        }
        let output_compression =
            self.output_compression(raw.output.compression.as_deref().unwrap_or("zstd(3)"));
        let row_group_rows = match raw.output.row_group_rows {
            None => DEFAULT_ROW_GROUP_ROWS,
            Some(n) if (1..=100_000_000).contains(&n) => n as usize,
            Some(n) => {
                self.problem(
                    "output.row_group_rows",
                    format!("{n} is out of range: expected 1 to 100000000"),
                );
                DEFAULT_ROW_GROUP_ROWS
            }
        };
        let max_file_bytes = match &raw.output.max_file_size {
            None => DEFAULT_MAX_FILE_BYTES,
            Some(v) => self
                .size("output.max_file_size", v, 1024)
                .unwrap_or(DEFAULT_MAX_FILE_BYTES),
        };
        if let (Some(i), Some(o)) = (&input_location, &output_location)
            && (o.is_within(i) || i.is_within(o))
        {
            self.problem(
                "output.location",
                format!("`{o}` overlaps the input `{i}`: a later run would read its own output"),
            );
        }

        // rejects
        let rejects_location = self.location("rejects.location", &raw.rejects.location);
        let max_ratio = raw.rejects.max_ratio.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&max_ratio) {
            self.problem(
                "rejects.max_ratio",
                format!("{max_ratio} is not a ratio: expected 0 to 1 (0.01 = 1%)"),
            );
        }
        if let (Some(i), Some(r)) = (&input_location, &rejects_location)
            && r.is_within(i)
        {
            self.problem(
                "rejects.location",
                format!("`{r}` lies inside the input `{i}`"),
            );
        }

        // aggregate
        let aggregate = raw.aggregate.as_ref().and_then(|a| {
            self.aggregate(
                a,
                raw.transform
                    .sql
                    .is_none()
                    .then_some(schema.as_ref())
                    .flatten(),
            )
        });

        let namespace = raw
            .metrics
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_METRICS_NAMESPACE.into());
        if namespace.is_empty()
            || namespace.len() > 255
            || namespace.starts_with(':')
            || namespace.starts_with("AWS/")
        {
            self.problem("metrics.namespace", format!("`{namespace}` is not a CloudWatch namespace (1–255 characters, not starting with `AWS/`)"));
        }
        let max_receive_count = raw
            .queue
            .max_receive_count
            .unwrap_or(DEFAULT_MAX_RECEIVE_COUNT);
        if !(1..=1000).contains(&max_receive_count) {
            self.problem(
                "queue.max_receive_count",
                format!("{max_receive_count} is out of range: SQS accepts 1 to 1000"),
            );
        }
        let visibility_timeout_s = raw
            .queue
            .visibility_timeout_s
            .unwrap_or(DEFAULT_VISIBILITY_TIMEOUT_S);
        if visibility_timeout_s > 43_200 {
            self.problem(
                "queue.visibility_timeout_s",
                format!("{visibility_timeout_s} is out of range: SQS accepts 0 to 43200 seconds"),
            );
        }

        let sse = match (
            raw.storage.sse.as_deref(),
            raw.storage.kms_key_id.as_deref(),
        ) {
            (None | Some("bucket_default"), None) => crate::location::Sse::BucketDefault,
            (Some("s3" | "aes256" | "AES256"), None) => crate::location::Sse::S3,
            (Some("kms" | "aws:kms"), Some(k)) if !k.is_empty() => {
                crate::location::Sse::Kms(k.to_string())
            }
            (Some("kms" | "aws:kms"), _) => {
                self.problem("storage.kms_key_id", "SSE-KMS needs the key id or ARN");
                crate::location::Sse::BucketDefault
            }
            (None | Some("bucket_default" | "s3" | "aes256" | "AES256"), Some(_)) => {
                self.problem(
                    "storage.kms_key_id",
                    "a KMS key is only used with `sse: kms`",
                );
                crate::location::Sse::BucketDefault
            }
            (Some(other), _) => {
                self.problem(
                    "storage.sse",
                    format!("unknown encryption `{other}`: expected bucket_default, s3 or kms"),
                );
                crate::location::Sse::BucketDefault
            }
        };
        let mut resolved_raw = raw.clone();
        resolved_raw.chunking.target_size = Some(serde_json::json!(target_bytes));
        resolved_raw.output.max_file_size = Some(serde_json::json!(max_file_bytes));
        let resolved = serde_json::to_value(&resolved_raw).ok()?;

        Some(JobSpec {
            name: raw.name,
            job_id: raw.job_id,
            work: work?,
            input: InputSpec {
                location: input_location?,
                include: raw.input.include,
                exclude: raw.input.exclude,
                format: format?,
                compression,
                csv,
                schema: schema?,
            },
            chunking: ChunkingSpec {
                target_bytes,
                max_objects_per_chunk,
            },
            rules,
            transform: TransformSpec {
                lookups,
                sql: raw.transform.sql,
            },
            output: OutputSpec {
                location: output_location?,
                partition_by: raw.output.partition_by,
                compression: output_compression?,
                row_group_rows,
                max_file_bytes,
            },
            rejects: RejectsSpec {
                location: rejects_location?,
                max_ratio,
            },
            aggregate,
            metrics_namespace: namespace,
            queue: QueueSpec {
                max_receive_count,
                visibility_timeout_s,
            },
            resolved,
            source: Arc::new(yaml::Document::default()),
            sse,
            only_keys: None,
            skip_objects: None,
        })
    }

    fn csv(&mut self, field: &str, raw: Option<&raw::RawCsv>) -> CsvOptions {
        let mut o = CsvOptions::default();
        let Some(raw) = raw else { return o };
        let one_byte = |this: &mut Self, name: &str, v: &Option<String>| -> Option<u8> {
            let v = v.as_ref()?;
            let v = if v == "\\t" { "\t" } else { v.as_str() };
            if v.len() == 1 && v.is_ascii() {
                Some(v.as_bytes()[0])
            } else {
                this.problem(
                    format!("{field}.{name}"),
                    format!("`{v}` must be a single ASCII character"),
                );
                None
            }
        };
        if let Some(b) = one_byte(self, "delimiter", &raw.delimiter) {
            o.delimiter = b;
        }
        if let Some(b) = one_byte(self, "quote", &raw.quote) {
            o.quote = b;
        }
        o.escape = one_byte(self, "escape", &raw.escape);
        if o.delimiter == o.quote || (o.delimiter == b'\n' || o.delimiter == b'\r') {
            self.problem(
                format!("{field}.delimiter"),
                "the delimiter must differ from the quote and from line ends",
            );
        }
        if let Some(h) = raw.header {
            o.header = h;
        }
        if let Some(n) = &raw.null_values {
            o.null_values = n.clone();
        }
        if let Some(m) = raw.multiline {
            o.multiline = m;
        }
        o
    }

    fn schema(
        &mut self,
        field: &str,
        columns: &[raw::RawColumn],
        required: bool,
    ) -> Option<SchemaRef> {
        if columns.is_empty() {
            if required {
                self.problem(field, "the schema lists no columns");
            }
            return None;
        }
        let mut names = HashSet::new();
        let mut fields = Vec::new();
        let mut ok = true;
        for (i, c) in columns.iter().enumerate() {
            if c.name.is_empty() || !names.insert(c.name.clone()) {
                self.problem(
                    format!("{field}[{i}].name"),
                    format!("column name `{}` is empty or repeated", c.name),
                );
                ok = false;
            }
            match parse_type(&c.data_type) {
                Ok(t) => fields.push(Field::new(&c.name, t, c.nullable)),
                Err(m) => {
                    self.problem(format!("{field}[{i}].type"), m);
                    ok = false;
                }
            }
        }
        ok.then(|| Arc::new(Schema::new(fields)))
    }

    fn rules(&mut self, i: usize, r: &raw::RawRule, schema: &Schema) -> Vec<Rule> {
        let field = format!("validate[{i}]");
        let Ok(index) = schema.index_of(&r.column) else {
            self.problem(
                format!("{field}.column"),
                format!("unknown column `{}`: {}", r.column, columns_hint(schema)),
            );
            return Vec::new();
        };
        let data_type = schema.field(index).data_type().clone();
        let mut out = Vec::new();
        let rule = |check, label: String| Rule {
            column: r.column.clone(),
            index,
            check,
            label,
        };
        if r.not_null == Some(true) {
            out.push(rule(Check::NotNull, "not_null".into()));
        }
        for (name, bound) in [("min", &r.min), ("max", &r.max)] {
            let Some(bound) = bound else { continue };
            if !is_ordered(&data_type) {
                self.problem(format!("{field}.{name}"), format!("`{name}` needs a numeric, decimal, date or timestamp column; `{}` is {data_type}", r.column));
                continue;
            }
            match literal(bound, &data_type) {
                Some(a) => out.push(rule(
                    if name == "min" {
                        Check::Min(a)
                    } else {
                        Check::Max(a)
                    },
                    format!("{name}: {}", plain(bound)),
                )),
                None => self.problem(
                    format!("{field}.{name}"),
                    format!("{} is not a value of type {data_type}", plain(bound)),
                ),
            }
        }
        if let (Some(Check::Min(lo)), Some(Check::Max(hi))) = (
            out.iter()
                .find(|x| matches!(x.check, Check::Min(_)))
                .map(|x| &x.check),
            out.iter()
                .find(|x| matches!(x.check, Check::Max(_)))
                .map(|x| &x.check),
        ) && let Ok(gt) = arrow::compute::kernels::cmp::gt(lo, hi)
            && gt.value(0)
        {
            self.problem(
                format!("{field}.min"),
                "min is greater than max: no value could pass",
            );
        }
        if let Some(values) = &r.one_of {
            if values.is_empty() {
                self.problem(
                    format!("{field}.one_of"),
                    "the list of allowed values is empty",
                );
            } else {
                let mut set = HashSet::new();
                for (j, v) in values.iter().enumerate() {
                    match literal(v, &data_type).and_then(|a| canonical_text(&a).ok()) {
                        Some(t) => {
                            set.insert(t.value(0).to_string());
                        }
                        None => self.problem(
                            format!("{field}.one_of[{j}]"),
                            format!("{} is not a value of type {data_type}", plain(v)),
                        ),
                    }
                }
                out.push(rule(
                    Check::OneOf(Arc::new(set)),
                    format!(
                        "one_of: [{}]",
                        values.iter().map(plain).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        if let Some(pattern) = &r.matches {
            if !matches!(data_type, DataType::Utf8 | DataType::LargeUtf8) {
                self.problem(
                    format!("{field}.matches"),
                    format!(
                        "`matches` needs a utf8 column; `{}` is {data_type}",
                        r.column
                    ),
                );
            } else {
                match Regex::new(pattern) {
                    Ok(re) => out.push(rule(Check::Matches(re), format!("matches: {pattern}"))),
                    Err(e) => self.problem(
                        format!("{field}.matches"),
                        format!("bad regular expression: {e}"),
                    ),
                }
            }
        }
        if r.finite == Some(true) {
            if !matches!(data_type, DataType::Float32 | DataType::Float64) {
                self.problem(
                    format!("{field}.finite"),
                    format!(
                        "`finite` needs a float column; `{}` is {data_type}",
                        r.column
                    ),
                );
            } else {
                out.push(rule(Check::Finite, "finite".into()));
            }
        }
        if r.not_null.is_none()
            && r.min.is_none()
            && r.max.is_none()
            && r.one_of.is_none()
            && r.matches.is_none()
            && r.finite.is_none()
        {
            self.problem(
                &field,
                "the rule checks nothing: give not_null, min, max, one_of, matches or finite",
            );
        }
        out
    }

    fn output_compression(&mut self, text: &str) -> Option<OutputCompression> {
        let field = "output.compression";
        let (name, level) = match text.split_once('(') {
            Some((n, rest)) => match rest
                .strip_suffix(')')
                .and_then(|l| l.trim().parse::<i64>().ok())
            {
                Some(l) => (n.trim(), Some(l)),
                None => {
                    self.problem(field, format!("`{text}` is not `codec(level)`"));
                    return None;
                }
            },
            None => (text.trim(), None),
        };
        let c = match (name, level) {
            ("zstd", None) => OutputCompression::Zstd(3),
            ("zstd", Some(l)) if (1..=22).contains(&l) => OutputCompression::Zstd(l as i32),
            ("gzip", None) => OutputCompression::Gzip(6),
            ("gzip", Some(l)) if (0..=9).contains(&l) => OutputCompression::Gzip(l as u32),
            ("snappy", None) => OutputCompression::Snappy,
            ("lz4", None) => OutputCompression::Lz4,
            ("none" | "uncompressed", None) => OutputCompression::None,
            ("zstd" | "gzip", Some(l)) => {
                self.problem(
                    field,
                    format!("level {l} is out of range for {name}: zstd takes 1–22, gzip 0–9"),
                );
                return None;
            }
            _ => {
                self.problem(field, format!("unknown codec `{text}`: expected zstd(level), snappy, gzip(level), lz4 or none"));
                return None;
            }
        };
        Some(c)
    }

    fn size(&mut self, field: &str, v: &serde_json::Value, min: u64) -> Option<u64> {
        let parsed = match v {
            serde_json::Value::Number(n) => {
                n.as_u64().ok_or_else(|| format!("{n} is not a byte count"))
            }
            serde_json::Value::String(s) => parse_size(s),
            other => Err(format!("{other} is not a size")),
        };
        match parsed {
            Ok(n) if n >= min => Some(n),
            Ok(n) => {
                self.problem(field, format!("{n} bytes is too small: at least {min}"));
                None
            }
            Err(m) => {
                self.problem(field, m);
                None
            }
        }
    }

    fn aggregate(
        &mut self,
        a: &raw::RawAggregate,
        schema: Option<&SchemaRef>,
    ) -> Option<AggregateSpec> {
        let mut ok = true;
        let mut names = HashSet::new();
        for (i, g) in a.group_by.iter().enumerate() {
            if !names.insert(g.clone()) {
                self.problem(
                    format!("aggregate.group_by[{i}]"),
                    format!("`{g}` is repeated"),
                );
                ok = false;
            }
            if let Some(s) = schema
                && s.index_of(g).is_err()
            {
                self.problem(
                    format!("aggregate.group_by[{i}]"),
                    format!("unknown column `{g}`: {}", columns_hint(s)),
                );
                ok = false;
            }
        }
        if a.measures.is_empty() {
            self.problem("aggregate.measures", "no measures: give at least one");
            ok = false;
        }
        let mut measures = Vec::new();
        for (i, m) in a.measures.iter().enumerate() {
            let field = format!("aggregate.measures[{i}]");
            if !is_identifier(&m.name) || !names.insert(m.name.clone()) {
                self.problem(
                    format!("{field}.name"),
                    format!(
                        "`{}` must be a unique identifier (letters, digits, `_`)",
                        m.name
                    ),
                );
                ok = false;
            }
            let function = match m.function.as_str() {
                "count" => AggFn::Count,
                "sum" => AggFn::Sum,
                "avg" | "mean" => AggFn::Avg,
                "min" => AggFn::Min,
                "max" => AggFn::Max,
                other => {
                    self.problem(
                        format!("{field}.fn"),
                        format!("unknown function `{other}`: expected count, sum, avg, min or max"),
                    );
                    ok = false;
                    continue;
                }
            };
            match (&m.column, function) {
                (None, AggFn::Count) => {}
                (None, _) => {
                    self.problem(
                        format!("{field}.column"),
                        format!("`{}` needs a column", m.function),
                    );
                    ok = false;
                }
                (Some(c), _) => {
                    if let Some(s) = schema {
                        match s.field_with_name(c) {
                            Err(_) => {
                                self.problem(
                                    format!("{field}.column"),
                                    format!("unknown column `{c}`: {}", columns_hint(s)),
                                );
                                ok = false;
                            }
                            Ok(f)
                                if matches!(function, AggFn::Sum | AggFn::Avg)
                                    && !is_numeric(f.data_type()) =>
                            {
                                self.problem(
                                    format!("{field}.column"),
                                    format!(
                                        "`{}` needs a numeric column; `{c}` is {}",
                                        m.function,
                                        f.data_type()
                                    ),
                                );
                                ok = false;
                            }
                            Ok(_) => {}
                        }
                    }
                }
            }
            measures.push(Measure {
                name: m.name.clone(),
                function,
                column: m.column.clone(),
            });
        }
        ok.then(|| AggregateSpec {
            group_by: a.group_by.clone(),
            measures,
        })
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn columns_hint(schema: &Schema) -> String {
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    format!("the columns are {}", names.join(", "))
}

fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `min`/`max` apply to a type.
pub(crate) fn is_ordered(t: &DataType) -> bool {
    is_numeric(t)
        || matches!(
            t,
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
        )
}

/// Whether `sum`/`avg` apply to a type.
pub(crate) fn is_numeric(t: &DataType) -> bool {
    t.is_integer()
        || t.is_floating()
        || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..))
}

/// A spec value as a one-element array of `data_type`, or `None` if it is not one.
fn literal(v: &serde_json::Value, data_type: &DataType) -> Option<ArrayRef> {
    let text = plain(v);
    let a: ArrayRef = Arc::new(StringArray::from(vec![text]));
    let opts = CastOptions {
        safe: true,
        ..Default::default()
    };
    let out = cast_with_options(&a, data_type, &opts).ok()?;
    out.is_valid(0).then_some(out)
}

/// The canonical text of values, as used by `one_of`.
pub(crate) fn canonical_text(a: &ArrayRef) -> Result<StringArray, arrow::error::ArrowError> {
    let t = arrow::compute::cast(a, &DataType::Utf8)?;
    Ok(t.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::from(Vec::<Option<String>>::new())))
}

/// Parses a column type: `int8`…`int64`, `uint8`…`uint64`, `float32`, `float64`, `bool`,
/// `utf8`, `date32`, `decimal(p,s)`, `timestamp(unit[, zone])`.
///
/// ```
/// use arrow::datatypes::{DataType, TimeUnit};
/// assert_eq!(fanout::spec::parse_type("decimal(12,2)").unwrap(), DataType::Decimal128(12, 2));
/// assert_eq!(
///     fanout::spec::parse_type("timestamp(ms, UTC)").unwrap(),
///     DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
/// );
/// assert!(fanout::spec::parse_type("decimal(40,2)").is_err());
/// ```
pub fn parse_type(text: &str) -> Result<DataType, String> {
    let t = text.trim().to_ascii_lowercase();
    let simple = match t.as_str() {
        "int8" | "tinyint" => Some(DataType::Int8),
        "int16" | "smallint" => Some(DataType::Int16),
        "int32" | "int" | "integer" => Some(DataType::Int32),
        "int64" | "bigint" | "long" => Some(DataType::Int64),
        "uint8" => Some(DataType::UInt8),
        "uint16" => Some(DataType::UInt16),
        "uint32" => Some(DataType::UInt32),
        "uint64" => Some(DataType::UInt64),
        "float32" | "float" | "real" => Some(DataType::Float32),
        "float64" | "double" => Some(DataType::Float64),
        "bool" | "boolean" => Some(DataType::Boolean),
        "utf8" | "string" | "text" | "varchar" => Some(DataType::Utf8),
        "date32" | "date" => Some(DataType::Date32),
        "timestamp" => Some(DataType::Timestamp(TimeUnit::Microsecond, None)),
        _ => None,
    };
    if let Some(s) = simple {
        return Ok(s);
    }
    let expected = "expected int8…int64, uint8…uint64, float32, float64, bool, utf8, date32, decimal(p,s) or timestamp(unit[, zone])";
    let (head, args) = t
        .split_once('(')
        .and_then(|(h, rest)| rest.strip_suffix(')').map(|a| (h.trim(), a)))
        .ok_or_else(|| format!("unknown type `{text}`: {expected}"))?;
    match head {
        "decimal" | "numeric" => {
            let (p, s) = args
                .split_once(',')
                .ok_or_else(|| format!("`{text}`: decimal needs (precision, scale)"))?;
            let p: u8 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{text}`: bad precision"))?;
            let s: i8 = s
                .trim()
                .parse()
                .map_err(|_| format!("`{text}`: bad scale"))?;
            if !(1..=38).contains(&p) || s < 0 || s as u8 > p {
                return Err(format!(
                    "`{text}`: precision must be 1–38 and scale 0–precision"
                ));
            }
            Ok(DataType::Decimal128(p, s))
        }
        "timestamp" => {
            let original_args = text
                .trim()
                .split_once('(')
                .and_then(|(_, r)| r.strip_suffix(')'))
                .unwrap_or(args);
            let mut parts = original_args.splitn(2, ',');
            let unit = match parts
                .next()
                .map(|u| u.trim().to_ascii_lowercase())
                .as_deref()
            {
                Some("s" | "second") => TimeUnit::Second,
                Some("ms" | "millisecond") => TimeUnit::Millisecond,
                Some("us" | "microsecond") => TimeUnit::Microsecond,
                Some("ns" | "nanosecond") => TimeUnit::Nanosecond,
                _ => return Err(format!("`{text}`: the unit must be s, ms, us or ns")),
            };
            let zone = parts
                .next()
                .map(|z| z.trim().to_string())
                .filter(|z| !z.is_empty());
            if let Some(z) = &zone
                && z.parse::<arrow::array::timezone::Tz>().is_err()
            {
                return Err(format!(
                    "`{text}`: unknown time zone `{z}` (use UTC, +02:00 or an IANA name)"
                ));
            }
            Ok(DataType::Timestamp(unit, zone.map(Into::into)))
        }
        _ => Err(format!("unknown type `{text}`: {expected}")),
    }
}

/// Parses a size: a byte count or a number with a unit (`64MiB`, `1 GiB`, `500KB`).
///
/// ```
/// assert_eq!(fanout::spec::parse_size("64MiB").unwrap(), 64 << 20);
/// assert_eq!(fanout::spec::parse_size("1.5 KiB").unwrap(), 1536);
/// assert!(fanout::spec::parse_size("12 parsecs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        u => {
            return Err(format!(
                "`{text}`: unknown unit `{u}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests;
