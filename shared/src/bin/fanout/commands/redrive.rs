//! `fanout redrive`: dead-lettered chunk messages back to the chunk queue.

use fanout::queue::DEFAULT_MAX_MESSAGE_BYTES;
use std::process::ExitCode;
use std::sync::Arc;

use fanout::env::Env;
use fanout::metrics::MemoryMetrics;

/// Move dead-lettered chunk messages back to the chunk queue (after fixing the cause).
#[derive(clap::Args)]
pub struct Args {
    /// Dead-letter queue URL.
    #[arg(long)]
    from: String,
    /// Chunk queue URL.
    #[arg(long)]
    to: String,
}

/// Moves every message and clears their failure records, so `status` shows them pending.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let clients = fanout::env::AwsClients::load().await;
    let env = Env::aws_with_clients(&clients, Arc::new(MemoryMetrics::new()));
    let moved = fanout::fleet::redrive(
        Env::sqs_queue(&clients, &args.from, DEFAULT_MAX_MESSAGE_BYTES)?.as_ref(),
        Env::sqs_queue(&clients, &args.to, DEFAULT_MAX_MESSAGE_BYTES)?.as_ref(),
        Some(&env),
    )
    .await?;
    println!("moved {moved} messages from {} to {}", args.from, args.to);
    Ok(ExitCode::SUCCESS)
}
