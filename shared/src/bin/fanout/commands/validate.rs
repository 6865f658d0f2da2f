//! `fanout validate`: check a spec without running anything.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::work::{env_for, load_spec, spec_uses_s3};

/// Check a spec (fields, lookups, SQL) without running anything.
#[derive(clap::Args)]
pub struct Args {
    /// Job spec.
    spec: PathBuf,
}

/// Validates the spec, its lookups and SQL; prints the rows the job would write.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = args.spec;
    let job = load_spec(&spec)?;
    let (env, _) = env_for(spec_uses_s3(&job)).await?;
    let out = fanout::lookup::preflight(&env, &job, &spec.display().to_string()).await?;
    println!("{}: valid", spec.display());
    println!(
        "  input   {} ({:?}, {} columns, {} rules)",
        job.input.location,
        job.input.format,
        job.input.schema.fields().len(),
        job.rules.len()
    );
    println!(
        "  output  {} partitioned by [{}]",
        job.output.location,
        job.output.partition_by.join(", ")
    );
    let cols: Vec<String> = out
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    println!("  rows    {}", cols.join(", "));
    Ok(ExitCode::SUCCESS)
}
