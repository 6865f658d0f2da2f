//! The job's persisted records and where they live (DESIGN.md, "Storage layout").
//!
//! ```text
//! <work>/jobs/<job_id>/spec.json               resolved spec, as run
//! <work>/jobs/<job_id>/plan/<shard>.json        chunks, SHARD_CHUNKS per shard
//! <work>/jobs/<job_id>/plan/_plan.json          plan summary, written last
//! <work>/jobs/<job_id>/chunks/<chunk_id>.json   commit record, written last by a worker
//! <work>/jobs/<job_id>/failures/<chunk_id>.json latest failed attempt of a chunk
//! <work>/jobs/<job_id>/_manifest.json           reducer output
//! <work>/jobs/<job_id>/aggregates.{json,parquet}
//! <work>/jobs/<job_id>/_SUCCESS
//! <rejects>/<job_id>/<chunk_id>.jsonl           quarantined records
//! ```

use serde::{Deserialize, Serialize};

use crate::aggregate::Partial;
use crate::plan::{Chunk, Piece};
use crate::write::FileEntry;

/// Chunks per plan shard.
pub const SHARD_CHUNKS: u64 = 1000;

/// Keys of one job's records below `work`.
pub mod layout {
    /// Everything of a job.
    pub fn job(job_id: &str) -> String {
        format!("jobs/{job_id}/")
    }
    /// Resolved spec.
    pub fn spec(job_id: &str) -> String {
        format!("jobs/{job_id}/spec.json")
    }
    /// One plan shard.
    pub fn plan_shard(job_id: &str, shard: u64) -> String {
        format!("jobs/{job_id}/plan/{shard:05}.json")
    }
    /// Plan summary.
    pub fn plan_summary(job_id: &str) -> String {
        format!("jobs/{job_id}/plan/_plan.json")
    }
    /// Prefix of commit records.
    pub fn chunks(job_id: &str) -> String {
        format!("jobs/{job_id}/chunks/")
    }
    /// One commit record.
    pub fn chunk(job_id: &str, chunk_id: &str) -> String {
        format!("jobs/{job_id}/chunks/{chunk_id}.json")
    }
    /// Prefix of failure records.
    pub fn failures(job_id: &str) -> String {
        format!("jobs/{job_id}/failures/")
    }
    /// One failure record.
    pub fn failure(job_id: &str, chunk_id: &str) -> String {
        format!("jobs/{job_id}/failures/{chunk_id}.json")
    }
    /// Manifest.
    pub fn manifest(job_id: &str) -> String {
        format!("jobs/{job_id}/_manifest.json")
    }
    /// Success marker.
    pub fn success(job_id: &str) -> String {
        format!("jobs/{job_id}/_SUCCESS")
    }
    /// Aggregate table as JSON.
    pub fn aggregates_json(job_id: &str) -> String {
        format!("jobs/{job_id}/aggregates.json")
    }
    /// Aggregate table as Parquet.
    pub fn aggregates_parquet(job_id: &str) -> String {
        format!("jobs/{job_id}/aggregates.parquet")
    }
    /// Rejects of one chunk, below the rejects location.
    pub fn rejects(job_id: &str, chunk_id: &str) -> String {
        format!("{job_id}/{chunk_id}.jsonl")
    }
}

/// The planner's summary, written after every shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Job id.
    pub job_id: String,
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
    pub job_id: String,
    /// Work location (where `spec.json` is).
    pub work: String,
    /// The chunk.
    pub chunk: Chunk,
}

impl ChunkTask {
    /// Parses and checks a message body.
    pub fn from_body(body: &str) -> crate::Result<ChunkTask> {
        let t: ChunkTask = serde_json::from_str(body).map_err(|e| crate::Error::Message {
            message: format!(
                "{e} (body starts `{}`)",
                body.chars().take(80).collect::<String>()
            ),
        })?;
        if crate::plan::chunk_id(&t.job_id, &t.chunk.pieces) != t.chunk.id {
            return Err(crate::Error::Message {
                message: format!("chunk id {} does not match its pieces", t.chunk.id),
            });
        }
        Ok(t)
    }
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
    /// Rows written (after the SQL transform: filters drop, joins may add).
    pub written: u64,
}

impl Counts {
    /// Adds another count.
    pub fn add(&mut self, o: &Counts) {
        self.read += o.read;
        self.rejected += o.rejected;
        self.valid += o.valid;
        self.written += o.written;
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
    pub job_id: String,
    /// Chunk id.
    pub chunk_id: String,
    /// Position in the plan.
    pub index: u64,
    /// What it read.
    pub pieces: Vec<Piece>,
    /// Counts.
    pub counts: Counts,
    /// Input bytes fetched.
    pub bytes_read: u64,
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

/// The latest failed attempt of a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Job id.
    pub job_id: String,
    /// Chunk id.
    pub chunk_id: String,
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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
