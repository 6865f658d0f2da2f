//! Chaos: many runs with faults injected everywhere (store errors and lost
//! acknowledgements, worker crashes at every protocol point, duplicate deliveries,
//! visibility expiring under a running worker, partial batch sends, planner and reducer
//! failures). After each run every row is checked: every planned chunk committed exactly
//! once, the manifest reconciles, each input id is in the output once or in the rejects
//! once, the reducer's re-run gives the same manifest, the planner's re-run the same
//! chunks, and after `gc` no file outside the manifest remains.
//!
//! Seeds are printed; replay one with FANOUT_CHAOS_SEED=<seed>.
//!
//! `killed_worker`: a real `fanout worker` process killed with SIGKILL mid-chunk, against
//! moto; the job completes exactly after a retry, or on the last receive ends failed
//! naming the chunk, within bounded waits (never a hang).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array};
use fanout::env::Env;
use fanout::location::Location;
use fanout::metrics::{MemoryMetrics, names};
use fanout::queue::{LocalQueue, Queue};
use fanout::runner::{RunOptions, Silent, run_local};
use fanout::sample::SplitMix;
use fanout::spec::JobSpec;
use fanout::store::DynStore;
use fanout_tests::chaos::{FaultyQueue, FaultyStore, Injector, RandomCrashes, Rates};

/// What one run checked.
#[derive(Debug, Default)]
struct Outcome {
    faults: u64,
    rows: u64,
    attempts: u32,
}

/// Input: CSV (some gzip) with a unique id per row; returns (good ids, bad ids).
fn write_input(
    rng: &mut SplitMix,
    put: &mut dyn FnMut(String, Vec<u8>),
) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let mut good = BTreeSet::new();
    let mut bad = BTreeSet::new();
    let mut id = 1i64;
    for f in 0..(2 + rng.below(4)) {
        let rows = 50 + rng.below(2500);
        let mut text = String::from("id,bucket,amount\n");
        for _ in 0..rows {
            let broken = rng.below(40) == 0;
            let amount = if broken {
                "12.x".to_string()
            } else {
                format!("{}.{:02}", rng.below(1000), rng.below(100))
            };
            text.push_str(&format!("{id},{},{amount}\n", id % 5));
            if broken {
                bad.insert(id)
            } else {
                good.insert(id)
            };
            id += 1;
        }
        if rng.below(4) == 0 {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(text.as_bytes()).unwrap();
            put(format!("in/part-{f}.csv.gz"), e.finish().unwrap());
        } else {
            put(format!("in/part-{f}.csv"), text.into_bytes());
        }
    }
    (good, bad)
}

fn spec_for(base: &str, rng: &mut SplitMix) -> JobSpec {
    let target = [2_048, 8_192, 32_768, 200_000][rng.below(4) as usize];
    let file = ["2KiB", "64KiB", "256MiB"][rng.below(3) as usize];
    let text = format!(
        "name: chaos\nwork: {base}work/\ninput:\n  location: {base}in/\n  format: csv\n  schema:\n    - {{ name: id, type: int64, nullable: false }}\n    - {{ name: bucket, type: int32 }}\n    - {{ name: amount, type: \"decimal(10,2)\" }}\n\
         chunking: {{ target_size: {target}, max_objects_per_chunk: 2 }}\ntransform:\n  sql: SELECT id, amount, bucket, amount * 2 AS doubled FROM input\n\
         output: {{ location: {base}out/, partition_by: [bucket], max_file_size: {file}, row_group_rows: 500 }}\n\
         rejects: {{ location: {base}rejects/, max_ratio: 0.2 }}\naggregate: {{ group_by: [bucket], measures: [{{ name: n, fn: count }}, {{ name: total, fn: sum, column: amount }}] }}\n\
         queue: {{ max_receive_count: 4, visibility_timeout_s: 1 }}\n"
    );
    JobSpec::parse("chaos.yaml", &text).unwrap()
}

/// One chaotic run until the job succeeds, then every check. `open` gives the real
/// (unfaulted) store for a location; `queue` a fresh chunk queue per attempt.
async fn chaos_run(
    seed: u64,
    base: &str,
    open: Arc<dyn Fn(&Location) -> DynStore + Send + Sync>,
    queue: &(dyn Fn() -> Arc<dyn Queue> + Sync),
) -> Outcome {
    let mut rng = SplitMix::new(seed);
    let root = open(&Location::parse(base).unwrap());
    let mut files = Vec::new();
    let (good, bad) = write_input(&mut rng, &mut |k, v| files.push((k, v)));
    for (k, v) in files {
        root.put(&k, v.into()).await.unwrap();
    }
    let spec = spec_for(base, &mut rng);
    let inj = Injector::new(seed ^ 0x5eed, Rates::default());
    let metrics = Arc::new(MemoryMetrics::new());
    let (o2, i2) = (open.clone(), inj.clone());
    let env = Env::new(
        Arc::new(
            move |loc: &Location, _sse: &fanout::location::Sse| -> fanout::Result<DynStore> {
                Ok(Arc::new(FaultyStore {
                    inner: o2(loc),
                    inj: i2.clone(),
                }))
            },
        ),
        metrics.clone(),
    );
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            attempts <= 60,
            "seed {seed}: the job did not complete in 60 attempts ({:?})",
            inj.counts()
        );
        let opts = RunOptions {
            workers: 2,
            queue: Some(Arc::new(FaultyQueue {
                inner: queue(),
                inj: inj.clone(),
            })),
            faults: Some(Arc::new(RandomCrashes(inj.clone()))),
            ..Default::default()
        };
        match tokio::time::timeout(
            Duration::from_secs(120),
            run_local(&env, &spec, &opts, Arc::new(Silent)),
        )
        .await
        {
            Err(_) => panic!("seed {seed}: a run hung"),
            Ok(Ok(report)) if report.result.is_ok() => break,
            // A planner, queue or reducer failure, or chunks dead-lettered: run again (the
            // re-run skips committed chunks, like a redrive after the cause went away).
            Ok(_) => continue,
        }
    }
    inj.disable();
    let faults = inj.total();
    let clean = Env::new(
        Arc::new(move |loc: &Location, _: &fanout::location::Sse| Ok(open(loc))),
        Arc::new(MemoryMetrics::new()),
    );
    let work = spec.work.clone();
    let plan = fanout::planner::compute_plan(&clean, &spec).await.unwrap();
    let job_id = plan.summary.job_id.clone();
    let stored = fanout::job::load_plan(clean.store(&work).unwrap().as_ref(), &plan.summary)
        .await
        .unwrap();
    assert_eq!(
        plan.chunks, stored,
        "seed {seed}: the planner's re-run gives other chunks"
    );

    // Every planned chunk committed, each exactly once.
    let records = fanout::job::chunk_records(&clean.store(&work).unwrap(), &job_id)
        .await
        .unwrap();
    let planned: HashSet<&str> = stored.iter().map(|c| c.id.as_str()).collect();
    let committed: HashSet<&str> = records.iter().map(|r| r.chunk_id.as_str()).collect();
    assert_eq!(planned, committed, "seed {seed}");
    // Each commit record was created exactly once (a lost acknowledgement hides a creation
    // from the worker, so the metric may count fewer, never more).
    let creations = inj.creations();
    let commits: Vec<u64> = creations
        .iter()
        .filter(|(k, _)| k.contains(&format!("jobs/{job_id}/chunks/")))
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(
        commits.len(),
        stored.len(),
        "seed {seed}: not every chunk's commit record was created"
    );
    assert!(
        commits.iter().all(|n| *n == 1),
        "seed {seed}: a commit record was created twice: {creations:?}"
    );
    assert!(
        metrics.sum(names::CHUNKS_COMMITTED) as usize <= stored.len(),
        "seed {seed}: more commits reported than chunks"
    );

    // The manifest reconciles; the reducer's re-run writes the same one.
    let m = fanout::reducer::read_manifest(&clean, &work, &job_id)
        .await
        .unwrap();
    assert!(
        m.succeeded() && m.counts.reconciles(),
        "seed {seed}: {:?}",
        m.counts
    );
    assert_eq!(
        m.counts.read as usize,
        good.len() + bad.len(),
        "seed {seed}"
    );
    let work_store = clean.store(&work).unwrap();
    let before = work_store
        .get(&fanout::job::layout::manifest(&job_id))
        .await
        .unwrap();
    fanout::reducer::finalize_job(&clean, &work, &job_id)
        .await
        .unwrap();
    let after = work_store
        .get(&fanout::job::layout::manifest(&job_id))
        .await
        .unwrap();
    assert_eq!(
        before, after,
        "seed {seed}: the reducer's re-run wrote another manifest"
    );

    // Every good id in the output exactly once, every bad one in the rejects exactly once.
    let out = clean.store(&spec.output.location).unwrap();
    let mut seen = Vec::new();
    for f in &m.files {
        let bytes = out.get(&f.file.key).await.unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let ids = b
                .column(b.schema().index_of("id").unwrap())
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            seen.extend(ids.iter().flatten());
        }
    }
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "seed {seed}: duplicated rows in the output"
    );
    assert_eq!(unique, good, "seed {seed}: rows lost or added");
    let rejects = clean.store(&spec.rejects.location).unwrap();
    let mut rejected = Vec::new();
    for r in &m.rejects {
        let text = rejects.get(&r.key).await.unwrap();
        for line in String::from_utf8(text.to_vec()).unwrap().lines() {
            let rj: fanout::transform::Reject = serde_json::from_str(line).unwrap();
            rejected.push(rj.raw.split(',').next().unwrap().parse::<i64>().unwrap());
        }
    }
    let rejected_set: BTreeSet<i64> = rejected.iter().copied().collect();
    assert_eq!(
        rejected_set.len(),
        rejected.len(),
        "seed {seed}: duplicated rejects"
    );
    assert_eq!(rejected_set, bad, "seed {seed}: rejects lost or added");

    // gc: afterwards nothing outside the manifest under the output location.
    fanout::gc::collect_garbage(&clean, &work, &job_id, false, false)
        .await
        .unwrap();
    let mut listed: Vec<String> = out
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    listed.sort();
    let mut expected: Vec<String> = m.files.iter().map(|f| f.file.key.clone()).collect();
    expected.sort();
    assert_eq!(
        listed, expected,
        "seed {seed}: files outside the manifest after gc"
    );
    Outcome {
        faults,
        rows: (good.len() + bad.len()) as u64,
        attempts,
    }
}

fn base_seed() -> u64 {
    std::env::var("FANOUT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(fanout::clock::now_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_a_thousand_faults_on_the_embedded_default_lose_and_duplicate_nothing() {
    let seed0 = base_seed();
    let replay = std::env::var("FANOUT_CHAOS_SEED").is_ok();
    let (mut faults, mut rows, mut runs) = (0u64, 0u64, 0u32);
    while faults < 1000 || runs < 3 {
        let seed = seed0.wrapping_add(runs as u64);
        eprintln!("chaos run {runs}: seed {seed}");
        let dir = tempfile::tempdir().unwrap();
        let base = format!("{}/", dir.path().display());
        let open: Arc<dyn Fn(&Location) -> DynStore + Send + Sync> = Arc::new(|l: &Location| {
            fanout::env::open_local_store(l, &fanout::location::Sse::BucketDefault).unwrap()
        });
        // A short visibility timeout: slow chunks are taken by a second worker (backup tasks).
        let queue = || -> Arc<dyn Queue> {
            let dlq = Arc::new(LocalQueue::new("dlq", Duration::from_millis(300)));
            Arc::new(LocalQueue::new("chunks", Duration::from_millis(300)).with_dead_letter(dlq, 4))
        };
        let o = chaos_run(seed, &base, open, &queue).await;
        faults += o.faults;
        rows += o.rows;
        runs += 1;
        eprintln!(
            "  {} faults, {} rows, {} attempts",
            o.faults, o.rows, o.attempts
        );
        if replay {
            break;
        }
        assert!(runs < 200, "too few faults injected");
    }
    eprintln!(
        "embedded chaos: {runs} runs, {faults} faults injected, {rows} rows checked, nothing lost or duplicated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_a_hundred_faults_against_moto_lose_and_duplicate_nothing() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|u| u.starts_with("http://127.0.0.1")),
        "AWS_ENDPOINT_URL must point at moto: run the suite with infra/test.sh"
    );
    let clients = fanout::env::AwsClients::load().await;
    let seed0 = base_seed();
    let (mut faults, mut rows, mut runs) = (0u64, 0u64, 0u32);
    while faults < 100 {
        let seed = seed0.wrapping_add(1_000_000 + runs as u64);
        eprintln!("moto chaos run {runs}: seed {seed}");
        let bucket = format!("chaos-{}-{runs}", std::process::id());
        clients
            .s3
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let s3 = clients.s3.clone();
        let open: Arc<dyn Fn(&Location) -> DynStore + Send + Sync> =
            Arc::new(move |l: &Location| match l {
                Location::S3 { bucket, prefix } => {
                    Arc::new(fanout::store::S3Store::new(s3.clone(), bucket, prefix)) as DynStore
                }
                other => {
                    fanout::env::open_local_store(other, &fanout::location::Sse::BucketDefault)
                        .unwrap()
                }
            });
        let sqs = clients.sqs.clone();
        let n = std::sync::atomic::AtomicU32::new(0);
        let queue = || -> Arc<dyn Queue> {
            // One SQS queue per attempt (the previous attempt's leftovers are not ours).
            let name = format!(
                "chaos-{}-{runs}-{}",
                std::process::id(),
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            );
            let url = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    sqs.create_queue()
                        .queue_name(&name)
                        .attributes(
                            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                            "2",
                        )
                        .send()
                        .await
                        .unwrap()
                        .queue_url
                        .unwrap()
                })
            });
            Arc::new(fanout::queue::SqsQueue::new(sqs.clone(), url))
        };
        let o = chaos_run(seed, &format!("s3://{bucket}/"), open, &queue).await;
        faults += o.faults;
        rows += o.rows;
        runs += 1;
        eprintln!(
            "  {} faults, {} rows, {} attempts",
            o.faults, o.rows, o.attempts
        );
        assert!(runs < 30, "too few faults injected");
    }
    eprintln!(
        "moto chaos: {runs} runs, {faults} faults injected, {rows} rows checked, nothing lost or duplicated"
    );
}

#[path = "chaos/killed_worker.rs"]
mod killed_worker;

#[path = "chaos/across_jobs.rs"]
mod across_jobs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_200_multi_job_runs_on_the_embedded_default_ingest_every_row_once() {
    let seed0 = base_seed();
    let replay = std::env::var("FANOUT_CHAOS_SEED").is_ok();
    let started = std::time::Instant::now();
    let mut t = across_jobs::Tally::default();
    while t.runs < 200 {
        let seed = seed0.wrapping_add(2_000_000 + t.sequences);
        eprintln!("multi-job sequence {}: seed {seed}", t.sequences);
        let dir = tempfile::tempdir().unwrap();
        let open: across_jobs::Open = Arc::new(|l: &Location| {
            fanout::env::open_local_store(l, &fanout::location::Sse::BucketDefault).unwrap()
        });
        across_jobs::sequence(
            open,
            &format!("{}/", dir.path().display()),
            seed,
            10,
            &mut t,
        )
        .await;
        if replay {
            break;
        }
    }
    eprintln!(
        "multi-job chaos (embedded): {t:?} in {:.1} s: nothing lost or doubled",
        started.elapsed().as_secs_f64()
    );
    assert!(t.crashed > 0 && t.faults > 0 && t.refused > 0, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_200_multi_job_runs_against_moto_ingest_every_row_once() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|u| u.starts_with("http://127.0.0.1")),
        "AWS_ENDPOINT_URL must point at moto: run the suite with infra/test.sh"
    );
    let clients = fanout::env::AwsClients::load().await;
    let seed0 = base_seed();
    let mut t = across_jobs::Tally::default();
    while t.runs < 200 {
        let seed = seed0.wrapping_add(3_000_000 + t.sequences);
        eprintln!("moto multi-job sequence {}: seed {seed}", t.sequences);
        let bucket = format!("multi-{}-{}", std::process::id(), t.sequences);
        clients
            .s3
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let s3 = clients.s3.clone();
        let open: across_jobs::Open = Arc::new(move |l: &Location| match l {
            Location::S3 { bucket, prefix } => {
                Arc::new(fanout::store::S3Store::new(s3.clone(), bucket, prefix)) as DynStore
            }
            other => {
                fanout::env::open_local_store(other, &fanout::location::Sse::BucketDefault).unwrap()
            }
        });
        across_jobs::sequence(open, &format!("s3://{bucket}/"), seed, 8, &mut t).await;
    }
    eprintln!("multi-job chaos (moto): {t:?}: nothing lost or doubled");
}
