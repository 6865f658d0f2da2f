//! What several commands share: the job and work location they look at, and the
//! environment (embedded or AWS adapters) they run with.

use std::path::Path;
use std::sync::Arc;

use fanout::env::Env;
use fanout::ids::JobId;
use fanout::location::Location;
use fanout::metrics::MemoryMetrics;
use fanout::spec::JobSpec;

/// A finished or running job: its id and the work location holding its records.
#[derive(clap::Args)]
pub struct WorkArgs {
    /// Job id.
    pub job_id: JobId,
    /// Work location of the job.
    #[arg(long, env = "FANOUT_WORK", default_value = "out/_fanout/")]
    pub work: String,
}

impl WorkArgs {
    /// The parsed work location and an environment that can reach it.
    pub async fn open(&self) -> anyhow::Result<(Location, Env)> {
        let work = Location::parse(&self.work).map_err(anyhow::Error::msg)?;
        let (env, _) = env_for(matches!(work, Location::S3 { .. })).await?;
        Ok((work, env))
    }
}

/// The embedded default, or the AWS adapters when something lives on AWS.
pub async fn env_for(aws: bool) -> anyhow::Result<(Env, Arc<MemoryMetrics>)> {
    let metrics = Arc::new(MemoryMetrics::new());
    let env = if aws {
        Env::aws(metrics.clone()).await
    } else {
        Env::embedded(metrics.clone())
    };
    Ok((env, metrics))
}

/// For the commands that measure a job's cost (`run`, `report`): the worker memory it
/// assumes, `FANOUT_WORKER_MEMORY_MB` (as the reducer Lambda reads it; a bad value is an
/// error, not a silent default).
pub fn with_cost_settings(env: Env) -> anyhow::Result<Env> {
    Ok(env.with_worker_memory_mb(fanout::config::worker_memory_mb()?))
}

/// Whether any location the spec names is on S3 (and so needs the AWS adapters).
pub fn spec_uses_s3(spec: &JobSpec) -> bool {
    let s3 = |l: &Location| matches!(l, Location::S3 { .. });
    s3(&spec.work)
        || s3(&spec.input.location)
        || s3(&spec.output.location)
        || s3(&spec.rejects.location)
        || spec.transform.lookups.iter().any(|l| s3(&l.location))
}

/// Reads and validates a job spec file.
pub fn load_spec(path: &Path) -> anyhow::Result<JobSpec> {
    Ok(JobSpec::from_file(path)?)
}
