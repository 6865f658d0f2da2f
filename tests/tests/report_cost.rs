//! `fanout report` rendered in headless Chromium, the cost estimate against the measured
//! cost, and incremental runs (`--since-last`), all through the real binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{fanout_bin, python, repo, run_ok};
use serde_json::{Value, json};

/// The orders job without the compaction stage: `plan --estimate` prices the chunks
/// only, and the report's chunk timeline is what these tests check (the stage's figures
/// are checked in tests/tests/compaction.rs).
fn generate(root: &Path) {
    run_ok(
        Command::new(python())
            .arg(repo().join("tests/py/orders_e2e.py"))
            .arg("generate")
            .arg(root),
    );
    let job = root.join("job.yaml");
    let text = std::fs::read_to_string(&job).unwrap();
    assert!(text.contains("  row_group_rows: 2000\n"), "{text}");
    std::fs::write(
        &job,
        text.replace(
            "  row_group_rows: 2000\n",
            "  row_group_rows: 2000\n  target_file_size: off\n",
        ),
    )
    .unwrap();
}

/// Generates the orders data under `root`, runs its job on two workers, returns the job id.
fn generate_and_run(root: &Path) -> String {
    generate(root);
    run_ok(
        Command::new(fanout_bin())
            .args(["run", "--workers", "2"])
            .arg(root.join("job.yaml")),
    );
    jobs(root).pop().unwrap()
}

fn jobs(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("work/jobs"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn manifest(root: &Path, job: &str) -> Value {
    serde_json::from_slice(
        &std::fs::read(root.join(format!("work/jobs/{job}/_manifest.json"))).unwrap(),
    )
    .unwrap()
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The Parquet files below an output folder: their sizes and the files per partition
/// folder, each sorted.
struct DiskFiles {
    sizes: Vec<u64>,
    per_partition: Vec<u64>,
}

impl DiskFiles {
    fn of(out: &Path) -> Self {
        let mut folders = std::collections::BTreeMap::<String, u64>::new();
        let mut sizes = Vec::new();
        for (path, bytes) in common::snapshot(out) {
            assert!(path.ends_with(".parquet"), "{path}");
            let folder = path.rsplit_once('/').map_or("", |(f, _)| f).to_string();
            *folders.entry(folder).or_default() += 1;
            sizes.push(bytes.len() as u64);
        }
        sizes.sort_unstable();
        let mut per_partition: Vec<u64> = folders.into_values().collect();
        per_partition.sort_unstable();
        assert!(!sizes.is_empty());
        DiskFiles {
            sizes,
            per_partition,
        }
    }
}

fn median(sorted: &[u64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2] as f64
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0
    }
}

/// Bytes as the page's `fmtBytes` writes them (decimal units, one decimal), with
/// JavaScript's `toFixed` rounding: an exact tie (a quotient ending in .x25 or .x75 — the
/// only ties a double holds at one decimal) goes up, where Rust's formatting rounds to even.
fn page_bytes(b: f64) -> String {
    let one_decimal = |x: f64| {
        let tie = (x * 4.0).fract() == 0.0 && ((x * 4.0) as u64) % 2 == 1;
        format!("{:.1}", if tie { x + 0.05 } else { x })
    };
    if b >= 1e6 {
        format!("{} MB", one_decimal(b / 1e6))
    } else if b >= 1e3 {
        format!("{} kB", one_decimal(b / 1e3))
    } else {
        format!("{} B", b.round())
    }
}

#[test]
fn the_report_renders_in_chromium_with_the_jobs_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let job = generate_and_run(root);
    let work = format!("{}/work/", root.display());
    let html = root.join("report.html");
    run_ok(
        Command::new(fanout_bin())
            .args(["report", &job, "--work", &work, "-o"])
            .arg(&html),
    );
    let data: Value = serde_json::from_str(&run_ok(
        Command::new(fanout_bin()).args(["report", &job, "--work", &work, "--json"]),
    ))
    .unwrap();
    let m = manifest(root, &job);

    // The data agrees with the manifest.
    let t = &data["totals"];
    for k in ["read", "valid", "rejected", "written"] {
        assert_eq!(t[format!("rows_{k}")], m["counts"][k], "{k}");
    }
    assert_eq!(t["chunks"], m["chunks"]);
    assert_eq!(
        t["files"].as_u64().unwrap() as usize,
        m["files"].as_array().unwrap().len()
    );
    assert_eq!(
        data["partitions"].as_array().unwrap().len(),
        m["partitions"].as_array().unwrap().len()
    );
    assert_eq!(data["cost"], m["cost"]);
    let workers: std::collections::BTreeSet<&str> = data["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["worker"].as_str().unwrap())
        .collect();
    assert!(workers.len() <= 2 && !workers.is_empty(), "{workers:?}");
    let rejected: u64 = data["rejects"]["by_rule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(rejected, m["counts"]["rejected"].as_u64().unwrap());
    assert!(
        !data["rejects"]["by_rule"][0]["examples"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Files per partition and file sizes, against the Parquet files on disk.
    let disk = DiskFiles::of(&root.join("out"));
    let fs = &data["file_sizes"][0];
    assert_eq!(fs["stage"], "output files (manifest)");
    assert_eq!(fs["files"].as_u64().unwrap(), disk.sizes.len() as u64);
    assert_eq!(
        fs["partitions"].as_u64().unwrap(),
        disk.per_partition.len() as u64
    );
    assert_eq!(
        fs["total_bytes"].as_u64().unwrap(),
        disk.sizes.iter().sum::<u64>()
    );
    let per = &fs["files_per_partition"];
    assert_eq!(per["min"].as_u64().unwrap(), disk.per_partition[0]);
    assert_eq!(per["median"].as_f64().unwrap(), median(&disk.per_partition));
    let bytes = &fs["file_bytes"];
    assert_eq!(bytes["min"].as_u64().unwrap(), disk.sizes[0]);
    assert_eq!(bytes["median"].as_f64().unwrap(), median(&disk.sizes));
    assert_eq!(
        bytes["max"].as_u64().unwrap(),
        disk.sizes[disk.sizes.len() - 1]
    );
    let small = disk.sizes.iter().filter(|b| **b < 1 << 20).count();
    assert_eq!(fs["small_files"].as_u64().unwrap(), small as u64);

    // What the browser must show: stragglers as the page defines them (over twice the median).
    let mut elapsed: Vec<u64> = data["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["elapsed_ms"].as_u64().unwrap())
        .collect();
    elapsed.sort_unstable();
    let n = elapsed.len();
    let median_ms = median(&elapsed);
    let stragglers = elapsed
        .iter()
        .filter(|e| **e as f64 > 2.0 * median_ms)
        .count();
    let expect = json!({
        "chunks": n,
        "stragglers": stragglers,
        "numbers": [
            thousands(m["counts"]["read"].as_u64().unwrap()),
            thousands(m["counts"]["written"].as_u64().unwrap()),
            thousands(m["counts"]["rejected"].as_u64().unwrap()),
        ],
        "reject_rules": data["rejects"]["by_rule"].as_array().unwrap().iter()
            .map(|r| r["rule"].clone()).take(3).collect::<Vec<_>>(),
        "partitions": m["partitions"].as_array().unwrap().len(),
        "file_sizes": {
            "files": thousands(disk.sizes.len() as u64),
            "partitions": thousands(disk.per_partition.len() as u64),
            "files-per-partition": format!(
                "{} / {} / {}",
                disk.per_partition[0],
                median(&disk.per_partition),
                disk.per_partition[disk.per_partition.len() - 1]
            ),
            "size-min": page_bytes(disk.sizes[0] as f64),
            "size-median": page_bytes(median(&disk.sizes)),
            "size-max": page_bytes(disk.sizes[disk.sizes.len() - 1] as f64),
            "small-files": format!("{} under 1 MiB", thousands(small as u64)),
        },
    });
    let expect_path = root.join("expect.json");
    std::fs::write(&expect_path, expect.to_string()).unwrap();
    let verdict = run_ok(
        Command::new(python())
            .arg(repo().join("tests/py/report_check.py"))
            .arg(&html)
            .arg("--expect")
            .arg(&expect_path)
            .arg("--screenshot")
            .arg(root.join("report.png")),
    );
    assert!(verdict.contains("every check passed"), "{verdict}");
}

#[test]
fn the_estimate_matches_the_measured_requests() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let job = generate_and_run(root);
    let m = manifest(root, &job);
    let cost = &m["cost"];
    let measured = &cost["measured"];
    let chunks = m["chunks"].as_u64().unwrap();
    // Planning cannot know how many partitions a chunk's rows fall into: tell it.
    let files = m["files"].as_array().unwrap().len() as u64;
    let per_chunk = (files as f64 / chunks as f64).round() as u64;
    let out = run_ok(
        Command::new(fanout_bin())
            .args([
                "plan",
                "--estimate",
                "--files-per-chunk",
                &per_chunk.to_string(),
            ])
            .arg(root.join("job.yaml")),
    );
    let line = |label: &str| -> Vec<f64> {
        let l = out
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"));
        l.split_whitespace()
            .filter_map(|w| w.trim_start_matches('$').parse::<f64>().ok())
            .collect()
    };
    let lambda = line("Lambda");
    let s3 = line("S3 requests");
    let sqs = line("SQS requests");
    let near = |what: &str, est: f64, got: f64, tol: f64| {
        assert!(
            (est - got).abs() <= tol * got.max(1.0),
            "{what}: estimated {est}, measured {got}\n{out}"
        );
    };
    near(
        "Lambda invocations",
        lambda[1],
        measured["lambda_requests"].as_f64().unwrap(),
        0.0,
    );
    near(
        "SQS requests",
        sqs[0],
        measured["sqs_requests"].as_f64().unwrap(),
        0.0,
    );
    near("S3 GET", s3[0], measured["s3_get"].as_f64().unwrap(), 0.15);
    near("S3 PUT", s3[1], measured["s3_put"].as_f64().unwrap(), 0.15);
    near("S3 LIST", s3[2], measured["s3_list"].as_f64().unwrap(), 0.0);
    // The manifest keeps the planning estimate beside the measurement, priced alike.
    let est = &cost["estimate"];
    assert_eq!(est["lambda_requests"], measured["lambda_requests"]);
    let total = |p: &Value| p["usd"]["total"].as_f64().unwrap();
    let parts = |p: &Value| {
        p["usd"]["lambda"].as_f64().unwrap()
            + p["usd"]["s3"].as_f64().unwrap()
            + p["usd"]["sqs"].as_f64().unwrap()
    };
    assert!((total(measured) - parts(measured)).abs() < 1e-12);
    assert!(total(measured) > 0.0 && total(est) > 0.0);
    // Measured Lambda time is the workers' busy time at the configured memory.
    let busy_s: f64 = std::fs::read_dir(root.join(format!("work/jobs/{job}/chunks")))
        .unwrap()
        .map(|e| {
            let r: Value =
                serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
            r["elapsed_ms"].as_f64().unwrap() / 1000.0
        })
        .sum();
    let gb = cost["memory_mb"].as_f64().unwrap() / 1024.0;
    assert!(measured["lambda_gb_s"].as_f64().unwrap() >= gb * busy_s);
}

#[test]
fn since_last_processes_only_what_no_earlier_job_committed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root);
    let job_yaml = root.join("job.yaml");
    let first = run_ok(
        Command::new(fanout_bin())
            .args(["run", "--since-last"])
            .arg(&job_yaml),
    );
    assert!(first.contains("outcome        succeeded"), "{first}");
    let first_job = jobs(root).pop().unwrap();
    let before = manifest(root, &first_job)["inputs"]
        .as_array()
        .unwrap()
        .len();
    assert!(before > 5);

    // Nothing new: no job.
    let again = run_ok(
        Command::new(fanout_bin())
            .args(["run", "--since-last"])
            .arg(&job_yaml),
    );
    assert!(again.contains("nothing new since the last run"), "{again}");
    assert_eq!(jobs(root).len(), 1);

    // One new object and one changed object: only those are read.
    let small = root.join("in/small");
    std::fs::copy(small.join("part-0.csv"), small.join("part-new.csv")).unwrap();
    let changed = small.join("part-1.csv");
    let mut text = std::fs::read_to_string(&changed).unwrap();
    let last = text.lines().last().unwrap().to_string();
    text.push_str(&format!("{last}\n"));
    std::fs::write(&changed, text).unwrap();
    let third = run_ok(
        Command::new(fanout_bin())
            .args(["run", "--since-last"])
            .arg(&job_yaml),
    );
    assert!(third.contains("2 new or changed object(s)"), "{third}");
    let all = jobs(root);
    assert_eq!(all.len(), 2, "{all:?}");
    let new_job = all.into_iter().find(|j| *j != first_job).unwrap();
    let m = manifest(root, &new_job);
    let keys: Vec<&str> = m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["small/part-1.csv", "small/part-new.csv"]);
    // part-0 (150 records) again under a new name, part-1 with one record more.
    assert_eq!(m["counts"]["read"].as_u64().unwrap(), 150 + 151);
}

#[tokio::test]
async fn a_finalize_run_again_does_not_count_the_jobs_cost_twice() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let job = generate_and_run(root);
    let work =
        fanout::location::Location::parse(&root.join("work/").display().to_string()).unwrap();
    let metrics = std::sync::Arc::new(fanout::metrics::MemoryMetrics::new());
    let env = fanout::env::Env::embedded(metrics.clone());
    let before = manifest(root, &job);
    fanout::reducer::finalize_job(
        &env,
        &work,
        &fanout::ids::JobId::parse(job.as_str()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        before,
        manifest(root, &job),
        "a re-finalize rewrites the same manifest"
    );
    let counted = metrics.snapshot();
    for name in ["JobCost", "JobLambdaGbSeconds", "JobDuration"] {
        assert!(
            !counted.contains_key(name),
            "{name} counted again: {counted:?}"
        );
    }
    // Without `_SUCCESS` (a finalize that failed after writing the manifest) it counts.
    std::fs::remove_file(root.join(format!("work/jobs/{job}/_SUCCESS"))).unwrap();
    fanout::reducer::finalize_job(
        &env,
        &work,
        &fanout::ids::JobId::parse(job.as_str()).unwrap(),
    )
    .await
    .unwrap();
    let counted = metrics.snapshot();
    for name in ["JobCost", "JobLambdaGbSeconds", "JobDuration"] {
        assert_eq!(
            counted.get(name).map(|s| s.count),
            Some(1),
            "{name}: {counted:?}"
        );
    }
}
