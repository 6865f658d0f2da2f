//! `fanout run`: plan, process and finalize a job in this process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use fanout::env::Env;
use fanout::metrics::MemoryMetrics;
use fanout::runner::{RunOptions, RunReport, run_local};
use fanout::spec::JobSpec;

use crate::EXIT_JOB_FAILED;
use crate::print::{print_aggregate, print_manifest_summary, print_status};
use crate::progress::Bar;
use crate::work::{env_for, load_spec, spec_uses_s3, with_cost_settings};

/// Plan, process every chunk and finalize a job on the embedded queue.
#[derive(clap::Args)]
pub struct Args {
    /// Job spec (YAML or JSON).
    spec: PathBuf,
    /// Concurrent workers (default: the machine's cores).
    #[arg(long, short = 'w')]
    workers: Option<usize>,
    /// Use this job id instead of the spec's (or the derived one).
    #[arg(long)]
    job_id: Option<fanout::ids::JobId>,
    /// Run over this SQS queue (URL) instead of the embedded one; Lambda or fleet
    /// workers on the same queue help.
    #[arg(long)]
    queue: Option<String>,
    /// Process only input objects no earlier successful job of this name committed
    /// (by key and version, from the manifests in `work`): an incremental run.
    #[arg(long)]
    since_last: bool,
}

/// Runs the job and prints its manifest; exit 1 when the job fails.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut job = load_spec(&args.spec)?;
    if args.job_id.is_some() {
        job.job_id = args.job_id;
    }
    let uses_aws = args.queue.is_some() || spec_uses_s3(&job);
    let (env, metrics) = env_for(uses_aws).await?;
    let env = with_cost_settings(env)?;
    if args.since_last {
        let Some(fresh) = skip_committed(&env, job).await? else {
            return Ok(ExitCode::SUCCESS);
        };
        job = fresh;
    }
    fanout::lookup::preflight(&env, &job, &args.spec.display().to_string()).await?;
    let mut opts = RunOptions::default();
    if let Some(url) = &args.queue {
        opts.queue = Some(Env::sqs_queue(
            &fanout::env::AwsClients::load().await,
            url,
            job.queue.max_message_bytes,
        )?);
    }
    if let Some(w) = args.workers {
        anyhow::ensure!(w >= 1, "--workers must be at least 1");
        opts.workers = w;
    }
    let progress = Arc::new(Bar::new());
    let report = run_local(&env, &job, &opts, progress.clone()).await?;
    progress.finish();
    println!(
        "job {}  ({} chunks, {} run now, {} workers)",
        report.plan.summary.job_id, report.plan.summary.chunks, report.chunks_run, opts.workers
    );
    match &report.result {
        Ok(m) => {
            print_manifest_summary(m);
            print_throughput(&report, &metrics);
            print_aggregate(&env, &job.work, m).await?;
            println!(
                "\nmanifest: {}",
                job.work.join(&fanout::job::layout::manifest(&m.job_id))
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print_status(&report.status);
            eprintln!("\nerror: {e}");
            if let Ok(m) =
                fanout::reducer::read_manifest(&env, &job.work, &report.plan.summary.job_id).await
                && !m.succeeded()
            {
                print_manifest_summary(&m);
            }
            Ok(ExitCode::from(EXIT_JOB_FAILED))
        }
    }
}

/// `--since-last`: the job without the input objects earlier jobs of its name committed,
/// or `None` (after saying so) when nothing is left to process.
async fn skip_committed(env: &Env, job: JobSpec) -> anyhow::Result<Option<JobSpec>> {
    let done = fanout::planner::committed_inputs(env, &job).await?;
    let before = done.len();
    let job = job.with_skipped(done);
    let input = env.store(&job.input.location)?;
    let fresh = fanout::planner::list_input(input.as_ref(), &job).await?;
    if fresh.is_empty() {
        println!(
            "nothing new since the last run: every selected input object was committed by an earlier `{}` job ({before} objects)",
            job.name
        );
        return Ok(None);
    }
    println!(
        "since the last run: {} new or changed object(s); {before} committed before are skipped",
        fresh.len()
    );
    Ok(Some(job))
}

/// Elapsed time and the rate over the input of the chunks this run processed.
fn print_throughput(report: &RunReport, metrics: &MemoryMetrics) {
    let secs = report.elapsed.as_secs_f64();
    let fetched = metrics.sum(fanout::metrics::names::BYTES_READ) / 1e6;
    let input: f64 = report
        .plan
        .chunks
        .iter()
        .filter(|c| report.run_ids.contains(&c.id))
        .map(|c| c.bytes)
        .sum::<u64>() as f64
        / 1e6;
    let rate = if secs > 0.0 { input / secs } else { 0.0 };
    println!(
        "  elapsed        {secs:>12.2} s   {input:.1} MB of input processed this run = {rate:.1} MB/s ({fetched:.1} MB fetched)"
    );
}
