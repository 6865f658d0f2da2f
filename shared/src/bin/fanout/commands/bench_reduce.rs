//! `fanout bench-reduce` (hidden): time the reducer on synthetic chunk records.

use std::process::ExitCode;

/// Merge 100,000 (or N) synthetic chunk records into a manifest and print the time (benchmark).
#[derive(clap::Args)]
pub struct Args {
    /// Chunk records.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
}

/// Prints `{"what", "n", "seconds"}` as one JSON line, for `bench/run --synthetic`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (what, secs) = fanout::bench::reduce(args.records).await?;
    println!(
        "{}",
        serde_json::json!({"what": what, "n": args.records, "seconds": secs})
    );
    Ok(ExitCode::SUCCESS)
}
