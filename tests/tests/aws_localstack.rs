//! CloudWatch PutMetricData from the Rust SDK against LocalStack on loopback (moto cannot
//! answer the SDK's CBOR protocol). Started by infra/test.sh.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use fanout::env::AwsClients;
use fanout::metrics::{CloudWatchMetrics, Metrics, Unit, names};
use fanout_tests::conformance::{MetricsSubject, Observed};

fn require_localstack() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_CLOUDWATCH")
            .is_ok_and(|u| u.starts_with("http://127.0.0.1")),
        "AWS_ENDPOINT_URL_CLOUDWATCH must point at LocalStack on 127.0.0.1: run the suite with infra/test.sh"
    );
}

/// A namespace of its own per test, so tests running at once do not see each other.
fn namespace() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "FanoutTest{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

#[tokio::test]
async fn cloudwatch_metrics_are_batched_with_their_dimension_and_sum_up() {
    require_localstack();
    let clients = AwsClients::load().await;
    let namespace = namespace();
    let m = CloudWatchMetrics::new(clients.cloudwatch.clone(), &namespace);
    // More than one PutMetricData batch (1000 data each).
    for i in 0..1500 {
        m.record("orders", names::ROWS_READ, (i % 10) as f64, Unit::Count);
    }
    m.record("orders", names::BYTES_WRITTEN, 4096.0, Unit::Bytes);
    m.record("returns", names::ROWS_READ, 7.0, Unit::Count);
    m.flush().await.unwrap();

    let listed = clients
        .cloudwatch
        .list_metrics()
        .namespace(&namespace)
        .send()
        .await
        .unwrap();
    let mut seen: Vec<(String, String)> = listed
        .metrics()
        .iter()
        .map(|x| {
            (
                x.metric_name().unwrap_or_default().to_string(),
                x.dimensions()
                    .iter()
                    .map(|d| {
                        format!(
                            "{}={}",
                            d.name().unwrap_or_default(),
                            d.value().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        vec![
            ("BytesWritten".into(), "JobName=orders".into()),
            ("RowsRead".into(), "JobName=orders".into()),
            ("RowsRead".into(), "JobName=returns".into())
        ]
    );
    let now = aws_sdk_cloudwatch::primitives::DateTime::from_millis(
        fanout::clock::now_ms() as i64 + 60_000,
    );
    let start = aws_sdk_cloudwatch::primitives::DateTime::from_millis(
        fanout::clock::now_ms() as i64 - 600_000,
    );
    let mut sum = 0.0;
    for _ in 0..20 {
        let stats = clients
            .cloudwatch
            .get_metric_statistics()
            .namespace(&namespace)
            .metric_name("RowsRead")
            .dimensions(Dimension::builder().name("JobName").value("orders").build())
            .start_time(start)
            .end_time(now)
            .period(3600)
            .statistics(Statistic::Sum)
            .send()
            .await
            .unwrap();
        sum = stats.datapoints().iter().filter_map(|d| d.sum()).sum();
        if sum > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sum, (0..1500).map(|i| (i % 10) as f64).sum::<f64>());
}

/// [`CloudWatchMetrics`] read back with GetMetricStatistics (Sum and SampleCount of the
/// last ten minutes). Statistics show up after a moment, so a read waits until the
/// values are there and have stopped changing (a value sent twice would still show).
struct CloudWatch {
    metrics: CloudWatchMetrics,
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
}

impl CloudWatch {
    async fn read(&self, job: &str, name: &str) -> Observed {
        let at = |offset_ms: i64| {
            aws_sdk_cloudwatch::primitives::DateTime::from_millis(
                fanout::clock::now_ms() as i64 + offset_ms,
            )
        };
        let stats = self
            .client
            .get_metric_statistics()
            .namespace(&self.namespace)
            .metric_name(name)
            .dimensions(Dimension::builder().name("JobName").value(job).build())
            .start_time(at(-600_000))
            .end_time(at(60_000))
            .period(3600)
            .statistics(Statistic::Sum)
            .statistics(Statistic::SampleCount)
            .send()
            .await
            .unwrap();
        stats
            .datapoints()
            .iter()
            .fold(Observed::default(), |o, d| Observed {
                sum: o.sum + d.sum().unwrap_or(0.0),
                count: o.count + d.sample_count().unwrap_or(0.0) as u64,
            })
    }
}

#[async_trait::async_trait]
impl MetricsSubject for CloudWatch {
    fn metrics(&self) -> &dyn Metrics {
        &self.metrics
    }
    async fn observed(&self, job: &str, name: &str) -> Observed {
        let mut last = Observed::default();
        for _ in 0..20 {
            let now = self.read(job, name).await;
            if now.count > 0 && now == last {
                return now;
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        last
    }
    async fn unit(&self, _job: &str, _name: &str) -> Option<String> {
        None
    }
}

/// The metrics checks CloudWatch can answer through its statistics (units are not
/// compared: a datapoint's unit is not read back here).
mod cloudwatch_metrics {
    use super::*;

    async fn make() -> (Box<dyn MetricsSubject>, ()) {
        require_localstack();
        let clients = AwsClients::load().await;
        let namespace = namespace();
        let subject = CloudWatch {
            metrics: CloudWatchMetrics::new(clients.cloudwatch.clone(), &namespace),
            client: clients.cloudwatch.clone(),
            namespace,
        };
        (Box::new(subject), ())
    }
    fanout_tests::metrics_conformance!(
        make,
        [
            values_of_a_metric_add_up,
            metrics_are_kept_apart_by_name,
            jobs_are_kept_apart,
            many_values_survive_batching,
            a_flush_sends_each_value_once,
            concurrent_records_are_all_kept,
        ]
    );
}
