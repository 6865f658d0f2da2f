//! A long-polling worker for a fleet (ECS, EC2, Kubernetes): the same `handle_message` as
//! the Lambda worker, with a visibility heartbeat for long chunks and a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::Result;
use crate::queue::{MAX_BATCH, Message, Queue};
use crate::worker::{Disposition, Worker};

/// Fleet worker settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The queue's `maxReceiveCount`.
    pub max_receive_count: u32,
    /// Messages processed at once.
    pub concurrency: usize,
    /// Visibility timeout the heartbeat keeps renewing while a chunk runs.
    pub visibility: Duration,
    /// After a stop signal: how long in-flight chunks may still finish before their
    /// messages are released for another worker.
    pub grace: Duration,
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
}

/// Serves `queue` until `shutdown` resolves: stop receiving, let in-flight chunks finish
/// within the grace period, release the rest (visibility 0) so another worker takes them.
pub async fn serve(
    worker: Arc<Worker>,
    queue: Arc<dyn Queue>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ServeReport> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        let (worker, queue, opts, mut stop) =
            (worker.clone(), queue.clone(), opts.clone(), stop_rx.clone());
        tasks.spawn(async move {
            let mut report = ServeReport::default();
            loop {
                if *stop.borrow() {
                    return Ok::<_, crate::Error>(report);
                }
                let msgs = tokio::select! {
                    r = queue.receive(1, Duration::from_secs(20)) => r?,
                    _ = stop.changed() => continue,
                };
                for msg in msgs {
                    match process(&worker, queue.as_ref(), &msg, &opts, &mut stop).await? {
                        Some(true) => report.acknowledged += 1,
                        Some(false) => report.retried += 1,
                        None => report.released += 1,
                    }
                }
            }
        });
    }
    shutdown.await;
    info!("stop requested: no new messages; finishing in-flight chunks");
    let _ = stop_tx.send(true);
    let mut total = ServeReport::default();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(r)) => {
                total.acknowledged += r.acknowledged;
                total.retried += r.retried;
                total.released += r.released;
            }
            Ok(Err(e)) => warn!(error = %e, "a fleet task failed"),
            Err(e) => warn!(error = %e, "a fleet task died"),
        }
    }
    Ok(total)
}

/// Processes one message with a visibility heartbeat: `Some(true)` acknowledged,
/// `Some(false)` left for retry, `None` released at shutdown.
async fn process(
    worker: &Worker,
    queue: &dyn Queue,
    msg: &Message,
    opts: &ServeOptions,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<bool>> {
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
