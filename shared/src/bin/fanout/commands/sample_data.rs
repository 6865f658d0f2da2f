//! `fanout sample-data`: the sample job's input.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Write the deterministic sample data used by `examples/orders.yaml`.
#[derive(clap::Args)]
pub struct Args {
    /// Target directory.
    #[arg(default_value = "examples/data")]
    dir: PathBuf,
    /// Approximate number of orders.
    #[arg(long, default_value_t = 80_000)]
    rows: u64,
    /// Overwrite existing data.
    #[arg(long)]
    force: bool,
}

/// Writes the data with a fixed seed, unless it is there already and `--force` is absent.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.dir;
    if dir.join("orders").exists() && !args.force {
        println!(
            "{} already holds sample data (use --force to rewrite it)",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let stats = fanout::sample::write_sample(&dir, args.rows, 42)
        .with_context(|| format!("writing sample data to {}", dir.display()))?;
    println!(
        "wrote {} orders ({} deliberately bad) in {:.1} MB under {}",
        stats.orders,
        stats.bad,
        stats.bytes as f64 / 1e6,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
