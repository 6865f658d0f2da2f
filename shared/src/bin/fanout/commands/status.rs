//! `fanout status`: where a job's chunks are.

use std::process::ExitCode;

use crate::EXIT_JOB_FAILED;
use crate::print::print_status;
use crate::work::WorkArgs;

/// Planned / committed / failed / dead-lettered chunks of a job.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    job: WorkArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the job's status; exit 1 when a chunk is dead-lettered or lost on its last
/// attempt (the job cannot finish without a redrive).
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (work, env) = args.job.open().await?;
    let status = fanout::reducer::job_status(&env, &work, &args.job.job_id).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_status(&status);
    }
    Ok(
        if status.dead_lettered.is_empty() && status.lost_dead_lettered().next().is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_JOB_FAILED)
        },
    )
}
