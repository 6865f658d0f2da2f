//! Partition values as keys, on the embedded pipeline in-process: values with non-ASCII
//! characters, spaces, `/`, `=` and `%` round-trip through pyarrow's and DuckDB's Hive
//! partitioning (`tests/py/hive_read.py`), and a value too long to be a file name rejects
//! its row with rule `partition` while the others are written.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fanout::env::Env;
use fanout::job::Manifest;
use fanout::metrics::MemoryMetrics;
use fanout::runner::{RunOptions, run_local};
use fanout::spec::JobSpec;
use serde_json::Value;

/// A CSV job over `rows` (id, p) partitioned by `p`.
fn job(root: &Path, rows: &[(i64, String)], max_ratio: f64) -> JobSpec {
    std::fs::create_dir_all(root.join("in")).unwrap();
    let mut csv = String::from("id,p\n");
    for (id, p) in rows {
        csv.push_str(&format!("{id},{p}\n"));
    }
    std::fs::write(root.join("in/data.csv"), csv).unwrap();
    let r = root.display();
    let text = format!(
        r#"
name: keys
work: {r}/work/
input:
  location: {r}/in/
  format: csv
  schema:
    - {{ name: id, type: int64, nullable: false }}
    - {{ name: p, type: utf8 }}
output: {{ location: {r}/out/, partition_by: [p] }}
rejects: {{ location: {r}/rejects/, max_ratio: {max_ratio} }}
queue: {{ max_receive_count: 2 }}
aggregate: {{ group_by: [], measures: [{{ name: rows, fn: count }}, {{ name: ids, fn: sum, column: id }}] }}
"#
    );
    JobSpec::parse("keys.yaml", &text).unwrap()
}

#[allow(clippy::field_reassign_with_default)]
async fn run(spec: &JobSpec) -> fanout::runner::RunReport {
    let mut o = RunOptions::default();
    o.workers = 2;
    o.retry_backoff = |_| Duration::from_millis(5);
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    tokio::time::timeout(
        Duration::from_secs(120),
        run_local(&env, spec, &o, Arc::new(fanout::runner::Silent)),
    )
    .await
    .expect("the job hung")
    .unwrap()
}

/// The output read back by pyarrow and by DuckDB: (engine, rows as (id, p)).
fn read_back(root: &Path) -> Vec<(String, Vec<(i64, String)>)> {
    let out = common::run_ok(
        Command::new(common::python())
            .arg(common::repo().join("tests/py/hive_read.py"))
            .arg(root.join("out"))
            .arg("p"),
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    ["pyarrow", "duckdb"]
        .into_iter()
        .map(|engine| {
            let rows = v[engine]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r[0].as_i64().unwrap(), r[1].as_str().unwrap().to_string()))
                .collect();
            (engine.to_string(), rows)
        })
        .collect()
}

fn rejects(root: &Path, m: &Manifest) -> Vec<fanout::transform::Reject> {
    m.rejects
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(root.join("rejects").join(&f.key))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn special_partition_values_round_trip_through_pyarrow_and_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let values = [
        "Zürich",
        "東京",
        "a b",
        "EU/West",
        "k=v",
        "100%",
        "a%2Fb",
        "x+y",
        "naïve: ok?",
        "[1]#^*'\\",
    ];
    let rows: Vec<(i64, String)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_string()))
        .collect();
    let report = run(&job(root, &rows, 0.0)).await;
    let m = report.result.unwrap();
    assert_eq!(m.counts.written, rows.len() as u64);
    // Non-ASCII is written as it is (as Hive and Spark write it), escapes only for
    // Hive's characters.
    let keys: Vec<&str> = m.files.iter().map(|f| f.file.key.as_str()).collect();
    assert!(keys.iter().any(|k| k.starts_with("p=Zürich/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("p=東京/")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("p=EU%2FWest/")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.starts_with("p=a%252Fb/")), "{keys:?}");
    for (engine, got) in read_back(root) {
        assert_eq!(got, rows, "{engine} reads other values back");
    }
}

#[tokio::test]
async fn a_partition_value_too_long_for_a_file_name_rejects_its_row_and_the_rest_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // `p=` and the value make one folder name, at most 255 bytes on a local file system.
    let at_limit = "x".repeat(fanout::write::LOCAL_MAX_NAME_BYTES - "p=".len());
    let over_by_one = format!("{at_limit}y");
    let long = "é".repeat(1000);
    assert_eq!(long.len(), 2000);
    let rows: Vec<(i64, String)> = vec![
        (1, "a".into()),
        (2, long.clone()),
        (3, "b".into()),
        (4, at_limit.clone()),
        (5, over_by_one),
        (6, "a".into()),
    ];
    let report = run(&job(root, &rows, 0.5)).await;
    let m = report.result.unwrap();
    assert_eq!(m.outcome.to_string(), "succeeded");
    assert_eq!(m.counts.read, 6);
    assert_eq!(m.counts.valid, 6);
    assert_eq!(m.counts.rejected, 0);
    assert_eq!(m.counts.partition_rejected, 2);
    assert_eq!(m.counts.written, 4);
    assert_eq!(
        m.files.iter().map(|f| f.file.rows).sum::<u64>(),
        m.counts.written
    );
    assert_eq!(m.reject_rules.get("partition"), Some(&2));
    // The aggregate is over the rows written, as for rows rejected by any other rule.
    let work = fanout::store::FsStore::new(root.join("work"));
    let agg = fanout::job::read_aggregate_rows(&work, m.aggregate.as_ref().unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(agg.len(), 1, "{agg:?}");
    assert_eq!(agg[0]["rows"].to_string().trim_matches('"'), "4", "{agg:?}");
    assert_eq!(agg[0]["ids"].to_string().trim_matches('"'), "14", "{agg:?}");
    assert!(
        (m.reject_ratio - 2.0 / 6.0).abs() < 1e-9,
        "{}",
        m.reject_ratio
    );

    let mut rejected = rejects(root, &m);
    rejected.sort_by(|a, b| a.raw.cmp(&b.raw));
    assert_eq!(rejected.len(), 2);
    for r in &rejected {
        assert_eq!(r.rule, "partition");
        assert_eq!(r.column.as_deref(), Some("p"));
        assert_eq!(r.object, "data.csv");
        assert!(r.message.contains("255"), "{}", r.message);
    }
    // The 2,000-byte row's text is capped at 1 KiB (a reject holds no huge values in memory);
    // the 256-byte one is whole.
    let capped = &rejected[0].raw;
    assert!(
        capped.len() <= 1024 + '…'.len_utf8() && capped.ends_with('…'),
        "{capped}"
    );
    assert!(capped.contains("\"2\""), "{capped}");
    let whole: Value = serde_json::from_str(&rejected[1].raw).unwrap();
    assert_eq!(whole["id"], "5");
    // The message quotes the value's first bytes, not all 2,000.
    assert!(
        rejected[0].message.contains("2000 bytes"),
        "{}",
        rejected[0].message
    );
    assert!(rejected[0].message.len() < 400, "{}", rejected[0].message);

    let written: Vec<(i64, String)> = rows
        .iter()
        .filter(|(id, _)| ![2, 5].contains(id))
        .cloned()
        .collect();
    for (engine, got) in read_back(root) {
        assert_eq!(got, written, "{engine} reads other rows back");
    }
}

#[tokio::test]
async fn rows_set_aside_for_their_partition_value_count_towards_max_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let rows: Vec<(i64, String)> = vec![(1, "a".into()), (2, "z".repeat(2000))];
    let report = run(&job(root, &rows, 0.1)).await;
    let err = report.result.unwrap_err().to_string();
    assert!(err.contains("above rejects.max_ratio"), "{err}");
}
