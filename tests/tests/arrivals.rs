//! The arrivals drain (`fanout::arrivals`) on the embedded queue and store: EventBridge
//! "Object Created" events on an arrivals queue → one job of exactly the new objects →
//! workers → finalize; duplicated, replayed and stale events, limits, a held lease and
//! crashes between the drain's steps. Rows are counted in the Parquet files each
//! finalized manifest lists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fanout::arrivals::{DrainLimits, Drained, drain_arrivals};
use fanout::env::Env;
use fanout::ids::JobId;
use fanout::metrics::MemoryMetrics;
use fanout::queue::{LocalQueue, Message, Queue, QueueDepth, QueueError};
use fanout::spec::JobSpec;
use fanout::worker::{Disposition, Worker};

const ROWS_PER_OBJECT: i64 = 500;

struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    env: Env,
    spec: JobSpec,
    arrivals: LocalQueue,
    chunks: LocalQueue,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("in/2026")).unwrap();
    let r = root.display();
    let spec = JobSpec::parse(
        "arrivals.yaml",
        &format!(
            "name: arrivals\nwork: {r}/work/\n\
             input: {{ location: {r}/in/, format: csv, include: [\"*.csv\"], schema: [{{ name: id, type: int64 }}, {{ name: object, type: utf8 }}] }}\n\
             chunking: {{ target_size: 4KiB }}\noutput: {{ location: {r}/out/ }}\nrejects: {{ location: {r}/rejects/ }}\n"
        ),
    )
    .unwrap();
    Site {
        _dir: dir,
        root,
        env: Env::embedded(Arc::new(MemoryMetrics::new())),
        spec,
        arrivals: LocalQueue::new("arrivals", Duration::from_millis(300)),
        chunks: LocalQueue::new("chunks", Duration::from_secs(60)),
    }
}

impl Site {
    /// Writes object number `n` (rows n*1000 .. n*1000+ROWS_PER_OBJECT) at `in/<key>`.
    fn upload(&self, key: &str, n: i64) {
        let mut csv = String::from("id,object\n");
        for i in 0..ROWS_PER_OBJECT {
            csv.push_str(&format!("{},{key}\n", n * 1000 + i));
        }
        let path = self.root.join("in").join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, csv).unwrap();
    }

    /// The EventBridge event S3 sends for `in/<key>` (the bucket is the site's root here).
    fn event(&self, key: &str) -> String {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/eventbridge-object-created.json"),
        )
        .unwrap();
        let mut e: serde_json::Value = serde_json::from_str(&text).unwrap();
        e["detail"]["bucket"]["name"] = self.root.display().to_string().into();
        e["detail"]["object"]["key"] = format!("in/{key}").into();
        e.to_string()
    }

    async fn arrive(&self, keys: &[&str]) {
        let bodies: Vec<String> = keys.iter().map(|k| self.event(k)).collect();
        self.arrivals.send(&bodies).await.unwrap();
    }

    async fn drain_with(&self, limits: DrainLimits, drain_id: Option<&str>) -> Drained {
        drain_arrivals(
            &self.env,
            &self.arrivals,
            &self.chunks,
            &self.spec,
            limits,
            drain_id,
        )
        .await
        .unwrap()
    }

    async fn drain(&self) -> Drained {
        self.drain_with(DrainLimits::default(), None).await
    }

    /// Runs the queued chunks (as the workers do), then the compaction stage's bins (as
    /// the state machine's Compact step queues them), and finalizes the job.
    async fn run(&self, job_id: &JobId) -> fanout::job::Manifest {
        self.work_off().await;
        fanout::compact::start(&self.env, &self.spec.work, job_id, &self.chunks, false)
            .await
            .unwrap();
        self.work_off().await;
        fanout::reducer::finalize_job(&self.env, &self.spec.work, job_id)
            .await
            .unwrap()
    }

    /// Handles every queued message as a worker does.
    async fn work_off(&self) {
        let worker = Worker::new(self.env.clone(), "test");
        loop {
            let msgs = self.chunks.receive(10, Duration::ZERO).await.unwrap();
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                match worker.handle_message(&m, 3).await {
                    Disposition::Ack(_) => self.chunks.delete(&m.receipt).await.unwrap(),
                    other => panic!("chunk failed: {other:?}"),
                }
            }
        }
    }

    /// Every id in the files of every succeeded manifest, with how often it occurs.
    fn committed_ids(&self) -> BTreeMap<i64, u32> {
        let mut out = BTreeMap::new();
        let jobs = self.root.join("work/jobs");
        for job in std::fs::read_dir(&jobs).into_iter().flatten() {
            let path = job.unwrap().path().join("_manifest.json");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let m: serde_json::Value = serde_json::from_str(&text).unwrap();
            if m["outcome"] != "succeeded" {
                continue;
            }
            for f in m["files"].as_array().unwrap() {
                let file =
                    std::fs::File::open(self.root.join("out").join(f["key"].as_str().unwrap()))
                        .unwrap();
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .unwrap()
                        .build()
                        .unwrap();
                for batch in reader {
                    let batch = batch.unwrap();
                    let ids = batch
                        .column_by_name("id")
                        .unwrap()
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .unwrap()
                        .clone();
                    for id in ids.iter().flatten() {
                        *out.entry(id).or_insert(0) += 1;
                    }
                }
            }
        }
        out
    }

    /// Asserts that exactly the objects `ns` are committed, each row once.
    fn assert_exactly_once(&self, ns: &[i64]) {
        let got = self.committed_ids();
        let want: BTreeMap<i64, u32> = ns
            .iter()
            .flat_map(|n| (0..ROWS_PER_OBJECT).map(move |i| (n * 1000 + i, 1)))
            .collect();
        let doubled: Vec<_> = got.iter().filter(|(_, c)| **c > 1).take(5).collect();
        assert!(doubled.is_empty(), "rows committed twice: {doubled:?}");
        assert_eq!(want.len(), got.len(), "rows committed");
        assert_eq!(want, got);
    }
}

fn planned(d: Drained) -> (fanout::planner::PlannedJob, fanout::arrivals::DrainCounts) {
    match d {
        Drained::Planned { job, counts, .. } => (*job, counts),
        Drained::Nothing { reason, .. } => panic!("expected a job, got nothing: {reason}"),
    }
}

fn nothing(d: Drained) -> (String, fanout::arrivals::DrainCounts) {
    match d {
        Drained::Nothing { reason, counts } => (reason, counts),
        Drained::Planned { job, .. } => panic!("expected no job, got {}", job.summary.job_id),
    }
}

#[tokio::test]
async fn duplicated_and_replayed_events_ingest_each_object_once_and_later_drains_take_only_new_objects()
 {
    let s = site();
    s.upload("2026/a.csv", 1);
    s.upload("2026/b b.csv", 2);
    s.arrive(&["2026/a.csv", "2026/b b.csv", "2026/a.csv"])
        .await;
    let (job1, counts) = planned(s.drain().await);
    assert_eq!(
        (job1.summary.objects, counts.messages, counts.duplicates),
        (2, 3, 1)
    );
    assert!(
        s.arrivals.depth().await.unwrap().is_drained(),
        "messages deleted once the job is durable"
    );
    s.run(&job1.summary.job_id).await;
    s.assert_exactly_once(&[1, 2]);

    // A replay of a (its job finalized: the ledger has it) beside a new object c.
    s.upload("2026/c.csv", 3);
    s.arrive(&["2026/a.csv", "2026/c.csv"]).await;
    let (job2, counts) = planned(s.drain().await);
    assert_ne!(job1.summary.job_id, job2.summary.job_id);
    assert_eq!(
        (job2.summary.objects, counts.duplicates),
        (1, 1),
        "only c: {counts:?}"
    );
    s.run(&job2.summary.job_id).await;
    s.assert_exactly_once(&[1, 2, 3]);

    // Only replays: no job, said plainly.
    s.arrive(&["2026/b b.csv", "2026/c.csv"]).await;
    let (reason, counts) = nothing(s.drain().await);
    assert_eq!(counts.duplicates, 2);
    assert!(reason.contains("no new object"), "{reason}");
    // Nothing at all.
    let (reason, counts) = nothing(s.drain().await);
    assert_eq!(counts.messages, 0);
    assert!(reason.contains("no object arrived"), "{reason}");
    s.assert_exactly_once(&[1, 2, 3]);
    let jobs = std::fs::read_dir(s.root.join("work/jobs")).unwrap().count();
    assert_eq!(jobs, 2, "a drain of nothing creates no job");
}

#[tokio::test]
async fn a_replay_while_its_job_runs_is_pending_not_planned_again() {
    let s = site();
    s.upload("2026/a.csv", 1);
    s.arrive(&["2026/a.csv"]).await;
    let (job, _) = planned(s.drain().await);
    s.arrive(&["2026/a.csv"]).await;
    let (reason, counts) = nothing(s.drain().await);
    assert_eq!(counts.duplicates, 1);
    assert!(
        reason.contains(&job.summary.job_id.to_string()),
        "names the pending job: {reason}"
    );
    s.run(&job.summary.job_id).await;
    s.assert_exactly_once(&[1]);
    // Finalized: its drain record is removed by the next drain.
    nothing(s.drain().await);
    let records = std::fs::read_dir(s.root.join("work/arrivals/arrivals/drains"))
        .unwrap()
        .count();
    assert_eq!(records, 0);
}

#[tokio::test]
async fn stale_unselected_and_unreadable_messages_plan_nothing() {
    let s = site();
    s.upload("2026/gone.csv", 1);
    std::fs::remove_file(s.root.join("in/2026/gone.csv")).unwrap();
    s.upload("2026/_READY", 2);
    s.upload("2026/notes.txt", 3);
    s.arrive(&[
        "2026/gone.csv",
        "2026/_READY",
        "2026/notes.txt",
        "../elsewhere/x.csv",
    ])
    .await;
    s.arrivals
        .send(&["not an event".to_string()])
        .await
        .unwrap();
    let (reason, counts) = nothing(s.drain().await);
    assert_eq!(
        (
            counts.messages,
            counts.missing,
            counts.not_selected,
            counts.unreadable
        ),
        (5, 1, 3, 1),
        "{counts:?}"
    );
    assert!(reason.contains("1 gone since their event"), "{reason}");
    // The unreadable message is left for the queue's redrive; the others are deleted.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let left = s.arrivals.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(
        left.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["not an event"]
    );
    assert_eq!(left[0].receive_count, 2);
}

#[tokio::test]
async fn limits_bound_each_drain_and_leave_the_rest_for_the_next() {
    let s = site();
    let keys: Vec<String> = (1..=5).map(|n| format!("2026/o{n}.csv")).collect();
    for (n, k) in keys.iter().enumerate() {
        s.upload(k, n as i64 + 1);
    }
    s.arrive(&keys.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let limits = DrainLimits {
        max_objects: 2,
        ..DrainLimits::default()
    };
    let mut sizes = Vec::new();
    while let Drained::Planned { job, .. } = s.drain_with(limits, None).await {
        sizes.push(job.summary.objects);
        s.run(&job.summary.job_id).await;
    }
    assert_eq!(sizes, [2, 2, 1]);
    s.assert_exactly_once(&[1, 2, 3, 4, 5]);

    // By bytes: every object is over half the bound, so one per job.
    let size = std::fs::metadata(s.root.join("in/2026/o1.csv"))
        .unwrap()
        .len();
    for n in 6..=7 {
        s.upload(&format!("2026/o{n}.csv"), n);
    }
    s.arrive(&["2026/o6.csv", "2026/o7.csv"]).await;
    let limits = DrainLimits {
        max_bytes: size + size / 2,
        ..DrainLimits::default()
    };
    let (first, counts) = planned(s.drain_with(limits, None).await);
    assert_eq!((first.summary.objects, counts.left_for_next), (1, 1));
    let (second, _) = planned(s.drain_with(limits, None).await);
    assert_eq!(second.summary.objects, 1);
}

#[tokio::test]
async fn a_retried_drain_answers_its_first_job_and_takes_no_new_message() {
    let s = site();
    s.upload("2026/a.csv", 1);
    s.arrive(&["2026/a.csv"]).await;
    let (first, _) = planned(
        s.drain_with(DrainLimits::default(), Some("2026-12-01T10:05:00Z"))
            .await,
    );
    s.upload("2026/b.csv", 2);
    s.arrive(&["2026/b.csv"]).await;
    let (again, counts) = planned(
        s.drain_with(DrainLimits::default(), Some("2026-12-01T10:05:00Z"))
            .await,
    );
    assert_eq!(first.summary.job_id, again.summary.job_id);
    assert_eq!(counts.messages, 0);
    assert_eq!(
        s.arrivals.depth().await.unwrap().visible,
        1,
        "b waits for the next drain"
    );
    let (next, _) = planned(
        s.drain_with(DrainLimits::default(), Some("2026-12-01T10:10:00Z"))
            .await,
    );
    s.run(&first.summary.job_id).await;
    s.run(&next.summary.job_id).await;
    s.assert_exactly_once(&[1, 2]);
}

#[tokio::test]
async fn another_run_holding_the_lease_leaves_the_arrivals_for_the_next_drain() {
    let s = site();
    s.upload("2026/a.csv", 1);
    s.arrive(&["2026/a.csv"]).await;
    let work = s.env.store(&s.spec.work).unwrap();
    let lease =
        fanout::ledger::Lease::acquire(work, "arrivals", &fanout::ledger::LeaseOptions::default())
            .await
            .unwrap();
    let limits = DrainLimits {
        lease_wait: Duration::ZERO,
        ..DrainLimits::default()
    };
    let (reason, _) = nothing(s.drain_with(limits, None).await);
    assert!(reason.contains("holds its lease"), "{reason}");
    assert_eq!(s.arrivals.depth().await.unwrap().visible, 1);
    lease.release().await.unwrap();
    let (job, _) = planned(s.drain_with(limits, None).await);
    s.run(&job.summary.job_id).await;
    s.assert_exactly_once(&[1]);
}

/// A queue whose operations fail while `broken` is set: a planner that died there.
#[derive(Debug)]
struct Failing {
    inner: LocalQueue,
    fail_send: AtomicBool,
    fail_delete: AtomicBool,
}

fn crash(op: &'static str) -> QueueError {
    QueueError {
        op,
        message: "simulated crash".into(),
        retryable: false,
        source: None,
    }
}

#[async_trait]
impl Queue for Failing {
    async fn send(&self, bodies: &[String]) -> fanout::queue::Result<()> {
        if self.fail_send.load(Ordering::SeqCst) {
            return Err(crash("send"));
        }
        self.inner.send(bodies).await
    }
    async fn receive(&self, max: usize, wait: Duration) -> fanout::queue::Result<Vec<Message>> {
        self.inner.receive(max, wait).await
    }
    async fn delete(&self, receipt: &str) -> fanout::queue::Result<()> {
        if self.fail_delete.load(Ordering::SeqCst) {
            return Err(crash("delete"));
        }
        self.inner.delete(receipt).await
    }
    async fn change_visibility(
        &self,
        receipt: &str,
        timeout: Duration,
    ) -> fanout::queue::Result<()> {
        self.inner.change_visibility(receipt, timeout).await
    }
    async fn depth(&self) -> fanout::queue::Result<QueueDepth> {
        self.inner.depth().await
    }
}

#[tokio::test]
async fn a_crash_between_planning_and_deleting_the_messages_ingests_each_object_once() {
    let s = site();
    s.upload("2026/a.csv", 1);
    s.upload("2026/b.csv", 2);
    let arrivals = Failing {
        inner: LocalQueue::new("arrivals", Duration::from_millis(200)),
        fail_send: AtomicBool::new(false),
        fail_delete: AtomicBool::new(true),
    };
    let chunks = Failing {
        inner: LocalQueue::new("chunks", Duration::from_secs(60)),
        fail_send: AtomicBool::new(true),
        fail_delete: AtomicBool::new(false),
    };
    arrivals
        .send(&[s.event("2026/a.csv"), s.event("2026/b.csv")])
        .await
        .unwrap();
    let drain = |id: Option<&'static str>| {
        let (env, spec, a, c) = (&s.env, &s.spec, &arrivals, &chunks);
        async move { drain_arrivals(env, a, c, spec, DrainLimits::default(), id).await }
    };
    // 1. Dies sending the chunks: plan written, no drain record, messages kept.
    assert!(drain(None).await.is_err());
    chunks.fail_send.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 2. The messages came back: the same objects, the same job id; dies deleting them.
    let first_try = match drain(None).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the delete should have failed"),
    };
    assert!(first_try.contains("simulated crash"), "{first_try}");
    let jobs: Vec<_> = std::fs::read_dir(s.root.join("work/jobs"))
        .unwrap()
        .collect();
    assert_eq!(jobs.len(), 1, "one job id for the same objects");
    arrivals.fail_delete.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 3. They come back again: their objects are pending; the messages are only deleted.
    let (reason, counts) = match drain(None).await.unwrap() {
        Drained::Nothing { reason, counts } => (reason, counts),
        Drained::Planned { job, .. } => panic!("planned again: {}", job.summary.job_id),
    };
    assert_eq!(counts.duplicates, 2, "{reason}");
    assert!(arrivals.depth().await.unwrap().is_drained());
    let job_id = JobId::parse(
        jobs[0]
            .as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .into_owned(),
    )
    .unwrap();
    let worker = Worker::new(s.env.clone(), "test");
    for stage in ["chunks", "compaction bins"] {
        if stage != "chunks" {
            fanout::compact::start(&s.env, &s.spec.work, &job_id, &chunks, false)
                .await
                .unwrap();
        }
        while let Some(m) = chunks.receive(1, Duration::ZERO).await.unwrap().pop() {
            assert!(
                matches!(worker.handle_message(&m, 3).await, Disposition::Ack(_)),
                "{stage}"
            );
            chunks.delete(&m.receipt).await.unwrap();
        }
    }
    fanout::reducer::finalize_job(&s.env, &s.spec.work, &job_id)
        .await
        .unwrap();
    s.assert_exactly_once(&[1, 2]);
}
