//! The whole pipeline in one process: plan → queue → N workers → finalize.
//!
//! The queue is a [`LocalQueue`] with the job's redrive settings, so a failing chunk is
//! retried and dead-lettered here exactly as it would be on SQS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, info_span};

use crate::env::Env;
use crate::planner::{PlannedJob, enqueue, plan_job};
use crate::queue::{LocalQueue, Queue};
use crate::records::{ChunkRecord, layout};
use crate::reducer::{JobStatus, Manifest, finalize_job, job_status};
use crate::spec::JobSpec;
use crate::worker::{Disposition, Worker, retry_backoff};
use crate::{Error, Result};

/// How long an idle worker waits on the queue before checking whether the run is over.
const IDLE_POLL: Duration = Duration::from_millis(100);

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

/// Options of a local run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Concurrent workers.
    pub workers: usize,
    /// Delay before a failed chunk is retried (SQS waits out the visibility timeout instead).
    pub retry_backoff: fn(u32) -> Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            retry_backoff,
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
    /// Chunks this run committed.
    pub committed_now: u64,
    /// Messages that ended in the dead-letter queue.
    pub dead_lettered: u64,
    /// Status at the end.
    pub status: JobStatus,
    /// The manifest, or why the job failed.
    pub result: Result<Manifest>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs a job on the embedded queue with `opts.workers` workers.
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
        let dlq = Arc::new(LocalQueue::new(
            "chunks-dlq",
            Duration::from_secs(spec.queue.visibility_timeout_s),
        ));
        let queue = Arc::new(
            LocalQueue::new(
                "chunks",
                Duration::from_secs(spec.queue.visibility_timeout_s),
            )
            .with_dead_letter(dlq.clone(), max_receive),
        );
        let sent = enqueue(
            queue.as_ref(),
            &spec.work,
            work.as_ref(),
            &job_id,
            &plan.chunks,
        )
        .await?;
        progress.planned(&plan, sent);

        let worker = Arc::new(Worker::new(
            env.clone(),
            format!("local-{}", std::process::id()),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..opts.workers.max(1) {
            let (queue, worker, progress) = (queue.clone(), worker.clone(), progress.clone());
            let backoff = opts.retry_backoff;
            tasks.spawn(async move {
                let mut committed = 0u64;
                loop {
                    let msgs = queue.receive(1, IDLE_POLL).await?;
                    if msgs.is_empty() {
                        if queue.depth().await?.is_drained() {
                            return Ok::<u64, Error>(committed);
                        }
                        continue;
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
                                queue
                                    .change_visibility(&msg.receipt, backoff(msg.receive_count))
                                    .await?;
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
        let dead_lettered = dlq.drain_visible().len() as u64;
        let status = job_status(env, &spec.work, &job_id).await?;
        let result = finalize_job(env, &spec.work, &job_id).await;
        if result.is_err() {
            // A stale _SUCCESS from an earlier run must not outlive a failed finalize.
            let _ = work.delete(&layout::success(&job_id)).await;
        }
        Ok(RunReport {
            chunks_run: sent,
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
