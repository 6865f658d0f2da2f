//! `fanout plan`: the chunk plan and, on request, its cost on AWS Lambda.

use std::path::PathBuf;
use std::process::ExitCode;

use fanout::cost::{Model, Prices};

use crate::print::{print_estimate, print_plan};
use crate::work::{env_for, load_spec, spec_uses_s3};

/// Show the chunk plan without running it.
#[derive(clap::Args)]
pub struct Args {
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
}

/// The estimate's model and prices (defaults: 2,048 MB workers at 100 MB/s, us-east-1 arm64 list prices).
#[derive(clap::Args)]
struct EstimateArgs {
    /// Worker memory, MB.
    #[arg(long, default_value_t = Model::default().memory_mb)]
    memory_mb: u32,
    /// Input MB (10^6 bytes) a worker processes per second.
    #[arg(long, default_value_t = Model::default().bytes_per_s / 1e6)]
    throughput_mb_s: f64,
    /// Fixed seconds per chunk.
    #[arg(long, default_value_t = Model::default().overhead_s)]
    overhead_s: f64,
    /// Most concurrent workers (the event source's maximum concurrency, at most 1,250).
    #[arg(long, default_value_t = Model::default().max_concurrency)]
    concurrency: u32,
    /// Files each chunk writes (its partitions).
    #[arg(long, default_value_t = 1)]
    files_per_chunk: u64,
    /// USD per Lambda GB-second.
    #[arg(long, default_value_t = Prices::default().lambda_gb_s)]
    price_lambda_gb_s: f64,
    /// USD per Lambda invocation.
    #[arg(long, default_value_t = Prices::default().lambda_request)]
    price_lambda_request: f64,
    /// USD per S3 GET/HEAD.
    #[arg(long, default_value_t = Prices::default().s3_get)]
    price_s3_get: f64,
    /// USD per S3 PUT.
    #[arg(long, default_value_t = Prices::default().s3_put)]
    price_s3_put: f64,
    /// USD per S3 LIST.
    #[arg(long, default_value_t = Prices::default().s3_list)]
    price_s3_list: f64,
    /// USD per SQS request.
    #[arg(long, default_value_t = Prices::default().sqs_request)]
    price_sqs: f64,
}

impl EstimateArgs {
    fn model(&self) -> anyhow::Result<Model> {
        anyhow::ensure!(
            self.throughput_mb_s > 0.0,
            "--throughput-mb-s must be above 0"
        );
        Ok(Model {
            memory_mb: self.memory_mb,
            bytes_per_s: self.throughput_mb_s * 1e6,
            overhead_s: self.overhead_s,
            max_concurrency: self.concurrency,
        })
    }

    fn prices(&self) -> Prices {
        Prices {
            lambda_gb_s: self.price_lambda_gb_s,
            lambda_request: self.price_lambda_request,
            s3_get: self.price_s3_get,
            s3_put: self.price_s3_put,
            s3_list: self.price_s3_list,
            sqs_request: self.price_sqs,
        }
    }
}

/// Plans the job (listing its input) and prints the plan, then the estimate if asked.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let job = load_spec(&args.spec)?;
    let (env, _) = env_for(spec_uses_s3(&job)).await?;
    let plan = fanout::planner::compute_plan(&env, &job).await?;
    print_plan(&plan, args.chunks);
    if args.estimate {
        let m = &args.model;
        let e = fanout::planner::estimate_chunks(
            &job,
            &plan.chunks,
            plan.summary.objects,
            m.files_per_chunk,
            &m.model()?,
            &m.prices(),
        );
        print_estimate(&plan, &e);
    }
    Ok(ExitCode::SUCCESS)
}
