//! The whole pipeline in one process: plan → queue → N workers → finalize.
//!
//! The queue is a [`LocalQueue`] with the job's redrive settings, so a failing chunk is
//! retried and dead-lettered here exactly as it would be on SQS.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, info_span};

use crate::env::Env;
use crate::ids::{ChunkId, JobId};
use crate::job::{ChunkRecord, Manifest, layout};
use crate::location::Location;
use crate::planner::{PlannedJob, enqueue, plan_job};
use crate::queue::{LocalQueue, Message, Queue};
use crate::reducer::{JobStatus, finalize_job, job_status};
use crate::spec::JobSpec;
use crate::worker::{Disposition, Worker, retry_backoff};
use crate::{Error, Result};

/// How long an idle worker waits on the embedded queue before checking whether the run is over.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Long poll on SQS.
const REMOTE_POLL: Duration = Duration::from_secs(1);
/// How often a busy worker on SQS checks whether the job is settled.
const SETTLED_CHECK: Duration = Duration::from_secs(5);

/// Observer of a run (progress bar, logs, tests).
pub trait Progress: Send + Sync {
    /// The plan is ready; `to_run` chunks were queued (the rest were committed before).
    fn planned(&self, _job: &PlannedJob, _to_run: u64) {}
    /// A chunk was committed by this run.
    fn committed(&self, _record: &ChunkRecord) {}
    /// A chunk attempt failed; `last_attempt` when no retry will follow.
    fn failed(&self, _chunk_id: &str, _attempt: u32, _error: &Error, _last_attempt: bool) {}
    /// Every chunk is committed and the compaction stage runs: `sent` bin tasks queued.
    fn compacting(&self, _summary: &crate::job::compaction::CompactionSummary, _sent: u64) {}
}

/// A progress observer that does nothing.
#[derive(Debug, Default)]
pub struct Silent;
impl Progress for Silent {}

/// Options of a run.
#[derive(Clone)]
pub struct RunOptions {
    /// Concurrent workers in this process.
    pub workers: usize,
    /// Delay before a failed chunk is retried on the embedded queue (SQS waits out the
    /// visibility timeout instead).
    pub retry_backoff: fn(u32) -> Duration,
    /// Run over this queue (SQS) instead of an embedded one; other workers (Lambda, a
    /// fleet) may take chunks too. Its redrive must match `queue.max_receive_count`.
    pub queue: Option<Arc<dyn Queue>>,
    /// Simulated crashes in the workers (tests only).
    pub faults: Option<Arc<dyn crate::worker::Faults>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("workers", &self.workers)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            retry_backoff,
            queue: None,
            faults: None,
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    /// The plan.
    pub plan: PlannedJob,
    /// Chunks run (not committed before).
    pub chunks_run: u64,
    /// Their ids.
    pub run_ids: HashSet<ChunkId>,
    /// Chunks this process committed.
    pub committed_now: u64,
    /// Chunks that failed for good (dead-lettered or permanent errors).
    pub dead_lettered: u64,
    /// Status at the end.
    pub status: JobStatus,
    /// The manifest, or why the job failed.
    pub result: Result<Manifest>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs a job: on the embedded queue by default, or over `opts.queue`.
pub async fn run_local(
    env: &Env,
    spec: &JobSpec,
    opts: &RunOptions,
    progress: Arc<dyn Progress>,
) -> Result<RunReport> {
    let started = Instant::now();
    let plan = plan_job(env, spec).await?;
    let job_id = plan.summary.job_id.clone();
    let span = info_span!("job", job_id = %job_id);
    async move {
        let work = env.store(&spec.work)?;
        let (queue, dlq) = queues(spec, opts);
        let done_before = crate::job::committed_ids(work.as_ref(), &job_id).await?;
        let run_ids: HashSet<ChunkId> = plan
            .chunks
            .iter()
            .filter(|c| !done_before.contains(&c.id))
            .map(|c| c.id.clone())
            .collect();
        let sent = enqueue(
            queue.as_ref(),
            &spec.work,
            work.as_ref(),
            &job_id,
            &plan.chunks,
        )
        .await?;
        progress.planned(&plan, sent);

        let committed_now = run_lanes(env, spec, opts, &queue, &progress, &job_id).await?;
        let mut status = job_status(env, &spec.work, &job_id).await?;
        if status.compaction.is_some() && status.chunks_complete() && !status.is_complete() {
            // Resent on a run of a stage started before: its tasks were on a queue that
            // died with its process, or are on SQS, where a duplicate is harmless.
            let started =
                crate::compact::start(env, &spec.work, &job_id, queue.as_ref(), true).await?;
            progress.compacting(&started.summary, started.sent);
            if started.sent > 0 {
                run_lanes(env, spec, opts, &queue, &progress, &job_id).await?;
            }
            status = job_status(env, &spec.work, &job_id).await?;
        }
        let dead_lettered = match &dlq {
            Some(d) => d.drain_visible().len() as u64,
            None => status.dead_lettered.len() as u64,
        };
        env.metrics.flush().await?;
        let result = finalize_job(env, &spec.work, &job_id).await;
        if result.is_err() {
            // A stale _SUCCESS from an earlier run must not outlive a failed finalize.
            let _ = work.delete(&layout::success(&job_id)).await;
        }
        Ok(RunReport {
            chunks_run: sent,
            run_ids,
            committed_now,
            dead_lettered,
            status,
            result,
            elapsed: started.elapsed(),
            plan,
        })
    }
    .instrument(span)
    .await
}

/// The run's chunk queue: `opts.queue` when given, else an embedded one with the job's
/// redrive settings and, beside it, its dead-letter queue.
fn queues(spec: &JobSpec, opts: &RunOptions) -> (Arc<dyn Queue>, Option<Arc<LocalQueue>>) {
    if let Some(q) = &opts.queue {
        return (q.clone(), None);
    }
    let visibility = Duration::from_secs(spec.queue.visibility_timeout_s);
    let dlq = Arc::new(LocalQueue::new("chunks-dlq", visibility));
    let queue = LocalQueue::new("chunks", visibility)
        .with_dead_letter(dlq.clone(), spec.queue.max_receive_count)
        .with_max_message_bytes(spec.queue.max_message_bytes);
    (Arc::new(queue), Some(dlq))
}

/// Runs `opts.workers` lanes over `queue` until the run is over; returns how many chunks
/// they committed. The first lane to fail fails the run (the others are aborted).
async fn run_lanes(
    env: &Env,
    spec: &JobSpec,
    opts: &RunOptions,
    queue: &Arc<dyn Queue>,
    progress: &Arc<dyn Progress>,
    job_id: &JobId,
) -> Result<u64> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut first = Worker::new(env.clone(), format!("local-{}", std::process::id()));
    if let Some(f) = &opts.faults {
        first = first.with_faults(f.clone());
    }
    for n in 1..=opts.workers.max(1) {
        let lane = Lane {
            // One name per worker, so the report's timeline shows each as a lane; one
            // cache of specs and lookups for all.
            worker: first.named(format!("local-{}-{n}", std::process::id())),
            queue: queue.clone(),
            progress: progress.clone(),
            env: env.clone(),
            work: spec.work.clone(),
            job_id: job_id.clone(),
            max_receive: spec.queue.max_receive_count,
            backoff: opts.retry_backoff,
            remote: opts.queue.is_some(),
        };
        tasks.spawn(lane.run());
    }
    let mut committed_now = 0;
    while let Some(r) = tasks.join_next().await {
        committed_now += r.map_err(|source| Error::Task {
            what: "a worker task",
            source,
        })??;
    }
    Ok(committed_now)
}

/// One worker of a run, taking chunk messages until the run is over.
struct Lane {
    worker: Worker,
    queue: Arc<dyn Queue>,
    progress: Arc<dyn Progress>,
    env: Env,
    work: Location,
    job_id: JobId,
    max_receive: u32,
    backoff: fn(u32) -> Duration,
    /// Over SQS (`RunOptions::queue`) rather than the embedded queue.
    remote: bool,
}

impl Lane {
    /// Takes messages until the run is over; returns how many chunks this lane committed.
    async fn run(self) -> Result<u64> {
        let mut committed = 0u64;
        let mut last_check = Instant::now();
        let mut idle_drained = 0u32;
        loop {
            let wait = if self.remote { REMOTE_POLL } else { IDLE_POLL };
            let msgs = self.queue.receive(1, wait).await?;
            if msgs.is_empty() || (self.remote && last_check.elapsed() > SETTLED_CHECK) {
                // The embedded queue knows when it is empty; with SQS (approximate
                // counts, other consumers) the job's own records decide.
                let finished = if self.remote {
                    last_check = Instant::now();
                    self.settled_remotely(msgs.is_empty(), &mut idle_drained)
                        .await?
                } else {
                    self.queue.depth().await?.is_drained()
                };
                if finished && msgs.is_empty() {
                    return Ok(committed);
                }
            }
            for msg in msgs {
                if self.handle(&msg).await? {
                    committed += 1;
                }
            }
        }
    }

    /// Whether a run over SQS is over: settled by the job's records, or the queue stayed
    /// empty over several polls (a message dead-lettered while its last failure record was
    /// still a retryable one would otherwise keep the lane here).
    async fn settled_remotely(&self, idle: bool, idle_drained: &mut u32) -> Result<bool> {
        let drained = idle && self.queue.depth().await?.is_drained();
        *idle_drained = if drained { *idle_drained + 1 } else { 0 };
        let status = job_status(&self.env, &self.work, &self.job_id).await?;
        // A job whose compaction is due waits for the run to start it, not for the lanes.
        Ok(*idle_drained >= 3 || status.is_settled() || status.compaction_due())
    }

    /// Runs one message's chunk and acknowledges, delays or drops the message as the
    /// worker decided; true when this attempt committed the chunk.
    async fn handle(&self, msg: &Message) -> Result<bool> {
        match self.worker.handle_message(msg, self.max_receive).await {
            Disposition::Ack(record) => {
                if let Some(r) = &record {
                    self.progress.committed(r);
                }
                self.queue.delete(&msg.receipt).await?;
                Ok(record.is_some())
            }
            Disposition::Retry(e) => {
                self.progress.failed(
                    &chunk_id_of(&msg.body),
                    msg.receive_count,
                    &e,
                    msg.receive_count >= self.max_receive,
                );
                if !self.remote {
                    let delay = (self.backoff)(msg.receive_count);
                    self.queue.change_visibility(&msg.receipt, delay).await?;
                }
                Ok(false)
            }
            Disposition::Reject(e) => {
                self.progress
                    .failed(&chunk_id_of(&msg.body), msg.receive_count, &e, true);
                self.queue.delete(&msg.receipt).await?;
                Ok(false)
            }
        }
    }
}

fn chunk_id_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["chunk"]["id"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
