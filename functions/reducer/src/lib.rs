//! The reducer Lambda: `status` (for a Step Functions poll loop), `compact` (queue the
//! compaction stage's bins once every chunk is committed) and `finalize`; all
//! idempotent.

use fanout::env::Env;
use fanout::ids::JobId;
use fanout::location::Location;
use fanout::reducer::StatusQueues;
use serde::{Deserialize, Serialize};

/// The reducer's input.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `status`, `compact` or `finalize`.
    pub action: Action,
    /// Job id, checked when the request is read.
    pub job_id: JobId,
    /// Work location (defaults to the deployment's).
    #[serde(default)]
    pub work: Option<String>,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Report progress.
    Status,
    /// Start the compaction stage: plan its bins and queue them on the chunk queue
    /// (`FANOUT_QUEUE_URL`); a stage started before is left as it is.
    Compact,
    /// Merge and write the manifest.
    Finalize,
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Job id.
    pub job_id: JobId,
    /// Work location.
    pub work: String,
    /// Chunks planned.
    pub planned: u64,
    /// Chunks committed.
    pub committed: u64,
    /// Chunks queued or running.
    pub pending: u64,
    /// Chunks failed, to be retried.
    pub failed: u64,
    /// Chunks failed for good.
    pub dead_lettered: u64,
    /// Chunks whose worker was killed (out of memory, timed out) without a record; those
    /// on their last attempt are failed for good, and in `failed_chunks`.
    #[serde(default)]
    pub lost: u64,
    /// Chunks with no record left without any message to deliver them (the chunk queue
    /// empty, the dead-letter queue not): failed for good, and in `failed_chunks`.
    #[serde(default)]
    pub stranded: u64,
    /// Messages in the dead-letter queue (every job's), when the reducer knows the queue
    /// (`FANOUT_DLQ_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_messages: Option<u64>,
    /// Ids of lost, stranded, failed and dead-lettered chunks with their last errors (at most
    /// [`MAX_FAILED_CHUNKS`], then a count).
    pub failed_chunks: Vec<String>,
    /// No chunk (and no compaction bin) can make progress any more.
    pub settled: bool,
    /// Ready to finalize: every chunk is committed and, with a compaction stage, every bin.
    pub complete: bool,
    /// Every chunk is committed and the compaction stage is to be started (`compact`).
    #[serde(default)]
    pub compaction_due: bool,
    /// Compaction bins planned (0 before the stage starts or without one).
    #[serde(default)]
    pub bins: u64,
    /// Compaction bins committed.
    #[serde(default)]
    pub bins_committed: u64,
}

/// The answer to `compact`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactReply {
    /// Job id.
    pub job_id: JobId,
    /// Bins planned.
    pub bins: u64,
    /// Chunk files they merge.
    pub merged_files: u64,
    /// Chunk files kept as they are.
    pub kept_files: u64,
    /// Bin tasks this call sent (0 when the stage was started before).
    pub sent: u64,
}

/// The answer to `finalize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizeReply {
    /// Job id.
    pub job_id: JobId,
    /// `succeeded`.
    pub outcome: String,
    /// Records read.
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Records rejected.
    pub rows_rejected: u64,
    /// Files written.
    pub files: u64,
    /// The manifest.
    pub manifest: String,
    /// The aggregate table (`aggregates.parquet`: key below the work location, rows, bytes),
    /// when the spec has an aggregate; never its rows, which may be millions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<fanout::job::AggregateTable>,
}

/// A reducer failure, typed for Lambda's `errorType` (and Step Functions' `Catch`).
#[derive(Debug, thiserror::Error)]
pub enum ReduceError {
    /// The input is not a reducer request.
    #[error("bad request: {0}")]
    Request(String),
    /// Status or finalize failed.
    #[error(transparent)]
    Fanout(#[from] fanout::Error),
    /// The reply could not be serialized.
    #[error("serializing the reply: {source}")]
    Reply {
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
}

impl From<ReduceError> for lambda_runtime::Diagnostic {
    fn from(e: ReduceError) -> Self {
        let error_type = match &e {
            ReduceError::Request(_) => "BadRequest".to_string(),
            ReduceError::Fanout(f) => f.kind().to_string(),
            ReduceError::Reply { .. } => "SerializeError".to_string(),
        };
        lambda_runtime::Diagnostic {
            error_type,
            error_message: e.to_string(),
        }
    }
}

/// Step Functions state data is capped at 256 KiB: list at most this many failed chunks.
pub const MAX_FAILED_CHUNKS: usize = 50;

fn failed_chunks(s: &fanout::reducer::JobStatus) -> Vec<String> {
    // Lost chunks first: the dead-lettered ones are why a settled job failed.
    let all: Vec<String> = s
        .lost
        .iter()
        .map(fanout::reducer::describe_lost)
        .chain(s.stranded.iter().map(fanout::reducer::describe_stranded))
        .chain(s.dead_lettered.iter().chain(&s.failed).map(|f| {
            let msg: String = f.message.chars().take(300).collect();
            format!("{}: {msg}", f.chunk_id)
        }))
        .chain(s.failed_bins())
        .collect();
    let mut out: Vec<String> = all.iter().take(MAX_FAILED_CHUNKS).cloned().collect();
    if all.len() > MAX_FAILED_CHUNKS {
        out.push(format!(
            "… and {} more: run `fanout status {}`",
            all.len() - MAX_FAILED_CHUNKS,
            s.job_id
        ));
    }
    out
}

/// Handles one request; `queues` are the chunk queue and its dead-letter queue, where
/// known, whose depths `status` reports.
pub async fn handle(
    env: &Env,
    default_work: Option<&Location>,
    queues: &StatusQueues,
    event: serde_json::Value,
) -> Result<serde_json::Value, ReduceError> {
    let req: Request = serde_json::from_value(event).map_err(|e| {
        ReduceError::Request(format!(
            "{e}: expected {{\"action\": \"status\"|\"compact\"|\"finalize\", \"job_id\": …}}"
        ))
    })?;
    let work = match (&req.work, default_work) {
        (Some(w), _) => Location::parse(w).map_err(ReduceError::Request)?,
        (None, Some(w)) => w.clone(),
        (None, None) => {
            return Err(ReduceError::Request(
                "no `work` in the request and no FANOUT_WORK".into(),
            ));
        }
    };
    let reply = match req.action {
        Action::Status => {
            let s = fanout::reducer::job_status_with(
                env,
                &work,
                &req.job_id,
                fanout::clock::now_ms(),
                queues,
            )
            .await?;
            serde_json::to_value(StatusReply {
                job_id: s.job_id.clone(),
                work: work.to_string(),
                planned: s.planned,
                committed: s.committed,
                pending: s.pending,
                failed: s.failed.len() as u64,
                dead_lettered: s.dead_lettered.len() as u64,
                lost: s.lost.len() as u64,
                stranded: s.stranded.len() as u64,
                dead_letter_messages: s.dead_letter_messages,
                failed_chunks: failed_chunks(&s),
                settled: s.is_settled(),
                complete: s.is_complete(),
                compaction_due: s.compaction_due(),
                bins: s.compaction.as_ref().map_or(0, |c| c.bins),
                bins_committed: s.compaction.as_ref().map_or(0, |c| c.committed),
            })
        }
        Action::Compact => {
            let Some(queue) = &queues.chunks else {
                return Err(ReduceError::Request(
                    "compact needs the chunk queue: FANOUT_QUEUE_URL is not set".into(),
                ));
            };
            let started =
                fanout::compact::start(env, &work, &req.job_id, queue.as_ref(), false).await?;
            serde_json::to_value(CompactReply {
                job_id: req.job_id.clone(),
                bins: started.summary.bins,
                merged_files: started.summary.merged_files,
                kept_files: started.summary.kept_files,
                sent: started.sent,
            })
        }
        Action::Finalize => {
            let m = fanout::reducer::finalize_job(env, &work, &req.job_id).await;
            // The job's cost and duration metrics are buffered: send them before returning.
            if let Err(e) = env.metrics.flush().await {
                tracing::warn!(error = %e, "metrics flush failed");
            }
            let m = m?;
            serde_json::to_value(FinalizeReply {
                job_id: m.job_id.clone(),
                outcome: m.outcome.clone(),
                rows_read: m.counts.read,
                rows_written: m.counts.written,
                rows_rejected: m.counts.rejected,
                files: m.files.len() as u64,
                manifest: work
                    .join(&fanout::job::layout::manifest(&m.job_id))
                    .to_string(),
                aggregate: m.aggregate.as_ref().map(|a| a.parquet.clone()),
            })
        }
    };
    reply.map_err(|source| ReduceError::Reply { source })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fanout::job::{AttemptRecord, FailureRecord};
    use fanout::reducer::JobStatus;

    use super::failed_chunks;

    fn lost(chunk: &str, last_attempt: bool) -> AttemptRecord {
        AttemptRecord {
            job_id: "orders-1".parse().unwrap(),
            chunk_id: chunk.parse().unwrap(),
            attempt: 3,
            last_attempt,
            worker: "2026/12/01/[$LATEST]abc".into(),
            started_ms: 1_764_000_000_000,
            stage: "read".into(),
            memory_mb: Some(1769),
            visibility_timeout_s: Some(1800),
            alive_ms: None,
            deadline_ms: None,
        }
    }

    #[test]
    fn lost_chunks_come_first_with_what_is_known_of_them() {
        let status = JobStatus {
            job_id: "orders-1".parse().unwrap(),
            planned: 3,
            committed: 1,
            failed: vec![],
            dead_lettered: vec![FailureRecord {
                job_id: "orders-1".parse().unwrap(),
                chunk_id: "0000000000000000000a".parse().unwrap(),
                attempts: 3,
                error_kind: "InputError".into(),
                message: "corrupt gzip".into(),
                permanent: true,
                last_attempt: true,
                at_ms: 1,
            }],
            pending: 0,
            lost: vec![lost("0000000000000000000b", true)],
            dead_letter_messages: None,
            stranded: vec![],
            outcome: None,
            compaction: None,
        };
        assert!(status.is_settled() && !status.is_complete());
        let listed = failed_chunks(&status);
        assert_eq!(2, listed.len(), "{listed:?}");
        for part in [
            "0000000000000000000b lost on attempt 3, the last: dead-lettered",
            "last stage read",
            "1769 MB worker",
        ] {
            assert!(listed[0].contains(part), "`{part}` not in {}", listed[0]);
        }
        assert_eq!("0000000000000000000a: corrupt gzip", listed[1]);

        // Lost but not on the last receive: the queue retries it, the job is not settled.
        let retrying = JobStatus {
            dead_lettered: vec![],
            lost: vec![lost("0000000000000000000b", false)],
            ..status
        };
        assert!(!retrying.is_settled());
    }
}
