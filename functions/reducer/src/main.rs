use std::sync::Arc;

use fanout::env::{AwsClients, Env};
use fanout::metrics::EmfMetrics;
use fanout_reducer::handle;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let work = fanout::config::location("FANOUT_WORK")?;
    let namespace =
        fanout::config::optional("FANOUT_METRICS_NAMESPACE").unwrap_or_else(|| "Fanout".into());
    let worker_memory_mb = fanout::config::worker_memory_mb()?;
    let env = Env::aws_with_clients(
        &AwsClients::load().await,
        Arc::new(EmfMetrics::stdout(namespace)),
    )
    .with_worker_memory_mb(worker_memory_mb);
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        handle(&env, work.as_ref(), event.payload)
    }))
    .await
}
