//! SIGKILL, the fault no worker can record: a real `fanout worker` process against moto's
//! S3 and SQS, stopped and killed while a chunk is in progress (its attempt record
//! written, no commit record), so it leaves nothing but that attempt record.

use super::*;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use aws_sdk_sqs::types::QueueAttributeName;
use fanout::env::AwsClients;
use fanout::ids::{ChunkId, JobId};
use fanout::job::layout;
use fanout::reducer::StatusQueues;

/// The worker's visibility timeout (the CLI's least): renewed every second while a
/// chunk runs, so a killed worker's message comes back within 3 s.
const VISIBILITY_S: u64 = 3;

/// Every wait of these tests ends by this, whatever happens.
const BOUND: Duration = Duration::from_secs(90);

/// A job planned and queued on moto, and the worker process killed mid-chunk.
struct Killed {
    clients: AwsClients,
    env: Env,
    spec: JobSpec,
    job_id: JobId,
    queue_url: String,
    dlq_url: String,
    ids: BTreeSet<i64>,
    chunk: ChunkId,
    killed_at: Instant,
}

fn unique(what: &str) -> String {
    format!("{what}-{}-{}", std::process::id(), fanout::clock::now_ms())
}

/// `fanout worker` on `queue_url`, one chunk at a time, with the test's AWS endpoint.
fn worker(queue_url: &str, max_receive_count: u32) -> Child {
    Command::new(common::fanout_bin())
        .args(["worker", "--queue", queue_url, "--concurrency", "1"])
        .args(["--max-receive-count", &max_receive_count.to_string()])
        .args([
            "--visibility-s",
            &VISIBILITY_S.to_string(),
            "--grace-s",
            "1",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {}", child.id());
}

/// Chunk ids of the records under `prefix` of the work bucket.
async fn ids_under(clients: &AwsClients, bucket: &str, prefix: &str) -> BTreeSet<String> {
    let out = clients
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key()?.strip_prefix(prefix)?.strip_suffix(".json"))
        .map(str::to_string)
        .collect()
}

async fn queue(clients: &AwsClients, name: &str, attrs: &[(QueueAttributeName, String)]) -> String {
    let mut req = clients.sqs.create_queue().queue_name(name);
    for (k, v) in attrs {
        req = req.attributes(k.clone(), v);
    }
    req.send().await.unwrap().queue_url.unwrap()
}

/// Plans a job of six chunks of 40,000 rows, queues it, starts a worker and kills it
/// (SIGSTOP, check, SIGKILL) in the middle of a chunk.
async fn kill_mid_chunk(max_receive_count: u32) -> Killed {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|u| u.starts_with("http://127.0.0.1")),
        "AWS_ENDPOINT_URL must point at moto: run the suite with infra/test.sh"
    );
    let clients = AwsClients::load().await;
    let bucket = unique("killed");
    clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let mut ids = BTreeSet::new();
    for f in 0..3i64 {
        let mut text = String::from("id,bucket,amount\n");
        for i in 0..80_000 {
            let id = f * 1_000_000 + i;
            text.push_str(&format!("{id},{},{}.{:02}\n", id % 7, i % 1000, i % 100));
            ids.insert(id);
        }
        let key = format!("in/part-{f}.csv");
        let body = text.into_bytes().into();
        clients
            .s3
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .unwrap();
    }
    let base = format!("s3://{bucket}/");
    let spec = JobSpec::parse(
        "killed.yaml",
        &format!(
            "name: killed\nwork: {base}work/\ninput:\n  location: {base}in/\n  format: csv\n  schema:\n    - {{ name: id, type: int64, nullable: false }}\n    - {{ name: bucket, type: int32 }}\n    - {{ name: amount, type: \"decimal(10,2)\" }}\n\
             chunking: {{ target_size: 900KiB }}\noutput: {{ location: {base}out/, partition_by: [bucket] }}\n\
             rejects: {{ location: {base}rejects/ }}\nqueue: {{ max_receive_count: {max_receive_count} }}\n"
        ),
    )
    .unwrap();
    let env = Env::aws(Arc::new(MemoryMetrics::new())).await;
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    let job_id = plan.summary.job_id.clone();
    assert!(plan.chunks.len() >= 4, "{} chunks", plan.chunks.len());

    let dlq_url = queue(&clients, &unique("killed-dlq"), &[]).await;
    let dlq_arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let redrive = format!(
        "{{\"deadLetterTargetArn\":\"{dlq_arn}\",\"maxReceiveCount\":\"{max_receive_count}\"}}"
    );
    let queue_url = queue(
        &clients,
        &unique("killed-chunks"),
        &[
            (
                QueueAttributeName::VisibilityTimeout,
                VISIBILITY_S.to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive),
        ],
    )
    .await;
    let q = fanout::queue::SqsQueue::new(clients.sqs.clone(), &queue_url);
    let work_store = env.store(&spec.work).unwrap();
    fanout::planner::enqueue(&q, &spec.work, work_store.as_ref(), &job_id, &plan.chunks)
        .await
        .unwrap();

    let mut child = worker(&queue_url, max_receive_count);
    let (attempts, commits) = (
        format!("work/{}", layout::attempts(&job_id)),
        format!("work/{}", layout::chunks(&job_id)),
    );
    let started = Instant::now();
    let chunk = loop {
        assert!(
            started.elapsed() < BOUND,
            "no chunk was ever seen in progress"
        );
        let running: Vec<String> = ids_under(&clients, &bucket, &attempts)
            .await
            .difference(&ids_under(&clients, &bucket, &commits).await)
            .cloned()
            .collect();
        if let [id] = running.as_slice() {
            // Frozen first: what it had on the wire lands, then nothing more can.
            signal(&child, "-STOP");
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !ids_under(&clients, &bucket, &commits).await.contains(id) {
                break ChunkId::parse(id).unwrap();
            }
            signal(&child, "-CONT");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = Instant::now();
    Killed {
        clients,
        env,
        spec,
        job_id,
        queue_url,
        dlq_url,
        ids,
        chunk,
        killed_at,
    }
}

/// Every id in the output of a finalized job, in the order read.
async fn output_ids(k: &Killed, m: &fanout::job::Manifest) -> Vec<i64> {
    let out = k.env.store(&k.spec.output.location).unwrap();
    let mut seen = Vec::new();
    for f in &m.files {
        let bytes = out.get(&f.file.key).await.unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let col = b.column(b.schema().index_of("id").unwrap()).clone();
            let ids = col.as_any().downcast_ref::<Int64Array>().unwrap().clone();
            seen.extend(ids.iter().flatten());
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_chunk_with_a_retry_left_is_redone_by_another_exactly() {
    let k = kill_mid_chunk(2).await;
    let mut second = worker(&k.queue_url, 2);
    let complete = loop {
        assert!(k.killed_at.elapsed() < BOUND, "the job never completed");
        let s = fanout::reducer::job_status(&k.env, &k.spec.work, &k.job_id)
            .await
            .unwrap();
        if s.is_complete() {
            break k.killed_at.elapsed();
        }
        if s.compaction_due() {
            // What the state machine's Compact step does: the bins go on the chunk queue,
            // and the second worker merges them.
            let chunks = fanout::queue::SqsQueue::new(k.clients.sqs.clone(), &k.queue_url);
            fanout::compact::start(&k.env, &k.spec.work, &k.job_id, &chunks, false)
                .await
                .unwrap();
        }
        assert!(s.dead_lettered.is_empty() && s.failed.is_empty(), "{s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    second.kill().unwrap();
    second.wait().unwrap();
    eprintln!("killed mid-chunk with a retry left: job complete {complete:?} after the kill");
    let m = fanout::reducer::finalize_job(&k.env, &k.spec.work, &k.job_id)
        .await
        .unwrap();
    // The killed chunk was redone on its second receive.
    let records = fanout::job::chunk_records(&k.env.store(&k.spec.work).unwrap(), &k.job_id)
        .await
        .unwrap();
    let redone = records.iter().find(|r| r.chunk_id == k.chunk).unwrap();
    assert_eq!(redone.attempt, 2);
    // No row lost or doubled.
    let seen = output_ids(&k, &m).await;
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "rows doubled");
    assert_eq!(unique, k.ids, "rows lost or added");
    assert_eq!(m.counts.read as usize, k.ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_on_the_last_receive_fails_the_job_naming_the_chunk() {
    let k = kill_mid_chunk(1).await;
    // Another worker does the other chunks, and its receive moves the killed chunk's
    // message to the dead-letter queue once it is visible again.
    let mut second = worker(&k.queue_url, 1);
    let queues = StatusQueues {
        chunks: Some(Arc::new(fanout::queue::SqsQueue::new(
            k.clients.sqs.clone(),
            &k.queue_url,
        ))),
        dead_letter: Some(Arc::new(fanout::queue::SqsQueue::new(
            k.clients.sqs.clone(),
            &k.dlq_url,
        ))),
    };
    let (status, settled) = loop {
        assert!(k.killed_at.elapsed() < BOUND, "the job never settled");
        let s = fanout::reducer::job_status_with(
            &k.env,
            &k.spec.work,
            &k.job_id,
            fanout::clock::now_ms(),
            &queues,
        )
        .await
        .unwrap();
        if s.is_settled() {
            break (s, k.killed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    second.kill().unwrap();
    second.wait().unwrap();
    eprintln!("killed on the last receive: job settled failed {settled:?} after the kill");
    assert!(!status.is_complete(), "{status:?}");
    assert_eq!(status.committed, status.planned - 1, "{status:?}");
    let lost: Vec<_> = status.lost_dead_lettered().collect();
    assert_eq!(lost.len(), 1, "{status:?}");
    assert_eq!(lost[0].chunk_id, k.chunk);
    assert!(lost[0].alive_ms.is_some() && lost[0].visibility_timeout_s == Some(VISIBILITY_S));
    assert_eq!(status.dead_letter_messages, Some(1), "{status:?}");
    // Reported within a visibility timeout and the margin of the last heartbeat.
    assert!(
        settled
            < Duration::from_secs(VISIBILITY_S)
                + Duration::from_millis(fanout::reducer::LOST_MARGIN_MS)
                + Duration::from_secs(10),
        "{settled:?}"
    );
    let err = fanout::reducer::finalize_job(&k.env, &k.spec.work, &k.job_id)
        .await
        .unwrap_err()
        .to_string();
    for part in [
        format!(
            "1 of {} chunks are not committed (1 failed for good)",
            status.planned
        ),
        format!("{} lost on attempt 1, the last: dead-lettered", k.chunk),
    ] {
        assert!(err.contains(&part), "`{part}` not in: {err}");
    }
    // The CLI says the same, with the dead-letter queue's depth, and exits 1.
    let out = Command::new(common::fanout_bin())
        .args([
            "status",
            k.job_id.as_str(),
            "--work",
            k.spec.work.to_string().as_str(),
        ])
        .args(["--queue", &k.queue_url, "--dead-letter-queue", &k.dlq_url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("dead-letter queue     1") && text.contains(k.chunk.as_str()),
        "{text}"
    );
}
