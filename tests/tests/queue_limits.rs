//! Chunk messages stay within SQS's message size limit on the embedded default: a job
//! whose packed chunks would overflow a message by object count alone is planned into
//! chunks that fit, enqueued on the size-enforcing embedded queue, and run to success.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use fanout::env::Env;
use fanout::metrics::MemoryMetrics;
use fanout::runner::{RunOptions, Silent, run_local};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_long_keys_fit_their_messages_and_the_job_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::long_key_job(dir.path());
    assert_eq!(spec.queue.max_message_bytes, 256 * 1024);
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));

    let report = run_local(&env, &spec, &RunOptions::default(), Arc::new(Silent))
        .await
        .unwrap();
    let plan = &report.plan;
    assert!(plan.chunks.len() > 1, "{} chunks", plan.chunks.len());
    common::assert_messages_fit(&spec, &plan.summary.job_id, &plan.chunks);
    let m = report.result.unwrap();
    let n = common::LONG_KEY_OBJECTS as u64;
    assert_eq!((m.counts.read, m.counts.written), (n, n));
    assert_eq!(report.chunks_run, plan.chunks.len() as u64);

    // Planned again, the same chunks: ids stay deterministic.
    let again = fanout::planner::compute_plan(&env, &spec).await.unwrap();
    assert_eq!(again.chunks, plan.chunks);
}

#[tokio::test]
async fn a_chunk_that_cannot_fit_the_limit_is_refused_at_planning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let key = format!("{}.csv", "k".repeat(1500));
    // Longer than a file name may be: a folder per 200 characters.
    let path: String = key
        .as_bytes()
        .chunks(200)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("/");
    let p = root.join("in").join(&path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, "id,v\n1,2\n").unwrap();
    let r = root.display();
    let text = format!(
        "name: tiny\nwork: {r}/work/\n\
         input: {{ location: {r}/in/, format: csv, schema: [{{name: id, type: int64}}, {{name: v, type: int64}}] }}\n\
         output: {{ location: {r}/out/ }}\n\
         rejects: {{ location: {r}/rejects/ }}\n\
         queue: {{ max_message_size: 1KiB }}\n"
    );
    let spec = fanout::spec::JobSpec::parse("tiny.yaml", &text).unwrap();
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let e = fanout::planner::plan_job(&env, &spec).await.unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains(&path[..40]), "{shown}");
    assert!(
        shown.contains("queue.max_message_size (1024 bytes)"),
        "{shown}"
    );
    assert!(
        !root.join("work").join("jobs").exists(),
        "nothing may be written for a plan that cannot be sent"
    );
}
