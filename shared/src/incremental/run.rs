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
        /// The previous run's job, finished first (that run died, or its finalize stopped
        /// after the ledger entry).
        recovered: Option<JobId>,
    },
}

/// Runs a job of the input objects the ledger of the spec's name does not hold, holding
/// the name's lease ([`Error::LeaseHeld`] when another run has it). The previous run's
/// job, when that run died or its finalize stopped half-way, is finished first, so its
/// objects are ingested once, by it. The lease is released at the end, also when the run fails; a run dropped
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
    let recovered = match lease.previous() {
        Some(previous) => {
            finish_previous(env, spec, previous, lease, opts, progress.clone()).await?
        }
        None => None,
    };
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

/// Finishes the job of the previous run of the name (named in the lease it held) when
/// that run died (its lease expired, not released) or its job is in the ledger without
/// `_SUCCESS` (its finalize stopped between the ledger entry and the manifest): the same
/// job id, so its committed chunks count and the rest run, and its finalize records it in
/// the ledger or finds it there. A job that cannot finish is left: its objects, unless
/// the ledger holds them, are planned again by this run.
async fn finish_previous(
    env: &Env,
    spec: &JobSpec,
    previous: &LeaseRecord,
    lease: &Lease,
    opts: &RunOptions,
    progress: Arc<dyn Progress>,
) -> Result<Option<JobId>> {
    let Some(job_id) = &previous.job_id else {
        return Ok(None);
    };
    let work = env.store(&spec.work)?;
    let planned: Option<PlanSummary> =
        get_json_opt(work.as_ref(), &layout::plan_summary(job_id)).await?;
    if planned.is_none() || work.head(&layout::success(job_id)).await?.is_some() {
        return Ok(None);
    }
    let ledger = super::ledger_of(env, spec)?;
    let recorded = match ledger.entry_of(job_id).await? {
        Some(_) => true,
        None => ledger.read().await?.job_seq(job_id).is_some(),
    };
    if previous.released && !recorded {
        // It ended, failed, and said so to whoever ran it.
        return Ok(None);
    }
    tracing::warn!(job_id = %job_id, holder = %previous.holder, recorded, "finishing the previous run's job");
    // Named in this run's lease too: if this run dies as well, the next one finishes it.
    lease.set_job(job_id).await?;
    let mut job = spec.clone();
    job.job_id = Some(job_id.clone());
    let report = run_local(env, &job, opts, progress).await?;
    if let Err(e) = &report.result {
        tracing::warn!(job_id = %job_id, error = %e, "the previous run's job did not finish");
    }
    Ok(Some(job_id.clone()))
}
