//! The real Lambda binaries end to end on moto, through cargo-lambda's Runtime API
//! emulator (tests/py/lambda_e2e.py and, for the event mode, tests/py/lambda_events_e2e.py
//! drive it; infra/test.sh starts moto).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

/// moto's endpoint, cargo-lambda and the built function binaries' folder.
fn peers() -> (
    String,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1"),
        "AWS_ENDPOINT_URL must point at moto: run the suite with infra/test.sh"
    );
    let python = common::python();
    let cargo_lambda = python.parent().unwrap().join("cargo-lambda");
    assert!(
        cargo_lambda.exists(),
        "{} is missing: infra/test.sh installs it",
        cargo_lambda.display()
    );
    let bin_dir = common::fanout_bin().parent().unwrap().to_path_buf();
    for f in ["planner", "worker", "reducer"] {
        assert!(
            bin_dir.join(f).exists(),
            "{f} binary missing: `cargo build --workspace --bins`"
        );
    }
    (endpoint, python, cargo_lambda, bin_dir)
}

#[test]
fn s3_event_to_planner_worker_and_reducer_binaries_matches_the_embedded_run() {
    let (endpoint, python, cargo_lambda, bin_dir) = peers();
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_ok(
        Command::new(&python)
            .arg(common::repo().join("tests/py/lambda_e2e.py"))
            .arg(&endpoint)
            .arg(&bin_dir)
            .arg(&cargo_lambda)
            .arg(dir.path()),
    );
    assert!(out.contains("byte-identical"), "{out}");
}

#[test]
fn event_mode_drains_uploads_into_jobs_that_ingest_every_row_exactly_once() {
    let (endpoint, python, cargo_lambda, bin_dir) = peers();
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_ok(
        Command::new(&python)
            .arg(common::repo().join("tests/py/lambda_events_e2e.py"))
            .arg(&endpoint)
            .arg(&bin_dir)
            .arg(&cargo_lambda)
            .arg(dir.path()),
    );
    assert!(out.contains("each exactly once"), "{out}");
}
