//! `fanout gc`: delete a job's files that its manifest does not list.

use std::process::ExitCode;

use crate::work::WorkArgs;

/// Delete a job's files that its manifest does not list (leftovers of crashed or
/// abandoned attempts); other jobs' files are never touched.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    job: WorkArgs,
    /// The job was never finalized: every file its chunks wrote is garbage, and its
    /// chunk records (commit, failure, attempt) go with them, so running the same spec
    /// again runs every chunk again.
    #[arg(long)]
    abandoned: bool,
    /// Only list what would be deleted.
    #[arg(long)]
    dry_run: bool,
}

/// Deletes (or lists) the garbage and prints each file.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (work, env) = args.job.open().await?;
    let job_id = &args.job.job_id;
    let g = fanout::gc::collect_garbage(&env, &work, job_id, args.abandoned, args.dry_run).await?;
    let verb = if g.deleted { "deleted" } else { "would delete" };
    for k in &g.outputs {
        println!("{verb} output  {k}");
    }
    for k in &g.rejects {
        println!("{verb} rejects {k}");
    }
    for k in &g.staged {
        println!("{verb} staged  {k}");
    }
    for k in &g.records {
        println!("{verb} record  {k}");
    }
    println!(
        "{verb} {} output, {} staged and {} rejects files and {} chunk records of job {job_id}",
        g.outputs.len(),
        g.staged.len(),
        g.rejects.len(),
        g.records.len()
    );
    Ok(ExitCode::SUCCESS)
}
