//! Chaos across jobs: random sequences of uploads and `--since-last` runs of one job
//! name, with runs started two at once, runs killed mid-way (their future dropped after a
//! random delay or at their first commit), faults injected into finalize (the ledger
//! append failing before or after it is written, the manifest write failing after the
//! ledger entry), the job records (`jobs/`) removed between runs, and abandoned jobs
//! collected by `gc --abandoned` then run again. After each sequence a last run picks up
//! what is left, and every input row must be in the union of the committed outputs (the
//! succeeded manifests of the jobs the ledger records) exactly once; no succeeded
//! manifest may exist without its ledger entry, and no object may be in two entries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fanout::env::Env;
use fanout::ids::JobId;
use fanout::incremental::{SinceLast, run_since_last};
use fanout::ledger::{LeaseOptions, Ledger};
use fanout::location::Location;
use fanout::metrics::MemoryMetrics;
use fanout::runner::{RunOptions, Silent};
use fanout::sample::SplitMix;
use fanout::spec::JobSpec;
use fanout::store::{DynStore, ObjectMeta, ObjectStore, PutOutcome, StoreError, SwapOutcome};

/// Opens a store at a location (a local directory or an S3 bucket of the emulator).
pub type Open = Arc<dyn Fn(&Location) -> DynStore + Send + Sync>;

/// What the sequences did and checked.
#[derive(Debug, Default)]
pub struct Tally {
    pub sequences: u64,
    pub runs: u64,
    pub refused: u64,
    pub crashed: u64,
    pub faults: u64,
    pub records_removed: u64,
    pub collected: u64,
    pub rows: u64,
    pub jobs: u64,
}

/// Fails the finalize's writes when switched on: a ledger entry's create (before it is
/// written, or after: a lost acknowledgement) and the manifest's put.
#[derive(Debug)]
struct FinalizeFaults {
    inner: DynStore,
    on: Arc<AtomicBool>,
    rng: Arc<Mutex<SplitMix>>,
    count: Arc<AtomicU64>,
}

impl FinalizeFaults {
    fn roll(&self, key: &str) -> bool {
        let hit = self.on.load(Ordering::SeqCst) && self.rng.lock().unwrap().below(3) == 0;
        if hit {
            self.count.fetch_add(1, Ordering::SeqCst);
            eprintln!("    fault at {key}");
        }
        hit
    }
}

fn injected(op: &'static str, key: &str) -> StoreError {
    StoreError::Request {
        op,
        key: key.to_string(),
        message: "injected finalize fault".into(),
        retryable: false,
        source: None,
    }
}

#[async_trait]
impl ObjectStore for FinalizeFaults {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn list(&self, prefix: &str) -> fanout::store::Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn list_after(&self, p: &str, after: &str) -> fanout::store::Result<Vec<ObjectMeta>> {
        self.inner.list_after(p, after).await
    }
    async fn head(&self, key: &str) -> fanout::store::Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> fanout::store::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> fanout::store::Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn get_range_if(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        etag: &str,
    ) -> fanout::store::Result<Bytes> {
        self.inner.get_range_if(key, range, etag).await
    }
    async fn put(&self, key: &str, data: Bytes) -> fanout::store::Result<()> {
        if key.ends_with("/_manifest.json") && self.roll(key) {
            return Err(injected("put", key));
        }
        self.inner.put(key, data).await
    }
    async fn put_file(&self, key: &str, path: &std::path::Path) -> fanout::store::Result<()> {
        self.inner.put_file(key, path).await
    }
    async fn copy_from(
        &self,
        source: &fanout::location::Location,
        key: &str,
    ) -> fanout::store::Result<()> {
        self.inner.copy_from(source, key).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> fanout::store::Result<PutOutcome> {
        let ledger_entry = key.contains("ledger/") && key.contains("/log/");
        if ledger_entry && self.roll(key) {
            return Err(injected("put_if_absent", key));
        }
        let out = self.inner.put_if_absent(key, data).await?;
        if ledger_entry && self.roll(key) {
            return Err(injected("put_if_absent", key));
        }
        Ok(out)
    }
    async fn put_if_match(
        &self,
        key: &str,
        data: Bytes,
        etag: &str,
    ) -> fanout::store::Result<SwapOutcome> {
        self.inner.put_if_match(key, data, etag).await
    }
    async fn delete(&self, key: &str) -> fanout::store::Result<()> {
        self.inner.delete(key).await
    }
}

fn spec_for(base: &str) -> JobSpec {
    JobSpec::parse(
        "multi.yaml",
        &format!(
            r#"name: multi
work: {base}work/
input:
  location: {base}in/
  format: csv
  schema:
    - {{ name: id, type: int64, nullable: false }}
    - {{ name: amount, type: "decimal(12,2)" }}
chunking: {{ target_size: 1MiB, max_objects_per_chunk: 2 }}
output: {{ location: {base}out/ }}
rejects: {{ location: {base}rejects/ }}
"#
        ),
    )
    .unwrap()
}

/// Wakes a crash at the first committed chunk.
#[derive(Default)]
struct FirstCommit(tokio::sync::Notify);
impl fanout::runner::Progress for FirstCommit {
    fn committed(&self, _record: &fanout::job::ChunkRecord) {
        self.0.notify_one();
    }
}

/// One sequence's world: its stores, its env with switchable finalize faults, its spec.
struct World {
    open: Open,
    base: String,
    env: Env,
    spec: JobSpec,
    faults_on: Arc<AtomicBool>,
    faults: Arc<AtomicU64>,
    /// Every succeeded manifest seen: job → output keys.
    seen: HashMap<JobId, Vec<String>>,
}

impl World {
    fn new(open: Open, base: &str, seed: u64) -> World {
        let (faults_on, faults) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let rng = Arc::new(Mutex::new(SplitMix::new(seed ^ 0xfa17)));
        let (o, on, n) = (open.clone(), faults_on.clone(), faults.clone());
        let env = Env::new(
            Arc::new(
                move |loc: &Location, _: &fanout::location::Sse| -> fanout::Result<DynStore> {
                    Ok(Arc::new(FinalizeFaults {
                        inner: o(loc),
                        on: on.clone(),
                        rng: rng.clone(),
                        count: n.clone(),
                    }))
                },
            ),
            Arc::new(MemoryMetrics::new()),
        );
        World {
            spec: spec_for(base),
            open,
            base: base.to_string(),
            env,
            faults_on,
            faults,
            seen: HashMap::new(),
        }
    }

    fn store(&self, sub: &str) -> DynStore {
        (self.open)(&Location::parse(&format!("{}{sub}", self.base)).unwrap())
    }

    /// Records every succeeded manifest now under `jobs/` (before records are removed).
    async fn capture(&self) -> HashMap<JobId, Vec<String>> {
        let work = self.store("work/");
        let mut out = HashMap::new();
        for o in work.list("jobs/").await.unwrap() {
            if !o.key.ends_with("/_manifest.json") {
                continue;
            }
            let m: fanout::job::Manifest =
                serde_json::from_slice(&work.get(&o.key).await.unwrap()).unwrap();
            if m.succeeded() {
                out.insert(
                    m.job_id.clone(),
                    m.files.into_iter().map(|f| f.file.key).collect(),
                );
            }
        }
        out
    }

    async fn since_last(&self, lease: &LeaseOptions) -> fanout::Result<SinceLast> {
        let opts = RunOptions {
            workers: 2,
            ..Default::default()
        };
        run_since_last(&self.env, &self.spec, &opts, lease, Arc::new(Silent)).await
    }
}

fn lease(wait: bool) -> LeaseOptions {
    LeaseOptions {
        ttl: Duration::from_millis(500),
        poll: Duration::from_millis(25),
        wait: wait.then_some(Duration::from_secs(20)),
        ..LeaseOptions::default()
    }
}

/// Uploads 1–3 CSV files of 3–30 rows with fresh ids; returns the ids.
async fn upload(w: &World, rng: &mut SplitMix, next_file: &mut u64) -> Vec<i64> {
    let input = w.store("in/");
    let mut ids = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let f = *next_file;
        *next_file += 1;
        let mut text = String::from("id,amount\n");
        for r in 0..3 + rng.below(28) {
            let id = (f * 1000 + r) as i64;
            text.push_str(&format!("{id},{}.25\n", r));
            ids.push(id);
        }
        input
            .put(&format!("batch-{}/f-{f:04}.csv", f % 3), Bytes::from(text))
            .await
            .unwrap();
    }
    ids
}

/// One step of a sequence; returns the runs it started.
async fn step(w: &mut World, rng: &mut SplitMix, t: &mut Tally) -> u64 {
    match rng.below(100) {
        0..=39 => {
            let r = w.since_last(&lease(true)).await;
            note(t, &r);
            1
        }
        40..=54 => {
            let refuse = lease(false);
            let (a, b) = tokio::join!(w.since_last(&refuse), w.since_last(&refuse));
            note(t, &a);
            note(t, &b);
            2
        }
        55..=74 => {
            let delay = Duration::from_millis(rng.below(250));
            let first = Arc::new(FirstCommit::default());
            let opts = RunOptions {
                workers: 2,
                ..Default::default()
            };
            let waiting = lease(true);
            let run = run_since_last(&w.env, &w.spec, &opts, &waiting, first.clone());
            tokio::select! {
                r = run => note(t, &r),
                () = tokio::time::sleep(delay) => t.crashed += 1,
                () = first.0.notified() => t.crashed += 1,
            }
            1
        }
        75..=91 => {
            w.faults_on.store(true, Ordering::SeqCst);
            let r = w.since_last(&lease(true)).await;
            w.faults_on.store(false, Ordering::SeqCst);
            note(t, &r);
            1
        }
        _ => {
            collect_abandoned(w, t).await;
            0
        }
    }
}

fn note(t: &mut Tally, r: &fanout::Result<SinceLast>) {
    match r {
        Err(fanout::Error::LeaseHeld { .. }) => t.refused += 1,
        Err(fanout::Error::NoInput { .. }) | Ok(_) => {}
        Err(e) => eprintln!("    run failed: {e}"),
    }
}

/// `gc --abandoned` of every job without `_SUCCESS`: refused for a job the ledger records.
async fn collect_abandoned(w: &World, t: &mut Tally) {
    let work = w.store("work/");
    let jobs: BTreeSet<String> = work
        .list("jobs/")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|o| o.key.split('/').nth(1).map(str::to_string))
        .collect();
    for j in jobs {
        let id = JobId::parse(&j).unwrap();
        if work
            .head(&format!("jobs/{j}/_SUCCESS"))
            .await
            .unwrap()
            .is_some()
        {
            continue;
        }
        if fanout::gc::collect_garbage(&w.env, &w.spec.work, &id, true, false)
            .await
            .is_ok()
        {
            t.collected += 1;
        }
    }
}

/// Removes every job record, as the lifecycle rule does, unless a job the ledger records
/// has no `_SUCCESS` yet (a finalize stopped after its entry: the next run finishes it
/// from its records, which must outlive that; RUNBOOK.md).
async fn remove_job_records(w: &World, t: &mut Tally) {
    let work = w.store("work/");
    let view = Ledger::new(work.clone(), "multi").read().await.unwrap();
    for e in view.entries() {
        let success = format!("jobs/{}/_SUCCESS", e.job_id);
        if work.head(&success).await.unwrap().is_none() {
            return;
        }
    }
    for o in work.list("jobs/").await.unwrap() {
        work.delete(&o.key).await.unwrap();
    }
    t.records_removed += 1;
}

/// Runs one sequence of `steps` steps, then the checks; adds to `t`.
pub async fn sequence(open: Open, base: &str, seed: u64, steps: u32, t: &mut Tally) {
    let mut rng = SplitMix::new(seed);
    let mut w = World::new(open, base, seed);
    let (mut next_file, mut expected) = (0u64, BTreeSet::new());
    for _ in 0..steps {
        if rng.below(100) < 50 {
            expected.extend(upload(&w, &mut rng, &mut next_file).await);
        }
        t.runs += step(&mut w, &mut rng, t).await;
        let now = w.capture().await;
        w.seen.extend(now);
        if rng.below(100) < 15 {
            remove_job_records(&w, t).await;
        }
    }
    // The last run, without faults: everything left is picked up.
    for _ in 0..3 {
        t.runs += 1;
        if let Ok(SinceLast::NothingNew { .. }) = w.since_last(&lease(true)).await {
            break;
        }
        let now = w.capture().await;
        w.seen.extend(now);
    }
    let now = w.capture().await;
    w.seen.extend(now);
    t.faults += w.faults.load(Ordering::SeqCst);
    let (rows, jobs) = check(&w, &expected, seed).await;
    t.rows += rows;
    t.jobs += jobs;
    t.sequences += 1;
}

/// The invariant: every expected id once in the union of the ledger's jobs' manifests;
/// returns the rows checked and the jobs recorded.
async fn check(w: &World, expected: &BTreeSet<i64>, seed: u64) -> (u64, u64) {
    let view = Ledger::new(w.store("work/"), "multi").read().await.unwrap();
    let recorded: BTreeSet<&JobId> = view.entries().iter().map(|e| &e.job_id).collect();
    for job in w.seen.keys() {
        assert!(
            recorded.contains(job),
            "seed {seed}: succeeded manifest of {job} without a ledger entry"
        );
    }
    let mut objects = BTreeSet::new();
    for e in view.entries() {
        for o in &e.objects {
            assert!(
                objects.insert((o.uri.clone(), o.etag.clone())),
                "seed {seed}: {} in two entries",
                o.uri
            );
        }
    }
    let out = w.store("out/");
    let mut found: BTreeMap<i64, u32> = BTreeMap::new();
    for job in &recorded {
        let files = w.seen.get(*job).unwrap_or_else(|| {
            panic!("seed {seed}: job {job} is in the ledger but no succeeded manifest was seen")
        });
        for key in files {
            for id in ids_of(&out.get(key).await.unwrap()) {
                *found.entry(id).or_insert(0) += 1;
            }
        }
    }
    let doubled: Vec<_> = found.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "seed {seed}: rows doubled: {doubled:?}");
    let found: BTreeSet<i64> = found.into_keys().collect();
    let lost: Vec<_> = expected.difference(&found).collect();
    assert!(lost.is_empty(), "seed {seed}: rows lost: {lost:?}");
    assert_eq!(
        &found, expected,
        "seed {seed}: rows that were never uploaded"
    );
    (expected.len() as u64, recorded.len() as u64)
}

fn ids_of(parquet_bytes: &Bytes) -> Vec<i64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let reader = SerializedFileReader::new(parquet_bytes.clone()).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| r.unwrap().get_long(0).unwrap())
        .collect()
}
