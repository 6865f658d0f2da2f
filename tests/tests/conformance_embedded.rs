//! The port conformance checks on the embedded adapters: the local directory store, the
//! in-memory queue, and the memory and EMF metrics.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout::metrics::{EmfMetrics, MemoryMetrics, Metrics};
use fanout::queue::LocalQueue;
use fanout::store::{FsStore, ObjectStore};
use fanout_tests::conformance::{MetricsSubject, Observed, QueueSubject};

mod fs_store {
    use super::*;

    async fn make() -> (Box<dyn ObjectStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (Box::new(FsStore::new(dir.path().join("root"))), dir)
    }
    fanout_tests::store_conformance!(make);
}

/// The port's default pinned read (a HEAD, then the read) and `list_after` (a list,
/// filtered), as a wrapper that does not override them gets: the same checks hold.
mod default_pinned_read {
    use super::*;
    use bytes::Bytes;
    use fanout::store::{ObjectMeta, PutOutcome};
    use std::ops::Range;

    #[derive(Debug)]
    struct Plain(FsStore);

    #[async_trait::async_trait]
    impl ObjectStore for Plain {
        fn describe(&self) -> String {
            self.0.describe()
        }
        async fn list(&self, prefix: &str) -> fanout::store::Result<Vec<ObjectMeta>> {
            self.0.list(prefix).await
        }
        async fn head(&self, key: &str) -> fanout::store::Result<Option<ObjectMeta>> {
            self.0.head(key).await
        }
        async fn get(&self, key: &str) -> fanout::store::Result<Bytes> {
            self.0.get(key).await
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> fanout::store::Result<Bytes> {
            self.0.get_range(key, range).await
        }
        async fn put(&self, key: &str, data: Bytes) -> fanout::store::Result<()> {
            self.0.put(key, data).await
        }
        async fn put_if_absent(&self, key: &str, data: Bytes) -> fanout::store::Result<PutOutcome> {
            self.0.put_if_absent(key, data).await
        }
        async fn put_if_match(
            &self,
            key: &str,
            data: Bytes,
            etag: &str,
        ) -> fanout::store::Result<fanout::store::SwapOutcome> {
            self.0.put_if_match(key, data, etag).await
        }
        async fn delete(&self, key: &str) -> fanout::store::Result<()> {
            self.0.delete(key).await
        }
        async fn copy_from(
            &self,
            source: &fanout::location::Location,
            key: &str,
        ) -> fanout::store::Result<()> {
            self.0.copy_from(source, key).await
        }
    }

    async fn make() -> (Box<dyn ObjectStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (Box::new(Plain(FsStore::new(dir.path().join("root")))), dir)
    }
    fanout_tests::store_conformance!(make);
}

#[tokio::test]
async fn fs_store_refuses_keys_that_escape_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path().join("root"));
    let err = store
        .put("../outside.txt", bytes::Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot be stored"), "{err}");
    assert!(!dir.path().join("outside.txt").exists());
}

mod local_queue {
    use super::*;

    async fn make() -> (Box<QueueSubject>, ()) {
        let visibility = Duration::from_millis(400);
        let dlq = Arc::new(LocalQueue::new("dlq", visibility));
        let queue = LocalQueue::new("q", visibility).with_dead_letter(dlq.clone(), 3);
        let subject = QueueSubject {
            queue: Arc::new(queue),
            dlq,
            max_receive: 3,
            visibility,
            max_message_bytes: fanout::queue::DEFAULT_MAX_MESSAGE_BYTES,
        };
        (Box::new(subject), ())
    }
    fanout_tests::queue_conformance!(make);
}

/// [`MemoryMetrics`] read back from its snapshot. It keeps neither the job nor the unit
/// (one process runs one job's summary), so the checks of those do not apply.
struct Memory(MemoryMetrics);

#[async_trait::async_trait]
impl MetricsSubject for Memory {
    fn metrics(&self) -> &dyn Metrics {
        &self.0
    }
    async fn observed(&self, _job: &str, name: &str) -> Observed {
        self.0
            .snapshot()
            .get(name)
            .map_or(Observed::default(), |s| Observed {
                sum: s.sum,
                count: s.count,
            })
    }
    async fn unit(&self, _job: &str, _name: &str) -> Option<String> {
        None
    }
}

mod memory_metrics {
    use super::*;

    async fn make() -> (Box<dyn MetricsSubject>, ()) {
        (Box::new(Memory(MemoryMetrics::new())), ())
    }
    fanout_tests::metrics_conformance!(
        make,
        [
            values_of_a_metric_add_up,
            metrics_are_kept_apart_by_name,
            many_values_survive_batching,
            a_flush_sends_each_value_once,
            concurrent_records_are_all_kept,
        ]
    );
}

/// The bytes an [`EmfMetrics`] writes.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`EmfMetrics`] read back by parsing every line it wrote as an EMF document, as
/// CloudWatch Logs does: values under the metric's name, the job in `JobName`, the unit
/// in the `_aws` directive.
struct Emf {
    metrics: EmfMetrics,
    out: Sink,
}

impl Emf {
    /// Every document written so far, each checked for the fields EMF requires.
    fn documents(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| {
                let doc: serde_json::Value = serde_json::from_str(l).unwrap();
                let directive = &doc["_aws"]["CloudWatchMetrics"][0];
                assert_eq!(directive["Namespace"], "FanoutTest", "{doc}");
                assert_eq!(directive["Dimensions"], serde_json::json!([["JobName"]]));
                assert!(doc["_aws"]["Timestamp"].is_u64(), "{doc}");
                doc
            })
            .collect()
    }

    /// The documents of `job` that define metric `name`.
    fn defining(&self, job: &str, name: &str) -> Vec<(serde_json::Value, serde_json::Value)> {
        self.documents()
            .into_iter()
            .filter(|d| d["JobName"] == job)
            .filter_map(|d| {
                let def = d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["Name"] == name)
                    .cloned()?;
                Some((d, def))
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl MetricsSubject for Emf {
    fn metrics(&self) -> &dyn Metrics {
        &self.metrics
    }
    async fn observed(&self, job: &str, name: &str) -> Observed {
        let mut o = Observed::default();
        for (doc, _) in self.defining(job, name) {
            let values = match &doc[name] {
                serde_json::Value::Array(a) => a.clone(),
                v => vec![v.clone()],
            };
            assert!(values.len() <= 100, "EMF allows 100 values per metric");
            for v in values {
                o.sum += v.as_f64().unwrap();
                o.count += 1;
            }
        }
        o
    }
    async fn unit(&self, job: &str, name: &str) -> Option<String> {
        let units: BTreeMap<String, ()> = self
            .defining(job, name)
            .into_iter()
            .map(|(_, def)| (def["Unit"].as_str().unwrap().to_string(), ()))
            .collect();
        assert!(units.len() <= 1, "{name} has several units: {units:?}");
        units.into_keys().next()
    }
}

mod emf_metrics {
    use super::*;

    async fn make() -> (Box<dyn MetricsSubject>, ()) {
        let out = Sink::default();
        let metrics = EmfMetrics::to_writer("FanoutTest", Box::new(out.clone()));
        (Box::new(Emf { metrics, out }), ())
    }
    fanout_tests::metrics_conformance!(
        make,
        [
            values_of_a_metric_add_up,
            metrics_are_kept_apart_by_name,
            jobs_are_kept_apart,
            units_are_kept,
            many_values_survive_batching,
            a_flush_sends_each_value_once,
            concurrent_records_are_all_kept,
        ]
    );
}
