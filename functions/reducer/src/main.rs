use std::sync::Arc;

use fanout::env::{AwsClients, Env};
use fanout::metrics::EmfMetrics;
use fanout::reducer::StatusQueues;
use fanout_reducer::handle;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let work = fanout::config::location("FANOUT_WORK")?;
    let namespace =
        fanout::config::optional("FANOUT_METRICS_NAMESPACE").unwrap_or_else(|| "Fanout".into());
    let worker_memory_mb = fanout::config::worker_memory_mb()?;
    let clients = AwsClients::load().await;
    let env = Env::aws_with_clients(&clients, Arc::new(EmfMetrics::stdout(namespace)))
        .with_worker_memory_mb(worker_memory_mb);
    // Status reports the dead-letter queue's depth, and with the chunk queue's, chunks
    // left with no message to deliver them.
    let queue = |var: &str| -> Result<_, Error> {
        match fanout::config::optional(var) {
            Some(url) => Ok(Some(
                Env::sqs_queue(&clients, &url, fanout::queue::DEFAULT_MAX_MESSAGE_BYTES)
                    .map_err(|e| format!("environment variable {var}: {e}"))?,
            )),
            None => Ok(None),
        }
    };
    let queues = StatusQueues {
        chunks: queue("FANOUT_QUEUE_URL")?,
        dead_letter: queue("FANOUT_DLQ_URL")?,
    };
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        handle(&env, work.as_ref(), &queues, event.payload)
    }))
    .await
}
