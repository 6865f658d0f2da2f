//! The compaction stage (`output.target_file_size`): after every chunk has committed,
//! [`start`] plans the bins ([`crate::job::compaction::plan_bins`]), writes each bin's
//! plan, sends one bin task per bin on the chunk queue (the same workers, retries and
//! dead-letter queue as chunks), and writes the stage's summary last. A worker merges a
//! bin with [`merge_files`] (`worker::bin`); finalize lists the merged files and the
//! files kept as they were.
//!
//! [`start`] is idempotent: the bins derive from the commit records alone, a bin's plan
//! is the same bytes every time, and a bin task sent twice is a duplicate delivery the
//! worker acknowledges. Once the summary exists the stage is started and `start` only
//! reports it.

mod merge;

pub use merge::{COPY_MIN_ROWS, Merged, merge_files};

use std::collections::BTreeSet;

use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::info;

use crate::env::Env;
use crate::ids::{ChunkId, JobId};
use crate::job::compaction::{BinTask, CompactionSummary, plan_bins};
use crate::job::{
    READ_CONCURRENCY, chunk_records, get_json_opt, ids_under, layout, load_job, to_json_bytes,
};
use crate::location::Location;
use crate::queue::Queue;
use crate::store::ObjectStore;
use crate::{Error, Result};

/// What [`start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The stage's summary.
    pub summary: CompactionSummary,
    /// Bin tasks sent by this call (0 when the stage was started before).
    pub sent: u64,
}

/// Starts the compaction stage of a job whose chunks have all committed: plans the bins,
/// writes their plans, sends their tasks on `queue`, then writes the summary. Of a stage
/// started before, sends again the tasks of the bins not committed when `resend` (a run
/// on an embedded queue, whose messages died with the process that held them), else
/// nothing.
pub async fn start(
    env: &Env,
    work: &Location,
    job_id: &JobId,
    queue: &dyn Queue,
    resend: bool,
) -> Result<Started> {
    let store = env.store(work)?;
    if let Some(summary) =
        get_json_opt::<CompactionSummary>(store.as_ref(), &layout::compaction_summary(job_id))
            .await?
    {
        let sent = if resend {
            resend_pending(store.as_ref(), work, job_id, queue).await?
        } else {
            0
        };
        return Ok(Started { summary, sent });
    }
    let (plan_summary, spec, _) = load_job(store.as_ref(), work, job_id).await?;
    let Some(target) = spec.output.target_file_bytes else {
        return Err(Error::Job {
            job_id: job_id.clone(),
            message: "its spec has no compaction stage (output.target_file_size is off)".into(),
        });
    };
    let records = chunk_records(&store, job_id).await?;
    if (records.len() as u64) < plan_summary.chunks {
        return Err(Error::Job {
            job_id: job_id.clone(),
            message: format!(
                "{} of {} chunks are committed: compaction starts once every chunk has",
                records.len(),
                plan_summary.chunks
            ),
        });
    }
    let plan = plan_bins(job_id, &records, target, spec.output.max_file_bytes);
    // Owned items and a closure that borrows nothing: the future stays `Send` for any
    // caller (a borrowing stream makes it Send only for some lifetimes).
    let plans: Vec<(String, bytes::Bytes)> = plan
        .bins
        .iter()
        .map(|bin| {
            Ok((
                layout::bin_plan(job_id, &bin.bin_id),
                to_json_bytes("bin plan", bin)?,
            ))
        })
        .collect::<Result<_>>()?;
    let writer = store.clone();
    stream::iter(plans)
        .map(move |(key, body)| {
            let store = writer.clone();
            async move { store.put(&key, body).await }
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    let bodies = task_bodies(work, job_id, plan.bins.iter().map(|b| &b.bin_id))?;
    queue.send(&bodies).await?;
    let summary = CompactionSummary {
        job_id: job_id.clone(),
        target_bytes: target,
        bins: plan.bins.len() as u64,
        merged_files: plan.bins.iter().map(|b| b.inputs.len() as u64).sum(),
        kept_files: plan.kept.len() as u64,
        planned_ms: crate::clock::now_ms(),
    };
    store
        .put(
            &layout::compaction_summary(job_id),
            to_json_bytes("compaction summary", &summary)?,
        )
        .await?;
    info!(job_id = %job_id, bins = summary.bins, merged_files = summary.merged_files, kept_files = summary.kept_files, "compaction started");
    Ok(Started {
        summary,
        sent: bodies.len() as u64,
    })
}

/// The messages of the bins `ids`.
fn task_bodies<'a>(
    work: &Location,
    job_id: &JobId,
    ids: impl Iterator<Item = &'a ChunkId>,
) -> Result<Vec<String>> {
    ids.map(|id| {
        serde_json::to_string(&BinTask {
            job_id: job_id.clone(),
            work: work.to_string(),
            bin: id.clone(),
        })
        .map_err(|source| Error::Serialize {
            what: "bin task",
            source,
        })
    })
    .collect()
}

/// Sends again the task of every planned bin without a commit record; how many.
async fn resend_pending(
    store: &dyn ObjectStore,
    work: &Location,
    job_id: &JobId,
    queue: &dyn Queue,
) -> Result<u64> {
    let planned: BTreeSet<ChunkId> = ids_under(store, &layout::bin_plans(job_id))
        .await?
        .into_iter()
        .collect();
    let committed = ids_under(store, &layout::bins(job_id)).await?;
    let bodies = task_bodies(
        work,
        job_id,
        planned.iter().filter(|id| !committed.contains(*id)),
    )?;
    queue.send(&bodies).await?;
    Ok(bodies.len() as u64)
}
