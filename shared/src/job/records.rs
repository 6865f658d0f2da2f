//! The persisted records of a job: plan, chunk task, commit record, failure record and
//! manifest. Their keys are in [`super::layout`]; reading them is [`super::io`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::Partial;
use crate::ids::{ChunkId, JobId};
use crate::plan::{Chunk, Piece};
use crate::spec::AggregateSpec;
use crate::write::FileEntry;

/// The planner's summary, written after every shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Job id.
    pub job_id: JobId,
    /// Job name.
    pub name: String,
    /// Chunks planned.
    pub chunks: u64,
    /// Shards written.
    pub shards: u64,
    /// Input objects.
    pub objects: u64,
    /// Input bytes.
    pub input_bytes: u64,
    /// Target bytes per chunk.
    pub target_bytes: u64,
    /// When it was planned (ms since the epoch).
    #[serde(default)]
    pub planned_ms: u64,
    /// The cost estimate made when planning (default model and prices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<crate::cost::Estimate>,
    /// Planned without the objects the ingestion ledger held (`--since-last`, the `_READY`
    /// marker, the event planner): its finalize refuses objects another job ingested.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
}

/// One plan shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanShard {
    /// Shard number.
    pub shard: u64,
    /// Its chunks.
    pub chunks: Vec<Chunk>,
}

/// The queue message of one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkTask {
    /// Job id.
    pub job_id: JobId,
    /// Work location (where `spec.json` is).
    pub work: String,
    /// The chunk.
    pub chunk: Chunk,
}

impl ChunkTask {
    /// Parses and checks a message body.
    pub fn from_body(body: &str) -> crate::Result<ChunkTask> {
        let t: ChunkTask = parse_task(body, |t: &ChunkTask| &t.work)?;
        if crate::plan::chunk_id(&t.job_id, &t.chunk.pieces) != t.chunk.id {
            return Err(crate::Error::Message {
                message: format!("chunk id {} does not match its pieces", t.chunk.id),
                source: None,
            });
        }
        Ok(t)
    }
}

/// Parses a queue message body (a chunk or a compaction bin task) and checks its work
/// location: a bad one is refused (and the message deleted) like any other malformed
/// body, not retried until the dead-letter queue.
pub(crate) fn parse_task<T: serde::de::DeserializeOwned>(
    body: &str,
    work: impl Fn(&T) -> &String,
) -> crate::Result<T> {
    let t: T = serde_json::from_str(body).map_err(|e| crate::Error::Message {
        message: format!(
            "{e} (body starts `{}`)",
            body.chars().take(80).collect::<String>()
        ),
        source: Some(Box::new(e)),
    })?;
    if let Err(m) = crate::location::Location::parse(work(&t)) {
        return Err(crate::Error::Message {
            message: format!("work location `{}`: {m}", work(&t)),
            source: None,
        });
    }
    Ok(t)
}

/// Row counts; `read = valid + rejected` always, `written` is what the transform kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records read from the input.
    pub read: u64,
    /// Records quarantined.
    pub rejected: u64,
    /// Records that converted and passed every rule.
    pub valid: u64,
    /// Rows written (after the SQL transform: filters drop, joins may add; rows set aside
    /// for their partition value not included).
    pub written: u64,
    /// Rows of the SQL's output set aside because their partition value cannot be an
    /// object key (rule `partition`): counted apart from `rejected`, which counts input
    /// records, as the SQL may turn one record into several rows or none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub partition_rejected: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Counts {
    /// Adds another count.
    pub fn add(&mut self, o: &Counts) {
        self.read += o.read;
        self.rejected += o.rejected;
        self.valid += o.valid;
        self.written += o.written;
        self.partition_rejected += o.partition_rejected;
    }

    /// Entries in the rejects files: input records rejected and rows set aside for their
    /// partition value.
    pub fn rejects(&self) -> u64 {
        self.rejected + self.partition_rejected
    }

    /// Whether the record counts reconcile.
    pub fn reconciles(&self) -> bool {
        self.read == self.valid + self.rejected
    }
}

/// A chunk's rejects file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectFile {
    /// Key below the rejects location.
    pub key: String,
    /// Records in it.
    pub records: u64,
}

/// A chunk's commit record: written last, with create-if-absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Job id.
    pub job_id: JobId,
    /// Chunk id.
    pub chunk_id: ChunkId,
    /// Position in the plan.
    pub index: u64,
    /// What it read.
    pub pieces: Vec<Piece>,
    /// Counts.
    pub counts: Counts,
    /// Input bytes fetched.
    pub bytes_read: u64,
    /// Input bytes the chunk owns (its ranges and whole objects): `bytes_read` over this is
    /// its read amplification, at most about 2 (a range reads on to finish its last record,
    /// which `input.max_record_size` bounds).
    #[serde(default)]
    pub range_bytes: u64,
    /// Files written, sorted by key.
    pub outputs: Vec<FileEntry>,
    /// Rejects file, when any record was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<RejectFile>,
    /// Rejected records per rule.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reject_rules: std::collections::BTreeMap<String, u64>,
    /// Schema of the transformed rows.
    pub schema: arrow::datatypes::Schema,
    /// Partial aggregate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Partial>,
    /// Which receive of the message committed it.
    pub attempt: u32,
    /// Who committed it.
    pub worker: String,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Processing time.
    pub elapsed_ms: u64,
    /// Busy time per stage in milliseconds (`read`: fetch and split, `validate`: typed
    /// conversion and rules, `encode`: Parquet encoding, `store`: storing the files). The
    /// stages overlap, so they may add up to more than `elapsed_ms`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub stage_ms: std::collections::BTreeMap<String, u64>,
    /// Requests this attempt made to the object store (for the measured cost).
    #[serde(default)]
    pub requests: crate::store::RequestCounts,
}

impl ChunkRecord {
    /// What the chunk's attempt used, for the measured cost.
    pub fn usage(&self) -> crate::cost::ChunkUsage {
        crate::cost::ChunkUsage {
            elapsed_ms: self.elapsed_ms,
            requests: self.requests,
        }
    }
}

/// The latest failed attempt of a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Job id.
    pub job_id: JobId,
    /// Chunk id.
    pub chunk_id: ChunkId,
    /// Receives so far.
    pub attempts: u32,
    /// Error kind.
    pub error_kind: String,
    /// Error message.
    pub message: String,
    /// No retry alone will help (the cause must be fixed, then the chunk redriven).
    pub permanent: bool,
    /// No further attempt will come: receives exhausted, the message is dead-lettered.
    pub last_attempt: bool,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The latest started attempt of a chunk, written before it reads anything: a worker
/// killed mid-chunk (out of memory, timed out) writes no failure record, and this is the
/// trace it leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Job id.
    pub job_id: JobId,
    /// Chunk id.
    pub chunk_id: ChunkId,
    /// Which receive of the message this is.
    pub attempt: u32,
    /// No further attempt will come: this is the queue's last receive.
    pub last_attempt: bool,
    /// Who runs it.
    pub worker: String,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// The last stage it reached: `read` (fetch, validate, transform, encode) or `store`
    /// (storing the files and the commit record).
    pub stage: String,
    /// The worker's memory in MB, as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// The queue's visibility timeout, set only where the attempt cannot outlive it (a
    /// Lambda worker: its timeout is at most the visibility timeout). Past it, with no
    /// commit and no failure record, the attempt is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_timeout_s: Option<u64>,
    /// When the worker last renewed its message's visibility and said it was alive (ms
    /// since the epoch): set by a worker that renews (the fleet), whose lease then runs a
    /// visibility timeout from here instead of from `started_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive_ms: Option<u64>,
    /// When the invocation running it ends for good (ms since the epoch): a Lambda
    /// worker's deadline, after which the function is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

impl AttemptRecord {
    /// The moment after which the attempt cannot still be running (ms since the epoch):
    /// the earlier of its lease's end (a visibility timeout after its start or its last
    /// sign of life) and its invocation's deadline. `None`: nothing bounds it.
    ///
    /// ```
    /// # use fanout::job::AttemptRecord;
    /// let a = AttemptRecord {
    ///     job_id: "j".parse().unwrap(), chunk_id: "c".parse().unwrap(), attempt: 1,
    ///     last_attempt: false, worker: "w".into(), started_ms: 1_000, stage: "read".into(),
    ///     memory_mb: None, visibility_timeout_s: Some(60), alive_ms: None, deadline_ms: None,
    /// };
    /// assert_eq!(a.ends_by_ms(), Some(61_000));
    /// let renewed = AttemptRecord { alive_ms: Some(50_000), ..a.clone() };
    /// assert_eq!(renewed.ends_by_ms(), Some(110_000));
    /// let lambda = AttemptRecord { deadline_ms: Some(16_000), ..a };
    /// assert_eq!(lambda.ends_by_ms(), Some(16_000));
    /// ```
    pub fn ends_by_ms(&self) -> Option<u64> {
        let lease = self.visibility_timeout_s.map(|v| {
            self.alive_ms
                .unwrap_or(self.started_ms)
                .max(self.started_ms)
                .saturating_add(v.saturating_mul(1000))
        });
        match (lease, self.deadline_ms) {
            (Some(l), Some(d)) => Some(l.min(d)),
            (l, d) => l.or(d),
        }
    }
}

/// One output file in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// The file.
    #[serde(flatten)]
    pub file: FileEntry,
    /// Chunk that wrote it.
    pub chunk_id: ChunkId,
}

/// Totals of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSummary {
    /// Hive path (`col=value/…`), empty when unpartitioned.
    pub path: String,
    /// Files.
    pub files: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The aggregate in the manifest: where its table is, not the table (a job may have
/// millions of groups, and the manifest stays small whatever their number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateResult {
    /// What was computed.
    pub spec: AggregateSpec,
    /// The table as Parquet (`jobs/<job_id>/aggregates.parquet`), always written.
    pub parquet: AggregateTable,
    /// Key of `aggregates.json` (the same rows as JSON), written only when the table has at
    /// most [`crate::reducer::DEFAULT_AGGREGATE_JSON_MAX_ROWS`] rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
}

/// One stored aggregate table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateTable {
    /// Key below the work location.
    pub key: String,
    /// Rows: one per group.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// Reads a manifest's `aggregate`, or `None` for the inlined rows of manifests written
/// before it was a reference (their `aggregates.*` files are still beside them): such a
/// job stays readable for its status, files and inputs.
fn aggregate_or_legacy<'de, D>(d: D) -> std::result::Result<Option<AggregateResult>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let Some(v) = Option::<serde_json::Value>::deserialize(d)? else {
        return Ok(None);
    };
    if v.get("parquet").is_none() && v.get("rows").is_some_and(serde_json::Value::is_array) {
        return Ok(None);
    }
    serde_json::from_value(v)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The job manifest: the only way to read a job's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Job id.
    pub job_id: JobId,
    /// Job name.
    pub name: String,
    /// `succeeded` or `failed`.
    pub outcome: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Output location.
    pub output: String,
    /// Rejects location.
    pub rejects_location: String,
    /// Chunks.
    pub chunks: u64,
    /// Input objects.
    pub objects: u64,
    /// Input bytes.
    pub input_bytes: u64,
    /// Row counts.
    pub counts: Counts,
    /// Rejected / read.
    pub reject_ratio: f64,
    /// Output bytes.
    pub output_bytes: u64,
    /// Schema of the output rows (partition columns included).
    pub schema: arrow::datatypes::Schema,
    /// Partitions.
    pub partitions: Vec<PartitionSummary>,
    /// Files, sorted by key.
    pub files: Vec<ManifestFile>,
    /// Rejects files.
    pub rejects: Vec<RejectFile>,
    /// Rejected records per rule.
    #[serde(default)]
    pub reject_rules: BTreeMap<String, u64>,
    /// Aggregate: where its table is.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "aggregate_or_legacy"
    )]
    pub aggregate: Option<AggregateResult>,
    /// The catalog table the output was registered in (`output.catalog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogResult>,
    /// The compaction stage: what it merged, and the chunk files before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionResult>,
    /// Every input object the job read (key and version): `--since-last` skips them.
    #[serde(default)]
    pub inputs: Vec<InputObject>,
    /// What the job cost: measured from its records, beside the planning estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::JobCost>,
}

impl Manifest {
    /// The file-size figures of the files the manifest lists (its output, as readers see it).
    pub fn file_sizes(&self) -> super::FileSizes {
        super::FileSizes::of(
            self.files
                .iter()
                .map(|f| (super::partition_path(&f.file.key), f.file.bytes)),
        )
    }
}

/// What a job's compaction stage did (`output.target_file_size`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionResult {
    /// The target size in bytes.
    pub target_bytes: u64,
    /// Bins merged (one output file each).
    pub bins: u64,
    /// Chunk files merged by them.
    pub merged_files: u64,
    /// Chunk files kept as they were.
    pub kept_files: u64,
    /// Row groups copied without re-encoding, and encoded again.
    pub copied_row_groups: u64,
    /// Row groups encoded again (from small ones).
    pub encoded_row_groups: u64,
    /// The chunk files, before compaction (the manifest's `files` are after).
    pub chunk_files: super::FileSizes,
}

/// Where a job's output was registered as a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogResult {
    /// The catalog (`glue`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Database.
    pub database: String,
    /// Table.
    pub table: String,
    /// The job's partitions registered (added, or already there).
    pub partitions: u64,
    /// Whether the table lists its partitions by projection properties instead.
    pub partition_projection: bool,
}

/// An input object a job read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InputObject {
    /// Key below the input location.
    pub key: String,
    /// Version tag it had.
    pub etag: String,
    /// Its size in bytes (0 in manifests written before sizes were recorded).
    #[serde(default)]
    pub size: u64,
}

impl Manifest {
    /// Whether the job succeeded.
    pub fn succeeded(&self) -> bool {
        self.outcome == "succeeded"
    }
}
