//! A job's persisted records, where they live, and how they are read.
//!
//! Every use case (planner, worker, reducer, gc, report) meets the others only here:
//! the planner writes the spec and the plan, a worker a commit or failure record, the
//! reducer the manifest. No use case imports another's types.
//!
//! - [`layout`]: the keys below the work location.
//! - [`records`]: the records ([`PlanSummary`], [`ChunkTask`], [`ChunkRecord`],
//!   [`FailureRecord`], [`AttemptRecord`], [`Manifest`], …).
//! - [`compaction`]: the compaction stage's plan, tasks and commit records, and the
//!   bin-packing that plans them ([`compaction::plan_bins`]).
//! - [`sizes`]: files per partition and the spread of file sizes ([`FileSizes`]).
//! - [`io`]: JSON with a retried read, and the loaders ([`load_spec`], [`load_job`],
//!   [`committed_ids`], [`chunk_records`], …).

pub mod compaction;
pub mod io;
pub mod layout;
pub mod records;
pub mod sizes;

pub use crate::plan::SHARD_CHUNKS;
pub use io::{
    READ_CONCURRENCY, chunk_record_keys, chunk_records, committed_ids, get_json, get_json_opt,
    head_retried, ids_under, load_job, load_plan, load_spec, read_aggregate_rows,
    read_manifest_opt, to_compact_json_bytes, to_json_bytes,
};
/// Whether the job's chunk files are staged under `work` and published to the output
/// location only when the job finalizes (or replaced there by the compaction stage's
/// files): with a catalog table, whose readers list the output prefix, a file there
/// before its job succeeded would be read as data; with compaction, a reader must never
/// see a chunk file beside the compacted file that replaces it.
pub fn publishes_at_finalize(spec: &crate::spec::JobSpec) -> bool {
    spec.output.catalog.is_some() || spec.output.target_file_bytes.is_some()
}

/// Where the job's chunks write their files (keys below it are the files' output keys):
/// the output location, or the job's staging folder when it [publishes at
/// finalize](publishes_at_finalize).
pub fn chunk_output_location(
    spec: &crate::spec::JobSpec,
    job_id: &crate::ids::JobId,
) -> crate::location::Location {
    if publishes_at_finalize(spec) {
        spec.work.join(&layout::staged(job_id))
    } else {
        spec.output.location.clone()
    }
}

/// Where the compaction stage writes its files: the output location, or, with a catalog
/// table (nothing lands there before the job finalizes), the staging folder, from which
/// finalize publishes them.
pub fn compacted_output_location(
    spec: &crate::spec::JobSpec,
    job_id: &crate::ids::JobId,
) -> crate::location::Location {
    if spec.output.catalog.is_some() {
        spec.work.join(&layout::staged(job_id))
    } else {
        spec.output.location.clone()
    }
}

pub use records::{
    AggregateResult, AggregateTable, AttemptRecord, CatalogResult, ChunkRecord, ChunkTask,
    CompactionResult, Counts, FailureRecord, InputObject, Manifest, ManifestFile, PartitionSummary,
    PlanShard, PlanSummary, RejectFile,
};
pub use sizes::{FileSizes, SMALL_FILE_BYTES, Spread, partition_path};
