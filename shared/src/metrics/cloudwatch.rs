//! [`CloudWatchMetrics`]: PutMetricData, batched, outside Lambda.

use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use super::{Metrics, Unit};
use super::{MetricsError, Result};

/// PutMetricData accepts at most 1000 data per call.
const MAX_DATA_PER_CALL: usize = 1000;

/// Buffers values and sends them on flush.
#[derive(Debug)]
pub struct CloudWatchMetrics {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    buffer: Mutex<Vec<MetricDatum>>,
}

impl CloudWatchMetrics {
    /// Metrics under `namespace`.
    pub fn new(client: aws_sdk_cloudwatch::Client, namespace: impl Into<String>) -> Self {
        CloudWatchMetrics {
            client,
            namespace: namespace.into(),
            buffer: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Metrics for CloudWatchMetrics {
    fn record(&self, job: &str, name: &str, value: f64, unit: Unit) {
        let unit = match unit {
            Unit::Count => StandardUnit::Count,
            Unit::Bytes => StandardUnit::Bytes,
            Unit::Milliseconds => StandardUnit::Milliseconds,
            Unit::None => StandardUnit::None,
        };
        let datum = MetricDatum::builder()
            .metric_name(name)
            .value(value)
            .unit(unit)
            .dimensions(Dimension::builder().name("JobName").value(job).build())
            .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_millis(
                crate::clock::now_ms() as i64,
            ))
            .build();
        if let Ok(mut b) = self.buffer.lock() {
            b.push(datum);
        }
    }

    async fn flush(&self) -> Result<()> {
        let data: Vec<MetricDatum> = self
            .buffer
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        for batch in data.chunks(MAX_DATA_PER_CALL) {
            self.client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| MetricsError {
                    op: "flush",
                    message: format!(
                        "CloudWatch PutMetricData: {}",
                        aws_sdk_cloudwatch::error::DisplayErrorContext(&e)
                    ),
                    source: Some(Box::new(e)),
                })?;
        }
        Ok(())
    }
}
