//! The Lambda handlers, fed the sample events in `events/` (the shapes `sam local invoke -e`
//! takes), on the embedded adapters.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use fanout::env::Env;
use fanout::location::Location;
use fanout::metrics::MemoryMetrics;
use fanout::queue::{LocalQueue, Queue};
use fanout::worker::Worker;
use lambda_runtime::{Context, LambdaEvent};

fn event(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(common::repo().join("events").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn setup(root: &Path) -> std::path::PathBuf {
    let input = root.join("in/2026");
    std::fs::create_dir_all(&input).unwrap();
    let mut csv = String::from("id,amount\n");
    for i in 1..=3000 {
        csv.push_str(&format!("{i},{}.25\n", i % 50));
    }
    std::fs::write(input.join("orders 11über (2).csv"), csv).unwrap();
    let r = root.display();
    let spec = format!(
        "name: h\nwork: {r}/work/\ninput: {{ location: {r}/in/, format: csv, schema: [{{ name: id, type: int64 }}, {{ name: amount, type: \"decimal(10,2)\" }}] }}\n\
         chunking: {{ target_size: 8KiB }}\noutput: {{ location: {r}/out/ }}\nrejects: {{ location: {r}/rejects/ }}\n\
         aggregate: {{ measures: [{{ name: total, fn: sum, column: amount }}] }}\n"
    );
    let path = root.join("spec.yaml");
    std::fs::write(&path, spec).unwrap();
    path
}

#[test]
fn the_s3_event_key_is_url_decoded_and_made_relative_to_the_input() {
    let req = fanout_planner::parse_event(&event("s3-object-created.json")).unwrap();
    let fanout_planner::Request::Uploaded(objects) = req else {
        panic!("{req:?}")
    };
    assert_eq!(
        objects,
        vec![(
            "fanout-input-123456789012".to_string(),
            "raw/orders/2026/orders 11über (2).csv".to_string()
        )]
    );
    let input = Location::parse("s3://fanout-input-123456789012/raw/orders/").unwrap();
    assert_eq!(
        fanout_planner::uploaded_keys(&input, &objects),
        vec!["2026/orders 11über (2).csv"]
    );
    let other = Location::parse("s3://another-bucket/raw/orders/").unwrap();
    assert!(fanout_planner::uploaded_keys(&other, &objects).is_empty());
}

#[test]
fn the_eventbridge_and_step_functions_inputs_are_understood() {
    let req = fanout_planner::parse_event(&event("eventbridge-object-created.json")).unwrap();
    assert_eq!(
        req,
        fanout_planner::Request::Uploaded(vec![(
            "fanout-input-123456789012".into(),
            "raw/orders/2026/orders-11.csv".into()
        )])
    );
    let req = fanout_planner::parse_event(&event("sfn-plan.json")).unwrap();
    assert_eq!(
        req,
        fanout_planner::Request::SpecAt(
            "s3://fanout-work-123456789012/specs/orders.yaml".into(),
            None
        )
    );
    let err = fanout_planner::parse_event(&serde_json::json!({"hello": 1})).unwrap_err();
    assert!(err.to_string().contains("spec_location"), "{err}");
}

#[test]
fn the_schedules_input_asks_for_a_drain_named_by_its_time() {
    let req = fanout_planner::parse_event(&event("sfn-drain-arrivals.json")).unwrap();
    assert_eq!(
        req,
        fanout_planner::Request::DrainArrivals {
            drain_id: Some("2026-12-01T10:05:00Z".into()),
            spec_location: None,
        }
    );
    let err = fanout_planner::parse_event(&serde_json::json!({"drain": "everything"})).unwrap_err();
    assert!(err.to_string().contains("expected \"arrivals\""), "{err}");
}

#[tokio::test]
async fn plan_then_worker_batch_then_status_and_finalize() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let spec_path = setup(root);
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let queue = LocalQueue::new("chunks", std::time::Duration::from_secs(60));

    // Planner, with the Step Functions input pointing at the local spec.
    let mut plan_event = event("sfn-plan.json");
    plan_event["spec_location"] = serde_json::json!(spec_path.display().to_string());
    let settings = fanout_planner::Settings {
        default_spec: None,
        work: None,
        arrivals: None,
    };
    let planned = fanout_planner::handle(&env, &queue, &settings, plan_event)
        .await
        .unwrap()
        .into_planned()
        .unwrap();
    assert!(planned.chunks >= 3, "{planned:?}");
    assert_eq!(planned.sent, planned.chunks);

    // Worker: the sample SQS batch, its first bodies replaced by the real chunk messages;
    // the malformed third message is acknowledged (recorded), not retried.
    let msgs = queue
        .receive(10, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let mut sqs: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_value(event("sqs-chunk-batch.json")).unwrap();
    let poison = sqs.records.pop().unwrap();
    let template = sqs.records[0].clone();
    sqs.records = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut r = template.clone();
            r.message_id = Some(format!("m{i}"));
            r.body = Some(m.body.clone());
            r
        })
        .chain([poison])
        .collect();
    let worker = Worker::new(env.clone(), "test");
    let settings = fanout_worker::Settings {
        max_receive_count: 3,
        min_remaining: std::time::Duration::from_secs(30),
    };
    let mut ctx = Context::default();
    ctx.deadline = fanout::clock::now_ms() + 900_000;
    let resp = fanout_worker::handle(
        &worker,
        &settings,
        LambdaEvent::new(sqs.clone(), ctx.clone()),
    )
    .await;
    assert!(
        resp.batch_item_failures.is_empty(),
        "{:?}",
        resp.batch_item_failures
            .iter()
            .map(|f| &f.item_identifier)
            .collect::<Vec<_>>()
    );

    // Each attempt record carries the invocation's deadline: past it (and the margin), an
    // attempt without a commit record would be lost, long before the visibility timeout.
    let work_store = env.store(&Location::parse(&planned.work).unwrap()).unwrap();
    let job_id = planned.job_id.clone();
    let first = fanout::job::ChunkTask::from_body(&msgs[0].body).unwrap();
    let attempt: fanout::job::AttemptRecord = fanout::job::get_json(
        work_store.as_ref(),
        &fanout::job::layout::attempt(&job_id, &first.chunk.id),
    )
    .await
    .unwrap();
    assert_eq!(attempt.deadline_ms, Some(ctx.deadline));
    assert_eq!(attempt.ends_by_ms(), Some(ctx.deadline));

    // Too little time left: every message is handed back untouched.
    ctx.deadline = fanout::clock::now_ms() + 5_000;
    let resp = fanout_worker::handle(&worker, &settings, LambdaEvent::new(sqs.clone(), ctx)).await;
    assert_eq!(resp.batch_item_failures.len(), sqs.records.len());

    // Reducer: status (every chunk committed, compaction due), compact (the Compact step:
    // bins queued on the chunk queue, run by the worker handler), status again (complete),
    // then finalize (twice: idempotent).
    let work = Location::parse(&planned.work).unwrap();
    let mut status = event("sfn-status.json");
    status["job_id"] = serde_json::json!(planned.job_id);
    status["work"] = serde_json::json!(planned.work);
    let reply = |v: serde_json::Value| -> fanout_reducer::StatusReply {
        serde_json::from_value(v).unwrap()
    };
    let s = reply(
        fanout_reducer::handle(&env, None, &Default::default(), status.clone())
            .await
            .unwrap(),
    );
    assert!(
        s.compaction_due && !s.complete && !s.settled && s.committed == planned.chunks,
        "{s:?}"
    );
    let mut compact = event("sfn-compact.json");
    compact["job_id"] = serde_json::json!(planned.job_id);
    compact["work"] = serde_json::json!(planned.work);
    // Without the chunk queue the action is refused, saying why.
    let refused = fanout_reducer::handle(&env, None, &Default::default(), compact.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("FANOUT_QUEUE_URL"), "{refused}");
    let shared: Arc<dyn fanout::queue::Queue> = Arc::new(queue);
    let with_queue = fanout::reducer::StatusQueues {
        chunks: Some(shared.clone()),
        dead_letter: None,
    };
    let started: fanout_reducer::CompactReply = serde_json::from_value(
        fanout_reducer::handle(&env, None, &with_queue, compact.clone())
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        started.bins >= 1 && started.sent == started.bins,
        "{started:?}"
    );
    // Again: the stage was started, nothing is sent twice.
    let again: fanout_reducer::CompactReply = serde_json::from_value(
        fanout_reducer::handle(&env, None, &with_queue, compact)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(0, again.sent);
    let bins = shared
        .receive(10, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(bins.len() as u64, started.bins);
    let mut batch = sqs.clone();
    batch.records = bins
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut r = template.clone();
            r.message_id = Some(format!("b{i}"));
            r.body = Some(m.body.clone());
            r
        })
        .collect();
    let mut ctx = Context::default();
    ctx.deadline = fanout::clock::now_ms() + 900_000;
    let resp = fanout_worker::handle(&worker, &settings, LambdaEvent::new(batch, ctx)).await;
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    let s = reply(
        fanout_reducer::handle(&env, None, &Default::default(), status)
            .await
            .unwrap(),
    );
    assert!(
        s.complete && s.settled && s.committed == planned.chunks && s.bins_committed == s.bins,
        "{s:?}"
    );
    let mut fin = event("sfn-finalize.json");
    fin["job_id"] = serde_json::json!(planned.job_id);
    fin.as_object_mut().unwrap().remove("work");
    let a = fanout_reducer::handle(&env, Some(&work), &Default::default(), fin.clone())
        .await
        .unwrap();
    let b = fanout_reducer::handle(&env, Some(&work), &Default::default(), fin)
        .await
        .unwrap();
    assert_eq!(a, b);
    let f: fanout_reducer::FinalizeReply = serde_json::from_value(a).unwrap();
    assert_eq!(
        (f.outcome.as_str(), f.rows_read, f.rows_written),
        ("succeeded", 3000, 3000)
    );
    // The reply names the aggregate table (one row: no group-by), not its rows.
    let table = f.aggregate.expect("the aggregate table in the reply");
    assert_eq!(table.rows, 1);
    assert!(
        table.key.ends_with("/aggregates.parquet") && table.bytes > 0,
        "{table:?}"
    );
    let bad = fanout_reducer::handle(
        &env,
        Some(&work),
        &Default::default(),
        serde_json::json!({"action": "explode", "job_id": "x"}),
    )
    .await
    .unwrap_err();
    assert!(bad.to_string().contains("bad request"), "{bad}");
}

/// A job of three one-object chunks (no packing).
fn setup_three_objects(root: &Path) -> std::path::PathBuf {
    let input = root.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for name in ["a", "b", "c"] {
        let mut csv = String::from("id,amount\n");
        for i in 1..=100 {
            csv.push_str(&format!("{i},{i}.50\n"));
        }
        std::fs::write(input.join(format!("{name}.csv")), csv).unwrap();
    }
    let r = root.display();
    let spec = format!(
        "name: three\nwork: {r}/work/\ninput: {{ location: {r}/in/, format: csv, schema: [{{ name: id, type: int64 }}, {{ name: amount, type: \"decimal(10,2)\" }}] }}\n\
         chunking: {{ target_size: 64MiB, max_objects_per_chunk: 1 }}\noutput: {{ location: {r}/out/ }}\nrejects: {{ location: {r}/rejects/ }}\n"
    );
    let path = root.join("spec.yaml");
    std::fs::write(&path, spec).unwrap();
    path
}

/// Files (chunk or failure records, `<chunk id>.json`) under `work/jobs/<job>/<dir>/`.
fn record_ids(root: &Path, job_id: &str, dir: &str) -> std::collections::BTreeSet<String> {
    match std::fs::read_dir(root.join("work/jobs").join(job_id).join(dir)) {
        Ok(entries) => entries
            .map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.trim_end_matches(".json").to_string()
            })
            .collect(),
        Err(_) => Default::default(),
    }
}

#[tokio::test]
async fn one_failing_chunk_of_a_batch_reports_only_its_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let spec_path = setup_three_objects(root);
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let queue = LocalQueue::new("chunks", std::time::Duration::from_secs(60));
    let mut plan_event = event("sfn-plan.json");
    plan_event["spec_location"] = serde_json::json!(spec_path.display().to_string());
    let settings = fanout_planner::Settings {
        default_spec: None,
        work: None,
        arrivals: None,
    };
    let planned = fanout_planner::handle(&env, &queue, &settings, plan_event)
        .await
        .unwrap()
        .into_planned()
        .unwrap();
    assert_eq!((planned.chunks, planned.sent), (3, 3), "{planned:?}");

    // The real chunk messages in the sample SQS batch's envelope, each with its own id.
    let msgs = queue
        .receive(10, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(msgs.len(), 3);
    let mut sqs: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_value(event("sqs-chunk-batch.json")).unwrap();
    let template = sqs.records[0].clone();
    let mut failing = None;
    let mut good_chunks = std::collections::BTreeSet::new();
    sqs.records = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            let chunk_id = body["chunk"]["id"].as_str().unwrap().to_string();
            let key = body["chunk"]["pieces"][0]["key"].as_str().unwrap();
            // The middle message's input object is gone: only its chunk can fail.
            if i == 1 {
                std::fs::remove_file(root.join("in").join(key)).unwrap();
                failing = Some((format!("msg-{i}"), chunk_id));
            } else {
                good_chunks.insert(chunk_id);
            }
            let mut r = template.clone();
            r.message_id = Some(format!("msg-{i}"));
            r.body = Some(m.body.clone());
            r
        })
        .collect();
    let (failing_msg, failing_chunk) = failing.unwrap();

    let worker = Worker::new(env.clone(), "test");
    let settings = fanout_worker::Settings {
        max_receive_count: 3,
        min_remaining: std::time::Duration::from_secs(30),
    };
    let mut ctx = Context::default();
    ctx.deadline = fanout::clock::now_ms() + 900_000;
    let resp = fanout_worker::handle(&worker, &settings, LambdaEvent::new(sqs, ctx)).await;
    let reported: Vec<&str> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(reported, vec![failing_msg.as_str()]);

    // Its neighbours committed; the failed chunk left a failure record and no commit.
    assert_eq!(record_ids(root, &planned.job_id, "chunks"), good_chunks);
    assert_eq!(
        record_ids(root, &planned.job_id, "failures"),
        [failing_chunk.clone()].into()
    );
    let mut status = event("sfn-status.json");
    status["job_id"] = serde_json::json!(planned.job_id);
    status["work"] = serde_json::json!(planned.work);
    let s: fanout_reducer::StatusReply = serde_json::from_value(
        fanout_reducer::handle(&env, None, &Default::default(), status)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (s.committed, s.failed, s.dead_lettered, s.complete),
        (2, 1, 0, false),
        "{s:?}"
    );
    assert!(
        s.failed_chunks.iter().any(|c| c.contains(&failing_chunk)),
        "{s:?}"
    );
}

/// A job or chunk id that would address another job's keys (`a/b`, `..`) is refused where
/// it enters: the planner's Step Functions input, the reducer's request, a chunk message.
#[tokio::test]
async fn ids_that_would_leave_their_key_prefix_are_refused_at_every_entry_point() {
    let mut plan = event("sfn-plan.json");
    plan["job_id"] = "a/b".into();
    let err = fanout_planner::parse_event(&plan).unwrap_err().to_string();
    assert!(
        err.contains("job_id") && err.contains("not a job id"),
        "{err}"
    );
    plan["job_id"] = 7.into();
    let err = fanout_planner::parse_event(&plan).unwrap_err().to_string();
    assert!(err.contains("expected a string"), "{err}");
    plan["job_id"] = "orders-2026.12.01".into();
    assert!(matches!(
        fanout_planner::parse_event(&plan),
        Ok(fanout_planner::Request::SpecAt(_, Some(id))) if id == "orders-2026.12.01"
    ));

    let root = tempfile::tempdir().unwrap();
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let work = Location::parse(&root.path().join("work/").display().to_string()).unwrap();
    for bad in ["../x", "a/b", ".."] {
        let mut status = event("sfn-status.json");
        status["job_id"] = bad.into();
        let err = fanout_reducer::handle(&env, Some(&work), &Default::default(), status)
            .await
            .unwrap_err();
        assert!(
            matches!(err, fanout_reducer::ReduceError::Request(ref m) if m.contains("not a job id")),
            "{bad}: {err}"
        );
    }

    let batch = event("sqs-chunk-batch.json");
    let body = batch["Records"][0]["body"].as_str().unwrap();
    let mut task: serde_json::Value = serde_json::from_str(body).unwrap();
    task["job_id"] = "../other-job".into();
    let err = fanout::job::ChunkTask::from_body(&task.to_string()).unwrap_err();
    assert_eq!(err.kind(), "MalformedMessage");
    assert!(err.to_string().contains("not a job id"), "{err}");

    let mut task: serde_json::Value = serde_json::from_str(body).unwrap();
    task["work"] = "s3://".into();
    let err = fanout::job::ChunkTask::from_body(&task.to_string()).unwrap_err();
    assert_eq!(err.kind(), "MalformedMessage");
    assert!(err.to_string().contains("work location"), "{err}");
}
