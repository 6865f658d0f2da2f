//! The whole pipeline in one process: plan → queue → N workers → finalize.
//!
//! The queue is a [`LocalQueue`] with the job's redrive settings, so a failing chunk is
//! retried and dead-lettered here exactly as it would be on SQS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, info_span};

use crate::env::Env;
use crate::job::{ChunkRecord, Manifest, layout};
use crate::planner::{PlannedJob, enqueue, plan_job};
use crate::queue::{LocalQueue, Queue};
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
    pub run_ids: std::collections::HashSet<String>,
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
        let max_receive = spec.queue.max_receive_count;
        let visibility = Duration::from_secs(spec.queue.visibility_timeout_s);
        let (queue, dlq): (Arc<dyn Queue>, Option<Arc<LocalQueue>>) = match &opts.queue {
            Some(q) => (q.clone(), None),
            None => {
                let dlq = Arc::new(LocalQueue::new("chunks-dlq", visibility));
                (
                    Arc::new(
                        LocalQueue::new("chunks", visibility)
                            .with_dead_letter(dlq.clone(), max_receive),
                    ),
                    Some(dlq),
                )
            }
        };
        let done_before = crate::job::committed_ids(work.as_ref(), &job_id).await?;
        let run_ids: std::collections::HashSet<String> = plan
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

        let remote = opts.queue.is_some();
        let mut tasks = tokio::task::JoinSet::new();
        let mut first = Worker::new(env.clone(), format!("local-{}", std::process::id()));
        if let Some(f) = &opts.faults {
            first = first.with_faults(f.clone());
        }
        for n in 1..=opts.workers.max(1) {
            // One name per worker, so the report's timeline shows each as a lane; one
            // cache of specs and lookups for all.
            let worker = first.named(format!("local-{}-{n}", std::process::id()));
            let (queue, progress) = (queue.clone(), progress.clone());
            let (env, work_loc, job_id) = (env.clone(), spec.work.clone(), job_id.clone());
            let backoff = opts.retry_backoff;
            tasks.spawn(async move {
                let mut committed = 0u64;
                let mut last_check = Instant::now();
                let mut idle_drained = 0u32;
                loop {
                    let wait = if remote { REMOTE_POLL } else { IDLE_POLL };
                    let msgs = queue.receive(1, wait).await?;
                    if msgs.is_empty() || (remote && last_check.elapsed() > SETTLED_CHECK) {
                        // The embedded queue knows when it is empty; with SQS (approximate
                        // counts, other consumers) the job's own records decide.
                        let finished = if remote {
                            last_check = Instant::now();
                            // Settled by the job's records, or the queue stayed empty over
                            // several polls (a message dead-lettered while its last failure
                            // record was still a retryable one would otherwise keep us here).
                            let drained = msgs.is_empty() && queue.depth().await?.is_drained();
                            idle_drained = if drained { idle_drained + 1 } else { 0 };
                            idle_drained >= 3
                                || job_status(&env, &work_loc, &job_id).await?.is_settled()
                        } else {
                            queue.depth().await?.is_drained()
                        };
                        if finished && msgs.is_empty() {
                            return Ok::<u64, Error>(committed);
                        }
                    }
                    for msg in msgs {
                        match worker.handle_message(&msg, max_receive).await {
                            Disposition::Ack(record) => {
                                if let Some(r) = record {
                                    committed += 1;
                                    progress.committed(&r);
                                }
                                queue.delete(&msg.receipt).await?;
                            }
                            Disposition::Retry(e) => {
                                progress.failed(
                                    &chunk_id_of(&msg.body),
                                    msg.receive_count,
                                    &e,
                                    msg.receive_count >= max_receive,
                                );
                                if !remote {
                                    queue
                                        .change_visibility(&msg.receipt, backoff(msg.receive_count))
                                        .await?;
                                }
                            }
                            Disposition::Reject(e) => {
                                progress.failed(
                                    &chunk_id_of(&msg.body),
                                    msg.receive_count,
                                    &e,
                                    true,
                                );
                                queue.delete(&msg.receipt).await?;
                            }
                        }
                    }
                }
            });
        }
        let mut committed_now = 0;
        while let Some(r) = tasks.join_next().await {
            committed_now += r.map_err(|e| Error::Job {
                job_id: job_id.clone(),
                message: format!("a worker task died: {e}"),
            })??;
        }
        let status = job_status(env, &spec.work, &job_id).await?;
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

fn chunk_id_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["chunk"]["id"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
