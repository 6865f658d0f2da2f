//! `fanout bench-plan` (hidden): time the planner on a synthetic listing.

use std::process::ExitCode;

/// Plan 1,000,000 (or N) synthetic objects in memory and print the time (benchmark).
#[derive(clap::Args)]
pub struct Args {
    /// Objects listed.
    #[arg(long, default_value_t = 1_000_000)]
    objects: u64,
}

/// Prints `{"what", "n", "seconds"}` as one JSON line, for `bench/run --synthetic`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (what, secs) = fanout::bench::plan(args.objects).await?;
    println!(
        "{}",
        serde_json::json!({"what": what, "n": args.objects, "seconds": secs})
    );
    Ok(ExitCode::SUCCESS)
}
