//! The ingestion ledger and the run lease (issue 17): each row of the issue's table as a
//! regression test, the ledger's append protocol and read cost, and the lease's rules.
//!
//! - `--since-last` after `jobs/` is gone ingests nothing twice;
//! - two `--since-last` runs at once: the second is refused naming the holder (or waits);
//! - a `_READY` marker plans every object of its folder;
//! - a run or event matching no object creates no job (and no "succeeded" one);
//! - `gc --abandoned` never collects a job the ledger records.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fanout::env::Env;
use fanout::incremental::{SinceLast, run_since_last};
use fanout::ledger::{EntryKind, IngestedObject, Lease, LeaseOptions, Ledger, Recorded};
use fanout::metrics::MemoryMetrics;
use fanout::runner::{RunOptions, Silent, run_local};
use fanout::spec::JobSpec;
use fanout::store::{DynStore, FsStore, RequestCounter};

use common::fanout_bin;

/// `n` CSV files `part-<first..first+n>.csv` of 20 rows each under `dir`; ids are
/// `file * 100 + row`, unique across files.
fn upload(dir: &Path, first: u64, n: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for f in first..first + n {
        let mut text = String::from("id,amount\n");
        for r in 0..20 {
            text.push_str(&format!("{},{}.50\n", f * 100 + r, r));
        }
        std::fs::write(dir.join(format!("part-{f:03}.csv")), text).unwrap();
    }
}

fn spec_text(root: &Path) -> String {
    let r = root.display();
    format!(
        r#"name: books
work: {r}/work/
input:
  location: {r}/in/
  include: ["*.csv"]
  format: csv
  schema:
    - {{ name: id, type: int64, nullable: false }}
    - {{ name: amount, type: "decimal(12,2)" }}
chunking: {{ target_size: 1MiB, max_objects_per_chunk: 2 }}
output: {{ location: {r}/out/ }}
rejects: {{ location: {r}/rejects/ }}
"#
    )
}

fn spec(root: &Path) -> JobSpec {
    JobSpec::parse("job.yaml", &spec_text(root)).unwrap()
}

fn env() -> Env {
    Env::embedded(Arc::new(MemoryMetrics::new()))
}

fn opts() -> RunOptions {
    RunOptions {
        workers: 2,
        ..Default::default()
    }
}

fn quick_lease() -> LeaseOptions {
    LeaseOptions {
        ttl: Duration::from_millis(600),
        poll: Duration::from_millis(20),
        ..LeaseOptions::default()
    }
}

/// Every id in the Parquet files the succeeded manifests under `work` list, with how often.
fn ids_in_manifests(root: &Path) -> std::collections::BTreeMap<i64, u32> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let mut ids = std::collections::BTreeMap::new();
    for job in std::fs::read_dir(root.join("work/jobs"))
        .into_iter()
        .flatten()
    {
        let m = job.unwrap().path().join("_manifest.json");
        let Ok(text) = std::fs::read_to_string(&m) else {
            continue;
        };
        let m: serde_json::Value = serde_json::from_str(&text).unwrap();
        if m["outcome"] != "succeeded" {
            continue;
        }
        for f in m["files"].as_array().unwrap() {
            let path = root.join("out").join(f["key"].as_str().unwrap());
            let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
            for row in reader.get_row_iter(None).unwrap() {
                *ids.entry(row.unwrap().get_long(0).unwrap()).or_insert(0) += 1;
            }
        }
    }
    ids
}

/// Wakes the test at the first committed chunk.
#[derive(Default)]
struct FirstCommit(tokio::sync::Notify);
impl fanout::runner::Progress for FirstCommit {
    fn committed(&self, _record: &fanout::job::ChunkRecord) {
        self.0.notify_one();
    }
}

fn ran(outcome: SinceLast) -> fanout::job::Manifest {
    match outcome {
        SinceLast::Ran { report, .. } => report.result.unwrap(),
        SinceLast::NothingNew { .. } => panic!("nothing new"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_last_after_the_job_records_are_removed_ingests_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    upload(&root.join("in"), 0, 10);
    let (env, spec) = (env(), spec(root));
    let first = ran(
        run_since_last(&env, &spec, &opts(), &quick_lease(), Arc::new(Silent))
            .await
            .unwrap(),
    );
    assert_eq!(first.inputs.len(), 10);
    let first_ids = ids_in_manifests(root);
    assert_eq!(first_ids.len(), 200);

    // The lifecycle rule's work: every job record gone, manifests included.
    std::fs::remove_dir_all(root.join("work/jobs")).unwrap();
    upload(&root.join("in"), 10, 5);
    let second = ran(
        run_since_last(&env, &spec, &opts(), &quick_lease(), Arc::new(Silent))
            .await
            .unwrap(),
    );
    let keys: Vec<&str> = second.inputs.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        (10..15)
            .map(|f| format!("part-{f:03}.csv"))
            .collect::<Vec<_>>()
    );
    assert_eq!(second.counts.read, 100);
    let ids = ids_in_manifests(root);
    assert_eq!(ids.len(), 100, "only the second job's manifest is left");
    assert!(ids.keys().all(|id| *id >= 1000) && ids.values().all(|n| *n == 1));
    assert!(ids.keys().all(|id| !first_ids.contains_key(id)));

    // Nothing new: no job at all.
    let again = run_since_last(&env, &spec, &opts(), &quick_lease(), Arc::new(Silent))
        .await
        .unwrap();
    assert!(
        matches!(again, SinceLast::NothingNew { ingested: 15 }),
        "{again:?}"
    );
    let ledger = Ledger::new(env.store(&spec.work).unwrap(), "books");
    let view = ledger.read().await.unwrap();
    assert_eq!((view.seq(), view.object_count()), (2, 15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_since_last_run_is_refused_naming_the_holder_or_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    upload(&root.join("in"), 0, 3);
    let (env, spec) = (env(), spec(root));
    let work = env.store(&spec.work).unwrap();
    let holder = LeaseOptions {
        holder: "other-host:4242".into(),
        ttl: Duration::from_secs(30),
        ..LeaseOptions::default()
    };
    let held = Lease::acquire(work.clone(), "books", &holder)
        .await
        .unwrap();
    let err = run_since_last(&env, &spec, &opts(), &quick_lease(), Arc::new(Silent))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, fanout::Error::LeaseHeld { .. }), "{err:?}");
    assert!(
        text.contains("other-host:4242") && text.contains("ledger/books/lease.json"),
        "{text}"
    );
    assert!(
        !root.join("work/jobs").exists(),
        "a refused run planned a job"
    );

    // Waiting: the holder releases after a while, and the waiting run goes ahead.
    let waiting = LeaseOptions {
        wait: Some(Duration::from_secs(20)),
        ..quick_lease()
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.release().await.unwrap();
    };
    let run_opts = opts();
    let (outcome, ()) = tokio::join!(
        run_since_last(&env, &spec, &run_opts, &waiting, Arc::new(Silent)),
        release
    );
    assert_eq!(ran(outcome.unwrap()).inputs.len(), 3);

    // Two at once: one runs, the other is refused; nothing is ingested twice.
    upload(&root.join("in"), 3, 3);
    let lease = quick_lease();
    let (a, b) = tokio::join!(
        run_since_last(&env, &spec, &run_opts, &lease, Arc::new(Silent)),
        run_since_last(&env, &spec, &run_opts, &lease, Arc::new(Silent)),
    );
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(fanout::Error::LeaseHeld { .. })))
        .count();
    assert!(refused <= 1 && (a.is_ok() || b.is_ok()), "{a:?} {b:?}");
    let ids = ids_in_manifests(root);
    assert_eq!(ids.len(), 120);
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_died_holding_the_lease_is_finished_by_the_next_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    upload(&root.join("in"), 0, 8);
    let (env, spec) = (env(), spec(root));
    // The first run dies once its first chunk is committed (its future dropped): the
    // lease stays, naming its job, until it expires.
    let first_commit = Arc::new(FirstCommit::default());
    let (run_opts, lease) = (opts(), quick_lease());
    tokio::select! {
        r = run_since_last(&env, &spec, &run_opts, &lease, first_commit.clone()) => {
            panic!("the run finished before the crash: {r:?}")
        }
        () = first_commit.0.notified() => {}
    }
    upload(&root.join("in"), 8, 2);
    let waiting = LeaseOptions {
        wait: Some(Duration::from_secs(10)),
        ..quick_lease()
    };
    let outcome = run_since_last(&env, &spec, &opts(), &waiting, Arc::new(Silent))
        .await
        .unwrap();
    let SinceLast::Ran {
        recovered, report, ..
    } = outcome
    else {
        panic!("nothing new")
    };
    assert_eq!(recovered.len(), 1, "the dead run's job was not finished");
    assert_eq!(report.result.unwrap().inputs.len(), 2);
    let ids = ids_in_manifests(root);
    assert_eq!(ids.len(), 200, "{} ids", ids.len());
    assert!(ids.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalize_stopped_between_the_ledger_and_the_manifest_is_finished_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    upload(&root.join("in"), 0, 4);
    let (env, spec) = (env(), spec(root));
    let first = ran(
        run_since_last(&env, &spec, &opts(), &quick_lease(), Arc::new(Silent))
            .await
            .unwrap(),
    );
    // As if the finalize had stopped after its ledger entry: no manifest, no _SUCCESS.
    let job = root.join("work/jobs").join(first.job_id.as_str());
    std::fs::remove_file(job.join("_manifest.json")).unwrap();
    std::fs::remove_file(job.join("_SUCCESS")).unwrap();
    assert!(ids_in_manifests(root).is_empty());
    // gc --abandoned must not take its files: the ledger says its objects are ingested.
    let err = fanout::gc::collect_garbage(&env, &spec.work, &first.job_id, true, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ingestion ledger"), "{err}");
    let outcome = run_since_last(&env, &spec, &opts(), &quick_lease(), Arc::new(Silent))
        .await
        .unwrap();
    assert!(
        matches!(outcome, SinceLast::NothingNew { ingested: 4 }),
        "{outcome:?}"
    );
    // Recorded in the ledger without a manifest: finished first.
    assert!(job.join("_SUCCESS").exists());
    let ids = ids_in_manifests(root);
    assert_eq!(ids.len(), 80);
    assert!(ids.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_marker_plans_every_object_of_its_folder_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    upload(&root.join("in/2026-01-01"), 0, 3);
    upload(&root.join("in/2026-01-02"), 3, 2);
    std::fs::write(root.join("in/2026-01-01/notes.txt"), "not csv").unwrap();
    std::fs::write(root.join("in/2026-01-01/_READY"), "").unwrap();
    std::fs::write(root.join("job.yaml"), spec_text(root)).unwrap();
    let env = env();
    let queue = fanout::queue::LocalQueue::new("chunks", Duration::from_secs(60));
    let settings = fanout_planner::Settings {
        default_spec: Some(
            fanout::location::Location::parse(&root.join("job.yaml").display().to_string())
                .unwrap(),
        ),
        work: None,
        arrivals: None,
    };
    let marker = |folder: &str| {
        serde_json::json!({"Records": [{
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": root.display().to_string()},
                   "object": {"key": format!("in/{folder}/_READY")}}
        }]})
    };
    let planned = fanout_planner::handle(&env, &queue, &settings, marker("2026-01-01"))
        .await
        .unwrap()
        .into_planned()
        .unwrap();
    assert_eq!(planned.objects, 3, "{planned:?}");
    let mut job = spec(root);
    job.job_id = Some(planned.job_id.clone());
    let m = run_local(&env, &job, &opts(), Arc::new(Silent))
        .await
        .unwrap()
        .result
        .unwrap();
    let keys: Vec<&str> = m.inputs.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "2026-01-01/part-000.csv",
            "2026-01-01/part-001.csv",
            "2026-01-01/part-002.csv"
        ]
    );
    // The same marker again (a replayed event): every object is ingested, no job.
    let again = fanout_planner::handle(&env, &queue, &settings, marker("2026-01-01"))
        .await
        .unwrap_err();
    let diagnostic: lambda_runtime::Diagnostic = again.into();
    assert_eq!(
        diagnostic.error_type, "NoInput",
        "{}",
        diagnostic.error_message
    );
    // A marker over an empty folder: no job either.
    std::fs::create_dir_all(root.join("in/empty")).unwrap();
    std::fs::write(root.join("in/empty/_READY"), "").unwrap();
    let empty = fanout_planner::handle(&env, &queue, &settings, marker("empty"))
        .await
        .unwrap_err();
    let diagnostic: lambda_runtime::Diagnostic = empty.into();
    assert_eq!(
        diagnostic.error_type, "NoInput",
        "{}",
        diagnostic.error_message
    );
    let jobs = std::fs::read_dir(root.join("work/jobs")).unwrap().count();
    assert_eq!(jobs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_matching_no_object_plans_no_job_and_an_empty_plan_never_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    std::fs::write(root.join("in/_READY"), "").unwrap();
    let (env, spec) = (env(), spec(root));
    let err = run_local(&env, &spec, &opts(), Arc::new(Silent))
        .await
        .unwrap_err();
    assert!(matches!(err, fanout::Error::NoInput { .. }), "{err:?}");
    assert!(err.to_string().contains("no input object"), "{err}");
    assert!(!root.join("work/jobs").exists());
    let err = run_since_last(&env, &spec, &opts(), &quick_lease(), Arc::new(Silent))
        .await
        .unwrap_err();
    assert!(matches!(err, fanout::Error::NoInput { .. }), "{err:?}");

    // The CLI: exit code 3, the reason on stderr, no job.
    std::fs::write(root.join("job.yaml"), spec_text(root)).unwrap();
    let out = Command::new(fanout_bin())
        .arg("run")
        .arg(root.join("job.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("no input object to process"), "{stderr}");
    assert!(!root.join("work/jobs").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_a_held_lease_with_exit_code_4_or_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    upload(&root.join("in"), 0, 2);
    std::fs::write(root.join("job.yaml"), spec_text(root)).unwrap();
    let work: DynStore = Arc::new(FsStore::new(root.join("work")));
    let holder = LeaseOptions {
        holder: "batch-host:77".into(),
        ttl: Duration::from_secs(3),
        ..LeaseOptions::default()
    };
    let held = Lease::acquire(work.clone(), "books", &holder)
        .await
        .unwrap();
    let run = |extra: &[&str]| {
        Command::new(fanout_bin())
            .args(["run", "--since-last", "--lease-ttl", "30"])
            .args(extra)
            .arg(root.join("job.yaml"))
            .output()
            .unwrap()
    };
    let refused = run(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("batch-host:77") && stderr.contains("--wait-lease"),
        "{stderr}"
    );
    // The holder dies (nothing renews its lease): a waiting run takes it once it expires.
    drop(held);
    let waited = run(&["--wait-lease", "20"]);
    let stdout = String::from_utf8_lossy(&waited.stdout);
    assert!(
        waited.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(stdout.contains("2 new or changed object(s)"), "{stdout}");
    let lease: serde_json::Value =
        serde_json::from_slice(&work.get("ledger/books/lease.json").await.unwrap()).unwrap();
    assert_eq!(lease["released"], true, "{lease}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_racing_for_one_ledger_keep_it_gap_free_and_each_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::new(dir.path()));
    let ledger = Ledger::new(store.clone(), "race");
    let object = |i: u64| IngestedObject {
        uri: format!("s3://in/obj-{i}.csv"),
        etag: "e1".into(),
        size: i,
    };
    let tries = (0..12u64).map(|i| {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let job = fanout::ids::JobId::parse(format!("race-{i}")).unwrap();
            ledger
                .record(&job, "work/", EntryKind::Incremental, vec![object(i)])
                .await
        })
    });
    for t in tries {
        assert!(matches!(
            t.await.unwrap().unwrap(),
            Recorded::Appended { .. }
        ));
    }
    let view = ledger.read().await.unwrap();
    let seqs: Vec<u64> = view.entries().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    // A finalize run again: the same entry; another job claiming an object: refused.
    let job3 = fanout::ids::JobId::parse("race-3").unwrap();
    let again = ledger
        .record(&job3, "work/", EntryKind::Incremental, vec![object(3)])
        .await
        .unwrap();
    assert_eq!(
        again,
        Recorded::Already {
            seq: view.job_seq(&job3).unwrap()
        }
    );
    let thief = fanout::ids::JobId::parse("thief").unwrap();
    let err = ledger
        .record(
            &thief,
            "work/",
            EntryKind::Incremental,
            vec![object(99), object(5)],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("obj-5.csv (by race-5)"), "{err}");
    // A full run (a deliberate reprocess) is recorded, not refused.
    let full = ledger
        .record(&thief, "work/", EntryKind::Full, vec![object(5)])
        .await
        .unwrap();
    assert_eq!(full, Recorded::Appended { seq: 13 });
}

#[tokio::test]
async fn a_read_costs_one_list_and_the_entries_past_the_latest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let plain: DynStore = Arc::new(FsStore::new(dir.path()));
    let ledger = Ledger::new(plain.clone(), "cp");
    let total = fanout::ledger::CHECKPOINT_EVERY * 3 + 5;
    for i in 0..total {
        let job = fanout::ids::JobId::parse(format!("cp-{i}")).unwrap();
        let o = IngestedObject {
            uri: format!("file:///in/{i}"),
            etag: "v".into(),
            size: 1,
        };
        ledger
            .record(&job, "w/", EntryKind::Incremental, vec![o])
            .await
            .unwrap();
    }
    let counter = Arc::new(RequestCounter::default());
    let counted = Ledger::new(counter.wrap(plain), "cp");
    let view = counted.read().await.unwrap();
    assert_eq!((view.seq(), view.object_count() as u64), (total, total));
    let n = counter.snapshot();
    // The pointer, the checkpoint, and the 5 entries past it; one listing.
    assert_eq!((n.get, n.list), (2 + 5, 1), "{n:?}");
}

#[tokio::test]
async fn a_lease_is_renewed_released_taken_over_when_expired_and_lost_when_taken() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::new(dir.path()));
    let opts = |holder: &str, ttl_ms: u64| LeaseOptions {
        holder: holder.into(),
        ttl: Duration::from_millis(ttl_ms),
        poll: Duration::from_millis(10),
        wait: None,
    };
    let a = Lease::acquire(store.clone(), "n", &opts("a", 300))
        .await
        .unwrap();
    let job = fanout::ids::JobId::parse("n-1").unwrap();
    a.set_job(&job).await.unwrap();
    // Renewed in the background: still held well past one TTL.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let err = Lease::acquire(store.clone(), "n", &opts("b", 300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, fanout::Error::LeaseHeld { ref holder, .. } if holder == "a"),
        "{err:?}"
    );
    a.check().unwrap();
    // A dies: its lease expires and B takes it over, learning A's job.
    drop(a);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = Lease::acquire(store.clone(), "n", &opts("b", 300))
        .await
        .unwrap();
    assert_eq!(b.took_over().and_then(|r| r.job_id.clone()), Some(job));
    b.release().await.unwrap();
    let c = Lease::acquire(store.clone(), "n", &opts("c", 60_000))
        .await
        .unwrap();
    assert!(c.took_over().is_none() && c.previous().is_some_and(|p| p.released));
    // A holder whose lease was replaced behind its back (it stalled past the expiry and
    // another run took it) learns it at its next renewal.
    let key = "ledger/n/lease.json";
    let mut record: serde_json::Value =
        serde_json::from_slice(&store.get(key).await.unwrap()).unwrap();
    record["holder"] = "intruder".into();
    record["token"] = "t".into();
    store
        .put(key, serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();
    let err = c.renew().await.unwrap_err();
    assert!(
        matches!(err, fanout::Error::LeaseLost { ref taker, .. } if taker == "intruder"),
        "{err:?}"
    );
    assert!(c.check().is_err());
    assert!(c.release().await.is_err());
}
