//! Deterministic retries, enforced: every worker of a job joins the lookup versions the
//! job was planned with, and SQL whose result differs between runs is refused.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use fanout::env::Env;
use fanout::job::ChunkTask;
use fanout::metrics::MemoryMetrics;
use fanout::spec::JobSpec;
use fanout::worker::{ChunkOutcome, Worker};

fn spec_with(root: &Path, sql: &str) -> JobSpec {
    pinned_spec(root, sql, "")
}

/// The spec; `lookup_extra` adds fields to the lookup's mapping.
fn pinned_spec(root: &Path, sql: &str, lookup_extra: &str) -> JobSpec {
    let r = root.display();
    JobSpec::parse(
        "job.yaml",
        &format!(
            r#"
name: pinned
work: {r}/work/
input:
  location: {r}/in/
  format: csv
  schema:
    - {{ name: id, type: int64 }}
    - {{ name: customer_id, type: utf8 }}
chunking: {{ target_size: 1KiB, max_objects_per_chunk: 1 }}
transform:
  lookups:
    - {{ name: customers, location: {r}/ref/customers.csv, format: csv{lookup_extra} }}
  sql: |
    {sql}
output: {{ location: {r}/out/ }}
rejects: {{ location: {r}/rejects/ }}
"#
        ),
    )
    .unwrap()
}

const JOIN: &str = "SELECT i.id, c.region FROM input i LEFT JOIN customers c USING (customer_id)";

fn write_inputs(root: &Path) {
    std::fs::create_dir_all(root.join("in")).unwrap();
    std::fs::create_dir_all(root.join("ref")).unwrap();
    for f in 0..2 {
        let mut text = String::from("id,customer_id\n");
        for i in 0..50 {
            text.push_str(&format!("{},C{}\n", f * 50 + i, i % 2));
        }
        std::fs::write(root.join(format!("in/{f}.csv")), text).unwrap();
    }
    std::fs::write(
        root.join("ref/customers.csv"),
        "customer_id,region\nC0,EU\nC1,US\n",
    )
    .unwrap();
}

fn env() -> Env {
    Env::embedded(Arc::new(MemoryMetrics::new()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_changed_after_planning_fails_its_chunks_for_good_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_inputs(root);
    let spec = spec_with(root, JOIN);
    let env = env();
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    assert_eq!(plan.chunks.len(), 2);
    let task = |i: usize| ChunkTask {
        job_id: plan.summary.job_id.clone(),
        work: spec.work.to_string(),
        chunk: plan.chunks[i].clone(),
    };

    // The stored spec pins the version the planner saw.
    let lookup = fanout::store::FsStore::new(root.join("ref"));
    let seen = fanout::store::ObjectStore::head(&lookup, "customers.csv")
        .await
        .unwrap()
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            root.join("work")
                .join(fanout::job::layout::spec(&plan.summary.job_id)),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        stored["transform"]["lookups"][0]["etag"],
        seen.etag.as_str()
    );

    // One chunk runs against the planned version.
    let first = Worker::new(env.clone(), "first");
    assert!(matches!(
        first.process_chunk(&task(0), 1).await.unwrap(),
        ChunkOutcome::Committed(_)
    ));

    // The lookup is edited; a worker that starts now (a retry, another container) must not
    // join the new rows into the job's other chunk.
    std::fs::write(
        root.join("ref/customers.csv"),
        "customer_id,region\nC0,APAC\nC1,APAC\nC2,EU\n",
    )
    .unwrap();
    let late = Worker::new(env.clone(), "late");
    let err = late.process_chunk(&task(1), 1).await.unwrap_err();
    let msg = err.to_string();
    assert!(!err.is_retryable(), "{msg}");
    assert_eq!(err.kind(), "InputError");
    assert!(
        msg.contains("lookup `customers` changed since the job was planned")
            && msg.contains("customers.csv")
            && msg.contains(&seen.etag),
        "{msg}"
    );
    let work = env.store(&spec.work).unwrap();
    let committed = fanout::job::committed_ids(work.as_ref(), &plan.summary.job_id)
        .await
        .unwrap();
    assert!(
        !committed.contains(&plan.chunks[1].id),
        "nothing of it committed"
    );

    // Planned again, the spec is another job, pinned to the new version.
    let again = fanout::planner::plan_job(&env, &spec).await.unwrap();
    assert_ne!(again.summary.job_id, plan.summary.job_id);
}

#[tokio::test]
async fn a_spec_pinning_another_lookup_version_is_refused_at_planning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_inputs(root);
    let spec = pinned_spec(root, JOIN, ", etag: v-old");
    assert_eq!(spec.transform.lookups[0].etag.as_deref(), Some("v-old"));
    let err = fanout::planner::plan_job(&env(), &spec).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("lookup `customers`") && msg.contains("v-old"),
        "{msg}"
    );
    assert!(!root.join("work").exists(), "nothing was planned");
}

async fn preflight(root: &Path, sql: &str) -> fanout::Result<arrow::datatypes::SchemaRef> {
    fanout::lookup::preflight(&env(), &spec_with(root, sql), "job.yaml").await
}

#[tokio::test]
async fn sql_that_is_not_deterministic_is_refused_naming_the_function_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_inputs(root);
    for (sql, function) in [
        ("SELECT id, random() AS r FROM input", "random"),
        ("SELECT id, now() AS t FROM input", "now"),
        ("SELECT id, current_timestamp AS t FROM input", "now"),
        ("SELECT id, current_time AS t FROM input", "current_time"),
        ("SELECT id, uuid() AS u FROM input", "uuid"),
        // Hidden in a subquery, a filter and an aggregate's argument.
        (
            "SELECT id FROM input WHERE id IN (SELECT id FROM input WHERE random() < 0.5)",
            "random",
        ),
        ("SELECT id FROM input WHERE id > 10 * random()", "random"),
        (
            "SELECT customer_id, max(id + random()) AS m FROM input GROUP BY customer_id",
            "random",
        ),
    ] {
        let err = preflight(root, sql).await.unwrap_err();
        let fanout::Error::Spec(s) = &err else {
            panic!("{sql}: expected a refused spec, got {err}");
        };
        assert_eq!(s.problems.len(), 1, "{sql}: {err}");
        assert_eq!(s.problems[0].field, "transform.sql", "{sql}: {err}");
        assert!(
            s.problems[0].message.contains(&format!("`{function}`")),
            "{sql}: {err}"
        );
    }
}

#[tokio::test]
async fn deterministic_sql_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_inputs(root);
    for sql in [
        JOIN,
        "SELECT id, upper(customer_id) AS c, abs(id - 50) AS d, \
         date_trunc('month', to_timestamp(id)) AS m FROM input",
        "SELECT customer_id, count(*) AS n, sum(id) AS s FROM input GROUP BY customer_id",
        "SELECT id, row_number() OVER (ORDER BY id) AS n FROM input",
    ] {
        preflight(root, sql).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_sql_that_is_not_deterministic_for_good() {
    // A spec planned where no pre-flight ran (the Lambda planner is built without SQL):
    // its chunks fail permanently instead of writing rows a retry would not repeat.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_inputs(root);
    let spec = spec_with(root, "SELECT id, random() AS r FROM input");
    let env = env();
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    let task = ChunkTask {
        job_id: plan.summary.job_id.clone(),
        work: spec.work.to_string(),
        chunk: plan.chunks[0].clone(),
    };
    let err = Worker::new(env, "w")
        .process_chunk(&task, 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "NotDeterministic", "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("`random`"), "{err}");
    assert!(!root.join("out").exists(), "no rows written");
}
