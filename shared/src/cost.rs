//! What a job costs on AWS: an estimate from the plan, and the measurement after a run.
//!
//! Both count the same things — Lambda GB-seconds and invocations, S3 requests by billed
//! class, SQS requests — and price them with [`Prices`] (us-east-1 list prices for arm64
//! Lambda by default; every price can be overridden). Data transfer inside a region and
//! storage are not counted: a job moves data between S3 and Lambda in one region.

use serde::{Deserialize, Serialize};

use crate::store::RequestCounts;

/// Prices in USD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    /// Lambda, per GB-second (arm64).
    pub lambda_gb_s: f64,
    /// Lambda, per invocation.
    pub lambda_request: f64,
    /// S3 GET and HEAD, per request.
    pub s3_get: f64,
    /// S3 PUT, COPY, POST, per request.
    pub s3_put: f64,
    /// S3 LIST, per request.
    pub s3_list: f64,
    /// SQS, per request (standard queue).
    pub sqs_request: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            lambda_gb_s: 0.000_013_333_4,
            lambda_request: 0.000_000_2,
            s3_get: 0.000_000_4,
            s3_put: 0.000_005,
            s3_list: 0.000_005,
            sqs_request: 0.000_000_4,
        }
    }
}

/// What a job uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Lambda GB-seconds (memory × duration over every invocation).
    pub lambda_gb_s: f64,
    /// Lambda invocations.
    pub lambda_requests: u64,
    /// S3 GET and HEAD requests.
    pub s3_get: u64,
    /// S3 PUT requests.
    pub s3_put: u64,
    /// S3 LIST requests.
    pub s3_list: u64,
    /// SQS requests.
    pub sqs_requests: u64,
}

/// Money, by service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usd {
    /// Lambda.
    pub lambda: f64,
    /// S3 requests.
    pub s3: f64,
    /// SQS requests.
    pub sqs: f64,
    /// All of it.
    pub total: f64,
}

/// Usage and its price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Priced {
    /// What is used.
    #[serde(flatten)]
    pub usage: Usage,
    /// What it costs.
    pub usd: Usd,
}

impl Usage {
    /// Prices this usage.
    pub fn priced(self, p: &Prices) -> Priced {
        let lambda =
            self.lambda_gb_s * p.lambda_gb_s + self.lambda_requests as f64 * p.lambda_request;
        let s3 = self.s3_get as f64 * p.s3_get
            + self.s3_put as f64 * p.s3_put
            + self.s3_list as f64 * p.s3_list;
        let sqs = self.sqs_requests as f64 * p.sqs_request;
        Priced {
            usage: self,
            usd: Usd {
                lambda,
                s3,
                sqs,
                total: lambda + s3 + sqs,
            },
        }
    }
}

/// How the estimate models a worker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Worker function memory, MB.
    pub memory_mb: u32,
    /// Input bytes a worker processes per second (measure yours with `fanout run`).
    pub bytes_per_s: f64,
    /// Fixed seconds per chunk (start, spec and lookups, commit).
    pub overhead_s: f64,
    /// Most concurrent workers (the event source mapping's maximum concurrency).
    pub max_concurrency: u32,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            memory_mb: 2048,
            bytes_per_s: 100e6,
            overhead_s: 0.2,
            max_concurrency: 1250,
        }
    }
}

/// SQS event-source scaling: Lambda starts with this many concurrent pollers…
pub const SQS_START_CONCURRENCY: u32 = 5;
/// …adds up to this many per minute…
pub const SQS_SCALE_PER_MINUTE: u32 = 300;
/// …up to this many.
pub const SQS_MAX_CONCURRENCY: u32 = 1250;

/// A job's estimated cost and duration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Usage and price.
    #[serde(flatten)]
    pub priced: Priced,
    /// Expected wall time of the chunk phase, seconds.
    pub duration_s: f64,
    /// Most workers running at once.
    pub concurrency: u32,
    /// The model used.
    pub model: Model,
}

/// The shape of a planned chunk the estimate needs.
#[derive(Debug, Clone, Copy)]
pub struct ChunkShape {
    /// Input bytes.
    pub bytes: u64,
    /// GET and HEAD requests reading it takes (see [`reads_of`]).
    pub reads: u64,
}

/// GET and HEAD requests a worker makes to read a planned piece: a HEAD (is it still the
/// planned version?), one GET per segment, and for a CSV range not at the object's start
/// one more for the header.
pub fn reads_of(piece: &crate::plan::Piece, input: &crate::spec::InputSpec) -> u64 {
    use crate::plan::Piece;
    let seg = crate::read::SEGMENT_BYTES;
    let (segments, header) = match piece {
        Piece::Range { start, end, .. } => (
            (end - start).div_ceil(seg).max(1),
            *start > 0 && input.format == crate::spec::Format::Csv && input.csv.header,
        ),
        Piece::Object { key, size, .. } if crate::read::splits_by_lines(input, key) => {
            (size.div_ceil(seg).max(1), false)
        }
        _ => (1, false),
    };
    1 + segments + u64::from(header)
}

/// Requests a worker makes for a chunk that writes `files` files: the HEAD of its commit
/// record, its attempt record (written at the start, again before storing), its reads, the
/// files, the commit record.
fn chunk_requests(c: &ChunkShape, files: u64) -> RequestCounts {
    RequestCounts {
        get: 1 + c.reads,
        put: 2 + files + 1,
        list: 0,
    }
}

/// The planner's and the reducer's S3 requests for a job over `objects` objects in
/// `chunks` chunks, by what they do (the estimate and the measured cost use the same
/// figures; counted, they would differ between a first finalize and a re-run, which must
/// write the same manifest). The planner lists the input and writes the spec, the plan
/// shards and the summary; the reducer lists and reads the chunk records and the plan,
/// looks for an earlier `_SUCCESS`, and writes the manifest, the aggregates and `_SUCCESS`.
pub fn coordinator_requests(objects: u64, chunks: u64) -> RequestCounts {
    let shards = chunks.div_ceil(crate::plan::SHARD_CHUNKS);
    RequestCounts {
        get: chunks + 3 + shards,
        put: 3 + shards + 4,
        list: objects.div_ceil(1000).max(1) + chunks.div_ceil(1000).max(1),
    }
}

/// SQS requests of a job of `chunks` chunks: sends in batches of 10, one receive and one
/// delete per chunk.
fn sqs_requests(chunks: u64) -> u64 {
    chunks.div_ceil(10) + 2 * chunks
}

/// Estimates a job from its plan. `files_per_chunk` is how many files a chunk writes
/// (its partitions; 1 without `partition_by`).
pub fn estimate(
    chunks: &[ChunkShape],
    objects: u64,
    files_per_chunk: u64,
    model: &Model,
    prices: &Prices,
) -> Estimate {
    let seconds: Vec<f64> = chunks
        .iter()
        .map(|c| c.bytes as f64 / model.bytes_per_s.max(1.0) + model.overhead_s)
        .collect();
    let gb = f64::from(model.memory_mb) / 1024.0;
    let mut req = coordinator_requests(objects, chunks.len() as u64);
    for c in chunks {
        req += chunk_requests(c, files_per_chunk);
    }
    let (duration_s, concurrency) = schedule(&seconds, model.max_concurrency);
    let usage = Usage {
        lambda_gb_s: gb * (seconds.iter().sum::<f64>() + 2.0 * model.overhead_s),
        lambda_requests: chunks.len() as u64 + 2,
        s3_get: req.get,
        s3_put: req.put,
        s3_list: req.list,
        sqs_requests: sqs_requests(chunks.len() as u64),
    };
    Estimate {
        priced: usage.priced(prices),
        duration_s,
        concurrency,
        model: *model,
    }
}

/// When the last of these tasks ends if the number running may grow as SQS event-source
/// scaling allows (5 at first, +300 per minute, at most `max` and 1,250); and the most
/// running at once. Tasks start in order, each as soon as a slot is free.
pub fn schedule(seconds: &[f64], max: u32) -> (f64, u32) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let cap = max.clamp(1, SQS_MAX_CONCURRENCY);
    // Whole microseconds: a heap of end times needs a total order.
    let us = |s: f64| (s * 1e6).round().max(0.0) as u64;
    // When scaling allows `n` concurrent workers.
    let slot_at = |n: u32| -> u64 {
        if n <= SQS_START_CONCURRENCY {
            0
        } else {
            us(f64::from(n - SQS_START_CONCURRENCY) * 60.0 / f64::from(SQS_SCALE_PER_MINUTE))
        }
    };
    let mut running: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    let (mut now, mut end, mut peak) = (0u64, 0u64, 0u32);
    for &d in seconds {
        loop {
            while running.peek().is_some_and(|Reverse(e)| *e <= now) {
                running.pop();
            }
            let n = running.len() as u32;
            if n < cap && slot_at(n + 1) <= now {
                break;
            }
            // Wait for a task to end or for scaling to add a slot, whichever is first.
            let next_end = running.peek().map_or(u64::MAX, |Reverse(e)| *e);
            let next_slot = if n < cap { slot_at(n + 1) } else { u64::MAX };
            now = next_end.min(next_slot);
        }
        let e = now + us(d);
        running.push(Reverse(e));
        end = end.max(e);
        peak = peak.max(running.len() as u32);
    }
    (end as f64 / 1e6, peak)
}

/// What one chunk's committed attempt used (from its commit record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkUsage {
    /// Processing time.
    pub elapsed_ms: u64,
    /// Requests it made to the object store.
    pub requests: RequestCounts,
}

/// A job's measured cost from its chunks' usage: the workers' busy time at `memory_mb`,
/// their counted S3 requests, plus the planner's and reducer's (`extra`).
pub fn measured(
    records: &[ChunkUsage],
    memory_mb: u32,
    planner_and_reducer_s: f64,
    extra: RequestCounts,
    prices: &Prices,
) -> Priced {
    let gb = f64::from(memory_mb) / 1024.0;
    let busy: f64 = records.iter().map(|r| r.elapsed_ms as f64 / 1000.0).sum();
    let mut req = extra;
    for r in records {
        req += r.requests;
    }
    Usage {
        lambda_gb_s: gb * (busy + planner_and_reducer_s),
        lambda_requests: records.len() as u64 + 2,
        s3_get: req.get,
        s3_put: req.put,
        s3_list: req.list,
        sqs_requests: sqs_requests(records.len() as u64),
    }
    .priced(prices)
}

/// Cost figures kept in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCost {
    /// Always `USD`.
    pub currency: String,
    /// Prices used.
    pub prices: Prices,
    /// Worker memory the Lambda figures assume, MB.
    pub memory_mb: u32,
    /// Measured after the run.
    pub measured: Priced,
    /// Estimated at planning time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
}

impl JobCost {
    /// A job's cost at today's default prices and the workers' memory (`memory_mb`, the
    /// worker function's setting): the chunks' measured usage plus the planner's and
    /// reducer's own (`coordinator`: seconds and requests; none for a job not finalized
    /// yet), beside the estimate made at planning time.
    pub fn measure(
        records: &[ChunkUsage],
        memory_mb: u32,
        coordinator: Option<(f64, RequestCounts)>,
        estimate: Option<Estimate>,
    ) -> JobCost {
        let prices = Prices::default();
        let (seconds, requests) = coordinator.unwrap_or_default();
        JobCost {
            currency: "USD".into(),
            prices,
            memory_mb,
            measured: measured(records, memory_mb, seconds, requests, &prices),
            estimate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_scaling_starts_at_five_and_grows_by_five_a_second() {
        // 100 tasks of 60 s each, unlimited: 5 run at first, more join every 12 s.
        let (end, peak) = schedule(&[60.0; 100], 1250);
        assert_eq!(peak, 100);
        assert!(end > 60.0 && end < 60.0 + 20.0, "{end}");
        // Capped at 2: pairs run one after the other.
        let (end, peak) = schedule(&[10.0; 6], 2);
        assert_eq!((end, peak), (30.0, 2));
    }

    #[test]
    fn pricing_adds_up() {
        let p = Prices::default();
        let u = Usage {
            lambda_gb_s: 1000.0,
            lambda_requests: 1_000_000,
            s3_get: 1_000_000,
            s3_put: 1000,
            s3_list: 0,
            sqs_requests: 1_000_000,
        }
        .priced(&p);
        assert!((u.usd.lambda - (0.0133334 + 0.2)).abs() < 1e-9);
        assert!((u.usd.s3 - (0.4 + 0.005)).abs() < 1e-9);
        assert!((u.usd.total - (u.usd.lambda + u.usd.s3 + 0.4)).abs() < 1e-9);
    }
}
