use std::sync::Arc;

use fanout::env::{AwsClients, Env};
use fanout::metrics::EmfMetrics;
use fanout::worker::Worker;
use fanout_worker::{DEFAULT_MIN_REMAINING, Settings, handle};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

fn main() -> Result<(), Error> {
    // Before the runtime's threads start: see `limit_arenas`.
    fanout::alloc::limit_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // Staged output of a chunk killed by a timeout stays in /tmp with the environment.
    fanout::write::remove_stale_staging(std::time::Duration::ZERO);
    let settings = Settings {
        max_receive_count: fanout::config::parsed(
            "FANOUT_MAX_RECEIVE_COUNT",
            3,
            "the chunk queue's maxReceiveCount, 1 to 1000",
        )?,
        min_remaining: DEFAULT_MIN_REMAINING,
    };
    let namespace =
        fanout::config::optional("FANOUT_METRICS_NAMESPACE").unwrap_or_else(|| "Fanout".into());
    // Lambda sets its memory; an attempt record names it, for a chunk killed out of memory.
    let memory_mb = fanout::config::parsed(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        fanout::cost::Model::default().memory_mb,
        "the function's memory in MB, a whole number",
    )?;
    let env = Env::aws_with_clients(
        &AwsClients::load().await,
        Arc::new(EmfMetrics::stdout(namespace)),
    )
    .with_worker_memory_mb(memory_mb);
    let name =
        fanout::config::optional("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_else(|| "lambda".into());
    let mut worker = Worker::new(env, name);
    // The function's timeout is at most the queue's visibility timeout (the template makes
    // it 6x): an attempt started longer ago than that without a record was killed.
    if let Some(s) = fanout::config::optional("FANOUT_VISIBILITY_TIMEOUT_S") {
        let s: u64 = s.trim().parse().map_err(|_| {
            fanout::Error::Config(format!(
                "environment variable FANOUT_VISIBILITY_TIMEOUT_S={s:?}: expected the chunk queue's visibility timeout in seconds, a whole number"
            ))
        })?;
        worker = worker.with_visibility_timeout(std::time::Duration::from_secs(s));
    }
    run(service_fn(|event: LambdaEvent<_>| async {
        Ok::<_, Error>(handle(&worker, &settings, event).await)
    }))
    .await
}
