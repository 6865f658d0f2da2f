//! Records that never lie: `gc --abandoned` takes a job's chunk records with its files, so
//! the same spec run again runs every chunk; and finalize lists no file that is not there
//! with the size its commit record gives.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use fanout::env::Env;
use fanout::job::ChunkTask;
use fanout::metrics::MemoryMetrics;
use fanout::runner::{RunOptions, Silent, run_local};
use fanout::spec::JobSpec;
use fanout::worker::Worker;

const FILES: u64 = 6;
const ROWS_PER_FILE: u64 = 500;

/// Six CSV files of 500 rows each (ids 1..=3000), each its own chunk, partitioned by
/// `id % 3` so each chunk writes three files.
fn job(root: &Path) -> JobSpec {
    std::fs::create_dir_all(root.join("in")).unwrap();
    for f in 0..FILES {
        let mut text = String::from("id,amount\n");
        for i in 1..=ROWS_PER_FILE {
            let id = f * ROWS_PER_FILE + i;
            text.push_str(&format!("{id},{}.25\n", id % 97));
        }
        std::fs::write(root.join(format!("in/part-{f}.csv")), text).unwrap();
    }
    let r = root.display();
    JobSpec::parse(
        "job.yaml",
        &format!(
            r#"
name: honest
work: {r}/work/
input:
  location: {r}/in/
  format: csv
  schema:
    - {{ name: id, type: int64, nullable: false }}
    - {{ name: amount, type: "decimal(12,2)" }}
chunking: {{ target_size: 1MiB, max_objects_per_chunk: 1 }}
transform:
  sql: SELECT *, id % 3 AS bucket FROM input
output: {{ location: {r}/out/, partition_by: [bucket], target_file_size: off }}
rejects: {{ location: {r}/rejects/ }}
"#
        ),
    )
    .unwrap()
}

fn env() -> Env {
    Env::embedded(Arc::new(MemoryMetrics::new()))
}

/// Plans the job and runs every chunk through a worker, without finalizing it: a job
/// whose reducer never ran.
async fn commit_without_finalize(env: &Env, spec: &JobSpec) -> fanout::planner::PlannedJob {
    let plan = fanout::planner::plan_job(env, spec).await.unwrap();
    let worker = Worker::new(env.clone(), "w");
    for c in &plan.chunks {
        let task = ChunkTask {
            job_id: plan.summary.job_id.clone(),
            work: spec.work.to_string(),
            chunk: c.clone(),
        };
        worker.process_chunk(&task, 1).await.unwrap();
    }
    plan
}

/// Every Parquet file under `dir`, with its rows read from the file itself and the sum of
/// its `id` column.
fn rows_and_id_sum(dir: &Path) -> (u64, i64) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let (mut rows, mut sum) = (0u64, 0i64);
    for e in walk(dir) {
        let reader = SerializedFileReader::new(std::fs::File::open(&e).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            sum += row.get_long(0).unwrap();
            rows += 1;
        }
    }
    (rows, sum)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

const ALL_ROWS: u64 = FILES * ROWS_PER_FILE;
const ALL_IDS: i64 = (ALL_ROWS * (ALL_ROWS + 1) / 2) as i64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_of_an_abandoned_job_removes_its_records_and_a_rerun_runs_every_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let spec = job(root);
    let env = env();
    let plan = commit_without_finalize(&env, &spec).await;
    let job_id = plan.summary.job_id.clone();
    assert_eq!(plan.chunks.len() as u64, FILES);
    assert_eq!(rows_and_id_sum(&root.join("out")), (ALL_ROWS, ALL_IDS));

    // A dry run names the records and deletes nothing.
    let dry = fanout::gc::collect_garbage(&env, &spec.work, &job_id, true, true)
        .await
        .unwrap();
    assert_eq!(dry.outputs.len() as u64, FILES * 3, "{dry:?}");
    let commits = dry
        .records
        .iter()
        .filter(|k| k.contains("/chunks/"))
        .count();
    assert_eq!(commits as u64, FILES, "{dry:?}");
    assert!(
        dry.records.iter().any(|k| k.contains("/attempts/")),
        "{dry:?}"
    );
    assert_eq!(
        fanout::job::committed_ids(env.store(&spec.work).unwrap().as_ref(), &job_id)
            .await
            .unwrap()
            .len() as u64,
        FILES
    );

    let g = fanout::gc::collect_garbage(&env, &spec.work, &job_id, true, false)
        .await
        .unwrap();
    assert!(g.deleted);
    let work = env.store(&spec.work).unwrap();
    assert!(
        fanout::job::committed_ids(work.as_ref(), &job_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        work.list(&fanout::job::layout::attempts(&job_id))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(walk(&root.join("out")).is_empty());

    // The same spec again: the same job, every chunk run again, all rows there once.
    let report = run_local(&env, &spec, &RunOptions::default(), Arc::new(Silent))
        .await
        .unwrap();
    assert_eq!(report.plan.summary.job_id, job_id);
    assert_eq!(report.chunks_run, FILES);
    let m = report.result.unwrap();
    assert_eq!(m.outcome, "succeeded");
    assert_eq!((m.counts.read, m.counts.written), (ALL_ROWS, ALL_ROWS));
    assert_eq!(m.files.len() as u64, FILES * 3);
    assert_eq!(rows_and_id_sum(&root.join("out")), (ALL_ROWS, ALL_IDS));
    let listed: u64 = m.files.iter().map(|f| f.file.rows).sum();
    assert_eq!(listed, ALL_ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_of_a_finalized_job_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let spec = job(root);
    let env = env();
    let report = run_local(&env, &spec, &RunOptions::default(), Arc::new(Silent))
        .await
        .unwrap();
    let job_id = report.plan.summary.job_id.clone();
    report.result.unwrap();
    for abandoned in [false, true] {
        let g = fanout::gc::collect_garbage(&env, &spec.work, &job_id, abandoned, false)
            .await
            .unwrap();
        assert!(g.outputs.is_empty() && g.records.is_empty(), "{g:?}");
    }
    fanout::reducer::finalize_job(&env, &spec.work, &job_id)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_refuses_files_that_are_gone_or_changed_naming_each_and_its_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let spec = job(root);
    let env = env();
    let plan = commit_without_finalize(&env, &spec).await;
    let job_id = plan.summary.job_id.clone();
    let mut files = walk(&root.join("out"));
    files.sort();
    let (gone, cut) = (&files[0], &files[4]);
    std::fs::remove_file(gone).unwrap();
    let bytes = std::fs::read(cut).unwrap();
    std::fs::write(cut, &bytes[..bytes.len() - 1]).unwrap();

    let err = fanout::reducer::finalize_job(&env, &spec.work, &job_id)
        .await
        .unwrap_err();
    let fanout::Error::FilesChanged { files: wrong, .. } = &err else {
        panic!("expected FilesChanged, got {err}");
    };
    assert_eq!(wrong.len(), 2, "{err}");
    let msg = err.to_string();
    let chunk_of = |p: &Path| {
        let name = p.file_name().unwrap().to_str().unwrap();
        name.strip_prefix("part-")
            .unwrap()
            .rsplit_once('-')
            .unwrap()
            .0
            .to_string()
    };
    assert!(msg.contains(&gone.display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("of chunk {} (missing)", chunk_of(gone))),
        "{msg}"
    );
    assert!(msg.contains(&cut.display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!(
            "({} bytes, {} recorded)",
            bytes.len() - 1,
            bytes.len()
        )),
        "{msg}"
    );
    assert!(msg.contains("--abandoned"), "{msg}");
    assert_eq!(err.kind(), "FilesChanged");
    assert!(!err.is_retryable());
    let work = env.store(&spec.work).unwrap();
    assert!(
        work.head(&fanout::job::layout::manifest(&job_id))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        work.head(&fanout::job::layout::success(&job_id))
            .await
            .unwrap()
            .is_none()
    );

    // What the message advises makes the job whole again.
    fanout::gc::collect_garbage(&env, &spec.work, &job_id, true, false)
        .await
        .unwrap();
    let report = run_local(&env, &spec, &RunOptions::default(), Arc::new(Silent))
        .await
        .unwrap();
    assert_eq!(report.chunks_run, FILES);
    assert_eq!(report.result.unwrap().outcome, "succeeded");
    assert_eq!(rows_and_id_sum(&root.join("out")), (ALL_ROWS, ALL_IDS));
}
