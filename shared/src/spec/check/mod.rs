//! Stage two of a spec: every section of the raw spec checked and resolved into typed values.
//!
//! [`resolve`] reads the sections in document order, one step each. A step reports what is
//! wrong and goes on with a default or a `None`, so that one run finds every problem; the
//! spec is only built when every part it needs has a value.

mod aggregate;
mod input;
mod output;
mod rules;
mod transform;

use crate::ids::JobId;
use std::sync::Arc;

use super::raw::{self, RawSpec};
use super::{
    ChunkingSpec, DEFAULT_MAX_OBJECTS_PER_CHUNK, DEFAULT_MAX_RECEIVE_COUNT,
    DEFAULT_METRICS_NAMESPACE, DEFAULT_TARGET_BYTES, DEFAULT_VISIBILITY_TIMEOUT_S, JobSpec,
    Problem, QueueSpec, TransformSpec, parse_size, yaml,
};
use crate::location::Location;
use crate::location::Sse;
use crate::queue::{DEFAULT_MAX_MESSAGE_BYTES, SQS_MAX_MESSAGE_BYTES, SQS_MIN_MESSAGE_BYTES};

/// Checks `raw`, parsed from `doc`: the resolved spec (`None` when a problem leaves a part
/// without a value) and every problem found, in the order found.
pub(super) fn resolve(doc: &yaml::Document, raw: RawSpec) -> (Option<JobSpec>, Vec<Problem>) {
    let mut checker = Checker {
        doc,
        problems: Vec::new(),
    };
    let spec = checker.resolve(raw);
    (spec, checker.problems)
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
        self.check_name_and_id(&raw);
        let work = self.location("work", &raw.work);
        let input = self.resolve_input(&raw.input);
        let chunking = self.resolve_chunking(&raw.chunking);
        let rules = match &input.schema {
            Some(schema) => self.resolve_rules(&raw.validate, schema),
            None => Vec::new(),
        };
        let lookups = self.resolve_transform(&raw.transform);
        // Without SQL the transformed rows are the input's: the columns the output and the
        // aggregate name can be checked now (with SQL, only the pre-flight knows them).
        let passthrough = raw
            .transform
            .sql
            .is_none()
            .then_some(input.schema.as_ref())
            .flatten();
        let output = self.resolve_output(&raw.output, input.location.as_ref(), passthrough);
        let rejects = self.resolve_rejects(&raw.rejects, input.location.as_ref());
        let aggregate = raw
            .aggregate
            .as_ref()
            .and_then(|a| self.aggregate(a, passthrough));
        let metrics_namespace = self.resolve_metrics(&raw.metrics);
        let queue = self.resolve_queue(&raw.queue);
        let sse = self.resolve_storage(&raw.storage);

        let output = output?;
        if output.catalog.is_some()
            && let Some(w @ Location::Local(_)) = &work
        {
            self.problem(
                "work",
                format!("output.catalog stages chunk files under work, which must be on S3 as the output is (it is `{w}`)"),
            );
        }
        let resolved = resolved_json(
            &raw,
            chunking.target_bytes,
            output.max_file_bytes,
            output.target_file_bytes,
        )?;
        Some(JobSpec {
            name: raw.name,
            // Refused above with a problem when malformed.
            job_id: raw.job_id.map(JobId::parse).transpose().ok()?,
            work: work?,
            input: input.into_spec(raw.input)?,
            chunking,
            rules,
            transform: TransformSpec {
                lookups,
                sql: raw.transform.sql,
            },
            output,
            rejects: rejects?,
            aggregate,
            metrics_namespace,
            queue,
            resolved,
            source: Arc::new(yaml::Document::default()),
            sse,
            only_keys: None,
            skip_objects: None,
            input_objects: None,
        })
    }

    /// `name` and `job_id`: both name keys and paths, so only safe characters.
    fn check_name_and_id(&mut self, raw: &RawSpec) {
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
            && let Err(e) = JobId::parse(id.as_str())
        {
            self.problem("job_id", e.to_string());
        }
    }

    fn resolve_chunking(&mut self, raw: &raw::RawChunking) -> ChunkingSpec {
        let target_bytes = match &raw.target_size {
            None => DEFAULT_TARGET_BYTES,
            Some(v) => self
                .size("chunking.target_size", v, 1)
                .unwrap_or(DEFAULT_TARGET_BYTES),
        };
        let max_objects_per_chunk = match raw.max_objects_per_chunk {
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
        ChunkingSpec {
            target_bytes,
            max_objects_per_chunk,
        }
    }

    fn resolve_metrics(&mut self, raw: &raw::RawMetrics) -> String {
        let namespace = raw
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
        namespace
    }

    fn resolve_queue(&mut self, raw: &raw::RawQueue) -> QueueSpec {
        let max_receive_count = raw.max_receive_count.unwrap_or(DEFAULT_MAX_RECEIVE_COUNT);
        if !(1..=1000).contains(&max_receive_count) {
            self.problem(
                "queue.max_receive_count",
                format!("{max_receive_count} is out of range: SQS accepts 1 to 1000"),
            );
        }
        let visibility_timeout_s = raw
            .visibility_timeout_s
            .unwrap_or(DEFAULT_VISIBILITY_TIMEOUT_S);
        if visibility_timeout_s > 43_200 {
            self.problem(
                "queue.visibility_timeout_s",
                format!("{visibility_timeout_s} is out of range: SQS accepts 0 to 43200 seconds"),
            );
        }
        let max_message_bytes = match &raw.max_message_size {
            None => DEFAULT_MAX_MESSAGE_BYTES,
            Some(v) => match self.size("queue.max_message_size", v, SQS_MIN_MESSAGE_BYTES as u64) {
                Some(n) if n <= SQS_MAX_MESSAGE_BYTES as u64 => n as usize,
                Some(n) => {
                    self.problem(
                        "queue.max_message_size",
                        format!(
                            "{n} bytes is out of range: SQS accepts messages of 1 KiB to 1 MiB"
                        ),
                    );
                    DEFAULT_MAX_MESSAGE_BYTES
                }
                None => DEFAULT_MAX_MESSAGE_BYTES,
            },
        };
        QueueSpec {
            max_receive_count,
            visibility_timeout_s,
            max_message_bytes,
        }
    }

    fn resolve_storage(&mut self, raw: &raw::RawStorage) -> Sse {
        match (raw.sse.as_deref(), raw.kms_key_id.as_deref()) {
            (None | Some("bucket_default"), None) => Sse::BucketDefault,
            (Some("s3" | "aes256" | "AES256"), None) => Sse::S3,
            (Some("kms" | "aws:kms"), Some(k)) if !k.is_empty() => Sse::Kms(k.to_string()),
            (Some("kms" | "aws:kms"), _) => {
                self.problem("storage.kms_key_id", "SSE-KMS needs the key id or ARN");
                Sse::BucketDefault
            }
            (None | Some("bucket_default" | "s3" | "aes256" | "AES256"), Some(_)) => {
                self.problem(
                    "storage.kms_key_id",
                    "a KMS key is only used with `sse: kms`",
                );
                Sse::BucketDefault
            }
            (Some(other), _) => {
                self.problem(
                    "storage.sse",
                    format!("unknown encryption `{other}`: expected bucket_default, s3 or kms"),
                );
                Sse::BucketDefault
            }
        }
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
}

/// The spec as stored in `spec.json` and hashed into the job id: as written, with its
/// sizes resolved to byte counts (so `64MiB` and `67108864` give the same id).
fn resolved_json(
    raw: &RawSpec,
    target_bytes: u64,
    max_file_bytes: u64,
    target_file_bytes: Option<u64>,
) -> Option<serde_json::Value> {
    let mut resolved = raw.clone();
    resolved.chunking.target_size = Some(serde_json::json!(target_bytes));
    resolved.output.max_file_size = Some(serde_json::json!(max_file_bytes));
    // Always resolved, the default too: the stored spec says whether the job has a
    // compaction stage, and a spec stored before the stage existed has no such field
    // (`job::load_spec` reads it as `off`: the job keeps the layout it was planned with).
    // The compacted output is another output, so it has another job id.
    resolved.output.target_file_size = Some(match target_file_bytes {
        Some(n) => serde_json::json!(n),
        None => serde_json::json!("off"),
    });
    if let Some(v) = &raw.queue.max_message_size
        && let Some(n) = v.as_str().and_then(|s| parse_size(s).ok())
    {
        resolved.queue.max_message_size = Some(serde_json::json!(n));
    }
    if let Some(v) = &raw.input.max_record_size
        && let Some(n) = v.as_str().and_then(|s| parse_size(s).ok())
    {
        resolved.input.max_record_size = Some(serde_json::json!(n));
    }
    if let Some(v) = &raw.input.max_row_group_size
        && let Some(n) = v.as_str().and_then(|s| parse_size(s).ok())
    {
        resolved.input.max_row_group_size = Some(serde_json::json!(n));
    }
    serde_json::to_value(&resolved).ok()
}
