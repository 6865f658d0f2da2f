//! The ports a use case runs with, chosen once at start-up, and the run settings that
//! come from outside the domain (the worker function's memory).

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::location::{Location, Sse};
use crate::metrics::{MemoryMetrics, Metrics};
use crate::store::{DynStore, FsStore};
use crate::{Error, Result};

/// Opens the store rooted at a location, writing with the given encryption.
pub type OpenStore = Arc<dyn Fn(&Location, &Sse) -> Result<DynStore> + Send + Sync>;

/// Ports for planner, worker and reducer.
#[derive(Clone)]
pub struct Env {
    /// Store factory (by URL scheme).
    pub open_store: OpenStore,
    /// Metrics sink.
    pub metrics: Arc<dyn Metrics>,
    /// Memory of the worker function, MB: what the measured Lambda cost assumes.
    pub worker_memory_mb: u32,
    /// The table catalog jobs with `output.catalog` register their output in (Glue with
    /// the AWS adapters; none on the embedded default).
    pub catalog: Option<Arc<dyn Catalog>>,
}

/// Opens a local store; other schemes need the AWS adapters ([`Env::aws`]).
pub fn open_local_store(location: &Location, _sse: &Sse) -> Result<DynStore> {
    match location {
        Location::Local(path) => Ok(Arc::new(FsStore::new(path))),
        Location::S3 { .. } => Err(Error::Config(format!(
            "`{location}`: S3 needs the AWS adapters (`Env::aws`); this process runs the embedded default"
        ))),
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("metrics", &self.metrics)
            .field("worker_memory_mb", &self.worker_memory_mb)
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

impl Env {
    /// Ports from a store factory and a metrics sink; the worker memory the measured cost
    /// assumes is the cost model's default until [`Env::with_worker_memory_mb`].
    pub fn new(open_store: OpenStore, metrics: Arc<dyn Metrics>) -> Env {
        Env {
            open_store,
            metrics,
            worker_memory_mb: crate::cost::Model::default().memory_mb,
            catalog: None,
        }
    }

    /// The same ports, with a table catalog.
    pub fn with_catalog(mut self, catalog: Arc<dyn Catalog>) -> Env {
        self.catalog = Some(catalog);
        self
    }

    /// The embedded default: local directories, in-memory metrics.
    pub fn embedded(metrics: Arc<MemoryMetrics>) -> Env {
        Env::new(Arc::new(open_local_store), metrics)
    }

    /// The same ports, with the worker function's memory (MB) the measured cost assumes.
    pub fn with_worker_memory_mb(mut self, mb: u32) -> Env {
        self.worker_memory_mb = mb;
        self
    }

    /// Opens a queue: `local` is not allowed here (the local runner owns its queue);
    /// an `https://…` or `http://…` URL is SQS, sent messages of at most
    /// `max_message_bytes` (a job's `queue.max_message_size`, or
    /// [`crate::queue::DEFAULT_MAX_MESSAGE_BYTES`] where no spec is at hand).
    #[cfg(feature = "aws")]
    pub fn sqs_queue(
        clients: &AwsClients,
        url: &str,
        max_message_bytes: usize,
    ) -> Result<Arc<dyn crate::queue::Queue>> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(Error::Config(format!(
                "`{url}` is not an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"
            )));
        }
        Ok(Arc::new(
            crate::queue::SqsQueue::new(clients.sqs.clone(), url)
                .with_max_message_bytes(max_message_bytes),
        ))
    }

    /// S3 and local stores, SQS queues, the Glue Data Catalog: the AWS world, configured from the environment
    /// (region, credentials, `AWS_ENDPOINT_URL` for an emulator, which also turns on
    /// path-style bucket addressing).
    #[cfg(feature = "aws")]
    pub async fn aws(metrics: Arc<dyn Metrics>) -> Env {
        Self::aws_with_clients(&AwsClients::load().await, metrics)
    }

    /// [`Env::aws`] with clients built by the caller (once per cold start).
    #[cfg(feature = "aws")]
    pub fn aws_with_clients(clients: &AwsClients, metrics: Arc<dyn Metrics>) -> Env {
        let s3 = clients.s3.clone();
        Env::new(
            Arc::new(move |location: &Location, sse: &Sse| -> Result<DynStore> {
                match location {
                    Location::S3 { bucket, prefix } => Ok(Arc::new(
                        crate::store::S3Store::new(s3.clone(), bucket, prefix)
                            .with_sse(sse.clone()),
                    )),
                    local => open_local_store(local, sse),
                }
            }),
            metrics,
        )
        .with_catalog(Arc::new(crate::catalog::GlueCatalog::new(
            clients.glue.clone(),
        )))
    }

    /// Opens a store (writes use the bucket's default encryption).
    pub fn store(&self, location: &Location) -> Result<DynStore> {
        (self.open_store)(location, &Sse::BucketDefault)
    }

    /// Opens a store writing with `sse`.
    pub fn store_with(&self, location: &Location, sse: &Sse) -> Result<DynStore> {
        (self.open_store)(location, sse)
    }
}

/// AWS SDK clients, built once per process (per Lambda cold start).
#[cfg(feature = "aws")]
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// CloudWatch.
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// Glue (the Data Catalog).
    pub glue: aws_sdk_glue::Client,
}

#[cfg(feature = "aws")]
impl AwsClients {
    /// Loads the configuration from the environment; adaptive retries ride out throttling.
    pub async fn load() -> AwsClients {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::adaptive().with_max_attempts(5))
            .load()
            .await;
        // Emulators answer on one host: virtual-hosted bucket names would not resolve.
        let path_style = std::env::var("AWS_ENDPOINT_URL").is_ok()
            || std::env::var("AWS_ENDPOINT_URL_S3").is_ok()
            || std::env::var("FANOUT_S3_PATH_STYLE").is_ok_and(|v| v == "1" || v == "true");
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(path_style)
                .build(),
        );
        AwsClients {
            s3,
            sqs: aws_sdk_sqs::Client::new(&config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
            glue: aws_sdk_glue::Client::new(&config),
        }
    }
}
