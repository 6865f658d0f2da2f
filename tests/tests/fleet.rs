//! The fleet worker (`fanout worker --queue URL`) survives failing queue calls: it backs
//! off and goes on; only when every task has given up does it fail.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fanout::env::Env;
use fanout::fleet::{QueueBackoff, ServeOptions};
use fanout::metrics::MemoryMetrics;
use fanout::queue::{LocalQueue, Message, Queue, QueueDepth, QueueError};
use fanout::spec::JobSpec;
use fanout::worker::Worker;

/// A queue whose first `failing` receives fail (as SQS does after the SDK's retries),
/// and whose deletes fail while `failing_deletes` lasts; then the real queue answers.
#[derive(Debug)]
struct Failing {
    inner: LocalQueue,
    failing: AtomicU32,
    failing_deletes: AtomicU32,
}

fn unavailable(op: &'static str) -> QueueError {
    QueueError {
        op,
        message: "ServiceUnavailable (injected)".into(),
        retryable: true,
        source: None,
    }
}

/// Takes one from `n` while it is above zero: whether a failure is due.
fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl Queue for Failing {
    async fn send(&self, bodies: &[String]) -> fanout::queue::Result<()> {
        self.inner.send(bodies).await
    }
    async fn receive(&self, max: usize, wait: Duration) -> fanout::queue::Result<Vec<Message>> {
        if take(&self.failing) {
            return Err(unavailable("receive"));
        }
        self.inner.receive(max, wait).await
    }
    async fn delete(&self, receipt: &str) -> fanout::queue::Result<()> {
        if take(&self.failing_deletes) {
            return Err(unavailable("delete"));
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

fn spec(root: &Path) -> JobSpec {
    let r = root.display();
    let text = format!(
        r#"
name: t
work: {r}/work/
input:
  location: {r}/in/
  format: csv
  schema:
    - {{ name: id, type: int64, nullable: false }}
chunking: {{ target_size: 64MiB, max_objects_per_chunk: 1 }}
output: {{ location: {r}/out/, target_file_size: off }}
rejects: {{ location: {r}/rejects/ }}
"#
    );
    JobSpec::parse("test.yaml", &text).unwrap()
}

fn options(give_up_after: u32) -> ServeOptions {
    ServeOptions {
        max_receive_count: 3,
        concurrency: 2,
        visibility: Duration::from_secs(30),
        grace: Duration::from_secs(5),
        backoff: QueueBackoff {
            first: Duration::from_millis(5),
            cap: Duration::from_millis(40),
            give_up_after,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_worker_backs_off_failing_queue_calls_and_completes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    for i in 0..3 {
        std::fs::write(root.join(format!("in/{i}.csv")), format!("id\n{i}\n")).unwrap();
    }
    let spec = spec(root);
    let metrics = Arc::new(MemoryMetrics::new());
    let env = Env::embedded(metrics.clone());
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    assert_eq!(plan.chunks.len(), 3);
    // Eight receives fail (a task that ended on its first error would leave the job
    // undone), and two deletes (those messages come back and are acknowledged as
    // duplicates of their committed chunks).
    let queue = Arc::new(Failing {
        inner: LocalQueue::new("chunks", Duration::from_secs(1)),
        failing: AtomicU32::new(8),
        failing_deletes: AtomicU32::new(2),
    });
    fanout::planner::enqueue(
        queue.as_ref(),
        &spec.work,
        env.store(&spec.work).unwrap().as_ref(),
        &plan.summary.job_id,
        &plan.chunks,
    )
    .await
    .unwrap();
    let (env2, work, job) = (env.clone(), spec.work.clone(), plan.summary.job_id.clone());
    let q2 = queue.clone();
    let done = async move {
        loop {
            let complete = fanout::reducer::job_status(&env2, &work, &job)
                .await
                .unwrap()
                .is_complete();
            if complete && q2.depth().await.unwrap().is_drained() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let worker = Arc::new(Worker::new(env.clone(), "fleet"));
    let q: Arc<dyn Queue> = queue.clone();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        fanout::fleet::serve(worker, q, options(10), done),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.queue_errors, 10, "{report:?}");
    assert_eq!(report.tasks_failed, 0, "{report:?}");
    // One chunk deleted at once; the two whose deletes failed acknowledged on redelivery.
    assert_eq!(report.acknowledged, 3, "{report:?}");
    assert_eq!(metrics.sum(fanout::metrics::names::CHUNKS_DUPLICATE), 2.0);
    let m = fanout::reducer::finalize_job(&env, &spec.work, &plan.summary.job_id)
        .await
        .unwrap();
    assert_eq!(m.counts.written, 3);
}

#[tokio::test]
async fn a_fleet_worker_whose_tasks_all_give_up_fails_without_waiting_for_a_stop() {
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let queue: Arc<dyn Queue> = Arc::new(Failing {
        inner: LocalQueue::new("chunks", Duration::from_secs(30)),
        failing: AtomicU32::new(u32::MAX),
        failing_deletes: AtomicU32::new(0),
    });
    let worker = Arc::new(Worker::new(env, "fleet"));
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        fanout::fleet::serve(worker, queue, options(3), std::future::pending()),
    )
    .await
    .expect("serve must end once every task gave up")
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("every fleet task (2) ended on errors") && err.contains("ServiceUnavailable"),
        "{err}"
    );
}
