//! The embedded pipeline in-process: retries and dead letters, duplicate delivery,
//! checkpoint/restart, and every input format.
#![allow(clippy::unwrap_used)]

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fanout::env::Env;
use fanout::job::ChunkTask;
use fanout::location::Location;
use fanout::metrics::MemoryMetrics;
use fanout::runner::{RunOptions, Silent, run_local};
use fanout::spec::JobSpec;
use fanout::store::{DynStore, FsStore, ObjectMeta, ObjectStore, PutOutcome};
use fanout::worker::{ChunkOutcome, Worker};

/// The input store of these tests: reads of keys containing `poison` fail while `armed`
/// (a retryable 503), and every read takes `read_delay` (a chunk slower than its
/// visibility timeout).
#[derive(Debug)]
struct InputStore {
    inner: FsStore,
    poison: String,
    armed: Arc<AtomicBool>,
    failures: Arc<AtomicU32>,
    read_delay: Duration,
}

impl InputStore {
    async fn before_read(&self, key: &str) -> fanout::store::Result<()> {
        if self.armed.load(Ordering::SeqCst) && key.contains(&self.poison) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(fanout::store::StoreError::Request {
                op: "get",
                key: key.to_string(),
                message: "503 Slow Down (injected)".into(),
                retryable: true,
                source: None,
            });
        }
        tokio::time::sleep(self.read_delay).await;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for InputStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn list(&self, prefix: &str) -> fanout::store::Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn head(&self, key: &str) -> fanout::store::Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> fanout::store::Result<Bytes> {
        self.before_read(key).await?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> fanout::store::Result<Bytes> {
        self.before_read(key).await?;
        self.inner.get_range(key, range).await
    }
    async fn put(&self, key: &str, data: Bytes) -> fanout::store::Result<()> {
        self.inner.put(key, data).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> fanout::store::Result<PutOutcome> {
        self.inner.put_if_absent(key, data).await
    }
    async fn delete(&self, key: &str) -> fanout::store::Result<()> {
        self.inner.delete(key).await
    }
}

/// The embedded env with `root/in` behind an [`InputStore`].
fn env_with_input(
    root: &Path,
    poison: &str,
    armed: Arc<AtomicBool>,
    failures: Arc<AtomicU32>,
    read_delay: Duration,
) -> Env {
    let input_root = root.join("in");
    let poison = poison.to_string();
    Env::new(
        Arc::new(
            move |loc: &Location, sse: &fanout::location::Sse| -> fanout::Result<DynStore> {
                match loc {
                    Location::Local(p) if p == &input_root => Ok(Arc::new(InputStore {
                        inner: FsStore::new(p),
                        poison: poison.clone(),
                        armed: armed.clone(),
                        failures: failures.clone(),
                        read_delay,
                    })),
                    other => fanout::env::open_local_store(other, sse),
                }
            },
        ),
        Arc::new(MemoryMetrics::new()),
    )
}

fn spec(root: &Path, format: &str, extra_input: &str, target: &str) -> JobSpec {
    let r = root.display();
    let text = format!(
        r#"
name: t
work: {r}/work/
input:
  location: {r}/in/
  format: {format}
{extra_input}
  schema:
    - {{ name: id, type: int64, nullable: false }}
    - {{ name: name, type: utf8 }}
    - {{ name: score, type: float64 }}
    - {{ name: day, type: date32 }}
chunking: {{ target_size: {target} }}
validate:
  - {{ column: score, finite: true }}
output: {{ location: {r}/out/, target_file_size: off }}
rejects: {{ location: {r}/rejects/, max_ratio: 0.5 }}
aggregate:
  group_by: []
  measures:
    - {{ name: n, fn: count }}
    - {{ name: total, fn: sum, column: id }}
queue: {{ max_receive_count: 3 }}
"#
    );
    JobSpec::parse("test.yaml", &text).unwrap()
}

fn write(root: &Path, key: &str, data: &[u8]) {
    let p = root.join("in").join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn csv_rows(first: u64, n: u64) -> String {
    let mut s = String::from("id,name,score,day\n");
    for i in first..first + n {
        s.push_str(&format!(
            "{i},\"name {i}, with comma\",{}.5,2024-05-{:02}\n",
            i % 100,
            1 + i % 28
        ));
    }
    s
}

fn fast() -> RunOptions {
    RunOptions {
        workers: 2,
        retry_backoff: |_| Duration::from_millis(10),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_failing_chunk_is_retried_then_dead_lettered_and_completes_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "good.csv", csv_rows(1, 100).as_bytes());
    write(root, "poison.csv", csv_rows(1000, 100).as_bytes());
    let spec = spec(root, "csv", "", "64MiB");
    let armed = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(AtomicU32::new(0));
    let env = env_with_input(
        root,
        "poison",
        armed.clone(),
        failures.clone(),
        Duration::ZERO,
    );
    // Pack nothing together: one chunk per object.
    let mut spec = spec;
    spec.chunking.max_objects_per_chunk = 1;
    let report = run_local(&env, &spec, &fast(), Arc::new(Silent))
        .await
        .unwrap();
    assert_eq!(report.plan.summary.chunks, 2);
    assert_eq!(report.committed_now, 1);
    assert_eq!(
        report.dead_lettered, 1,
        "the poison chunk must end in the dead-letter queue"
    );
    assert_eq!(
        failures.load(Ordering::SeqCst),
        3,
        "one failed read per receive, max_receive_count = 3"
    );
    let err = report.result.unwrap_err().to_string();
    assert!(
        err.contains("1 of 2 chunks are not committed") && err.contains("Slow Down"),
        "{err}"
    );
    assert_eq!(report.status.dead_lettered.len(), 1);
    let dead = &report.status.dead_lettered[0];
    assert_eq!(dead.attempts, 3);
    assert!(dead.message.contains("503 Slow Down"));

    // The cause is fixed: the re-run runs only the missing chunk and the job completes.
    armed.store(false, Ordering::SeqCst);
    let report = run_local(&env, &spec, &fast(), Arc::new(Silent))
        .await
        .unwrap();
    assert_eq!(report.chunks_run, 1);
    let m = report.result.unwrap();
    assert_eq!(m.counts.read, 200);
    assert_eq!(m.counts.written, 200);
    let status = fanout::reducer::job_status(&env, &spec.work, &m.job_id)
        .await
        .unwrap();
    assert!(status.is_complete() && status.dead_lettered.is_empty() && status.failed.is_empty());
}

#[tokio::test]
async fn a_duplicate_delivery_is_acknowledged_without_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "a.csv", csv_rows(1, 50).as_bytes());
    let spec = spec(root, "csv", "", "64MiB");
    let metrics = Arc::new(MemoryMetrics::new());
    let env = Env::embedded(metrics.clone());
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    let task = ChunkTask {
        job_id: plan.summary.job_id.clone(),
        work: spec.work.to_string(),
        chunk: plan.chunks[0].clone(),
    };
    let worker = Worker::new(env.clone(), "w1");
    assert!(matches!(
        worker.process_chunk(&task, 1).await.unwrap(),
        ChunkOutcome::Committed(_)
    ));
    let before = common_snapshot(&root.join("out"));
    // Same message again (at-least-once delivery), and from a second worker.
    assert!(matches!(
        worker.process_chunk(&task, 2).await.unwrap(),
        ChunkOutcome::AlreadyCommitted
    ));
    let other = Worker::new(env.clone(), "w2");
    assert!(matches!(
        other.process_chunk(&task, 1).await.unwrap(),
        ChunkOutcome::AlreadyCommitted
    ));
    assert_eq!(before, common_snapshot(&root.join("out")));
    assert_eq!(metrics.sum(fanout::metrics::names::CHUNKS_COMMITTED), 1.0);
    assert_eq!(metrics.sum(fanout::metrics::names::CHUNKS_DUPLICATE), 2.0);
}

#[tokio::test]
async fn a_malformed_message_is_rejected_not_retried() {
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let worker = Worker::new(env, "w");
    let msg = fanout::queue::Message {
        id: "m".into(),
        receipt: "1:1".into(),
        body: "{\"not\": \"a task\"}".into(),
        receive_count: 1,
    };
    match worker.handle_message(&msg, 3).await {
        fanout::worker::Disposition::Reject(e) => {
            assert!(e.to_string().contains("malformed chunk message"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

fn common_snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                v.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    v.sort();
    v
}

async fn run(root: &Path, spec: &JobSpec) -> fanout::job::Manifest {
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let report = run_local(&env, spec, &fast(), Arc::new(Silent))
        .await
        .unwrap();
    let _ = root;
    report.result.unwrap()
}

/// The aggregate's `total`, read from the job's table as a user would.
async fn sum_ids(root: &Path, m: &fanout::job::Manifest) -> String {
    let store = fanout::store::FsStore::new(root.join("work"));
    let rows = fanout::job::read_aggregate_rows(&store, m.aggregate.as_ref().unwrap(), 10)
        .await
        .unwrap();
    rows[0]["total"].to_string()
}

#[tokio::test]
async fn byte_ranges_read_every_record_once_whatever_the_chunk_size() {
    for target in ["1KiB", "3000", "64MiB"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a.csv", csv_rows(1, 2000).as_bytes());
        write(root, "b.csv", csv_rows(2001, 10).as_bytes());
        let m = run(root, &spec(root, "csv", "", target)).await;
        assert_eq!(m.counts.read, 2010, "target {target}");
        assert_eq!(m.counts.written, 2010);
        assert_eq!(
            sum_ids(root, &m).await,
            (2010 * 2011 / 2).to_string(),
            "target {target}"
        );
    }
}

#[tokio::test]
async fn multiline_csv_is_read_whole_with_newlines_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut text = String::from("id,name,score,day\n");
    for i in 1..=500u64 {
        text.push_str(&format!(
            "{i},\"line one\nline two {i}\",1.0,2024-01-01\r\n"
        ));
    }
    write(root, "m.csv", text.as_bytes());
    let spec = spec(root, "csv", "  csv: { multiline: true }", "1KiB");
    let m = run(root, &spec).await;
    assert_eq!((m.counts.read, m.counts.rejected), (500, 0));
    assert_eq!(m.chunks, 1, "multiline CSV is never split by range");
    let f = &m.files[0].file.key;
    let bytes = std::fs::read(root.join("out").join(f)).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .unwrap()
    .build()
    .unwrap();
    let batch = reader.map(|b| b.unwrap()).next().unwrap();
    let names = batch
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    assert_eq!(names.value(0), "line one\nline two 1");
}

#[tokio::test]
async fn json_lines_with_bad_records_are_quarantined_with_coordinates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut text = String::new();
    for i in 1..=300u64 {
        text.push_str(&format!("{{\"id\": {i}, \"name\": \"n{i}\", \"score\": {i}.25, \"day\": \"2024-02-{:02}\", \"extra\": [1]}}\n", 1 + i % 28));
    }
    text.push_str(
        "{\"id\": 301, \"name\": {\"nested\": true}, \"score\": 1, \"day\": \"2024-01-01\"}\n",
    );
    text.push_str("{\"id\": 302, \"name\": \"x\", \"score\": \"NaN\", \"day\": \"2024-01-01\"}\n");
    text.push_str("{\"id\": 303} trailing garbage\n");
    text.push_str("[1, 2, 3]\n");
    text.push_str("{\"id\": \"x304\", \"score\": 1, \"day\": \"2024-01-01\"}\n");
    text.push_str("\n   \n");
    text.push_str("{\"id\": 305, \"score\": 2, \"day\": \"2024-02-30\"}\n");
    write(root, "a.jsonl", text.as_bytes());
    let zipped = zstd::encode_all(text.as_bytes(), 3).unwrap();
    write(root, "b.jsonl.zst", &zipped);
    let m = run(root, &spec(root, "jsonl", "", "2KiB")).await;
    assert_eq!(m.counts.read, 2 * 306);
    assert_eq!(m.counts.rejected, 2 * 6);
    let rules: Vec<(&str, u64)> = m
        .reject_rules
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(rules, vec![("finite", 2), ("format", 4), ("type", 6)]);
    let all: Vec<fanout::transform::Reject> = m
        .rejects
        .iter()
        .flat_map(|r| {
            std::fs::read_to_string(root.join("rejects").join(&r.key))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    // The rejects files hold every rejected record.
    assert_eq!(all.len() as u64, m.counts.rejected);
    let garbage = all
        .iter()
        .find(|r| r.object == "a.jsonl" && r.raw.contains("trailing garbage"))
        .unwrap();
    // Split in 2 KiB ranges, a.jsonl's later chunks know offsets, not lines: counting the
    // lines before a range would mean reading the object from its start.
    assert_eq!(garbage.line, None);
    assert_eq!(
        garbage.byte_offset,
        Some(text.find("{\"id\": 303}").unwrap() as u64)
    );
    let zipped_garbage = all
        .iter()
        .find(|r| r.object == "b.jsonl.zst" && r.raw.contains("trailing garbage"))
        .unwrap();
    assert_eq!(zipped_garbage.byte_offset, None);
    assert_eq!(zipped_garbage.decompressed_offset, garbage.byte_offset);
    // Read as one stream from its start, the compressed object knows every line.
    assert_eq!(zipped_garbage.line, Some(303));
}

#[tokio::test]
async fn parquet_input_is_split_by_row_groups_and_cast_to_the_schema() {
    use arrow::array::{ArrayRef, Float64Array, Int32Array, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // id as int32 and day as text in the file: both cast to the spec's types.
    let n = 5000;
    let ids: ArrayRef = Arc::new(Int32Array::from_iter_values(1..=n));
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(
        (1..=n).map(|i| format!("n{i}")),
    ));
    let scores: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (1..=n).map(|i| if i == 7 { f64::INFINITY } else { i as f64 }),
    ));
    let days: ArrayRef = Arc::new(StringArray::from_iter((1..=n).map(|i| {
        Some(if i == 9 {
            "not a date".to_string()
        } else {
            "2024-03-03".to_string()
        })
    })));
    let batch = arrow::array::RecordBatch::try_from_iter([
        ("id", ids),
        ("name", names),
        ("score", scores),
        ("day", days),
    ])
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(500))
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    write(root, "p.parquet", &w.into_inner().unwrap());
    let m = run(root, &spec(root, "parquet", "", "8KiB")).await;
    assert!(
        m.chunks > 2,
        "expected a split by row groups, got {} chunks",
        m.chunks
    );
    assert_eq!(
        (m.counts.read, m.counts.rejected, m.counts.written),
        (5000, 2, 4998)
    );
    assert_eq!(
        sum_ids(root, &m).await,
        (5000 * 5001 / 2 - 7 - 9).to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_task_racing_a_straggler_commits_once_with_identical_outputs() {
    // Two workers hold the same chunk at once (its visibility expired under the first):
    // exactly one commit wins, the other attempt is told so, and every file either wrote
    // is byte-identical to a lone run's, so nothing is left for gc.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "a.csv", csv_rows(1, 3000).as_bytes());
    let mut spec = spec(root, "csv", "", "64MiB");
    spec.output.partition_by = vec![];
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    let task = ChunkTask {
        job_id: plan.summary.job_id.clone(),
        work: spec.work.to_string(),
        chunk: plan.chunks[0].clone(),
    };

    // A lone run of the chunk, for reference bytes.
    let lone = Worker::new(env.clone(), "lone");
    assert!(matches!(
        lone.process_chunk(&task, 1).await.unwrap(),
        ChunkOutcome::Committed(_)
    ));
    let reference = common_snapshot(&root.join("out"));
    std::fs::remove_dir_all(root.join("out")).unwrap();
    std::fs::remove_file(
        root.join("work/jobs")
            .join(task.job_id.as_str())
            .join("chunks")
            .join(format!("{}.json", task.chunk.id)),
    )
    .unwrap();

    for round in 0..5 {
        let (a, b) = (
            Worker::new(env.clone(), "straggler"),
            Worker::new(env.clone(), "backup"),
        );
        let (ra, rb) = tokio::join!(a.process_chunk(&task, 1), b.process_chunk(&task, 2));
        let outcomes = [ra.unwrap(), rb.unwrap()];
        let committed = outcomes
            .iter()
            .filter(|o| matches!(o, ChunkOutcome::Committed(_)))
            .count();
        assert_eq!(committed, 1, "round {round}: exactly one attempt commits");
        assert_eq!(
            reference,
            common_snapshot(&root.join("out")),
            "round {round}: outputs differ from a lone run"
        );
        let m = fanout::reducer::finalize_job(&env, &spec.work, &task.job_id)
            .await
            .unwrap();
        let g = fanout::gc::collect_garbage(&env, &spec.work, &task.job_id, false, true)
            .await
            .unwrap();
        assert!(
            g.outputs.is_empty() && g.rejects.is_empty(),
            "round {round}: garbage left: {g:?}"
        );
        assert_eq!(m.counts.written, 3000);
        std::fs::remove_file(
            root.join("work/jobs")
                .join(task.job_id.as_str())
                .join("chunks")
                .join(format!("{}.json", task.chunk.id)),
        )
        .unwrap();
    }
}

/// An env whose input reads take `delay`.
fn slow_env(root: &Path, delay: Duration) -> Env {
    env_with_input(
        root,
        "",
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU32::new(0)),
        delay,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_worker_keeps_a_long_chunk_invisible_and_releases_it_on_stop() {
    use fanout::queue::{LocalQueue, Queue};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "a.csv", csv_rows(1, 200).as_bytes());
    let spec = spec(root, "csv", "", "64MiB");
    let visibility = Duration::from_millis(300);

    // A chunk that reads for 1.2 s, four visibility timeouts, with a second task polling:
    // without the heartbeat that task would receive the message again.
    let env = slow_env(root, Duration::from_millis(1200));
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    let queue = Arc::new(LocalQueue::new("chunks", visibility));
    fanout::planner::enqueue(
        queue.as_ref(),
        &spec.work,
        env.store(&spec.work).unwrap().as_ref(),
        &plan.summary.job_id,
        &plan.chunks,
    )
    .await
    .unwrap();
    let worker = Arc::new(Worker::new(env.clone(), "fleet"));
    let opts = fanout::fleet::ServeOptions {
        max_receive_count: 3,
        concurrency: 2,
        visibility,
        grace: Duration::from_secs(30),
        backoff: Default::default(),
    };
    let (env2, work, job) = (env.clone(), spec.work.clone(), plan.summary.job_id.clone());
    let done = async move {
        while !fanout::reducer::job_status(&env2, &work, &job)
            .await
            .unwrap()
            .is_complete()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let q: Arc<dyn Queue> = queue.clone();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        fanout::fleet::serve(worker, q, opts.clone(), done),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (report.acknowledged, report.retried, report.released),
        (1, 0, 0)
    );
    let record = fanout::job::chunk_records(&env.store(&spec.work).unwrap(), &plan.summary.job_id)
        .await
        .unwrap();
    assert_eq!(
        record[0].attempt, 1,
        "the message was received again while its chunk ran"
    );
    assert!(queue.depth().await.unwrap().is_drained());

    // Stopped with no grace while a chunk runs: its message is released at once, uncommitted.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "a.csv", csv_rows(1, 200).as_bytes());
    let spec = spec_for_root(root);
    let env = slow_env(root, Duration::from_secs(5));
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    let queue = Arc::new(LocalQueue::new("chunks", Duration::from_secs(60)));
    fanout::planner::enqueue(
        queue.as_ref(),
        &spec.work,
        env.store(&spec.work).unwrap().as_ref(),
        &plan.summary.job_id,
        &plan.chunks,
    )
    .await
    .unwrap();
    let worker = Arc::new(Worker::new(env.clone(), "fleet"));
    let opts = fanout::fleet::ServeOptions {
        grace: Duration::ZERO,
        visibility: Duration::from_secs(60),
        ..opts
    };
    let q: Arc<dyn Queue> = queue.clone();
    let stop = tokio::time::sleep(Duration::from_millis(500));
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        fanout::fleet::serve(worker, q, opts, stop),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((report.acknowledged, report.released), (0, 1));
    let back = queue.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        back.len(),
        1,
        "the released message is visible again for another worker"
    );
    assert_eq!(back[0].receive_count, 2);
}

fn spec_for_root(root: &Path) -> JobSpec {
    spec(root, "csv", "", "64MiB")
}
