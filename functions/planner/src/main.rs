use fanout::queue::DEFAULT_MAX_MESSAGE_BYTES;
use std::sync::Arc;

use fanout::arrivals::{DEFAULT_MAX_BYTES, DEFAULT_MAX_OBJECTS, DrainLimits};
use fanout::env::{AwsClients, Env};
use fanout::metrics::EmfMetrics;
use fanout_planner::{Arrivals, Settings, handle};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let queue_url = fanout::config::required("FANOUT_QUEUE_URL")?;
    let clients = AwsClients::load().await;
    let arrivals = match fanout::config::optional("FANOUT_ARRIVALS_QUEUE_URL") {
        None => None,
        Some(url) => Some(Arrivals {
            queue: Env::sqs_queue(&clients, &url, DEFAULT_MAX_MESSAGE_BYTES)?,
            limits: DrainLimits {
                max_objects: fanout::config::parsed(
                    "FANOUT_ARRIVALS_MAX_OBJECTS",
                    DEFAULT_MAX_OBJECTS,
                    "a number of objects",
                )?,
                max_bytes: fanout::config::parsed(
                    "FANOUT_ARRIVALS_MAX_BYTES",
                    DEFAULT_MAX_BYTES,
                    "a number of bytes",
                )?,
                ..DrainLimits::default()
            },
        }),
    };
    let settings = Settings {
        default_spec: fanout::config::location("FANOUT_SPEC")?,
        work: fanout::config::location("FANOUT_WORK")?,
        arrivals,
    };
    let namespace =
        fanout::config::optional("FANOUT_METRICS_NAMESPACE").unwrap_or_else(|| "Fanout".into());
    let env = Env::aws_with_clients(&clients, Arc::new(EmfMetrics::stdout(namespace)));
    let queue = Env::sqs_queue(&clients, &queue_url, DEFAULT_MAX_MESSAGE_BYTES)?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let (env, queue, settings) = (&env, queue.clone(), &settings);
        async move { handle(env, queue.as_ref(), settings, event.payload).await }
    }))
    .await
}
