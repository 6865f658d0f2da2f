//! The real Lambda binaries end to end on moto, through cargo-lambda's Runtime API
//! emulator (tests/py/lambda_e2e.py drives it; infra/test.sh starts moto).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

#[test]
fn s3_event_to_planner_worker_and_reducer_binaries_matches_the_embedded_run() {
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
