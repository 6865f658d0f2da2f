//! The `fanout` command line: run, validate, plan, status, inspect, sample-data.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fanout::env::Env;
use fanout::location::Location;
use fanout::metrics::MemoryMetrics;
use fanout::planner::PlannedJob;
use fanout::records::ChunkRecord;
use fanout::reducer::{JobStatus, Manifest};
use fanout::runner::{Progress, RunOptions, run_local};
use fanout::spec::JobSpec;
use indicatif::{ProgressBar, ProgressStyle};

/// Fan-out ETL: raw CSV / JSON lines / Parquet in, validated partitioned Parquet out.
#[derive(Parser)]
#[command(name = "fanout", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The estimate's model and prices (defaults: 2,048 MB workers at 100 MB/s, us-east-1 arm64 list prices).
#[derive(clap::Args)]
struct EstimateArgs {
    /// Worker memory, MB.
    #[arg(long, default_value_t = fanout::cost::Model::default().memory_mb)]
    memory_mb: u32,
    /// Input MB (10^6 bytes) a worker processes per second.
    #[arg(long, default_value_t = fanout::cost::Model::default().bytes_per_s / 1e6)]
    throughput_mb_s: f64,
    /// Fixed seconds per chunk.
    #[arg(long, default_value_t = fanout::cost::Model::default().overhead_s)]
    overhead_s: f64,
    /// Most concurrent workers (the event source's maximum concurrency, at most 1,250).
    #[arg(long, default_value_t = fanout::cost::Model::default().max_concurrency)]
    concurrency: u32,
    /// Files each chunk writes (its partitions).
    #[arg(long, default_value_t = 1)]
    files_per_chunk: u64,
    /// USD per Lambda GB-second.
    #[arg(long, default_value_t = fanout::cost::Prices::default().lambda_gb_s)]
    price_lambda_gb_s: f64,
    /// USD per Lambda invocation.
    #[arg(long, default_value_t = fanout::cost::Prices::default().lambda_request)]
    price_lambda_request: f64,
    /// USD per S3 GET/HEAD.
    #[arg(long, default_value_t = fanout::cost::Prices::default().s3_get)]
    price_s3_get: f64,
    /// USD per S3 PUT.
    #[arg(long, default_value_t = fanout::cost::Prices::default().s3_put)]
    price_s3_put: f64,
    /// USD per S3 LIST.
    #[arg(long, default_value_t = fanout::cost::Prices::default().s3_list)]
    price_s3_list: f64,
    /// USD per SQS request.
    #[arg(long, default_value_t = fanout::cost::Prices::default().sqs_request)]
    price_sqs: f64,
}

#[derive(Subcommand)]
enum Command {
    /// Plan, process every chunk and finalize a job on the embedded queue.
    Run {
        /// Job spec (YAML or JSON).
        spec: PathBuf,
        /// Concurrent workers (default: the machine's cores).
        #[arg(long, short = 'w')]
        workers: Option<usize>,
        /// Use this job id instead of the spec's (or the derived one).
        #[arg(long)]
        job_id: Option<String>,
        /// Run over this SQS queue (URL) instead of the embedded one; Lambda or fleet
        /// workers on the same queue help.
        #[arg(long)]
        queue: Option<String>,
        /// Process only input objects no earlier successful job of this name committed
        /// (by key and version, from the manifests in `work`): an incremental run.
        #[arg(long)]
        since_last: bool,
    },
    /// Write a job's report: one self-contained HTML page (timeline, throughput, counts,
    /// reject reasons, partitions and files, cost).
    Report {
        /// Job id.
        job_id: String,
        /// Work location of the job.
        #[arg(long, env = "FANOUT_WORK", default_value = "out/_fanout/")]
        work: String,
        /// Output file (default: `<job id>.html`).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Print the report's data as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Plan 1,000,000 (or N) synthetic objects in memory and print the time (benchmark).
    #[command(hide = true)]
    BenchPlan {
        /// Objects listed.
        #[arg(long, default_value_t = 1_000_000)]
        objects: u64,
    },
    /// Merge 100,000 (or N) synthetic chunk records into a manifest and print the time (benchmark).
    #[command(hide = true)]
    BenchReduce {
        /// Chunk records.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
    },
    /// A long-polling worker on an SQS queue, for a fleet (ECS, EC2, Kubernetes).
    Worker {
        /// Chunk queue URL.
        #[arg(long, env = "FANOUT_QUEUE_URL")]
        queue: String,
        /// The queue's maxReceiveCount.
        #[arg(long, env = "FANOUT_MAX_RECEIVE_COUNT", default_value_t = 3)]
        max_receive_count: u32,
        /// Chunks processed at once (default: the machine's cores).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Visibility timeout renewed while a chunk runs, seconds.
        #[arg(long, default_value_t = 300)]
        visibility_s: u64,
        /// After SIGTERM/Ctrl-C, seconds in-flight chunks may still finish.
        #[arg(long, default_value_t = 30)]
        grace_s: u64,
    },
    /// Delete a job's files that its manifest does not list (leftovers of crashed or
    /// abandoned attempts); other jobs' files are never touched.
    Gc {
        /// Job id.
        job_id: String,
        /// Work location of the job.
        #[arg(long, env = "FANOUT_WORK", default_value = "out/_fanout/")]
        work: String,
        /// The job was never finalized: every file its chunks wrote is garbage.
        #[arg(long)]
        abandoned: bool,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move dead-lettered chunk messages back to the chunk queue (after fixing the cause).
    Redrive {
        /// Dead-letter queue URL.
        #[arg(long)]
        from: String,
        /// Chunk queue URL.
        #[arg(long)]
        to: String,
    },
    /// Check a spec (fields, lookups, SQL) without running anything.
    Validate {
        /// Job spec.
        spec: PathBuf,
    },
    /// Show the chunk plan without running it.
    Plan {
        /// Job spec.
        spec: PathBuf,
        /// List every chunk.
        #[arg(long)]
        chunks: bool,
        /// Estimate the cost and duration on AWS Lambda.
        #[arg(long)]
        estimate: bool,
        #[command(flatten)]
        model: EstimateArgs,
    },
    /// Planned / committed / failed / dead-lettered chunks of a job.
    Status {
        /// Job id.
        job_id: String,
        /// Work location of the job.
        #[arg(long, env = "FANOUT_WORK", default_value = "out/_fanout/")]
        work: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A job's manifest: files, partitions, counts, schema, aggregates.
    Inspect {
        /// Job id.
        job_id: String,
        /// Work location of the job.
        #[arg(long, env = "FANOUT_WORK", default_value = "out/_fanout/")]
        work: String,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the deterministic sample data used by `examples/orders.yaml`.
    SampleData {
        /// Target directory.
        #[arg(default_value = "examples/data")]
        dir: PathBuf,
        /// Approximate number of orders.
        #[arg(long, default_value_t = 80_000)]
        rows: u64,
        /// Overwrite existing data.
        #[arg(long)]
        force: bool,
    },
}

/// Exit code of a failed job.
const EXIT_JOB_FAILED: u8 = 1;
/// Exit code of a refused spec or bad usage.
const EXIT_INVALID: u8 = 2;

fn main() -> ExitCode {
    fanout::alloc::limit_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_JOB_FAILED);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            let invalid = e
                .downcast_ref::<fanout::Error>()
                .is_some_and(|f| matches!(f, fanout::Error::Spec(_) | fanout::Error::Config(_)));
            eprintln!("error: {e:#}");
            ExitCode::from(if invalid {
                EXIT_INVALID
            } else {
                EXIT_JOB_FAILED
            })
        }
    }
}

/// The embedded default, or the AWS adapters when something lives on AWS.
async fn env_for(aws: bool) -> (Env, Arc<MemoryMetrics>) {
    let metrics = Arc::new(MemoryMetrics::new());
    if aws {
        (Env::aws(metrics.clone()).await, metrics)
    } else {
        (Env::embedded(metrics.clone()), metrics)
    }
}

fn spec_uses_s3(spec: &JobSpec) -> bool {
    let s3 = |l: &Location| matches!(l, Location::S3 { .. });
    s3(&spec.work)
        || s3(&spec.input.location)
        || s3(&spec.output.location)
        || s3(&spec.rejects.location)
        || spec.transform.lookups.iter().any(|l| s3(&l.location))
}

/// Resolves on SIGTERM (container stop) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn load(path: &Path) -> anyhow::Result<JobSpec> {
    Ok(JobSpec::from_file(path)?)
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            spec,
            workers,
            job_id,
            queue,
            since_last,
        } => {
            let mut job = load(&spec)?;
            if job_id.is_some() {
                job.job_id = job_id;
            }
            let uses_aws = queue.is_some() || spec_uses_s3(&job);
            let (env, metrics) = env_for(uses_aws).await;
            if since_last {
                let done = fanout::planner::committed_inputs(&env, &job).await?;
                let before = done.len();
                job = job.with_skipped(done);
                let input = env.store(&job.input.location)?;
                let fresh = fanout::planner::list_input(input.as_ref(), &job).await?;
                if fresh.is_empty() {
                    println!(
                        "nothing new since the last run: every selected input object was committed by an earlier `{}` job ({before} objects)",
                        job.name
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                println!(
                    "since the last run: {} new or changed object(s); {before} committed before are skipped",
                    fresh.len()
                );
            }
            fanout::lookup::preflight(&env, &job, &spec.display().to_string()).await?;
            let mut opts = RunOptions::default();
            if let Some(url) = &queue {
                opts.queue = Some(Env::sqs_queue(&fanout::env::AwsClients::load().await, url)?);
            }
            if let Some(w) = workers {
                anyhow::ensure!(w >= 1, "--workers must be at least 1");
                opts.workers = w;
            }
            let progress = Arc::new(Bar::new());
            let report = run_local(&env, &job, &opts, progress.clone()).await?;
            progress.finish();
            let secs = report.elapsed.as_secs_f64();
            println!(
                "job {}  ({} chunks, {} run now, {} workers)",
                report.plan.summary.job_id,
                report.plan.summary.chunks,
                report.chunks_run,
                opts.workers
            );
            match &report.result {
                Ok(m) => {
                    print_manifest_summary(m);
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
                    print_aggregate(m);
                    println!(
                        "\nmanifest: {}",
                        job.work.join(&fanout::records::layout::manifest(&m.job_id))
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    print_status(&report.status);
                    eprintln!("\nerror: {e}");
                    if let Ok(m) =
                        fanout::reducer::read_manifest(&env, &job.work, &report.plan.summary.job_id)
                            .await
                        && !m.succeeded()
                    {
                        print_manifest_summary(&m);
                    }
                    Ok(ExitCode::from(EXIT_JOB_FAILED))
                }
            }
        }
        Command::Validate { spec } => {
            let job = load(&spec)?;
            let (env, _) = env_for(spec_uses_s3(&job)).await;
            let out = fanout::lookup::preflight(&env, &job, &spec.display().to_string()).await?;
            println!("{}: valid", spec.display());
            println!(
                "  input   {} ({:?}, {} columns, {} rules)",
                job.input.location,
                job.input.format,
                job.input.schema.fields().len(),
                job.rules.len()
            );
            println!(
                "  output  {} partitioned by [{}]",
                job.output.location,
                job.output.partition_by.join(", ")
            );
            let cols: Vec<String> = out
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect();
            println!("  rows    {}", cols.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            spec,
            chunks,
            estimate,
            model: m,
        } => {
            let job = load(&spec)?;
            let (env, _) = env_for(spec_uses_s3(&job)).await;
            let plan = fanout::planner::compute_plan(&env, &job).await?;
            print_plan(&plan, chunks);
            if estimate {
                anyhow::ensure!(m.throughput_mb_s > 0.0, "--throughput-mb-s must be above 0");
                let model = fanout::cost::Model {
                    memory_mb: m.memory_mb,
                    bytes_per_s: m.throughput_mb_s * 1e6,
                    overhead_s: m.overhead_s,
                    max_concurrency: m.concurrency,
                };
                let prices = fanout::cost::Prices {
                    lambda_gb_s: m.price_lambda_gb_s,
                    lambda_request: m.price_lambda_request,
                    s3_get: m.price_s3_get,
                    s3_put: m.price_s3_put,
                    s3_list: m.price_s3_list,
                    sqs_request: m.price_sqs,
                };
                let e = fanout::planner::estimate_chunks(
                    &job,
                    &plan.chunks,
                    plan.summary.objects,
                    m.files_per_chunk,
                    &model,
                    &prices,
                );
                print_estimate(&plan, &e);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            job_id,
            work,
            output,
            json,
        } => {
            let work = Location::parse(&work).map_err(anyhow::Error::msg)?;
            let (env, _) = env_for(matches!(work, Location::S3 { .. })).await;
            let data = fanout::report::collect(&env, &work, &job_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
                return Ok(ExitCode::SUCCESS);
            }
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{job_id}.html")));
            std::fs::write(&path, fanout::report::render(&data))
                .with_context(|| format!("writing {}", path.display()))?;
            println!("report: {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchPlan { objects } => {
            let (what, secs) = fanout::bench::plan(objects).await?;
            println!(
                "{}",
                serde_json::json!({"what": what, "n": objects, "seconds": secs})
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchReduce { records } => {
            let (what, secs) = fanout::bench::reduce(records).await?;
            println!(
                "{}",
                serde_json::json!({"what": what, "n": records, "seconds": secs})
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { job_id, work, json } => {
            let work = Location::parse(&work).map_err(anyhow::Error::msg)?;
            let (env, _) = env_for(matches!(work, Location::S3 { .. })).await;
            let status = fanout::reducer::job_status(&env, &work, &job_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(if status.dead_lettered.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_JOB_FAILED)
            })
        }
        Command::Inspect { job_id, work, json } => {
            let work = Location::parse(&work).map_err(anyhow::Error::msg)?;
            let (env, _) = env_for(matches!(work, Location::S3 { .. })).await;
            let m = fanout::reducer::read_manifest(&env, &work, &job_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
                return Ok(ExitCode::SUCCESS);
            }
            print_manifest_summary(&m);
            println!("\nschema");
            for f in m.schema.fields() {
                println!(
                    "  {:<20} {}{}",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { "" } else { " not null" }
                );
            }
            println!("\npartitions ({})", m.partitions.len());
            for p in &m.partitions {
                let path = if p.path.is_empty() {
                    "(none)"
                } else {
                    p.path.as_str()
                };
                println!(
                    "  {path:<40} {:>4} files {:>10} rows {:>12} bytes",
                    p.files, p.rows, p.bytes
                );
            }
            print_aggregate(&m);
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            queue,
            max_receive_count,
            concurrency,
            visibility_s,
            grace_s,
        } => {
            // Staging left by a killed worker on this host (older than a day: others may
            // be running beside this one).
            fanout::write::remove_stale_staging(Duration::from_secs(24 * 3600));
            let clients = fanout::env::AwsClients::load().await;
            let namespace =
                std::env::var("FANOUT_METRICS_NAMESPACE").unwrap_or_else(|_| "Fanout".into());
            let metrics: Arc<dyn fanout::metrics::Metrics> = Arc::new(
                fanout::metrics::CloudWatchMetrics::new(clients.cloudwatch.clone(), namespace),
            );
            let env = Env::aws_with_clients(&clients, metrics.clone());
            let q = Env::sqs_queue(&clients, &queue)?;
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "fleet".into());
            let worker = Arc::new(fanout::worker::Worker::new(
                env,
                format!("{host}-{}", std::process::id()),
            ));
            let opts = fanout::fleet::ServeOptions {
                max_receive_count,
                concurrency: concurrency
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                visibility: Duration::from_secs(visibility_s.max(3)),
                grace: Duration::from_secs(grace_s),
            };
            eprintln!(
                "serving {queue} with {} workers (SIGTERM or Ctrl-C stops)",
                opts.concurrency
            );
            let report = fanout::fleet::serve(worker, q, opts, shutdown_signal()).await?;
            metrics.flush().await?;
            eprintln!(
                "stopped: {} acknowledged, {} left for retry, {} released",
                report.acknowledged, report.retried, report.released
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc {
            job_id,
            work,
            abandoned,
            dry_run,
        } => {
            let work = Location::parse(&work).map_err(anyhow::Error::msg)?;
            let (env, _) = env_for(matches!(work, Location::S3 { .. })).await;
            let g = fanout::gc::collect_garbage(&env, &work, &job_id, abandoned, dry_run).await?;
            let verb = if g.deleted { "deleted" } else { "would delete" };
            for k in &g.outputs {
                println!("{verb} output  {k}");
            }
            for k in &g.rejects {
                println!("{verb} rejects {k}");
            }
            println!(
                "{verb} {} output and {} rejects files of job {job_id}",
                g.outputs.len(),
                g.rejects.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Redrive { from, to } => {
            let clients = fanout::env::AwsClients::load().await;
            let env = Env::aws_with_clients(&clients, Arc::new(MemoryMetrics::new()));
            let moved = fanout::fleet::redrive(
                Env::sqs_queue(&clients, &from)?.as_ref(),
                Env::sqs_queue(&clients, &to)?.as_ref(),
                Some(&env),
            )
            .await?;
            println!("moved {moved} messages from {from} to {to}");
            Ok(ExitCode::SUCCESS)
        }
        Command::SampleData { dir, rows, force } => {
            if dir.join("orders").exists() && !force {
                println!(
                    "{} already holds sample data (use --force to rewrite it)",
                    dir.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let stats = fanout::sample::write_sample(&dir, rows, 42)
                .with_context(|| format!("writing sample data to {}", dir.display()))?;
            println!(
                "wrote {} orders ({} deliberately bad) in {:.1} MB under {}",
                stats.orders,
                stats.bad,
                stats.bytes as f64 / 1e6,
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

fn print_estimate(plan: &PlannedJob, e: &fanout::cost::Estimate) {
    let u = &e.priced.usage;
    let usd = &e.priced.usd;
    println!(
        "\nestimate ({} MB workers at {:.0} MB/s, {:.1} s per chunk overhead; us-east-1 prices unless overridden)",
        e.model.memory_mb,
        e.model.bytes_per_s / 1e6,
        e.model.overhead_s
    );
    println!(
        "  input            {}",
        human_bytes(plan.summary.input_bytes)
    );
    println!("  chunks           {}", plan.summary.chunks);
    println!(
        "  Lambda           {:>12.1} GB-s  {:>8} invocations   ${:.4}",
        u.lambda_gb_s, u.lambda_requests, usd.lambda
    );
    println!(
        "  S3 requests      {:>8} GET  {:>6} PUT  {:>4} LIST     ${:.4}",
        u.s3_get, u.s3_put, u.s3_list, usd.s3
    );
    println!(
        "  SQS requests     {:>8}                               ${:.4}",
        u.sqs_requests, usd.sqs
    );
    println!(
        "  total                                                ${:.4}",
        usd.total
    );
    println!(
        "  duration         {:.1} s at up to {} concurrent workers (SQS scaling: 5 at first, +300/min, at most {})",
        e.duration_s,
        e.concurrency,
        e.model
            .max_concurrency
            .min(fanout::cost::SQS_MAX_CONCURRENCY)
    );
}

fn print_plan(plan: &PlannedJob, all: bool) {
    let s = &plan.summary;
    println!("job {}", s.job_id);
    println!(
        "  objects  {:>10}   {}",
        s.objects,
        human_bytes(s.input_bytes)
    );
    println!(
        "  chunks   {:>10}   target {} each",
        s.chunks,
        human_bytes(s.target_bytes)
    );
    if let (Some(min), Some(max)) = (
        plan.chunks.iter().map(|c| c.bytes).min(),
        plan.chunks.iter().map(|c| c.bytes).max(),
    ) {
        println!(
            "  sizes    min {}  max {}",
            human_bytes(min),
            human_bytes(max)
        );
    }
    let shown = if all {
        plan.chunks.len()
    } else {
        plan.chunks.len().min(20)
    };
    for c in plan.chunks.iter().take(shown) {
        let what: Vec<String> = c
            .pieces
            .iter()
            .take(3)
            .map(|p| match p {
                fanout::plan::Piece::Object { key, .. } => key.clone(),
                fanout::plan::Piece::Range {
                    key, start, end, ..
                } => format!("{key} [{start}..{end})"),
                fanout::plan::Piece::RowGroups {
                    key, row_groups, ..
                } => format!("{key} row groups {row_groups:?}"),
            })
            .collect();
        let more = if c.pieces.len() > 3 {
            format!(" +{} more", c.pieces.len() - 3)
        } else {
            String::new()
        };
        println!(
            "  {:>5} {} {:>10}  {}{more}",
            c.index,
            c.id,
            human_bytes(c.bytes),
            what.join(", ")
        );
    }
    if shown < plan.chunks.len() {
        println!(
            "  … {} more (--chunks lists all)",
            plan.chunks.len() - shown
        );
    }
}

fn print_status(s: &JobStatus) {
    println!("job {}", s.job_id);
    println!("  planned        {:>8}", s.planned);
    println!("  committed      {:>8}", s.committed);
    println!("  pending        {:>8}", s.pending);
    println!("  failed         {:>8}   (will be retried)", s.failed.len());
    println!(
        "  dead-lettered  {:>8}   (no retry left)",
        s.dead_lettered.len()
    );
    if let Some(o) = &s.outcome {
        println!("  outcome        {o}");
    }
    for f in s.failed.iter().chain(&s.dead_lettered) {
        println!(
            "  chunk {} after {} attempt(s){}: {}",
            f.chunk_id,
            f.attempts,
            if f.permanent { " [permanent]" } else { "" },
            f.message
        );
    }
}

fn print_manifest_summary(m: &Manifest) {
    println!("  outcome        {}", m.outcome);
    for p in &m.problems {
        println!("  problem        {p}");
    }
    println!("  rows read      {:>12}", m.counts.read);
    println!(
        "  rows rejected  {:>12}   ({:.3}%) → {}{}/",
        m.counts.rejected,
        m.reject_ratio * 100.0,
        m.rejects_location,
        m.job_id
    );
    for (rule, n) in &m.reject_rules {
        println!("    {rule:<14} {n:>10}");
    }
    println!("  rows valid     {:>12}", m.counts.valid);
    println!(
        "  rows written   {:>12}   ({} filtered or added by the transform)",
        m.counts.written,
        m.counts.valid as i64 - m.counts.written as i64
    );
    println!(
        "  files written  {:>12}   {} in {} partitions → {}",
        m.files.len(),
        human_bytes(m.output_bytes),
        m.partitions.len(),
        m.output
    );
    println!(
        "  input          {:>12}   {} objects, {} chunks",
        human_bytes(m.input_bytes),
        m.objects,
        m.chunks
    );
}

fn print_aggregate(m: &Manifest) {
    let Some(a) = &m.aggregate else { return };
    println!("\naggregate by [{}]", a.spec.group_by.join(", "));
    let cols: Vec<String> = a
        .spec
        .group_by
        .iter()
        .cloned()
        .chain(a.spec.measures.iter().map(|x| x.name.clone()))
        .collect();
    let cell = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "∅".into(),
        Some(v) => v.to_string(),
    };
    let rows: Vec<Vec<String>> = a
        .rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(r.get(c))).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: &[String]| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("  {}", line(&cols));
    for r in rows.iter().take(50) {
        println!("  {}", line(r));
    }
    if rows.len() > 50 {
        println!("  … {} more rows in aggregates.json", rows.len() - 50);
    }
}

/// Progress: a bar on a terminal, plain lines otherwise.
struct Bar {
    bar: Option<ProgressBar>,
    total: AtomicU64,
    done: AtomicU64,
    rows: AtomicU64,
}

impl Bar {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} chunks  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Bar {
            bar,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn planned(&self, job: &PlannedJob, to_run: u64) {
        self.total.store(to_run, Ordering::Relaxed);
        let skipped = job.summary.chunks - to_run;
        let note = if skipped > 0 {
            format!(" ({skipped} already committed)")
        } else {
            String::new()
        };
        match &self.bar {
            Some(b) => {
                b.set_length(to_run);
                b.println(format!(
                    "planned {} chunks over {} objects{note}",
                    job.summary.chunks, job.summary.objects
                ));
            }
            None => eprintln!(
                "planned {} chunks over {} objects{note}",
                job.summary.chunks, job.summary.objects
            ),
        }
    }

    fn committed(&self, r: &ChunkRecord) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let rows = self.rows.fetch_add(r.counts.read, Ordering::Relaxed) + r.counts.read;
        let total = self.total.load(Ordering::Relaxed);
        match &self.bar {
            Some(b) => {
                b.inc(1);
                b.set_message(format!("{rows} rows"));
            }
            None => {
                let step = (total / 10).max(1);
                if done.is_multiple_of(step) || done == total {
                    eprintln!("committed {done}/{total} chunks, {rows} rows read");
                }
            }
        }
    }

    fn failed(&self, chunk_id: &str, attempt: u32, error: &fanout::Error, last_attempt: bool) {
        let what = if last_attempt {
            "failed for good"
        } else {
            "failed, will retry"
        };
        let line = format!("chunk {chunk_id} attempt {attempt} {what}: {error}");
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}
