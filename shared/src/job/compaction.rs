//! The compaction stage's records (`output.target_file_size`): once every chunk has
//! committed, each partition's chunk files are bin-packed, in chunk order, into bins of
//! about the target size; each bin is a task on the chunk queue, merged into one file by
//! a worker, which writes the bin's commit record last with a conditional create, as a
//! chunk's. A file that is alone in its partition's run, or already at the target, is
//! kept as it is (published by finalize, not rewritten).
//!
//! Everything here derives from the commit records alone ([`plan_bins`] is a pure
//! function of them), so the planner of the stage, finalize and a re-run all agree on the
//! bins, their ids and their output keys, and two runs write byte-identical files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ChunkRecord, ManifestFile};
use crate::ids::{ChunkId, JobId};
use crate::store::RequestCounts;
use crate::write::FileEntry;

/// Most input files one bin merges: bounds a bin task's time and its plan's size (a
/// partition of many tiny files makes several bins, each under the target).
pub const MAX_BIN_INPUTS: usize = 1_000;

/// One input file of a bin: a chunk's file, as its commit record lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinInput {
    /// The file (its key below the staging folder is its output key).
    #[serde(flatten)]
    pub file: FileEntry,
    /// The chunk that wrote it.
    pub chunk_id: ChunkId,
}

/// One bin: files of one partition, in chunk order, merged into the file `output_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinPlan {
    /// Job id.
    pub job_id: JobId,
    /// Bin id: a digest of the job id and the input keys.
    pub bin_id: ChunkId,
    /// Partition column values (as text), in `partition_by` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition: Vec<(String, Option<String>)>,
    /// Key of the merged file below the output location.
    pub output_key: String,
    /// The files merged, in chunk order.
    pub inputs: Vec<BinInput>,
}

impl BinPlan {
    /// Rows of every input.
    pub fn rows(&self) -> u64 {
        self.inputs.iter().map(|i| i.file.rows).sum()
    }

    /// Bytes of every input.
    pub fn input_bytes(&self) -> u64 {
        self.inputs.iter().map(|i| i.file.bytes).sum()
    }
}

/// What the compaction stage does with a job's chunk files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionPlan {
    /// Bins of two or more files, each merged by a task.
    pub bins: Vec<BinPlan>,
    /// Files published as they are: alone in their run of small files, or at the target
    /// already.
    pub kept: Vec<ManifestFile>,
}

/// The compaction stage's summary, written after every bin's plan and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionSummary {
    /// Job id.
    pub job_id: JobId,
    /// `output.target_file_size` in bytes.
    pub target_bytes: u64,
    /// Bins planned (tasks).
    pub bins: u64,
    /// Chunk files merged by the bins.
    pub merged_files: u64,
    /// Chunk files kept as they are.
    pub kept_files: u64,
    /// When it was planned (ms since the epoch).
    pub planned_ms: u64,
}

/// The queue message of one bin. Small whatever the bin (its inputs are in its plan), so
/// a bin of a thousand files fits a message like a chunk does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinTask {
    /// Job id.
    pub job_id: JobId,
    /// Work location (where `spec.json` is).
    pub work: String,
    /// The bin.
    pub bin: ChunkId,
}

impl BinTask {
    /// Whether a message body is a bin task rather than a chunk task (bodies are JSON
    /// objects; only a bin task has a `bin` field).
    pub fn is_bin_body(body: &str) -> bool {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body)
            .is_ok_and(|m| m.contains_key("bin"))
    }

    /// Parses and checks a message body.
    pub fn from_body(body: &str) -> crate::Result<BinTask> {
        super::records::parse_task(body, |t: &BinTask| &t.work)
    }
}

/// A bin's commit record: written last, with create-if-absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinRecord {
    /// Job id.
    pub job_id: JobId,
    /// Bin id.
    pub bin_id: ChunkId,
    /// The merged file.
    pub output: FileEntry,
    /// Files merged.
    pub inputs: u64,
    /// Their bytes.
    pub input_bytes: u64,
    /// Row groups copied as they were (large enough: no decoding, no re-encoding).
    pub copied_row_groups: u64,
    /// Row groups encoded from the small ones.
    pub encoded_row_groups: u64,
    /// Which receive of the message committed it.
    pub attempt: u32,
    /// Who committed it.
    pub worker: String,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Processing time.
    pub elapsed_ms: u64,
    /// Requests this attempt made to the object store (for the measured cost).
    #[serde(default)]
    pub requests: RequestCounts,
}

/// The partition path of a file key (`a=1/b=2` of `a=1/b=2/part-….parquet`).
fn partition_of(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(p, _)| p)
}

/// The bin id of `inputs` of a job: a digest of the job id and the input keys.
fn bin_id(job_id: &JobId, inputs: &[BinInput]) -> ChunkId {
    let mut h = Sha256::new();
    h.update(job_id.as_str().as_bytes());
    h.update(b"\nbin");
    for i in inputs {
        h.update(b"\n");
        h.update(i.file.key.as_bytes());
    }
    let d = h.finalize();
    let id: String = d[..10].iter().map(|b| format!("{b:02x}")).collect();
    ChunkId::from_trusted(id)
}

/// Bytes per row of the job's densest files: the least bytes per row among the files with
/// at least half the rows of the job's largest file. A tiny chunk file is mostly per-file
/// and per-page overhead (footer, page headers, a dictionary per column) that a merged
/// file does not repeat, so its bytes overstate what it adds to a bin; its rows at this
/// rate estimate it instead. `None` without rows.
fn dense_bytes_per_row<'a>(files: impl Iterator<Item = &'a FileEntry> + Clone) -> Option<f64> {
    let most = files.clone().map(|f| f.rows).max().filter(|r| *r > 0)?;
    files
        .filter(|f| f.rows > 0 && f.rows * 2 >= most)
        .map(|f| f.bytes as f64 / f.rows as f64)
        .min_by(f64::total_cmp)
}

/// What a file is estimated to add to a merged file: its bytes when its row groups are
/// copied as they are, else its rows at the dense rate (never more than its bytes).
fn merged_estimate(f: &FileEntry, rate: Option<f64>) -> u64 {
    match rate {
        Some(rate) if f.rows < crate::write::MIN_EARLY_ROW_GROUP_ROWS as u64 => {
            ((f.rows as f64 * rate).ceil() as u64).min(f.bytes)
        }
        _ => f.bytes,
    }
}

/// Plans the compaction of a job's chunk files: per partition, the files in chunk order
/// (plan index, then key) are packed into bins, a bin closing once its files are
/// estimated to merge into `target` bytes (so every bin but a partition's last merges
/// into at least about the target: a partition of `B` bytes ends in about
/// `⌊B / target⌋ + 1` files; see [`merged_estimate`]), before its files' bytes would pass
/// `max_file`, or at [`MAX_BIN_INPUTS`] files. A file of `target` bytes or more, and a bin
/// of one file, is kept as it is.
pub fn plan_bins(
    job_id: &JobId,
    records: &[ChunkRecord],
    target: u64,
    max_file: u64,
) -> CompactionPlan {
    let mut ordered: Vec<&ChunkRecord> = records.iter().collect();
    ordered.sort_by(|a, b| (a.index, &a.chunk_id).cmp(&(b.index, &b.chunk_id)));
    let rate = dense_bytes_per_row(ordered.iter().flat_map(|r| r.outputs.iter()));
    let mut by_partition: BTreeMap<&str, Vec<BinInput>> = BTreeMap::new();
    for r in ordered {
        for f in &r.outputs {
            by_partition
                .entry(partition_of(&f.key))
                .or_default()
                .push(BinInput {
                    file: f.clone(),
                    chunk_id: r.chunk_id.clone(),
                });
        }
    }
    let mut plan = CompactionPlan::default();
    for (path, files) in by_partition {
        let mut run: Vec<BinInput> = Vec::new();
        let (mut run_bytes, mut run_estimate) = (0u64, 0u64);
        for f in files {
            if f.file.bytes >= target {
                close_run(job_id, path, &mut run, &mut plan);
                (run_bytes, run_estimate) = (0, 0);
                plan.kept.push(kept(f));
                continue;
            }
            if !run.is_empty() && run_bytes.saturating_add(f.file.bytes) > max_file {
                close_run(job_id, path, &mut run, &mut plan);
                (run_bytes, run_estimate) = (0, 0);
            }
            run_bytes += f.file.bytes;
            run_estimate += merged_estimate(&f.file, rate);
            run.push(f);
            if run_estimate >= target || run.len() >= MAX_BIN_INPUTS {
                close_run(job_id, path, &mut run, &mut plan);
                (run_bytes, run_estimate) = (0, 0);
            }
        }
        close_run(job_id, path, &mut run, &mut plan);
    }
    plan.kept.sort_by(|a, b| a.file.key.cmp(&b.file.key));
    plan
}

fn kept(f: BinInput) -> ManifestFile {
    ManifestFile {
        file: f.file,
        chunk_id: f.chunk_id,
    }
}

/// Ends a run of small files: one file is kept, two or more make a bin.
fn close_run(job_id: &JobId, path: &str, run: &mut Vec<BinInput>, plan: &mut CompactionPlan) {
    let inputs = std::mem::take(run);
    match inputs.len() {
        0 => {}
        1 => plan.kept.extend(inputs.into_iter().map(kept)),
        _ => {
            let bin_id = bin_id(job_id, &inputs);
            let name = format!("part-{bin_id}.parquet");
            let output_key = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            plan.bins.push(BinPlan {
                job_id: job_id.clone(),
                partition: inputs[0].file.partition.clone(),
                bin_id,
                output_key,
                inputs,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(index: u64, files: &[(&str, u64)]) -> ChunkRecord {
        let chunk_id: ChunkId = format!("{index:020}").parse().unwrap();
        ChunkRecord {
            job_id: "j".parse().unwrap(),
            chunk_id: chunk_id.clone(),
            index,
            pieces: vec![],
            counts: Default::default(),
            bytes_read: 0,
            range_bytes: 0,
            outputs: files
                .iter()
                .map(|(p, bytes)| FileEntry {
                    key: format!("{p}/part-{chunk_id}-00000.parquet"),
                    partition: vec![],
                    rows: bytes / 10,
                    bytes: *bytes,
                })
                .collect(),
            rejects: None,
            reject_rules: Default::default(),
            schema: arrow::datatypes::Schema::empty(),
            aggregate: None,
            attempt: 1,
            worker: "w".into(),
            started_ms: 0,
            elapsed_ms: 0,
            stage_ms: Default::default(),
            requests: Default::default(),
        }
    }

    #[test]
    fn bins_close_at_the_target_keep_chunk_order_and_leave_big_and_lone_files() {
        let job: JobId = "j".parse().unwrap();
        // Given out of order: the plan follows the chunk index.
        let records: Vec<ChunkRecord> = (0..10u64)
            .rev()
            .map(|i| record(i, &[("y=1", 30), ("y=2", if i == 4 { 500 } else { 10 })]))
            .collect();
        let plan = plan_bins(&job, &records, 100, 1_000);
        // y=1: ten files of 30 bytes → bins of 4, 4 and a last one of 2.
        let y1: Vec<&BinPlan> = plan
            .bins
            .iter()
            .filter(|b| b.output_key.starts_with("y=1/"))
            .collect();
        assert_eq!(
            vec![4, 4, 2],
            y1.iter().map(|b| b.inputs.len()).collect::<Vec<_>>()
        );
        let order: Vec<u64> = y1
            .iter()
            .flat_map(|b| {
                b.inputs
                    .iter()
                    .map(|i| i.chunk_id.as_str().parse::<u64>().unwrap())
            })
            .collect();
        assert_eq!((0..10).collect::<Vec<u64>>(), order);
        // y=2: the 500-byte file of chunk 4 is kept; it splits the run of small ones.
        assert!(plan.kept.iter().any(|k| k.file.bytes == 500));
        let y2: Vec<usize> = plan
            .bins
            .iter()
            .filter(|b| b.output_key.starts_with("y=2/"))
            .map(|b| b.inputs.len())
            .collect();
        assert_eq!(vec![4, 5], y2);
        // Deterministic: the same records give the same bins, ids and keys.
        assert_eq!(plan, plan_bins(&job, &records, 100, 1_000));
        // Every file is in exactly one place.
        let placed = plan.kept.len() + plan.bins.iter().map(|b| b.inputs.len()).sum::<usize>();
        assert_eq!(20, placed);
    }

    #[test]
    fn a_lone_small_file_is_kept_and_bins_respect_max_file_and_the_input_cap() {
        let job: JobId = "j".parse().unwrap();
        let plan = plan_bins(&job, &[record(0, &[("y=1", 10)])], 100, 1_000);
        assert!(plan.bins.is_empty());
        assert_eq!(1, plan.kept.len());
        // max_file 50: a bin closes before it would pass 50 bytes.
        let records: Vec<ChunkRecord> = (0..6).map(|i| record(i, &[("y=1", 20)])).collect();
        let plan = plan_bins(&job, &records, 100, 50);
        assert_eq!(
            vec![2, 2, 2],
            plan.bins.iter().map(|b| b.inputs.len()).collect::<Vec<_>>()
        );
        // Many tiny files: bins of MAX_BIN_INPUTS.
        let records: Vec<ChunkRecord> = (0..2_500).map(|i| record(i, &[("y=1", 1)])).collect();
        let plan = plan_bins(&job, &records, 1 << 30, u64::MAX);
        assert_eq!(
            vec![1_000, 1_000, 500],
            plan.bins.iter().map(|b| b.inputs.len()).collect::<Vec<_>>()
        );
    }
}
