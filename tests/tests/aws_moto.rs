//! The AWS adapters against moto's server on loopback (started by infra/test.sh):
//! conformance suites, a job over S3 and SQS byte-identical to the embedded run, and a
//! poison chunk dead-lettered, shown by status, redriven and completed.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use fanout::env::{AwsClients, Env};
use fanout::location::Location;
use fanout::location::Sse;
use fanout::metrics::MemoryMetrics;
use fanout::queue::{Queue, SqsQueue};
use fanout::store::{ObjectStore, S3Store};
use fanout_tests::conformance::QueueSubject;

fn require_moto() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|u| u.starts_with("http://127.0.0.1")),
        "AWS_ENDPOINT_URL must point at moto on 127.0.0.1: run the suite with infra/test.sh"
    );
}

fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

async fn bucket(clients: &AwsClients) -> String {
    let name = unique("fanout-test");
    clients
        .s3
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    name
}

/// A chunk queue with a dead-letter queue after `max_receive` receives.
async fn queues(
    clients: &AwsClients,
    max_receive: u32,
    visibility_s: u32,
) -> (SqsQueue, SqsQueue, String, String) {
    let dlq_url = clients
        .sqs
        .create_queue()
        .queue_name(unique("dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
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
    let url = clients
        .sqs
        .create_queue()
        .queue_name(unique("chunks"))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_s.to_string(),
        )
        // The limit of queues made before 2025, which the adapters send to by default.
        .attributes(
            QueueAttributeName::MaximumMessageSize,
            fanout::queue::DEFAULT_MAX_MESSAGE_BYTES.to_string(),
        )
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(
                "{{\"deadLetterTargetArn\":\"{dlq_arn}\",\"maxReceiveCount\":\"{max_receive}\"}}"
            ),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    (
        SqsQueue::new(clients.sqs.clone(), &url),
        SqsQueue::new(clients.sqs.clone(), &dlq_url),
        url,
        dlq_url,
    )
}

/// A fresh bucket per check, the store rooted below a prefix (as a spec's locations are).
mod s3_store {
    use super::*;

    async fn make() -> (Box<dyn ObjectStore>, ()) {
        require_moto();
        let clients = AwsClients::load().await;
        let b = bucket(&clients).await;
        let store = S3Store::new(clients.s3.clone(), &b, "root/prefix");
        (Box::new(store), ())
    }
    fanout_tests::store_conformance!(make);
}

#[tokio::test]
async fn s3_keys_with_dot_segments_spaces_and_unicode_are_plain_keys() {
    require_moto();
    let clients = AwsClients::load().await;
    let b = bucket(&clients).await;
    let store = S3Store::new(clients.s3.clone(), &b, "in/");
    // On S3 `..` is just characters of a key: it must neither escape the prefix nor be lost.
    let keys = ["x/../dots.csv", "with space/ünïcödé.csv", "../up.csv"];
    for k in keys {
        store
            .put(k, bytes::Bytes::from(format!("{k}\n")))
            .await
            .unwrap();
    }
    let listed: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    for k in keys {
        assert_eq!(
            store.get(k).await.unwrap(),
            bytes::Bytes::from(format!("{k}\n"))
        );
    }
    let outside = clients
        .s3
        .list_objects_v2()
        .bucket(&b)
        .send()
        .await
        .unwrap();
    assert!(
        outside
            .contents()
            .iter()
            .all(|o| o.key().unwrap().starts_with("in/")),
        "a key escaped its prefix"
    );
}

#[tokio::test]
async fn s3_store_uploads_large_objects_in_parts_with_the_requested_encryption() {
    require_moto();
    let clients = AwsClients::load().await;
    let b = bucket(&clients).await;
    let store = S3Store::new(clients.s3.clone(), &b, "")
        .with_sse(Sse::Kms("alias/fanout".into()))
        .with_multipart(6 << 20, 5 << 20);
    let data: Vec<u8> = (0..13 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    store
        .put("big.bin", bytes::Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(store.get("big.bin").await.unwrap().as_ref(), &data[..]);
    let head = clients
        .s3
        .head_object()
        .bucket(&b)
        .key("big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );
    assert!(
        head.e_tag().unwrap().contains('-'),
        "a multipart ETag ends in -<parts>: {:?}",
        head.e_tag()
    );
    assert_eq!(
        store.get_range("big.bin", 5..10).await.unwrap().as_ref(),
        &data[5..10]
    );
    // A staged file above the threshold goes up in parts too, read from disk.
    let dir = tempfile::tempdir().unwrap();
    let staged = dir.path().join("big.parquet");
    std::fs::write(&staged, &data[..7 * 1024 * 1024]).unwrap();
    store.put_file("staged.bin", &staged).await.unwrap();
    assert_eq!(
        store.get("staged.bin").await.unwrap().as_ref(),
        &data[..7 * 1024 * 1024]
    );
    let head = clients
        .s3
        .head_object()
        .bucket(&b)
        .key("staged.bin")
        .send()
        .await
        .unwrap();
    assert!(
        head.e_tag().unwrap().contains('-'),
        "a file above the threshold is uploaded in parts: {:?}",
        head.e_tag()
    );
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );
    assert!(
        store
            .get_range("big.bin", 20 << 20..21 << 20)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Fresh queues per check, redriving after 3 receives, with a 1 s visibility timeout.
mod sqs_queue {
    use super::*;

    async fn make() -> (Box<QueueSubject>, ()) {
        require_moto();
        let clients = AwsClients::load().await;
        let (queue, dlq, _, _) = queues(&clients, 3, 1).await;
        let subject = QueueSubject {
            queue: Arc::new(queue),
            dlq: Arc::new(dlq),
            max_receive: 3,
            visibility: Duration::from_secs(1),
            max_message_bytes: fanout::queue::DEFAULT_MAX_MESSAGE_BYTES,
        };
        (Box::new(subject), ())
    }
    fanout_tests::queue_conformance!(make);
}

/// The long-key job over an SQS queue on moto that refuses messages over 256 KiB (as
/// queues made before 2025 do) and batches over 1 MiB: enqueued whole and run to success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_long_keys_are_enqueued_on_sqs_within_its_limits() {
    require_moto();
    let dir = tempfile::tempdir().unwrap();
    let spec = common::long_key_job(dir.path());
    let clients = AwsClients::load().await;
    let (q, _dlq, url, _) = queues(&clients, 3, 30).await;
    let limit = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::MaximumMessageSize)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::MaximumMessageSize]
        .clone();
    assert_eq!(limit, (256 * 1024).to_string());
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let opts = fanout::runner::RunOptions {
        workers: 2,
        queue: Some(Arc::new(q)),
        ..Default::default()
    };
    let report = fanout::runner::run_local(&env, &spec, &opts, Arc::new(fanout::runner::Silent))
        .await
        .unwrap();
    common::assert_messages_fit(&spec, &report.plan.summary.job_id, &report.plan.chunks);
    let m = report.result.unwrap();
    let n = common::LONG_KEY_OBJECTS as u64;
    assert_eq!((m.counts.read, m.counts.written), (n, n));
}

#[tokio::test]
async fn a_malformed_body_on_sqs_is_a_clear_error_not_a_panic() {
    require_moto();
    let clients = AwsClients::load().await;
    let (q, _, _, _) = queues(&clients, 3, 1).await;
    q.send(&["{\"job_id\": 5}".to_string()]).await.unwrap();
    let m = q
        .receive(1, Duration::from_secs(2))
        .await
        .unwrap()
        .pop()
        .unwrap();
    let err = fanout::job::ChunkTask::from_body(&m.body).unwrap_err();
    assert!(
        err.to_string().starts_with("malformed chunk message"),
        "{err}"
    );
}

fn write_input(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("2024")).unwrap();
    for f in 0..3u64 {
        let mut s = String::from("id,region,amount\n");
        for i in 0..4000u64 {
            let id = f * 10_000 + i;
            let amount = if id % 997 == 0 {
                "oops".to_string()
            } else {
                format!("{}.{:02}", id % 300, id % 100)
            };
            s.push_str(&format!(
                "{id},{},{amount}\n",
                ["EU", "NA", "APAC"][(id % 3) as usize]
            ));
        }
        std::fs::write(dir.join(format!("2024/part-{f}.csv")), s).unwrap();
    }
}

fn spec_text(input: &str, work: &str, output: &str, rejects: &str, lookup: &str) -> String {
    format!(
        "name: awsjob\njob_id: awsjob-1\nwork: {work}\ninput:\n  location: {input}\n  format: csv\n  schema:\n    - {{ name: id, type: int64, nullable: false }}\n    - {{ name: region, type: utf8 }}\n    - {{ name: amount, type: \"decimal(10,2)\" }}\n\
         chunking: {{ target_size: 40KiB }}\ntransform:\n  lookups: [{{ name: regions, location: {lookup}, format: csv }}]\n  sql: SELECT i.*, r.label FROM input i JOIN regions r ON i.region = r.code\n\
         output: {{ location: {output}, partition_by: [region] }}\nrejects: {{ location: {rejects}, max_ratio: 0.01 }}\n\
         aggregate: {{ group_by: [region], measures: [{{ name: n, fn: count }}, {{ name: total, fn: sum, column: amount }}] }}\nqueue: {{ max_receive_count: 2 }}\n"
    )
}

/// The lookup table `spec_text` names, at `ref/regions.csv`.
async fn put_regions(clients: &AwsClients, bucket: &str) {
    clients
        .s3
        .put_object()
        .bucket(bucket)
        .key("ref/regions.csv")
        .body(
            b"code,label\nEU,Europe\nNA,North America\nAPAC,Asia Pacific\n"
                .to_vec()
                .into(),
        )
        .send()
        .await
        .unwrap();
}

async fn upload_dir(clients: &AwsClients, bucket: &str, prefix: &str, dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir.join("2024")).unwrap() {
        let p = entry.unwrap().path();
        let key = format!("{prefix}2024/{}", p.file_name().unwrap().to_string_lossy());
        clients
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(std::fs::read(&p).unwrap().into())
            .send()
            .await
            .unwrap();
    }
}

fn parquet_bytes(m: &fanout::job::Manifest, read: impl Fn(&str) -> Vec<u8>) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = m.files.iter().map(|f| read(&f.file.key)).collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_job_over_s3_and_sqs_writes_the_same_parquet_as_the_embedded_run() {
    require_moto();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_input(&root.join("in"));
    std::fs::write(
        root.join("regions.csv"),
        "code,label\nEU,Europe\nNA,North America\nAPAC,Asia Pacific\n",
    )
    .unwrap();

    // The embedded run.
    let r = root.display();
    let local = fanout::spec::JobSpec::parse(
        "local.yaml",
        &spec_text(
            &format!("{r}/in/"),
            &format!("{r}/work/"),
            &format!("{r}/out/"),
            &format!("{r}/rej/"),
            &format!("{r}/regions.csv"),
        ),
    )
    .unwrap();
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let opts = fanout::runner::RunOptions {
        workers: 2,
        ..Default::default()
    };
    let local_manifest =
        fanout::runner::run_local(&env, &local, &opts, Arc::new(fanout::runner::Silent))
            .await
            .unwrap()
            .result
            .unwrap();

    // The same job on S3 and SQS.
    let clients = AwsClients::load().await;
    let b = bucket(&clients).await;
    upload_dir(&clients, &b, "raw/", &root.join("in")).await;
    clients
        .s3
        .put_object()
        .bucket(&b)
        .key("ref/regions.csv")
        .body(std::fs::read(root.join("regions.csv")).unwrap().into())
        .send()
        .await
        .unwrap();
    let (q, _, _, _) = queues(&clients, 2, 30).await;
    let s3 = |p: &str| format!("s3://{b}/{p}");
    let remote = fanout::spec::JobSpec::parse(
        "s3.yaml",
        &spec_text(
            &s3("raw/"),
            &s3("work/"),
            &s3("out/"),
            &s3("rej/"),
            &s3("ref/regions.csv"),
        ),
    )
    .unwrap();
    let aws_env = Env::aws(Arc::new(MemoryMetrics::new())).await;
    let opts = fanout::runner::RunOptions {
        workers: 2,
        queue: Some(Arc::new(q)),
        ..Default::default()
    };
    let report =
        fanout::runner::run_local(&aws_env, &remote, &opts, Arc::new(fanout::runner::Silent))
            .await
            .unwrap();
    let remote_manifest = report.result.unwrap();
    assert_eq!(remote_manifest.counts, local_manifest.counts);
    assert_eq!(remote_manifest.counts.rejected, 13);
    // The same aggregate table, byte for byte, read back from each store.
    let (ra, la) = (
        remote_manifest.aggregate.as_ref().unwrap(),
        local_manifest.aggregate.as_ref().unwrap(),
    );
    assert_eq!(
        (ra.parquet.rows, ra.parquet.bytes),
        (la.parquet.rows, la.parquet.bytes)
    );
    let remote_store = aws_env.store(&remote.work).unwrap();
    let local_store = env.store(&local.work).unwrap();
    assert_eq!(
        fanout::job::read_aggregate_rows(remote_store.as_ref(), ra, 100)
            .await
            .unwrap(),
        fanout::job::read_aggregate_rows(local_store.as_ref(), la, 100)
            .await
            .unwrap()
    );
    // Compacted: one file per region, from more chunk files than that.
    let compaction = remote_manifest.compaction.as_ref().unwrap();
    assert_eq!(
        remote_manifest.files.len(),
        remote_manifest.partitions.len()
    );
    assert!(compaction.chunk_files.files > remote_manifest.files.len() as u64);
    assert_eq!(local_manifest.files.len(), remote_manifest.files.len());

    let local_bytes = parquet_bytes(&local_manifest, |k| {
        std::fs::read(root.join("out").join(k)).unwrap()
    });
    let out = S3Store::new(clients.s3.clone(), &b, "out/");
    let mut remote_bytes = Vec::new();
    for f in &remote_manifest.files {
        remote_bytes.push(out.get(&f.file.key).await.unwrap().to_vec());
    }
    remote_bytes.sort();
    assert_eq!(
        local_bytes, remote_bytes,
        "the Parquet files differ between S3 and the embedded run"
    );

    // Nothing but the manifest's files under the output prefix.
    let listed: Vec<String> = out
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut in_manifest: Vec<String> = remote_manifest
        .files
        .iter()
        .map(|f| f.file.key.clone())
        .collect();
    in_manifest.sort();
    assert_eq!(listed, in_manifest);
}

#[tokio::test]
async fn a_poison_chunk_is_dead_lettered_shown_redriven_and_completed() {
    require_moto();
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("in"));
    let clients = AwsClients::load().await;
    let b = bucket(&clients).await;
    upload_dir(&clients, &b, "raw/", &dir.path().join("in")).await;
    let s3 = |p: &str| format!("s3://{b}/{p}");
    put_regions(&clients, &b).await;
    // The output bucket does not exist yet: every chunk fails until it is created. (Not a
    // missing lookup: lookups are pinned at planning, which refuses a missing one.)
    let out_bucket = format!("{b}-out");
    // Without the compaction stage the chunks write to the output themselves, and each
    // chunk is poisoned (with it, the chunks stage their files and the bins would be).
    let spec = fanout::spec::JobSpec::parse(
        "s3.yaml",
        &spec_text(
            &s3("raw/"),
            &s3("work/"),
            &format!("s3://{out_bucket}/out/"),
            &s3("rej/"),
            &s3("ref/regions.csv"),
        )
        .replace(
            "partition_by: [region] }",
            "partition_by: [region], target_file_size: off }",
        ),
    )
    .unwrap();
    let (q, dlq, url, dlq_url) = queues(&clients, 2, 1).await;
    let (q, dlq): (Arc<dyn Queue>, Arc<dyn Queue>) = (Arc::new(q), Arc::new(dlq));
    let env = Env::aws(Arc::new(MemoryMetrics::new())).await;
    let opts = fanout::runner::RunOptions {
        workers: 2,
        queue: Some(q.clone()),
        ..Default::default()
    };
    let report = fanout::runner::run_local(&env, &spec, &opts, Arc::new(fanout::runner::Silent))
        .await
        .unwrap();
    let chunks = report.plan.summary.chunks;
    assert!(report.result.is_err());
    assert_eq!(report.status.dead_lettered.len() as u64, chunks);
    assert!(
        report
            .status
            .dead_lettered
            .iter()
            .all(|f| f.attempts == 2 && f.message.contains("NoSuchBucket")),
        "{:?}",
        report.status.dead_lettered
    );

    // `fanout status` shows them (exit code 1: dead letters), with the error.
    let out = std::process::Command::new(common::fanout_bin())
        .args(["status", "awsjob-1", "--work", &s3("work/")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("dead-lettered  {chunks:>8}")) && text.contains("NoSuchBucket"),
        "{text}"
    );

    // The messages are in the dead-letter queue (SQS moves them on the next receive).
    assert!(
        q.receive(10, Duration::from_secs(2))
            .await
            .unwrap()
            .is_empty()
    );
    let depth = dlq.depth().await.unwrap();
    assert_eq!(depth.visible + depth.in_flight, chunks);

    // Fix the cause, redrive with the CLI, and let a fleet worker finish the job.
    clients
        .s3
        .create_bucket()
        .bucket(&out_bucket)
        .send()
        .await
        .unwrap();
    let out = std::process::Command::new(common::fanout_bin())
        .args(["redrive", "--from", &dlq_url, "--to", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("moved {chunks} messages")));
    // The redriven chunks are pending again, not dead-lettered.
    let status = fanout::reducer::job_status(
        &env,
        &Location::parse(&s3("work/")).unwrap(),
        &fanout::ids::JobId::parse("awsjob-1").unwrap(),
    )
    .await
    .unwrap();
    assert!(
        status.dead_lettered.is_empty() && status.pending == chunks,
        "{status:?}"
    );
    let worker = Arc::new(fanout::worker::Worker::new(env.clone(), "fleet-test"));
    let serve_opts = fanout::fleet::ServeOptions {
        max_receive_count: 2,
        concurrency: 2,
        visibility: Duration::from_secs(3),
        grace: Duration::from_secs(5),
        backoff: Default::default(),
    };
    let (env2, work) = (env.clone(), Location::parse(&s3("work/")).unwrap());
    let done = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if fanout::reducer::job_status(
                &env2,
                &work,
                &fanout::ids::JobId::parse("awsjob-1").unwrap(),
            )
            .await
            .unwrap()
            .is_complete()
            {
                return;
            }
        }
    };
    let served = tokio::time::timeout(
        Duration::from_secs(120),
        fanout::fleet::serve(worker, q.clone(), serve_opts, done),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(served.acknowledged, chunks);
    let m = fanout::reducer::finalize_job(
        &env,
        &Location::parse(&s3("work/")).unwrap(),
        &fanout::ids::JobId::parse("awsjob-1").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(m.counts.read, 12_000);
    let status = fanout::reducer::job_status(
        &env,
        &Location::parse(&s3("work/")).unwrap(),
        &fanout::ids::JobId::parse("awsjob-1").unwrap(),
    )
    .await
    .unwrap();
    assert!(status.dead_lettered.is_empty() && status.is_complete());
}

/// A receive that never reached a worker (an invocation that failed before its first
/// chunk) dead-letters a message without any record: status sees it only through the
/// queues. The dead-letter queue's depth is reported; once the chunk queue has held
/// nothing for longer than SQS's counts may lag, the job's chunks are stranded.
#[tokio::test]
async fn chunks_dead_lettered_without_a_record_are_stranded_once_the_chunk_queue_is_empty() {
    require_moto();
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("in"));
    let clients = AwsClients::load().await;
    let b = bucket(&clients).await;
    upload_dir(&clients, &b, "raw/", &dir.path().join("in")).await;
    let s3 = |p: &str| format!("s3://{b}/{p}");
    put_regions(&clients, &b).await;
    let spec = fanout::spec::JobSpec::parse(
        "s3.yaml",
        &spec_text(
            &s3("raw/"),
            &s3("work/"),
            &s3("out/"),
            &s3("rej/"),
            &s3("ref/regions.csv"),
        ),
    )
    .unwrap();
    let env = Env::aws(Arc::new(MemoryMetrics::new())).await;
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    let (job_id, chunks) = (plan.summary.job_id.clone(), plan.chunks.len() as u64);
    let (q, dlq, _, _) = queues(&clients, 1, 1).await;
    let (q, dlq): (Arc<dyn Queue>, Arc<dyn Queue>) = (Arc::new(q), Arc::new(dlq));
    let work_store = env.store(&spec.work).unwrap();
    fanout::planner::enqueue(
        q.as_ref(),
        &spec.work,
        work_store.as_ref(),
        &job_id,
        &plan.chunks,
    )
    .await
    .unwrap();
    let queues = fanout::reducer::StatusQueues {
        chunks: Some(q.clone()),
        dead_letter: Some(dlq.clone()),
    };
    let quiet = || fanout::clock::now_ms() + fanout::reducer::SQS_SETTLE_MS + 1_000;
    let status = |now_ms: u64| {
        let (env, spec, job_id, queues) = (&env, &spec, &job_id, &queues);
        async move {
            fanout::reducer::job_status_with(env, &spec.work, job_id, now_ms, queues)
                .await
                .unwrap()
        }
    };

    // Queued: pending, however long it waits.
    let s = status(quiet()).await;
    assert_eq!(
        (s.pending, s.stranded.len(), s.dead_letter_messages),
        (chunks, 0, Some(0)),
        "{s:?}"
    );

    // Received once (the only receive) and never processed: SQS dead-letters each message
    // at its next receive, once visible again.
    let started = std::time::Instant::now();
    while dlq.depth().await.unwrap().visible < chunks {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not dead-lettered"
        );
        q.receive(10, Duration::from_millis(200)).await.unwrap();
    }
    assert!(q.depth().await.unwrap().is_drained());

    // Just now the counts may still lag: still pending, the dead letters reported.
    let s = status(fanout::clock::now_ms()).await;
    assert_eq!(
        (s.pending, s.stranded.len(), s.dead_letter_messages),
        (chunks, 0, Some(chunks)),
        "{s:?}"
    );
    assert!(!s.is_settled());

    // Quiet for longer than that: stranded, the job settled and failed.
    let s = status(quiet()).await;
    assert_eq!((s.pending, s.stranded.len() as u64), (0, chunks), "{s:?}");
    let planned: std::collections::BTreeSet<_> = plan.chunks.iter().map(|c| &c.id).collect();
    assert_eq!(planned, s.stranded.iter().collect());
    assert!(s.is_settled() && !s.is_complete());
    let line = fanout::reducer::describe_stranded(&s.stranded[0]);
    assert!(line.contains("stranded") && line.contains(s.stranded[0].as_str()));

    // Without the chunk queue, the dead-letter queue's depth alone (every job's) strands
    // nothing: it is only reported.
    let only_dlq = fanout::reducer::StatusQueues {
        chunks: None,
        dead_letter: Some(dlq.clone()),
    };
    let s = fanout::reducer::job_status_with(&env, &spec.work, &job_id, quiet(), &only_dlq)
        .await
        .unwrap();
    assert_eq!(
        (s.pending, s.stranded.len(), s.dead_letter_messages),
        (chunks, 0, Some(chunks)),
        "{s:?}"
    );
}
