//! A compaction bin (`output.target_file_size`): its chunk files fetched from the
//! staging folder, merged in order into one file ([`crate::compact::merge_files`]),
//! stored under the bin's key, and the bin's commit record written last with
//! create-if-absent, exactly as a chunk's. A retried or duplicated bin writes the same
//! key with the same bytes; one that finds its record present is done.

use std::time::Instant;

use tracing::{Instrument, info, info_span, warn};

use super::attempt::AttemptTrace;
use super::{Disposition, FaultPoint, Worker};
use crate::clock::now_ms;
use crate::job::compaction::{BinPlan, BinRecord, BinTask};
use crate::job::{AttemptRecord, FailureRecord, get_json, layout, to_json_bytes};
use crate::location::Location;
use crate::metrics::{Unit, names};
use crate::queue::Message;
use crate::store::{ObjectStore, PutOutcome, RequestCounter};
use crate::write::FileEntry;
use crate::{Error, Result};

/// What became of a bin.
#[derive(Debug, Clone)]
pub enum BinOutcome {
    /// This call committed it.
    Committed(Box<BinRecord>),
    /// It was committed before (duplicate delivery, or another worker won).
    AlreadyCommitted,
}

/// Bytes of one ranged GET when a bin's input is fetched to the local disk.
const FETCH_PIECE_BYTES: u64 = 8 * 1024 * 1024;

/// Copies `key` of `store` (of `size` bytes) to the local file `to`, piece by piece, so a
/// worker's memory holds one piece at a time.
async fn fetch(
    job_id: &crate::ids::JobId,
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
    to: &std::path::Path,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let staging = |e: std::io::Error| Error::Staging {
        context: format!("writing {}", to.display()),
        source: e,
    };
    let mut file = tokio::fs::File::create(to).await.map_err(staging)?;
    let mut at = 0;
    while at < size.max(1) {
        let piece = store
            .get_range(key, at..(at + FETCH_PIECE_BYTES).min(size))
            .await?;
        if piece.is_empty() {
            break;
        }
        at += piece.len() as u64;
        file.write_all(&piece).await.map_err(staging)?;
    }
    file.flush().await.map_err(staging)?;
    if at != size {
        return Err(Error::Job {
            job_id: job_id.clone(),
            message: format!("staged file {key}: {at} bytes read, {size} recorded"),
        });
    }
    Ok(())
}

/// Fetches the bin's files from `staged` into `dir` and merges them into `merged_path`;
/// what the merge wrote and the merged file's size. Refuses a merge whose rows differ
/// from the files' recorded rows.
async fn merge_bin(
    job_id: &crate::ids::JobId,
    staged: &dyn ObjectStore,
    plan: &BinPlan,
    spec: &crate::spec::JobSpec,
    dir: &std::path::Path,
    merged_path: &std::path::Path,
) -> Result<(crate::compact::Merged, u64)> {
    let mut paths = Vec::with_capacity(plan.inputs.len());
    for (n, input) in plan.inputs.iter().enumerate() {
        let path = dir.join(format!("{n:05}.parquet"));
        fetch(job_id, staged, &input.file.key, input.file.bytes, &path).await?;
        paths.push(path);
    }
    let props =
        crate::write::writer_properties(spec.output.compression, spec.output.row_group_rows)?;
    let rows_rg = spec.output.row_group_rows;
    let out = merged_path.to_path_buf();
    let merged = tokio::task::spawn_blocking(move || {
        crate::compact::merge_files(&paths, &out, props, rows_rg)
    })
    .await
    .map_err(|source| Error::Task {
        what: "the compaction merge",
        source,
    })??;
    if merged.rows != plan.rows() {
        return Err(Error::Job {
            job_id: job_id.clone(),
            message: format!(
                "bin {}: {} rows merged from files that list {}",
                plan.bin_id,
                merged.rows,
                plan.rows()
            ),
        });
    }
    let bytes = std::fs::metadata(merged_path)
        .map_err(|e| Error::Staging {
            context: format!("reading {}", merged_path.display()),
            source: e,
        })?
        .len();
    Ok((merged, bytes))
}

impl Worker {
    /// Merges one bin; `attempt` is the message's receive count and `max_receive_count`
    /// the queue's redrive setting.
    pub async fn process_bin(
        &self,
        task: &BinTask,
        attempt: u32,
        max_receive_count: u32,
    ) -> Result<BinOutcome> {
        let span = info_span!("bin", job_id = %task.job_id, bin_id = %task.bin, attempt);
        self.process_bin_inner(task, attempt, max_receive_count)
            .instrument(span)
            .await
    }

    async fn process_bin_inner(
        &self,
        task: &BinTask,
        attempt: u32,
        max_receive_count: u32,
    ) -> Result<BinOutcome> {
        let job = self.job(&task.work, &task.job_id).await?;
        let record_key = layout::bin(&task.job_id, &task.bin);
        if job.work.head(&record_key).await?.is_some() {
            info!("bin already committed");
            return Ok(BinOutcome::AlreadyCommitted);
        }
        let started = Instant::now();
        let started_ms = now_ms();
        let requests = std::sync::Arc::new(RequestCounter::default());
        let work = requests.wrap(job.work.clone());
        let record = AttemptRecord {
            job_id: task.job_id.clone(),
            chunk_id: task.bin.clone(),
            attempt,
            last_attempt: attempt >= max_receive_count,
            worker: self.name.clone(),
            started_ms,
            stage: "read".into(),
            memory_mb: Some(self.env.worker_memory_mb),
            visibility_timeout_s: None,
            alive_ms: None,
            deadline_ms: None,
        };
        let attempt_key = layout::bin_attempt(&task.job_id, &task.bin);
        let trace = AttemptTrace::start_at(work.clone(), attempt_key, record, self.lease).await?;
        let result: Result<BinOutcome> = async {
            let plan: BinPlan =
                get_json(work.as_ref(), &layout::bin_plan(&task.job_id, &task.bin)).await?;
            let dir = tempfile::Builder::new()
                .prefix("fanout-chunk-bin-")
                .tempdir()
                .map_err(|e| Error::Staging {
                    context: format!("creating a folder in {}", std::env::temp_dir().display()),
                    source: e,
                })?;
            let staged = requests.wrap(job.output.clone());
            let merged_path = dir.path().join("merged.parquet");
            let (merged, bytes) = merge_bin(
                &task.job_id,
                staged.as_ref(),
                &plan,
                &job.spec,
                dir.path(),
                &merged_path,
            )
            .await?;
            trace.stage("store").await?;
            let spec = &job.spec;
            self.crash_at(FaultPoint::BeforeFirstOutput, &task.bin)?;
            let dest = crate::job::compacted_output_location(spec, &task.job_id);
            let dest = requests.wrap(self.env.store_with(&dest, &spec.sse)?);
            dest.put_file(&plan.output_key, &merged_path).await?;
            let record = BinRecord {
                job_id: task.job_id.clone(),
                bin_id: task.bin.clone(),
                output: FileEntry {
                    key: plan.output_key.clone(),
                    partition: plan.partition.clone(),
                    rows: merged.rows,
                    bytes,
                },
                inputs: plan.inputs.len() as u64,
                input_bytes: plan.input_bytes(),
                copied_row_groups: merged.copied_row_groups,
                encoded_row_groups: merged.encoded_row_groups,
                attempt,
                worker: self.name.clone(),
                started_ms,
                elapsed_ms: started.elapsed().as_millis() as u64,
                requests: {
                    let mut r = requests.snapshot();
                    r.get += 1;
                    r.put += 1;
                    r
                },
            };
            self.commit_bin(&spec.name, work.as_ref(), &record_key, record)
                .await
        }
        .await;
        trace.stop().await;
        result
    }

    /// Writes the bin's commit record, create-if-absent: its outcome is whoever created it.
    async fn commit_bin(
        &self,
        job_name: &str,
        work: &dyn ObjectStore,
        record_key: &str,
        record: BinRecord,
    ) -> Result<BinOutcome> {
        self.crash_at(FaultPoint::BeforeCommit, &record.bin_id)?;
        let outcome = work
            .put_if_absent(record_key, to_json_bytes("bin record", &record)?)
            .await?;
        match outcome {
            PutOutcome::AlreadyExists => {
                info!("another attempt committed the bin first");
                Ok(BinOutcome::AlreadyCommitted)
            }
            PutOutcome::Created => {
                self.crash_at(FaultPoint::AfterCommit, &record.bin_id)?;
                let m = &self.env.metrics;
                m.record(job_name, names::BINS_COMMITTED, 1.0, Unit::Count);
                m.record(
                    job_name,
                    names::BIN_DURATION,
                    record.elapsed_ms as f64,
                    Unit::Milliseconds,
                );
                info!(
                    inputs = record.inputs,
                    rows = record.output.rows,
                    bytes = record.output.bytes,
                    copied_row_groups = record.copied_row_groups,
                    encoded_row_groups = record.encoded_row_groups,
                    "bin committed"
                );
                Ok(BinOutcome::Committed(Box::new(record)))
            }
        }
    }

    /// Handles one bin message (see [`Worker::handle_message`]).
    pub(super) async fn handle_bin_message(
        &self,
        msg: &Message,
        max_receive_count: u32,
    ) -> Disposition {
        let task = match BinTask::from_body(&msg.body) {
            Ok(t) => t,
            Err(e) => {
                warn!(message_id = %msg.id, error = %e, "malformed bin message");
                return Disposition::Reject(e);
            }
        };
        match self
            .process_bin(&task, msg.receive_count, max_receive_count)
            .await
        {
            Ok(_) => Disposition::Ack(None),
            Err(e) => {
                let last_attempt = msg.receive_count >= max_receive_count;
                let name = self.job_name(&task.work, &task.job_id).await;
                self.env
                    .metrics
                    .record(&name, names::BINS_FAILED, 1.0, Unit::Count);
                warn!(job_id = %task.job_id, bin_id = %task.bin, attempt = msg.receive_count, error = %e, "bin failed");
                if let Err(re) = self
                    .record_bin_failure(&task, msg.receive_count, &e, last_attempt)
                    .await
                {
                    warn!(error = %re, "could not record the failure");
                }
                Disposition::Retry(e)
            }
        }
    }

    /// Writes the failure record of a bin attempt.
    pub(super) async fn record_bin_failure(
        &self,
        task: &BinTask,
        attempts: u32,
        e: &Error,
        last_attempt: bool,
    ) -> Result<()> {
        let work = self
            .env
            .store(&Location::parse(&task.work).map_err(Error::Config)?)?;
        let rec = FailureRecord {
            job_id: task.job_id.clone(),
            chunk_id: task.bin.clone(),
            attempts,
            error_kind: e.kind().to_string(),
            message: e.to_string(),
            permanent: !e.is_retryable(),
            last_attempt,
            at_ms: now_ms(),
        };
        work.put(
            &layout::bin_failure(&task.job_id, &task.bin),
            to_json_bytes("failure record", &rec)?,
        )
        .await?;
        Ok(())
    }
}
