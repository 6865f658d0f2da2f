//! [`EmfMetrics`]: CloudWatch Embedded Metric Format on stdout, for Lambda.
//!
//! Inside Lambda a JSON line in this format becomes metrics without an API call (and
//! without the latency and cost of PutMetricData on every invocation).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;

use async_trait::async_trait;

use super::Result;
use super::{Metrics, Unit, unit_name};

/// EMF allows at most 100 metrics per document and 100 values per metric.
const MAX_METRICS_PER_DOCUMENT: usize = 100;
const MAX_VALUES_PER_METRIC: usize = 100;

type Buffer = BTreeMap<(String, String), (Unit, Vec<f64>)>;

/// Buffers values and writes EMF documents on flush.
pub struct EmfMetrics {
    namespace: String,
    buffer: Mutex<Buffer>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for EmfMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmfMetrics")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl EmfMetrics {
    /// EMF to stdout under `namespace`.
    pub fn stdout(namespace: impl Into<String>) -> Self {
        Self::to_writer(namespace, Box::new(std::io::stdout()))
    }

    /// EMF to any writer (tests).
    pub fn to_writer(namespace: impl Into<String>, out: Box<dyn Write + Send>) -> Self {
        EmfMetrics {
            namespace: namespace.into(),
            buffer: Mutex::new(BTreeMap::new()),
            out: Mutex::new(out),
        }
    }

    /// The EMF documents for the buffered values (and clears the buffer).
    pub fn documents(&self) -> Vec<serde_json::Value> {
        let taken: Buffer = self
            .buffer
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        let mut by_job: BTreeMap<String, Vec<(String, Unit, Vec<f64>)>> = BTreeMap::new();
        for ((job, name), (unit, values)) in taken {
            by_job.entry(job).or_default().push((name, unit, values));
        }
        let now = crate::clock::now_ms();
        let mut docs = Vec::new();
        for (job, metrics) in by_job {
            for group in metrics.chunks(MAX_METRICS_PER_DOCUMENT) {
                // A value list longer than EMF allows is split over several documents.
                let rounds = group
                    .iter()
                    .map(|(_, _, v)| v.len().div_ceil(MAX_VALUES_PER_METRIC))
                    .max()
                    .unwrap_or(1);
                for round in 0..rounds {
                    let mut doc = serde_json::Map::new();
                    let mut defs = Vec::new();
                    for (name, unit, values) in group {
                        let slice: Vec<f64> = values
                            .iter()
                            .skip(round * MAX_VALUES_PER_METRIC)
                            .take(MAX_VALUES_PER_METRIC)
                            .copied()
                            .collect();
                        if slice.is_empty() {
                            continue;
                        }
                        defs.push(serde_json::json!({ "Name": name, "Unit": unit_name(*unit) }));
                        doc.insert(
                            name.clone(),
                            if slice.len() == 1 {
                                serde_json::json!(slice[0])
                            } else {
                                serde_json::json!(slice)
                            },
                        );
                    }
                    doc.insert("JobName".into(), serde_json::json!(job));
                    doc.insert(
                        "_aws".into(),
                        serde_json::json!({
                            "Timestamp": now,
                            "CloudWatchMetrics": [{ "Namespace": self.namespace, "Dimensions": [["JobName"]], "Metrics": defs }]
                        }),
                    );
                    docs.push(serde_json::Value::Object(doc));
                }
            }
        }
        docs
    }
}

#[async_trait]
impl Metrics for EmfMetrics {
    fn record(&self, job: &str, name: &str, value: f64, unit: Unit) {
        if let Ok(mut b) = self.buffer.lock() {
            b.entry((job.to_string(), name.to_string()))
                .or_insert((unit, Vec::new()))
                .1
                .push(value);
        }
    }

    async fn flush(&self) -> Result<()> {
        let docs = self.documents();
        if let Ok(mut out) = self.out.lock() {
            for d in docs {
                let _ = writeln!(out, "{d}");
            }
            let _ = out.flush();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a document against the EMF specification's rules.
    fn assert_valid_emf(doc: &serde_json::Value) {
        let aws = &doc["_aws"];
        assert!(
            aws["Timestamp"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000),
            "Timestamp in ms: {doc}"
        );
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert!(!directives.is_empty());
        for d in directives {
            assert!(!d["Namespace"].as_str().unwrap().is_empty());
            for set in d["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(set.len() <= 30, "at most 30 dimensions per set");
                for dim in set {
                    assert!(
                        doc[dim.as_str().unwrap()].is_string(),
                        "dimension {dim} must be a top-level string"
                    );
                }
            }
            let metrics = d["Metrics"].as_array().unwrap();
            assert!(metrics.len() <= 100, "at most 100 metrics per directive");
            for m in metrics {
                let name = m["Name"].as_str().unwrap();
                assert!(
                    ["Count", "Bytes", "Milliseconds", "None"]
                        .contains(&m["Unit"].as_str().unwrap())
                );
                let v = &doc[name];
                let values: Vec<&serde_json::Value> = if let Some(a) = v.as_array() {
                    a.iter().collect()
                } else {
                    vec![v]
                };
                assert!(
                    !values.is_empty() && values.len() <= 100,
                    "1 to 100 values for {name}"
                );
                assert!(
                    values.iter().all(|x| x.is_number()),
                    "{name} values must be numbers: {v}"
                );
            }
        }
    }

    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn flush_writes_one_valid_emf_document_per_line() {
        let sink = Sink::default();
        let m = EmfMetrics::to_writer("Fanout", Box::new(sink.clone()));
        for i in 0..250 {
            m.record("orders", "RowsRead", i as f64, Unit::Count);
        }
        for i in 0..120 {
            m.record("orders", &format!("Metric{i}"), 1.0, Unit::None);
        }
        m.record("returns", "ChunkDuration", 12.5, Unit::Milliseconds);
        m.flush().await.unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let docs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            docs.len() >= 4,
            "250 values and 121 metrics need several documents, got {}",
            docs.len()
        );
        docs.iter().for_each(assert_valid_emf);
        let rows_read: f64 = docs
            .iter()
            .filter(|d| d["JobName"] == "orders")
            .flat_map(|d| {
                d["RowsRead"]
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| d.get("RowsRead").cloned().into_iter().collect())
            })
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert_eq!(rows_read, (0..250).sum::<i32>() as f64);
        assert!(
            docs.iter()
                .any(|d| d["JobName"] == "returns" && d["ChunkDuration"] == 12.5)
        );
        // The buffer is empty after a flush.
        assert!(m.documents().is_empty());
    }
}
