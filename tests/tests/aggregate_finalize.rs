//! Finalize of a large aggregate, on the embedded pipeline in-process: 200,000 groups over
//! several chunks finalize to a manifest that references `aggregates.parquet` (no JSON
//! copy above the threshold), with every group exact against a straightforward computation
//! and against pyarrow reading the table; the table's bytes do not depend on how many
//! workers ran the chunks; the manifest's size does not depend on the number of groups; a
//! small aggregate still gets `aggregates.json`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Decimal128Array, Float64Array, Int64Array};
use fanout::env::Env;
use fanout::job::Manifest;
use fanout::metrics::MemoryMetrics;
use fanout::reducer::DEFAULT_AGGREGATE_JSON_MAX_ROWS;
use fanout::runner::{RunOptions, run_local};
use fanout::spec::JobSpec;

const ROWS: u64 = 400_000;

/// Row `i`'s group: spread so that every chunk holds keys from the whole range, and
/// always seven digits, so inputs of any number of groups have the same size and chunks.
fn key(i: u64, groups: u64) -> u64 {
    1_000_000 + (i * 7919) % groups
}

/// `root/in/data.csv`: `rows` rows (k, v, d, f) over `groups` groups.
fn write_input(root: &Path, rows: u64, groups: u64) {
    std::fs::create_dir_all(root.join("in")).unwrap();
    let mut csv = String::from("k,v,d,f\n");
    for i in 0..rows {
        let (v, d, f) = values(i);
        csv.push_str(&format!(
            "{},{v},{}.{:02},{f}\n",
            key(i, groups),
            d / 100,
            d % 100
        ));
    }
    std::fs::write(root.join("in/data.csv"), csv).unwrap();
}

/// Row `i`'s v (int64), d (decimal(10,2), unscaled) and f (float64, text as written).
fn values(i: u64) -> (i64, i64, String) {
    let v = (i % 1000) as i64 - 500;
    let d = ((i * 37) % 10_000) as i64;
    (v, d, format!("{}.{}", i % 17, i % 10))
}

fn spec(root: &Path, work: &str) -> JobSpec {
    let r = root.display();
    let text = format!(
        r#"
name: many-groups
work: {r}/{work}/
input:
  location: {r}/in/
  format: csv
  schema:
    - {{ name: k, type: int64, nullable: false }}
    - {{ name: v, type: int64 }}
    - {{ name: d, type: "decimal(10,2)" }}
    - {{ name: f, type: float64 }}
chunking: {{ target_size: 1MiB }}
output: {{ location: {r}/out-{work}/ }}
rejects: {{ location: {r}/rejects/, max_ratio: 0 }}
aggregate:
  group_by: [k]
  measures:
    - {{ name: n, fn: count }}
    - {{ name: s, fn: sum, column: v }}
    - {{ name: lo, fn: min, column: v }}
    - {{ name: hi, fn: max, column: v }}
    - {{ name: a, fn: avg, column: d }}
    - {{ name: fs, fn: sum, column: f }}
"#
    );
    JobSpec::parse("many-groups.yaml", &text).unwrap()
}

#[allow(clippy::field_reassign_with_default)]
async fn run(spec: &JobSpec, workers: usize) -> Manifest {
    let mut o = RunOptions::default();
    o.workers = workers;
    o.retry_backoff = |_| Duration::from_millis(5);
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    tokio::time::timeout(
        Duration::from_secs(600),
        run_local(&env, spec, &o, Arc::new(fanout::runner::Silent)),
    )
    .await
    .expect("the job hung")
    .unwrap()
    .result
    .unwrap()
}

/// Per group: rows, sum of v, min v, max v, sum of d (unscaled), sum of f.
type Expected = BTreeMap<i64, (i64, i64, i64, i64, i128, f64)>;

/// The aggregate computed the straightforward way, over the rows as generated.
fn expected(rows: u64, groups: u64) -> Expected {
    let mut m = Expected::new();
    for i in 0..rows {
        let (v, d, f) = values(i);
        let e = m
            .entry(key(i, groups) as i64)
            .or_insert((0, 0, i64::MAX, i64::MIN, 0, 0.0));
        e.0 += 1;
        e.1 += v;
        e.2 = e.2.min(v);
        e.3 = e.3.max(v);
        e.4 += i128::from(d);
        e.5 += f.parse::<f64>().unwrap();
    }
    m
}

/// Reads `aggregates.parquet` with arrow and checks every group against `want`.
fn check_table(path: &Path, want: &Expected) {
    let file = std::fs::File::open(path).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 8192).unwrap();
    let mut seen = 0usize;
    let mut last = i64::MIN;
    for batch in reader {
        let b = batch.unwrap();
        let col = |name: &str| b.column_by_name(name).unwrap().clone();
        let int = |name: &str| {
            col(name)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone()
        };
        let (k, n, s, lo, hi) = (int("k"), int("n"), int("s"), int("lo"), int("hi"));
        let a = col("a");
        let a = a.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(a.scale(), 6, "avg of decimal(10,2) has scale 2 + 4");
        let fs = col("fs");
        let fs = fs.as_any().downcast_ref::<Float64Array>().unwrap();
        for r in 0..b.num_rows() {
            let key = k.value(r);
            assert!(key > last, "groups sorted by key: {key} after {last}");
            last = key;
            let e = want
                .get(&key)
                .unwrap_or_else(|| panic!("unexpected group {key}"));
            assert_eq!(
                (n.value(r), s.value(r), lo.value(r), hi.value(r)),
                (e.0, e.1, e.2, e.3),
                "group {key}"
            );
            // Half away from zero, as the reducer rounds (every sum here is positive).
            let avg = (e.4 * 10_000 * 2 + i128::from(e.0)) / (2 * i128::from(e.0));
            assert_eq!(a.value(r), avg, "avg of group {key}");
            assert!(
                (fs.value(r) - e.5).abs() <= 1e-9 * e.5.abs().max(1.0),
                "float sum of group {key}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, want.len(), "one row per group");
}

/// The table as pyarrow reads it: row count, sum of counts and of `s`, sorted keys.
fn pyarrow_totals(path: &Path) -> serde_json::Value {
    let script = "import json, sys, pyarrow.parquet as pq\n\
        t = pq.read_table(sys.argv[1]).to_pydict()\n\
        print(json.dumps({'rows': len(t['k']), 'n': sum(t['n']), 's': sum(t['s']),\n\
            'sorted': t['k'] == sorted(t['k']), 'a_first': int(t['a'][0].scaleb(6))}))\n";
    let out = common::run_ok(
        Command::new(common::python())
            .arg("-c")
            .arg(script)
            .arg(path),
    );
    serde_json::from_str(out.trim()).unwrap()
}

fn job_dir(work: &Path) -> std::path::PathBuf {
    let jobs: Vec<_> = std::fs::read_dir(work.join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    jobs[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_many_group_aggregate_is_referenced_by_the_manifest_and_exact() {
    let groups = 200_000;
    assert!(groups > DEFAULT_AGGREGATE_JSON_MAX_ROWS);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_input(root, ROWS, groups);
    let m = run(&spec(root, "work"), 3).await;
    assert!(m.chunks >= 4, "several chunks, got {}", m.chunks);
    let a = m.aggregate.as_ref().unwrap();
    assert_eq!(a.parquet.rows, groups);
    assert_eq!(a.json, None, "no JSON above the threshold");
    let job = job_dir(&root.join("work"));
    assert!(!job.join("aggregates.json").exists());
    let table = job.join("aggregates.parquet");
    assert_eq!(
        a.parquet.key,
        format!("jobs/{}/aggregates.parquet", m.job_id)
    );
    assert_eq!(a.parquet.bytes, std::fs::metadata(&table).unwrap().len());
    let manifest_bytes = std::fs::metadata(job.join("_manifest.json")).unwrap().len();

    let want = expected(ROWS, groups);
    check_table(&table, &want);
    let py = pyarrow_totals(&table);
    let (sum_n, sum_s) = want
        .values()
        .fold((0i64, 0i64), |(n, s), e| (n + e.0, s + e.1));
    assert_eq!(py["rows"], groups);
    assert_eq!(py["n"], sum_n);
    assert_eq!(py["s"], sum_s);
    assert_eq!(py["sorted"], true);
    let first = want.values().next().unwrap();
    let avg0 = (first.4 * 10_000 * 2 + i128::from(first.0)) / (2 * i128::from(first.0));
    assert_eq!(py["a_first"].as_i64().map(i128::from), Some(avg0));

    // The same job on one worker: chunks finish in another order, the table is the same bytes.
    let one = run(&spec(root, "work-one"), 1).await;
    let one_table = job_dir(&root.join("work-one")).join("aggregates.parquet");
    assert_eq!(one.aggregate.as_ref().unwrap().parquet.rows, groups);
    assert!(
        std::fs::read(&table).unwrap() == std::fs::read(&one_table).unwrap(),
        "aggregates.parquet differs between 3 workers and 1"
    );

    // Ten times fewer groups, the same rows and chunks: the manifest is the same size but
    // for a few digits.
    let few = tempfile::tempdir().unwrap();
    write_input(few.path(), ROWS, groups / 10);
    let fm = run(&spec(few.path(), "work"), 3).await;
    assert_eq!(fm.aggregate.as_ref().unwrap().parquet.rows, groups / 10);
    assert_eq!(fm.chunks, m.chunks);
    let few_bytes = std::fs::metadata(job_dir(&few.path().join("work")).join("_manifest.json"))
        .unwrap()
        .len();
    assert!(
        manifest_bytes.abs_diff(few_bytes) < 200,
        "manifest {manifest_bytes} bytes with {groups} groups, {few_bytes} with {}",
        groups / 10
    );
    assert!(
        manifest_bytes < 64 * 1024,
        "manifest of {manifest_bytes} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_aggregate_also_gets_aggregates_json_with_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (rows, groups) = (3000, 7);
    write_input(root, rows, groups);
    let m = run(&spec(root, "work"), 2).await;
    let a = m.aggregate.as_ref().unwrap();
    assert_eq!(a.parquet.rows, groups);
    let job = job_dir(&root.join("work"));
    assert_eq!(
        a.json.as_deref(),
        Some(format!("jobs/{}/aggregates.json", m.job_id).as_str())
    );
    let json: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&std::fs::read(job.join("aggregates.json")).unwrap()).unwrap();
    assert_eq!(json.len() as u64, groups);
    let want = expected(rows, groups);
    check_table(&job.join("aggregates.parquet"), &want);
    for (row, (k, e)) in json.iter().zip(&want) {
        assert_eq!(
            (row["k"].as_i64(), row["n"].as_i64(), row["s"].as_i64()),
            (Some(*k), Some(e.0), Some(e.1))
        );
    }
    // The reader every command uses gives the JSON file's rows.
    let store = fanout::store::FsStore::new(root.join("work"));
    assert_eq!(
        fanout::job::read_aggregate_rows(&store, a, 100)
            .await
            .unwrap(),
        json
    );
}
