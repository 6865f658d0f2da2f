//! `job_status`: where a job's chunks stand, from the records alone (committed, failed,
//! dead-lettered, lost), and with the queues' depths where they are known (stranded).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::ids::{ChunkId, JobId};
use crate::job::compaction::CompactionSummary;
use crate::job::{
    AttemptRecord, FailureRecord, Manifest, PlanSummary, READ_CONCURRENCY, committed_ids, get_json,
    get_json_opt, ids_under, layout, load_job,
};
use crate::location::Location;
use crate::queue::Queue;
use crate::store::ObjectStore;
use crate::{Error, Result};

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Job id.
    pub job_id: JobId,
    /// Chunks planned.
    pub planned: u64,
    /// Chunks committed.
    pub committed: u64,
    /// Chunks whose last attempt failed and that may still be retried.
    pub failed: Vec<FailureRecord>,
    /// Chunks that will not be retried: receives exhausted, dead-lettered.
    pub dead_lettered: Vec<FailureRecord>,
    /// Planned chunks neither committed nor failed (queued or running).
    pub pending: u64,
    /// Chunks whose latest attempt left neither a commit nor a failure record and cannot
    /// still be running (past [`AttemptRecord::ends_by_ms`] and [`LOST_MARGIN_MS`]: its
    /// lease or its invocation's deadline is over): the worker was killed (out of memory,
    /// timed out). With
    /// `last_attempt` the message is dead-lettered and the chunk failed for good;
    /// otherwise the queue delivers it again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<AttemptRecord>,
    /// Messages in the dead-letter queue (approximate, every job's), when status was given
    /// the queue ([`StatusQueues`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_messages: Option<u64>,
    /// Chunks with no record that can no longer be delivered: the chunk queue has held no
    /// message at all (queued or in flight) for [`SQS_SETTLE_MS`] while the dead-letter
    /// queue holds some. Dead-lettered without a record (a receive that never reached
    /// the worker, such as an invocation that failed before its first chunk), or never
    /// queued. Failed for good: counted here, not in `pending`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stranded: Vec<ChunkId>,
    /// `succeeded` / `failed` once finalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The compaction stage, for a job that has one (`output.target_file_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionStatus>,
}

/// Where a job's compaction stage stands: its bins, judged as chunks are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionStatus {
    /// The stage was started: its bins are planned and queued.
    pub started: bool,
    /// Bins planned.
    pub bins: u64,
    /// Bins committed.
    pub committed: u64,
    /// Bins queued or running.
    pub pending: u64,
    /// Bins whose last attempt failed and that may still be retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailureRecord>,
    /// Bins that will not be retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_lettered: Vec<FailureRecord>,
    /// Bins whose worker was killed without a record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<AttemptRecord>,
}

impl CompactionStatus {
    fn is_complete(&self) -> bool {
        self.started && self.committed == self.bins
    }

    fn is_settled(&self) -> bool {
        self.started
            && self.failed.is_empty()
            && self.pending == 0
            && self.lost.iter().all(|a| a.last_attempt)
    }
}

impl JobStatus {
    /// Every planned chunk is committed.
    pub fn chunks_complete(&self) -> bool {
        self.committed == self.planned
    }

    /// Ready to finalize: every planned chunk is committed and, for a job with a
    /// compaction stage, every bin.
    pub fn is_complete(&self) -> bool {
        self.chunks_complete()
            && self
                .compaction
                .as_ref()
                .is_none_or(CompactionStatus::is_complete)
    }

    /// Every chunk is committed and the compaction stage is to be started
    /// ([`crate::compact::start`]).
    pub fn compaction_due(&self) -> bool {
        self.chunks_complete() && self.compaction.as_ref().is_some_and(|c| !c.started)
    }

    /// No task can make progress any more: complete, or only final failures left
    /// (dead-lettered, lost on the last attempt, stranded), of the chunks or, once they
    /// are all committed, of the compaction bins. A job whose compaction is due is not
    /// settled: starting it is the progress left.
    pub fn is_settled(&self) -> bool {
        let chunks_settled =
            self.failed.is_empty() && self.pending == 0 && self.lost.iter().all(|a| a.last_attempt);
        match &self.compaction {
            Some(c) if self.chunks_complete() => c.is_settled(),
            _ => chunks_settled,
        }
    }

    /// The compaction bins that failed for good (dead-lettered, lost on the last
    /// attempt), as failure lines.
    pub fn failed_bins(&self) -> Vec<String> {
        let Some(c) = &self.compaction else {
            return Vec::new();
        };
        c.lost
            .iter()
            .filter(|a| a.last_attempt)
            .map(|a| format!("compaction bin {}", describe_lost(a)))
            .chain(c.dead_lettered.iter().chain(&c.failed).map(|f| {
                format!(
                    "compaction bin {} after {} attempt(s): {}",
                    f.chunk_id, f.attempts, f.message
                )
            }))
            .collect()
    }

    /// Lost chunks whose message is dead-lettered: failed for good.
    pub fn lost_dead_lettered(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.lost.iter().filter(|a| a.last_attempt)
    }
}

/// Past the moment an attempt cannot still be running ([`AttemptRecord::ends_by_ms`]),
/// how much longer it is given before it is called lost.
///
/// Nothing the worker does itself can land later than that moment, except a request
/// already on the wire when it was stopped: the commit or failure record, small PUTs
/// that S3 answers within a second or two even at its tail. The rest is clock skew
/// between the worker's clock (which stamped `started_ms` / `alive_ms`) and the reader's:
/// Lambda and EC2 keep to Amazon Time Sync within a millisecond, an operator's
/// NTP-synced machine within a second. 30 s covers both tenfold, and keeps a killed
/// Lambda attempt reported within a minute of its deadline.
pub const LOST_MARGIN_MS: u64 = 30_000;

/// Whether `attempt` is lost at `now_ms`: no failure record of it (`failure` is of an
/// earlier attempt or absent) and too old to still be running.
fn is_lost(attempt: &AttemptRecord, failure: Option<&FailureRecord>, now_ms: u64) -> bool {
    // By time, not by receive count: a redrive restarts the count while an older failure
    // record stays, and that record must not hide a later attempt that vanished.
    let failed_after = failure.is_some_and(|f| f.at_ms >= attempt.started_ms);
    let gone = attempt
        .ends_by_ms()
        .is_some_and(|end| now_ms > end.saturating_add(LOST_MARGIN_MS));
    !failed_after && gone
}

/// The tasks (chunks or bins) not committed, as their records tell.
struct Judged {
    /// Last attempt failed, may be retried.
    failed: Vec<FailureRecord>,
    /// Failed for good.
    dead: Vec<FailureRecord>,
    /// Killed without a record.
    lost: Vec<AttemptRecord>,
}

/// Sorts the uncommitted tasks' failure and attempt records: an attempt past its end with
/// no later failure record is lost; a lost attempt is later than its task's failure
/// record, which then no longer says where the task stands.
fn judge(failures: &[FailureRecord], attempts: Vec<AttemptRecord>, now_ms: u64) -> Judged {
    let by_task: BTreeMap<&str, &FailureRecord> =
        failures.iter().map(|f| (f.chunk_id.as_str(), f)).collect();
    let lost: Vec<AttemptRecord> = attempts
        .into_iter()
        .filter(|a| is_lost(a, by_task.get(a.chunk_id.as_str()).copied(), now_ms))
        .collect();
    let lost_ids: HashSet<&str> = lost.iter().map(|a| a.chunk_id.as_str()).collect();
    let (dead, failed): (Vec<_>, Vec<_>) = failures
        .iter()
        .filter(|f| !lost_ids.contains(f.chunk_id.as_str()))
        .cloned()
        .partition(|f| f.last_attempt);
    Judged { failed, dead, lost }
}

/// Reads the records under `prefix` of chunks not in `committed`.
async fn read_uncommitted<T: serde::de::DeserializeOwned>(
    store: &std::sync::Arc<dyn ObjectStore>,
    prefix: &str,
    committed: &HashSet<crate::ids::ChunkId>,
) -> Result<Vec<T>> {
    let keys: Vec<String> = store
        .list(prefix)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| {
            k.strip_prefix(prefix)
                .and_then(|s| s.strip_suffix(".json"))
                .is_some_and(|id| !committed.contains(id))
        })
        .collect();
    stream::iter(keys)
        .map(|k| {
            let store = store.clone();
            async move { get_json::<T>(store.as_ref(), &k).await }
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
}

/// The chunk queue and its dead-letter queue, for a status that reads their depth.
#[derive(Debug, Clone, Default)]
pub struct StatusQueues {
    /// The chunk queue.
    pub chunks: Option<Arc<dyn Queue>>,
    /// Its dead-letter queue.
    pub dead_letter: Option<Arc<dyn Queue>>,
}

/// How long SQS's approximate counts may lag the messages sent and received: AWS states
/// they may not be consistent until at least a minute after the producers stop.
pub const SQS_SETTLE_MS: u64 = 60_000;

/// Reads a job's status, judging lost attempts by the clock.
pub async fn job_status(env: &Env, work: &Location, job_id: &JobId) -> Result<JobStatus> {
    job_status_at(env, work, job_id, crate::clock::now_ms()).await
}

/// Reads a job's status as of `now_ms` (ms since the epoch): an attempt is lost when its
/// visibility timeout and [`LOST_MARGIN_MS`] have passed by then.
pub async fn job_status_at(
    env: &Env,
    work: &Location,
    job_id: &JobId,
    now_ms: u64,
) -> Result<JobStatus> {
    job_status_with(env, work, job_id, now_ms, &StatusQueues::default()).await
}

/// [`job_status_at`], with the queues' depths: the dead-letter queue's is reported, and
/// with both, pending chunks are [stranded](JobStatus::stranded) once nothing is left
/// to deliver them.
pub async fn job_status_with(
    env: &Env,
    work: &Location,
    job_id: &JobId,
    now_ms: u64,
    queues: &StatusQueues,
) -> Result<JobStatus> {
    let store = env.store(work)?;
    let summary: PlanSummary = get_json_opt(store.as_ref(), &layout::plan_summary(job_id))
        .await?
        .ok_or_else(|| Error::Job {
            job_id: job_id.clone(),
            message: format!("no plan under {work}: is the job id or the work location wrong?"),
        })?;
    let committed = committed_ids(store.as_ref(), job_id).await?;
    let failures: Vec<FailureRecord> =
        read_uncommitted(&store, &layout::failures(job_id), &committed).await?;
    let attempts: Vec<AttemptRecord> =
        read_uncommitted(&store, &layout::attempts(job_id), &committed).await?;
    // The last moment anything of this job moved: the queues' counts are judged only a
    // settling time after it.
    let last_activity_ms = attempts
        .iter()
        .map(|a| a.alive_ms.unwrap_or(a.started_ms))
        .chain(failures.iter().map(|f| f.at_ms))
        .fold(summary.planned_ms, u64::max);
    let Judged { failed, dead, lost } = judge(&failures, attempts, now_ms);
    let lost_ids: HashSet<&str> = lost.iter().map(|a| a.chunk_id.as_str()).collect();
    let outcome = get_json_opt::<Manifest>(store.as_ref(), &layout::manifest(job_id))
        .await?
        .map(|m| m.outcome);
    let unfinished = (failed.len() + dead.len() + lost.len()) as u64;
    let pending = summary
        .chunks
        .saturating_sub(committed.len() as u64 + unfinished);
    let depths = QueueDepths::read(queues).await?;
    let stranded = if pending > 0 && depths.strands(now_ms, last_activity_ms) {
        let (_, _, plan) = load_job(store.as_ref(), work, job_id).await?;
        let known: HashSet<&str> = failures
            .iter()
            .map(|f| f.chunk_id.as_str())
            .chain(lost_ids.iter().copied())
            .collect();
        plan.into_iter()
            .map(|c| c.id)
            .filter(|id| !committed.contains(id) && !known.contains(id.as_str()))
            .collect()
    } else {
        Vec::new()
    };
    let compaction = compaction_status(&store, work, job_id, now_ms).await?;
    Ok(JobStatus {
        job_id: job_id.clone(),
        planned: summary.chunks,
        committed: committed.len() as u64,
        pending: pending.saturating_sub(stranded.len() as u64),
        failed,
        dead_lettered: dead,
        lost,
        dead_letter_messages: depths.dead_letter,
        stranded,
        outcome,
        compaction,
    })
}

/// The compaction stage's status, for a job whose spec has one.
async fn compaction_status(
    store: &Arc<dyn ObjectStore>,
    work: &Location,
    job_id: &JobId,
    now_ms: u64,
) -> Result<Option<CompactionStatus>> {
    let spec = crate::job::load_spec(store.as_ref(), work, job_id).await?;
    if spec.output.target_file_bytes.is_none() {
        return Ok(None);
    }
    let Some(summary) =
        get_json_opt::<CompactionSummary>(store.as_ref(), &layout::compaction_summary(job_id))
            .await?
    else {
        return Ok(Some(CompactionStatus::default()));
    };
    let committed = ids_under(store.as_ref(), &layout::bins(job_id)).await?;
    let failures: Vec<FailureRecord> =
        read_uncommitted(store, &layout::bin_failures(job_id), &committed).await?;
    let attempts: Vec<AttemptRecord> =
        read_uncommitted(store, &layout::bin_attempts(job_id), &committed).await?;
    let Judged { failed, dead, lost } = judge(&failures, attempts, now_ms);
    let unfinished = (failed.len() + dead.len() + lost.len()) as u64;
    Ok(Some(CompactionStatus {
        started: true,
        bins: summary.bins,
        committed: committed.len() as u64,
        pending: summary
            .bins
            .saturating_sub(committed.len() as u64 + unfinished),
        failed,
        dead_lettered: dead,
        lost,
    }))
}

/// What the queues hold (approximately), where status was given them.
struct QueueDepths {
    chunks: Option<u64>,
    dead_letter: Option<u64>,
}

impl QueueDepths {
    async fn read(queues: &StatusQueues) -> Result<QueueDepths> {
        let depth = |q: &Option<Arc<dyn Queue>>| {
            let q = q.clone();
            async move {
                match q {
                    Some(q) => q.depth().await.map(|d| Some(d.visible + d.in_flight)),
                    None => Ok(None),
                }
            }
        };
        Ok(QueueDepths {
            chunks: depth(&queues.chunks).await?,
            dead_letter: depth(&queues.dead_letter).await?,
        })
    }

    /// Whether a job's pending chunks can no longer be delivered: no message of any job
    /// in the chunk queue, some in the dead-letter queue, and the job quiet for longer
    /// than the counts may lag. The dead-letter queue is shared by every job, so its
    /// depth alone says nothing of this one; an empty chunk queue does: nothing is left
    /// to deliver the chunks.
    fn strands(&self, now_ms: u64, last_activity_ms: u64) -> bool {
        self.chunks == Some(0)
            && self.dead_letter.is_some_and(|d| d > 0)
            && now_ms > last_activity_ms.saturating_add(SQS_SETTLE_MS)
    }
}

/// One line about a lost attempt: what is known of it, and its likely causes.
pub fn describe_lost(a: &AttemptRecord) -> String {
    let memory = a
        .memory_mb
        .map_or(String::new(), |m| format!(", {m} MB worker"));
    let heard = match (a.alive_ms, a.deadline_ms) {
        (Some(alive), _) => format!(", last heard of at {alive} ms"),
        (None, Some(deadline)) => format!(", invocation deadline {deadline} ms"),
        (None, None) => String::new(),
    };
    format!(
        "{} lost on attempt {}{} (started at {} ms{heard}, last stage {}{}, worker {}): no commit and no failure record, the worker was killed (out of memory or timed out?)",
        a.chunk_id,
        a.attempt,
        if a.last_attempt {
            ", the last: dead-lettered"
        } else {
            ""
        },
        a.started_ms,
        a.stage,
        memory,
        a.worker
    )
}

/// One line about a stranded chunk.
pub fn describe_stranded(id: &ChunkId) -> String {
    format!(
        "{id} stranded: no record, and no message left in the chunk queue while the dead-letter queue holds some (dead-lettered before reaching a worker?)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChunkId;

    fn attempt(attempt: u32, started_ms: u64) -> AttemptRecord {
        AttemptRecord {
            job_id: JobId::parse("j").expect("id"),
            chunk_id: ChunkId::parse("c").expect("id"),
            attempt,
            last_attempt: false,
            worker: "w".into(),
            started_ms,
            stage: "read".into(),
            memory_mb: Some(1769),
            visibility_timeout_s: Some(60),
            alive_ms: None,
            deadline_ms: None,
        }
    }

    fn failure(attempts: u32, at_ms: u64) -> FailureRecord {
        FailureRecord {
            job_id: JobId::parse("j").expect("id"),
            chunk_id: ChunkId::parse("c").expect("id"),
            attempts,
            error_kind: "StoreError".into(),
            message: "503".into(),
            permanent: false,
            last_attempt: true,
            at_ms,
        }
    }

    #[test]
    fn an_attempt_is_lost_only_past_its_timeout_and_without_a_later_failure_record() {
        let a = attempt(1, 1_000_000);
        let deadline = 1_000_000 + 60_000 + LOST_MARGIN_MS;
        assert!(!is_lost(&a, None, deadline));
        assert!(is_lost(&a, None, deadline + 1));
        // Its own failure record (written after it started): not lost.
        assert!(!is_lost(&a, Some(&failure(1, 1_000_500)), deadline + 1));
        // A failure record left from before a redrive, with a higher receive count than the
        // restarted one: it does not hide the vanished attempt.
        assert!(is_lost(&a, Some(&failure(3, 999_000)), deadline + 1));
    }

    #[test]
    fn a_lambda_attempt_is_lost_past_its_deadline_and_a_renewed_one_past_its_last_beat() {
        // The invocation ends 10 s in, long before the 60 s visibility timeout.
        let lambda = AttemptRecord {
            deadline_ms: Some(1_010_000),
            ..attempt(1, 1_000_000)
        };
        assert!(!is_lost(&lambda, None, 1_010_000 + LOST_MARGIN_MS));
        assert!(is_lost(&lambda, None, 1_010_000 + LOST_MARGIN_MS + 1));
        // Heard of 500 s in: its lease runs a visibility timeout from there.
        let fleet = AttemptRecord {
            alive_ms: Some(1_500_000),
            ..attempt(1, 1_000_000)
        };
        let end = 1_500_000 + 60_000 + LOST_MARGIN_MS;
        assert!(!is_lost(&fleet, None, end));
        assert!(is_lost(&fleet, None, end + 1));
    }

    #[test]
    fn chunks_are_stranded_only_with_an_empty_chunk_queue_a_dead_letter_and_a_quiet_job() {
        let d = |chunks, dead_letter| QueueDepths {
            chunks,
            dead_letter,
        };
        let quiet = 1_000_000 + SQS_SETTLE_MS + 1;
        assert!(d(Some(0), Some(1)).strands(quiet, 1_000_000));
        // The counts may still lag the job's last move.
        assert!(!d(Some(0), Some(1)).strands(quiet - 1, 1_000_000));
        // Messages of any job left in the chunk queue may be this job's.
        assert!(!d(Some(1), Some(1)).strands(quiet, 1_000_000));
        // Nothing dead-lettered, or a queue not known: no judgement.
        assert!(!d(Some(0), Some(0)).strands(quiet, 1_000_000));
        assert!(!d(None, Some(3)).strands(quiet, 1_000_000));
        assert!(!d(Some(0), None).strands(quiet, 1_000_000));
    }
}
