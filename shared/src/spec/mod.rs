//! The job spec: raw input validated into a resolved [`JobSpec`] before any work starts.
//!
//! Two stages, as in ripgrep's configuration: `raw` holds serde shapes; [`JobSpec::parse`]
//! checks every field and builds typed values. Every problem found is reported at once,
//! each naming the field path and its line in the source file.
//!
//! The checker (`check`) reads the sections in document order, one step each; the resolved
//! parts are in `model`, the parsing of types, sizes and literals in `values`.

mod check;
mod model;
mod raw;
mod values;
pub mod yaml;

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};

use crate::location::Location;
pub use model::{
    AggFn, AggregateSpec, CatalogSpec, Check, ChunkingSpec, CsvOptions, Format, InputCompression,
    InputSpec, LookupSpec, Measure, OutputCompression, OutputSpec, QueueSpec, RejectsSpec, Rule,
    TransformSpec,
};
pub use raw::RawSpec;
pub(crate) use values::canonical_text;
#[cfg(feature = "sql")]
pub(crate) use values::is_numeric;
pub use values::{parse_size, parse_type};

/// Default chunk size for splittable inputs.
pub const DEFAULT_TARGET_BYTES: u64 = 64 * 1024 * 1024;
/// Default `input.max_record_size`: the longest CSV or JSON record read (Hadoop's
/// `mapreduce.input.linerecordreader.line.maxlength` plays the same part). A worker holds
/// at most one such record beside its segment, and a chunk reads at most this far past
/// its range's end.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `input.max_record_size` accepted: a record must fit a worker's memory.
pub const MAX_MAX_RECORD_BYTES: u64 = 1024 * 1024 * 1024;
/// Default cap on small objects packed into one chunk (the chunk message's size is bounded
/// apart, by `queue.max_message_size`).
pub const DEFAULT_MAX_OBJECTS_PER_CHUNK: usize = 100;
/// Default largest Parquet input row group (its compressed column chunks of the spec's
/// columns), which a worker holds in memory while it decodes it.
pub const DEFAULT_MAX_ROW_GROUP_BYTES: u64 = 128 * 1024 * 1024;
/// Default rows per Parquet row group.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 1_000_000;
/// Default maximum size of one output file.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Default `output.target_file_size`: the compaction stage packs each partition's chunk
/// files into files of about this size (Athena's and Spark's guidance for S3 tables).
pub const DEFAULT_TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;
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

/// A validated job spec.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// Fixed job id, or `None` to derive it from the spec and the input listing.
    pub job_id: Option<crate::ids::JobId>,
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
    /// The input objects as given (keys relative to the input, each HEADed by the caller),
    /// used instead of a listing of the input: the arrivals drain plans exactly the objects
    /// its events name, without listing the prefix.
    pub input_objects: Option<Vec<crate::store::ObjectMeta>>,
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
        let (spec, mut problems) = check::resolve(&doc, raw);
        if problems.is_empty()
            && let Some(mut spec) = spec
        {
            spec.source = Arc::new(doc);
            return Ok(spec);
        }
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

    /// Plans exactly these objects (keys relative to the input location, size and ETag
    /// from a HEAD) instead of listing the input; the include/exclude globs still apply.
    pub fn with_input_objects(mut self, objects: Vec<crate::store::ObjectMeta>) -> Self {
        self.input_objects = Some(objects);
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

#[cfg(test)]
mod tests;
