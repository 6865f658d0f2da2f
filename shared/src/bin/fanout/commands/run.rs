//! `fanout run`: plan, process and finalize a job in this process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fanout::env::Env;
use fanout::incremental::{SinceLast, run_since_last};
use fanout::ledger::LeaseOptions;
use fanout::metrics::MemoryMetrics;
use fanout::runner::{RunOptions, RunReport, run_local};
use fanout::spec::JobSpec;

use crate::EXIT_JOB_FAILED;
use crate::print::{print_aggregate, print_manifest_summary, print_output_files, print_status};
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
    /// Process only input objects (key and version) no earlier job of this name
    /// ingested, from the ingestion ledger in `work` (`ledger/<name>/`): an incremental
    /// run, one at a time per job name (it holds the name's lease).
    #[arg(long)]
    since_last: bool,
    /// With --since-last: wait up to this many seconds for another run of the name to
    /// release its lease (default: exit at once with code 4, naming the holder).
    #[arg(long, value_name = "SECONDS", requires = "since_last")]
    wait_lease: Option<u64>,
    /// With --since-last: the lease's expiry after its last renewal (renewed every third of
    /// it while the run runs); a run that dies holds the name this long.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        requires = "since_last"
    )]
    lease_ttl: u64,
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
    let report = if args.since_last {
        let lease = LeaseOptions {
            ttl: Duration::from_secs(args.lease_ttl.max(1)),
            wait: args.wait_lease.map(Duration::from_secs),
            ..LeaseOptions::default()
        };
        match run_since_last(&env, &job, &opts, &lease, progress.clone()).await? {
            SinceLast::NothingNew { ingested } => {
                progress.finish();
                println!(
                    "nothing new since the last run: every selected input object is in the ingestion ledger of `{}` ({ingested} object versions)",
                    job.name
                );
                return Ok(ExitCode::SUCCESS);
            }
            SinceLast::Ran {
                report,
                ingested,
                recovered,
            } => {
                for j in recovered {
                    println!(
                        "finished job {j} first (a run that died, or a finalize that stopped half-way)"
                    );
                }
                println!(
                    "since the last run: {} new or changed object(s); {ingested} ingested before are skipped",
                    report.plan.summary.objects
                );
                *report
            }
        }
    } else {
        run_local(&env, &job, &opts, progress.clone()).await?
    };
    progress.finish();
    print_report(&env, &job, &opts, &report, &metrics).await
}

/// Prints a finished run; exit 1 when its job failed.
async fn print_report(
    env: &Env,
    job: &JobSpec,
    opts: &RunOptions,
    report: &RunReport,
    metrics: &MemoryMetrics,
) -> anyhow::Result<ExitCode> {
    println!(
        "job {}  ({} chunks, {} run now, {} workers)",
        report.plan.summary.job_id, report.plan.summary.chunks, report.chunks_run, opts.workers
    );
    match &report.result {
        Ok(m) => {
            print_manifest_summary(m);
            print_throughput(report, metrics);
            print_output_files(m);
            print_aggregate(env, &job.work, m).await?;
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
                fanout::reducer::read_manifest(env, &job.work, &report.plan.summary.job_id).await
                && !m.succeeded()
            {
                print_manifest_summary(&m);
            }
            Ok(ExitCode::from(EXIT_JOB_FAILED))
        }
    }
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
