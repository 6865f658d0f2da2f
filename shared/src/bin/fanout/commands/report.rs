//! `fanout report`: a job's report as one HTML page, or its data as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::work::WorkArgs;

/// Write a job's report: one self-contained HTML page (timeline, throughput, counts,
/// reject reasons, partitions and files, cost).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    job: WorkArgs,
    /// Output file (default: `<job id>.html`).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Print the report's data as JSON instead.
    #[arg(long)]
    json: bool,
}

/// Collects the job's records and writes the page (or prints the data).
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (work, env) = args.job.open().await?;
    let env = crate::work::with_cost_settings(env)?;
    let job_id = &args.job.job_id;
    let data = fanout::report::collect(&env, &work, job_id).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(ExitCode::SUCCESS);
    }
    let path = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("{job_id}.html")));
    std::fs::write(&path, fanout::report::render(&data))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("report: {}", path.display());
    Ok(ExitCode::SUCCESS)
}
