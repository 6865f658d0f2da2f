//! A worker killed mid-chunk (out of memory, timed out) writes no failure record: its
//! attempt record is the only trace, and `job_status` calls the chunk lost once the
//! attempt cannot still be running. The clock is passed in; nothing sleeps.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fanout::env::Env;
use fanout::ids::ChunkId;
use fanout::job::{AttemptRecord, ChunkTask, layout};
use fanout::metrics::MemoryMetrics;
use fanout::reducer::{LOST_MARGIN_MS, finalize_job_at, job_status_at};
use fanout::spec::JobSpec;
use fanout::worker::{ChunkOutcome, FaultPoint, Faults, Worker};

/// Visibility timeout of these tests' worker, in seconds.
const VISIBILITY_S: u64 = 360;

/// Stops the worker before its first output file: with `process_attempt` (which, unlike
/// `handle_message`, writes no failure record) this is a worker killed mid-chunk.
struct KillBeforeOutput;

impl Faults for KillBeforeOutput {
    fn fire(&self, point: FaultPoint, _chunk_id: &ChunkId) -> bool {
        point == FaultPoint::BeforeFirstOutput
    }
}

fn spec(root: &Path) -> JobSpec {
    let r = root.display();
    let text = format!(
        r#"
name: lost
work: {r}/work/
input:
  location: {r}/in/
  format: csv
  schema:
    - {{ name: id, type: int64, nullable: false }}
    - {{ name: name, type: utf8 }}
output: {{ location: {r}/out/, target_file_size: off }}
rejects: {{ location: {r}/rejects/ }}
queue: {{ max_receive_count: 3 }}
"#
    );
    JobSpec::parse("lost.yaml", &text).unwrap()
}

/// A planned one-chunk job and the task of its chunk.
async fn planned(root: &Path) -> (Env, JobSpec, ChunkTask) {
    std::fs::create_dir_all(root.join("in")).unwrap();
    std::fs::write(root.join("in/a.csv"), "id,name\n1,a\n2,b\n").unwrap();
    let spec = spec(root);
    let env = Env::embedded(Arc::new(MemoryMetrics::new())).with_worker_memory_mb(1769);
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    assert_eq!(plan.chunks.len(), 1);
    let task = ChunkTask {
        job_id: plan.summary.job_id.clone(),
        work: spec.work.to_string(),
        chunk: plan.chunks[0].clone(),
    };
    (env, spec, task)
}

/// Runs attempt `attempt` of 3 through the real worker and kills it mid-chunk; returns
/// the attempt record it left.
async fn killed(env: &Env, spec: &JobSpec, task: &ChunkTask, attempt: u32) -> AttemptRecord {
    let worker = Worker::new(env.clone(), "lambda-1")
        .with_visibility_timeout(Duration::from_secs(VISIBILITY_S))
        .with_faults(Arc::new(KillBeforeOutput));
    let err = worker.process_attempt(task, attempt, 3).await.unwrap_err();
    assert!(err.to_string().contains("BeforeFirstOutput"), "{err}");
    let store = env.store(&spec.work).unwrap();
    assert!(
        store
            .head(&layout::failure(&task.job_id, &task.chunk.id))
            .await
            .unwrap()
            .is_none(),
        "a killed worker writes no failure record"
    );
    fanout::job::get_json(
        store.as_ref(),
        &layout::attempt(&task.job_id, &task.chunk.id),
    )
    .await
    .unwrap()
}

/// The first moment the attempt cannot still be running.
fn past_timeout(a: &AttemptRecord) -> u64 {
    a.started_ms + VISIBILITY_S * 1000 + LOST_MARGIN_MS + 1
}

#[tokio::test]
async fn a_killed_attempt_is_lost_once_past_its_visibility_timeout_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (env, spec, task) = planned(dir.path()).await;
    let a = killed(&env, &spec, &task, 1).await;
    assert_eq!(
        (a.attempt, a.last_attempt, a.stage.as_str(), a.memory_mb),
        (1, false, "store", Some(1769))
    );
    assert_eq!(a.visibility_timeout_s, Some(VISIBILITY_S));
    assert_eq!(a.worker, "lambda-1");

    // While it may still run, it is pending.
    let s = job_status_at(&env, &spec.work, &task.job_id, past_timeout(&a) - 1)
        .await
        .unwrap();
    assert!(s.lost.is_empty(), "{s:?}");
    assert_eq!(s.pending, 1);
    assert!(!s.is_settled());

    // Past it: lost, and the queue delivers it again (not settled).
    let s = job_status_at(&env, &spec.work, &task.job_id, past_timeout(&a))
        .await
        .unwrap();
    assert_eq!(s.lost, vec![a.clone()]);
    assert_eq!(
        (s.pending, s.failed.len(), s.dead_lettered.len()),
        (0, 0, 0)
    );
    assert!(!s.is_settled() && !s.is_complete());
    assert_eq!(s.lost_dead_lettered().count(), 0);

    // The JSON of a status without lost chunks has no `lost` field, and old JSON parses.
    let mut json = serde_json::to_value(&s).unwrap();
    json.as_object_mut().unwrap().remove("lost");
    let old: fanout::reducer::JobStatus = serde_json::from_value(json).unwrap();
    assert!(old.lost.is_empty());
}

#[tokio::test]
async fn a_killed_last_attempt_settles_the_job_and_finalize_names_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (env, spec, task) = planned(dir.path()).await;
    let a = killed(&env, &spec, &task, 3).await;
    assert!(a.last_attempt);

    let s = job_status_at(&env, &spec.work, &task.job_id, past_timeout(&a))
        .await
        .unwrap();
    assert_eq!(s.lost_dead_lettered().count(), 1);
    assert!(s.is_settled() && !s.is_complete(), "{s:?}");

    let err = finalize_job_at(&env, &spec.work, &task.job_id, past_timeout(&a))
        .await
        .unwrap_err()
        .to_string();
    for part in [
        "1 of 1 chunks are not committed (1 failed for good)",
        task.chunk.id.as_str(),
        "lost on attempt 3, the last: dead-lettered",
        "last stage store",
        "1769 MB worker",
        "out of memory or timed out",
    ] {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
}

#[tokio::test]
async fn a_failure_record_of_the_attempt_means_it_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (env, spec, task) = planned(dir.path()).await;
    let worker = Worker::new(env.clone(), "lambda-1")
        .with_visibility_timeout(Duration::from_secs(VISIBILITY_S))
        .with_faults(Arc::new(KillBeforeOutput));
    let msg = fanout::queue::Message {
        id: "m".into(),
        receipt: "r".into(),
        body: serde_json::to_string(&task).unwrap(),
        receive_count: 3,
    };
    // The same crash through `handle_message`: an error, so a failure record is written.
    assert!(matches!(
        worker.handle_message(&msg, 3).await,
        fanout::worker::Disposition::Retry(_)
    ));
    let s = job_status_at(&env, &spec.work, &task.job_id, u64::MAX / 2)
        .await
        .unwrap();
    assert!(s.lost.is_empty(), "{s:?}");
    assert_eq!(s.dead_lettered.len(), 1);
}

#[tokio::test]
async fn a_committed_chunk_or_a_worker_without_a_visibility_timeout_is_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (env, spec, task) = planned(dir.path()).await;
    // A killed attempt of a worker that states no lease (a local run, or a fleet worker
    // built without `with_renewed_visibility`): no bound on how long it may run, so never
    // lost.
    let fleet = Worker::new(env.clone(), "fleet-1").with_faults(Arc::new(KillBeforeOutput));
    fleet.process_attempt(&task, 3, 3).await.unwrap_err();
    let s = job_status_at(&env, &spec.work, &task.job_id, u64::MAX / 2)
        .await
        .unwrap();
    assert!(s.lost.is_empty() && s.pending == 1, "{s:?}");

    // Committed by the next attempt: never lost, however late.
    let worker = Worker::new(env.clone(), "lambda-2")
        .with_visibility_timeout(Duration::from_secs(VISIBILITY_S));
    assert!(matches!(
        worker.process_attempt(&task, 3, 3).await.unwrap(),
        ChunkOutcome::Committed(_)
    ));
    let s = job_status_at(&env, &spec.work, &task.job_id, u64::MAX / 2)
        .await
        .unwrap();
    assert!(s.lost.is_empty() && s.is_complete(), "{s:?}");
    finalize_job_at(&env, &spec.work, &task.job_id, u64::MAX / 2)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lambda_attempt_is_lost_past_its_invocation_deadline_long_before_its_visibility_timeout()
{
    let dir = tempfile::tempdir().unwrap();
    let (env, spec, task) = planned(dir.path()).await;
    let deadline_ms = fanout::clock::now_ms() + 20_000;
    let worker = Worker::new(env.clone(), "lambda-1")
        .with_visibility_timeout(Duration::from_secs(VISIBILITY_S))
        .with_faults(Arc::new(KillBeforeOutput))
        .until(deadline_ms);
    worker.process_attempt(&task, 3, 3).await.unwrap_err();
    let store = env.store(&spec.work).unwrap();
    let a: AttemptRecord = fanout::job::get_json(
        store.as_ref(),
        &layout::attempt(&task.job_id, &task.chunk.id),
    )
    .await
    .unwrap();
    assert_eq!(
        (a.deadline_ms, a.visibility_timeout_s),
        (Some(deadline_ms), Some(VISIBILITY_S))
    );
    let lost_at = deadline_ms + LOST_MARGIN_MS + 1;
    assert!(lost_at < past_timeout(&a));
    let s = job_status_at(&env, &spec.work, &task.job_id, lost_at - 1)
        .await
        .unwrap();
    assert!(s.lost.is_empty() && s.pending == 1, "{s:?}");
    let s = job_status_at(&env, &spec.work, &task.job_id, lost_at)
        .await
        .unwrap();
    assert_eq!(s.lost_dead_lettered().count(), 1, "{s:?}");
    assert!(s.is_settled());
    let line = fanout::reducer::describe_lost(&s.lost[0]);
    assert!(
        line.contains(&format!("invocation deadline {deadline_ms} ms")),
        "{line}"
    );
}

/// Holds the chunk up before its first output for a while, then kills it: a chunk that
/// runs longer than its visibility timeout, then dies.
struct SlowThenKilled(Duration);

impl Faults for SlowThenKilled {
    fn fire(&self, point: FaultPoint, _chunk_id: &ChunkId) -> bool {
        if point == FaultPoint::BeforeFirstOutput {
            std::thread::sleep(self.0);
        }
        point == FaultPoint::BeforeFirstOutput
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewing_worker_refreshes_its_attempt_record_and_is_lost_a_timeout_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let (env, spec, task) = planned(dir.path()).await;
    // Renewed every 1/3 s; the chunk runs 2 s, twice its visibility timeout.
    let worker = Worker::new(env.clone(), "fleet-1")
        .with_renewed_visibility(Duration::from_secs(1))
        .with_faults(Arc::new(SlowThenKilled(Duration::from_secs(2))));
    worker.process_attempt(&task, 1, 1).await.unwrap_err();
    let store = env.store(&spec.work).unwrap();
    let a: AttemptRecord = fanout::job::get_json(
        store.as_ref(),
        &layout::attempt(&task.job_id, &task.chunk.id),
    )
    .await
    .unwrap();
    let alive = a.alive_ms.unwrap();
    assert!(
        alive >= a.started_ms + 1_500,
        "heard of {} ms after the start",
        alive - a.started_ms
    );
    // The heartbeat kept the stage the chunk had reached.
    assert_eq!(a.stage, "store");
    // Never lost while heard of within its visibility timeout, though it started long ago.
    let lost_at = alive + 1_000 + LOST_MARGIN_MS + 1;
    let s = job_status_at(&env, &spec.work, &task.job_id, lost_at - 1)
        .await
        .unwrap();
    assert!(s.lost.is_empty(), "{s:?}");
    let s = job_status_at(&env, &spec.work, &task.job_id, lost_at)
        .await
        .unwrap();
    assert_eq!(s.lost_dead_lettered().count(), 1, "{s:?}");
    assert!(
        fanout::reducer::describe_lost(&s.lost[0])
            .contains(&format!("last heard of at {alive} ms"))
    );
}
