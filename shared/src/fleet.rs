//! A long-polling worker for a fleet (ECS, EC2, Kubernetes): the same `handle_message` as
//! the Lambda worker, with a visibility heartbeat for long chunks and a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::Result;
use crate::queue::{MAX_BATCH, Message, Queue, QueueError};
use crate::worker::{Disposition, Worker};

/// Fleet worker settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The queue's `maxReceiveCount`.
    pub max_receive_count: u32,
    /// Messages processed at once.
    pub concurrency: usize,
    /// Visibility timeout the heartbeat keeps renewing while a chunk runs. Build the
    /// worker with [`Worker::with_renewed_visibility`] of the same duration, so that its
    /// attempt records say when it was last alive and a killed one is reported lost.
    pub visibility: Duration,
    /// After a stop signal: how long in-flight chunks may still finish before their
    /// messages are released for another worker.
    pub grace: Duration,
    /// Waiting after queue calls that failed (after the SDK's own retries).
    pub backoff: QueueBackoff,
}

/// How a fleet task waits after a failed queue call (receive, delete, visibility change):
/// `first`, doubled after each further consecutive failure, at most `cap`. After
/// `give_up_after` consecutive failures the task ends; when every task has ended so,
/// [`serve`] fails (the process exits non-zero, for its supervisor to restart or alert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBackoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub cap: Duration,
    /// Consecutive failures after which a task gives up.
    pub give_up_after: u32,
}

impl Default for QueueBackoff {
    /// 1 s doubling to 60 s; giving up after 10 failures in a row (about 6 minutes of a
    /// queue that answers nothing but errors).
    fn default() -> Self {
        QueueBackoff {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            give_up_after: 10,
        }
    }
}

impl QueueBackoff {
    /// The wait after `failures` consecutive failures (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.cap)
    }
}

/// What a fleet worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServeReport {
    /// Messages acknowledged (committed, duplicate, or failed for good).
    pub acknowledged: u64,
    /// Messages left for a retry.
    pub retried: u64,
    /// Messages released at shutdown before they finished.
    pub released: u64,
    /// Queue calls that failed and were backed off from.
    pub queue_errors: u64,
    /// Tasks that ended on errors (gave up on the queue, or panicked).
    pub tasks_failed: u64,
}

impl std::ops::AddAssign for ServeReport {
    fn add_assign(&mut self, o: Self) {
        self.acknowledged += o.acknowledged;
        self.retried += o.retried;
        self.released += o.released;
        self.queue_errors += o.queue_errors;
        self.tasks_failed += o.tasks_failed;
    }
}

/// Serves `queue` until `shutdown` resolves: stop receiving, let in-flight chunks finish
/// within the grace period, release the rest (visibility 0) so another worker takes them.
/// Fails, without waiting for `shutdown`, once every task has ended on errors.
pub async fn serve(
    worker: Arc<Worker>,
    queue: Arc<dyn Queue>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ServeReport> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let n = opts.concurrency.max(1);
    for _ in 0..n {
        let (worker, queue, opts, stop) =
            (worker.clone(), queue.clone(), opts.clone(), stop_rx.clone());
        tasks.spawn(async move { serve_task(&worker, queue.as_ref(), &opts, stop).await });
    }
    tokio::pin!(shutdown);
    let mut stopping = false;
    let mut total = ServeReport::default();
    let mut last_error = String::new();
    loop {
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                info!("stop requested: no new messages; finishing in-flight chunks");
                let _ = stop_tx.send(true);
                stopping = true;
            }
            r = tasks.join_next() => match r {
                None => break,
                Some(Ok((r, None))) => total += r,
                Some(Ok((r, Some(e)))) => {
                    error!(error = %e, "a fleet task gave up on the queue");
                    total += r;
                    total.tasks_failed += 1;
                    last_error = e.to_string();
                }
                Some(Err(e)) => {
                    error!(error = %e, "a fleet task died");
                    total.tasks_failed += 1;
                    last_error = e.to_string();
                }
            },
        }
    }
    if total.tasks_failed >= n as u64 {
        return Err(QueueError {
            op: "serve",
            message: format!("every fleet task ({n}) ended on errors; the last: {last_error}"),
            retryable: false,
            source: None,
        }
        .into());
    }
    Ok(total)
}

/// One task's receive loop: its report, and the error it gave up on, if it did.
async fn serve_task(
    worker: &Worker,
    queue: &dyn Queue,
    opts: &ServeOptions,
    mut stop: watch::Receiver<bool>,
) -> (ServeReport, Option<QueueError>) {
    let mut report = ServeReport::default();
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return (report, None);
        }
        let received = tokio::select! {
            r = queue.receive(1, Duration::from_secs(20)) => r,
            _ = stop.changed() => continue,
        };
        let msgs = match received {
            Ok(m) => {
                failures = 0;
                m
            }
            Err(e) => {
                report.queue_errors += 1;
                failures += 1;
                if let Err(e) = back_off(&opts.backoff, failures, e, &mut stop).await {
                    return (report, Some(e));
                }
                continue;
            }
        };
        for msg in msgs {
            match process(worker, queue, &msg, opts, &mut stop).await {
                Ok(Some(true)) => report.acknowledged += 1,
                Ok(Some(false)) => report.retried += 1,
                Ok(None) => report.released += 1,
                Err(e) => {
                    report.queue_errors += 1;
                    failures += 1;
                    if let Err(e) = back_off(&opts.backoff, failures, e, &mut stop).await {
                        return (report, Some(e));
                    }
                }
            }
        }
    }
}

/// Waits out the backoff after `failures` consecutive failed queue calls (a stop cuts
/// it short), or hands back the error once the task should give up.
async fn back_off(
    backoff: &QueueBackoff,
    failures: u32,
    e: QueueError,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), QueueError> {
    if failures >= backoff.give_up_after {
        return Err(e);
    }
    let wait = backoff.delay(failures);
    warn!(error = %e, failures, wait_ms = wait.as_millis() as u64, "queue call failed; backing off");
    if !*stop.borrow() {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    Ok(())
}

/// Processes one message with a visibility heartbeat: `Some(true)` acknowledged,
/// `Some(false)` left for retry, `None` released at shutdown. A failed delete or release
/// is harmless to the job: the message comes back after its visibility timeout, and a
/// committed chunk is then acknowledged as a duplicate.
async fn process(
    worker: &Worker,
    queue: &dyn Queue,
    msg: &Message,
    opts: &ServeOptions,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<bool>, QueueError> {
    let work = worker.handle_message(msg, opts.max_receive_count);
    tokio::pin!(work);
    let mut beat = tokio::time::interval(opts.visibility / 3);
    beat.tick().await;
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    let disposition = loop {
        let grace = async {
            match grace_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            d = &mut work => break d,
            _ = beat.tick() => {
                // Keep the message ours while the chunk runs longer than the timeout.
                if let Err(e) = queue.change_visibility(&msg.receipt, opts.visibility).await {
                    warn!(error = %e, "visibility heartbeat failed");
                }
            }
            _ = stop.changed(), if grace_deadline.is_none() => {
                grace_deadline = Some(tokio::time::Instant::now() + opts.grace);
            }
            _ = grace => {
                // The grace period is over: hand the chunk to another worker now. Its
                // partial outputs are rewritten byte for byte by the next attempt.
                queue.change_visibility(&msg.receipt, Duration::ZERO).await?;
                return Ok(None);
            }
        }
    };
    Ok(match disposition {
        Disposition::Ack(_) | Disposition::Reject(_) => {
            queue.delete(&msg.receipt).await?;
            Some(true)
        }
        Disposition::Retry(_) => Some(false),
    })
}

/// Moves every message of `dead_letter` back to `source`: receive, send, then delete.
///
/// Interrupted between send and delete, a message exists in both queues: it is delivered
/// twice, which the commit protocol makes harmless; it is never lost. With `env`, the
/// failure and attempt records of the redriven chunks are cleared, so the job's status
/// shows them pending again instead of dead-lettered or lost.
pub async fn redrive(
    dead_letter: &dyn Queue,
    source: &dyn Queue,
    env: Option<&crate::env::Env>,
) -> Result<u64> {
    let mut moved = 0;
    loop {
        let msgs = dead_letter
            .receive(MAX_BATCH, Duration::from_secs(1))
            .await?;
        if msgs.is_empty() {
            return Ok(moved);
        }
        let bodies: Vec<String> = msgs.iter().map(|m| m.body.clone()).collect();
        source.send(&bodies).await?;
        if let Some(env) = env {
            for task in bodies
                .iter()
                .filter_map(|b| crate::job::ChunkTask::from_body(b).ok())
            {
                let work =
                    crate::location::Location::parse(&task.work).map_err(crate::Error::Config)?;
                let store = env.store(&work)?;
                store
                    .delete(&crate::job::layout::failure(&task.job_id, &task.chunk.id))
                    .await?;
                // A redriven chunk's receive count starts again: its last, lost attempt
                // no longer counts either.
                store
                    .delete(&crate::job::layout::attempt(&task.job_id, &task.chunk.id))
                    .await?;
            }
        }
        for m in &msgs {
            dead_letter.delete(&m.receipt).await?;
        }
        moved += msgs.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_its_first_wait_up_to_its_cap() {
        let b = QueueBackoff {
            first: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            give_up_after: 10,
        };
        let waits: Vec<u128> = [1, 2, 3, 4, 5, 1000]
            .map(|n| b.delay(n).as_millis())
            .to_vec();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }
}
