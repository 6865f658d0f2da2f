//! A chunk reads only the input versions it was planned on: an object replaced after
//! planning (before the chunk, between its check and its first read, or between two
//! segments of one chunk) fails the chunk permanently, naming the object, and nothing of
//! it is committed.
#![allow(clippy::unwrap_used)]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fanout::env::Env;
use fanout::job::ChunkTask;
use fanout::location::Location;
use fanout::metrics::MemoryMetrics;
use fanout::spec::JobSpec;
use fanout::store::{DynStore, FsStore, ObjectMeta, ObjectStore, PutOutcome};
use fanout::worker::Worker;

/// The input store: after its `after`-th read call (HEAD or GET) of `key`, the object is
/// replaced by `replacement` (written aside, then renamed over it, as any writer would).
#[derive(Debug)]
struct Replacing {
    inner: FsStore,
    key: String,
    file: PathBuf,
    replacement: Vec<u8>,
    after: u32,
    calls: AtomicU32,
}

impl Replacing {
    fn called(&self, key: &str) {
        if key == self.key && self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            replace(&self.file, &self.replacement);
        }
    }
}

fn replace(file: &Path, data: &[u8]) {
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

#[async_trait]
impl ObjectStore for Replacing {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn list(&self, prefix: &str) -> fanout::store::Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn head(&self, key: &str) -> fanout::store::Result<Option<ObjectMeta>> {
        let r = self.inner.head(key).await;
        self.called(key);
        r
    }
    async fn get(&self, key: &str) -> fanout::store::Result<Bytes> {
        let r = self.inner.get(key).await;
        self.called(key);
        r
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> fanout::store::Result<Bytes> {
        let r = self.inner.get_range(key, range).await;
        self.called(key);
        r
    }
    async fn get_range_if(
        &self,
        key: &str,
        range: Range<u64>,
        etag: &str,
    ) -> fanout::store::Result<Bytes> {
        let r = self.inner.get_range_if(key, range, etag).await;
        self.called(key);
        r
    }
    async fn put(&self, key: &str, data: Bytes) -> fanout::store::Result<()> {
        self.inner.put(key, data).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> fanout::store::Result<PutOutcome> {
        self.inner.put_if_absent(key, data).await
    }
    async fn delete(&self, key: &str) -> fanout::store::Result<()> {
        self.inner.delete(key).await
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
    - {{ name: name, type: utf8 }}
chunking: {{ target_size: 64MiB }}
output: {{ location: {r}/out/ }}
rejects: {{ location: {r}/rejects/ }}
aggregate:
  group_by: []
  measures:
    - {{ name: n, fn: count }}
"#
    );
    JobSpec::parse("test.yaml", &text).unwrap()
}

/// `n` CSV rows, about 30 bytes each.
fn csv(n: u64) -> Vec<u8> {
    let mut s = String::from("id,name\n");
    for i in 0..n {
        s.push_str(&format!("{i},name number {i:>12}\n"));
    }
    s.into_bytes()
}

/// An env whose input store replaces `in/a.csv` after `after` read calls (0: never).
fn env(root: &Path, after: u32, replacement: Vec<u8>) -> Env {
    let input_root = root.join("in");
    Env::new(
        Arc::new(
            move |loc: &Location, sse: &fanout::location::Sse| -> fanout::Result<DynStore> {
                match loc {
                    Location::Local(p) if p == &input_root => Ok(Arc::new(Replacing {
                        inner: FsStore::new(p),
                        key: "a.csv".into(),
                        file: p.join("a.csv"),
                        replacement: replacement.clone(),
                        after,
                        calls: AtomicU32::new(0),
                    })),
                    other => fanout::env::open_local_store(other, sse),
                }
            },
        ),
        Arc::new(MemoryMetrics::new()),
    )
}

/// Plans a job on `in/a.csv` (`rows` rows), lets `change` act, runs its single chunk and
/// returns the chunk's error message, after checking it is permanent and nothing is committed.
async fn chunk_error(rows: u64, after: u32, change: impl FnOnce(&Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    std::fs::write(root.join("in/a.csv"), csv(rows)).unwrap();
    let spec = spec(root);
    // The replacement differs in size, so its version differs whatever the clock's grain.
    let env = env(root, after, csv(rows / 2));
    let plan = fanout::planner::plan_job(&env, &spec).await.unwrap();
    assert_eq!(plan.chunks.len(), 1);
    change(root);
    let task = ChunkTask {
        job_id: plan.summary.job_id.clone(),
        work: spec.work.to_string(),
        chunk: plan.chunks[0].clone(),
    };
    let worker = Worker::new(env.clone(), "w");
    let err = worker.process_chunk(&task, 1).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let work = env.store(&spec.work).unwrap();
    let records = fanout::job::chunk_records(&work, &plan.summary.job_id)
        .await
        .unwrap();
    assert!(records.is_empty(), "a chunk was committed: {records:?}");
    let out = root.join("out");
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "outputs were written"
    );
    err.to_string()
}

#[tokio::test]
async fn an_object_replaced_after_planning_fails_its_chunk_naming_it() {
    let err = chunk_error(100, 0, |root| {
        std::thread::sleep(Duration::from_millis(5));
        replace(&root.join("in/a.csv"), &csv(50));
    })
    .await;
    assert!(
        err.contains("a.csv") && err.contains("changed since planning"),
        "{err}"
    );
}

#[tokio::test]
async fn an_object_replaced_between_the_check_and_the_read_fails_its_chunk() {
    // Read calls while planning: none for a small CSV (the listing is enough); the
    // chunk's check is call 1, its read call 2.
    let err = chunk_error(100, 1, |_| {}).await;
    assert!(
        err.contains("`a.csv` changed since it was planned"),
        "{err}"
    );
}

#[tokio::test]
async fn an_object_replaced_between_two_segments_of_a_chunk_fails_it() {
    // Above one read segment: the chunk reads it in two. Call 1 is the check, call 2
    // the first segment; the object is replaced before the second.
    let rows = fanout::read::SEGMENT_BYTES / 30 + 1000;
    assert!(csv(rows).len() as u64 > fanout::read::SEGMENT_BYTES);
    let err = chunk_error(rows, 2, |_| {}).await;
    assert!(
        err.contains("`a.csv` changed since it was planned"),
        "{err}"
    );
}
