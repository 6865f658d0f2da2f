//! `fanout inspect`: a finalized job's manifest.

use std::process::ExitCode;

use crate::print::{print_aggregate, print_manifest_summary, print_output_files};
use crate::work::WorkArgs;

/// A job's manifest: files, partitions, counts, schema, aggregates.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    job: WorkArgs,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the manifest: summary, schema, partitions, files per partition and file sizes,
/// and aggregate.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (work, env) = args.job.open().await?;
    let m = fanout::reducer::read_manifest(&env, &work, &args.job.job_id).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_manifest_summary(&m);
    println!("\nschema");
    for f in m.schema.fields() {
        println!(
            "  {:<20} {}{}",
            f.name(),
            f.data_type(),
            if f.is_nullable() { "" } else { " not null" }
        );
    }
    println!("\npartitions ({})", m.partitions.len());
    for p in &m.partitions {
        let path = if p.path.is_empty() {
            "(none)"
        } else {
            p.path.as_str()
        };
        println!(
            "  {path:<40} {:>4} files {:>10} rows {:>12} bytes",
            p.files, p.rows, p.bytes
        );
    }
    print_output_files(&m);
    print_aggregate(&env, &work, &m).await?;
    Ok(ExitCode::SUCCESS)
}
