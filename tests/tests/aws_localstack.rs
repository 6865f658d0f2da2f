//! CloudWatch PutMetricData from the Rust SDK against LocalStack on loopback (moto cannot
//! answer the SDK's CBOR protocol). Started by infra/test.sh.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, DimensionFilter, Statistic};
use fanout::env::AwsClients;
use fanout::metrics::{CloudWatchMetrics, Metrics, Unit, names};

#[tokio::test]
async fn cloudwatch_metrics_are_batched_with_their_dimension_and_sum_up() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_CLOUDWATCH")
            .is_ok_and(|u| u.starts_with("http://127.0.0.1")),
        "AWS_ENDPOINT_URL_CLOUDWATCH must point at LocalStack on 127.0.0.1: run the suite with infra/test.sh"
    );
    let clients = AwsClients::load().await;
    let namespace = format!("FanoutTest{}", std::process::id());
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
    let _ = DimensionFilter::builder();
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
