//! `fanout worker`: a long-polling fleet worker on an SQS queue.

use fanout::queue::DEFAULT_MAX_MESSAGE_BYTES;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fanout::env::Env;

/// A long-polling worker on an SQS queue, for a fleet (ECS, EC2, Kubernetes).
#[derive(clap::Args)]
pub struct Args {
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
}

/// Serves the queue until SIGTERM or Ctrl-C, then reports what it did.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Staging left by a killed worker on this host (older than a day: others may
    // be running beside this one).
    fanout::write::remove_stale_staging(Duration::from_secs(24 * 3600));
    let clients = fanout::env::AwsClients::load().await;
    let namespace = std::env::var("FANOUT_METRICS_NAMESPACE").unwrap_or_else(|_| "Fanout".into());
    let metrics: Arc<dyn fanout::metrics::Metrics> = Arc::new(
        fanout::metrics::CloudWatchMetrics::new(clients.cloudwatch.clone(), namespace),
    );
    let env = Env::aws_with_clients(&clients, metrics.clone());
    let q = Env::sqs_queue(&clients, &args.queue, DEFAULT_MAX_MESSAGE_BYTES)?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "fleet".into());
    let visibility = Duration::from_secs(args.visibility_s.max(3));
    // Its attempt records are refreshed as often as it renews its messages: one killed
    // mid-chunk is reported lost a visibility timeout after it was last heard of.
    let worker = Arc::new(
        fanout::worker::Worker::new(env, format!("{host}-{}", std::process::id()))
            .with_renewed_visibility(visibility),
    );
    let opts = fanout::fleet::ServeOptions {
        max_receive_count: args.max_receive_count,
        concurrency: args
            .concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        visibility,
        grace: Duration::from_secs(args.grace_s),
        backoff: fanout::fleet::QueueBackoff::default(),
    };
    eprintln!(
        "serving {} with {} workers (SIGTERM or Ctrl-C stops)",
        args.queue, opts.concurrency
    );
    let report = fanout::fleet::serve(worker, q, opts, shutdown_signal()).await?;
    metrics.flush().await?;
    eprintln!(
        "stopped: {} acknowledged, {} left for retry, {} released, {} failed queue calls backed off, {} tasks ended on errors",
        report.acknowledged,
        report.retried,
        report.released,
        report.queue_errors,
        report.tasks_failed
    );
    Ok(ExitCode::SUCCESS)
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
