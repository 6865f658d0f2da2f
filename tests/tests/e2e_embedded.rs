//! `fanout run` end to end on the embedded default, checked by an independent reader.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{fanout_bin, python, repo, run_ok, snapshot};

fn generate(root: &std::path::Path) {
    run_ok(
        Command::new(python())
            .arg(repo().join("tests/py/orders_e2e.py"))
            .arg("generate")
            .arg(root),
    );
}

fn check(root: &std::path::Path) -> String {
    run_ok(
        Command::new(python())
            .arg(repo().join("tests/py/orders_e2e.py"))
            .arg("check")
            .arg(root),
    )
}

#[test]
fn output_equals_the_input_minus_rejects_value_for_value() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root);
    let out = run_ok(
        Command::new(fanout_bin())
            .args(["run", "--workers", "2"])
            .arg(root.join("job.yaml")),
    );
    assert!(out.contains("outcome        succeeded"), "{out}");
    let verdict = check(root);
    assert!(verdict.starts_with("OK:"), "{verdict}");
}

#[test]
fn two_runs_write_byte_identical_files_and_a_rerun_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root);
    let job = root.join("job.yaml");
    run_ok(
        Command::new(fanout_bin())
            .args(["run", "--workers", "2"])
            .arg(&job),
    );
    let first_out = snapshot(&root.join("out"));
    let first_rejects = snapshot(&root.join("rejects"));
    let first_work = snapshot(&root.join("work"));
    assert!(
        first_out.len() > 20,
        "expected many output files, got {}",
        first_out.len()
    );

    // Re-run in place: every chunk is committed, nothing is processed, same manifest.
    let again = run_ok(
        Command::new(fanout_bin())
            .args(["run", "--workers", "2"])
            .arg(&job),
    );
    assert!(again.contains(" 0 run now"), "{again}");
    let work_again = snapshot(&root.join("work"));
    let manifest = |s: &std::collections::BTreeMap<String, Vec<u8>>| {
        s.iter()
            .find(|(k, _)| k.ends_with("_manifest.json"))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(manifest(&first_work), manifest(&work_again));

    // From scratch, with one worker instead of two: the same bytes.
    for d in ["out", "rejects", "work"] {
        std::fs::remove_dir_all(root.join(d)).unwrap();
    }
    run_ok(
        Command::new(fanout_bin())
            .args(["run", "--workers", "1"])
            .arg(&job),
    );
    assert_eq!(
        first_out,
        snapshot(&root.join("out")),
        "output files differ between runs"
    );
    assert_eq!(
        first_rejects,
        snapshot(&root.join("rejects")),
        "rejects differ between runs"
    );
    // The same manifest but for the measured cost, which prices the chunks' run times.
    let without_cost = |bytes: Vec<u8>| {
        let mut m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let cost = m.as_object_mut().unwrap().remove("cost");
        assert!(cost.is_some_and(|c| c["measured"]["lambda_gb_s"].as_f64().unwrap() > 0.0));
        m
    };
    assert_eq!(
        without_cost(manifest(&first_work)),
        without_cost(manifest(&snapshot(&root.join("work"))))
    );
}

#[test]
fn the_cli_reports_status_and_inspects_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root);
    let job = root.join("job.yaml");
    let plan = Plan::parse(&run_ok(Command::new(fanout_bin()).arg("plan").arg(&job)));
    let all = Plan::parse(&run_ok(
        Command::new(fanout_bin())
            .args(["plan", "--chunks"])
            .arg(&job),
    ));
    // The plan covers every input object but the `_SUCCESS` marker, which is skipped;
    // the short listing stops at 20 chunks.
    let inputs = common::snapshot(&root.join("in"));
    assert!(inputs.contains_key("_SUCCESS"));
    assert_eq!(plan.objects, inputs.len() as u64 - 1);
    let shown = plan.chunks.min(20);
    assert_eq!(plan.listed, (0..shown).collect::<Vec<_>>(), "{plan:?}");
    assert_eq!(plan.more, Some(plan.chunks - shown).filter(|n| *n > 0));
    assert_eq!(
        (all.job_id.as_str(), all.objects, all.chunks, all.more),
        (plan.job_id.as_str(), plan.objects, plan.chunks, None)
    );
    assert_eq!(all.listed, (0..plan.chunks).collect::<Vec<_>>());
    let valid = run_ok(Command::new(fanout_bin()).arg("validate").arg(&job));
    assert!(
        valid.contains("valid") && valid.contains("order_month: Date32"),
        "{valid}"
    );
    let out = run_ok(Command::new(fanout_bin()).args(["run"]).arg(&job));
    let job_id = out.split_whitespace().nth(1).unwrap().to_string();
    let work = root.join("work").display().to_string();
    let status = run_ok(Command::new(fanout_bin()).args(["status", &job_id, "--work", &work]));
    assert!(status.contains("outcome        succeeded"), "{status}");
    let inspect = run_ok(Command::new(fanout_bin()).args(["inspect", &job_id, "--work", &work]));
    assert!(
        inspect.contains("order_month=2024-01-01")
            && inspect.contains("aggregate by [region, status]"),
        "{inspect}"
    );
    check_file_sizes(&inspect, &root.join("out"));
    let json =
        run_ok(Command::new(fanout_bin()).args(["inspect", &job_id, "--work", &work, "--json"]));
    let m: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(m["outcome"], "succeeded");
    // The run did what the plan said.
    assert_eq!(
        (
            m["job_id"].as_str(),
            m["objects"].as_u64(),
            m["chunks"].as_u64()
        ),
        (
            Some(plan.job_id.as_str()),
            Some(plan.objects),
            Some(plan.chunks)
        )
    );
}

/// `inspect`'s files per partition and file sizes, against the Parquet files on disk
/// (grouped by folder, sorted and counted here).
fn check_file_sizes(inspect: &str, out: &std::path::Path) {
    let mut per_partition: std::collections::BTreeMap<String, u64> = Default::default();
    let mut sizes: Vec<u64> = Vec::new();
    for (path, bytes) in common::snapshot(out) {
        assert!(path.ends_with(".parquet"), "{path}");
        let folder = path.rsplit_once('/').map_or("", |(f, _)| f).to_string();
        *per_partition.entry(folder).or_default() += 1;
        sizes.push(bytes.len() as u64);
    }
    sizes.sort_unstable();
    let mut counts: Vec<u64> = per_partition.values().copied().collect();
    counts.sort_unstable();
    let median = |v: &[u64]| {
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2] as f64
        } else {
            (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
        }
    };
    // The sample job's chunks write one file per chunk and month, and the compaction
    // stage (default 128 MiB) merges each month's into one: 24 months, 24 files, and
    // before compaction more.
    assert!(sizes.len() == per_partition.len() && per_partition.len() == 24);
    assert!(
        inspect.contains("files (chunk files, before compaction)"),
        "{inspect}"
    );
    // As the CLI prints bytes: decimal units, rounded to the byte first.
    let kb = |b: f64| {
        let b = b.round();
        match b {
            b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
            b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
            b => format!("{b} B"),
        }
    };
    assert!(
        sizes[sizes.len() - 1] < 1_000_000,
        "the sample's files are small"
    );
    let files_per_partition = format!(
        "files per partition  min {}  median {}  max {}",
        counts[0],
        median(&counts),
        counts[counts.len() - 1]
    );
    for want in [
        format!(
            "files                {} in {} partitions",
            sizes.len(),
            per_partition.len()
        ),
        files_per_partition,
        format!("file size            min {}  p10 ", kb(sizes[0] as f64)),
        format!("  median {}  p90 ", kb(median(&sizes))),
        format!("  max {}\n", kb(sizes[sizes.len() - 1] as f64)),
        format!("small files          {0} of {0} under 1 MiB", sizes.len()),
    ] {
        assert!(inspect.contains(&want), "no `{want}` in:\n{inspect}");
    }
}

/// What `fanout plan` printed.
#[derive(Debug)]
struct Plan {
    job_id: String,
    objects: u64,
    chunks: u64,
    /// Indexes of the chunks listed one per line.
    listed: Vec<u64>,
    /// The count of chunks the listing left out.
    more: Option<u64>,
}

impl Plan {
    fn parse(text: &str) -> Plan {
        let field = |name: &str| -> u64 {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no `{name}` line in:\n{text}"));
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let job_id = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("job "))
            .unwrap_or_else(|| panic!("no job line in:\n{text}"))
            .to_string();
        // A chunk line: its index, its id (20 hex digits), its size, its pieces.
        let listed = text
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let index = words.next()?.parse().ok()?;
                let id = words.next()?;
                (id.len() == 20 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(index)
            })
            .collect();
        let more = text
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("… "))
            .map(|l| l.split_whitespace().next().unwrap().parse().unwrap());
        Plan {
            job_id,
            objects: field("objects"),
            chunks: field("chunks"),
            listed,
            more,
        }
    }
}

#[test]
fn a_bad_spec_is_refused_before_any_work_with_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root);
    let text = std::fs::read_to_string(root.join("job.yaml"))
        .unwrap()
        .replace("partition_by: [order_month]", "partition_by: [order_mnth]");
    std::fs::write(root.join("bad.yaml"), text).unwrap();
    let out = Command::new(fanout_bin())
        .arg("run")
        .arg(root.join("bad.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`output.partition_by[0]`")
            && err.contains("order_mnth")
            && err.contains("bad.yaml:"),
        "{err}"
    );
    assert!(
        !root.join("work").exists() && !root.join("out").exists(),
        "work started despite a bad spec"
    );
}

#[test]
fn a_job_over_no_input_plans_no_job_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root);
    // The job over an empty folder: no object to read, so no job (a "succeeded" job that
    // read nothing would pass for a load that happened).
    std::fs::create_dir(root.join("empty")).unwrap();
    let text = std::fs::read_to_string(root.join("job.yaml"))
        .unwrap()
        .replace("/in/", "/empty/")
        .replace("/work/", "/work-empty/");
    std::fs::write(root.join("empty.yaml"), text).unwrap();
    let out = Command::new(fanout_bin())
        .arg("run")
        .arg(root.join("empty.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("no input object to process under")
            && stderr.contains("no job was planned"),
        "{stderr}"
    );
    assert!(!root.join("work-empty/jobs").exists());
}

#[test]
fn a_job_id_that_would_leave_its_prefix_is_refused_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let work = format!("{}/work/", dir.path().display());
    for args in [
        vec!["status", "a/b", "--work", &work],
        vec!["gc", "..", "--work", &work],
        vec!["inspect", "../x", "--work", &work],
    ] {
        let out = Command::new(fanout_bin()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not a job id"), "{args:?}: {stderr}");
    }
    let out = Command::new(fanout_bin())
        .args(["run", "--job-id", "a/b"])
        .arg(repo().join("examples/orders.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a job id"), "{stderr}");
    assert!(!dir.path().join("work").exists(), "nothing was written");
}

#[test]
fn an_unreadable_or_unparsable_spec_and_a_bad_worker_memory_exit_2_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let broken = root.join("broken.yaml");
    std::fs::write(&broken, "name: [unclosed\n").unwrap();
    for spec in [broken, root.join("missing.yaml")] {
        let out = Command::new(fanout_bin())
            .arg("run")
            .arg(&spec)
            .current_dir(root)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", spec.display());
        assert!(stderr.contains(&*spec.display().to_string()), "{stderr}");
    }
    let out = Command::new(fanout_bin())
        .arg("run")
        .arg(repo().join("examples/orders.yaml"))
        .env("FANOUT_WORKER_MEMORY_MB", "lots")
        .current_dir(root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("FANOUT_WORKER_MEMORY_MB=\"lots\""),
        "{stderr}"
    );
    assert!(
        !root.join("out").exists(),
        "work started despite a bad setting"
    );
}

#[test]
fn gc_of_an_abandoned_job_then_the_same_spec_runs_every_chunk_again() {
    // A job whose chunks committed but that was never finalized (its reducer never ran),
    // collected as abandoned and run again as RUNBOOK.md advises: the rerun must run
    // every chunk, not skip them on commit records whose files gc deleted.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root);
    let job = root.join("job.yaml");
    let out = run_ok(Command::new(fanout_bin()).args(["run"]).arg(&job));
    let job_id = out.split_whitespace().nth(1).unwrap().to_string();
    let job_dir = root.join("work/jobs").join(&job_id);
    for never_written in [
        "_manifest.json",
        "_SUCCESS",
        "aggregates.json",
        "aggregates.parquet",
    ] {
        let _ = std::fs::remove_file(job_dir.join(never_written));
    }
    // Nor its ingestion ledger entry, which finalize writes first (a job the ledger
    // records is never collected as abandoned).
    std::fs::remove_dir_all(root.join("work/ledger")).unwrap();
    let work = root.join("work").display().to_string();
    let gc =
        run_ok(Command::new(fanout_bin()).args(["gc", &job_id, "--abandoned", "--work", &work]));
    assert!(gc.contains("deleted record  jobs/"), "{gc}");
    assert!(
        std::fs::read_dir(job_dir.join("chunks")).map_or(true, |mut d| d.next().is_none()),
        "commit records survived the gc"
    );
    assert!(
        snapshot(&root.join("out")).is_empty(),
        "output files survived the gc"
    );

    let again = run_ok(Command::new(fanout_bin()).args(["run"]).arg(&job));
    // `job <id>  (<n> chunks, <m> run now, …)`: every chunk ran again.
    let words: Vec<&str> = again.split_whitespace().collect();
    assert_eq!(words[1], job_id, "{again}");
    let chunks = words[2].trim_start_matches('(');
    assert_eq!(words[4], chunks, "not every chunk ran again: {again}");
    assert!(again.contains("outcome        succeeded"), "{again}");
    let verdict = check(root);
    assert!(verdict.starts_with("OK:"), "{verdict}");
}

#[test]
fn validate_refuses_sql_that_is_not_deterministic_naming_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(root);
    let text = std::fs::read_to_string(root.join("job.yaml")).unwrap();
    let from = "SELECT o.*, c.region,";
    assert!(text.contains(from), "{text}");
    for (call, function) in [
        ("random() AS r,", "random"),
        ("now() AS loaded_at,", "now"),
        ("current_date AS d,", "current_date"),
        ("uuid() AS id,", "uuid"),
    ] {
        let spec = root.join("volatile.yaml");
        std::fs::write(&spec, text.replace(from, &format!("{from} {call}"))).unwrap();
        let out = Command::new(fanout_bin())
            .arg("validate")
            .arg(&spec)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{call}: {stderr}");
        assert!(
            stderr.contains("`transform.sql`") && stderr.contains(&format!("`{function}`")),
            "{call}: {stderr}"
        );
        let run = Command::new(fanout_bin())
            .arg("run")
            .arg(&spec)
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(2), "{call}: run must refuse it too");
    }
    assert!(!root.join("work").exists(), "nothing was planned");
    let valid = run_ok(
        Command::new(fanout_bin())
            .arg("validate")
            .arg(root.join("job.yaml")),
    );
    assert!(valid.contains("valid"), "{valid}");
}
