//! The `fanout` command line: run, validate, plan, status, inspect, sample-data.
//!
//! Each subcommand is a module of [`commands`] with its arguments (`Args`) and one `run`;
//! [`work`] holds what several share (the job and work location, the environment),
//! [`print`] the human-readable output and [`progress`] the progress of a run.

mod commands;
mod print;
mod progress;
mod work;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{
    bench_plan, bench_reduce, gc, inspect, plan, redrive, report, run, sample_data, status,
    validate, worker,
};

/// Fan-out ETL: raw CSV / JSON lines / Parquet in, validated partitioned Parquet out.
#[derive(Parser)]
#[command(name = "fanout", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The variants' help texts are the `Args` structs' doc comments, beside each command.
#[derive(Subcommand)]
enum Command {
    Run(run::Args),
    Report(report::Args),
    #[command(hide = true)]
    BenchPlan(bench_plan::Args),
    #[command(hide = true)]
    BenchReduce(bench_reduce::Args),
    Worker(worker::Args),
    Gc(gc::Args),
    Redrive(redrive::Args),
    Validate(validate::Args),
    Plan(plan::Args),
    Status(status::Args),
    Inspect(inspect::Args),
    SampleData(sample_data::Args),
}

/// Exit code of a failed job.
const EXIT_JOB_FAILED: u8 = 1;
/// Exit code of a refused spec or bad usage.
const EXIT_INVALID: u8 = 2;
/// Exit code of a run with nothing to process: no input object matched.
const EXIT_NO_INPUT: u8 = 3;
/// Exit code of a `--since-last` run refused because another run holds the name's lease.
const EXIT_LEASE_HELD: u8 = 4;

fn main() -> ExitCode {
    fanout::alloc::limit_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_JOB_FAILED);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code_of(&e))
        }
    }
}

/// The exit code of a command's error: 2 for a refused spec or setting, 3 for nothing to
/// process, 4 for a lease held by another run, 1 otherwise.
fn exit_code_of(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<fanout::spec::SpecFileError>().is_some() {
        return EXIT_INVALID;
    }
    match e.downcast_ref::<fanout::Error>() {
        Some(fanout::Error::Spec(_) | fanout::Error::Config(_)) => EXIT_INVALID,
        Some(fanout::Error::NoInput { .. }) => EXIT_NO_INPUT,
        Some(fanout::Error::LeaseHeld { .. }) => EXIT_LEASE_HELD,
        _ => EXIT_JOB_FAILED,
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::BenchPlan(args) => bench_plan::run(args).await,
        Command::BenchReduce(args) => bench_reduce::run(args).await,
        Command::Worker(args) => worker::run(args).await,
        Command::Gc(args) => gc::run(args).await,
        Command::Redrive(args) => redrive::run(args).await,
        Command::Validate(args) => validate::run(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Inspect(args) => inspect::run(args).await,
        Command::SampleData(args) => sample_data::run(args).await,
    }
}
