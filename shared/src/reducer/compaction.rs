//! Finalize of a job with a compaction stage: the files the manifest lists are the bins'
//! merged files and the chunk files kept as they were, from the bins' commit records and
//! the bins planned again from the chunk records (a pure function of them, so finalize
//! and the stage's start agree without reading each other's state).

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::ids::JobId;
use crate::job::compaction::{BinRecord, CompactionSummary, plan_bins};
use crate::job::{
    ChunkRecord, CompactionResult, FileSizes, ManifestFile, PartitionSummary, READ_CONCURRENCY,
    get_json_opt, layout, partition_path,
};
use crate::spec::JobSpec;
use crate::store::DynStore;
use crate::{Error, Result};

/// A job's output after its compaction stage.
pub(super) struct Compacted {
    /// The files the manifest lists: the bins' and the kept ones, sorted by key.
    pub files: Vec<ManifestFile>,
    /// What the stage did.
    pub result: CompactionResult,
    /// What each bin's attempt used, for the measured cost (timings stay out of the
    /// manifest's `compaction`, which a finalize run again rewrites byte for byte).
    pub usage: Vec<crate::cost::ChunkUsage>,
}

/// The job's final files after compaction, with what the stage did; refuses a job whose
/// stage was not started or whose bins are not all committed. A bin whose record does not
/// match its plan (rows, key) is a problem of the job.
pub(super) async fn compacted_files(
    store: &DynStore,
    spec: &JobSpec,
    job_id: &JobId,
    records: &[ChunkRecord],
    problems: &mut Vec<String>,
) -> Result<Option<Compacted>> {
    let Some(target) = spec.output.target_file_bytes else {
        return Ok(None);
    };
    let summary: Option<CompactionSummary> =
        get_json_opt(store.as_ref(), &layout::compaction_summary(job_id)).await?;
    if summary.is_none() {
        return Err(Error::Job {
            job_id: job_id.clone(),
            message: "its compaction stage has not started: every chunk is committed: run the job again (`fanout run` resumes it) or let the state machine's Compact step start it".into(),
        });
    }
    let plan = plan_bins(job_id, records, target, spec.output.max_file_bytes);
    // Owned keys and a closure borrowing nothing, so finalize's future stays `Send`.
    let keys: Vec<String> = plan
        .bins
        .iter()
        .map(|b| layout::bin(job_id, &b.bin_id))
        .collect();
    let reader = store.clone();
    let bin_records: Vec<Option<BinRecord>> = stream::iter(keys)
        .map(move |key| {
            let store = reader.clone();
            async move { get_json_opt::<BinRecord>(store.as_ref(), &key).await }
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let missing: Vec<String> = plan
        .bins
        .iter()
        .zip(&bin_records)
        .filter(|(_, r)| r.is_none())
        .map(|(b, _)| b.bin_id.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Job {
            job_id: job_id.clone(),
            message: format!(
                "{} of {} compaction bins are not committed (first: {})",
                missing.len(),
                plan.bins.len(),
                missing
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let mut files = plan.kept.clone();
    let mut usage = Vec::with_capacity(plan.bins.len());
    let mut result = CompactionResult {
        target_bytes: target,
        bins: plan.bins.len() as u64,
        merged_files: plan.bins.iter().map(|b| b.inputs.len() as u64).sum(),
        kept_files: plan.kept.len() as u64,
        copied_row_groups: 0,
        encoded_row_groups: 0,
        chunk_files: FileSizes::of(
            records
                .iter()
                .flat_map(|r| r.outputs.iter().map(|f| (partition_path(&f.key), f.bytes))),
        ),
    };
    for (bin, record) in plan.bins.iter().zip(bin_records.into_iter().flatten()) {
        if record.output.rows != bin.rows() || record.output.key != bin.output_key {
            problems.push(format!(
                "compaction bin {} wrote {} rows as {}, its plan says {} rows as {}",
                bin.bin_id,
                record.output.rows,
                record.output.key,
                bin.rows(),
                bin.output_key
            ));
        }
        result.copied_row_groups += record.copied_row_groups;
        result.encoded_row_groups += record.encoded_row_groups;
        usage.push(crate::cost::ChunkUsage {
            elapsed_ms: record.elapsed_ms,
            requests: record.requests,
        });
        files.push(ManifestFile {
            file: record.output,
            chunk_id: record.bin_id,
        });
    }
    files.sort_by(|a, b| a.file.key.cmp(&b.file.key));
    Ok(Some(Compacted {
        files,
        result,
        usage,
    }))
}

/// The partitions' totals of `files`.
pub(super) fn partitions_of(files: &[ManifestFile]) -> BTreeMap<String, PartitionSummary> {
    let mut partitions = BTreeMap::new();
    for f in files {
        let path = partition_path(&f.file.key).to_string();
        let p = partitions.entry(path.clone()).or_insert(PartitionSummary {
            path,
            files: 0,
            rows: 0,
            bytes: 0,
        });
        p.files += 1;
        p.rows += f.file.rows;
        p.bytes += f.file.bytes;
    }
    partitions
}
