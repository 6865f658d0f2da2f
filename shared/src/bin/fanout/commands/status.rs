//! `fanout status`: where a job's chunks are.

use std::process::ExitCode;

use fanout::env::Env;
use fanout::queue::DEFAULT_MAX_MESSAGE_BYTES;
use fanout::reducer::StatusQueues;

use crate::EXIT_JOB_FAILED;
use crate::print::print_status;
use crate::work::WorkArgs;

/// Planned / committed / failed / dead-lettered chunks of a job.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    job: WorkArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Chunk queue URL: with the dead-letter queue, chunks left without a message to
    /// deliver them are reported stranded.
    #[arg(long, env = "FANOUT_QUEUE_URL")]
    queue: Option<String>,
    /// Dead-letter queue URL: its depth is reported.
    #[arg(long, env = "FANOUT_DLQ_URL")]
    dead_letter_queue: Option<String>,
}

/// Prints the job's status; exit 1 when a chunk is dead-lettered, lost on its last
/// attempt or stranded (the job cannot finish without a redrive).
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (work, env) = args.job.open().await?;
    let mut queues = StatusQueues::default();
    if args.queue.is_some() || args.dead_letter_queue.is_some() {
        let clients = fanout::env::AwsClients::load().await;
        let open = |url: &Option<String>| {
            url.as_deref()
                .map(|u| Env::sqs_queue(&clients, u, DEFAULT_MAX_MESSAGE_BYTES))
                .transpose()
        };
        queues.chunks = open(&args.queue)?;
        queues.dead_letter = open(&args.dead_letter_queue)?;
    }
    let status = fanout::reducer::job_status_with(
        &env,
        &work,
        &args.job.job_id,
        fanout::clock::now_ms(),
        &queues,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_status(&status);
    }
    Ok(
        if status.dead_lettered.is_empty()
            && status.lost_dead_lettered().next().is_none()
            && status.stranded.is_empty()
        {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_JOB_FAILED)
        },
    )
}
