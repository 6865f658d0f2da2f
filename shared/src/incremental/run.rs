//! `fanout run --since-last`: one incremental run of a name at a time, under its lease.

use std::sync::Arc;

use crate::env::Env;
use crate::ids::JobId;
use crate::job::{PlanSummary, get_json_opt, layout};
use crate::ledger::{Lease, LeaseOptions, LeaseRecord};
use crate::planner::plan_job;
use crate::runner::{Progress, RunOptions, RunReport, run_local};
use crate::spec::JobSpec;
use crate::{Error, Result};

/// What an incremental run did.
#[derive(Debug)]
pub enum SinceLast {
    /// Every selected object is in the ledger: no job was planned.
    NothingNew {
        /// Object versions below the input the ledger holds.
        ingested: usize,
    },
    /// A job of the new objects ran.
    Ran {
        /// The run.
        report: Box<RunReport>,
        /// Object versions below the input the ledger held before (left out).
        ingested: usize,
        /// Jobs finished first: recorded in the ledger without a manifest (a finalize
        /// stopped half-way), or the job of a run that died holding the lease.
        recovered: Vec<JobId>,
    },
}

/// Runs a job of the input objects the ledger of the spec's name does not hold, holding
/// the name's lease ([`Error::LeaseHeld`] when another run has it). Jobs the ledger records
/// without a manifest, and the job of a run that died holding the lease, are finished
/// first, so their objects are ingested once, by them. The lease is released at the end, also when the run fails; a run dropped
/// mid-way (a crash) leaves it to expire.
pub async fn run_since_last(
    env: &Env,
    spec: &JobSpec,
    opts: &RunOptions,
    lease: &LeaseOptions,
    progress: Arc<dyn Progress>,
) -> Result<SinceLast> {
    let work = env.store_with(&spec.work, &spec.sse)?;
    let lease = Lease::acquire(work, &spec.name, lease).await?;
    let outcome = run_holding(env, spec, opts, &lease, progress).await;
    let released = lease.release().await;
    if let Err(e) = &released {
        // The ledger refused any double ingestion the overlap could cause; say so.
        tracing::warn!(error = %e, "lease not released");
    }
    outcome
}

async fn run_holding(
    env: &Env,
    spec: &JobSpec,
    opts: &RunOptions,
    lease: &Lease,
    progress: Arc<dyn Progress>,
) -> Result<SinceLast> {
    let mut recovered = finish_recorded(env, spec, lease, opts, progress.clone()).await?;
    if let Some(dead) = lease.took_over()
        && let Some(job_id) = finish_dead_run(env, spec, dead, opts, progress.clone()).await?
    {
        recovered.push(job_id);
    }
    let (mut job, skipped) = super::without_ingested(env, spec.clone()).await?;
    let planned = match plan_job(env, &job).await {
        Err(Error::NoInput { .. }) if skipped.ingested > 0 => {
            return Ok(SinceLast::NothingNew {
                ingested: skipped.ingested,
            });
        }
        r => r?,
    };
    lease.set_job(&planned.summary.job_id).await?;
    job.job_id = Some(planned.summary.job_id.clone());
    let report = run_local(env, &job, opts, progress).await?;
    if let Err(e) = lease.check() {
        tracing::warn!(error = %e, job_id = %planned.summary.job_id, "the run lost its lease");
    }
    Ok(SinceLast::Ran {
        report: Box::new(report),
        ingested: skipped.ingested,
        recovered,
    })
}

/// Ledger entries read for jobs to finish: the tail a read gets past its checkpoint.
const FINISH_TAIL: usize = crate::ledger::CHECKPOINT_EVERY as usize;

/// Finishes every job among the last ledger entries that has its plan but no `_SUCCESS`:
/// its finalize stopped between the ledger entry and the manifest (a fault, a crash, a run
/// whose lease was taken over), so its objects count as ingested while no manifest lists
/// its rows. The same job id: its chunks are committed, so this only finalizes again (the
/// entry is found, the manifest written). Costs one HEAD per entry of the tail. A job that
/// still cannot finish stops this run ([`Error::Job`]), the lease naming it.
async fn finish_recorded(
    env: &Env,
    spec: &JobSpec,
    lease: &Lease,
    opts: &RunOptions,
    progress: Arc<dyn Progress>,
) -> Result<Vec<JobId>> {
    let view = super::ledger_of(env, spec)?.read().await?;
    let work = env.store(&spec.work)?;
    let mut finished = Vec::new();
    for entry in view.entries().iter().rev().take(FINISH_TAIL) {
        let job_id = &entry.job_id;
        if entry.imported {
            continue;
        }
        if work.head(&layout::success(job_id)).await?.is_some()
            || get_json_opt::<PlanSummary>(work.as_ref(), &layout::plan_summary(job_id))
                .await?
                .is_none()
        {
            continue;
        }
        tracing::warn!(job_id = %job_id, seq = entry.seq, "finishing a job the ledger records without a manifest");
        lease.set_job(job_id).await?;
        let mut job = spec.clone();
        job.job_id = Some(job_id.clone());
        if let Err(e) = run_local(env, &job, opts, progress.clone()).await?.result {
            return Err(Error::Job {
                job_id: job_id.clone(),
                message: format!(
                    "is recorded in the ingestion ledger (entry {}) but its finalize failed again: {e}; \
                     fix the cause, then run again (it is finished first)",
                    entry.seq
                ),
            });
        }
        finished.push(job_id.clone());
    }
    Ok(finished)
}

/// Finishes the job a dead run was running (named in the lease taken over after it
/// expired) when it was planned, has no `_SUCCESS` and is not in the ledger: the same job
/// id, so its committed chunks count and the rest run. A job that cannot finish is left:
/// its objects are planned again by this run.
async fn finish_dead_run(
    env: &Env,
    spec: &JobSpec,
    dead: &LeaseRecord,
    opts: &RunOptions,
    progress: Arc<dyn Progress>,
) -> Result<Option<JobId>> {
    let Some(job_id) = &dead.job_id else {
        return Ok(None);
    };
    let work = env.store(&spec.work)?;
    let planned: Option<PlanSummary> =
        get_json_opt(work.as_ref(), &layout::plan_summary(job_id)).await?;
    if planned.is_none() || work.head(&layout::success(job_id)).await?.is_some() {
        return Ok(None);
    }
    tracing::warn!(job_id = %job_id, holder = %dead.holder, "finishing the job of a run that died");
    let mut job = spec.clone();
    job.job_id = Some(job_id.clone());
    let report = run_local(env, &job, opts, progress).await?;
    if let Err(e) = &report.result {
        tracing::warn!(job_id = %job_id, error = %e, "the dead run's job did not finish; its objects are planned again");
        return Ok(None);
    }
    Ok(Some(job_id.clone()))
}
