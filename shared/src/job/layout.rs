//! Keys of one job's records below the work location (DESIGN.md, "Storage layout").
//!
//! ```text
//! <work>/jobs/<job_id>/spec.json               resolved spec, as run
//! <work>/jobs/<job_id>/plan/<shard>.json        chunks, SHARD_CHUNKS per shard
//! <work>/jobs/<job_id>/plan/_plan.json          plan summary, written last
//! <work>/jobs/<job_id>/chunks/<chunk_id>.json   commit record, written last by a worker
//! <work>/jobs/<job_id>/failures/<chunk_id>.json latest failed attempt of a chunk
//! <work>/jobs/<job_id>/attempts/<chunk_id>.json latest started attempt of a chunk
//! <work>/jobs/<job_id>/_manifest.json           reducer output
//! <work>/jobs/<job_id>/aggregates.{json,parquet}
//! <work>/jobs/<job_id>/_SUCCESS
//! <work>/jobs/<job_id>/staged/<partition>/…    chunk files published at finalize or compacted
//! <work>/jobs/<job_id>/compact/_plan.json       compaction summary, written last
//! <work>/jobs/<job_id>/compact/plan/<bin>.json  one bin: its input files, its output key
//! <work>/jobs/<job_id>/compact/bins/<bin>.json  commit record of one bin (written last)
//! <work>/jobs/<job_id>/compact/{failures,attempts}/<bin>.json  as for chunks
//! <rejects>/<job_id>/<chunk_id>.jsonl           quarantined records
//! ```
//!
//! Outside `jobs/`, per job name: the ingestion ledger and the run lease,
//! `<work>/ledger/<name>/…` ([`crate::ledger::records`]).

use crate::ids::{ChunkId, JobId};

/// Everything of a job.
pub fn job(job_id: &JobId) -> String {
    format!("jobs/{job_id}/")
}
/// Chunk files waiting to be published to the output location at finalize.
pub fn staged(job_id: &JobId) -> String {
    format!("jobs/{job_id}/staged/")
}
/// Resolved spec.
pub fn spec(job_id: &JobId) -> String {
    format!("jobs/{job_id}/spec.json")
}
/// One plan shard.
pub fn plan_shard(job_id: &JobId, shard: u64) -> String {
    format!("jobs/{job_id}/plan/{shard:05}.json")
}
/// Plan summary.
pub fn plan_summary(job_id: &JobId) -> String {
    format!("jobs/{job_id}/plan/_plan.json")
}
/// Prefix of commit records.
pub fn chunks(job_id: &JobId) -> String {
    format!("jobs/{job_id}/chunks/")
}
/// One commit record.
pub fn chunk(job_id: &JobId, chunk_id: &ChunkId) -> String {
    format!("jobs/{job_id}/chunks/{chunk_id}.json")
}
/// Prefix of failure records.
pub fn failures(job_id: &JobId) -> String {
    format!("jobs/{job_id}/failures/")
}
/// One failure record.
pub fn failure(job_id: &JobId, chunk_id: &ChunkId) -> String {
    format!("jobs/{job_id}/failures/{chunk_id}.json")
}
/// Prefix of attempt records.
pub fn attempts(job_id: &JobId) -> String {
    format!("jobs/{job_id}/attempts/")
}
/// One attempt record.
pub fn attempt(job_id: &JobId, chunk_id: &ChunkId) -> String {
    format!("jobs/{job_id}/attempts/{chunk_id}.json")
}
/// Manifest.
pub fn manifest(job_id: &JobId) -> String {
    format!("jobs/{job_id}/_manifest.json")
}
/// Success marker.
pub fn success(job_id: &JobId) -> String {
    format!("jobs/{job_id}/_SUCCESS")
}
/// Aggregate table as JSON.
pub fn aggregates_json(job_id: &JobId) -> String {
    format!("jobs/{job_id}/aggregates.json")
}
/// Aggregate table as Parquet.
pub fn aggregates_parquet(job_id: &JobId) -> String {
    format!("jobs/{job_id}/aggregates.parquet")
}
/// Rejects of one chunk, below the rejects location.
pub fn rejects(job_id: &JobId, chunk_id: &ChunkId) -> String {
    format!("{job_id}/{chunk_id}.jsonl")
}
/// Compaction summary (written after every bin is planned and queued).
pub fn compaction_summary(job_id: &JobId) -> String {
    format!("jobs/{job_id}/compact/_plan.json")
}
/// Prefix of the bins' plans.
pub fn bin_plans(job_id: &JobId) -> String {
    format!("jobs/{job_id}/compact/plan/")
}
/// One bin's plan.
pub fn bin_plan(job_id: &JobId, bin_id: &ChunkId) -> String {
    format!("jobs/{job_id}/compact/plan/{bin_id}.json")
}
/// Prefix of the bins' commit records.
pub fn bins(job_id: &JobId) -> String {
    format!("jobs/{job_id}/compact/bins/")
}
/// One bin's commit record.
pub fn bin(job_id: &JobId, bin_id: &ChunkId) -> String {
    format!("jobs/{job_id}/compact/bins/{bin_id}.json")
}
/// Prefix of the bins' failure records.
pub fn bin_failures(job_id: &JobId) -> String {
    format!("jobs/{job_id}/compact/failures/")
}
/// One bin's failure record.
pub fn bin_failure(job_id: &JobId, bin_id: &ChunkId) -> String {
    format!("jobs/{job_id}/compact/failures/{bin_id}.json")
}
/// Prefix of the bins' attempt records.
pub fn bin_attempts(job_id: &JobId) -> String {
    format!("jobs/{job_id}/compact/attempts/")
}
/// One bin's attempt record.
pub fn bin_attempt(job_id: &JobId, bin_id: &ChunkId) -> String {
    format!("jobs/{job_id}/compact/attempts/{bin_id}.json")
}
