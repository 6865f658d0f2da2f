//! The ledger's records and their keys below the work location.

use serde::{Deserialize, Serialize};

use crate::ids::JobId;

/// Digits of a sequence number in a key: keys sort as the numbers do.
const SEQ_DIGITS: usize = 20;

/// Everything of one job name's ledger.
pub fn root(name: &str) -> String {
    format!("ledger/{name}/")
}
/// Prefix of the log entries.
pub fn log(name: &str) -> String {
    format!("ledger/{name}/log/")
}
/// The log entry with sequence number `seq`.
pub fn entry(name: &str, seq: u64) -> String {
    format!("ledger/{name}/log/{seq:0SEQ_DIGITS$}.json")
}
/// The marker saying which entry recorded a job.
pub fn by_job(name: &str, job_id: &JobId) -> String {
    format!("ledger/{name}/by-job/{job_id}.json")
}
/// The checkpoint summarising the log up to `seq`.
pub fn checkpoint(name: &str, seq: u64) -> String {
    format!("ledger/{name}/checkpoints/{seq:0SEQ_DIGITS$}.json")
}
/// The pointer to the latest checkpoint.
pub fn checkpoint_pointer(name: &str) -> String {
    format!("ledger/{name}/checkpoint.json")
}
/// The lease of runs of the name.
pub fn lease(name: &str) -> String {
    format!("ledger/{name}/lease.json")
}

/// One ingested input object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IngestedObject {
    /// Its absolute URI (`s3://bucket/key`, `file:///path`).
    pub uri: String,
    /// The version read: S3 ETag, or size and modification time of a local file.
    pub etag: String,
    /// Its size in bytes (0 in entries imported from manifests that did not record it).
    pub size: u64,
}

/// One log entry: the input objects one job committed. Immutable once created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Its sequence number (1, 2, …; the key's number).
    pub seq: u64,
    /// The job name.
    pub name: String,
    /// The job that committed the objects.
    pub job_id: JobId,
    /// The work location of the job's records (its manifest).
    pub work: String,
    /// When the entry was written (ms since the epoch).
    pub committed_ms: u64,
    /// Whether the job ran incrementally (its objects were checked against the ledger):
    /// a full run of the name may read objects already ingested, and says so here.
    #[serde(default)]
    pub incremental: bool,
    /// Imported from the job's manifest by the migration from manifests, not written by
    /// its finalize.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imported: bool,
    /// The objects, sorted by URI.
    pub objects: Vec<IngestedObject>,
}

/// Every entry of the log up to `seq`, in one object: read instead of the entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last sequence number it holds.
    pub seq: u64,
    /// The job name.
    pub name: String,
    /// The entries 1..=seq, in order.
    pub entries: Vec<LedgerEntry>,
}

/// `checkpoint.json`: the sequence number of the latest checkpoint (a hint: an older one
/// is as correct, only slower to bring up to date).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPointer {
    /// The checkpoint's sequence number.
    pub seq: u64,
}

/// `by-job/<job_id>.json`: the entry that recorded a job, so a finalize run again finds
/// it with one GET.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMarker {
    /// The job.
    pub job_id: JobId,
    /// Its entry's sequence number.
    pub seq: u64,
}
